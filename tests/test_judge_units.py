"""Fast tests of judging, callback signing and delivery decisions, and interactive input bounds."""

from __future__ import annotations

import asyncio
import ipaddress
import json
from typing import Any

import pytest

from app import urlpolicy
from app.callbacks import CallbackTask, signature, verify
from app.config import ConfigError, Settings
from app.interactive import StdinRouter
from app.judging import Judgement, case_verdict, normalize_output, outputs_match, overall_verdict
from app.languages import Limits
from app.messages import Job, TestCase


def test_output_comparison_ignores_trailing_whitespace_and_empty_lines() -> None:
    assert outputs_match("3\n", "3")
    assert outputs_match("1 2  \r\n3\t\n\n\n", "1 2\n3")
    assert not outputs_match("1  2\n", "1 2\n")  # inner whitespace counts
    assert not outputs_match("\n3\n", "3\n")  # leading empty lines count
    assert not outputs_match("3\n4\n", "3\n")
    assert normalize_output("a \n\n b \n\n") == "a\n\n b"


def run(**fields: Any) -> dict[str, Any]:
    return {"i": 0, "status": "completed", "exit_code": 0, "signal": None, "output": "ok\n",
            "truncated": {"stdout": False}, **fields}


@pytest.mark.parametrize(("fields", "verdict"), [
    ({}, "accepted"),
    ({"output": "no\n"}, "wrong_answer"),
    ({"exit_code": 1}, "runtime_error"),
    ({"exit_code": None, "signal": 11}, "runtime_error"),
    ({"status": "timed_out", "exit_code": None, "signal": 9}, "timed_out"),
    ({"status": "memory_exceeded", "exit_code": None, "signal": 9}, "memory_exceeded"),
    ({"status": "output_exceeded", "exit_code": None, "signal": 9}, "output_exceeded"),
    ({"truncated": {"stdout": True}}, "output_exceeded"),
    ({"status": "timed_out", "output": "no\n", "exit_code": 1}, "timed_out"),  # a limit before a crash
])
def test_case_verdicts_and_their_precedence(fields: dict[str, Any], verdict: str) -> None:
    assert case_verdict(run(**fields), "ok") == verdict


def test_overall_verdict_is_the_first_failing_case() -> None:
    assert overall_verdict(["accepted", "accepted"]) == "accepted"
    assert overall_verdict(["accepted", "timed_out", "wrong_answer"]) == "timed_out"
    assert overall_verdict([]) == "accepted"


def test_judgement_fills_the_result() -> None:
    judgement = Judgement(["1", "2", "3"])
    assert judgement.add(run(i=0, output="1\n", duration_ms=5)) == {"index": 0, "verdict": "accepted", "duration_ms": 5}
    judgement.add(run(i=1, output="2\n", duration_ms=7, cpu_ms=3, memory_peak_kb=900))
    result: dict[str, Any] = {}
    judgement.fill(result)
    assert result["verdict"] == "timed_out"  # the third case never ran: the total time ran out
    assert result["duration_ms"] == 12 and result["memory_peak_kb"] == 900
    assert [t["verdict"] for t in result["tests"]] == ["accepted", "accepted"]
    judgement.add(run(i=2, output="x\n"))
    judgement.fill(result)
    assert result["verdict"] == "wrong_answer"


def test_signature_matches_the_contract() -> None:
    body = b'{"id":"x"}'
    header = signature("s3cret", 1700000000, body)
    import hashlib
    import hmac
    expected = hmac.new(b"s3cret", b"1700000000." + body, hashlib.sha256).hexdigest()
    assert header == f"t=1700000000,v1={expected}"
    assert verify("s3cret", header, body)
    assert not verify("s3cret", header, body + b" ")
    assert not verify("s3cret", "garbage", body)


def test_callback_task_round_trip_and_methods() -> None:
    job = Job(id="j1", language="python", source="", limits=Limits(), callback_url="https://example.org/h")
    task = CallbackTask.for_job(job)
    assert (task.delivery, task.method, task.renderer, task.attempt) == ("j1", "POST", "v1", 1)
    assert CallbackTask.decode(task.encode()) == task
    judge0 = CallbackTask.for_job(Job(id="j2", language="c", source="", limits=Limits(), callback_url="http://x/",
                                      callback_renderer="judge0"))
    assert judge0.method == "PUT"


def test_job_message_carries_the_new_fields() -> None:
    job = Job(id="j", language="python", source="", limits=Limits(), tests=(TestCase("1", "2"),), interactive=False,
              callback_url="http://h/", callback_renderer="judge0")
    assert Job.decode(job.encode()) == job


def test_callback_delays_are_validated() -> None:
    assert Settings().callback_delays()[0] == 5.0
    assert sum(Settings().callback_delays()) >= 3600  # retried for at least an hour
    with pytest.raises(ConfigError):
        Settings.from_env({"RUNBOX_CALLBACK_RETRY_DELAYS_S": "5,soon"})
    with pytest.raises(ConfigError):
        Settings.from_env({"RUNBOX_CALLBACK_RETRY_DELAYS_S": "0"})


async def test_a_name_resolving_to_a_private_address_at_delivery_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """DNS rebinding: the name passed at submission, but now points into the operator's network."""
    from app.gateway.callbacks import CallbackSender
    from app.metrics import Metrics

    async def rebound(host: str, port: int) -> list[urlpolicy.Address]:
        return [ipaddress.ip_address("10.0.0.7")]

    monkeypatch.setattr(urlpolicy, "resolve", rebound)

    class Record:
        class state:  # a stand-in for JobState
            terminal = True

            @staticmethod
            def public() -> dict[str, Any]:
                return {"id": "j"}

    class Events:
        async def record(self, job_id: str) -> Any:
            return Record()

    sender = CallbackSender(Settings(callback_secret="k"), broker=None, events=Events(), metrics=Metrics())  # type: ignore[arg-type]
    outcome = await sender.attempt(CallbackTask("j", "j", "http://hooks.example.org/x"))
    assert outcome == "refused"


class Sink:
    def __init__(self) -> None:
        self.received: list[tuple[str, bool]] = []
        self.signals: list[int] = []

    async def send_stdin(self, job_id: str, data: str, eof: bool) -> None:
        assert job_id == "j"
        self.received.append((data, eof))

    async def send_signal(self, job_id: str, signum: int) -> None:
        assert job_id == "j"
        self.signals.append(signum)


async def test_interactive_input_bounds_and_order() -> None:
    settings = Settings(stdin_max_kb=2, stdin_rate_kb_s=1)
    router = StdinRouter(settings, broker=None)  # type: ignore[arg-type]
    sink = Sink()
    from app.interactive import Session
    from app.ratelimit import TokenBucket

    router.sessions["j"] = Session(sink, TokenBucket(1024, 1024, asyncio.get_running_loop().time()))

    def body(data: str, eof: bool = False) -> bytes:
        return json.dumps({"data": data, "eof": eof}).encode()

    assert (await router.deliver("other", body("x"))).status == 409
    assert (await router.deliver("j", b"not json")).status == 400
    assert (await router.deliver("j", body("a" * 2000))).status == 413  # more than a second's worth at once
    assert (await router.deliver("j", body("a" * 600))).status == 202
    reply = await router.deliver("j", body("b" * 600))
    assert reply.status == 429 and reply.retry_after_s > 0
    assert (await router.deliver("j", body("c", eof=True))).status == 202
    assert (await router.deliver("j", body("d"))).code == "stdin_closed"
    assert sink.received == [("a" * 600, False), ("c", True)]


async def test_signals_travel_with_the_input_and_are_checked_there() -> None:
    router = StdinRouter(Settings(stdin_max_kb=2, stdin_rate_kb_s=1), broker=None)  # type: ignore[arg-type]
    sink = Sink()
    from app.interactive import Session
    from app.ratelimit import TokenBucket

    # A bucket that barely refills, so the burst below is refused however slowly the test runs.
    router.sessions["j"] = Session(sink, TokenBucket(1, 1024, asyncio.get_running_loop().time()))
    assert (await router.deliver("j", json.dumps({"data": "", "eof": True}).encode())).status == 202
    # A closed stdin does not stop signals: a program may ignore its input and run on.
    assert (await router.deliver("j", json.dumps({"signal": 15}).encode())).status == 202
    for bad in (0, 99, 34, "15", True, 15.0, None):
        reply = await router.deliver("j", json.dumps({"signal": bad}).encode())
        assert (reply.status, reply.code) == (400, "invalid_signal"), bad
    assert (await router.deliver("other", json.dumps({"signal": 9}).encode())).status == 409
    for _ in range(15):  # 64 bytes each against a 1 KiB bucket: the 17th is refused
        await router.deliver("j", json.dumps({"signal": 10}).encode())
    assert (await router.deliver("j", json.dumps({"signal": 10}).encode())).status == 429
    assert sink.signals[:2] == [15, 10] and len(sink.signals) == 16
