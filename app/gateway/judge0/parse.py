"""Reading a Judge0 submission the way Judge0 validates it: lenient types, per-attribute errors.

Judge0 (a Rails app) accepts numbers as numeric strings, booleans as ``"true"``/``1``, and
answers validation failures as 422 ``{"attribute": [messages]}``. This module turns a body
into a :class:`Submission`: the runbox draft the validator checks, plus the attributes Judge0
answers back (``meta``). ``additional_files`` zips are checked by their directory (member
count, declared sizes, compression ratio, paths, links) before any member is inflated.
"""

from __future__ import annotations

import base64
import binascii
import io
import math
import shlex
import struct
import zipfile
from dataclasses import dataclass
from typing import Any

from app.gateway.judge0.contract import (
    DEFAULT_CPU_EXTRA_S,
    DEFAULT_STACK_KB,
    MAX_CPU_EXTRA_S,
    MAX_EXTRACT_KB,
    MAX_RUNS,
    MAX_STACK_KB,
    MAX_TEXT_OPTION,
    MAX_ZIP_ENTRIES,
    MAX_ZIP_RATIO,
    compiler_option_languages,
    compiler_options_allowed,
    judge0_languages,
    limit_bounds,
)
from app.gateway.validate import MAX_FILES, Draft
from app.languages import Language, LimitError, Registry
from app.messages import SourceFile, TestCase

# The end-of-central-directory record: its signature, and where the member count sits in it.
EOCD_SIGNATURE = b"PK\x05\x06"
EOCD_SEARCH_BYTES = 65_557  # the record (22 bytes) plus the longest comment a zip may carry


@dataclass(frozen=True)
class Submission:
    """A Judge0 submission read: the draft to validate and the attributes Judge0 answers back."""

    draft: Draft
    meta: dict[str, Any]


class FieldErrors:
    """Validation messages per attribute, rendered as Judge0's 422 body ``{"field": [messages]}``."""

    def __init__(self) -> None:
        self.errors: dict[str, list[str]] = {}

    def add(self, name: str, message: str) -> None:
        self.errors.setdefault(name, []).append(message)

    def __bool__(self) -> bool:
        return bool(self.errors)


def b64_text(value: str) -> bytes:
    """Lenient Base64 like Judge0's (line breaks and stray characters ignored); raises on bad padding."""
    return base64.b64decode("".join(value.split()), validate=False)


def read_text(errors: FieldErrors, body: dict[str, Any], name: str, encoded: bool) -> str | None:
    """A text attribute, Base64-decoded when ``base64_encoded=true``; None when absent."""
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        errors.add(name, "must be a string")
        return None
    if not encoded:
        return value
    try:
        return b64_text(value).decode("utf-8", "surrogateescape")
    except (binascii.Error, ValueError):
        errors.add(name, "is not valid Base64 (base64_encoded=true was given)")
        return None


def read_number(
    errors: FieldErrors, body: dict[str, Any], name: str, ceiling: float, *, integer: bool = False,
    allow_zero: bool = False,
) -> float | None:
    """A numeric limit as Rails validates it: a number (or numeric string) above 0, at most ``ceiling``."""
    value = body.get(name)
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        errors.add(name, "is not a number")
        return None
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            errors.add(name, "is not a number")
            return None
    if not isinstance(value, int | float) or not math.isfinite(value):
        errors.add(name, "is not a number")
        return None
    if integer and float(value) != int(value):
        errors.add(name, "must be an integer")
        return None
    if value < 0 or (value == 0 and not allow_zero):
        errors.add(name, f"must be greater than {'or equal to ' if allow_zero else ''}0")
        return None
    if value > ceiling:
        errors.add(name, f"must be less than or equal to {ceiling:g}")
        return None
    return float(value)


def read_flag(errors: FieldErrors, body: dict[str, Any], name: str) -> bool | None:
    """A boolean attribute; Rails also takes "true"/"false" and 1/0."""
    value = body.get(name)
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        return value
    if value in ("true", "1", 1, "t"):
        return True
    if value in ("false", "0", 0, "f"):
        return False
    errors.add(name, "must be true or false")
    return None


def read_language(errors: FieldErrors, body: dict[str, Any], known: dict[int, Language]) -> Language | None:
    """``language_id`` (an integer or numeric string) to one of our languages."""
    value = body.get("language_id")
    if value is None or value == "":
        errors.add("language_id", "can't be blank")
        return None
    number: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and value.strip().isdecimal():
        number = int(value.strip())
    elif isinstance(value, float) and value.is_integer():
        number = int(value)
    lang = known.get(number) if number is not None else None
    if lang is None:
        errors.add("language_id", f"language with id {value} doesn't exist")
    return lang


def zip_members(data: bytes) -> int | None:
    """How many members a zip's directory claims, read from its last record without parsing it."""
    at = data.rfind(EOCD_SIGNATURE, max(0, len(data) - EOCD_SEARCH_BYTES))
    if at < 0 or at + 22 > len(data):
        return None
    (total,) = struct.unpack_from("<H", data, at + 10)
    return int(total)


def zip_path_problem(info: zipfile.ZipInfo) -> str | None:
    """Why a member may not be extracted into the job's working directory, if it may not.

    Only the archive's own rules are checked here (absolute paths, ``..``, links, devices);
    the names of the files kept are then checked like every job's files (validate.py).
    """
    name = info.filename
    shown = repr(name[:100])
    kind = (info.external_attr >> 16) & 0o170000  # the Unix mode, when a Unix zip stored one
    if kind == 0o120000:
        return f"may not hold symbolic links ({shown})"
    if kind not in (0, 0o100000, 0o040000):
        return f"may hold only files and folders ({shown} is neither)"
    if name.startswith("/") or "\\" in name or (len(name) > 1 and name[1] == ":"):
        return f"may not hold absolute paths ({shown})"
    if ".." in name.split("/"):
        return f"may not hold paths leaving the working directory ({shown})"
    return None


def unzip_files(errors: FieldErrors, encoded: str) -> tuple[SourceFile, ...]:
    """``additional_files``: a Base64 zip whose files, with their folders, join the program's.

    Refused before inflating anything: more entries than ``MAX_ZIP_ENTRIES`` or files than a
    job may have, an absolute path, a ``..``, a link or device, declared sizes past the
    extract budget, or a member that claims to expand more than ``MAX_ZIP_RATIO`` times.
    Inflating is still bounded by the budget, whatever a member claims. Folders are made as
    the files in them need them (an empty folder is not kept).
    """
    try:
        data = b64_text(encoded)
    except (binascii.Error, ValueError):
        errors.add("additional_files", "must be a Base64-encoded zip archive")
        return ()
    members = zip_members(data)
    if members is None:
        errors.add("additional_files", "must be a Base64-encoded zip archive")
        return ()
    if members > MAX_ZIP_ENTRIES:
        errors.add("additional_files", f"may hold at most {MAX_ZIP_ENTRIES} entries, not {members}")
        return ()
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (ValueError, zipfile.BadZipFile, NotImplementedError, struct.error):
        errors.add("additional_files", "must be a Base64-encoded zip archive")
        return ()
    budget = MAX_EXTRACT_KB * 1024
    with archive:
        entries = archive.infolist()
        if len(entries) > MAX_ZIP_ENTRIES:
            errors.add("additional_files", f"may hold at most {MAX_ZIP_ENTRIES} entries, not {len(entries)}")
            return ()
        for info in entries:
            problem = zip_path_problem(info)
            if problem:
                errors.add("additional_files", problem)
                return ()
        infos = [info for info in entries if not info.is_dir()]
        if len(infos) > MAX_FILES:
            errors.add("additional_files", f"may hold at most {MAX_FILES} files, not {len(infos)}")
            return ()
        if sum(info.file_size for info in infos) > budget:
            errors.add("additional_files", f"extract to more than {MAX_EXTRACT_KB} KB")
            return ()
        for info in infos:
            if info.file_size > max(1024, info.compress_size * MAX_ZIP_RATIO):
                errors.add("additional_files", f"member {info.filename[:100]!r} expands too much to be a source file")
                return ()
        out: list[SourceFile] = []
        for info in infos:
            try:
                # Read at most what is left of the budget, whatever the archive claims.
                with archive.open(info) as member:
                    content = member.read(budget + 1)
            except (zipfile.BadZipFile, RuntimeError, NotImplementedError, OSError, EOFError, ValueError) as exc:
                errors.add("additional_files", f"cannot be extracted: {exc}")
                return ()
            budget -= len(content)
            if budget < 0:
                errors.add("additional_files", f"extract to more than {MAX_EXTRACT_KB} KB")
                return ()
            # "./a" and "a//b" name the same file as unzip(1) would make of them.
            name = "/".join(part for part in info.filename.split("/") if part not in ("", "."))
            out.append(SourceFile(name, content.decode("utf-8", "surrogateescape")))
    return tuple(out)


def split_options(errors: FieldErrors, name: str, value: str | None) -> tuple[str, ...]:
    """Options as a shell would split them (Judge0 pastes them into a shell command line)."""
    if not value:
        return ()
    try:
        return tuple(shlex.split(value))
    except ValueError as exc:
        errors.add(name, f"cannot be parsed: {exc}")
        return ()


def read_submission(registry: Registry, body: Any, encoded: bool) -> Submission | dict[str, list[str]]:
    """Validate one submission body the way Judge0 does; the job-to-be, or the 422 errors."""
    errors = FieldErrors()
    if not isinstance(body, dict):
        errors.add("submission", "must be a JSON object")
        return errors.errors
    lang = read_language(errors, body, judge0_languages(registry))
    source = read_text(errors, body, "source_code", encoded)
    if "source_code" not in errors.errors and (source is None or not source.strip()):
        errors.add("source_code", "can't be blank")
    stdin = read_text(errors, body, "stdin", encoded)
    expected = read_text(errors, body, "expected_output", encoded)
    ceilings = lang.max_limits if lang else limit_bounds(registry)[1]
    cpu = read_number(errors, body, "cpu_time_limit", ceilings.cpu_time_s)
    extra = read_number(errors, body, "cpu_extra_time", MAX_CPU_EXTRA_S, allow_zero=True)
    wall = read_number(errors, body, "wall_time_limit", ceilings.timeout_s)
    memory_kb = read_number(errors, body, "memory_limit", ceilings.memory_mb * 1024)
    stack_kb = read_number(errors, body, "stack_limit", MAX_STACK_KB, integer=True)
    processes = read_number(errors, body, "max_processes_and_or_threads", ceilings.processes, integer=True)
    file_kb = read_number(errors, body, "max_file_size", ceilings.file_size_kb, integer=True)
    runs = read_number(errors, body, "number_of_runs", MAX_RUNS, integer=True)
    per_process_time = read_flag(errors, body, "enable_per_process_and_thread_time_limit")
    per_process_memory = read_flag(errors, body, "enable_per_process_and_thread_memory_limit")
    redirect = read_flag(errors, body, "redirect_stderr_to_stdout")
    if read_flag(errors, body, "enable_network"):
        errors.add("enable_network", "this option cannot be enabled")
    options: dict[str, str | None] = {}
    for name in ("compiler_options", "command_line_arguments", "callback_url"):
        value = body.get(name)
        if value is not None and not isinstance(value, str):
            errors.add(name, "must be a string")
        elif isinstance(value, str) and len(value) > MAX_TEXT_OPTION:
            errors.add(name, f"is too long (maximum is {MAX_TEXT_OPTION} characters)")
        else:
            options[name] = value or None
    # Per-process limits are not what the sandbox enforces (one cgroup bounds the whole
    # step's memory; the verdict compares the whole run's CPU time): refused the way Judge0
    # refuses an option its configuration does not allow, and config_info says so.
    for name, value in (("enable_per_process_and_thread_time_limit", per_process_time),
                        ("enable_per_process_and_thread_memory_limit", per_process_memory)):
        if value:
            errors.add(name, "this option cannot be enabled")
    args = split_options(errors, "command_line_arguments", options.get("command_line_arguments"))
    compiler_args = split_options(errors, "compiler_options", options.get("compiler_options"))
    if compiler_args and lang is not None and not compiler_options_allowed(lang):
        allowed = ", ".join(compiler_option_languages(registry))
        errors.add("compiler_options", f"setting compiler options is only allowed for {allowed}")
    additional = body.get("additional_files")
    files: tuple[SourceFile, ...] = ()
    if additional is not None and not isinstance(additional, str):
        errors.add("additional_files", "must be a Base64-encoded zip archive")
    elif additional and lang is not None:
        files = unzip_files(errors, additional)
    if errors or lang is None or source is None:
        return errors.errors

    requested: dict[str, Any] = {}
    extra_s = DEFAULT_CPU_EXTRA_S if extra is None else extra
    cpu_limit = cpu if cpu is not None else lang.default_limits.cpu_time_s
    # Judge0 (isolate -x) kills a program only after cpu_extra_time more seconds of CPU and
    # still reports it as over the limit: the sandbox's limit is the sum, and the verdict
    # compares the measured CPU time with cpu_time_limit itself.
    requested["cpu_time_s"] = min(ceilings.cpu_time_s, cpu_limit + extra_s)
    if wall is not None:
        requested["timeout_s"] = wall
    elif cpu is not None:
        # Judge0's wall clock defaults to twice the CPU limit; do the same so that asking for
        # more CPU time is not undercut by our shorter default wall time.
        requested["timeout_s"] = min(ceilings.timeout_s, max(lang.default_limits.timeout_s, 2 * (cpu + extra_s)))
    if memory_kb is not None:
        requested["memory_mb"] = max(1, math.ceil(memory_kb / 1024))
    if processes is not None:
        requested["processes"] = int(processes)
    if file_kb is not None:
        requested["file_size_kb"] = int(file_kb)
    try:
        limits = lang.resolve_limits(requested or None)
    except LimitError as exc:
        return {"limits": [str(exc)]}
    stack = int(stack_kb) if stack_kb is not None else DEFAULT_STACK_KB
    meta = {
        "source_code": source,
        "language_id": lang.judge0_id,
        "stdin": stdin,
        "expected_output": expected,
        "number_of_runs": int(runs or 1),
        "cpu_time_limit": cpu_limit,
        "cpu_extra_time": extra_s,
        "wall_time_limit": limits.timeout_s,
        "memory_limit": int(memory_kb) if memory_kb is not None else limits.memory_mb * 1024,
        "stack_limit": stack,
        "max_processes_and_or_threads": limits.processes,
        "enable_per_process_and_thread_time_limit": bool(per_process_time),
        "enable_per_process_and_thread_memory_limit": bool(per_process_memory),
        "max_file_size": limits.file_size_kb,
        "compiler_options": options.get("compiler_options"),
        "command_line_arguments": options.get("command_line_arguments"),
        "redirect_stderr_to_stdout": bool(redirect),
        "callback_url": options.get("callback_url"),
        "additional_files": additional or None,
        "enable_network": False,
    }
    # More than one run is a judged job of identical cases: built once, run in the same
    # sandbox; the answer is derived from the runs as Judge0 derives it (render.runs_view).
    count = int(runs or 1)
    tests = tuple(TestCase(stdin or "", expected or "") for _ in range(count)) if count > 1 else ()
    draft = Draft(
        language=lang, source=source, files=files, stdin=stdin or "", args=args, limits=requested or None,
        tests=tests,
        callback_url=options.get("callback_url") or "", callback_renderer="judge0",
        compile_options=compiler_args, stack_kb=stack, folders=True,
    )
    return Submission(draft, meta)
