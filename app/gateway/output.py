"""Views of a finished job that more than one renderer needs (Piston and Judge0)."""

from __future__ import annotations

from typing import Any

from app.events import JobRecord
from app.messages import JobState
from app.result import Result


def result_of(state: JobState) -> Result:
    """The job's typed result; an empty one while it has none."""
    return state.result if state.result is not None else Result()


def combined_output(record: JobRecord | None, state: JobState) -> str:
    """stdout and stderr interleaved in the order the program wrote them.

    The result holds each stream whole; the order lives in the job's ``stdout``/``stderr``
    events of the attempt that produced the result. If those do not add up to the result
    (a record rebuilt from a partial history), fall back to stdout then stderr.
    """
    result = result_of(state)
    if record is None:
        return result.stdout + result.stderr
    chunks = [(name, data) for name, data in record.chunks(state.attempt)]
    joined_out = "".join(data for name, data in chunks if name == "stdout")
    joined_err = "".join(data for name, data in chunks if name == "stderr")
    if joined_out != result.stdout or joined_err != result.stderr:
        return result.stdout + result.stderr
    return "".join(data for _, data in chunks)


def compile_event(record: JobRecord | None, state: JobState) -> dict[str, Any] | None:
    """The data of the ``compile`` event of the attempt that produced the result, if any."""
    if record is None:
        return None
    for event in record.events:
        if event.name == "compile" and event.attempt == state.attempt:
            return event.data
    return None


def compile_failed(record: JobRecord | None, state: JobState) -> bool:
    """Whether the compile step ended the job (error, a limit or a compiler that could not start).

    A compiler can exit 0 and still have ended the job: the agent's memory watch may find it
    over its limit in the same turn it exits (seen under load), so the step's status counts too.
    """
    if state.status == "compile_error":
        return True
    event = compile_event(record, state)
    return event is not None and (event.get("exit_code") != 0 or event.get("status", "completed") != "completed")
