"""Piston v2 compatible API: ``GET /api/v2/runtimes`` and a synchronous ``POST /api/v2/execute``.

Existing Piston clients (Discord bots, editors, the ``piston`` wrappers) point their base URL
at runbox and keep working. Requests become ordinary runbox jobs (validated, rate limited,
queued durably); ``execute`` then waits for the job's terminal event and answers in Piston's
shape. Errors use Piston's ``{"message": ...}`` body, keeping our statuses and headers.
"""

from __future__ import annotations

import base64
import binascii
import math
import signal
from typing import Any

from quart import Blueprint, Response, jsonify

from app.events import JobRecord
from app.gateway import gateway
from app.gateway.output import combined_output, compile_event, compile_failed, result_of
from app.gateway.validate import Draft, bad
from app.languages import Language, Registry
from app.messages import JobState, SourceFile
from app.result import Result
from app.web.errors import ApiError, json_response

bp = Blueprint("compat_piston", __name__, url_prefix="/api/v2")

# Beyond the job's own time budget, how long ``execute`` waits for a free executor slot
# before giving up on answering synchronously (the job itself still runs to its end).
SYNC_WAIT_SLACK_S = 60.0
MIB = 1024 * 1024


def error_body(exc: ApiError) -> Any:
    """Piston's error body, ``{"message": ...}``."""
    return {"message": exc.message}


def shape(exc: ApiError) -> Response:
    """Piston's error body with our status code and headers."""
    return json_response(exc.status, error_body(exc), exc.headers)


# --- runtimes --------------------------------------------------------------------------------
def piston_name(language: Language) -> str:
    """The name Piston clients know the language by."""
    return language.piston_name or language.name


def find_runtime(registry: Registry, name: str, version: str) -> Language | None:
    """A runtime by its Piston name, our name, or an alias (any case), and a version as Piston
    selects one: exact, prefix or SemVer range, the highest version that matches.
    """
    wanted = name.strip().lower()
    by_piston = {piston_name(lang).lower(): lang.name for lang in registry}
    return registry.resolve(by_piston.get(wanted, wanted), version)


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


@bp.get("/packages")
async def packages() -> Any:
    """Piston's package list, read-only: every language unit, installed (images are built, not installed)."""
    return jsonify([
        {"language": piston_name(language), "language_version": language.version, "installed": True}
        for language in gateway().registry
    ])


# --- execute ---------------------------------------------------------------------------------
def decode_content(index: int, content: str, encoding: Any) -> str:
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
            raise bad("invalid_files", f"files[{index}].encoding must be one of base64, hex or utf8")
    except (binascii.Error, ValueError) as exc:
        raise bad("invalid_files", f"files[{index}].content is not valid {encoding}") from exc
    return raw.decode("utf-8", "surrogateescape")


def split_files(files: list[Any]) -> tuple[str, tuple[SourceFile, ...]]:
    """The first file is the program; the others keep their names next to it.

    The program is written under the name the language's commands use: its own name
    (main.py, main.c...) for most, whatever the client called it; for a class-named language
    (Java) the name of its public class, so ``public class Solution`` compiles and runs as in
    Piston. Piston names unnamed files ``file<i>.code``; so does this. A name may hold
    folders (``lib/util.py``), as Piston writes such files into them.
    """
    if not files:
        raise bad("invalid_files", "files must include at least one utf8 encoded file")
    texts: list[str] = []
    names: list[Any] = []
    utf8 = False
    for index, item in enumerate(files):
        encoding = item.get("encoding")
        utf8 = utf8 or encoding in (None, "utf8", "utf-8")
        texts.append(decode_content(index, item["content"], encoding))
        names.append(item.get("name"))
    if not utf8:
        raise bad("invalid_files", "files must include at least one utf8 encoded file")
    extra = []
    for index in range(1, len(texts)):
        name = names[index]
        if not isinstance(name, str) or name == "":
            name = f"file{index}.code"  # Piston's name for an unnamed file
        extra.append(SourceFile(name, texts[index]))
    return texts[0], tuple(extra)


def limit_ms(body: dict[str, Any], name: str, ceiling: float) -> float | None:
    """A Piston limit: absent, null, 0 or -1 mean the default; otherwise a number within the ceiling."""
    value = body.get(name)
    if value is None or value == 0 or value == -1:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise bad("invalid_limits", f"If specified, {name} must be a number")
    if value > ceiling:
        raise bad("invalid_limits", f"{name} cannot exceed the configured limit of {ceiling:g}")
    if value < 0:
        raise bad("invalid_limits", f"{name} must be non-negative")
    return float(value)


# Piston's defaults (its PISTON_RUN_TIMEOUT and PISTON_RUN_CPU_TIME) for a request that names no
# run limit. The compile step's defaults are the unit's own compile budget, sized for its
# toolchain as Piston's per-language limit overrides are (never below Piston's 10 s).
PISTON_RUN_TIMEOUT_S = 3.0
PISTON_RUN_CPU_TIME_S = 3.0


def piston_limits(language: Language, body: dict[str, Any]) -> dict[str, Any]:
    """Map Piston's millisecond and byte run limits onto the job's limits (checked by the validator)."""
    ceilings = language.max_limits
    run_timeout = limit_ms(body, "run_timeout", ceilings.timeout_s * 1000)
    run_cpu = limit_ms(body, "run_cpu_time", ceilings.cpu_time_s * 1000)
    requested: dict[str, Any] = {
        "timeout_s": run_timeout / 1000 if run_timeout is not None else min(PISTON_RUN_TIMEOUT_S, ceilings.timeout_s),
        "cpu_time_s": run_cpu / 1000 if run_cpu is not None else min(PISTON_RUN_CPU_TIME_S, ceilings.cpu_time_s),
    }
    run_memory = limit_ms(body, "run_memory_limit", ceilings.memory_mb * MIB)
    if run_memory is not None:
        requested["memory_mb"] = max(1, math.ceil(run_memory / MIB))
    return requested


def piston_compile_limits(language: Language, body: dict[str, Any]) -> dict[str, Any]:
    """Piston's ``compile_timeout``, ``compile_cpu_time`` (ms) and ``compile_memory_limit`` (bytes)
    as the compile step's limits; the step's own budget is their ceiling (and their default).
    """
    step = language.compile
    ceilings = language.max_limits
    timeout_ceiling = (step.timeout_s if step else ceilings.timeout_s) * 1000
    memory_ceiling = (step.memory_mb if step else ceilings.memory_mb) * MIB
    requested: dict[str, Any] = {}
    timeout = limit_ms(body, "compile_timeout", timeout_ceiling)
    if timeout is not None:
        requested["timeout_s"] = timeout / 1000
    cpu = limit_ms(body, "compile_cpu_time", timeout_ceiling * 2)
    if cpu is not None:
        requested["cpu_time_s"] = cpu / 1000
    memory = limit_ms(body, "compile_memory_limit", memory_ceiling)
    if memory is not None:
        requested["memory_mb"] = max(1, math.ceil(memory / MIB))
    return requested


def piston_args(raw: Any) -> tuple[str, ...]:
    """Piston passes ``args`` to the program as they are; numbers are accepted as their text."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise bad("invalid_args", "args must be an array of strings")
    out = []
    for item in raw:
        if isinstance(item, bool) or not isinstance(item, str | int | float):
            raise bad("invalid_args", "args must be an array of strings")
        out.append(item if isinstance(item, str) else str(item))
    return tuple(out)


def draft(registry: Registry, body: Any) -> Draft:
    """Translate a Piston ``execute`` body into a draft, with Piston's messages."""
    if not isinstance(body, dict):
        raise bad("invalid_body", "The request body must be a JSON object.")
    name = body.get("language")
    if not isinstance(name, str) or not name:
        raise bad("invalid_language", "language is required as a string")
    version = body.get("version", "*")
    if version is None:
        version = "*"
    if not isinstance(version, str):
        raise bad("invalid_version", "version is required as a string")
    files = body.get("files")
    if not isinstance(files, list):
        raise bad("invalid_files", "files is required as an array")
    for index, item in enumerate(files):
        if not isinstance(item, dict) or not isinstance(item.get("content"), str):
            raise bad("invalid_files", f"files[{index}].content is required as a string")
    language = find_runtime(registry, name, version)
    if language is None:
        known = ", ".join(f"{piston_name(lang)}-{lang.version}" for lang in registry)
        raise bad("unknown_language", f"{name[:100]}-{version[:40]} runtime is unknown; available runtimes: {known}")
    source, extra = split_files(files)
    stdin = body.get("stdin")
    if stdin is None:
        stdin = ""
    if not isinstance(stdin, str):
        raise bad("invalid_stdin", "stdin must be a string")
    if not stdin.endswith("\n"):
        # Piston ends stdin with a newline, so a shell's ``read`` (and many ``readline``s)
        # sees the last line; an empty stdin becomes one empty line, as there.
        stdin += "\n"
    return Draft(
        language=language,
        source=source,
        files=extra,
        stdin=stdin,
        args=piston_args(body.get("args")),
        limits=piston_limits(language, body),
        compile_limits=piston_compile_limits(language, body),
        folders=True,  # Piston writes "dir/name" files into their folders
    )


def signal_name(number: Any) -> str | None:
    """Piston reports signals by name (``SIGKILL``), not by number."""
    if not isinstance(number, int) or isinstance(number, bool):
        return None
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"SIG{number}"


def stage(
    stdout: str, stderr: str, output: str, code: int | None, sig: str | None, status: str | None,
    message: str | None, result: Result | None,
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
        "cpu_time": result.cpu_ms if result else None,
        "wall_time": result.duration_ms if result else None,
        "memory": result.memory_peak_kb * 1024 if result else None,
    }


def ending(state: JobState, result: Result, what: str) -> tuple[int | None, str | None, str | None, str | None]:
    """(code, signal, Piston status, message) for a stage that ended the job.

    Piston's status codes: RE (non-zero exit), SG (signal), TO (timed out), XX (internal
    error). A timed-out or memory-killed program is reported as killed by SIGKILL, which is
    what Piston does and what its clients test for.
    """
    sig = signal_name(result.signal)
    code = None if sig is not None else result.exit_code
    if state.status == "timed_out":
        message = "CPU time limit exceeded" if result.limit == "cpu_time" else "Time limit exceeded"
        return None, sig or "SIGKILL", "TO", message
    if state.status == "memory_exceeded":
        return None, sig or "SIGKILL", "SG", "Memory limit exceeded"
    if state.status == "failed":
        return code, sig, "XX", result.error or f"The {what} could not be run."
    if sig is not None:
        return code, sig, "SG", f"Killed by signal {sig}"
    if code not in (0, None):
        return code, sig, "RE", f"Exited with error status {code}"
    return code, sig, None, None


def run_stage(record: JobRecord | None, state: JobState) -> dict[str, Any]:
    """The ``run`` stage from a terminal job state (OL/EL: stdout or stderr too long)."""
    result = result_of(state)
    output = combined_output(record, state)
    if state.status == "output_exceeded":
        cut = result.truncated
        which = "EL" if cut.stderr and not cut.stdout else "OL"
        text = f"{'stderr' if which == 'EL' else 'stdout'} length exceeded"
        killed = signal_name(result.signal) or "SIGKILL"
        return stage(result.stdout, result.stderr, output, None, killed, which, text, result)
    code, sig, status, message = ending(state, result, "job")
    return stage(result.stdout, result.stderr, output, code, sig, status, message, result)


def compile_stage(record: JobRecord | None, state: JobState) -> dict[str, Any]:
    """The ``compile`` stage; the compiler's stdout and stderr reach us merged into one text."""
    result = result_of(state)
    event = compile_event(record, state) or {}
    # Compilers write diagnostics to stderr, so the merged text is reported there.
    text = str(event.get("output") or result.compile_output or "")
    if not compile_failed(record, state):
        code = event.get("exit_code", 0)
        return stage("", text, text, code if isinstance(code, int) else 0, None, None, None, None)
    # The compile step ended the job, so the result's exit and limit describe the compiler.
    code, sig, status, message = ending(state, result, "compiler")
    return stage("", text, text, code, sig, status, message, result)


@bp.post("/execute")
async def execute() -> Any:
    """Run a program to its end and answer with Piston's result object."""
    gw = gateway()
    identity = gw.identify()
    with gw.admission.submit(identity) as reservation:
        sub = draft(gw.registry, await gw.read_json())
        job = await gw.validator.check(sub, identity)
        reservation.bind(job.id)
        await gw.publisher.submit(job, "piston")
    language = sub.language
    budget = job.limits.timeout_s + (language.compile.timeout_s if language.compile else 0.0) + SYNC_WAIT_SLACK_S
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
    response.headers.update(reservation.decision.headers())
    return response
