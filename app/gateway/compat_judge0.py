"""Judge0 CE compatible API, so Judge0 clients (the official ``judge0`` PyPI SDK included) work unchanged.

Endpoints: ``/about``, ``/version``, ``/config_info``, ``/statuses``, ``/languages``,
``/languages/all``, ``/languages/{id}``, ``POST /submissions`` (``wait``, ``base64_encoded``,
``fields``), ``GET /submissions/{token}``, ``POST /submissions/batch`` and
``GET /submissions/batch?tokens=``. Submissions become ordinary runbox jobs; a token is the
job's id. Language ids come from each language's ``judge0_id``.

Judge0 keeps request attributes (``expected_output``, limits, the source...) with the
submission and answers them back. runbox's job state does not hold them, so they travel in
one extra event on the job's event stream, published before the job itself: every gateway
folds it into the job's record, it survives gateway restarts, and it is read back when a
token is fetched. ``expected_output`` is compared when the submission is rendered, the way
Judge0 compares (trailing whitespace of each line and trailing blank lines ignored).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import io
import logging
import math
import shlex
import zipfile
from dataclasses import dataclass, field
from typing import Any, cast

from quart import Blueprint, Request, Response, jsonify, request
from werkzeug.datastructures import Headers
from werkzeug.exceptions import HTTPException

from app.broker import BrokerUnavailable, QueueFull
from app.events import JobRecord
from app.gateway import gateway
from app.gateway.compat_piston import combined_output, compile_event
from app.gateway.errors import ApiError, json_response
from app.gateway.service import MAX_ARGS, Gateway, Identity
from app.languages import Language, LimitError, Limits, Registry
from app.messages import DISCARDED, Event, Job, JobState, SourceFile, iso_time

log = logging.getLogger(__name__)

bp = Blueprint("compat_judge0", __name__)

# The Judge0 release whose language ids our languages use; the judge0 SDK maps its language
# aliases (judge0.PYTHON...) to ids by the version /about reports.
JUDGE0_VERSION = "1.13.1"
META_EVENT = "judge0"
# Gateway events of a job are numbered within attempt 0: "queued" is 0 and "discarded" is 1.
META_EVENT_N = 2
MAX_BATCH = 20
MAX_TEXT_OPTION = 512  # command_line_arguments / compiler_options, as Judge0 validates them
DEFAULT_STACK_KB = 64000
MAX_STACK_KB = 128000
DEFAULT_CPU_EXTRA_S = 0.5
MAX_CPU_EXTRA_S = 5.0
MAX_EXTRACT_KB = 10240
SYNC_WAIT_SLACK_S = 60.0

STATUSES: tuple[tuple[int, str], ...] = (
    (1, "In Queue"),
    (2, "Processing"),
    (3, "Accepted"),
    (4, "Wrong Answer"),
    (5, "Time Limit Exceeded"),
    (6, "Compilation Error"),
    (7, "Runtime Error (SIGSEGV)"),
    (8, "Runtime Error (SIGXFSZ)"),
    (9, "Runtime Error (SIGFPE)"),
    (10, "Runtime Error (SIGABRT)"),
    (11, "Runtime Error (NZEC)"),
    (12, "Runtime Error (Other)"),
    (13, "Internal Error"),
    (14, "Exec Format Error"),
)
STATUS_NAMES = dict(STATUSES)
# Judge0 names four signals; any other fatal signal is "Runtime Error (Other)".
SIGNAL_STATUS = {11: 7, 25: 8, 8: 9, 6: 10}

# Every attribute of a Judge0 submission, in Judge0's order; "*" selects them all.
ALL_FIELDS: tuple[str, ...] = (
    "source_code",
    "language_id",
    "stdin",
    "expected_output",
    "stdout",
    "status_id",
    "created_at",
    "finished_at",
    "time",
    "memory",
    "stderr",
    "token",
    "number_of_runs",
    "cpu_time_limit",
    "cpu_extra_time",
    "wall_time_limit",
    "memory_limit",
    "stack_limit",
    "max_processes_and_or_threads",
    "enable_per_process_and_thread_time_limit",
    "enable_per_process_and_thread_memory_limit",
    "max_file_size",
    "compile_output",
    "exit_code",
    "exit_signal",
    "message",
    "wall_time",
    "compiler_options",
    "command_line_arguments",
    "redirect_stderr_to_stdout",
    "callback_url",
    "additional_files",
    "enable_network",
    "status",
    "language",
)
DEFAULT_FIELDS = ("token", "time", "memory", "stdout", "stderr", "compile_output", "message", "status")
# Text attributes: sent and answered Base64 encoded when base64_encoded=true.
TEXT_FIELDS = ("source_code", "stdin", "expected_output", "stdout", "stderr", "compile_output", "message")
CONVERSION_ERROR = (
    "some attributes for this submission cannot be converted to UTF-8, use base64_encoded=true query parameter"
)


# --- errors ----------------------------------------------------------------------------------
class Judge0Error(Exception):
    """An answer in Judge0's shape: a body such as ``{"error": ...}`` or ``{"field": [...]}``."""

    def __init__(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        super().__init__(str(body))
        self.status = status
        self.body = body
        self.headers = headers or {}


class NotUtf8(Exception):
    """A text attribute holds bytes that are not UTF-8 and base64_encoded was not asked for."""


judge0_response = json_response


@bp.errorhandler(Judge0Error)
async def _judge0_error(exc: Judge0Error) -> Response:
    return judge0_response(exc.status, exc.body, exc.headers)


@bp.errorhandler(ApiError)
async def _api_error(exc: ApiError) -> Response:
    # 401/429/503 keep their status and Retry-After/RateLimit headers; Judge0's body is {"error"}.
    return judge0_response(exc.status, {"error": exc.message}, exc.headers)


@bp.errorhandler(BrokerUnavailable)
async def _broker_error(exc: BrokerUnavailable) -> Response:
    retry = str(gateway().settings.retry_after_s)
    return judge0_response(503, {"error": "the job queue is unreachable; try again shortly"}, {"Retry-After": retry})


@bp.errorhandler(HTTPException)
async def _http_error(exc: HTTPException) -> Response:
    status = exc.code or 500
    if status == 413:
        return judge0_response(413, {"error": "the request body is larger than this service accepts"})
    return judge0_response(status, {"error": exc.description or "HTTP error"})


@bp.errorhandler(Exception)
async def _unexpected(exc: Exception) -> Response:
    log.exception("unhandled error in the Judge0 API")
    return judge0_response(500, {"error": "the service hit an unexpected error; it has been logged"})


# --- languages, statuses, configuration -------------------------------------------------------
def judge0_languages(registry: Registry) -> dict[int, Language]:
    """Languages that have a Judge0 id, by id."""
    languages: list[Language] = list(registry)
    return {lang.judge0_id: lang for lang in languages if lang.judge0_id > 0}


def judge0_name(language: Language) -> str:
    """The language's Judge0 display name, e.g. ``Python (3.11.2)``."""
    return language.judge0_name or f"{language.name.capitalize()} ({language.version})"


def describe_language(language: Language) -> dict[str, Any]:
    """``GET /languages/{id}``: the language with its file name and commands."""
    return {
        "id": language.judge0_id,
        "name": judge0_name(language),
        "is_archived": False,
        "source_file": language.source_file,
        "compile_cmd": shlex.join(language.compile.argv) if language.compile else None,
        "run_cmd": shlex.join(language.run),
    }


@bp.get("/about")
async def about() -> Any:
    """Judge0's ``/about``; clients read ``version`` to pick their language-id table."""
    return jsonify(
        {
            "version": JUDGE0_VERSION,
            "homepage": request.host_url,
            "source_code": None,
            "maintainer": "runbox (Judge0 CE compatible API)",
        }
    )


@bp.get("/version")
async def version() -> Any:
    """Judge0's ``/version``: the version as plain text."""
    return Response(JUDGE0_VERSION, content_type="text/plain; charset=utf-8")


@bp.get("/statuses")
async def statuses() -> Any:
    """The fourteen Judge0 statuses."""
    return jsonify([{"id": sid, "description": name} for sid, name in STATUSES])


@bp.get("/languages")
async def languages() -> Any:
    """Active languages as ``[{id, name}]``."""
    langs = sorted(judge0_languages(gateway().registry).values(), key=judge0_name)
    return jsonify([{"id": lang.judge0_id, "name": judge0_name(lang)} for lang in langs])


@bp.get("/languages/all")
async def all_languages() -> Any:
    """Active and archived languages; none of ours is archived."""
    langs = sorted(judge0_languages(gateway().registry).values(), key=judge0_name)
    return jsonify([{"id": lang.judge0_id, "name": judge0_name(lang), "is_archived": False} for lang in langs])


@bp.get("/languages/<language_id>")
async def language(language_id: str) -> Any:
    """One language; 404 for an id this deployment does not run."""
    known = judge0_languages(gateway().registry)
    lang = known.get(int(language_id)) if language_id.isdecimal() else None
    if lang is None:
        raise Judge0Error(404, {"error": f"language with id {language_id} doesn't exist"})
    return jsonify(describe_language(lang))


def limit_bounds(registry: Registry) -> tuple[Limits, Limits]:
    """Defaults and ceilings that hold for every language (config_info is one document for all)."""
    langs: list[Language] = list(registry)
    if not langs:
        return Limits(), Limits()
    first = langs[0].default_limits
    # Shared defaults when the languages agree, else the contract's defaults; the lowest maximums.
    defaults = first if all(lang.default_limits == first for lang in langs) else Limits()
    ceilings = Limits(**{name: min(getattr(lang.max_limits, name) for lang in langs) for name in Limits().to_dict()})
    return defaults, ceilings


@bp.get("/config_info")
async def config_info() -> Any:
    """Judge0's configuration document, describing what this deployment accepts."""
    gw = gateway()
    defaults, ceilings = limit_bounds(gw.registry)
    return jsonify(
        {
            "maintenance_mode": False,
            "enable_wait_result": True,
            "enable_compiler_options": False,
            "allowed_languages_for_compile_options": [],
            "enable_command_line_arguments": True,
            "enable_submission_delete": False,
            "enable_callbacks": False,
            "callbacks_max_tries": 0,
            "callbacks_timeout": 0.0,
            "enable_additional_files": True,
            "max_queue_size": gw.settings.queue_max_length,
            "cpu_time_limit": defaults.cpu_time_s,
            "max_cpu_time_limit": ceilings.cpu_time_s,
            "cpu_extra_time": DEFAULT_CPU_EXTRA_S,
            "max_cpu_extra_time": MAX_CPU_EXTRA_S,
            "wall_time_limit": defaults.timeout_s,
            "max_wall_time_limit": ceilings.timeout_s,
            "memory_limit": defaults.memory_mb * 1024,
            "max_memory_limit": ceilings.memory_mb * 1024,
            "stack_limit": DEFAULT_STACK_KB,
            "max_stack_limit": MAX_STACK_KB,
            "max_processes_and_or_threads": defaults.processes,
            "max_max_processes_and_or_threads": ceilings.processes,
            "enable_per_process_and_thread_time_limit": False,
            "allow_enable_per_process_and_thread_time_limit": True,
            "enable_per_process_and_thread_memory_limit": False,
            "allow_enable_per_process_and_thread_memory_limit": True,
            "max_file_size": defaults.file_size_kb,
            "max_max_file_size": ceilings.file_size_kb,
            "number_of_runs": 1,
            "max_number_of_runs": 1,
            "redirect_stderr_to_stdout": False,
            "max_extract_size": MAX_EXTRACT_KB,
            "enable_batched_submissions": True,
            "max_submission_batch_size": MAX_BATCH,
            "submission_cache_duration": 0.0,
            "use_docs_as_homepage": False,
            "allow_enable_network": False,
            "enable_network": False,
        }
    )


# --- reading a submission request --------------------------------------------------------------
@dataclass
class Submission:
    """A validated Judge0 submission, ready to become a job."""

    language: Language
    source: str
    stdin: str
    args: tuple[str, ...]
    files: tuple[SourceFile, ...]
    limits: Limits
    meta: dict[str, Any] = field(default_factory=dict)  # the attributes Judge0 answers back


class FieldErrors:
    """Validation messages per attribute, rendered as Judge0's 422 body ``{"field": [messages]}``."""

    def __init__(self) -> None:
        self.errors: dict[str, list[str]] = {}

    def add(self, name: str, message: str) -> None:
        self.errors.setdefault(name, []).append(message)

    def __bool__(self) -> bool:
        return bool(self.errors)


def to_bytes(text: str) -> bytes:
    """Text back to the bytes it came from (undecodable bytes travel as surrogate escapes)."""
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace")


def is_utf8(text: str) -> bool:
    """Whether ``text`` is plain Unicode, i.e. carries no escaped non-UTF-8 bytes."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


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


def unzip_files(gw: Gateway, errors: FieldErrors, encoded: str, language: Language) -> tuple[SourceFile, ...]:
    """``additional_files``: a Base64 zip whose files are placed next to the program."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(b64_text(encoded)))
    except (binascii.Error, ValueError, zipfile.BadZipFile):
        errors.add("additional_files", "must be a Base64-encoded zip archive")
        return ()
    budget = MAX_EXTRACT_KB * 1024
    raw: list[dict[str, str]] = []
    with archive:
        for info in archive.infolist():
            if info.is_dir():
                continue
            name = info.filename.removeprefix("./")
            if "/" in name:
                errors.add("additional_files", f"may only hold files at the top level, not {info.filename!r}")
                return ()
            try:
                # Read at most what is left of the budget, whatever the archive claims (zip bombs).
                with archive.open(info) as member:
                    data = member.read(budget + 1)
            except (zipfile.BadZipFile, RuntimeError, NotImplementedError, OSError, EOFError) as exc:
                errors.add("additional_files", f"cannot be extracted: {exc}")
                return ()
            budget -= len(data)
            if budget < 0:
                errors.add("additional_files", f"extract to more than {MAX_EXTRACT_KB} KB")
                return ()
            raw.append({"name": name, "content": data.decode("utf-8", "surrogateescape")})
    try:
        return gw.files(raw, language)
    except ApiError as exc:
        errors.add("additional_files", exc.message)
        return ()


def read_submission(gw: Gateway, body: Any, encoded: bool) -> Submission | dict[str, list[str]]:
    """Validate one submission body the way Judge0 does; the job-to-be, or the 422 errors."""
    errors = FieldErrors()
    if not isinstance(body, dict):
        errors.add("submission", "must be a JSON object")
        return errors.errors
    lang = read_language(errors, body, judge0_languages(gw.registry))
    source = read_text(errors, body, "source_code", encoded)
    if "source_code" not in errors.errors and (source is None or not source.strip()):
        errors.add("source_code", "can't be blank")
    stdin = read_text(errors, body, "stdin", encoded)
    expected = read_text(errors, body, "expected_output", encoded)
    ceilings = lang.max_limits if lang else limit_bounds(gw.registry)[1]
    cpu = read_number(errors, body, "cpu_time_limit", ceilings.cpu_time_s)
    extra = read_number(errors, body, "cpu_extra_time", MAX_CPU_EXTRA_S, allow_zero=True)
    wall = read_number(errors, body, "wall_time_limit", ceilings.timeout_s)
    memory_kb = read_number(errors, body, "memory_limit", ceilings.memory_mb * 1024)
    stack_kb = read_number(errors, body, "stack_limit", MAX_STACK_KB, integer=True)
    processes = read_number(errors, body, "max_processes_and_or_threads", ceilings.processes, integer=True)
    file_kb = read_number(errors, body, "max_file_size", ceilings.file_size_kb, integer=True)
    runs = read_number(errors, body, "number_of_runs", 1, integer=True)
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
    # The compile commands are fixed per language and there is no way to call back a client:
    # refusing these beats silently ignoring them (config_info says both are disabled).
    if options.get("compiler_options"):
        errors.add("compiler_options", "setting compiler options is not enabled on this server")
    if options.get("callback_url"):
        errors.add("callback_url", "callbacks are not enabled on this server")
    args: tuple[str, ...] = ()
    if options.get("command_line_arguments"):
        try:
            # Judge0 appends the arguments to the run command in a shell; split them the same way.
            args = tuple(shlex.split(options["command_line_arguments"] or ""))
        except ValueError as exc:
            errors.add("command_line_arguments", f"cannot be parsed: {exc}")
        if len(args) > MAX_ARGS:
            errors.add("command_line_arguments", f"may hold at most {MAX_ARGS} arguments")
    additional = body.get("additional_files")
    files: tuple[SourceFile, ...] = ()
    if additional is not None and not isinstance(additional, str):
        errors.add("additional_files", "must be a Base64-encoded zip archive")
    elif additional and lang is not None:
        files = unzip_files(gw, errors, additional, lang)
    if errors or lang is None or source is None:
        return errors.errors

    requested: dict[str, Any] = {}
    if cpu is not None:
        requested["cpu_time_s"] = cpu
    if wall is not None:
        requested["timeout_s"] = wall
    elif cpu is not None:
        # Judge0's wall clock defaults to twice the CPU limit; do the same so that asking for
        # more CPU time is not undercut by our shorter default wall time.
        requested["timeout_s"] = min(ceilings.timeout_s, max(lang.default_limits.timeout_s, 2 * cpu))
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
    meta = {
        "source_code": source,
        "language_id": lang.judge0_id,
        "stdin": stdin,
        "expected_output": expected,
        "number_of_runs": int(runs or 1),
        "cpu_time_limit": limits.cpu_time_s,
        "cpu_extra_time": DEFAULT_CPU_EXTRA_S if extra is None else extra,
        "cpu_time_limit_requested": cpu is not None,
        "wall_time_limit": limits.timeout_s,
        "memory_limit": int(memory_kb) if memory_kb is not None else limits.memory_mb * 1024,
        "stack_limit": int(stack_kb) if stack_kb is not None else DEFAULT_STACK_KB,
        "max_processes_and_or_threads": limits.processes,
        "enable_per_process_and_thread_time_limit": bool(per_process_time),
        "enable_per_process_and_thread_memory_limit": bool(per_process_memory),
        "max_file_size": limits.file_size_kb,
        "compiler_options": None,
        "command_line_arguments": options.get("command_line_arguments"),
        "redirect_stderr_to_stdout": bool(redirect),
        "callback_url": None,
        "additional_files": additional or None,
        "enable_network": False,
    }
    return Submission(lang, source, stdin or "", args, files, limits, meta)


# --- submitting ------------------------------------------------------------------------------
class AuthView:
    """The request as ``Gateway.identify`` reads it, with Judge0's ``X-Auth-Token`` as a bearer key.

    Judge0 authenticates with ``X-Auth-Token``; clients configured for it keep working when
    this deployment requires API keys. ``Authorization`` wins when both are sent.
    """

    def __init__(self, req: Request) -> None:
        self.remote_addr = req.remote_addr
        self.headers = Headers(req.headers)
        token = self.headers.get("X-Auth-Token", "").strip()
        if token and not self.headers.get("Authorization"):
            self.headers["Authorization"] = f"Bearer {token}"


def identify(gw: Gateway) -> Identity:
    """The caller's identity, accepting Judge0's auth header too."""
    return gw.identify(cast(Request, AuthView(request)))


async def enqueue(gw: Gateway, identity: Identity, sub: Submission) -> Job:
    """Publish the submission's attributes, then the job; nothing half-stored on failure.

    The attributes go first so that they precede the job's terminal event in the stream
    (a record ignores anything after it). If the job is then refused, the job is marked
    discarded so no gateway keeps it as pending.
    """
    job = gw.make_job(sub.language, sub.source, sub.files, sub.stdin, sub.args, sub.limits, identity)
    meta = Event(job=job.id, name=META_EVENT, data={"submission": sub.meta}, n=META_EVENT_N)
    retry = {"Retry-After": str(gw.settings.retry_after_s)}
    try:
        await gw.broker.publish_event(meta)
    except (BrokerUnavailable, QueueFull) as exc:
        gw.metrics.rejections.labels("broker_unavailable").inc()
        raise ApiError(503, "broker_unavailable", "The job queue is unreachable; try again shortly.", retry) from exc
    gw.events.note_local(meta)
    try:
        await gw.submit(job, "judge0")
    except ApiError:
        discard = Event(job=job.id, name=DISCARDED, data={}, n=1)
        gw.events.note_local(discard)
        with contextlib.suppress(BrokerUnavailable, QueueFull):
            await gw.broker.publish_event(discard)
        raise
    return job


def sync_budget(sub: Submission) -> float:
    """How long ``wait=true`` waits: the job's own time budget plus room to get an executor."""
    compile_s = sub.language.compile.timeout_s if sub.language.compile else 0.0
    return sub.limits.timeout_s + compile_s + SYNC_WAIT_SLACK_S


# --- rendering a submission --------------------------------------------------------------------
def stored_meta(record: JobRecord | None) -> dict[str, Any]:
    """The attributes stored with the submission; empty for a job created through another API."""
    if record is None:
        return {}
    data = record.extra.get(META_EVENT, {})
    return dict(data["submission"]) if isinstance(data.get("submission"), dict) else {}


def normalized(text: str) -> str:
    """Output as Judge0 compares it: each line's trailing whitespace and trailing blank lines dropped."""
    return "\n".join(line.rstrip() for line in text.replace("\r\n", "\n").split("\n")).rstrip()


def verdict(state: JobState, record: JobRecord | None, meta: dict[str, Any], stdout: str) -> tuple[int, str | None]:
    """Judge0's status id and isolate-style message for the job's state."""
    if state.status == "queued":
        return 1, None
    if state.status == "running":
        return 2, None
    result = state.result or {}
    sig = result.get("signal")
    code = result.get("exit_code")
    limit = result.get("limit")
    event = compile_event(record, state)
    compile_failed = state.status == "compile_error" or (event is not None and event.get("exit_code") != 0)
    if state.status == "failed":
        error = str(result.get("error") or "the job could not be run")
        return (14 if "exec format" in error.lower() else 13), error
    if compile_failed:
        if state.status == "timed_out":
            return 6, "Compilation time limit exceeded"
        return 6, None
    if state.status == "timed_out":
        return 5, "Time limit exceeded (wall clock)" if limit == "wall_time" else "Time limit exceeded"
    if state.status == "memory_exceeded":
        return 12, "Memory limit exceeded"
    if state.status == "output_exceeded":
        return 8, "Output limit exceeded"
    if isinstance(sig, int) and sig:
        return SIGNAL_STATUS.get(sig, 12), f"Caught fatal signal {sig}"
    if code not in (0, None):
        return 11, f"Exited with error status {code}"
    cpu_limit = meta.get("cpu_time_limit")
    # The sandbox's CPU limit works in whole seconds; Judge0 reports any run over the
    # requested limit as a time-out, so check the measured CPU time too.
    if (
        meta.get("cpu_time_limit_requested")
        and isinstance(cpu_limit, int | float)
        and (result.get("cpu_ms") or 0) > cpu_limit * 1000
    ):
        return 5, "Time limit exceeded"
    expected = meta.get("expected_output")
    if isinstance(expected, str) and normalized(expected) != normalized(stdout):
        return 4, None
    return 3, None


def seconds(ms: Any) -> str | None:
    """Judge0 sends times as decimal strings of seconds, e.g. ``"0.012"``."""
    if not isinstance(ms, int | float) or isinstance(ms, bool):
        return None
    return f"{ms / 1000:.3f}"


def decimal(value: Any) -> str | None:
    """Judge0's decimal columns (time limits) arrive as strings, e.g. ``"5.0"``."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        return None
    return str(float(value))


def render(
    gw: Gateway, state: JobState, record: JobRecord | None, fields: tuple[str, ...], encoded: bool
) -> dict[str, Any]:
    """One submission in Judge0's shape, restricted to ``fields``; raises NotUtf8 when it must."""
    meta = stored_meta(record)
    result = state.result or {}
    terminal = state.terminal
    stdout: str | None = result.get("stdout") or ""
    stderr: str | None = result.get("stderr") or ""
    if terminal and meta.get("redirect_stderr_to_stdout"):
        stdout, stderr = combined_output(record, state), ""
    status_id, message = verdict(state, record, meta, stdout or "")
    compiled_error = status_id == 6
    ran = terminal and not compiled_error and state.status != "failed"
    lang = gw.registry.get(state.language) if state.language else None
    language_id = meta.get("language_id") or (lang.judge0_id if lang and lang.judge0_id else None)
    values: dict[str, Any] = {
        "source_code": meta.get("source_code"),
        "language_id": language_id,
        "stdin": meta.get("stdin"),
        "expected_output": meta.get("expected_output"),
        # Judge0 answers null, not "", for an empty stream.
        "stdout": (stdout or None) if terminal else None,
        "stderr": (stderr or None) if terminal else None,
        "compile_output": (result.get("compile_output") or None) if terminal else None,
        "message": message,
        "status_id": status_id,
        "status": {"id": status_id, "description": STATUS_NAMES[status_id]},
        "created_at": iso_time(state.created_at),
        "finished_at": iso_time(state.finished_at) if terminal else None,
        "time": seconds(result.get("cpu_ms")) if ran else None,
        "wall_time": seconds(result.get("duration_ms")) if ran else None,
        "memory": result.get("memory_peak_kb") if ran else None,
        "exit_code": result.get("exit_code") if ran else None,
        "exit_signal": result.get("signal") if ran else None,
        "token": state.id,
        "number_of_runs": meta.get("number_of_runs"),
        "cpu_time_limit": decimal(meta.get("cpu_time_limit")),
        "cpu_extra_time": decimal(meta.get("cpu_extra_time")),
        "wall_time_limit": decimal(meta.get("wall_time_limit")),
        "memory_limit": meta.get("memory_limit"),
        "stack_limit": meta.get("stack_limit"),
        "max_processes_and_or_threads": meta.get("max_processes_and_or_threads"),
        "enable_per_process_and_thread_time_limit": meta.get("enable_per_process_and_thread_time_limit"),
        "enable_per_process_and_thread_memory_limit": meta.get("enable_per_process_and_thread_memory_limit"),
        "max_file_size": meta.get("max_file_size"),
        "compiler_options": meta.get("compiler_options"),
        "command_line_arguments": meta.get("command_line_arguments"),
        "redirect_stderr_to_stdout": meta.get("redirect_stderr_to_stdout"),
        "callback_url": meta.get("callback_url"),
        "additional_files": meta.get("additional_files"),
        "enable_network": meta.get("enable_network"),
        "language": {"id": language_id, "name": judge0_name(lang)} if lang else None,
    }
    out = {name: values[name] for name in fields}
    for name in TEXT_FIELDS:
        text = out.get(name)
        if not isinstance(text, str):
            continue
        if encoded:
            out[name] = base64.b64encode(to_bytes(text)).decode("ascii")
        elif not is_utf8(text):
            raise NotUtf8(name)
    return out


def requested_fields() -> tuple[str, ...]:
    """``?fields=``: empty for Judge0's default eight, ``*`` for all, else a checked list."""
    raw = request.args.get("fields", "")
    if not raw.strip():
        return DEFAULT_FIELDS
    names = [name.strip() for name in raw.split(",") if name.strip()]
    if "*" in names:
        return ALL_FIELDS
    invalid = [name for name in names if name not in ALL_FIELDS]
    if invalid:
        raise Judge0Error(400, {"error": f"invalid fields: [{', '.join(invalid)}]"})
    return tuple(dict.fromkeys(names))


def query_flag(name: str) -> bool:
    """A boolean query parameter; only ``true`` turns it on, as in Judge0."""
    return request.args.get(name, "").strip().lower() == "true"


async def json_body(gw: Gateway) -> Any:
    """The request's JSON; an empty body is an empty object (Judge0 then names the blank fields)."""
    data = await request.get_data(cache=True)
    if not data.strip():
        return {}
    body = await request.get_json(force=True, silent=True)
    if body is None:
        gw.metrics.rejections.labels("bad_request").inc()
        raise Judge0Error(400, {"error": "the request body is not valid JSON"})
    return body


def unprocessable(gw: Gateway, errors: dict[str, list[str]]) -> Judge0Error:
    """Judge0's validation failure: 422 with messages per attribute."""
    gw.metrics.rejections.labels("bad_request").inc()
    return Judge0Error(422, errors)


# --- submissions -------------------------------------------------------------------------------
@bp.post("/submissions")
async def create_submission() -> Any:
    """Create one submission; 201 with its token, or with its result when ``wait=true``."""
    gw = gateway()
    # Read the body before anything can refuse the request: answering with the body unread
    # makes the server drop the client's keep-alive connection.
    await request.get_data(cache=True)
    identity = identify(gw)
    fields = requested_fields()
    encoded = query_flag("base64_encoded")
    wait = query_flag("wait")
    sub = read_submission(gw, await json_body(gw), encoded)
    if not isinstance(sub, Submission):
        raise unprocessable(gw, sub)
    decision = gw.admit(identity)
    job = await enqueue(gw, identity, sub)
    headers = decision.headers()
    if not wait:
        return judge0_response(201, {"token": job.id}, headers)
    state = await gw.events.wait_terminal(job.id, sync_budget(sub))
    record = await gw.events.record(job.id)
    if state is None:
        state = record.state if record else JobState(job.id, language=job.language, created_at=job.created_at)
    try:
        body = render(gw, state, record, fields, encoded)
    except NotUtf8:
        body = {"token": job.id, "error": CONVERSION_ERROR}
    return judge0_response(201, body, headers)


@bp.post("/submissions/batch")
async def create_batch() -> Any:
    """Create up to 20 submissions; each answers ``{token}`` or its own validation errors."""
    gw = gateway()
    await request.get_data(cache=True)  # before any refusal, as in create_submission
    identity = identify(gw)
    encoded = query_flag("base64_encoded")
    body = await json_body(gw)
    items = body.get("submissions") if isinstance(body, dict) else None
    count = len(items) if isinstance(items, list) else 0
    if count > MAX_BATCH:
        raise Judge0Error(
            400, {"error": f"number of submissions in a batch should be less than or equal to {MAX_BATCH}"}
        )
    if not isinstance(items, list) or count == 0:
        raise Judge0Error(400, {"error": "there should be at least one submission in a batch"})
    parsed = [read_submission(gw, item, encoded) for item in items]
    valid = [sub for sub in parsed if isinstance(sub, Submission)]
    if not valid:
        gw.metrics.rejections.labels("bad_request").inc()
        return judge0_response(422, parsed)
    # The whole batch is admitted or refused up front, so a client never loses track of
    # submissions that were queued before a refusal.
    gw.check_concurrency(identity, len(valid))
    decision = None
    for _ in valid:
        decision = gw.admit(identity)
    answers: list[Any] = []
    queued = 0
    for sub in parsed:
        if not isinstance(sub, Submission):
            answers.append(sub)
            continue
        try:
            job = await enqueue(gw, identity, sub)
        except ApiError as exc:
            if queued == 0 and exc.status >= 500:
                raise
            answers.append({"error": exc.message})
            continue
        answers.append({"token": job.id})
        queued += 1
    return judge0_response(201, answers, decision.headers() if decision else None)


@bp.get("/submissions/batch")
async def get_batch() -> Any:
    """Several submissions by ``tokens=a,b,c``; an unknown token answers null in its place."""
    gw = gateway()
    fields = requested_fields()
    encoded = query_flag("base64_encoded")
    raw = request.headers.get("tokens") or request.args.get("tokens", "")
    tokens = [token.strip() for token in raw.split(",") if token.strip()]
    if len(tokens) > MAX_BATCH:
        raise Judge0Error(
            400, {"error": f"number of submissions in a batch should be less than or equal to {MAX_BATCH}"}
        )
    if not tokens:
        raise Judge0Error(400, {"error": "there should be at least one submission in a batch"})
    out: list[dict[str, Any] | None] = []
    for token in tokens:
        record = await gw.events.record(token)
        if record is None:
            out.append(None)
            continue
        try:
            out.append(render(gw, record.state, record, fields, encoded))
        except NotUtf8:
            raise Judge0Error(
                400,
                {
                    "error": "some attributes for one or more submissions cannot be converted to UTF-8, "
                    "use base64_encoded=true query parameter"
                },
            ) from None
    return jsonify({"submissions": out})


@bp.get("/submissions/<token>")
async def get_submission(token: str) -> Any:
    """One submission by token; 404 for a token this deployment never issued."""
    gw = gateway()
    fields = requested_fields()
    encoded = query_flag("base64_encoded")
    record = await gw.events.record(token)
    if record is None:
        raise Judge0Error(404, {"error": f"submission with token {token} doesn't exist"})
    try:
        return jsonify(render(gw, record.state, record, fields, encoded))
    except NotUtf8:
        raise Judge0Error(400, {"error": CONVERSION_ERROR}) from None


@bp.delete("/submissions/<token>")
async def delete_submission(token: str) -> Any:
    """Deleting is disabled (config_info says so), as on Judge0 hosts that do not allow it."""
    raise Judge0Error(400, {"error": "delete not allowed"})
