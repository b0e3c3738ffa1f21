"""Warm sandbox containers per language, kept ready ahead of demand.

A pool keeps ``target`` containers in all: idle, busy, being scrubbed after a job, or
warming. A job takes an idle one at once; after the job the agent scrubs the container and
it returns to the pool, unless it has served ``container_max_uses`` jobs, its scrub left a
trace, or it broke, in which case it is removed and its successor is warmed at once, in the
background, before a job needs it. A container being scrubbed is not replaced: it is back in
a few milliseconds, while a start costs the engine far more CPU than a job. The target
adapts: a pool with demand grows toward its maximum (one spare beyond the most jobs it ran or
had waiting at once), one left idle for ``SHRINK_AFTER_S`` shrinks to its minimum, and all
pools together stay within the executor's memory budget.

Warming never gives up: whatever a start raises (the engine down, a missing image or runtime),
the pool gives the memory back, waits with exponential backoff (at most ``RETRY_MAX_S``) and
tries again, for as long as the process lives; :meth:`Pool.wake` (called when the engine
comes back) cuts the wait short.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Coroutine
from typing import Any

import docker

from app.config import Settings
from app.executor.engine import ENGINE_ERRORS, OWNER_LABEL, owner_label
from app.executor.sandbox import Sandbox, SandboxError, Uids, container_memory_mb, container_options
from app.languages import Language, Limits
from app.metrics import Metrics

log = logging.getLogger(__name__)

SHRINK_AFTER_S = 120.0
HEALTH_INTERVAL_S = 5.0
WARMING_PER_POOL = 2
SPARE = 1  # containers a pool with demand keeps beyond the most it had in use or awaited at once
CONCURRENT_STARTS = 4  # container starts in flight per executor; more only queue up in dockerd
RETRY_MAX_S = 10.0  # longest pause between warming attempts while starts fail


def retry_delay(failures: int) -> float:
    """Seconds to wait after ``failures`` failed starts in a row: 0.5, 1, 2, ... up to ``RETRY_MAX_S``."""
    return min(RETRY_MAX_S, 0.5 * 2.0 ** min(max(failures, 1) - 1, 10))


class Budget:
    """Memory, container starts and sandbox uids shared by all pools of an executor.

    A pool warms a container only if it fits. When a pool with waiting jobs finds the budget
    spent, idle containers of other pools are given up for it (those above their pool's
    minimum first), so idle languages cannot starve a busy one. A job with limits of its own
    gets its container through the same budget and the same limit on concurrent starts.
    """

    def __init__(self, total_mb: int, uids: Uids) -> None:
        self.total_mb = total_mb
        self.used_mb = 0
        self.pools: list[Pool] = []
        self.starts = asyncio.Semaphore(CONCURRENT_STARTS)
        self.uids = uids
        self.freed = asyncio.Event()

    async def reserve(self, mb: int, requester: Pool) -> None:
        """Wait until ``mb`` fits, giving up idle containers (other pools' first) meanwhile."""
        while self.used_mb + mb > self.total_mb and self.used_mb > 0:
            if not self.reclaim(requester):
                requester.shed_one()
            self.freed.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    await self.freed.wait()
        self.used_mb += mb

    def reclaim(self, requester: Pool) -> bool:
        """Ask another pool to drop one idle container; True when one is on its way out."""
        others = [p for p in self.pools if p is not requester and p.idle and not p.waiters]
        others.sort(key=lambda p: (len(p.idle) <= p.minimum, -len(p.idle)))
        return any(pool.shed_one() for pool in others)

    def take(self, mb: int, requester: Pool | None = None) -> bool:
        if self.used_mb + mb > self.total_mb:
            return False
        # Every language gets its first warm container before any gets a second.
        if (
            requester is not None
            and requester.size_now() > 0
            and not requester.waiters
            and any(p.size_now() == 0 and p.target > 0 for p in self.pools)
        ):
            return False
        self.used_mb += mb
        return True

    def give(self, mb: int) -> None:
        self.used_mb = max(0, self.used_mb - mb)
        self.freed.set()


class Pool:
    """The warm containers of one language."""

    def __init__(
        self,
        language: Language,
        settings: Settings,
        client: docker.DockerClient,
        metrics: Metrics,
        budget: Budget,
        agent_root: str = "",
    ) -> None:
        self.language = language
        self.agent_root = agent_root  # usable_agent_root(RUNBOX_AGENT_SOCKET_DIR); "": attach streams
        self.settings = settings
        self.client = client
        self.metrics = metrics
        self.budget = budget
        budget.pools.append(self)
        self.minimum, self.size, self.maximum = settings.pool_sizes(language.key)
        self.target = self.size
        self.limits = language.default_limits
        self.runtime = settings.runtime_for(language.key)
        self.memory_mb = container_memory_mb(language, self.limits)
        self.idle: deque[Sandbox] = deque()
        self.busy = 0
        self.warming = 0
        self.recycling = 0  # given back, being scrubbed: idle again in a few milliseconds
        self.waiters = 0
        self._failures = 0
        self._retry_at = 0.0
        self._last_demand = time.monotonic()
        self._peak_busy = 0
        self._yield_until = 0.0
        self._wakeup = asyncio.Event()
        self._available = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = False

    # --- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        self._task = asyncio.create_task(self._maintain(), name=f"pool-{self.language.key}")

    async def close(self) -> None:
        self._closing = True
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        while self.idle:
            await self._remove(self.idle.popleft())

    def _report(self) -> None:
        name = self.language.key
        self.metrics.pool_containers.labels(name, "idle").set(len(self.idle))
        # A container being scrubbed after its job is still busy to an operator.
        self.metrics.pool_containers.labels(name, "busy").set(self.busy + self.recycling)
        self.metrics.pool_containers.labels(name, "warming").set(self.warming)
        self.metrics.pool_target.labels(name).set(self.target)
        self.metrics.pool_max.labels(name).set(self.maximum)

    # --- warming -----------------------------------------------------------------------------
    def _options(self, limits: Limits, uid: int) -> dict[str, object]:
        options = container_options(
            self.language,
            limits,
            runtime=self.runtime,
            engine_runtime=self.settings.engine_runtime(self.runtime),
            executor_id=self.settings.executor_id,
            cpus=self.settings.sandbox_cpus,
            uid=uid,
            agent_root=self.agent_root,
        )
        # Host, pid namespace and pid of this process: lets a successor beside it remove what it leaves behind.
        owner = owner_label()
        if owner is not None:
            options["labels"] = {**options["labels"], OWNER_LABEL: owner}
        return options

    async def _new_sandbox(self, limits: Limits) -> Sandbox:
        uid = self.budget.uids.take()
        sandbox = Sandbox(self.client, self.language, limits, self._options(limits, uid))
        began = time.monotonic()
        try:
            await sandbox.start()
        except SandboxError:
            self.budget.uids.give(uid)
            self.metrics.container_events.labels(self.language.key, "failed").inc()
            raise
        self.metrics.container_start.labels(self.language.key).observe(time.monotonic() - began)
        self.metrics.container_events.labels(self.language.key, "created").inc()
        return sandbox

    async def _warm_one(self) -> None:
        try:
            async with self.budget.starts:
                sandbox = await self._new_sandbox(self.limits)
        except Exception as exc:  # any failure only delays the next attempt
            self._failures += 1
            self._retry_at = time.monotonic() + retry_delay(self._failures)
            self.budget.give(self.memory_mb)
            log.error(
                "warming failed; will retry",
                extra={"language": self.language.key, "error": repr(exc)[:500], "failures": self._failures,
                       "in_s": retry_delay(self._failures)},
            )
            return
        finally:
            self.warming -= 1
            self._wakeup.set()
        self._failures = 0
        await self._offer(sandbox)

    def wake(self) -> None:
        """Retry warming now (the engine is back), instead of after the current backoff."""
        self._retry_at = 0.0
        self._wakeup.set()

    async def _offer(self, sandbox: Sandbox) -> None:
        async with self._available:
            self.idle.append(sandbox)
            self._available.notify()
        self._report()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _adapt(self) -> None:
        now = time.monotonic()
        if self.busy or self.waiters:
            self._last_demand = now
        self._peak_busy = max(self._peak_busy, self.busy + self.waiters)
        if now - self._last_demand > SHRINK_AFTER_S:
            self.target = self.minimum
            self._peak_busy = 0
        else:
            self.target = max(self.minimum, min(self.maximum, max(self.size, self._peak_busy + SPARE)))
        if now < self._yield_until and not self.waiters:
            self.target = min(self.target, max(self.minimum, self.size_now() - self.warming))

    async def _maintain(self) -> None:
        """Keep the pool at its target; replace dead containers; shrink when idle. Never ends early."""
        last_health = time.monotonic()
        while not self._closing:
            try:
                last_health = await self._maintain_once(last_health)
            except Exception:  # a bug here must not leave the language without containers for good
                log.exception("pool maintenance failed; continuing", extra={"language": self.language.key})
                await asyncio.sleep(1.0)

    async def _maintain_once(self, last_health: float) -> float:
        """One round of maintenance; returns when the last health check ran."""
        self._adapt()
        # After failures, one start at a time probes the engine, once the backoff has passed.
        if time.monotonic() >= self._retry_at and (self._failures == 0 or self.warming == 0):
            want = min(self.target, self.maximum) - self.size_now()
            # Jobs waiting beyond what is idle, being scrubbed or starting get a start each, up to the maximum.
            want = max(want, min(self.waiters - self.warming - self.recycling, self.maximum - self.size_now()))
            # A few at a time per pool, so that at start every language gets its first
            # containers early instead of one language taking the engine for seconds.
            want = min(want, max(WARMING_PER_POOL, self.waiters) - self.warming)
            for _ in range(max(0, want)):
                if not self.budget.take(self.memory_mb, self):
                    if self.waiters:
                        self.budget.reclaim(self)
                    break
                self.warming += 1
                self._spawn(self._warm_one())
        while self.idle and self.size_now() > self.target and self.waiters == 0:
            # The one returned last: jobs take the one idle longest, whose warm interpreter is ready.
            self._spawn(self._remove(self.idle.pop()))
        if time.monotonic() - last_health > HEALTH_INTERVAL_S:
            last_health = time.monotonic()
            for sandbox in [s for s in self.idle if not s.alive]:
                self.idle.remove(sandbox)
                self.metrics.container_events.labels(self.language.key, "failed").inc()
                self._spawn(self._remove(sandbox))
        self._report()
        self._wakeup.clear()
        with contextlib.suppress(TimeoutError):
            # Woken after every job: asyncio.timeout makes no task per wake-up, as wait_for would.
            async with asyncio.timeout(1.0):
                await self._wakeup.wait()
        return last_health

    def shed_one(self) -> bool:
        """Remove one idle container to free memory for another pool."""
        if not self.idle:
            return False
        # Stay smaller for a while, or this pool would re-warm straight into the freed memory.
        self._yield_until = time.monotonic() + SHRINK_AFTER_S / 4
        self._spawn(self._remove(self.idle.pop()))  # the least ready, as when shrinking
        self.metrics.container_events.labels(self.language.key, "recycled").inc()
        return True

    # --- lending -----------------------------------------------------------------------------
    def fits(self, limits: Limits) -> bool:
        """Whether a warm container (sized for the default limits) can take these limits."""
        return limits.memory_mb == self.limits.memory_mb and limits.processes == self.limits.processes

    async def acquire(self, limits: Limits) -> Sandbox:
        """A started, clean sandbox for a job with ``limits``; warm when the limits allow."""
        if not self.fits(limits):
            # Memory and process caps are fixed at container creation: a job asking for
            # other values gets a fresh container of its own, removed after the job. It is
            # reserved in the executor's memory budget and started under the same limit on
            # concurrent starts as a warm container, so such jobs cannot overcommit the host.
            mb = container_memory_mb(self.language, limits)
            self.busy += 1
            try:
                await self.budget.reserve(mb, self)
                try:
                    async with self.budget.starts:
                        sandbox = await self._new_sandbox(limits)
                except BaseException:
                    self.budget.give(mb)
                    raise
            except BaseException:
                self.busy -= 1
                raise
            sandbox.dirty = True
            return sandbox
        self.waiters += 1
        self._wakeup.set()
        try:
            async with self._available:
                while True:
                    while self.idle:
                        # The container idle longest: its agent has had the most time to start
                        # the next job's warm interpreter since its last scrub (the one just
                        # returned is often still starting it, which a job would wait for).
                        sandbox = self.idle.popleft()
                        if sandbox.alive:
                            self.busy += 1
                            return sandbox
                        self._spawn(self._remove(sandbox))
                    await self._available.wait()
        finally:
            self.waiters -= 1
            self._wakeup.set()
            self._report()

    def release(self, sandbox: Sandbox, reusable: bool) -> None:
        """Give a sandbox back after its job; it rejoins the pool once its scrub is confirmed.

        One that will not serve again is replaced at once: the pool warms its successor in
        the background while it is removed, before a job needs it.
        """
        self.busy -= 1
        keep = (
            reusable
            and not sandbox.dirty
            and sandbox.uses < self.settings.container_max_uses
            and sandbox.alive
            and not self._closing
            and self.size_now() < self.target
        )
        if keep:
            self.recycling += 1
        self._spawn(self._recycle(sandbox, keep))
        self._wakeup.set()

    async def _recycle(self, sandbox: Sandbox, keep: bool) -> None:
        if keep:
            try:
                clean = await sandbox.wait_ready()
            finally:
                self.recycling -= 1
            if clean:
                self.metrics.container_events.labels(self.language.key, "reused").inc()
                await self._offer(sandbox)
                return
        self.metrics.container_events.labels(self.language.key, "recycled").inc()
        await self._remove(sandbox)

    async def _remove(self, sandbox: Sandbox) -> None:
        with contextlib.suppress(*ENGINE_ERRORS):  # the budget must come back even if the engine is gone
            await sandbox.destroy()
        self.budget.uids.give(sandbox.uid)
        self.budget.give(container_memory_mb(self.language, sandbox.limits))
        self.metrics.container_events.labels(self.language.key, "removed").inc()
        self._wakeup.set()
        self._report()

    def size_now(self) -> int:
        """Containers this pool has or is starting."""
        return len(self.idle) + self.busy + self.warming + self.recycling

    def warm(self) -> bool:
        """Whether the pool can take a job at once (or has no target to keep)."""
        return bool(self.idle) or self.busy > 0 or self.target == 0


