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
import time
from collections import OrderedDict, defaultdict
from collections.abc import AsyncIterator, Iterator
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import Any

import aio_pika

from app.amqp import connect_plain
from app.broker import Broker, BrokerUnavailable
from app.config import Settings
from app.messages import (
    DISCARDED,
    EVENT_NAMES,
    ID_CLOCK_SLACK_S,
    MARKER,
    Event,
    JobState,
    job_id_time,
    job_id_valid,
    new_marker,
)
from app.metrics import Metrics
from app.stream import StreamReader

log = logging.getLogger(__name__)

# How long a read of a running job waits to catch up with the stream before it answers with
# what this gateway already knows (a broker too slow or gone must not stall every poll).
FRESH_WAIT_S = 1.0
# How long the tail may take to read back a marker this gateway appended before the stream
# counts as not being read.
SYNC_TIMEOUT_S = 5.0


class ExpiredJob(LookupError):
    """The id is one of ours, but the job's history is older than the stream keeps."""


class ReplayBusy(RuntimeError):
    """An old job's history could not be read back within the replay deadline."""


# What an event costs in memory beyond the text it carries (objects, dict, keys), roughly.
EVENT_OVERHEAD_BYTES = 400
OUTPUT_EVENTS = ("stdout", "stderr")


def text_bytes(data: Any) -> int:
    """Characters of text in an event's data, one level deep (what dominates its size)."""
    if isinstance(data, str):
        return len(data)
    if isinstance(data, dict):
        return sum(text_bytes(v) if isinstance(v, str | dict) else 8 for v in data.values())
    return 8


@dataclass
class JobRecord:
    """Everything known about one job: its public events in stream order and its folded state.

    Output is kept once: while the job runs, its text lives in the ``stdout``/``stderr``
    events; when the terminal result arrives holding the same text whole, each chunk event
    of that attempt is replaced by a span into the result (``{"span": [start, end]}``), and
    readers materialize chunks with :meth:`chunk_text`. ``size`` estimates the bytes held.
    """

    state: JobState
    events: list[Event] = field(default_factory=list)
    keys: set[tuple[int, int]] = field(default_factory=set)
    extra: dict[str, dict[str, Any]] = field(default_factory=dict)  # non-contract events by name
    complete: bool = False  # the "queued" event was seen, so the history is whole
    discarded: bool = False
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    size: int = 0

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
        self.size += EVENT_OVERHEAD_BYTES + text_bytes(event.data)
        if event.name in EVENT_NAMES:
            self.events.append(event)
        elif event.name != DISCARDED:
            # Data an API flavour keeps with its jobs (Judge0's submission fields): stored,
            # never streamed, so clients only ever see the contract's event names.
            self.extra[event.name] = event.data
        if event.name == "result":
            self._share_output()
        self.changed.set()
        self.changed = asyncio.Event()
        return True

    def _share_output(self) -> None:
        """Point the final attempt's chunk events into the result's text instead of holding a copy."""
        result = self.state.result
        if result is None:
            return
        attempt = self.state.attempt
        whole = {"stdout": result.stdout, "stderr": result.stderr}
        positions = {"stdout": 0, "stderr": 0}
        spans: list[tuple[int, tuple[int, int]]] = []
        for index, event in enumerate(self.events):
            if event.name not in OUTPUT_EVENTS or event.attempt != attempt:
                continue
            text = event.data.get("data")
            if not isinstance(text, str):
                return
            start = positions[event.name]
            end = start + len(text)
            if whole[event.name][start:end] != text:
                return  # the result is not these chunks joined (a partial history): keep them
            positions[event.name] = end
            spans.append((index, (start, end)))
        if positions["stdout"] != len(result.stdout) or positions["stderr"] != len(result.stderr):
            return
        for index, span in spans:
            event = self.events[index]
            self.size -= len(event.data.get("data", ""))
            data = {k: v for k, v in event.data.items() if k != "data"}
            data["span"] = list(span)
            self.events[index] = Event(event.job, event.name, data, event.attempt, event.n, event.ts)

    def chunk_text(self, event: Event) -> str:
        """The text of a ``stdout``/``stderr`` event, whether held or shared with the result."""
        span = event.data.get("span")
        if span is not None and self.state.result is not None:
            whole = self.state.result.stdout if event.name == "stdout" else self.state.result.stderr
            return whole[span[0] : span[1]]
        return str(event.data.get("data", ""))

    def resolve(self, event: Event) -> Event:
        """``event`` as it was published: a shared chunk gets its text back."""
        if "span" not in event.data:
            return event
        data = {k: v for k, v in event.data.items() if k != "span"}
        data["data"] = self.chunk_text(event)
        return Event(event.job, event.name, data, event.attempt, event.n, event.ts)

    def chunks(self, attempt: int) -> Iterator[tuple[str, str]]:
        """The (stream, text) output chunks of one attempt, in the order they were written."""
        for event in self.events:
            if event.name in OUTPUT_EVENTS and event.attempt == attempt:
                yield event.name, self.chunk_text(event)


class EventLog:
    """Follows the event stream and serves job records to the HTTP layer."""

    def __init__(self, settings: Settings, broker: Broker, metrics: Metrics) -> None:
        self.settings = settings
        self.broker = broker
        self.metrics = metrics
        self.reader = StreamReader(settings)
        self._records: OrderedDict[str, JobRecord] = OrderedDict()
        self._bytes = 0
        self._cap = settings.events_cache_mb * 1024 * 1024
        self._in_flight: dict[str, set[str]] = defaultdict(set)
        self._markers: dict[str, asyncio.Future[None]] = {}
        self._next_sync: asyncio.Future[None] | None = None
        self._sync_turn = asyncio.Lock()
        self._tail_start = time.time() - settings.events_lookback_s
        self._task: asyncio.Task[None] | None = None
        self._replays = asyncio.Semaphore(settings.max_replays)
        self._replay_connection: aio_pika.abc.AbstractConnection | None = None
        self._replay_connecting = asyncio.Lock()
        self._replaying: dict[str, asyncio.Future[JobRecord | None]] = {}

    # --- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        self._task = asyncio.create_task(self._tail(), name="event-log-tail")

    async def stop(self) -> None:
        if self._replay_connection is not None:
            with contextlib.suppress(Exception):
                await self._replay_connection.close()
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
        was_terminal = record.state.terminal
        before = record.size
        if not record.add(event):
            return record
        self._bytes += record.size - before
        if self._bytes > self._cap:
            self._evict()
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

    def _store(self, job_id: str, record: JobRecord) -> None:
        """Keep ``record`` (replacing any other for the job) within the byte bound."""
        old = self._records.pop(job_id, None)
        if old is not None:
            self._bytes -= old.size
        self._records[job_id] = record
        self._bytes += record.size
        if self._bytes > self._cap:
            self._evict()

    def _evict(self) -> None:
        """Forget least recently used records until the cache is within its byte bound.

        Finished jobs go first; if they are not enough, running ones too (a record that is
        asked for again is read back from the stream). Bytes bound, not job counts: ten
        thousand jobs printing 64 KiB each must not cost more than the operator configured.
        """
        target = self._cap * 9 // 10  # free a little more than needed, so eviction is not per event
        for only_finished in (True, False):
            for job_id in list(self._records):
                if self._bytes <= target:
                    return
                record = self._records[job_id]
                if only_finished and not (record.state.terminal or record.discarded):
                    continue
                del self._records[job_id]
                self._bytes -= record.size

    @property
    def cached_bytes(self) -> int:
        """The estimated bytes of job history this gateway holds."""
        return self._bytes

    def records(self) -> list[JobRecord]:
        """Every record the cache holds now (a snapshot; Judge0's listing and statistics read it)."""
        return list(self._records.values())

    def note_local(self, event: Event) -> None:
        """Fold an event this gateway just published, ahead of reading it back from the stream."""
        self._apply(event)

    def current(self, record: JobRecord) -> JobRecord:
        """The live record of ``record``'s job (a replay may have replaced it meanwhile)."""
        return self._records.get(record.state.id, record)

    def in_flight(self, identity: str) -> AbstractSet[str]:
        """The ids of ``identity``'s jobs that are queued or running, deployment-wide (a live view)."""
        return self._in_flight.get(identity, frozenset())

    # --- reading -----------------------------------------------------------------------------
    async def sync(self) -> None:
        """Return once the tail has read everything appended to the stream before this call.

        Callers share markers: everyone who arrives while the next marker is not yet
        published waits for that one, so a storm of polls costs one marker per round trip
        to the broker, not one per request.
        """
        pending = self._next_sync
        if pending is None or pending.done():
            pending = self._next_sync = asyncio.ensure_future(self._sync_round())
            # Retrieved here, so a round whose callers all went away is not logged as unhandled.
            pending.add_done_callback(lambda f: f.cancelled() or f.exception())
        await asyncio.shield(pending)

    async def _sync_round(self) -> None:
        async with self._sync_turn:  # one marker in flight at a time
            # From here on, arrivals need a marker published after them: the next round's.
            self._next_sync = None
            marker = new_marker()
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._markers[marker.job] = waiter
            try:
                await self.broker.publish_event(marker)
                await asyncio.wait_for(waiter, SYNC_TIMEOUT_S)
            except TimeoutError as exc:
                raise BrokerUnavailable("the event stream is not being read; try again shortly") from exc
            finally:
                self._markers.pop(marker.job, None)

    async def record(self, job_id: str, fresh: bool = False) -> JobRecord | None:
        """The job's record, or None when no such job was accepted.

        An id whose check digits do not match, or from the future, is None at once, without
        reading anything; one older than the stream's retention raises :class:`ExpiredJob`.
        With ``fresh``, a job not yet ended here is first caught up with the stream, so a
        client never reads an older state from this gateway than another gateway showed it
        (best effort: after :data:`FRESH_WAIT_S`, or with the broker gone, it answers with
        what it has).
        """
        if not job_id_valid(job_id, self.settings.job_id_key):
            return None
        created = job_id_time(job_id)
        now = time.time()
        if created is None or created > now + ID_CLOCK_SLACK_S:
            return None
        if created < now - self.settings.events_max_age_s:
            raise ExpiredJob(job_id)
        record = self._records.get(job_id)
        if record is not None and record.complete:
            self._records.move_to_end(job_id)  # recently used: evicted last
            if fresh and not record.state.terminal and not record.discarded:
                with contextlib.suppress(BrokerUnavailable, TimeoutError):
                    async with asyncio.timeout(FRESH_WAIT_S):
                        await self.sync()
                record = self._records.get(job_id, record)
            return None if record.discarded else record
        if created - ID_CLOCK_SLACK_S > self._tail_start:
            # The tail covers this job's whole life; it may just not have read it yet.
            await self.sync()
            record = self._records.get(job_id)
            return record if record is not None and record.complete and not record.discarded else None
        pending = self._replaying.get(job_id)
        if pending is not None:  # someone is already reading this job back: share the answer
            return await asyncio.shield(pending)
        future: asyncio.Future[JobRecord | None] = asyncio.get_running_loop().create_future()
        self._replaying[job_id] = future
        try:
            async with asyncio.timeout(self.settings.replay_timeout_s):
                async with self._replays:
                    record = await self._replay(job_id, created)
        except TimeoutError as exc:
            future.set_exception(ReplayBusy(job_id))
            raise ReplayBusy(job_id) from exc
        except BaseException as exc:
            future.set_exception(exc)
            raise
        else:
            future.set_result(record)
            return record
        finally:
            self._replaying.pop(job_id, None)
            if future.done() and not future.cancelled():
                future.exception()  # retrieved, so a failure nobody shared is not logged as unhandled

    async def _replay_conn(self) -> aio_pika.abc.AbstractConnection:
        """The one connection every replay of this gateway reads on (each on a channel of its own)."""
        async with self._replay_connecting:
            if self._replay_connection is None or self._replay_connection.is_closed:
                try:
                    self._replay_connection = await connect_plain(
                        self.settings.amqp_urls, name="runbox-replays", timeout=5
                    )
                except Exception as exc:
                    raise BrokerUnavailable(f"cannot read the event stream: {exc!r}") from exc
            return self._replay_connection

    async def _replay(self, job_id: str, created: float) -> JobRecord | None:
        """Read one old job's history back from the stream, up to a marker published now."""
        replayed = JobRecord(JobState(job_id))
        connection = await self._replay_conn()
        asked = time.time()
        first_ts: float | None = None  # of the first event the stream still holds from then on
        async for event in self.reader.until_now(self.broker, created, connection):
            if first_ts is None:
                first_ts = event.ts
            if event.job == job_id:
                replayed.add(event)
        if not replayed.complete and (asked if first_ts is None else first_ts) > created + ID_CLOCK_SLACK_S:
            # The stream no longer starts before this job: its history was cut by the stream's
            # size bound, not never written.
            raise ExpiredJob(job_id)
        if not replayed.complete or replayed.discarded:
            return None
        # Merge what the live tail folded meanwhile, then let the tail keep it current.
        current = self._records.get(job_id)
        if current is not None:
            for event in current.events:
                replayed.add(event)
        self._store(job_id, replayed)
        if current is not None:
            current.changed.set()
        return replayed

    async def follow(
        self, job_id: str, after: int = 0, idle_s: float = 15.0
    ) -> AsyncIterator[list[tuple[int, Event, JobState]] | None]:
        """Yield lists of (sequence number, event, state so far) from event ``after + 1`` to the terminal one.

        Each list holds every event known when it is yielded, so a client can be sent them in
        one write. Yields None after ``idle_s`` without events, so a stream can send a keep-alive.
        """
        record = await self.record(job_id)
        if record is None:
            return
        sent = after
        while True:
            record = self._records.get(job_id, record)
            if sent < len(record.events):
                batch = [(seq, record.resolve(record.events[seq - 1]), record.state)
                         for seq in range(sent + 1, len(record.events) + 1)]
                sent = len(record.events)
                yield batch
            if record.state.terminal:
                return
            try:
                # asyncio.timeout, not wait_for: no task per wait (a stream waits a few times per job).
                async with asyncio.timeout(idle_s):
                    await record.changed.wait()
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
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(remaining, 15)):
                    await record.changed.wait()
            record = self._records.get(job_id, record)
        return record.state
