"""The one place that publishes a submission: 202 only for a job RabbitMQ confirmed.

A flavour may attach data of its own (Judge0's submission attributes) as extra events; they
go first, so that they precede the job's terminal event in the stream (a record ignores
anything after it). Then the job's ``queued`` event and the job itself go out together on
one channel and are confirmed together. If the job is refused, it is marked discarded, so
no gateway keeps it as pending and its id reads as unknown.

Once a language's queue refused a job for its length, the next submissions in that language
are refused at once for ``FULL_HOLD_S``, before anything is published: a full queue holds far
more than that much work, and under a storm each refusal otherwise cost two publishes (the
job and its discard) and their confirms.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from app.broker import Broker, BrokerUnavailable, QueueFull
from app.config import Settings
from app.events import EventLog
from app.gateway.admission import Admission
from app.messages import DISCARDED, Event, Job
from app.metrics import Metrics
from app.web.errors import ApiError

log = logging.getLogger(__name__)

FULL_HOLD_S = 1.0


class Publisher:
    """Publishes jobs and their gateway events; adapters never touch the broker."""

    def __init__(
        self, settings: Settings, broker: Broker, events: EventLog, metrics: Metrics, admission: Admission
    ) -> None:
        self.settings = settings
        self.broker = broker
        self.events = events
        self.metrics = metrics
        self.admission = admission  # times each publish, to shed while confirms come late
        self._full_until: dict[tuple[str, str], float] = {}  # (language, version): monotonic time

    def _unavailable(self, exc: BaseException) -> ApiError:
        retry = {"Retry-After": str(self.settings.retry_after_s)}
        if isinstance(exc, QueueFull):
            return ApiError(
                503, "queue_full", f"This language's queue is full; try again in {self.settings.retry_after_s} s.",
                retry, reason="queue_full",
            )
        return ApiError(
            503, "broker_unavailable", "The job queue is unreachable; try again shortly.", retry,
            reason="broker_unavailable",
        )

    async def _discard(self, job: Job) -> None:
        discard = Event(job=job.id, name=DISCARDED, data={}, n=1)
        self.events.note_local(discard)
        try:
            await self.broker.publish_event(discard)
        except (BrokerUnavailable, QueueFull):
            log.warning("could not mark a refused job discarded", extra={"job": job.id})

    async def submit(self, job: Job, api: str, extra: tuple[Event, ...] = ()) -> None:
        """Store the job durably or raise a 503; never a 202 for a job that was not stored."""
        queue = (job.language, job.version)
        if self._full_until.get(queue, 0.0) > time.monotonic():
            raise self._unavailable(QueueFull(f"{job.language} refused a job within {FULL_HOLD_S} s"))
        with self.admission.publishing():
            await self._store(job, api, extra)

    async def _store(self, job: Job, api: str, extra: tuple[Event, ...]) -> None:
        for event in extra:
            try:
                await self.broker.publish_event(event)
            except (BrokerUnavailable, QueueFull) as exc:
                raise self._unavailable(exc) from exc
            self.events.note_local(event)
        queued = Event(
            job=job.id,
            name="queued",
            data={"language": job.language, "created_at": job.created_at, "identity": job.identity,
                  "interactive": job.interactive},
        )
        # Both go out on one channel, the event first, and are confirmed together: the stream
        # holds the "queued" event before any executor can see the job, without a second
        # round trip on every submission.
        event_sent, job_sent = await asyncio.gather(
            self.broker.publish_event(queued), self.broker.publish_job(job), return_exceptions=True
        )
        if isinstance(event_sent, BaseException) and not isinstance(job_sent, BaseException):
            # Stored but invisible to clients: the system will run it, the client is told
            # to retry; a 503 for a stored job can cost a duplicate run, never a lost one.
            log.warning("job stored but its queued event was not", extra={"job": job.id})
            job_sent = event_sent
        for outcome in (event_sent, job_sent):
            if isinstance(outcome, BaseException) and not isinstance(outcome, BrokerUnavailable | QueueFull):
                with contextlib.suppress(Exception):
                    await self._discard(job)
                raise outcome
        if not isinstance(event_sent, BaseException):
            self.events.note_local(queued)
        if isinstance(job_sent, BrokerUnavailable | QueueFull):
            if isinstance(job_sent, QueueFull):
                self._full_until[(job.language, job.version)] = time.monotonic() + FULL_HOLD_S
            await self._discard(job)
            raise self._unavailable(job_sent) from job_sent
        self.metrics.jobs_submitted.labels(job.language, api).inc()
        log.info("job queued", extra={"job": job.id, "language": job.language, "api": api})
