"""Liveness from outside the event loop: ``GET /healthz`` on ``RUNBOX_PROBE_PORT``, answered by a thread.

Under a storm of submissions every answer on the main port waits its turn in the event loop,
``/healthz``'s too (half a second at 200 busy connections on two cores), and an orchestrator
whose probe times out restarts a gateway that is busy but healthy. This listener runs in
threads of its own, so a probe is answered within a few of the interpreter's thread switches
whatever the loop is doing; and it can tell what the main port cannot: whether the loop still
turns. A task beats every :data:`BEAT_S`; once the last beat is older than
``RUNBOX_LIVENESS_STALL_S`` the answer is 503 ``stalled``, the one state a restart cures.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
import time
from collections.abc import AsyncIterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from app.metrics import Metrics

BEAT_S = 0.25
MAX_HANDLERS = 8  # probes answered at once; a connection beyond them is closed unanswered
SOCKET_TIMEOUT_S = 5.0  # a probe that sends nothing does not hold a handler longer


class Heartbeat:
    """The event loop's pulse: when it last ran a task (monotonic seconds)."""

    def __init__(self) -> None:
        self.last = time.monotonic()

    async def run(self) -> None:
        """Beat until cancelled."""
        while True:
            self.last = time.monotonic()
            await asyncio.sleep(BEAT_S)

    def lag(self) -> float:
        """Seconds since the loop last beat, less the beat's own interval."""
        return max(0.0, time.monotonic() - self.last - BEAT_S)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, sock: socket.socket, probe: Probe) -> None:
        super().__init__(sock.getsockname()[:2], _Handler, bind_and_activate=False)
        self.socket.close()
        self.socket = sock
        self.probe = probe
        self.slots = threading.BoundedSemaphore(MAX_HANDLERS)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self.slots.acquire(blocking=False):
            self.shutdown_request(request)  # a flood of connections must not become a flood of threads
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    timeout = SOCKET_TIMEOUT_S
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self._answer(head=False)

    def do_HEAD(self) -> None:
        self._answer(head=True)

    def _answer(self, head: bool) -> None:
        began = time.perf_counter()
        status, body = self.server.probe.answer(self.path)
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if not head:
            self.wfile.write(payload)
        route = "/healthz" if status != 404 else "unmatched"
        self.server.probe.metrics.answered(route, self.command, status, time.perf_counter() - began)

    def log_message(self, format: str, *args: Any) -> None:
        """Probes are counted in the metrics, not logged: one line per probe is noise."""


class Probe:
    """The probe port: serves ``GET``/``HEAD /healthz`` from a thread until :meth:`stop`."""

    def __init__(self, sock: socket.socket, roles: tuple[str, ...], metrics: Metrics, stall_s: float) -> None:
        self.roles = list(roles)
        self.metrics = metrics
        self.stall_s = stall_s
        self.heartbeat = Heartbeat()
        self._server = _Server(sock, self)
        self._thread = threading.Thread(target=self._server.serve_forever, name="runbox-probe", daemon=True)

    def answer(self, path: str) -> tuple[int, dict[str, Any]]:
        """The status and body for a probe of ``path`` (called from the probe's threads)."""
        if path.split("?", 1)[0] != "/healthz":
            return 404, {"error": {"code": "not_found", "message": "This port answers GET /healthz only."}}
        lag = self.heartbeat.lag()
        if lag > self.stall_s:
            message = f"The event loop has not run for {lag:.1f} s (RUNBOX_LIVENESS_STALL_S={self.stall_s:g})."
            return 503, {"error": {"code": "stalled", "message": message}}
        return 200, {"status": "ok", "roles": self.roles, "loop_lag_ms": round(lag * 1000, 1)}

    def start(self) -> None:
        """Start answering (the socket is already bound and listening)."""
        self._thread.start()

    def stop(self) -> None:
        """Stop answering and close the socket."""
        self._server.shutdown()
        self._server.server_close()


@contextlib.asynccontextmanager
async def serving(
    sock: socket.socket | None, roles: tuple[str, ...], metrics: Metrics, stall_s: float
) -> AsyncIterator[None]:
    """Answer probes on ``sock`` (none when it is None), with the loop's heartbeat, while the body runs."""
    if sock is None:
        yield
        return
    probe = Probe(sock, roles, metrics, stall_s)
    beating = asyncio.create_task(probe.heartbeat.run(), name="runbox-heartbeat")
    probe.start()
    try:
        yield
    finally:
        beating.cancel()
        await asyncio.to_thread(probe.stop)
