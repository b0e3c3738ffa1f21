"""Unit tests (no RabbitMQ, no Docker): every failure on the job path ends in an ack or a nack.

Given an executor with a fake broker and fake pools, when each kind of exception the Docker
SDK, requests, RabbitMQ or the sandbox can raise is injected at the point it happens, then
the delivery is settled exactly once (requeued, or rejected when it is not a job) and the
sandbox, when one was taken, goes back to its pool.
"""

from __future__ import annotations

import asyncio
import errno
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import aio_pika.exceptions
import aiormq.exceptions
import docker.errors
import pytest
import requests.exceptions
from aio_pika.robust_connection import RobustConnection

from app.__main__ import listen
from app.amqp import FailoverConnection
from app.broker import BrokerUnavailable
from app.config import Settings
from app.deliveries import Delivery
from app.executor.engine import EngineWatch, engine_problem
from app.executor.pool import RETRY_MAX_S, retry_delay
from app.executor.sandbox import Sandbox, SandboxError
from app.executor.scheduler import Executor, StaleDelivery, Verdict, verdict
from app.languages import Registry
from app.messages import MARKER, Event, Job, new_job_id
from app.metrics import Metrics
from app.stream import StreamReader

ENGINE_FAILURES: list[BaseException] = [
    requests.exceptions.ConnectionError("engine socket refused"),  # not the built-in ConnectionError
    requests.exceptions.ReadTimeout("engine too slow"),
    requests.exceptions.ChunkedEncodingError("engine went away mid-answer"),
    docker.errors.APIError("500 Server Error"),
    docker.errors.NotFound("no such container"),
    docker.errors.DockerException("Error while fetching server API version"),
    ConnectionResetError(errno.ECONNRESET, "reset"),
    FileNotFoundError(errno.ENOENT, "/var/run/docker.sock"),
]
BROKER_FAILURES: list[BaseException] = [
    BrokerUnavailable("RabbitMQ did not confirm"),
    aiormq.exceptions.ChannelInvalidStateError("channel closed"),
    aiormq.exceptions.ConnectionClosed(320, "CONNECTION_FORCED"),
    aio_pika.exceptions.ChannelClosed(406, "PRECONDITION_FAILED"),
    TimeoutError(),
]
SANDBOX_FAILURES: list[BaseException] = [SandboxError("the sandbox container exited during the job")]
BUGS: list[BaseException] = [RuntimeError("bug"), KeyError("status"), AttributeError("nope")]
EVERY_FAILURE = ENGINE_FAILURES + BROKER_FAILURES + SANDBOX_FAILURES + BUGS


class FakeDelivery:
    """Records how a delivery was settled; optionally the settle itself fails (channel gone)."""

    def __init__(self, job: Job | None, settle_fails: bool = False, live: bool = True, attempt: int = 1) -> None:
        self.how: list[str] = []
        self.is_live = live

        async def settle(how: str) -> None:
            self.how.append(how)
            if settle_fails:
                raise aiormq.exceptions.ChannelInvalidStateError("channel is closed")

        body = job.encode() if job is not None else b"\xff not json"
        self.delivery = Delivery(body, attempt, settle, lambda: self.is_live)


class FakeBroker:
    """Publishes into a list; fails with ``fail_with``, or is unreachable for ``down_s`` after first use."""

    def __init__(self, fail_with: BaseException | None = None, down_s: float = 0.0) -> None:
        self.fail_with = fail_with
        self.down_s = down_s
        self.events: list[Any] = []
        self.waits = 0
        self._since: float | None = None

    def _down_for(self) -> float:
        now = time.monotonic()
        if self._since is None:
            self._since = now
        return max(0.0, self._since + self.down_s - now)

    def _up(self) -> bool:
        return self._down_for() == 0.0

    @property
    def connected(self) -> bool:
        return self._up()

    async def wait_publishable(self, timeout: float) -> bool:
        self.waits += 1
        await asyncio.sleep(self._down_for())
        return True

    async def publish_event(self, event: Any) -> None:
        await self.publish_events([event])

    async def publish_events(self, events: list[Any]) -> None:
        if self.fail_with is not None:
            raise self.fail_with
        if not self._up():
            raise BrokerUnavailable("RabbitMQ is not reachable")
        self.events.extend(events)


class FakeSandbox:
    def __init__(self, fail_with: BaseException | None, oom_check_fails: bool = False) -> None:
        self.fail_with = fail_with
        self.oom_check_fails = oom_check_fails

    async def run(self, payload: dict[str, Any], deadline: float) -> AsyncIterator[dict[str, Any]]:
        yield {"t": "out", "s": "stdout", "d": "partial\n"}
        if self.fail_with is not None:
            raise self.fail_with
        yield {"t": "done", "status": "completed", "exit_code": 0, "duration_ms": 5}

    async def oom_killed(self) -> bool:
        if self.oom_check_fails:
            raise requests.exceptions.ConnectionError("engine down while checking for OOM")
        return False


class FakePool:
    runtime = "runc"

    def __init__(self, acquire_fails: BaseException | None = None, sandbox: FakeSandbox | None = None) -> None:
        self.acquire_fails = acquire_fails
        self.sandbox = sandbox or FakeSandbox(None)
        self.released: list[bool] = []

    async def acquire(self, limits: Any) -> FakeSandbox:
        if self.acquire_fails is not None:
            raise self.acquire_fails
        return self.sandbox

    def release(self, sandbox: Any, reusable: bool) -> None:
        self.released.append(reusable)

    def warm(self) -> bool:
        return True


@pytest.fixture(scope="module")
def registry() -> Registry:
    return Registry.load(("python",), image_tag=Settings.from_env().image_tag)


def make_executor(registry: Registry, broker: FakeBroker, pool: FakePool) -> Executor:
    executor = Executor(Settings(languages=("python",)), registry, broker, Metrics(), client=object())  # type: ignore[arg-type]
    executor.pools = {"python": pool}  # type: ignore[dict-item]
    return executor


def job() -> Job:
    python = Registry.load(("python",)).get("python")
    assert python is not None
    return Job(id=new_job_id(), language="python", source="print(1)", limits=python.default_limits)


def handle(executor: Executor, fake: FakeDelivery) -> None:
    language = executor.registry.get("python")
    assert language is not None
    asyncio.run(executor._handle(language, fake.delivery))


def test_verdicts() -> None:
    assert verdict(None) is Verdict.ACK
    from app.deliveries import MalformedJob

    assert verdict(MalformedJob("x")) is Verdict.REJECT
    for error in EVERY_FAILURE:
        assert verdict(error) is Verdict.REQUEUE, error
    assert verdict(StaleDelivery("closed")) is Verdict.FORGET


def test_a_finished_job_is_acked_after_its_result(registry: Registry) -> None:
    broker = FakeBroker()
    pool = FakePool()
    fake = FakeDelivery(job())
    handle(make_executor(registry, broker, pool), fake)
    assert fake.how == ["ack"]
    assert [e.name for e in broker.events][-1] == "result"
    assert pool.released == [True]


def test_an_undecodable_delivery_is_rejected(registry: Registry) -> None:
    fake = FakeDelivery(None)
    handle(make_executor(registry, FakeBroker(), FakePool()), fake)
    assert fake.how == ["reject"]


@pytest.mark.parametrize("error", EVERY_FAILURE, ids=lambda e: type(e).__name__)
def test_failure_while_taking_a_container_requeues(registry: Registry, error: BaseException) -> None:
    fake = FakeDelivery(job())
    handle(make_executor(registry, FakeBroker(), FakePool(acquire_fails=error)), fake)
    assert fake.how == ["requeue"]


@pytest.mark.parametrize("error", EVERY_FAILURE, ids=lambda e: type(e).__name__)
def test_failure_during_the_run_requeues_and_returns_the_container(registry: Registry, error: BaseException) -> None:
    pool = FakePool(sandbox=FakeSandbox(error))
    fake = FakeDelivery(job())
    handle(make_executor(registry, FakeBroker(), pool), fake)
    assert fake.how == ["requeue"]
    assert pool.released == [False], "a container that failed mid-job is given back, never reused"


def test_engine_gone_while_checking_for_oom_requeues(registry: Registry) -> None:
    pool = FakePool(sandbox=FakeSandbox(SandboxError("exited"), oom_check_fails=True))
    fake = FakeDelivery(job())
    handle(make_executor(registry, FakeBroker(), pool), fake)
    assert fake.how == ["requeue"]
    assert pool.released == [False]


@pytest.mark.parametrize("error", BROKER_FAILURES + BUGS, ids=lambda e: type(e).__name__)
def test_failure_publishing_events_requeues(registry: Registry, error: BaseException) -> None:
    fake = FakeDelivery(job())
    handle(make_executor(registry, FakeBroker(fail_with=error), FakePool()), fake)
    assert fake.how == ["requeue"]


def test_a_job_taken_while_the_broker_recovers_runs_once_it_is_back(registry: Registry) -> None:
    # After a reconnection deliveries arrive before the publishing channel is restored; a job
    # requeued at once would be taken again at once and spend its delivery limit in a moment.
    # Its delivery is still this executor's, so it waits for RabbitMQ and runs.
    broker = FakeBroker(down_s=0.3)
    fake = FakeDelivery(job())
    began = time.monotonic()
    handle(make_executor(registry, broker, FakePool()), fake)
    assert time.monotonic() - began >= 0.3, "run only once RabbitMQ could take events again"
    assert fake.how == ["ack"], "no delivery spent on the outage"
    assert [e.name for e in broker.events] == ["started", "stdout", "result"]


def test_a_delivery_whose_channel_closed_is_neither_run_nor_settled(registry: Registry) -> None:
    # RabbitMQ put the job back when the channel closed and may have handed it to another
    # executor already: running it here too would run it twice (seen in the soak as a result
    # without its attempt's output, two runs' events interleaved).
    broker = FakeBroker()
    pool = FakePool()
    fake = FakeDelivery(job(), live=False)
    handle(make_executor(registry, broker, pool), fake)
    assert fake.how == [] and broker.events == []
    assert pool.released == [True], "the container it took goes back to the pool unused"

    class ClosesDuringTheRun(FakeSandbox):
        def __init__(self, delivery: FakeDelivery) -> None:
            super().__init__(None)
            self.delivery = delivery

        async def run(self, payload: dict[str, Any], deadline: float) -> AsyncIterator[dict[str, Any]]:
            self.delivery.is_live = False  # the connection dropped while the job ran
            async for msg in super().run(payload, deadline):
                yield msg

    for during in (FakeBroker(), FakeBroker(fail_with=BrokerUnavailable("RabbitMQ did not confirm"))):
        failed = FakeDelivery(job(), live=True)
        handle(make_executor(registry, during, FakePool(sandbox=ClosesDuringTheRun(failed))), failed)
        assert failed.how == [], "a job whose channel closed during its run is not settled by this executor"
        assert [e.name for e in during.events if e.name == "result"] == [], "nor its result published"


def test_a_broker_failure_is_handed_back_only_once_the_broker_is_back(registry: Registry) -> None:
    broker = FakeBroker(fail_with=BrokerUnavailable("RabbitMQ did not confirm"))
    fake = FakeDelivery(job())
    handle(make_executor(registry, broker, FakePool()), fake)
    assert fake.how == ["requeue"]
    assert broker.waits == 1, "once, before handing the job back"
    engine_failure = FakeBroker()
    other = FakeDelivery(job())
    handle(make_executor(registry, engine_failure, FakePool(acquire_fails=docker.errors.APIError("x"))), other)
    assert other.how == ["requeue"] and engine_failure.waits == 0, "other failures are handed back at once"


class FakeStream(StreamReader):
    """The event stream as the executor reads it back: given events, then what the broker got since.

    Only the reading is faked: reading up to a marker published now is the real reader's.
    """

    def __init__(self, broker: FakeBroker, events: list[Event]) -> None:
        self.broker = broker
        self.events = events
        self.reads = 0

    async def read(  # type: ignore[override]
        self, start: Any, prefetch: int = 500, resume: bool = True, connection: Any = None
    ) -> AsyncIterator[tuple[int, Event]]:
        self.reads += 1
        for i, event in enumerate(self.events + [e for e in self.broker.events if e.name == MARKER]):
            yield i, event


@pytest.mark.parametrize(("began", "ends"), [((1, 2, 3, 4), "failed"), ((2,), "completed"), ((), "completed")])
def test_runs_not_hand_outs_count_towards_the_delivery_limit(
    registry: Registry, began: tuple[int, ...], ends: str
) -> None:
    # Handed out a fifth time (limit 3): RabbitMQ also counts each time it put the job back
    # because a consumer's channel closed, as every node of a restarting cluster does. Only
    # runs that began (a started event in the stream) count: four of them end the job failed.
    broker = FakeBroker()
    pool = FakePool()
    executor = make_executor(registry, broker, pool)
    the_job = job()
    stream = FakeStream(broker, [Event(job=the_job.id, name="started", data={}, attempt=a, n=1) for a in began])
    executor.reader = stream  # type: ignore[assignment]
    fake = FakeDelivery(the_job, attempt=5)
    handle(executor, fake)
    assert fake.how == ["ack"] and stream.reads == 1
    result = [e for e in broker.events if e.name == "result"]
    assert result[0].data["status"] == ends
    if ends == "failed":
        assert "attempted 4 times" in result[0].data["result"]["error"] and pool.released == []
    first = FakeDelivery(job(), attempt=4)
    handle(executor, first)
    assert stream.reads == 1, "a job within the limit is not counted: no read of the stream"


def test_a_failing_settle_is_contained(registry: Registry) -> None:
    fake = FakeDelivery(job(), settle_fails=True)
    handle(make_executor(registry, FakeBroker(), FakePool(acquire_fails=docker.errors.APIError("x"))), fake)
    assert fake.how == ["requeue"]  # tried once, failed, logged; RabbitMQ redelivers


def test_dead_letter_publish_failure_requeues_the_dead_letter(registry: Registry) -> None:
    executor = make_executor(registry, FakeBroker(fail_with=BrokerUnavailable("down")), FakePool())
    fake = FakeDelivery(job())
    asyncio.run(executor._dead_letter(fake.delivery))
    assert fake.how == ["requeue"]
    ok = FakeDelivery(job())
    broker = FakeBroker()
    asyncio.run(make_executor(registry, broker, FakePool())._dead_letter(ok.delivery))
    assert ok.how == ["ack"] and broker.events[0].data["status"] == "failed"


def test_cancelled_job_is_requeued(registry: Registry) -> None:
    class Hanging(FakePool):
        async def acquire(self, limits: Any) -> FakeSandbox:
            await asyncio.sleep(3600)
            raise AssertionError

    executor = make_executor(registry, FakeBroker(), Hanging())
    fake = FakeDelivery(job())
    language = executor.registry.get("python")
    assert language is not None

    async def scenario() -> None:
        task = asyncio.create_task(executor._handle(language, fake.delivery))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(scenario())
    assert fake.how == ["requeue"]


class FakeEngine:
    def __init__(self) -> None:
        self.down = False
        self.runtimes = {"runc": {}}

    def ping(self) -> bool:
        if self.down:
            raise requests.exceptions.ConnectionError("refused")
        return True

    def info(self) -> dict[str, Any]:
        return {"Runtimes": self.runtimes}


def test_engine_watch_reports_outage_missing_runtime_and_recovery() -> None:
    engine = FakeEngine()
    assert engine_problem(engine, ["runc"]) is None  # type: ignore[arg-type]
    assert "no runtime runsc" in (engine_problem(engine, ["runc", "runsc"]) or "")  # type: ignore[arg-type]
    watch = EngineWatch(engine, ["runc"], 0.1)  # type: ignore[arg-type]
    woken: list[int] = []
    watch.on_recovery(lambda: woken.append(1))

    async def scenario() -> None:
        assert await watch.check() is None
        engine.down = True
        assert "unreachable" in (await watch.check() or "")
        engine.down = False
        assert await watch.check() is None
        await watch.stop()

    asyncio.run(scenario())
    assert woken == [1, 1], "listeners hear of the first success and of each recovery"


def test_executor_unready_names_the_engine_problem(registry: Registry) -> None:
    executor = make_executor(registry, FakeBroker(), FakePool())
    executor.consuming = True
    executor.engine.problem = "the Docker engine has no runtime runsc (configured by RUNBOX_RUNTIME)"
    assert executor.unready() == ("runtime_missing", f"Executor {executor.settings.executor_id}: "
                                  f"{executor.engine.problem}.")
    executor.engine.problem = "the Docker engine is unreachable: ConnectionError"
    assert executor.unready()[0] == "engine_unavailable"  # type: ignore[index]
    executor.engine.problem = None
    assert executor.unready() is None


def test_warming_retries_forever_with_bounded_backoff() -> None:
    delays = [retry_delay(n) for n in range(1, 40)]
    assert delays[0] == 0.5 and delays == sorted(delays)
    assert max(delays) == RETRY_MAX_S, "the pause is capped: an engine outage never ends warming"


def test_executor_identity_unique_by_default_and_stable_when_configured() -> None:
    assert Settings().executor_id != Settings().executor_id
    assert socket.gethostname() in Settings().executor_id
    assert Settings.from_env({"RUNBOX_EXECUTOR_NAME": "ex-1"}).executor_id == "ex-1"
    assert Settings.from_env({"RUNBOX_EXECUTOR_ID": "ignored"}).executor_id != "ignored"


def test_amqp_url_lists_every_node() -> None:
    s = Settings.from_env({"RUNBOX_AMQP_URL": "amqp://u:p@a:5672/, amqp://u:p@b:5673/"})
    assert s.amqp_urls == ("amqp://u:p@a:5672/", "amqp://u:p@b:5673/")
    with pytest.raises(Exception, match="RUNBOX_AMQP_URL"):
        Settings.from_env({"RUNBOX_AMQP_URL": "http://a"})


def test_failover_hook_still_exists_in_aio_pika() -> None:
    # FailoverConnection overrides aio-pika's private per-attempt transport step.
    assert hasattr(RobustConnection, "_RobustConnection__connect_transport")
    assert "_RobustConnection__connect_transport" in vars(FailoverConnection)


def test_failover_tries_each_node_in_turn() -> None:
    async def scenario() -> list[str]:
        tried: list[str] = []
        conn = FailoverConnection(["amqp://127.0.0.1:1/", "amqp://127.0.0.1:2/"], reconnect_interval=0.1)

        async def attempt(self: Any) -> None:
            tried.append(str(self.url))
            if len(tried) < 3:
                raise ConnectionRefusedError()

        original = RobustConnection._RobustConnection__connect_transport  # type: ignore[attr-defined]
        RobustConnection._RobustConnection__connect_transport = attempt  # type: ignore[attr-defined]
        try:
            with pytest.raises(ConnectionRefusedError):
                await conn._RobustConnection__connect_transport()  # type: ignore[attr-defined]
            await conn._RobustConnection__connect_transport()  # type: ignore[attr-defined]
        finally:
            RobustConnection._RobustConnection__connect_transport = original  # type: ignore[attr-defined]
        return tried

    assert asyncio.run(scenario()) == ["amqp://127.0.0.1:1/", "amqp://127.0.0.1:2/", "amqp://127.0.0.1:1/"]


def test_a_taken_port_exits_at_once_naming_it() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(SystemExit, match=f"127.0.0.1:{port}.*already in use"):
            listen("127.0.0.1", port)


def test_delivery_attempts_from_rabbitmq_counts() -> None:
    from types import SimpleNamespace

    from app.deliveries import delivery_attempt

    def attempt(count: object, redelivered: bool) -> int:
        return delivery_attempt(SimpleNamespace(headers={"x-delivery-count": count}, redelivered=redelivered))  # type: ignore[arg-type]

    assert attempt(0, False) == 1
    assert attempt(1, True) == 2 and attempt(2, True) == 3  # counted returns (requeue, consumer gone)
    assert attempt(0, True) == 2, "returned uncounted (its consumer's node was lost): still a new attempt"
    assert attempt("junk", False) == 1


class FakeEvents:
    """The engine's event stream as the SDK returns it: an iterable that can be closed."""

    def __init__(self, events: list[dict[str, Any]]) -> None:
        self.events = events

    def __iter__(self) -> Any:
        return iter(self.events)

    def close(self) -> None:
        pass


class OomEngine:
    """A container that ended by SIGKILL (137) with ``OOMKilled`` false, and the engine's event log."""

    def __init__(self, oom_event: bool) -> None:
        self.oom_event = oom_event
        self.asked: list[dict[str, Any]] = []
        self.id = "c0ffee" * 10
        self.attrs = {"State": {"Running": False, "ExitCode": 137, "OOMKilled": False}}

    def reload(self) -> None:
        pass

    def events(self, **query: Any) -> FakeEvents:
        self.asked.append(query)
        return FakeEvents([{"status": "oom", "id": self.id}] if self.oom_event else [])


def ended_sandbox(registry: Registry, monkeypatch: pytest.MonkeyPatch, engine: OomEngine) -> Sandbox:
    """A Python sandbox whose container ``engine`` has ended; the engine's health is not asked."""
    import app.executor.sandbox as sandbox_module

    monkeypatch.setattr(sandbox_module, "ENGINE_SETTLE_S", 0.0)
    monkeypatch.setattr(sandbox_module, "engine_problem", lambda client, images: None)
    python = registry.get("python")
    assert python is not None
    sandbox = Sandbox(engine, python, python.default_limits, {"labels": {"runbox.uid": "60001"}})  # type: ignore[arg-type]
    sandbox.container = engine  # type: ignore[assignment]
    return sandbox


@pytest.mark.parametrize("oom_event", [True, False])
def test_a_sigkilled_sandbox_is_out_of_memory_when_the_engine_logged_an_oom(
    registry: Registry, monkeypatch: pytest.MonkeyPatch, oom_event: bool
) -> None:
    # The engine keeps OOMKilled in a container's state only when the OOM notice came before
    # the exit; under gVisor it can come after (CI: a JavaScript memory bomb ended "failed,
    # the job killed its sandbox's agent"). Its "oom" event still tells them apart.
    engine = OomEngine(oom_event)
    sandbox = ended_sandbox(registry, monkeypatch, engine)
    killed_by_the_job = asyncio.run(sandbox._killed_by_signal())
    out_of_memory = asyncio.run(sandbox.oom_killed())
    assert (killed_by_the_job, out_of_memory) == ((False, True) if oom_event else (True, False))
    assert engine.asked and all(q["filters"] == {"container": engine.id, "event": "oom"} for q in engine.asked)
    assert all(q["since"] < q["until"] for q in engine.asked)


class Writer:
    """The agent's control channel as the sandbox writes it: nothing to wait for."""

    async def drain(self) -> None:
        pass


@pytest.mark.parametrize("said_high", [True, False])
def test_a_sandbox_ended_while_its_job_held_over_half_its_memory_is_out_of_memory(
    registry: Registry, monkeypatch: pytest.MonkeyPatch, said_high: bool
) -> None:
    # Under gVisor the host's OOM killer ends the whole sandbox at the cgroup's limit and the
    # engine may report neither OOMKilled nor an oom event (CI: a C memory bomb in the abuse
    # storm ended "failed, the job killed its sandbox's agent"). The agent says when a job
    # passes half its limit; a container that then dies was out of memory.
    sandbox = ended_sandbox(registry, monkeypatch, OomEngine(oom_event=False))
    sandbox._writer = Writer()  # type: ignore[assignment]
    if said_high:
        sandbox._lines.put_nowait({"t": "mem", "kb": 200_000})
    sandbox._lines.put_nowait(None)  # the container's end

    async def relay() -> list[dict[str, Any]]:
        return [message async for message in sandbox._messages(5.0)]

    if said_high:
        with pytest.raises(SandboxError):
            asyncio.run(relay())  # not the job's attack: the scheduler asks oom_killed()
        assert asyncio.run(sandbox.oom_killed())
    else:
        (message,) = asyncio.run(relay())
        assert message["status"] == "failed" and "killed its sandbox's agent" in message["error"]
        assert not asyncio.run(sandbox.oom_killed())
