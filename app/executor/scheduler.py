"""The executor: takes jobs from RabbitMQ as capacity allows and runs them in warm sandboxes.

Event-driven: a delivery (job arrived) waits for a run slot, then for a warm container;
a finished job frees both and the pool refills in the background. Each language has its
own queue and consumer whose prefetch equals its pool's maximum, so a backlog waits durably
in RabbitMQ, never in this process; run slots are handed out round-robin between
languages, so a flood in one language does not starve the others.

Ack or nack is decided in one place, :func:`verdict`, applied by :meth:`Executor._settle`
for every delivery whatever happened to it: a job is acked only after its terminal event is
confirmed by RabbitMQ. Any failure of the system (the Docker engine, the sandbox, RabbitMQ,
or a bug) returns the job to its queue for another attempt; once more of its runs failed
than the delivery limit allows (runs counted from the stream, :mod:`app.executor.runs`) it
ends ``failed``. RabbitMQ's own, higher return limit dead-letters a job no executor could
even begin, and :meth:`Executor._dead_letter` ends it ``failed``. A delivery
that is not a job is rejected straight to the dead letters. A program's own crash is a
result, never retried. A delivery whose channel closed before its run began is no longer
this executor's (RabbitMQ has put it back) and is neither run nor settled here. The broker
hands over a :class:`~app.deliveries.Delivery`; no aio-pika type appears here.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import os
import time
from typing import Any

import aiormq
import docker
from aio_pika.exceptions import AMQPException

from app.broker import Broker, BrokerUnavailable
from app.config import Settings
from app.deliveries import Consumer, Delivery, MalformedJob
from app.executor.engine import ENGINE_ERRORS, EngineWatch, remove_orphans
from app.executor.jobrun import JobRun
from app.executor.pool import Budget, Pool
from app.executor.runs import runs_begun
from app.executor.sandbox import Sandbox, SandboxError, Uids, agent_job, usable_agent_root
from app.executor.slots import FairSlots
from app.interactive import StdinRouter
from app.judging import Judgement
from app.languages import Language, Registry
from app.messages import Job, failed_state, terminal_state
from app.metrics import Metrics
from app.result import Result
from app.stream import StreamReader

log = logging.getLogger(__name__)

DEADLINE_SLACK_S = 10.0
# How long a job waits for RabbitMQ to take events again, before its run or before it is
# handed back: a job requeued at once while the broker recovers is taken again at once, and
# each round trip spends one of its deliveries (seen in the soak: 22 attempts in 2 s, then
# dead-lettered).
BROKER_WAIT_S = 30.0
RUNS_COUNT_TIMEOUT_S = 20.0
CASE_SLACK_S = 3.0  # per judged case: the agent's kill grace and reaping, beyond the case's own limit


class StaleDelivery(RuntimeError):
    """The delivery's channel closed before its run: RabbitMQ has the job back."""


class Verdict(enum.Enum):
    """How a delivery is settled."""

    ACK = "ack"  # done: the terminal event is confirmed
    REQUEUE = "requeue"  # the system failed: another attempt (bounded by the delivery limit)
    REJECT = "reject"  # never runnable: straight to the dead letters
    FORGET = "forget"  # no longer ours (its channel closed): RabbitMQ hands it out again


def failure_kind(error: BaseException) -> str:
    """What failed, for the log: the sandbox, the Docker engine, RabbitMQ, the message, or runbox itself."""
    if isinstance(error, MalformedJob):
        return "message"
    if isinstance(error, StaleDelivery):
        return "stale"
    if isinstance(error, SandboxError):
        return "sandbox"
    if isinstance(error, (BrokerUnavailable, aiormq.exceptions.AMQPError, AMQPException)):
        return "broker"
    if isinstance(error, ENGINE_ERRORS):
        return "engine"
    return "bug"


def given_up(runs: int) -> str:
    """The error of a job whose runs the system failed more often than the delivery limit allows."""
    return (
        f"the job was attempted {runs} times and the system failed to run it each time "
        "(an executor, its sandbox, the Docker engine or RabbitMQ failed); it was not retried again"
    )


def verdict(error: BaseException | None) -> Verdict:
    """The one decision: ack a finished job, reject a malformed one, requeue after any failure.

    Requeueing even an unexpected error is safe: RabbitMQ counts deliveries, so a job that
    keeps failing is dead-lettered after ``RUNBOX_DELIVERY_LIMIT`` and ends ``failed``.
    """
    if error is None:
        return Verdict.ACK
    if isinstance(error, MalformedJob):
        return Verdict.REJECT
    if isinstance(error, StaleDelivery):
        return Verdict.FORGET
    return Verdict.REQUEUE


class Executor:
    """Consumes every language's queue and the dead-letter queue."""

    def __init__(
        self,
        settings: Settings,
        registry: Registry,
        broker: Broker,
        metrics: Metrics,
        client: docker.DockerClient | None = None,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.broker = broker
        self.metrics = metrics
        # version pinned: "auto" would ask the engine at construction, which may be down.
        self.client = client or docker.DockerClient(
            base_url=settings.docker_url, version="1.41", timeout=60, max_pool_size=32
        )
        self.engine = EngineWatch(
            self.client,
            {settings.engine_runtime(settings.runtime_for(lang.name)) for lang in registry},
            settings.engine_check_s,
        )
        self.budget = Budget(settings.memory_budget, Uids(settings.sandbox_uid_base, settings.sandbox_uid_count))
        self.pools: dict[str, Pool] = {}
        self.slots = FairSlots(settings.running_slots)
        self.stdin = StdinRouter(settings, broker)
        self.reader = StreamReader(settings)
        self.consumers: list[Consumer] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._draining = False
        self.consuming = False

    async def start(self) -> None:
        """Clean up after dead predecessors, start the pools, then consume every language's queue."""
        await self.engine.check()
        if self.engine.problem is None:
            try:
                removed = await asyncio.to_thread(
                    remove_orphans, self.client, self.settings.executor_id, self.settings.agent_socket_dir
                )
            except ENGINE_ERRORS as exc:  # only housekeeping: never a reason not to start
                log.warning("could not look for leftover sandboxes", extra={"error": repr(exc)})
            else:
                if removed:
                    log.info("removed leftover sandboxes", extra={"count": removed})
        self.metrics.executor_slots.set(self.slots.capacity)
        agent_root = await asyncio.to_thread(usable_agent_root, self.settings.agent_socket_dir)
        for language in self.registry:
            pool = Pool(language, self.settings, self.client, self.metrics, self.budget, agent_root)
            self.pools[language.key] = pool
            self.engine.on_recovery(pool.wake)
            pool.start()
        self.engine.start()
        await self.broker.wait_connected()
        await self.stdin.start()
        for language in self.registry:
            await self.broker.declare_jobs(language.key)
            pool = self.pools[language.key]
            self.consumers.append(
                await self.broker.consume_jobs(language.key, pool.maximum, self._on_delivery(language))
            )
        self.consumers.append(await self.broker.consume_dead(self._dead_letter))
        self.consumers.append(await self.broker.announce())
        self.consuming = True
        log.info(
            "executor consuming",
            extra={"languages": self.registry.unit_keys(), "slots": self.slots.capacity,
                   "executor": self.settings.executor_id},
        )

    def unready(self) -> tuple[str, str] | None:
        """None when this executor can run jobs now; else a (code, reason) for ``/readyz``."""
        if self.engine.problem is not None:
            code = "runtime_missing" if "no runtime" in self.engine.problem else "engine_unavailable"
            return code, f"Executor {self.settings.executor_id}: {self.engine.problem}."
        if not self.consuming:
            return "starting", f"Executor {self.settings.executor_id} is not consuming jobs yet."
        cold = sorted(name for name, pool in self.pools.items() if not pool.warm())
        if cold:
            return "warming", f"The executor is still warming its sandbox pools ({', '.join(cold)})."
        return None

    @property
    def ready(self) -> bool:
        """Consuming, the engine usable, and every language has a warm container (or is busy)."""
        return self.unready() is None


    async def drain(self, timeout: float) -> None:
        """Stop taking jobs, let running ones finish (or hand them back), remove every container."""
        self._draining = True
        self.consuming = False
        for consumer in self.consumers:
            await consumer.cancel()
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=timeout)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        for consumer in self.consumers:
            await consumer.close()
        await self.stdin.close()
        await asyncio.gather(*(p.close() for p in self.pools.values()), return_exceptions=True)
        await self.engine.stop()
        with contextlib.suppress(*ENGINE_ERRORS):
            await asyncio.to_thread(remove_orphans, self.client, self.settings.executor_id)
        self.client.close()

    # --- deliveries ----------------------------------------------------------------------------
    def _on_delivery(self, language: Language):  # type: ignore[no-untyped-def]
        async def on_delivery(delivery: Delivery) -> None:
            if self._draining:
                await delivery.requeue()
                return
            task = asyncio.create_task(self._handle(language, delivery))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        return on_delivery

    async def _handle(self, language: Language, delivery: Delivery) -> None:
        """Run one delivery, then settle it: whatever happens ends in :meth:`_settle`."""
        run: JobRun | None = None
        try:
            job = delivery.job()
            run = JobRun(self.broker, job, delivery.attempt, self.settings.event_linger_ms / 1000)
            runs = await self._runs_spent(job, delivery.attempt)
            if runs is not None:
                state = failed_state(job, given_up(runs))
                await run.finish(state)
                self.metrics.dead_letters.labels(job.language).inc()
                log.error("job given up", extra={"job": job.id, "language": job.language, "runs": runs})
            else:
                state = await self._process(language, job, run, delivery)
        except asyncio.CancelledError:
            # Draining ran out of time, or the loop is closing: someone else runs it.
            await asyncio.shield(self._settle(delivery, run, asyncio.CancelledError()))
            raise
        except Exception as exc:  # every failure is decided by verdict(), none kills the task silently
            await self._settle(delivery, run, exc)
            return
        if await self._settle(delivery, run, None):
            self._count(language, state)

    async def _runs_spent(self, job: Job, attempt: int) -> int | None:
        """How many runs the system failed, once they exceed the delivery limit; else None.

        Only a job handed out more often than the limit allows is counted (see
        :mod:`app.executor.runs`): most of those hand-outs were RabbitMQ putting it back.
        """
        if attempt <= self.settings.delivery_limit + 1:
            return None
        runs = await runs_begun(self.broker, self.reader, job.id, job.created_at, RUNS_COUNT_TIMEOUT_S)
        return runs if runs > self.settings.delivery_limit else None

    async def _settle(self, delivery: Delivery, run: JobRun | None, error: BaseException | None) -> bool:
        """Apply :func:`verdict` to a delivery: the only place a job is acked or nacked."""
        decision = verdict(error)
        if error is not None:
            if run is not None:
                run.abandon()
            if decision is Verdict.REQUEUE and failure_kind(error) == "broker":
                # Handed back only once RabbitMQ can take this job's next attempt's events,
                # and only if still ours: a closed channel's jobs are back in the queue already.
                await self.broker.wait_publishable(BROKER_WAIT_S)
                if not delivery.live():
                    decision = Verdict.FORGET
            job_id = run.job.id if run is not None else None
            log.log(
                logging.WARNING if decision is Verdict.FORGET else logging.ERROR,
                "job not finished; %s",
                {Verdict.REQUEUE: "returned to its queue", Verdict.REJECT: "rejected to the dead letters",
                 Verdict.FORGET: "its channel closed, so RabbitMQ hands it out again"}[decision],
                extra={"job": job_id, "attempt": delivery.attempt, "failure": failure_kind(error),
                       "error": repr(error)[:500]},
            )
        if decision is Verdict.FORGET:
            return False
        if decision is Verdict.ACK:
            return await delivery.ack()
        if decision is Verdict.REJECT:
            return await delivery.reject()
        return await delivery.requeue()

    async def _process(self, language: Language, job: Job, run: JobRun, delivery: Delivery) -> dict[str, Any]:
        """Wait for a run slot and a warm container, run the job, and confirm its terminal event.

        A job is run only while its delivery is still this executor's: right after a
        reconnection, deliveries arrive before events can be published, so the run waits for
        RabbitMQ rather than failing and spending a delivery; and a delivery whose channel
        closed meanwhile (while it waited for RabbitMQ, a slot or a container) is not run,
        nor is its result published if the channel closed during the run, because RabbitMQ
        has put it back for another executor.
        """
        name = language.key
        if run.attempt > 1:
            self.metrics.redeliveries.labels(name).inc()
        if not self.broker.connected and not await self.broker.wait_publishable(BROKER_WAIT_S):
            raise BrokerUnavailable("RabbitMQ is not reachable")
        self.metrics.executor_waiting.labels(name).inc()
        waiting = True
        try:
            await self.slots.acquire(name)
            try:
                sandbox = await self.pools[name].acquire(job.limits)
                if not delivery.live():
                    self.pools[name].release(sandbox, reusable=True)  # untouched: no job ran in it
                    raise StaleDelivery("the delivery's channel closed before its run")
                self.metrics.executor_waiting.labels(name).dec()
                waiting = False
                self.metrics.executor_running.labels(name).inc()
                try:
                    state = await self._run(language, job, run, sandbox)
                finally:
                    self.metrics.executor_running.labels(name).dec()
            finally:
                self.slots.release()
            if not delivery.live():
                # Already handed to another executor: a result from here could end the job
                # before that run's, interleaving two runs' events.
                raise StaleDelivery("the delivery's channel closed during its run")
            await run.finish(state)
        finally:
            if waiting:
                self.metrics.executor_waiting.labels(name).dec()
        return state

    async def _run(self, language: Language, job: Job, run: JobRun, sandbox: Sandbox) -> dict[str, Any]:
        """Drive the sandbox through the job; return the terminal state to publish."""
        pool = self.pools[language.key]
        files = [{"name": language.main_file(job.source), "content": job.source}]
        files += [{"name": f.name, "content": f.content} for f in job.files]
        run_time = job.limits.timeout_s
        judgement: Judgement | None = None
        if job.tests:
            judgement = Judgement([t.expected_stdout for t in job.tests])
            run_time = min(self.settings.judge_max_total_s, len(job.tests) * job.limits.timeout_s)
        payload = agent_job(
            job.id, language, job.limits, files, job.stdin, job.args, pool.runtime,
            cases=[t.stdin for t in job.tests] if job.tests else None, budget_s=run_time,
            interactive=job.interactive, idle_s=self.settings.interactive_idle_s,
            compile_options=job.compile_options, stack_kb=job.stack_kb,
            compile_limits=job.compile_limits,
        )
        deadline = run_time + (language.compile.timeout_s if language.compile else 0) + DEADLINE_SLACK_S
        deadline += CASE_SLACK_S * len(job.tests)
        result: dict[str, Any] = {}
        stdout: list[str] = []
        stderr: list[str] = []
        # An interactive job's id is routed here before its "started" event, so a client that
        # saw the job start can send it input through any gateway.
        try:
            async with contextlib.AsyncExitStack() as routed:
                if job.interactive:
                    await routed.enter_async_context(self.stdin.attach(job.id, sandbox))
                started = time.time()
                self.metrics.queue_wait.labels(language.key).observe(max(0.0, started - job.created_at))
                run.emit("started", {"attempt": run.attempt, "started_at": started})
                if run.attempt > 1:
                    # A redelivered run is counted (see _runs_spent) even if what it runs
                    # kills this executor: its start is stored before the program begins.
                    await run.confirm()
                if self.settings.fault_crash_marker and self.settings.fault_crash_marker in job.source:
                    log.error("fault injection: executor crashing", extra={"job": job.id})
                    os._exit(86)
                log.info("job started", extra={"job": job.id, "language": language.key, "attempt": run.attempt})
                status, reusable = await self._drive(
                    sandbox, payload, deadline, run, result, stdout, stderr, judgement
                )
        except BaseException:
            pool.release(sandbox, reusable=False)
            raise
        if judgement is not None:
            if status in ("failed", "compile_error"):
                result.update(tests=[], verdict=None)
            else:
                judgement.fill(result)
        pool.release(sandbox, reusable=reusable)
        result["stdout"] = "" if status == "compile_error" else "".join(stdout)
        result["stderr"] = "".join(stderr)
        outcome = Result.from_dict(result)  # lenient: an agent's malformed field takes its default
        finished = time.time()
        self.metrics.run_duration.labels(language.key).observe(outcome.duration_ms / 1000)
        log.info("job finished", extra={"job": job.id, "status": status, "attempt": run.attempt})
        return terminal_state(job, status, outcome, started, finished)

    async def _drive(
        self,
        sandbox: Sandbox,
        payload: dict[str, Any],
        deadline: float,
        run: JobRun,
        result: dict[str, Any],
        stdout: list[str],
        stderr: list[str],
        judgement: Judgement | None,
    ) -> tuple[str, bool]:
        """Relay the agent's messages into events and ``result``; the status and whether to reuse."""
        status = "failed"
        reusable = False
        try:
            async for msg in sandbox.run(payload, deadline):
                kind = msg.get("t")
                if kind == "case" and judgement is not None:
                    run.emit("test", judgement.add(msg))
                elif kind == "out":
                    (stdout if msg["s"] == "stdout" else stderr).append(msg["d"])
                    run.emit(msg["s"], {"data": msg["d"], "attempt": run.attempt})
                elif kind == "compile":
                    result["compile_output"] = msg.get("output", "")
                    run.emit("compile", {"output": result["compile_output"], "exit_code": msg.get("exit_code"),
                                         "status": msg.get("status", "completed"), "attempt": run.attempt})
                elif kind == "done":
                    status = msg.get("status", "failed")
                    for key in ("exit_code", "signal", "duration_ms", "cpu_ms", "memory_peak_kb", "limit", "error"):
                        if key in msg:
                            result[key] = msg[key]
                    if "truncated" in msg:
                        result["truncated"] = msg["truncated"]
                    reusable = status != "failed"
        except SandboxError:
            if await self._oom_killed(sandbox):
                result["limit"], result["error"] = "memory", None
                return "memory_exceeded", False
            raise
        return status, reusable

    @staticmethod
    async def _oom_killed(sandbox: Sandbox) -> bool:
        """Whether the memory cgroup killed the container; False when the engine cannot say."""
        try:
            return await sandbox.oom_killed()
        except Exception:  # the job is retried elsewhere either way
            return False

    def _count(self, language: Language, state: dict[str, Any]) -> None:
        self.metrics.jobs_finished.labels(language.key, state["status"]).inc()
        result = Result.from_dict(state["result"])
        if result.limit:
            self.metrics.limit_hits.labels(language.key, result.limit).inc()
        for cut in (result.truncated.stdout, result.truncated.stderr):
            if cut and result.limit != "output":
                self.metrics.limit_hits.labels(language.key, "output").inc()

    async def _dead_letter(self, delivery: Delivery) -> None:
        """A job RabbitMQ gave up on after the delivery limit: end it ``failed`` for its client."""
        try:
            job = delivery.job()
        except MalformedJob:
            await delivery.ack()  # nothing to tell anyone about
            return
        state = failed_state(
            job,
            f"the job was attempted {self.settings.return_limit + 1} times and no executor could finish it "
            "(RabbitMQ handed it out that often: executors failed or lost their connection); "
            "it was not retried again",
        )
        run = JobRun(self.broker, job, 0)
        try:
            await run.finish(state)
        except Exception as exc:  # RabbitMQ failed: the dead letter stays and comes back
            await self._settle(delivery, run, exc)
            return
        if await self._settle(delivery, run, None):
            self.metrics.dead_letters.labels(job.language).inc()
            self.metrics.jobs_finished.labels(job.language, "failed").inc()
            log.error("job dead-lettered", extra={"job": job.id, "language": job.language})
