"""The gateway's view of the event stream: every job's events, in one order, for any client.

One reader per gateway follows the RabbitMQ stream from a little before the gateway started
(``events_lookback_s``) and folds each event into a per-job record kept in a bounded cache.
Since every gateway reads the same stream in the same order, every gateway numbers a job's
events the same way, so ``Last-Event-ID`` works whichever gateway a client reaches. A job
older than the cache is read back from the stream from the time embedded in its id.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import secrets
import time
from collections import OrderedDict, defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from app.broker import Broker, BrokerUnavailable, StreamReader
from app.config import Settings
from app.messages import DISCARDED, EVENT_NAMES, MARKER, Event, JobState, job_id_time
from app.metrics import Metrics

log = logging.getLogger(__name__)

# A job's "queued" event is appended within this long of the time in its id.
ID_CLOCK_SLACK_S = 2.0


@dataclass
class JobRecord:
    """Everything known about one job: its public events in stream order and its folded state."""

    state: JobState
    events: list[Event] = field(default_factory=list)
    keys: set[tuple[int, int]] = field(default_factory=set)
    extra: dict[str, dict[str, Any]] = field(default_factory=dict)  # non-contract events by name
    complete: bool = False  # the "queued" event was seen, so the history is whole
    discarded: bool = False
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def add(self, event: Event) -> bool:
        """Fold one event in; False when it is a duplicate or comes after the terminal one."""
        if event.key in self.keys or self.state.terminal:
            return False
        self.keys.add(event.key)
        if event.name == DISCARDED:
            self.discarded = True
        elif event.name == "queued":
            self.complete = True
        self.state.apply(event)
        if event.name in EVENT_NAMES:
            self.events.append(event)
        elif event.name != DISCARDED:
            # Data an API flavour keeps with its jobs (Judge0's submission fields): stored,
            # never streamed, so clients only ever see the contract's event names.
            self.extra[event.name] = event.data
        self.changed.set()
        self.changed = asyncio.Event()
        return True


class EventLog:
    """Follows the event stream and serves job records to the HTTP layer."""

    def __init__(self, settings: Settings, broker: Broker, metrics: Metrics) -> None:
        self.settings = settings
        self.broker = broker
        self.metrics = metrics
        self.reader = StreamReader(settings)
        self._records: OrderedDict[str, JobRecord] = OrderedDict()
        self._in_flight: dict[str, set[str]] = defaultdict(set)
        self._markers: dict[str, asyncio.Future[None]] = {}
        self._tail_start = time.time() - settings.events_lookback_s
        self._task: asyncio.Task[None] | None = None
        self._caught_up = asyncio.Event()

    # --- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        self._task = asyncio.create_task(self._tail(), name="event-log-tail")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    async def _tail(self) -> None:
        start = dt.datetime.fromtimestamp(self._tail_start, tz=dt.UTC)
        async for _, event in self.reader.read(start):
            self._apply(event)

    # --- folding -----------------------------------------------------------------------------
    def _apply(self, event: Event) -> JobRecord | None:
        if event.name == MARKER:
            waiter = self._markers.pop(event.job, None)
            if waiter is not None and not waiter.done():
                waiter.set_result(None)
            return None
        record = self._records.get(event.job)
        if record is None:
            record = JobRecord(JobState(event.job))
            self._records[event.job] = record
            self._evict()
        was_terminal = record.state.terminal
        if not record.add(event):
            return record
        identity = record.state.identity
        if record.discarded or record.state.terminal:
            if identity:
                self._in_flight[identity].discard(event.job)
                if not self._in_flight[identity]:
                    del self._in_flight[identity]
            if record.state.terminal and not was_terminal and record.state.created_at:
                self.metrics.submit_to_result.labels(record.state.language).observe(
                    max(0.0, (record.state.finished_at or time.time()) - record.state.created_at)
                )
        elif identity and record.complete:
            self._in_flight[identity].add(event.job)
        return record

    def _evict(self) -> None:
        excess = len(self._records) - self.settings.events_cache_jobs
        if excess <= 0:
            return
        for job_id in list(self._records):
            if excess <= 0:
                break
            if self._records[job_id].state.terminal or self._records[job_id].discarded:
                del self._records[job_id]
                excess -= 1

    def note_local(self, event: Event) -> None:
        """Fold an event this gateway just published, ahead of reading it back from the stream."""
        self._apply(event)

    def in_flight(self, identity: str) -> int:
        """Jobs of ``identity`` that are queued or running, deployment-wide."""
        return len(self._in_flight.get(identity, ()))

    # --- reading -----------------------------------------------------------------------------
    async def sync(self, timeout: float = 5.0) -> None:
        """Return once the tail has read everything appended to the stream before this call."""
        token = "marker:" + secrets.token_hex(8)
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._markers[token] = waiter
        try:
            await self.broker.publish_event(Event(job=token, name=MARKER, data={}))
            await asyncio.wait_for(waiter, timeout)
        except TimeoutError as exc:
            raise BrokerUnavailable("the event stream is not being read; try again shortly") from exc
        finally:
            self._markers.pop(token, None)

    async def record(self, job_id: str) -> JobRecord | None:
        """The job's record, or None when no such job was accepted."""
        created = job_id_time(job_id)
        now = time.time()
        if created is None or created > now + ID_CLOCK_SLACK_S or created < now - self.settings.events_max_age_s:
            return None
        record = self._records.get(job_id)
        if record is not None and record.complete:
            return None if record.discarded else record
        if created - ID_CLOCK_SLACK_S > self._tail_start:
            # The tail covers this job's whole life; it may just not have read it yet.
            await self.sync()
            record = self._records.get(job_id)
            return record if record is not None and record.complete and not record.discarded else None
        return await self._replay(job_id, created)

    async def _replay(self, job_id: str, created: float) -> JobRecord | None:
        """Read one old job's history back from the stream, up to a marker published now."""
        token = "marker:" + secrets.token_hex(8)
        replayed = JobRecord(JobState(job_id))
        start = dt.datetime.fromtimestamp(created - ID_CLOCK_SLACK_S, tz=dt.UTC)
        await self.broker.publish_event(Event(job=token, name=MARKER, data={}))
        try:
            async with asyncio.timeout(30):
                async for _, event in self.reader.read(start, resume=False):
                    if event.job == token:
                        break
                    if event.job == job_id:
                        replayed.add(event)
        except TimeoutError as exc:
            raise BrokerUnavailable("reading the job's history took too long") from exc
        if not replayed.complete or replayed.discarded:
            return None
        # Merge what the live tail folded meanwhile, then let the tail keep it current.
        current = self._records.get(job_id)
        if current is not None:
            for event in current.events:
                replayed.add(event)
        self._records[job_id] = replayed
        if current is not None:
            current.changed.set()
        return replayed

    async def follow(
        self, job_id: str, after: int = 0, idle_s: float = 15.0
    ) -> AsyncIterator[tuple[int, Event, JobState] | None]:
        """Yield (sequence number, event, state so far) from event ``after + 1`` to the terminal one.

        Yields None after ``idle_s`` without events, so a stream can send a keep-alive.
        """
        record = await self.record(job_id)
        if record is None:
            return
        sent = after
        while True:
            record = self._records.get(job_id, record)
            while sent < len(record.events):
                event = record.events[sent]
                sent += 1
                yield sent, event, record.state
            if record.state.terminal:
                return
            try:
                await asyncio.wait_for(record.changed.wait(), timeout=idle_s)
            except TimeoutError:
                yield None

    async def wait_terminal(self, job_id: str, timeout: float) -> JobState | None:
        """Wait until the job ends (or ``timeout``); its state, or None if unknown."""
        record = await self.record(job_id)
        if record is None:
            return None
        deadline = time.monotonic() + timeout
        while not record.state.terminal:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(record.changed.wait(), timeout=min(remaining, 15))
            record = self._records.get(job_id, record)
        return record.state
