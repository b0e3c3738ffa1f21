"""The probe port (app/web/probe.py) in one process: a real listener, a real event loop.

A gateway process serving it is exercised in tests/test_api.py (while it sheds a storm).
"""

from __future__ import annotations

import asyncio
import http.client
import json
import socket
import sys
import time
from collections.abc import Iterator

import pytest

from app.metrics import Metrics
from app.web.probe import MAX_CONNECTIONS, SWITCH_INTERVAL_S, Probe

DEFAULT_SWITCH_S = sys.getswitchinterval()  # the interpreter's, before any probe started


@pytest.fixture
def probe() -> Iterator[Probe]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    served = Probe(sock, ("gateway",), Metrics(), stall_s=0.5)
    served.start()
    yield served
    served.stop()


def test_probe_shortens_the_switch_interval_while_it_serves(probe: Probe) -> None:
    """A busy loop hands the probe's thread the interpreter's lock sooner; the interval is the
    process's own again once the probe stopped."""
    assert sys.getswitchinterval() == pytest.approx(min(DEFAULT_SWITCH_S, SWITCH_INTERVAL_S))
    assert get(probe)[0] == 200
    probe.stop()
    assert sys.getswitchinterval() == pytest.approx(DEFAULT_SWITCH_S)


def get(probe: Probe, path: str = "/healthz", method: str = "GET") -> tuple[int, bytes]:
    connection = http.client.HTTPConnection(*probe.address, timeout=10)
    try:
        connection.request(method, path)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def test_probe_answers_healthz_while_the_loop_turns(probe: Probe) -> None:
    async def main() -> tuple[int, bytes]:
        beating = asyncio.create_task(probe.heartbeat.run())
        await asyncio.sleep(0.3)
        answer = await asyncio.to_thread(get, probe)
        beating.cancel()
        return answer

    status, body = asyncio.run(main())
    assert status == 200
    answer = json.loads(body)
    assert answer["status"] == "ok" and answer["roles"] == ["gateway"]
    assert 0 <= answer["loop_lag_ms"] < 500
    assert get(probe, method="HEAD") == (200, b"")


def test_probe_says_stalled_while_the_loop_is_blocked_and_recovers(probe: Probe) -> None:
    """Answered from its own thread while the loop is blocked: 503 stalled, then 200 once it turns."""

    async def main() -> tuple[tuple[int, bytes], tuple[int, bytes]]:
        beating = asyncio.create_task(probe.heartbeat.run())
        await asyncio.sleep(0.3)
        loop = asyncio.get_running_loop()
        during = loop.run_in_executor(None, lambda: (time.sleep(0.9), get(probe))[1])
        time.sleep(1.5)  # noqa: ASYNC251 (the point: the loop blocked, as a wedged handler would block it)
        stalled = await during
        await asyncio.sleep(0.3)
        recovered = await asyncio.to_thread(get, probe)
        beating.cancel()
        return stalled, recovered

    (status, body), (after, _) = asyncio.run(main())
    assert status == 503
    error = json.loads(body)["error"]
    assert error["code"] == "stalled" and "RUNBOX_LIVENESS_STALL_S" in error["message"]
    assert after == 200


def test_probe_serves_nothing_else_and_is_not_crowded_out(probe: Probe) -> None:
    status, body = get(probe, "/api/v1/jobs")
    assert status == 404 and json.loads(body)["error"]["code"] == "not_found"
    status, body = get(probe, method="POST")
    assert status == 405 and json.loads(body)["error"]["code"] == "method_not_allowed"
    # Connections that send nothing, or only part of a request, do not keep a probe from its answer.
    idle = [socket.create_connection(probe.address) for _ in range(64)]
    for sock in idle[:32]:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
    assert get(probe)[0] in (200, 503)  # (no loop beats in this test)
    # They are cut once past the deadline for a whole request, and a flood beyond the bound is
    # closed unanswered rather than held.
    for sock in idle:
        sock.settimeout(10)
        assert sock.recv(100) == b""
        sock.close()
    flood = [socket.create_connection(probe.address) for _ in range(MAX_CONNECTIONS + 8)]
    time.sleep(0.3)
    for sock in flood:
        sock.close()
    time.sleep(0.3)
    assert get(probe)[0] in (200, 503)
