"""A job as the executor receives it: its body, its attempt number and how to settle it.

Nothing of aio-pika goes further than this module: :func:`adapt` wraps each incoming message
into a :class:`Delivery`, as Dramatiq's worker gets a message proxy, and tests build one
around a fake settle function.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractQueue

from app.messages import Job

log = logging.getLogger(__name__)


class MalformedJob(ValueError):
    """A delivery on a job queue that is not a job runbox can read."""


@dataclass
class Consumer:
    channel: AbstractChannel
    queue: AbstractQueue
    tag: str
    name: str

    async def cancel(self) -> None:
        """Stop new deliveries; deliveries already handed out can still be acked."""
        with contextlib.suppress(Exception):
            await self.queue.cancel(self.tag)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.channel.close()


class Delivery:
    """One delivery of a job: its body, its attempt number and the three ways to settle it.

    Settling never raises: when the channel the delivery came on is gone (a reconnection),
    RabbitMQ has already put the job back, and the failed settle is only logged. This is the
    executor's whole view of RabbitMQ; tests build it around a fake settle function.
    """

    def __init__(
        self,
        body: bytes,
        attempt: int,
        settle: Callable[[str], Awaitable[None]],
        live: Callable[[], bool] = lambda: True,
    ) -> None:
        self.body = body
        self.attempt = attempt
        self._settle = settle
        self._live = live
        self.settled = ""

    def live(self) -> bool:
        """Whether the channel it came on is still open, so the job is still this consumer's.

        Once that channel closed, RabbitMQ has put the job back and may already have handed
        it to another executor: running it here too would run it twice.
        """
        return self._live()

    def job(self) -> Job:
        """The decoded job; :class:`MalformedJob` when the body is not one."""
        try:
            return Job.decode(self.body)
        except (ValueError, KeyError, TypeError) as exc:
            raise MalformedJob(f"not a job: {exc!r}") from exc

    async def ack(self) -> bool:
        """Done with: RabbitMQ forgets the job."""
        return await self._do("ack")

    async def requeue(self) -> bool:
        """Back to its queue for another attempt (counted towards the delivery limit)."""
        return await self._do("requeue")

    async def reject(self) -> bool:
        """Never again: straight to the dead-letter queue."""
        return await self._do("reject")

    async def _do(self, how: str) -> bool:
        if self.settled:
            return False
        self.settled = how
        try:
            await self._settle(how)
        except Exception as exc:  # the channel is gone; RabbitMQ redelivers what stays unacked
            log.warning("could not settle a delivery; RabbitMQ will redeliver it",
                        extra={"how": how, "error": repr(exc)})
            return False
        return True


DeliveryHandler = Callable[[Delivery], Awaitable[None]]


def adapt(handler: DeliveryHandler) -> Callable[[AbstractIncomingMessage], Awaitable[None]]:
    """Wrap an aio-pika message into a :class:`Delivery` for ``handler``."""

    async def on_message(message: AbstractIncomingMessage) -> None:
        async def settle(how: str) -> None:
            if how == "ack":
                await message.ack()
            else:
                await message.nack(requeue=how == "requeue")

        def live() -> bool:
            try:
                return not message.channel.is_closed
            except aio_pika.exceptions.ChannelInvalidStateError:  # raised once the channel closed
                return False

        await handler(Delivery(message.body, delivery_attempt(message), settle, live))

    return on_message


def delivery_attempt(message: AbstractIncomingMessage) -> int:
    """1 for a first delivery; quorum queues count earlier ones in ``x-delivery-count``.

    A message returned because its consumer's node was lost comes back *redelivered* but not
    counted; numbered 2 all the same, so its events do not collide with the first run's (a
    run's events are told apart by attempt and position). A second, uncounted return after a
    counted one still reuses a number: the event stream then shows both runs' output.
    """
    try:
        count = int(str((message.headers or {}).get("x-delivery-count", 0)))
    except (TypeError, ValueError):
        count = 0
    if count == 0 and message.redelivered:
        return 2
    return count + 1
