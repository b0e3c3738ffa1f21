"""Server-Sent Events framing and the public shape of each event's data."""

from __future__ import annotations

from typing import Any

from app import jsoncodec
from app.messages import Event, JobState, iso_time

KEEPALIVE = b": keep-alive\n\n"


def encode(seq: int, name: str, data: dict[str, Any]) -> bytes:
    """One SSE message; JSON never holds a raw newline, so ``data`` fits on one line."""
    return b"id: %d\nevent: %s\ndata: %s\n\n" % (seq, name.encode(), jsoncodec.dumps(data))


def public_data(event: Event, state: JobState) -> dict[str, Any]:
    """What a client sees for an event: the result event carries the full job state."""
    if event.name == "result":
        return state.public()
    if event.name == "queued":
        return {
            "id": event.job,
            "status": "queued",
            "language": state.language,
            "created_at": iso_time(state.created_at),
        }
    if event.name == "started":
        return {"attempt": event.attempt, "started_at": iso_time(event.data.get("started_at", event.ts))}
    return {**event.data, "attempt": event.attempt}
