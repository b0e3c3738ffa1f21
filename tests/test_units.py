"""Fast unit tests of the pure parts: limits, ids, configuration, event folding, fairness, container options."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from typing import Any

import pytest

from app import seccomp
from app.config import ConfigError, Settings, hash_key
from app.events import JobRecord
from app.executor.sandbox import (
    AGENT_MOUNT,
    GVISOR_COVERS,
    MASKED_PATHS,
    Uids,
    agent_directory,
    agent_job,
    container_options,
    usable_agent_root,
)
from app.executor.slots import FairSlots
from app.gateway.judge0.contract import judge0_languages
from app.gateway.output import compile_failed
from app.languages import LimitError, Limits, Registry
from app.messages import Event, JobState, job_id_time, job_id_valid, new_job_id
from app.metrics import Metrics


@pytest.fixture(scope="module")
def python():
    lang = Registry.load(image_tag=Settings.from_env().image_tag).get("python")
    assert lang is not None
    return lang


def test_job_ids_carry_their_time() -> None:
    job_id = new_job_id(1_700_000_000.123, b"key")
    assert len(job_id) == 32
    assert job_id_time(job_id) == pytest.approx(1_700_000_000.123, abs=0.001)
    assert job_id_time("not-an-id") is None
    assert job_id_time("z" * 32) is None
    assert new_job_id() != new_job_id()
    # The check digits refuse ids this deployment never issued, and ids of another deployment.
    assert job_id_valid(job_id, b"key")
    assert not job_id_valid(job_id, b"other key")
    assert not job_id_valid(job_id[:-1] + ("0" if job_id[-1] != "0" else "1"), b"key")
    assert not job_id_valid("0" * 32, b"key")


def test_limits_default_and_capped(python) -> None:
    assert python.resolve_limits(None) == Limits()
    assert python.resolve_limits({"timeout_s": 2}).timeout_s == 2.0
    assert python.resolve_limits({"memory_mb": 512}).memory_mb == 512
    with pytest.raises(LimitError, match="maximum"):
        python.resolve_limits({"timeout_s": 10_000})
    with pytest.raises(LimitError, match="unknown"):
        python.resolve_limits({"cores": 3})
    with pytest.raises(LimitError, match="number"):
        python.resolve_limits({"timeout_s": "5"})
    with pytest.raises(LimitError, match="positive"):
        python.resolve_limits({"timeout_s": 0})
    with pytest.raises(LimitError):
        python.resolve_limits([1])


def test_settings_from_env() -> None:
    s = Settings.from_env({"RUNBOX_ROLES": "gateway", "RUNBOX_PORT": "9000", "RUNBOX_REQUIRE_KEYS": "true",
                           "RUNBOX_API_KEYS": "premium:plain:secret", "RUNBOX_POOL_OVERRIDES": "java=0:1:2"})
    assert s.roles == ("gateway",) and s.port == 9000 and s.require_keys
    assert s.key_table() == {hash_key("secret"): "premium"}
    assert s.pool_sizes("java") == (0, 1, 2)
    assert s.pool_sizes("python") == (s.pool_min, s.pool_size, s.pool_max)
    assert s.events_max_age_s == 86400
    for bad in ({"RUNBOX_ROLES": "chef"}, {"RUNBOX_PORT": "x"}, {"RUNBOX_RUNTIME": "kata"},
                {"RUNBOX_API_KEYS": "gold:plain:k"}, {"RUNBOX_POOL_MIN": "9"}, {"RUNBOX_EVENTS_MAX_AGE": "forever"},
                {"RUNBOX_PROBE_PORT": "8080"}, {"RUNBOX_PROBE_PORT": "70000"}, {"RUNBOX_LIVENESS_STALL_S": "0"}):
        with pytest.raises(ConfigError):
            Settings.from_env(bad)


def test_container_options_harden_every_sandbox(python) -> None:
    opts = container_options(
        python, Limits(), runtime="runsc", engine_runtime="runbox-runsc", executor_id="ex1", cpus=1.0, uid=200123
    )
    assert opts["network_mode"] == "none"
    assert opts["read_only"] is True
    assert opts["cap_drop"] == ["ALL"]
    assert "no-new-privileges:true" in opts["security_opt"]
    assert f"seccomp={seccomp.profile('runsc')}" in opts["security_opt"]
    assert opts["user"] == "200123:200123"
    assert opts["labels"]["runbox.uid"] == "200123"
    assert all("uid=200123,gid=200123" in opts["tmpfs"][path] for path in ("/work", "/tmp"))
    # The counters of earlier jobs: masked for the engine, covered by empty tmpfs under gVisor.
    assert set(MASKED_PATHS) <= set(opts["masked_paths"]) and "/proc/1/status" in opts["masked_paths"]
    assert set(opts["tmpfs"]) - {"/work", "/tmp"} == set(GVISOR_COVERS) and "/proc/1" in GVISOR_COVERS
    assert opts["mem_limit"] == opts["memswap_limit"]
    assert opts["pids_limit"] > 64
    assert opts["runtime"] == "runbox-runsc"
    assert opts["labels"]["runbox.executor"] == "ex1"
    assert "privileged" not in opts
    assert "volumes" not in opts and "mounts" not in opts
    assert all("size=" in v and "nosuid" in v for v in opts["tmpfs"].values())
    assert opts["log_config"].type == "none"
    assert opts["stop_signal"] == "SIGKILL"  # an engine shutting down does not wait on sandboxes


def test_a_sandbox_mounts_only_its_own_agent_socket_directory(python, tmp_path) -> None:
    opts = container_options(python, Limits(), runtime="runc", executor_id="ex1", cpus=1.0, uid=200123,
                             agent_root=str(tmp_path))
    ((source, mount),) = opts["volumes"].items()
    assert mount == {"bind": AGENT_MOUNT, "mode": "ro"}
    assert source == agent_directory(str(tmp_path), "ex1", 200123) and os.path.dirname(source) == str(tmp_path)
    assert source != agent_directory(str(tmp_path), "ex2", 200123) != agent_directory(str(tmp_path), "ex1", 200124)
    # An executor that cannot make the directories there drives its sandboxes through the engine.
    assert usable_agent_root(str(tmp_path)) == str(tmp_path)
    (tmp_path / "file").write_text("")
    assert usable_agent_root(str(tmp_path / "file")) == ""


def test_sandbox_uids_are_distinct_and_come_back() -> None:
    uids = Uids(300000, 64)
    taken = {uids.take() for _ in range(64)}
    assert len(taken) == 64 and all(300000 <= u < 300064 for u in taken)
    uids.give(300010)
    assert uids.take() == 300010


def test_seccomp_profile_refuses_the_dangerous_calls() -> None:
    for runtime in ("runc", "runsc"):
        allowed = seccomp.allowed(runtime)
        for call in ("io_uring_setup", "io_uring_enter", "io_uring_register", "userfaultfd", "keyctl", "add_key",
                     "request_key", "bpf", "perf_event_open", "init_module", "finit_module", "delete_module",
                     "clock_settime", "clock_adjtime", "adjtimex", "settimeofday", "mount", "setns",
                     "process_vm_readv", "process_vm_writev", "kexec_load"):
            assert call not in allowed, (runtime, call)
        assert {"read", "write", "execve", "clone", "ptrace"} <= allowed
    ptrace_requests = {
        rule["args"][0]["value"]
        for rule in json.loads(seccomp.profile("runc"))["syscalls"] if rule["names"] == ["ptrace"]
    }
    assert 0 in ptrace_requests and seccomp.PTRACE_ATTACH not in ptrace_requests
    assert seccomp.PTRACE_SEIZE not in ptrace_requests
    assert "unshare" in seccomp.allowed("runsc") and "unshare" not in seccomp.allowed("runc")


def test_agent_job_carries_limits(python) -> None:
    job = agent_job("j1", python, Limits(timeout_s=2, output_kb=1), [{"name": "main.py", "content": "x"}], "in", ("a",))
    (run,) = job["steps"]
    assert run["argv"][-1] == "a"
    assert run["limits"]["timeout_s"] == 2
    assert run["output_bytes"] == 1024
    assert run["hard_output_bytes"] > run["output_bytes"]
    assert run["stdin"] == "in"


def test_job_record_dedupes_and_stops_at_the_terminal_event() -> None:
    record = JobRecord(JobState("j"))
    queued = Event(job="j", name="queued", data={"language": "python", "created_at": 1.0, "identity": "x"})
    assert record.add(queued)
    assert not record.add(queued)  # a publisher retry's copy
    assert record.add(Event(job="j", name="started", data={"started_at": 2.0}, attempt=1, n=1))
    assert record.add(Event(job="j", name="stdout", data={"data": "a"}, attempt=1, n=2))
    assert record.add(Event(job="j", name="started", data={"started_at": 3.0}, attempt=2, n=1))
    result = {"status": "completed", "started_at": 3.0, "finished_at": 4.0, "result": {"stdout": "b"}}
    assert record.add(Event(job="j", name="result", data=result, attempt=2, n=3))
    late = {"status": "failed", "finished_at": 5.0, "result": {}}
    assert not record.add(Event(job="j", name="result", data=late, attempt=1, n=9))
    assert record.state.status == "completed"
    assert record.state.attempt == 2
    assert [e.name for e in record.events] == ["queued", "started", "stdout", "started", "result"]


def test_fair_slots_rotate_between_languages() -> None:
    async def scenario() -> list[str]:
        slots = FairSlots(1)
        await slots.acquire("python")
        order: list[str] = []

        async def job(lang: str) -> None:
            await slots.acquire(lang)
            order.append(lang)
            await asyncio.sleep(0)
            slots.release()

        tasks = [asyncio.create_task(job("python")) for _ in range(3)]
        await asyncio.sleep(0)
        tasks += [asyncio.create_task(job("ruby")), asyncio.create_task(job("go"))]
        await asyncio.sleep(0)
        slots.release()
        await asyncio.gather(*tasks)
        return order

    order = asyncio.run(scenario())
    assert order[:3] == ["python", "ruby", "go"], order


def test_a_gateway_sheds_submissions_beyond_its_bound_with_503_and_retry_after() -> None:
    from app.config import KeyTier
    from app.gateway.admission import Admission
    from app.gateway.identity import Identity
    from app.web.errors import ApiError

    class NoJobs:
        def in_flight(self, identity: str) -> set[str]:
            return set()

    admission = Admission(Settings(max_pending_submits=2, retry_after_s=3), NoJobs())  # type: ignore[arg-type]
    who = Identity("key:abc", KeyTier("t", 1000.0, 1000, 1000, 10))
    first, second = admission.submit(who), admission.submit(who)
    with pytest.raises(ApiError) as shed:
        admission.submit(who)
    assert (shed.value.status, shed.value.code, shed.value.reason) == (503, "overloaded", "overloaded")
    assert shed.value.headers["Retry-After"] == "3"
    first.release()
    first.release()  # idempotent: gives back one place only
    third = admission.submit(who)  # room again once an earlier submission was answered
    with pytest.raises(ApiError):
        admission.submit(who)
    second.release()
    third.release()
    assert admission.pending == 0


def test_a_gateway_sheds_submissions_while_its_publishes_wait_too_long_for_their_confirms() -> None:
    from app.config import KeyTier
    from app.gateway.admission import SHED_MIN_PUBLISHING, Admission
    from app.gateway.identity import Identity
    from app.web.errors import ApiError

    class NoJobs:
        def in_flight(self, identity: str) -> set[str]:
            return set()

    admission = Admission(Settings(shed_after_ms=50), NoJobs())  # type: ignore[arg-type]
    who = Identity("key:abc", KeyTier("t", 1000.0, 1000, 1000, 10))
    with contextlib.ExitStack() as waiting:
        for _ in range(SHED_MIN_PUBLISHING - 1):
            waiting.enter_context(admission.publishing())
        time.sleep(0.06)
        admission.submit(who).release()  # one publish short of the minimum: a stuck channel, not load
        late = waiting.enter_context(contextlib.ExitStack())
        late.enter_context(admission.publishing())
        with pytest.raises(ApiError) as shed:
            admission.submit(who)
        assert (shed.value.status, shed.value.code) == (503, "overloaded") and "50 ms" in shed.value.message
        assert shed.value.headers["Retry-After"]
        late.close()  # a confirm came: below the minimum again
        admission.submit(who).release()
    admission.submit(who).release()  # every confirm back: nothing waits
    with contextlib.ExitStack() as fresh:
        for _ in range(SHED_MIN_PUBLISHING):
            fresh.enter_context(admission.publishing())
        admission.submit(who).release()  # as many, but fresh: the queue keeps up
    assert admission.pending == 0


def test_a_job_read_back_before_its_publish_is_confirmed_counts_once_against_the_cap() -> None:
    from app.config import KeyTier
    from app.gateway.admission import Admission
    from app.gateway.identity import Identity
    from app.web.errors import ApiError

    class Log:  # the event log's view: jobs whose "queued" event it has read
        def __init__(self) -> None:
            self.seen: set[str] = set()

        def in_flight(self, identity: str) -> set[str]:
            return self.seen

    log = Log()
    admission = Admission(Settings(), log)  # type: ignore[arg-type]
    who = Identity("anon:127.0.0.1", KeyTier("t", 1000.0, 1000, 2, 10))
    first = admission.submit(who)
    first.bind("job-1")
    log.seen.add("job-1")  # the stream tail read its "queued" event; the publish is not confirmed yet
    second = admission.submit(who)  # one job held, one more allowed
    second.bind("job-2")
    with pytest.raises(ApiError) as refused:
        admission.submit(who)
    assert refused.value.code == "too_many_jobs"
    first.release()
    second.release()
    log.seen.add("job-2")
    with pytest.raises(ApiError):
        admission.submit(who)  # both are queued or running: the cap holds without reservations
    log.seen.clear()
    admission.submit(who).release()


def test_a_jobs_messages_always_take_the_same_publishing_channel_and_jobs_spread_over_all() -> None:
    """RabbitMQ keeps the order of one channel's messages only: a job's events (and its queued
    event and the job) must share a channel, while many jobs must not queue on one."""
    from app import broker as broker_module
    from app.messages import new_job_id

    class Open:
        is_closed = False

    broker = broker_module.Broker(Settings(), Metrics(), "gateway")
    broker._connection = Open()  # type: ignore[assignment]
    broker._connected.set()
    broker._publish_channels = [Open() for _ in range(broker_module.PUBLISH_CHANNELS)]  # type: ignore[misc]
    jobs = [new_job_id(key=Settings().job_id_key) for _ in range(400)]
    assert all(broker._channel_for(j) is broker._channel_for(j) for j in jobs)
    used = {id(broker._channel_for(j)) for j in jobs}
    assert len(used) == broker_module.PUBLISH_CHANNELS
    broker._publish_channels[3].is_closed = True  # type: ignore[attr-defined]
    with pytest.raises(broker_module.BrokerUnavailable):
        broker._channel_for(jobs[0])  # a channel not yet restored: refused, never a silent reorder


def test_a_full_queue_refuses_its_language_at_once_for_a_moment_without_publishing() -> None:
    """After a queue refused a job for its length, the next submission in that language gets
    503 queue_full before anything is published; other languages, and later ones, publish."""
    from app.broker import QueueFull
    from app.events import EventLog
    from app.gateway import publish
    from app.gateway.admission import Admission
    from app.messages import Job
    from app.web.errors import ApiError

    class Broker:
        def __init__(self) -> None:
            self.full = {"python"}
            self.tried: list[str] = []  # every job published, refused or not
            self.jobs: list[str] = []

        async def publish_event(self, event: Event) -> None:
            pass

        async def publish_job(self, job: Job) -> None:
            self.tried.append(job.id)
            if job.language in self.full:
                raise QueueFull(job.language)
            self.jobs.append(job.id)

    settings = Settings()
    metrics = Metrics()
    broker = Broker()
    events = EventLog(settings, broker, metrics)  # type: ignore[arg-type]
    publisher = publish.Publisher(settings, broker, events, metrics, Admission(settings, events))  # type: ignore[arg-type]

    def job(n: int, language: str) -> Job:
        return Job(id=f"j{n}", language=language, source="", limits=Limits())

    async def scenario() -> list[str]:
        codes = []
        for n, language in enumerate(["python", "python", "bash"]):
            with pytest.raises(ApiError) if language == "python" else contextlib.nullcontext() as refused:
                await publisher.submit(job(n, language), "v1")
            codes.append(refused.value.code if refused else "queued")
        broker.full.clear()
        publisher._full_until = {k: 0.0 for k in publisher._full_until}  # the hold has passed
        await publisher.submit(job(9, "python"), "v1")
        return codes

    assert asyncio.run(scenario()) == ["queue_full", "queue_full", "queued"]
    assert broker.tried == ["j0", "j2", "j9"]  # the second python job was refused without a publish
    assert broker.jobs == ["j2", "j9"]


def test_a_short_jobs_events_go_out_as_one_message_and_read_back_in_order() -> None:
    from app.executor.jobrun import JobRun
    from app.messages import Job

    class Recorder:
        def __init__(self) -> None:
            self.messages: list[list[Event]] = []

        async def publish_events(self, events: list[Event]) -> None:
            self.messages.append(list(events))

    job = Job(id="j1", language="python", source="", limits=Limits())

    async def scenario(linger_s: float) -> list[list[Event]]:
        broker = Recorder()
        run = JobRun(broker, job, 1, linger_s)  # type: ignore[arg-type]
        run.emit("started", {"attempt": 1})
        run.emit("stdout", {"data": "hi\n", "attempt": 1})
        await run.finish({"status": "completed"})
        return broker.messages

    coalesced = asyncio.run(scenario(0.5))
    assert [[e.name for e in m] for m in coalesced] == [["started", "stdout", "result"]]
    body = b"[" + b",".join(e.encode() for e in coalesced[0]) + b"]"
    assert [(e.name, e.n) for e in Event.decode_many(body)] == [("started", 1), ("stdout", 2), ("result", 3)]
    assert Event.decode_many(coalesced[0][0].encode())[0].name == "started"  # a lone event stays one object
    assert [[e.name for e in m] for m in asyncio.run(scenario(0))] == [["started"], ["stdout"], ["result"]]


def test_jobs_and_events_read_back_as_they_were_sent_whatever_json_path_they_take() -> None:
    from app.messages import Job, SourceFile

    # A Judge0 file's undecodable bytes travel as surrogate escapes, which orjson refuses.
    binary = b"\x7fELF\xff\xfe".decode("utf-8", "surrogateescape")
    plain = Job(id="j1", language="python", source="print('h\u00e9')", limits=Limits(), args=("a", "\u2028"),
                files=(SourceFile("data.txt", "caf\u00e9"),), compile_limits={"timeout_s": 2.5})
    escaped = Job(id="j2", language="c", source="int main(){}", limits=Limits(), files=(SourceFile("x.bin", binary),),
                  stdin=binary)
    for job in (plain, escaped):
        assert Job.decode(job.encode()) == job
    assert escaped.encode().isascii()  # the standard library's path, its escapes ASCII
    assert Job.decode(escaped.encode()).files[0].content.encode("utf-8", "surrogateescape") == b"\x7fELF\xff\xfe"
    events = [Event(job="j1", name="stdout", data={"data": "h\u00e9 \U0001f600\n", "attempt": 1}, attempt=1, n=1),
              Event(job="j1", name="result", data={"status": "completed", "exit_code": 0, "ratio": 1e-05}, n=2)]
    body = b"[" + b",".join(e.encode() for e in events) + b"]"
    assert Event.decode_many(body) == events
    assert json.loads(body)[0]["data"] == events[0].data  # plain JSON to any other reader


def test_started_waits_for_the_next_event_unless_the_job_is_interactive() -> None:
    from app.executor.jobrun import STARTED_HOLD_S, JobRun
    from app.messages import Job

    class Recorder:
        def __init__(self) -> None:
            self.messages: list[list[str]] = []

        async def publish_events(self, events: list[Event]) -> None:
            self.messages.append([e.name for e in events])

    linger_s = 0.01

    async def scenario(interactive: bool) -> list[list[list[str]]]:
        job = Job(id="j1", language="python", source="", limits=Limits(), interactive=interactive)
        broker = Recorder()
        run = JobRun(broker, job, 1, linger_s)  # type: ignore[arg-type]
        seen = []
        run.emit("started", {"attempt": 1})
        await asyncio.sleep(linger_s * 5)  # past the linger, well within the hold
        seen.append(list(broker.messages))
        run.emit("stdout", {"data": "hi\n", "attempt": 1})
        await asyncio.sleep(linger_s * 5)  # output waits only the linger, even behind a held start
        seen.append(list(broker.messages))
        run.emit("stdout", {"data": "more\n", "attempt": 1})
        await run.finish({"status": "completed"})
        seen.append(list(broker.messages))
        return seen

    assert linger_s * 10 < STARTED_HOLD_S
    assert asyncio.run(scenario(interactive=False)) == [
        [], [["started", "stdout"]], [["started", "stdout"], ["stdout", "result"]]
    ]
    # An interactive job's client waits for "started" before it sends input: only the linger.
    assert asyncio.run(scenario(interactive=True)) == [
        [["started"]], [["started"], ["stdout"]], [["started"], ["stdout"], ["stdout", "result"]]
    ]

    async def silent() -> list[list[str]]:
        broker = Recorder()
        run = JobRun(broker, Job(id="j2", language="python", source="", limits=Limits()), 1, linger_s)  # type: ignore[arg-type]
        run.emit("started", {"attempt": 1})
        await asyncio.sleep(STARTED_HOLD_S + 0.2)
        return broker.messages

    assert asyncio.run(silent()) == [["started"]]  # a silent program is shown started after the hold


@pytest.mark.parametrize(("compiled", "ended_it"), [
    ({"exit_code": 0, "status": "completed"}, False),
    ({"exit_code": 0}, False),  # an event stored before compile events carried the step's status
    ({"exit_code": 1, "status": "completed"}, True),
    ({"exit_code": None, "status": "timed_out"}, True),
    # The watch found the compiler over its memory limit in the turn it exited 0: the program
    # never ran, and the APIs must blame the compiler (Piston's compile stage, Judge0's 6).
    ({"exit_code": 0, "status": "memory_exceeded"}, True),
])
def test_the_compile_step_ended_the_job(compiled: dict[str, object], ended_it: bool) -> None:
    record = JobRecord(JobState("j"))
    record.add(Event(job="j", name="queued", data={"language": "c", "created_at": 1.0, "identity": "x"}))
    record.add(Event(job="j", name="started", data={"started_at": 2.0}, attempt=1, n=1))
    record.add(Event(job="j", name="compile", data={"output": "", **compiled}, attempt=1, n=2))
    status = "memory_exceeded" if compiled.get("status") == "memory_exceeded" else "completed"
    record.add(Event(job="j", name="result", data={"status": status, "finished_at": 3.0, "result": {}}, attempt=1, n=3))
    assert compile_failed(record, record.state) is ended_it


def test_finished_output_is_kept_once_and_served_whole() -> None:
    record = JobRecord(JobState("j"))
    record.add(Event(job="j", name="queued", data={"language": "python", "created_at": 1.0, "identity": "x"}))
    record.add(Event(job="j", name="started", data={"started_at": 2.0}, attempt=1, n=1))
    chunks = ["a" * 40_000, "b" * 24_000]
    for n, chunk in enumerate(chunks, start=2):
        record.add(Event(job="j", name="stdout", data={"data": chunk, "attempt": 1}, attempt=1, n=n))
    record.add(Event(job="j", name="stderr", data={"data": "oops\n", "attempt": 1}, attempt=1, n=4))
    held = record.size
    result = {"status": "completed", "finished_at": 3.0, "result": {"stdout": "".join(chunks), "stderr": "oops\n"}}
    record.add(Event(job="j", name="result", data=result, attempt=1, n=5))
    # The result holds the output; the chunk events now point into it instead of holding a copy.
    assert record.size < held + 2_000
    assert all("data" not in e.data for e in record.events if e.name in ("stdout", "stderr"))
    served = [record.resolve(e).data["data"] for e in record.events if e.name == "stdout"]
    assert served == chunks
    assert list(record.chunks(1)) == [("stdout", chunks[0]), ("stdout", chunks[1]), ("stderr", "oops\n")]


def test_event_log_is_bounded_in_bytes() -> None:
    from app.events import EventLog
    from app.metrics import Metrics

    log = EventLog(Settings(events_cache_mb=1), broker=None, metrics=Metrics())  # type: ignore[arg-type]
    output = "x" * 65_536
    for i in range(100):  # 6.4 MiB of output through a 1 MiB cache
        job = f"job{i}"
        log.note_local(Event(job=job, name="queued", data={"language": "python", "created_at": 1.0}))
        log.note_local(Event(job=job, name="stdout", data={"data": output}, attempt=1, n=1))
        done = {"status": "completed", "finished_at": 2.0, "result": {"stdout": output}}
        log.note_local(Event(job=job, name="result", data=done, attempt=1, n=2))
        assert log.cached_bytes <= 1024 * 1024
    assert log.cached_bytes > 512 * 1024  # it keeps what fits, not nothing


class LaggingStream:
    """A stand-in for the broker and the stream: what is appended reaches the tail a little later."""

    def __init__(self, log: Any, lag_s: float, fail: bool = False) -> None:
        self.log, self.lag_s, self.fail = log, lag_s, fail
        self.markers = 0

    async def publish_event(self, event: Event) -> None:
        if self.fail:
            from app.broker import BrokerUnavailable

            raise BrokerUnavailable("down")
        self.markers += 1
        asyncio.get_running_loop().call_later(self.lag_s, self.log._apply, event)

    def append_unread(self, event: Event) -> None:
        """An event another gateway already showed, which this gateway's tail reads after ``lag_s``."""
        asyncio.get_running_loop().call_later(self.lag_s, self.log._apply, event)


def test_a_read_of_a_running_job_catches_up_with_the_stream_first() -> None:
    """What one gateway showed, another never contradicts: a poll sees the result the stream holds."""
    from app.events import EventLog

    settings = Settings()
    done = {"status": "completed", "finished_at": time.time(), "result": {"stdout": "hi\n"}}

    async def scenario(fail: bool) -> tuple[list[str], list[str], int]:
        log = EventLog(settings, broker=None, metrics=Metrics())  # type: ignore[arg-type]
        stream = LaggingStream(log, 0.05, fail)
        log.broker = stream  # type: ignore[assignment]
        jobs = [new_job_id(key=settings.job_id_key) for _ in range(20)]
        for job in jobs:
            log.note_local(Event(job=job, name="queued", data={"language": "python", "created_at": time.time()}))
            stream.append_unread(Event(job=job, name="result", data=done, attempt=1, n=1))
        stale = [record.state.status for job in jobs if (record := await log.record(job)) is not None]
        fresh = await asyncio.gather(*(log.record(job, fresh=True) for job in jobs))
        return stale, [record.state.status for record in fresh if record is not None], stream.markers

    stale, fresh, markers = asyncio.run(scenario(False))
    assert stale == ["queued"] * 20
    assert fresh == ["completed"] * 20
    assert markers == 1  # twenty concurrent polls shared one marker
    # With the broker gone, a poll still answers at once, with what this gateway knows.
    stale, fresh, markers = asyncio.run(scenario(True))
    assert fresh == ["queued"] * 20 and markers == 0


def test_piston_picks_versions_as_pistons_semver_matcher() -> None:
    """Piston takes the highest runtime that ``semver.satisfies`` the requested version."""
    from app.gateway.piston import find_runtime

    registry = Registry.load(("python", "python-trixie"))
    picks = {
        "3.11.2": "3.11.2", "3.13.5": "3.13.5", "*": "3.13.5", "3": "3.13.5", "3.x": "3.13.5",
        "3.11": "3.11.2", "3.11.x": "3.11.2", "^3.11.0": "3.13.5", "~3.11": "3.11.2",
        ">=3.11.0 <3.12.0": "3.11.2", "3.11.2 || 3.13.5": "3.13.5", "<3.12": "3.11.2",
    }
    for requested, version in picks.items():
        chosen = find_runtime(registry, "python3", requested)
        assert chosen is not None and chosen.version == version, requested
    for unknown in ("3.10.0", "2.x", "^4", "banana", "3.11.2.1"):
        assert find_runtime(registry, "python", unknown) is None, unknown


def test_class_named_programs_take_their_public_class_name() -> None:
    java = Registry.load(("java",)).unit("java")
    assert java is not None and java.class_named
    assert java.main_file("public class Solution { public static void main(String[] a) {} }") == "Solution.java"
    assert java.main_file("class Helper {}\npublic final class App { }") == "App.java"
    assert java.main_file("// public class Fake\n/* class Nope */ class Real {}") == "Real.java"
    assert java.main_file('String s = "class X";') == "Main.java"
    scala = Registry.load(("scala",)).unit("scala")
    assert scala is not None and scala.class_named
    two = "object Helper { def twice(x: Int) = 2 * x }\nobject Solution { def main(args: Array[String]) = () }"
    assert scala.main_file(two) == "Solution.scala"
    assert scala.main_file("case class P(x: Int)\nobject Puzzle extends App { }") == "Puzzle.scala"
    assert scala.main_file("// object Fake extends App\nobject Real") == "Real.scala"
    assert scala.main_file("println(1)") == "Main.scala"
    python = Registry.load(("python",)).unit("python")
    assert python is not None and python.main_file("class Solution: pass") == "main.py"


def test_agent_job_applies_compile_limits_and_names_the_main_file() -> None:
    java = Registry.load(("java",)).unit("java")
    assert java is not None and java.compile is not None
    files = [{"name": "Solution.java", "content": "x"}]
    job = agent_job("j1", java, Limits(), files, "", (), compile_limits={"timeout_s": 1.5, "memory_mb": 100})
    build, _ = job["steps"]
    assert build["limits"]["timeout_s"] == 1.5 and build["memory_mb"] == 100
    assert build["limits"]["cpu_time_s"] == java.compile.timeout_s * 2  # not asked: the step's own
    assert job["env"]["MAIN_FILE"] == "Solution.java"
    python = Registry.load(("python",)).unit("python")
    assert python is not None
    plain = agent_job("j3", python, Limits(), [{"name": "main.py", "content": "x"}], "", ())
    assert "MAIN_FILE" not in plain["env"] and not any(k.startswith("RUNBOX") for k in plain["env"])
    default = agent_job("j2", java, Limits(), files, "", ())["steps"][0]
    assert default["limits"]["timeout_s"] == java.compile.timeout_s and default["memory_mb"] == java.compile.memory_mb


def test_agent_job_marks_the_first_step_warm() -> None:
    """TypeScript's and Java's compile and run steps, Python's run step are warm;
    tighter compile limits make the compile step cold, and a compiled language's run step is
    warm with its default limits only."""
    registry = Registry.load(("typescript", "python", "java"))
    typescript, python, java = registry.unit("typescript"), registry.unit("python"), registry.unit("java")
    assert typescript is not None and typescript.compile is not None and python is not None
    assert java is not None and java.compile is not None
    files = [{"name": "main.ts", "content": "x"}]
    build, run = agent_job("j1", typescript, typescript.default_limits, files, "", ())["steps"]
    assert build["warm"] == list(typescript.compile.warm_start) and run["warm"] == list(typescript.warm_start)
    build, run = agent_job("j1", typescript, typescript.default_limits.merged({"processes": 8}), files, "", ())["steps"]
    assert build["warm"] == list(typescript.compile.warm_start) and "warm" not in run
    interactive = agent_job("j2", typescript, Limits(), files, "", (), interactive=True, idle_s=5)["steps"][0]
    assert interactive["warm"] == list(typescript.compile.warm_start)
    tighter = agent_job("j3", typescript, Limits(), files, "", (), compile_limits={"timeout_s": 5})["steps"][0]
    assert "warm" not in tighter
    (only,) = agent_job("j4", python, Limits(), [{"name": "main.py", "content": "x"}], "", ())["steps"]
    assert only["warm"] == list(python.warm_start) and only["warm_fork"] is True
    # Under gVisor each step enters an IPC namespace of its own (a forked process makes its own),
    # and the zygote is one more process of the job's user.
    (gvisor,) = agent_job("j4", python, Limits(), [{"name": "main.py", "content": "x"}], "", (), "runsc")["steps"]
    assert gvisor["warm"] == list(python.warm_start) and gvisor["ipc_namespace"] and gvisor["warm_fork"] is True
    assert gvisor["nproc"] == Limits().processes + 2
    assert "warm_fork" not in run and "warm_fork" not in build  # only Python's stub can fork
    build, run = agent_job("j5", java, java.default_limits, [{"name": "Main.java", "content": "x"}], "", ())["steps"]
    assert build["warm"] == list(java.compile.warm_start) and run["warm"] == list(java.warm_start)
    other = java.default_limits.merged({"timeout_s": 6})
    _, run = agent_job("j5", java, other, [{"name": "Main.java", "content": "x"}], "", ())["steps"]
    assert "warm" not in run  # a JVM booted for the default limits cannot serve others
    build, _ = agent_job("j6", java, Limits(), [{"name": "Main.java", "content": "x"}], "", (),
                         compile_limits={"memory_mb": 100})["steps"]
    assert "warm" not in build


def test_judge0_ce_ids_served_and_not_served_are_as_the_readme_says() -> None:
    """Judge0 CE 1.13.1's ids are 43-89; the README names the eight runbox does not serve and why."""
    served = set(judge0_languages(Registry.load()))
    assert set(range(43, 90)) - served == {43, 44, 48, 52, 70, 84, 87, 89}
    assert served - set(range(43, 90)) == {91, 92, 93, 95}  # the Debian 13 toolchains


def test_only_a_dead_owner_in_this_pid_namespace_loses_its_sandboxes() -> None:
    import subprocess

    from app.executor.engine import _owner_gone, _process_space, owner_label

    space = _process_space()
    assert space is not None and owner_label() == f"{space}/{os.getpid()}"
    child = subprocess.Popen(["true"])
    child.wait()  # reaped: its pid names no process now
    dead = f"{space}/{child.pid}"
    assert _owner_gone(dead, space)
    assert not _owner_gone(f"{space}/{os.getpid()}", space), "alive"
    assert not _owner_gone(f"otherhost/1/{dead.rsplit('/', 1)[1]}", space), "another host's: not ours to judge"
    assert not _owner_gone(dead, None), "no procfs here: no owner is judged"
    assert not _owner_gone("", space), "unlabelled"


def test_http_writes_of_one_loop_turn_go_out_as_one_and_before_a_close() -> None:
    """A response's head and body (one turn of the loop) are one write; a close flushes first."""
    from types import SimpleNamespace

    from hypercorn.events import Closed, RawData

    from app.web.server import ServerConfig, ShapedH11Protocol

    sent: list[object] = []

    async def send(event: object) -> None:
        sent.append(event)

    async def main() -> None:
        protocol = ShapedH11Protocol(
            None, ServerConfig(16384, lambda reason: None), SimpleNamespace(event_class=asyncio.Event),  # type: ignore[arg-type]
            None, None, False, None, None, send,  # type: ignore[arg-type]
        )
        await protocol.send(RawData(data=b"HTTP/1.1 200 OK\r\n\r\n"))
        await protocol.send(RawData(data=b"body"))
        assert sent == []  # held until the end of this turn
        await asyncio.sleep(0)
        await protocol.send(RawData(data=b"0\r\n\r\n"))
        await protocol.send(Closed())
        await asyncio.sleep(0)

    asyncio.run(main())
    assert sent == [RawData(data=b"HTTP/1.1 200 OK\r\n\r\nbody"), RawData(data=b"0\r\n\r\n"), Closed()]
