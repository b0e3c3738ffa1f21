"""The one request reader: a body cap on the bytes actually received, then strict JSON.

The cap holds for every body however it is framed (``Content-Length``, chunked, HTTP/2):
:class:`CappedBody` keeps at most ``RUNBOX_MAX_BODY_KB`` of a request and discards the rest,
so a request costs the gateway at most the cap in memory whether or not a handler reads it.
:func:`read_json` refuses a declared oversize body without reading it, stops reading an
undeclared one as soon as it passes the cap, and parses with a JSON reader that refuses
``NaN``/``Infinity``, numbers that overflow, and pathological nesting.

A body is only ever read after the request was admitted (see ``app.gateway.admission``);
a refused request's unread body is drained (discarded, bounded in bytes and time by
:func:`discard`, the one policy, also for refusals made ahead of the application) so that an
honest client reads its 4xx rather than a reset connection.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
from collections.abc import AsyncIterable
from typing import Any

from quart import Quart, g, request
from quart.wrappers.request import Body, Request

# A refused body smaller than this is read and discarded before answering; past it, or past
# the deadline, the answer goes out with "Connection: close".
DRAIN_LIMIT_BYTES = 4 * 1024 * 1024
DRAIN_DEADLINE_S = 5.0
# Nesting deeper than this is not a program submission; it is refused before parsing.
MAX_DEPTH = 64
SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


class CappedBody(Body):
    """A request body that stores at most ``cap`` bytes and discards (but counts) the rest."""

    def __init__(self, expected_content_length: int | None, max_content_length: int | None) -> None:
        super().__init__(None, None)  # never refuse at construction: the reader decides
        self.cap = max_content_length
        self.declared = expected_content_length
        self.received = 0

    @property
    def over(self) -> bool:
        """More bytes arrived (or were announced) than the cap allows."""
        if self.cap is None:
            return False
        return self.received > self.cap or (self.declared is not None and self.declared > self.cap)

    def append(self, data: bytes) -> None:
        if not data:
            return
        self.received += len(data)
        if self.over:
            self._data.clear()  # nothing past the cap is kept
            self._has_data.set()
            return
        super().append(data)

    @property
    def complete(self) -> bool:
        return self._complete.is_set()


class CappedRequest(Request):
    body_class = CappedBody


class BodyTooLarge(Exception):
    """The body passed the cap; ``size`` is what was declared or received so far."""

    def __init__(self, size: int, cap: int) -> None:
        super().__init__(f"{size} > {cap}")
        self.size = size
        self.cap = cap


class BadJson(ValueError):
    """The body is not one JSON document this service accepts; the message says why."""


def install(app: Quart, cap_bytes: int, body_timeout_s: float) -> None:
    """Make every request of ``app`` use the capped body; slow bodies time out (408)."""
    app.request_class = CappedRequest
    app.config["MAX_CONTENT_LENGTH"] = cap_bytes
    app.config["BODY_TIMEOUT"] = body_timeout_s


async def read_bytes() -> bytes:
    """The whole body, or :class:`BodyTooLarge` as soon as it is known to pass the cap."""
    body = request.body
    if not isinstance(body, CappedBody):  # a test app without ``install``
        raw = await request.get_data(cache=False)
        return raw if isinstance(raw, bytes) else raw.encode()
    cap = body.cap if body.cap is not None else math.inf
    if body.declared is not None and body.declared > cap:
        raise BodyTooLarge(body.declared, int(cap))
    g.runbox_body_read = True
    chunks = bytearray()
    timeout = request.body_timeout
    async with asyncio.timeout(timeout):
        async for chunk in body:
            chunks += chunk
            if body.over or len(chunks) > cap:
                raise BodyTooLarge(body.received, int(cap))
    if body.over:
        raise BodyTooLarge(body.received, int(cap))
    return bytes(chunks)


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise BadJson(f"the number {text[:40]} is too large")
    return value


def _no_constants(name: str) -> Any:
    raise BadJson(f"{name} is not a number this service accepts: every number must be finite")


def nesting_depth(data: bytes, limit: int) -> bool:
    """Whether brackets nest deeper than ``limit`` (strings skipped); a cheap linear scan."""
    depth = 0
    in_string = False
    escaped = False
    for byte in data:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):
            depth += 1
            if depth > limit:
                return True
        elif byte in (0x5D, 0x7D):
            depth -= 1
    return False


def parse_json(data: bytes) -> Any:
    """Strict JSON: UTF-8, finite numbers only, bounded nesting; :class:`BadJson` otherwise."""
    if nesting_depth(data, MAX_DEPTH):
        raise BadJson(f"the JSON nests deeper than {MAX_DEPTH} levels")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadJson("the body is not valid UTF-8") from exc
    try:
        value = json.loads(text, parse_constant=_no_constants, parse_float=_finite)
    except BadJson:
        raise
    except (ValueError, RecursionError) as exc:
        # ValueError also covers integers longer than Python's digit limit.
        raise BadJson("the body is not valid JSON") from exc
    if SURROGATE_ESCAPE.search(data):
        # A \uD800-\uDFFF escape: fine as half of a pair (decoded to one character), not alone.
        try:
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError as exc:
            raise BadJson("a string holds a lone surrogate (\\uD800-\\uDFFF): text must be valid Unicode") from exc
    return value


async def drain_unread() -> bool:
    """Discard a refused request's unread body; True when the connection must be closed."""
    body = request.body
    if not isinstance(body, CappedBody) or body.complete:
        return False  # every byte arrived (those past the cap were discarded): the connection is clean
    if g.get("runbox_body_read") and not body.complete:
        return True  # the reader stopped at the cap: the rest is not worth waiting for
    if body.declared is not None and body.declared > DRAIN_LIMIT_BYTES:
        return True
    return not await discard(body.received async for _ in body)


async def discard(received: AsyncIterable[int]) -> bool:
    """Wait for the rest of a refused body, keeping none of it; ``received`` yields the bytes
    received so far as each part arrives. False when it passed :data:`DRAIN_LIMIT_BYTES` or
    :data:`DRAIN_DEADLINE_S` (or the client went away): answer with "Connection: close" then."""
    try:
        async with asyncio.timeout(DRAIN_DEADLINE_S):
            async for total in received:
                if total > DRAIN_LIMIT_BYTES:
                    return False
    except (TimeoutError, ConnectionError):
        return False
    return True
