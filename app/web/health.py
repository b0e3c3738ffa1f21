"""Liveness, readiness and metrics; served by every role.

``/healthz`` never touches the broker, and :class:`FastHealth` answers it ahead of the
application (no request context, hooks or body handling: one write), so a probe waits for as
few turns of a busy event loop as an HTTP answer can.
``/metrics`` answers only callers the operator allowed: peers inside
``RUNBOX_METRICS_ALLOW_CIDRS`` (loopback by default) or requests bearing
``RUNBOX_METRICS_TOKEN``; everyone else gets 403 (the metrics describe the deployment's load
and abuse controls, which is reconnaissance for an attacker).
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import time
from typing import Any

from hypercorn.typing import (
    ASGIFramework,
    ASGIReceiveCallable,
    ASGISendCallable,
    HTTPResponseBodyEvent,
    HTTPResponseStartEvent,
    Scope,
)
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from quart import Blueprint, Response, current_app, jsonify, request

from app.broker import Broker, QueueStats
from app.config import Settings
from app.metrics import Metrics
from app.web.errors import ApiError

bp = Blueprint("health", __name__)


async def queue_stats() -> dict[str, QueueStats]:
    """Backlog and consumers per language as RabbitMQ reports them (the broker caches them ``stats_ttl_s``)."""
    ext = current_app.extensions
    broker: Broker = ext["runbox.broker"]
    stats = await broker.queue_stats(ext["runbox.registry"].unit_keys())
    metrics = ext["runbox.metrics"]
    for name, stat in stats.items():
        metrics.queue_depth.labels(name).set(stat.messages)
        metrics.queue_consumers.labels(name).set(stat.consumers)
    return stats


async def count_executors() -> int:
    """Executors consuming anywhere, this process's own included (each consumes the presence queue once)."""
    broker: Broker = current_app.extensions["runbox.broker"]
    count = await broker.executors()
    current_app.extensions["runbox.metrics"].executors.set(count)
    return count


class FastHealth:
    """ASGI wrapper that answers ``GET``/``HEAD /healthz`` itself and hands everything else to ``app``.

    Under a storm the event loop has a backlog; a probe going through the framework (request
    context, before/after hooks, body handling, the response's assembly) needs several turns
    of it. Here the answer is made in the same turn the request arrives in and counted as the
    application would count it (``runbox_http_requests_total``, ``runbox_http_request_duration_seconds``).
    The route in the application stays for the OpenAPI document and for any other method.
    """

    def __init__(self, app: ASGIFramework, roles: tuple[str, ...], metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics
        self.body = json.dumps({"status": "ok", "roles": list(roles)}).encode()
        self.headers = [(b"content-type", b"application/json"), (b"content-length", str(len(self.body)).encode())]

    async def __call__(self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
        if scope["type"] != "http" or scope["path"] != "/healthz" or scope["method"] not in ("GET", "HEAD"):
            await self.app(scope, receive, send)
            return
        began = time.perf_counter()
        start: HTTPResponseStartEvent = {"type": "http.response.start", "status": 200, "headers": self.headers}
        await send(start)
        payload = b"" if scope["method"] == "HEAD" else self.body
        body: HTTPResponseBodyEvent = {"type": "http.response.body", "body": payload, "more_body": False}
        await send(body)
        self.metrics.answered("/healthz", scope["method"], 200, time.perf_counter() - began)


@bp.get("/healthz")
async def healthz() -> Any:
    return jsonify({"status": "ok", "roles": list(current_app.extensions["runbox.settings"].roles)})


@bp.get("/readyz")
async def readyz() -> Any:
    gate = current_app.extensions.get("runbox.gate")
    if gate is not None:
        if not gate.serving:
            return _unready("starting", "The Docker gate is not serving yet.")
        return jsonify({"status": "ready", "runtimes": gate.versions})
    broker: Broker = current_app.extensions["runbox.broker"]
    if not broker.connected:
        return _unready("broker_unavailable", "RabbitMQ is not reachable.")
    if "executor" in current_app.extensions["runbox.settings"].roles:
        executor = current_app.extensions.get("runbox.executor")
        problem = ("starting", "The executor is starting.") if executor is None else executor.unready()
        if problem is not None:
            return _unready(*problem)
    try:
        executors = await asyncio.wait_for(count_executors(), 3)
        stats = await asyncio.wait_for(queue_stats(), 3)
    except Exception:  # unreachable, timed out, or a channel error: not ready either way
        return _unready("broker_unavailable", "RabbitMQ did not answer.")
    if executors == 0:
        return _unready("no_executor", "No executor is consuming jobs.")
    backlog = {name: stat.messages for name, stat in stats.items()}
    return jsonify({"status": "ready", "executors": executors, "backlog": backlog})


def _unready(code: str, message: str) -> Any:
    response = jsonify({"error": {"code": code, "message": message}})
    response.status_code = 503
    response.headers["Retry-After"] = "2"
    return response


def metrics_allowed(settings: Settings, peer: str | None, authorization: str) -> bool:
    """Whether a scrape from ``peer`` with this ``Authorization`` header may read the metrics."""
    token = settings.metrics_token
    if token and hmac.compare_digest(authorization.encode(), f"Bearer {token}".encode()):
        return True
    try:
        address = ipaddress.ip_address((peer or "").split("%")[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in ipaddress.ip_network(cidr, strict=False) for cidr in settings.metrics_allow_cidrs)


@bp.get("/metrics")
async def metrics() -> Any:
    ext = current_app.extensions
    if not metrics_allowed(ext["runbox.settings"], request.remote_addr, request.headers.get("Authorization", "")):
        raise ApiError(
            403,
            "forbidden",
            "The metrics are only served to the addresses and token the operator configured "
            "(RUNBOX_METRICS_ALLOW_CIDRS, RUNBOX_METRICS_TOKEN).",
        )
    broker: Broker = ext["runbox.broker"]
    if "gateway" in ext["runbox.settings"].roles and broker.connected:
        try:
            await asyncio.wait_for(queue_stats(), 2)
            await asyncio.wait_for(count_executors(), 2)
        except Exception:  # a scrape must not fail because RabbitMQ is slow
            pass
    return Response(generate_latest(ext["runbox.metrics"].registry), content_type=CONTENT_TYPE_LATEST)
