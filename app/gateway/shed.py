"""Submissions shed ahead of the application while this gateway is overloaded.

Under a storm the gateway's event loop is the bottleneck, and every request that goes through
the framework (request context, hooks, identity, the error handler) lengthens each of its
turns, so the submissions it did accept wait longer for their publish confirms, and
``/healthz`` for its answer. While :meth:`Admission.overloaded` holds, a submission is
answered here instead: the same 503, ``Retry-After`` and body (in the flavour the route
belongs to), counted as the application would count it, at a fraction of the cost. The
decision is the admission's own, so shedding here and in the application never disagree;
requests of any other route, and WebSocket sessions, go to the application as before.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

from hypercorn.typing import (
    ASGIFramework,
    ASGIReceiveCallable,
    ASGISendCallable,
    HTTPResponseBodyEvent,
    HTTPResponseStartEvent,
    Scope,
)

from app.gateway.admission import Admission
from app.metrics import Metrics
from app.web.body import discard
from app.web.errors import ApiError

Body = Callable[[ApiError], Any]


class FastShed:
    """ASGI wrapper answering a submission route's ``POST`` with the admission's 503 while it sheds.

    ``routes`` maps each submission path to the function that renders its flavour's error body.
    """

    def __init__(self, app: ASGIFramework, admission: Admission, metrics: Metrics, routes: Mapping[str, Body]) -> None:
        self.app = app
        self.admission = admission
        self.metrics = metrics
        self.routes = dict(routes)

    async def __call__(self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            render = self.routes.get(scope["path"])
            if render is not None:
                refusal = self.admission.overloaded()
                if refusal is not None:
                    await self._shed(scope["path"], refusal, render, receive, send)
                    return
        await self.app(scope, receive, send)

    async def _shed(
        self, route: str, refusal: ApiError, render: Body, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        began = time.perf_counter()
        clean = await discard(received(receive))
        payload = json.dumps(render(refusal)).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
        headers += [(k.lower().encode(), v.encode()) for k, v in refusal.headers.items()]
        if not clean:
            headers.append((b"connection", b"close"))
        start: HTTPResponseStartEvent = {"type": "http.response.start", "status": refusal.status, "headers": headers}
        await send(start)
        body: HTTPResponseBodyEvent = {"type": "http.response.body", "body": payload, "more_body": False}
        await send(body)
        self.metrics.rejections.labels(refusal.reason).inc()
        self.metrics.answered(route, "POST", refusal.status, time.perf_counter() - began)


async def received(receive: ASGIReceiveCallable) -> AsyncIterator[int]:
    """The bytes of the request's body received so far, as each part arrives, to its end."""
    total = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            raise ConnectionResetError("the client went away")
        total += len(message.get("body", b""))
        yield total
        if not message.get("more_body", False):
            return
