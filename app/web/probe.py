"""Liveness from outside the event loop: ``GET /healthz`` on ``RUNBOX_PROBE_PORT``, answered by a loop of its own.

Under a storm of submissions every answer on the main port waits its turn in the event loop,
``/healthz``'s too (half a second at 200 busy connections on two cores), and an orchestrator
whose probe times out restarts a gateway that is busy but healthy. This listener runs its own
event loop in a thread, so a probe is answered within a few of the interpreter's thread
switches whatever the main loop is doing; and it can tell what the main port cannot: whether
the main loop still turns. A task beats every :data:`BEAT_S`; once the last beat is older than
``RUNBOX_LIVENESS_STALL_S`` the answer is 503 ``stalled``, the one state a restart cures.

A loop rather than a thread per connection: connections that send nothing (a slow client, or
one holding sockets on purpose) cost a socket each, not a handler, and are cut after
:data:`REQUEST_DEADLINE_S`, so they cannot crowd the orchestrator's probe out.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import sys
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import h11

from app.metrics import Metrics

BEAT_S = 0.25
MAX_CONNECTIONS = 256  # open at once; one more is closed unanswered (each costs a socket, no thread)
REQUEST_DEADLINE_S = 2.0  # to send a whole request: a probe sends it at once
MAX_REQUEST_BYTES = 8192
# While the main loop runs flat out, the probe's thread waits for the interpreter's lock at
# each of the few turns a probe takes, up to the switch interval each (5 ms by default): in
# storms, the probe's p99 was 146 ms at 5 ms and 101 ms at 1 ms (medians of runs; README, figures). The interval only
# matters while another thread asks for the lock, so the busy loop pays nothing otherwise.
SWITCH_INTERVAL_S = 0.001


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


class Probe:
    """The probe port: serves ``GET``/``HEAD /healthz`` from a thread's event loop until :meth:`stop`."""

    def __init__(self, sock: socket.socket, roles: tuple[str, ...], metrics: Metrics, stall_s: float) -> None:
        self.roles = list(roles)
        self.metrics = metrics
        self.stall_s = stall_s
        self.heartbeat = Heartbeat()
        self.address: tuple[str, int] = sock.getsockname()[:2]
        self._sock = sock
        self._open = 0
        self._loop = asyncio.new_event_loop()
        self._stopping = asyncio.Event()
        self._listening = threading.Event()
        self._thread = threading.Thread(target=self._run, name="runbox-probe", daemon=True)
        self._switch_interval = sys.getswitchinterval()

    def answer(self, path: str) -> tuple[int, dict[str, Any]]:
        """The status and body for a probe of ``path``."""
        if path.split("?", 1)[0] != "/healthz":
            return 404, {"error": {"code": "not_found", "message": "This port answers GET /healthz only."}}
        lag = self.heartbeat.lag()
        if lag > self.stall_s:
            message = f"The event loop has not run for {lag:.1f} s (RUNBOX_LIVENESS_STALL_S={self.stall_s:g})."
            return 503, {"error": {"code": "stalled", "message": message}}
        return 200, {"status": "ok", "roles": self.roles, "loop_lag_ms": round(lag * 1000, 1)}

    def start(self) -> None:
        """Start answering (the socket is already bound and listening)."""
        sys.setswitchinterval(min(self._switch_interval, SWITCH_INTERVAL_S))
        self._thread.start()
        self._listening.wait(5)

    def stop(self) -> None:
        """Stop answering and close the socket."""
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stopping.set)
            self._thread.join(5)
        self._loop.close()
        sys.setswitchinterval(self._switch_interval)

    def _run(self) -> None:
        self._loop.run_until_complete(self._serve())

    async def _serve(self) -> None:
        server = await asyncio.start_server(self._connection, sock=self._sock)
        self._listening.set()
        async with server:
            await self._stopping.wait()
            server.close()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._open >= MAX_CONNECTIONS:
            writer.transport.abort()  # a flood of connections must not become a flood of anything
            return
        self._open += 1
        try:
            async with asyncio.timeout(REQUEST_DEADLINE_S):
                await self._exchange(reader, writer)
        except (TimeoutError, OSError, h11.ProtocolError):
            pass  # slow, gone or not HTTP: nothing to answer
        finally:
            self._open -= 1
            if not writer.is_closing():
                writer.transport.abort()

    async def _exchange(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Read one request and answer it, then the connection closes."""
        http = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_REQUEST_BYTES)
        event = http.next_event()
        while event is h11.NEED_DATA:
            http.receive_data(await reader.read(4096))
            event = http.next_event()
        if not isinstance(event, h11.Request):
            return
        began = time.perf_counter()
        method = event.method.decode("ascii", "replace")
        probing = method in ("GET", "HEAD")
        if probing:
            status, body = self.answer(event.target.decode("ascii", "replace"))
        else:
            refusal = {"code": "method_not_allowed", "message": "This port answers GET /healthz only."}
            status, body = 405, {"error": refusal}
        payload = json.dumps(body).encode()
        headers = [("Content-Type", "application/json"), ("Content-Length", str(len(payload))),
                   ("Cache-Control", "no-store"), ("Connection", "close")]
        if status == 405:
            headers.append(("Allow", "GET, HEAD"))
        writer.write(http.send(h11.Response(status_code=status, headers=headers)) or b"")
        if method != "HEAD":
            writer.write(http.send(h11.Data(data=payload)) or b"")
        writer.write(http.send(h11.EndOfMessage()) or b"")
        route = "/healthz" if status == 200 or status == 503 else "unmatched"
        # Only the two methods a probe uses are labels: any other word is a client's to choose.
        self.metrics.answered(route, method if probing else "other", status, time.perf_counter() - began)
        writer.close()
        await writer.wait_closed()


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
