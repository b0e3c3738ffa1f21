"""Callbacks through the real stack: signed, retried, delivered by a gateway, never by an executor.

A local HTTP server started by the test plays the receiver; the deployment allows loopback
(``RUNBOX_CALLBACK_ALLOW_CIDRS=127.0.0.0/8``) and retries after 1 and 2 seconds.
"""

from __future__ import annotations

import base64
import json
import re
import time
from collections.abc import Iterator

import pytest

from app.callbacks import verify
from tests.callback_receiver import Delivery, Receiver, receiving
from tests.runbox_client import Client, Service

SECRET = "test-callback-secret"


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    with receiving() as rec:
        yield rec


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


# --- Judge0's callback: a PUT of the submission, through the same queue, retries and signing -------
JUDGE0_FIELDS = {"token", "time", "memory", "stdout", "stderr", "compile_output", "message", "status"}


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def test_judge0_callback_is_a_signed_put_of_the_submission(stack, receiver: Receiver) -> None:
    _, first, second = stack
    submission = {"language_id": 71, "source_code": "print(input()[::-1])", "stdin": "olleh",
                  "expected_output": "hello", "callback_url": f"{receiver.url}/judge0/1"}
    response = first.client().http.post("/submissions", json=submission)
    assert response.status_code == 201, response.text
    token = response.json()["token"]
    (delivery,) = receiver.wait("/judge0/1", 1)
    assert delivery.method == "PUT"
    assert delivery.headers["Content-Type"] == "application/json"
    assert delivery.headers["Runbox-Delivery"] == token
    assert verify(SECRET, delivery.headers["Runbox-Signature"], delivery.body)
    body = json.loads(delivery.body)
    # Judge0 sends the default fields, Base64 encoded, whatever the submission asked for.
    assert set(body) == JUDGE0_FIELDS
    assert body["token"] == token
    assert body["status"] == {"id": 3, "description": "Accepted"}
    assert base64.b64decode(body["stdout"]) == b"hello\n"
    assert body["stderr"] is None and body["compile_output"] is None
    # The same document any gateway answers for the token.
    again = second.client().http.get(f"/submissions/{token}", params={"base64_encoded": "true"})
    assert again.json() == body
    everything = second.client().http.get(f"/submissions/{token}", params={"fields": "callback_url"})
    assert everything.json() == {"callback_url": f"{receiver.url}/judge0/1"}


def test_judge0_callback_is_retried_until_accepted(stack, receiver: Receiver) -> None:
    _, first, _ = stack
    response = first.client().http.post(
        "/submissions", json={"language_id": 71, "source_code": "import sys; sys.exit(3)",
                              "callback_url": f"{receiver.url}/flaky/judge0"})
    assert response.status_code == 201, response.text
    deliveries = receiver.wait("/flaky/judge0", 3)
    assert [d.method for d in deliveries] == ["PUT"] * 3
    assert [d.answered for d in deliveries] == [500, 500, 200]
    assert {d.headers["Runbox-Delivery"] for d in deliveries} == {response.json()["token"]}
    body = json.loads(deliveries[-1].body)
    assert body["status"] == {"id": 11, "description": "Runtime Error (NZEC)"}
    assert base64.b64decode(body["message"]) == b"Exited with error status 3"


@pytest.mark.parametrize("url", ["http://10.1.2.3/hook", "http://169.254.169.254/latest", "gopher://127.0.0.1/"])
def test_judge0_refuses_callback_addresses_in_its_error_shape(stack, url: str) -> None:
    _, first, _ = stack
    response = first.client().http.post("/submissions", json={"language_id": 71, "source_code": "print(1)",
                                                              "callback_url": url})
    assert response.status_code == 422, response.text
    (message,) = response.json()["callback_url"]
    assert set(response.json()) == {"callback_url"} and "refused" in message


def test_judge0_config_info_reports_callbacks(stack) -> None:
    _, first, _ = stack
    config = first.client().http.get("/config_info").json()
    assert config["enable_callbacks"] is True
    assert config["callbacks_max_tries"] == 3  # the first attempt and one per configured delay
