"""Answering a submission in Judge0's shape, from the job's record and the stored attributes."""

from __future__ import annotations

import base64
import dataclasses
from collections.abc import Callable
from typing import Any

from quart import request

from app.events import JobRecord
from app.gateway.judge0.contract import (
    ALL_FIELDS,
    DEFAULT_FIELDS,
    META_EVENT,
    SIGNAL_STATUS,
    STATUS_NAMES,
    TEXT_FIELDS,
    judge0_name,
)
from app.gateway.output import combined_output, compile_failed, result_of
from app.judging import outputs_match
from app.languages import Registry
from app.messages import JobState, iso_time
from app.result import Result, TestOutcome
from app.web.errors import ApiError


class NotUtf8(Exception):
    """A text attribute holds bytes that are not UTF-8 and base64_encoded was not asked for."""


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


def stored_meta(record: JobRecord | None) -> dict[str, Any]:
    """The attributes stored with the submission; empty for a job created through another API."""
    if record is None:
        return {}
    data = record.extra.get(META_EVENT, {})
    return dict(data["submission"]) if isinstance(data.get("submission"), dict) else {}


def verdict(state: JobState, record: JobRecord | None, meta: dict[str, Any], stdout: str) -> tuple[int, str | None]:
    """Judge0's status id and isolate-style message for the job's state."""
    if state.status == "queued":
        return 1, None
    if state.status == "running":
        return 2, None
    result = result_of(state)
    sig = result.signal
    code = result.exit_code
    limit = result.limit
    compiler_ended_it = compile_failed(record, state)
    if state.status == "failed":
        error = result.error or "the job could not be run"
        return (14 if "exec format" in error.lower() else 13), error
    if compiler_ended_it:
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
    if result.verdict == "runtime_error":
        return 12, "Caught a fatal signal"  # one of several runs: its signal is not kept
    cpu_limit = meta.get("cpu_time_limit")
    # The sandbox kills at cpu_time_limit + cpu_extra_time (in whole seconds); Judge0 reports
    # any run over cpu_time_limit itself as a time-out, so the measured CPU time decides.
    if isinstance(cpu_limit, int | float) and result.cpu_ms > cpu_limit * 1000:
        return 5, "Time limit exceeded"
    expected = meta.get("expected_output")
    # The native API's test cases and Judge0's expected_output are judged by one rule.
    if isinstance(expected, str) and not outputs_match(stdout, expected):
        return 4, None
    return 3, None


# A run's verdict (app/judging.py) as the status of a job that ran once.
RUN_STATUS = {"timed_out": "timed_out", "memory_exceeded": "memory_exceeded", "output_exceeded": "output_exceeded"}


def runs_view(state: JobState, meta: dict[str, Any]) -> JobState:
    """A job of ``number_of_runs`` runs seen as Judge0 reports it: one run's answer.

    Judge0 repeats the run until one is not Accepted, then reports that last run's output
    and status with time and memory averaged over the runs made. Here every run was made
    (a judged job of identical cases); the runs after the first failing one are ignored.
    """
    result = result_of(state)
    runs = list(result.tests)
    if int(meta.get("number_of_runs") or 1) <= 1 or not runs or not state.terminal:
        return state
    judged = isinstance(meta.get("expected_output"), str)
    made: list[TestOutcome] = []
    for run in runs:
        made.append(run)
        if run.verdict != "accepted" and not (run.verdict == "wrong_answer" and not judged):
            break
    last = made[-1]
    all_ran = last is runs[-1]
    status = RUN_STATUS.get(last.verdict, "completed")
    if state.status == "timed_out" and len(made) == len(runs) and last.verdict in ("accepted", "wrong_answer"):
        status = "timed_out"  # the job's total time ran out before every run was made
    once = Result(
        exit_code=last.exit_code,
        # Runs keep their exit code, not their signal; the job's result has the last run's.
        signal=result.signal if all_ran else None,
        stdout=last.stdout,
        stderr=last.stderr,
        compile_output=result.compile_output,
        duration_ms=sum(run.duration_ms for run in made) // len(made),
        cpu_ms=sum(run.cpu_ms for run in made) // len(made),
        memory_peak_kb=sum(run.memory_peak_kb for run in made) // len(made),
        limit=result.limit,
        verdict=last.verdict,
    )
    return dataclasses.replace(state, status=status, result=once)


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
    registry: Registry, state: JobState, record: JobRecord | None, fields: tuple[str, ...], encoded: bool
) -> dict[str, Any]:
    """One submission in Judge0's shape, restricted to ``fields``; raises NotUtf8 when it must."""
    meta = stored_meta(record)
    state = runs_view(state, meta)
    result = result_of(state)
    terminal = state.terminal
    stdout: str | None = result.stdout
    stderr: str | None = result.stderr
    if terminal and meta.get("redirect_stderr_to_stdout"):
        stdout, stderr = combined_output(record, state), ""
    status_id, message = verdict(state, record, meta, stdout or "")
    compiled_error = status_id == 6
    ran = terminal and not compiled_error and state.status != "failed"
    lang = registry.get(state.language) if state.language else None
    language_id = meta.get("language_id") or (lang.judge0_id if lang and lang.judge0_id else None)
    values: dict[str, Any] = {
        "source_code": meta.get("source_code"),
        "language_id": language_id,
        "stdin": meta.get("stdin"),
        "expected_output": meta.get("expected_output"),
        # Judge0 answers null, not "", for an empty stream.
        "stdout": (stdout or None) if terminal else None,
        "stderr": (stderr or None) if terminal else None,
        "compile_output": (result.compile_output or None) if terminal else None,
        "message": message,
        "status_id": status_id,
        "status": {"id": status_id, "description": STATUS_NAMES[status_id]},
        "created_at": iso_time(state.created_at),
        "finished_at": iso_time(state.finished_at) if terminal else None,
        "time": seconds(result.cpu_ms) if ran else None,
        "wall_time": seconds(result.duration_ms) if ran else None,
        "memory": result.memory_peak_kb if ran else None,
        # isolate reports no exit code for a signalled process and Judge0 stores 0 then.
        "exit_code": (result.exit_code or 0) if ran else None,
        "exit_signal": result.signal if ran else None,
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


def callback_renderer(registry: Registry) -> Callable[[JobRecord], dict[str, Any]]:
    """The body of Judge0's callback: the submission with the default fields, Base64 encoded.

    That is what Judge0 PUTs to ``callback_url`` (it always encodes there, so any output
    travels, whatever its bytes).
    """

    def body(record: JobRecord) -> dict[str, Any]:
        return render(registry, record.state, record, DEFAULT_FIELDS, True)

    return body


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
        raise ApiError(400, "invalid_fields", f"invalid fields: [{', '.join(n[:40] for n in invalid[:20])}]")
    return tuple(dict.fromkeys(names))


def query_flag(name: str) -> bool:
    """A boolean query parameter; only ``true`` turns it on, as in Judge0."""
    return request.args.get(name, "").strip().lower() == "true"
