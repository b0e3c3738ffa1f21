"""The HTTP server's own refusals, in the error shape and counted like the application's.

hypercorn parses a request's line and headers before the application sees anything, and
refuses on its own what it cannot take: header fields past ``h11_max_incomplete_size``
(``431``) or a request that is not HTTP/1.1 (``400``). It answers those with an empty body,
outside every error shape and outside ``runbox_rejections_total``. Raising its bound instead
would let every hostile connection hold that much memory before any admission, so the bound
stays small (``RUNBOX_MAX_HEADER_KB``) and the refusal itself is made ours: its HTTP/1.1
protocol class is replaced by a subclass that answers ``{"error": {"code", "message"}}`` (the
native shape: the request's route, hence its flavour, is unknown at that point) and counts
the refusal. h11 checks its bound only while a request head is incomplete, so a head that
arrives in one read can pass it: the application checks the same bound on every request and
WebSocket handshake (:func:`cap_headers`), refusing in the flavour's shape. HTTP/2 header
lists are bounded by the h2 library's own settings.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Mapping
from typing import Any

import h11
import hypercorn.protocol
from hypercorn.config import Config
from hypercorn.events import Event, RawData
from hypercorn.protocol.h11 import H11Protocol
from quart import Quart, request, websocket

from app.web.errors import ApiError

HEADERS_TOO_LARGE = "The request's line and header fields are larger than this service accepts ({cap} bytes)."
# status: (rejection reason and error code, message)
_REFUSALS = {
    431: ("headers_too_large", HEADERS_TOO_LARGE),
    400: ("bad_request", "The request could not be parsed as HTTP/1.1."),
}


class ServerConfig(Config):
    """hypercorn's configuration, with where its own refusals are counted."""

    def __init__(self, max_header_bytes: int, count_refusal: Callable[[str], None]) -> None:
        super().__init__()
        self.h11_max_incomplete_size = max_header_bytes
        self.count_refusal = count_refusal


class ShapedH11Protocol(H11Protocol):
    """hypercorn's HTTP/1.1 protocol whose own refusals carry the error shape and are counted,
    and whose writes within one turn of the event loop go out as one.

    hypercorn writes every h11 event on its own: a response's head, each body chunk and the
    chunked encoding's end each cost a send (and a wake-up of the client), about seven per job
    for a submission and its event stream. What one turn of the loop produces for a connection
    (a head and its body, an event stream's last events and its end) is held and written
    together at the end of that turn, in order, through hypercorn's own send (its lock, its
    back-pressure); anything else hypercorn sends (closing the connection) first flushes it.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._write = self.send
        self.send = self._coalesced
        self._held: list[bytes] = []
        self._flushing: asyncio.Task[None] | None = None

    async def _coalesced(self, event: Event) -> None:
        if isinstance(event, RawData):
            self._held.append(event.data)
            if self._flushing is None:
                self._flushing = asyncio.get_running_loop().create_task(self._flush())
            return
        await self._flush()
        await self._write(event)

    async def _flush(self) -> None:
        held, self._held, self._flushing = self._held, [], None
        if held:
            await self._write(RawData(data=b"".join(held)))

    async def _send_error_response(self, status_code: int) -> None:
        reason, template = _REFUSALS.get(status_code, ("bad_request", "The request could not be understood."))
        message = template.format(cap=self.config.h11_max_incomplete_size)
        body = json.dumps({"error": {"code": reason, "message": message}}).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
            *self.config.response_headers("h11"),
        ]
        await self._send_h11_event(h11.Response(status_code=status_code, headers=headers))
        await self._send_h11_event(h11.Data(data=body))
        await self._send_h11_event(h11.EndOfMessage())
        count = getattr(self.config, "count_refusal", None)
        if count is not None:
            count(reason)


def install() -> None:
    """Make hypercorn build :class:`ShapedH11Protocol` for HTTP/1.1 connections (idempotent)."""
    vars(hypercorn.protocol)["H11Protocol"] = ShapedH11Protocol


def head_size(scope: Mapping[str, Any]) -> int:
    """Bytes of a request's target and header fields, as they came in (a field's ": " and CRLF included)."""
    size = len(scope.get("raw_path") or b"") + len(scope.get("query_string") or b"")
    return size + sum(len(name) + len(value) + 4 for name, value in scope.get("headers") or ())


def cap_headers(app: Quart, cap_bytes: int) -> None:
    """Refuse every request and WebSocket handshake whose head passes ``cap_bytes`` (431, counted)."""
    message = HEADERS_TOO_LARGE.format(cap=cap_bytes)

    def check(scope: Mapping[str, Any]) -> None:
        if head_size(scope) > cap_bytes:
            raise ApiError(431, "headers_too_large", message, reason="headers_too_large")

    @app.before_request
    async def _request_head() -> None:
        check(request.scope)

    @app.before_websocket
    async def _websocket_head() -> None:
        check(websocket.scope)
