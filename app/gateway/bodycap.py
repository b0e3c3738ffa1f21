"""The request body cap, answered with a readable 413.

Quart's own ``MAX_CONTENT_LENGTH`` refuses an oversized body before reading it, and the
server then closes the connection while the client is still sending, so most clients see
a broken connection instead of the 413. Here a body over ``RUNBOX_MAX_BODY_KB`` is read
and discarded (up to ``DRAIN_LIMIT``) before the answer; Quart's limit stays as the hard
guard for absurd sizes and for bodies without a Content-Length.
"""

from __future__ import annotations

from quart import Quart, request

from app.gateway.errors import ApiError

DRAIN_LIMIT = 128 * 1024 * 1024


def register(app: Quart, cap_bytes: int) -> None:
    """Answer 413 for bodies over ``cap_bytes`` after draining them (the 413 is counted by instrumentation)."""
    app.config["MAX_CONTENT_LENGTH"] = DRAIN_LIMIT

    @app.before_request
    async def refuse_large_bodies() -> None:
        length = request.content_length
        if length is None or length <= cap_bytes:
            return
        async for _ in request.body:
            pass
        raise ApiError(
            413,
            "body_too_large",
            f"The request body is {length} bytes; this service accepts at most {cap_bytes} bytes.",
        )
