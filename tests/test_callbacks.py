"""Callbacks through the real stack: signed, retried, delivered by a gateway, never by an executor.

A local HTTP server started by the test plays the receiver; the deployment allows loopback
(``RUNBOX_CALLBACK_ALLOW_CIDRS=127.0.0.0/8``) and retries after 1 and 2 seconds.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from app.callbacks import verify
from tests.runbox_client import Client, Service

SECRET = "test-callback-secret"


@dataclass
class Delivery:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    answered: int


@dataclass
class Receiver:
    """Records every request; ``/flaky/...`` answers 500 to the first two attempts of each delivery."""

    server: ThreadingHTTPServer
    deliveries: list[Delivery] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def wait(self, path: str, count: int, timeout: float = 30) -> list[Delivery]:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            with self.lock:
                got = [d for d in self.deliveries if d.path == path]
            if len(got) >= count:
                return got
            time.sleep(0.05)
        raise AssertionError(f"{path}: {len(got)} deliveries after {timeout} s, wanted {count}")


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    state: dict[str, Receiver] = {}

    class Handler(BaseHTTPRequestHandler):
        def handle_any(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            rec = state["r"]
            with rec.lock:
                earlier = [d for d in rec.deliveries if d.path == self.path]
                status = 500 if self.path.startswith("/flaky/") and len(earlier) < 2 else 200
                rec.deliveries.append(Delivery(self.command, self.path, dict(self.headers), body, status))
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_POST = do_PUT = handle_any

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state["r"] = Receiver(server)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state["r"]
    server.shutdown()


@pytest.fixture(scope="module")
def stack(real_stack: None) -> Iterator[tuple[Service, Service, Service]]:
    common = {
        "RUNBOX_LANGUAGES": "python",
        "RUNBOX_CALLBACK_SECRET": SECRET,
        "RUNBOX_CALLBACK_ALLOW_CIDRS": "127.0.0.0/8",
        "RUNBOX_CALLBACK_RETRY_DELAYS_S": "1,2",
    }
    executor = Service(roles="executor", **common).start(wait_ready=False)
    first = Service(roles="gateway", prefix=executor.prefix, **common).start()
    second = Service(roles="gateway", prefix=executor.prefix, **common).start()
    yield executor, first, second
    second.stop()
    first.stop()
    executor.stop()


def check_delivery(delivery: Delivery, job_id: str, client: Client) -> None:
    assert delivery.method == "POST"
    assert delivery.headers["Content-Type"] == "application/json"
    assert delivery.headers["Runbox-Delivery"] == job_id
    assert verify(SECRET, delivery.headers["Runbox-Signature"], delivery.body)
    assert not verify("another secret", delivery.headers["Runbox-Signature"], delivery.body)
    assert re.fullmatch(r"t=\d+,v1=[0-9a-f]{64}", delivery.headers["Runbox-Signature"])
    assert json.loads(delivery.body) == client.state(job_id)


def test_callback_delivered_signed_with_the_job_state(stack, receiver: Receiver) -> None:
    _, first, second = stack
    a = first.client()
    job_id = a.submit_ok({"language": "python", "source": "print('called back')",
                          "callback_url": f"{receiver.url}/ok/{1}"})
    (delivery,) = receiver.wait("/ok/1", 1)
    state = json.loads(delivery.body)
    assert state["status"] == "completed" and state["result"]["stdout"] == "called back\n"
    check_delivery(delivery, job_id, second.client())
    time.sleep(1.5)
    assert len(receiver.wait("/ok/1", 1)) == 1  # delivered once: nothing retried a success


def test_receiver_failing_twice_gets_the_same_delivery_again(stack, receiver: Receiver) -> None:
    _, first, second = stack
    a = first.client()
    job_id = a.submit_ok({"language": "python", "source": "print(1)", "callback_url": f"{receiver.url}/flaky/1"})
    deliveries = receiver.wait("/flaky/1", 3)
    assert [d.answered for d in deliveries] == [500, 500, 200]
    assert {d.headers["Runbox-Delivery"] for d in deliveries} == {job_id}
    for delivery in deliveries:
        check_delivery(delivery, job_id, a)
    time.sleep(3)
    assert len(receiver.wait("/flaky/1", 3)) == 3
    attempts = {}
    for service in (first, second):
        text = service.client().http.get("/metrics").text
        for outcome, value in re.findall(r'^runbox_callback_attempts_total\{outcome="(\w+)"\} (\S+)$', text, re.M):
            attempts[outcome] = attempts.get(outcome, 0.0) + float(value)
    assert attempts["http_error"] >= 2 and attempts["delivered"] >= 1


def test_failed_job_is_called_back_too(stack, receiver: Receiver) -> None:
    _, first, _ = stack
    a = first.client()
    job_id = a.submit_ok({"language": "python", "source": "while True: pass", "limits": {"timeout_s": 1},
                          "callback_url": f"{receiver.url}/slow/1"})
    (delivery,) = receiver.wait("/slow/1", 1)
    assert json.loads(delivery.body)["status"] == "timed_out"
    check_delivery(delivery, job_id, a)


@pytest.mark.parametrize("url", [
    "http://10.1.2.3/hook",
    "http://192.168.0.1/hook",
    "http://169.254.169.254/latest/meta-data",
    "http://[::1]:8080/",  # loopback over IPv6 is not in the allowed IPv4 range
    "http://0.0.0.0/",
    "ftp://127.0.0.1/x",
    "http://user:pw@127.0.0.1/x",
    "not a url",
])
def test_refused_callback_addresses(stack, url: str) -> None:
    _, first, _ = stack
    response = first.client().submit({"language": "python", "source": "print(1)", "callback_url": url})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "invalid_callback_url"


def test_callbacks_need_a_secret(real_stack: None) -> None:
    gateway = Service(roles="gateway", RUNBOX_LANGUAGES="python").start(wait_ready=False)
    try:
        response = gateway.client().submit(
            {"language": "python", "source": "print(1)", "callback_url": "https://example.org/hook"}
        )
        assert response.status_code == 400
        assert "not enabled" in response.json()["error"]["message"]
    finally:
        gateway.stop()
