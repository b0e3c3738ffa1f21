"""The one validator: every submission, whatever API it came through, is checked here.

Adapters translate their wire format into a :class:`Draft` (the language already chosen,
limits still as requested); :meth:`Validator.check` then applies every rule once: limits
within the language's maximums and finite, plain file names, argument count, size and
characters, the total size of what would be published, test cases, and the callback URL's
address policy. A refused draft is a 400 whose ``code`` names the field (``invalid_files``,
``invalid_args``...) and whose message says what is wrong; adapters re-shape it to their
flavour (Judge0 answers 422 per field).

Text arrives as JSON strings that the request reader already checked to be valid UTF-8
without lone surrogates; binary content a flavour decodes (Piston and Judge0 Base64) is
carried as surrogate escapes on purpose, so the agent writes the exact bytes.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass, field
from typing import Any

from app import urlpolicy
from app.config import Settings
from app.gateway.identity import Identity
from app.languages import Language, LimitError, Limits, Registry
from app.messages import Job, SourceFile, TestCase, new_job_id
from app.web.errors import ApiError

FILE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,99}$")
MAX_FILES = 32
MAX_FOLDER_DEPTH = 8  # folders a file may sit in, where a flavour allows folders (Judge0's zips)
MAX_ARGS = 64
MAX_ARG_BYTES = 32 * 1024  # one argument; Linux refuses more than 128 KiB at exec, and churns a container
MAX_ARGS_BYTES = 128 * 1024  # all arguments together
MAX_TESTS = 64
MAX_VERSION_LENGTH = 64
# Everything a job carries (source, files, stdin, test cases), after any decoding: Judge0's
# zips and Base64 can expand past the body cap, and the job must fit a broker message.
MAX_JOB_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class Draft:
    """A submission translated from an API flavour, before validation."""

    language: Language
    source: str
    files: tuple[SourceFile, ...] = ()
    stdin: str = ""
    args: tuple[str, ...] = ()
    limits: dict[str, Any] | None = None  # as requested; None for the language's defaults
    version: str = ""
    tests: tuple[TestCase, ...] = ()
    interactive: bool = False
    callback_url: str = ""
    callback_renderer: str = ""  # how the callback body is rendered: "" (the v1 state) or "judge0"
    compile_options: tuple[str, ...] = ()  # appended to the compile command (Judge0's compiler_options)
    stack_kb: int = 0  # the run step's stack limit; 0 leaves the sandbox's default
    # Tighter compile-step limits (``timeout_s``, ``cpu_time_s``, ``memory_mb``), as requested.
    compile_limits: dict[str, Any] = field(default_factory=dict)
    # Extra files may sit in folders ("data/in.txt"): Judge0's additional_files zips. The v1
    # contract keeps plain names.
    folders: bool = False


def bad(code: str, message: str) -> ApiError:
    """A 400 for one field; counted as ``bad_request`` by the error handler."""
    return ApiError(400, code, message)


def size(text: str) -> int:
    """Bytes ``text`` takes once encoded (surrogate escapes count as the byte they carry)."""
    if text.isascii():
        return len(text)
    return len(text.encode("utf-8", "surrogatepass"))


class Validator:
    """Checks drafts against the registry and the operator's settings; builds jobs."""

    def __init__(self, settings: Settings, registry: Registry) -> None:
        self.settings = settings
        self.registry = registry
        self.callback_networks = urlpolicy.networks(settings.callback_allow_cidrs)

    # --- single fields ---------------------------------------------------------------------------
    def language(self, name: Any, version: Any = "") -> Language:
        """The language named ``name`` (and ``version``), or a 400 listing the valid names."""
        if not isinstance(name, str) or not name:
            raise bad("invalid_language", f"'language' must be one of: {', '.join(self.registry.names())}.")
        if version is None:
            version = ""
        if not isinstance(version, str) or len(version) > MAX_VERSION_LENGTH:
            raise bad("invalid_version", f"'version' must be a string of at most {MAX_VERSION_LENGTH} characters.")
        language = self.registry.get(name)
        if language is None:
            raise bad(
                "unknown_language",
                f"Unknown language {name[:100]!r}; valid names: {', '.join(self.registry.names())}.",
            )
        chosen = self.registry.resolve(name, version)
        if chosen is None:
            raise bad(
                "unknown_version",
                f"{language.name} has no version matching {version[:40]!r}; "
                f"its versions: {', '.join(self.registry.versions(name))}.",
            )
        return chosen

    def limits(self, language: Language, requested: dict[str, Any] | None) -> Limits:
        try:
            return language.resolve_limits(requested)
        except LimitError as exc:
            raise bad("invalid_limits", str(exc)) from exc

    def compile_limits(self, language: Language, requested: dict[str, Any]) -> dict[str, float]:
        """Limits for the compile step: finite, positive and within the language's compile step.

        A language without a compile step has nothing to apply them to; they are dropped.
        """
        step = language.compile
        if step is None:
            return {}
        ceilings = {"timeout_s": step.timeout_s, "cpu_time_s": step.timeout_s * 2, "memory_mb": float(step.memory_mb)}
        out: dict[str, float] = {}
        for name, value in requested.items():
            if name not in ceilings:
                raise bad("invalid_limits", f"unknown compile limit {name!r}; known: {', '.join(ceilings)}")
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
                raise bad("invalid_limits", f"the compile step's {name} must be a finite positive number")
            if value > ceilings[name]:
                raise bad(
                    "invalid_limits", f"the compile step's {name}={value:g} is above its maximum of {ceilings[name]:g}"
                )
            out[name] = float(math.ceil(value)) if name == "memory_mb" else float(value)
        return out

    def files(
        self, raw: list[tuple[str, str]], language: Language, main_file: str = "", folders: bool = False
    ) -> tuple[SourceFile, ...]:
        """Extra files as (name, content) pairs: plain names, no duplicates, at most MAX_FILES.

        With ``folders`` a name may be a relative path whose every part is a plain name, at
        most ``MAX_FOLDER_DEPTH`` folders deep; no file may also be another file's folder.
        """
        if len(raw) > MAX_FILES:
            raise bad("invalid_files", f"At most {MAX_FILES} extra files are allowed, not {len(raw)}.")
        main_file = main_file or language.source_file
        seen = {main_file}
        folder_names: set[str] = set()
        out = []
        for name, content in raw:
            parts = name.split("/") if folders else [name]
            if (
                len(parts) > MAX_FOLDER_DEPTH + 1
                or not all(FILE_NAME.fullmatch(part) for part in parts)
                or name in seen
                or name in folder_names
            ):
                where = f", in at most {MAX_FOLDER_DEPTH} folders" if folders else ", no paths"
                raise bad(
                    "invalid_files",
                    f"File name {name[:100]!r} is not allowed: use letters, digits, '.', '_' or '-' (at most 100)"
                    f"{where}, no duplicates, and not the main file's name {main_file!r}.",
                )
            prefixes = {"/".join(parts[:i]) for i in range(1, len(parts))}
            if prefixes & seen:
                raise bad("invalid_files", f"{name[:100]!r} would put a file inside another file.")
            folder_names |= prefixes
            seen.add(name)
            out.append(SourceFile(name, content))
        return tuple(out)

    def args(self, args: tuple[str, ...], code: str = "invalid_args") -> tuple[str, ...]:
        """Program (or compiler) arguments: bounded in count and bytes, no NUL; a 400 with ``code``."""
        if len(args) > MAX_ARGS:
            raise bad(code, f"At most {MAX_ARGS} arguments are allowed, not {len(args)}.")
        total = 0
        for index, arg in enumerate(args):
            if "\x00" in arg:
                raise bad(code, f"Argument {index} contains a NUL character, which no program can receive.")
            length = size(arg)
            if length > MAX_ARG_BYTES:
                raise bad(code, f"Argument {index} is {length} bytes; at most {MAX_ARG_BYTES} are allowed.")
            total += length
        if total > MAX_ARGS_BYTES:
            raise bad(code, f"The arguments take {total} bytes together; at most {MAX_ARGS_BYTES}.")
        return args

    def tests(self, tests: tuple[TestCase, ...]) -> tuple[TestCase, ...]:
        if len(tests) > MAX_TESTS:
            raise bad("invalid_tests", f"At most {MAX_TESTS} test cases are allowed, not {len(tests)}.")
        return tests

    def stdin(self, body: Any) -> tuple[str, bool]:
        """Input for an interactive job, ``{"data": "...", "eof": false}`` (both optional)."""
        if not isinstance(body, dict) or set(body) - {"data", "eof"}:
            raise bad("invalid_body", "The body must be a JSON object with 'data' (a string) and 'eof' (a boolean).")
        data = body.get("data")
        eof = body.get("eof")
        if data is None:
            data = ""
        if eof is None:
            eof = False
        if not isinstance(data, str):
            raise bad("invalid_stdin", "'data' must be a string.")
        if not isinstance(eof, bool):
            raise bad("invalid_stdin", "'eof' must be true or false.")
        return data, eof

    async def callback(self, url: str) -> str:
        """The callback URL if its scheme and every address its host resolves to may be called."""
        if not url:
            return ""
        if not self.settings.callback_secret:
            raise bad("invalid_callback_url", "Callbacks are not enabled on this deployment (no callback secret).")
        try:
            await urlpolicy.check(url, self.callback_networks)
        except urlpolicy.UrlRefused as exc:
            raise bad("invalid_callback_url", f"'callback_url' is refused: {exc}.") from exc
        return url

    # --- the whole draft ---------------------------------------------------------------------------
    async def check(self, draft: Draft, identity: Identity) -> Job:
        """Every rule on ``draft``; the job to publish, or a 400 naming the first problem."""
        limits = self.limits(draft.language, draft.limits)
        main_file = draft.language.main_file(draft.source)
        files = self.files([(f.name, f.content) for f in draft.files], draft.language, main_file, draft.folders)
        compile_limits = self.compile_limits(draft.language, draft.compile_limits)
        args = self.args(draft.args)
        compile_options = self.args(draft.compile_options, "invalid_compile_options")
        if compile_options and draft.language.compile is None:
            raise bad("invalid_compile_options", f"{draft.language.name} is not compiled: no compiler options.")
        tests = self.tests(draft.tests)
        if draft.interactive and tests:
            raise bad("invalid_interactive", "A job cannot be both interactive and judged against test cases.")
        total = size(draft.source) + size(draft.stdin) + sum(size(f.content) for f in files)
        total += sum(size(t.stdin) + size(t.expected_stdout) for t in tests)
        if total > MAX_JOB_BYTES:
            raise bad(
                "too_large", f"The job carries {total} bytes of source, files and input; at most {MAX_JOB_BYTES}."
            )
        callback_url = await self.callback(draft.callback_url)
        now = time.time()
        return Job(
            id=new_job_id(now, self.settings.job_id_key),
            language=draft.language.name,
            source=draft.source,
            limits=limits,
            files=files,
            stdin=draft.stdin,
            args=args,
            identity=identity.tag,
            created_at=now,
            version=draft.language.version,  # the version resolved, so executors need not resolve again
            tests=tests,
            interactive=draft.interactive,
            callback_url=callback_url,
            callback_renderer=draft.callback_renderer if callback_url else "",
            compile_options=compile_options,
            stack_kb=draft.stack_kb,
            compile_limits=compile_limits,
        )
