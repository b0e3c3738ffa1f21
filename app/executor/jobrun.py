"""One attempt of a job as the stream sees it: its events, gathered, published and confirmed in order."""

from __future__ import annotations

import asyncio
from typing import Any

from app.broker import Broker
from app.callbacks import CallbackTask
from app.messages import Event, Job

# How long a job's ``started`` may wait for the job's next event, to go out in the same
# message. Under load a hello world's output comes later than the linger after its start, so
# most jobs cost two stream messages (one more publish, confirm, delivery to every gateway and
# SSE write); a program silent for longer is shown started this late. Not for interactive
# jobs: their clients wait for it before they send input.
STARTED_HOLD_S = 0.25


class JobRun:
    """Publishes one attempt's events in order, confirming them together before the result.

    Events are gathered for up to ``linger_s`` and published together as one message: a
    short job's ``started``, output and ``result`` then cost one publish and one confirm
    instead of one each, while a long job's output still streams every ``linger_s``. A
    ``started`` alone waits up to ``STARTED_HOLD_S`` for the next event (unless the job is
    interactive, or ``linger_s`` is 0: every event at once).
    """

    def __init__(self, broker: Broker, job: Job, attempt: int, linger_s: float = 0.0) -> None:
        self.broker = broker
        self.job = job
        self.attempt = attempt
        self.linger_s = linger_s
        self.n = 0
        self._pending: list[asyncio.Task[None]] = []
        self._batch: list[Event] = []
        self._timer: asyncio.TimerHandle | None = None

    def emit(self, name: str, data: dict[str, Any]) -> None:
        """Publish without waiting; order holds on the channel and errors surface in :meth:`finish`."""
        self.n += 1
        self._batch.append(Event(job=self.job.id, name=name, data=data, attempt=self.attempt, n=self.n))
        if self.linger_s <= 0:
            self._flush()
            return
        hold = self.linger_s
        if name == "started" and not self.job.interactive:
            hold = max(hold, STARTED_HOLD_S)
        loop = asyncio.get_running_loop()
        due = loop.time() + hold
        if self._timer is not None:
            if self._timer.when() <= due:
                return
            self._timer.cancel()  # an event that may not wait as long as the held ones
        self._timer = loop.call_at(due, self._flush)

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._batch:
            batch, self._batch = self._batch, []
            self._pending.append(asyncio.create_task(self.broker.publish_events(batch)))

    async def finish(self, state: dict[str, Any]) -> None:
        """Publish the terminal event (and the job's callback task) once every earlier event is confirmed.

        The result waits for the earlier confirms: across a reconnection (a RabbitMQ node
        lost) an earlier event can be lost while a later publish, on the new connection,
        succeeds; a result stored without its output would end the job for every client with
        that output missing. Seen in tests/test_cluster.py before this wait.
        """
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        await asyncio.gather(*self._pending)
        self.n += 1
        self._batch.append(Event(job=self.job.id, name="result", data=state, attempt=self.attempt, n=self.n))
        # Events still gathered go out in the result's own message: stored together or not at all.
        batch, self._batch = self._batch, []
        await asyncio.gather(self.broker.publish_events(batch), publish_callback(self.broker, self.job))

    async def confirm(self) -> None:
        """Publish what is gathered now and wait until RabbitMQ confirmed every event so far."""
        self._flush()
        await asyncio.gather(*self._pending)

    def abandon(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._batch = []
        for task in self._pending:
            task.cancel()


async def publish_callback(broker: Broker, job: Job) -> None:
    """Queue the job's callback, if it asked for one, for a gateway to deliver."""
    if job.callback_url:
        await broker.publish_callback(job.id, CallbackTask.for_job(job).encode())
