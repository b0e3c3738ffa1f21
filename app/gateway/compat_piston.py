"""Piston v2 compatible API: ``GET /api/v2/runtimes`` and a synchronous ``POST /api/v2/execute``.

Existing Piston clients (Discord bots, editors, the ``piston`` wrappers) point their base URL
at runbox and keep working. Requests become ordinary runbox jobs (validated, rate limited,
queued durably); ``execute`` then waits for the job's terminal event and answers in Piston's
shape. Errors use Piston's ``{"message": ...}`` body, keeping our statuses and headers.
"""

from __future__ import annotations

import base64
import binascii
import logging
import math
import signal
from typing import Any

from quart import Blueprint, Response, jsonify, request
from werkzeug.exceptions import HTTPException

from app.broker import BrokerUnavailable
from app.events import JobRecord
from app.gateway import gateway
from app.gateway.errors import ApiError, json_response
from app.gateway.service import MAX_ARGS, Gateway
from app.languages import Language, LimitError, Limits, Registry
from app.messages import JobState, SourceFile, empty_result

log = logging.getLogger(__name__)

bp = Blueprint("compat_piston", __name__, url_prefix="/api/v2")

# Beyond the job's own time budget, how long ``execute`` waits for a free executor slot
# before giving up on answering synchronously (the job itself still runs to its end).
SYNC_WAIT_SLACK_S = 60.0
MIB = 1024 * 1024


# --- errors ----------------------------------------------------------------------------------
def piston_error(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    """Piston's error body, ``{"message": ...}``, with our status code and headers."""
    return json_response(status, {"message": message}, headers)


@bp.errorhandler(ApiError)
async def _api_error(exc: ApiError) -> Response:
    # 401/429/503 keep their status and Retry-After/RateLimit headers; only the body changes.
    return piston_error(exc.status, exc.message, exc.headers)


@bp.errorhandler(BrokerUnavailable)
async def _broker_error(exc: BrokerUnavailable) -> Response:
    retry = str(gateway().settings.retry_after_s)
    return piston_error(503, "The job queue is unreachable; try again shortly.", {"Retry-After": retry})


@bp.errorhandler(HTTPException)
async def _http_error(exc: HTTPException) -> Response:
    status = exc.code or 500
    if status == 413:
        return piston_error(413, "The request body is larger than this service accepts.")
    return piston_error(status, exc.description or "HTTP error")


@bp.errorhandler(Exception)
async def _unexpected(exc: Exception) -> Response:
    log.exception("unhandled error in the Piston API")
    return piston_error(500, "The service hit an unexpected error; it has been logged.")


# --- runtimes --------------------------------------------------------------------------------
def piston_name(language: Language) -> str:
    """The name Piston clients know the language by."""
    return language.piston_name or language.name


def find_runtime(registry: Registry, name: str) -> Language | None:
    """A language by its Piston name, our name, or an alias (case-insensitive)."""
    wanted = name.strip().lower()
    languages: list[Language] = list(registry)
    for language in languages:
        if piston_name(language).lower() == wanted:
            return language
    return registry.get(wanted)


def version_matches(requested: str, actual: str) -> bool:
    """Piston's version selector, simplified: ``*``, the exact version, or a prefix with wildcards.

    ``3``, ``3.11``, ``3.x`` and ``3.11.*`` all select 3.11.2; real Piston resolves full SemVer
    ranges, which no client we know of sends.
    """
    wanted = requested.strip().lstrip("v=")
    if wanted in ("", "*", "x", "X", "latest"):
        return True
    have = actual.split(".")
    parts = wanted.split(".")
    if len(parts) > len(have):
        return False
    return all(p in ("*", "x", "X") or p == h for p, h in zip(parts, have, strict=False))


@bp.get("/runtimes")
async def runtimes() -> Any:
    """Every language as a Piston runtime: ``[{language, version, aliases}]``."""
    out = []
    for language in gateway().registry:
        name = piston_name(language)
        aliases = [a for a in (language.name, *language.aliases) if a.lower() != name.lower()]
        # Piston adds "runtime" only where one language has several runtimes; ours have one.
        out.append({"language": name, "version": language.version, "aliases": aliases})
    return jsonify(out)


# --- execute ---------------------------------------------------------------------------------
async def json_object(gw: Gateway) -> dict[str, Any]:
    """The request body as a JSON object, or a 400 in Piston's shape."""
    data = await request.get_data(cache=True)
    if not data:
        raise gw.bad("invalid_json", "The request body is empty; send a JSON object.")
    body = await request.get_json(force=True, silent=True)
    if body is None:
        raise gw.bad("invalid_json", "The request body is not valid JSON.")
    if not isinstance(body, dict):
        raise gw.bad("invalid_body", "The request body must be a JSON object.")
    return body


def decode_content(gw: Gateway, index: int, content: str, encoding: Any) -> str:
    """A file's content as text; binary (base64/hex) content survives via surrogate escapes.

    The sandbox agent writes files with ``surrogateescape``, so bytes that are not UTF-8
    reach the program unchanged.
    """
    if encoding in (None, "utf8", "utf-8"):
        return content
    try:
        if encoding == "base64":
            raw = base64.b64decode(content, validate=False)
        elif encoding == "hex":
            raw = bytes.fromhex(content)
        else:
            raise gw.bad("invalid_files", f"files[{index}].encoding must be one of base64, hex or utf8")
    except (binascii.Error, ValueError) as exc:
        raise gw.bad("invalid_files", f"files[{index}].content is not valid {encoding}") from exc
    return raw.decode("utf-8", "surrogateescape")


def split_files(gw: Gateway, language: Language, files: list[Any]) -> tuple[str, tuple[SourceFile, ...]]:
    """The first file is the program; the others become extra files next to it."""
    if not files:
        raise gw.bad("invalid_files", "files must include at least one utf8 encoded file")
    texts: list[str] = []
    names: list[Any] = []
    utf8 = False
    for index, item in enumerate(files):
        if not isinstance(item, dict) or not isinstance(item.get("content"), str):
            raise gw.bad("invalid_files", f"files[{index}].content is required as a string")
        encoding = item.get("encoding")
        utf8 = utf8 or encoding in (None, "utf8", "utf-8")
        texts.append(decode_content(gw, index, item["content"], encoding))
        names.append(item.get("name"))
    if not utf8:
        raise gw.bad("invalid_files", "files must include at least one utf8 encoded file")
    extra = []
    for index in range(1, len(texts)):
        name = names[index]
        if name is None or name == "":
            name = f"file{index}"  # Piston picks a name for unnamed files too
        extra.append({"name": name, "content": texts[index]})
    # The main file always takes the language's own name (main.py, main.c...), whatever the
    # client called it, because the run and compile commands refer to that name.
    return texts[0], gw.files(extra, language)


def limit_ms(gw: Gateway, body: dict[str, Any], name: str, ceiling: float) -> float | None:
    """A Piston limit: absent, null, 0 or -1 mean the default; otherwise a number within the ceiling."""
    value = body.get(name)
    if value is None or value == 0 or value == -1:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise gw.bad("invalid_limits", f"If specified, {name} must be a number")
    if value > ceiling:
        raise gw.bad("invalid_limits", f"{name} cannot exceed the configured limit of {ceiling:g}")
    if value < 0:
        raise gw.bad("invalid_limits", f"{name} must be non-negative")
    return float(value)


def piston_limits(gw: Gateway, language: Language, body: dict[str, Any]) -> Limits:
    """Map Piston's millisecond and byte limits onto the job's limits."""
    ceilings = language.max_limits
    requested: dict[str, Any] = {}
    run_timeout = limit_ms(gw, body, "run_timeout", ceilings.timeout_s * 1000)
    if run_timeout is not None:
        requested["timeout_s"] = run_timeout / 1000
    run_cpu = limit_ms(gw, body, "run_cpu_time", ceilings.cpu_time_s * 1000)
    if run_cpu is not None:
        requested["cpu_time_s"] = run_cpu / 1000
    run_memory = limit_ms(gw, body, "run_memory_limit", ceilings.memory_mb * MIB)
    if run_memory is not None:
        requested["memory_mb"] = max(1, math.ceil(run_memory / MIB))
    # The compile step's limits are fixed per language, so compile_* values are checked against
    # them and otherwise not applied: a smaller request is accepted but not enforced.
    compile_step = language.compile
    compile_timeout_ceiling = compile_step.timeout_s * 1000 if compile_step else ceilings.timeout_s * 1000
    compile_memory_ceiling = compile_step.memory_mb * MIB if compile_step else ceilings.memory_mb * MIB
    limit_ms(gw, body, "compile_timeout", compile_timeout_ceiling)
    limit_ms(gw, body, "compile_cpu_time", compile_timeout_ceiling)
    limit_ms(gw, body, "compile_memory_limit", compile_memory_ceiling)
    try:
        return language.resolve_limits(requested or None)
    except LimitError as exc:
        raise gw.bad("invalid_limits", str(exc)) from exc


def piston_args(gw: Gateway, raw: Any) -> tuple[str, ...]:
    """Piston passes ``args`` to the program as they are; numbers are accepted as their text."""
    if raw is None:
        return ()
    if not isinstance(raw, list) or len(raw) > MAX_ARGS:
        raise gw.bad("invalid_args", f"args must be an array of at most {MAX_ARGS} strings")
    out = []
    for item in raw:
        if isinstance(item, bool) or not isinstance(item, str | int | float):
            raise gw.bad("invalid_args", "args must be an array of strings")
        out.append(item if isinstance(item, str) else str(item))
    return tuple(out)


def signal_name(number: Any) -> str | None:
    """Piston reports signals by name (``SIGKILL``), not by number."""
    if not isinstance(number, int) or isinstance(number, bool):
        return None
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"SIG{number}"


def combined_output(record: JobRecord | None, state: JobState) -> str:
    """stdout and stderr interleaved in the order the program wrote them.

    The result holds each stream whole; the order lives in the job's ``stdout``/``stderr``
    events of the attempt that produced the result. If those do not add up to the result
    (a record rebuilt from a partial history), fall back to stdout then stderr.
    """
    result = state.result or empty_result()
    stdout, stderr = result.get("stdout") or "", result.get("stderr") or ""
    if record is None:
        return stdout + stderr
    chunks = [e for e in record.events if e.name in ("stdout", "stderr") and e.attempt == state.attempt]
    joined_out = "".join(str(e.data.get("data", "")) for e in chunks if e.name == "stdout")
    joined_err = "".join(str(e.data.get("data", "")) for e in chunks if e.name == "stderr")
    if joined_out != stdout or joined_err != stderr:
        return stdout + stderr
    return "".join(str(e.data.get("data", "")) for e in chunks)


def compile_event(record: JobRecord | None, state: JobState) -> dict[str, Any] | None:
    """The data of the ``compile`` event of the attempt that produced the result, if any."""
    if record is None:
        return None
    for event in record.events:
        if event.name == "compile" and event.attempt == state.attempt:
            return event.data
    return None


def stage(
    stdout: str, stderr: str, output: str, code: Any, sig: Any, status: str | None, message: str | None,
    result: dict[str, Any],
) -> dict[str, Any]:
    """One stage object: Piston's documented fields plus the extras newer Piston versions send."""
    return {
        "stdout": stdout,
        "stderr": stderr,
        "output": output,
        "code": code,
        "signal": sig,
        "message": message,
        "status": status,
        "cpu_time": result.get("cpu_ms"),
        "wall_time": result.get("duration_ms"),
        "memory": result["memory_peak_kb"] * 1024 if isinstance(result.get("memory_peak_kb"), int) else None,
    }


def run_stage(record: JobRecord | None, state: JobState) -> dict[str, Any]:
    """The ``run`` stage from a terminal job state.

    Piston's status codes: RE (non-zero exit), SG (signal), TO (timed out), OL/EL (stdout or
    stderr too long), XX (internal error). A timed-out program is reported as killed by
    SIGKILL, which is what Piston does and what its clients test for.
    """
    result = state.result or empty_result()
    stdout, stderr = result.get("stdout") or "", result.get("stderr") or ""
    output = combined_output(record, state)
    sig = signal_name(result.get("signal"))
    code = None if sig is not None else result.get("exit_code")
    status: str | None = None
    message: str | None = None
    if state.status == "timed_out":
        sig, code, status = sig or "SIGKILL", None, "TO"
        message = "CPU time limit exceeded" if result.get("limit") == "cpu_time" else "Time limit exceeded"
    elif state.status == "output_exceeded":
        truncated = result.get("truncated") or {}
        status = "EL" if truncated.get("stderr") and not truncated.get("stdout") else "OL"
        message = f"{'stderr' if status == 'EL' else 'stdout'} length exceeded"
        sig, code = sig or "SIGKILL", None
    elif state.status == "memory_exceeded":
        sig, code, status, message = sig or "SIGKILL", None, "SG", "Memory limit exceeded"
    elif state.status == "failed":
        status, message = "XX", str(result.get("error") or "The job could not be run.")
    elif sig is not None:
        status, message = "SG", f"Killed by signal {sig}"
    elif code not in (0, None):
        status, message = "RE", f"Exited with error status {code}"
    return stage(stdout, stderr, output, code, sig, status, message, result)


def compile_failed(record: JobRecord | None, state: JobState) -> bool:
    """Whether the compile step ended the job (error, time limit or a compiler that could not start)."""
    if state.status == "compile_error":
        return True
    event = compile_event(record, state)
    return event is not None and event.get("exit_code") != 0


def compile_stage(record: JobRecord | None, state: JobState) -> dict[str, Any]:
    """The ``compile`` stage; the compiler's stdout and stderr reach us merged into one text."""
    result = state.result or empty_result()
    event = compile_event(record, state) or {}
    # Compilers write diagnostics to stderr, so the merged text is reported there.
    text = str(event.get("output") or result.get("compile_output") or "")
    if not compile_failed(record, state):
        return stage("", text, text, event.get("exit_code", 0), None, None, None, {})
    # The compile step ended the job, so the result's exit and limit describe the compiler.
    sig = signal_name(result.get("signal"))
    code = None if sig is not None else result.get("exit_code")
    status: str | None = None
    message: str | None = None
    if state.status == "timed_out":
        sig, code, status, message = sig or "SIGKILL", None, "TO", "Time limit exceeded"
    elif state.status == "memory_exceeded":
        sig, code, status, message = sig or "SIGKILL", None, "SG", "Memory limit exceeded"
    elif state.status == "failed":
        status, message = "XX", str(result.get("error") or "The compiler could not be run.")
    elif sig is not None:
        status, message = "SG", f"Killed by signal {sig}"
    elif code not in (0, None):
        status, message = "RE", f"Exited with error status {code}"
    return stage("", text, text, code, sig, status, message, result)


@bp.post("/execute")
async def execute() -> Any:
    """Run a program to its end and answer with Piston's result object."""
    gw = gateway()
    # Read the body before anything can refuse the request: answering with the body unread
    # makes the server drop the client's keep-alive connection.
    await request.get_data(cache=True)
    identity = gw.identify(request)
    body = await json_object(gw)
    name = body.get("language")
    if not isinstance(name, str) or not name:
        raise gw.bad("invalid_language", "language is required as a string")
    version = body.get("version", "*")
    if version is None:
        version = "*"
    if not isinstance(version, str):
        raise gw.bad("invalid_version", "version is required as a string")
    files = body.get("files")
    if not isinstance(files, list):
        raise gw.bad("invalid_files", "files is required as an array")
    for index, item in enumerate(files):
        if not isinstance(item, dict) or not isinstance(item.get("content"), str):
            raise gw.bad("invalid_files", f"files[{index}].content is required as a string")
    language = find_runtime(gw.registry, name)
    if language is None or not version_matches(version, language.version):
        known = ", ".join(f"{piston_name(lang)}-{lang.version}" for lang in gw.registry)
        raise gw.bad("unknown_language", f"{name}-{version} runtime is unknown; available runtimes: {known}")
    source, extra = split_files(gw, language, files)
    stdin = body.get("stdin")
    if stdin is None:
        stdin = ""
    if not isinstance(stdin, str):
        raise gw.bad("invalid_stdin", "stdin must be a string")
    args = piston_args(gw, body.get("args"))
    limits = piston_limits(gw, language, body)
    job = gw.make_job(language, source, extra, stdin, args, limits, identity)
    decision = gw.admit(identity)
    await gw.submit(job, "piston")

    budget = limits.timeout_s + (language.compile.timeout_s if language.compile else 0.0) + SYNC_WAIT_SLACK_S
    state = await gw.events.wait_terminal(job.id, budget)
    if state is None or not state.terminal:
        raise ApiError(
            504,
            "timeout",
            f"The job {job.id} did not finish within {budget:g} s; it is still queued or running.",
        )
    record = await gw.events.record(job.id)
    answer: dict[str, Any] = {"language": piston_name(language), "version": language.version}
    if language.compiled:
        answer["compile"] = compile_stage(record, state)
    if language.compiled and compile_failed(record, state):
        # The program never ran; like Piston, repeat the compile stage as the run stage so
        # clients that only read ``run.output`` still see the compiler's message.
        answer["run"] = answer["compile"]
    else:
        answer["run"] = run_stage(record, state)
    response = jsonify(answer)
    response.headers.update(decision.headers())
    return response
