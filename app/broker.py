"""RabbitMQ through aio-pika: the only path between gateways and executors.

Topology (declared identically by every process, so any may start first):
- ``<prefix>.jobs.<language>``: a durable quorum queue per language, with a delivery limit,
  a length limit that refuses publishes when full (the gateway answers 503), and
  at-least-once dead-lettering to ``<prefix>.jobs.dead``.
- ``<prefix>.events``: a stream (a replayable log) holding every job's events; gateways read
  it from any point in time, so a late or reconnecting client gets the whole story from
  whichever gateway it reaches.
- ``<prefix>.stdin``: a direct exchange; an executor binds the id of each interactive job it
  runs to a queue of its own, so input posted to any gateway reaches that job (or is
  returned unroutable when the job is not running).
- ``<prefix>.callbacks``: a quorum queue of callback deliveries, consumed by gateways; a
  failed delivery waits in ``<prefix>.callbacks.delay.<ms>`` (a queue whose messages expire
  after that long and dead-letter back to the callbacks queue) before its next attempt.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aio_pika
import aiormq
from aio_pika.abc import (
    AbstractChannel,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustConnection,
)

from app.config import Settings
from app.messages import Event, Job
from app.metrics import Metrics

log = logging.getLogger(__name__)


class BrokerUnavailable(RuntimeError):
    """RabbitMQ cannot be reached or did not confirm in time; nothing was stored."""


class QueueFull(RuntimeError):
    """RabbitMQ refused the job because its language's queue is at its length limit."""


class NotRouted(RuntimeError):
    """No queue is bound for the message's routing key (an interactive job not running here)."""


@dataclass(frozen=True)
class QueueStats:
    messages: int
    consumers: int


class Names:
    """Queue and stream names derived from one prefix."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.events = f"{prefix}.events"
        self.dead = f"{prefix}.jobs.dead"
        # Executors consume this never-published classic queue to announce themselves:
        # a quorum queue's consumer count can lag after a consumer dies abruptly.
        self.presence = f"{prefix}.executors"
        self.stdin = f"{prefix}.stdin"
        self.callbacks = f"{prefix}.callbacks"

    def callback_delay(self, seconds: float) -> str:
        return f"{self.prefix}.callbacks.delay.{round(seconds * 1000)}"

    def jobs(self, language: str) -> str:
        return f"{self.prefix}.jobs.{language}"


class Broker:
    """A self-healing connection with one confirmed publishing channel.

    ``connect_robust`` restores channels, queues and consumers after a broker restart; while
    the connection is down, publishes fail fast with :class:`BrokerUnavailable` instead of
    waiting, so the gateway can answer 503 at once.
    """

    def __init__(self, settings: Settings, metrics: Metrics, role: str) -> None:
        self.settings = settings
        self.metrics = metrics
        self.role = role
        self.names = Names(settings.amqp_prefix)
        self._connection: AbstractRobustConnection | None = None
        self._publish_channel: AbstractChannel | None = None
        self._stats_channel: AbstractChannel | None = None
        self._declared: set[str] = set()
        self._connected = asyncio.Event()

    # --- lifecycle ---------------------------------------------------------------------------
    async def connect(self, attempts: int | None = None) -> None:
        """Connect, retrying with backoff; ``attempts=None`` retries until cancelled."""
        delay = 0.2
        tried = 0
        while True:
            tried += 1
            try:
                connection = await aio_pika.connect_robust(
                    self.settings.amqp_url, timeout=5, client_properties={"connection_name": f"runbox-{self.role}"}
                )
                break
            except (TimeoutError, OSError, aiormq.exceptions.AMQPError) as exc:
                if attempts is not None and tried >= attempts:
                    raise BrokerUnavailable(f"cannot connect to RabbitMQ: {exc}") from exc
                log.warning("broker connect failed, retrying", extra={"error": str(exc), "in_s": delay})
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        connection.reconnect_callbacks.add(self._on_reconnect)
        connection.close_callbacks.add(self._on_close)
        self._connection = connection
        self._publish_channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        await self.declare_topology(self._publish_channel)
        self._connected.set()
        self.metrics.broker_up.labels(self.role).set(1)
        log.info("broker connected", extra={"role": self.role})

    def _on_reconnect(self, *_: Any) -> None:
        self._connected.set()
        self.metrics.broker_reconnects.labels(self.role).inc()
        self.metrics.broker_up.labels(self.role).set(1)
        log.info("broker reconnected", extra={"role": self.role})

    def _on_close(self, *_: Any) -> None:
        self._connected.clear()
        self.metrics.broker_up.labels(self.role).set(0)
        log.warning("broker connection lost", extra={"role": self.role})

    @property
    def connected(self) -> bool:
        return (
            self._connection is not None
            and not self._connection.is_closed
            and self._connected.is_set()
            and self._publish_channel is not None
            and not self._publish_channel.is_closed
        )

    async def wait_connected(self) -> None:
        await self._connected.wait()

    async def close(self) -> None:
        if self._connection is not None:
            with contextlib.suppress(Exception):
                await self._connection.close()
        self._connected.clear()
        self.metrics.broker_up.labels(self.role).set(0)

    def _require(self) -> AbstractChannel:
        if not self.connected or self._publish_channel is None:
            raise BrokerUnavailable("RabbitMQ is not reachable")
        return self._publish_channel

    # --- topology ------------------------------------------------------------------------------
    def job_queue_arguments(self) -> dict[str, Any]:
        return {
            "x-queue-type": "quorum",
            "x-delivery-limit": self.settings.delivery_limit,
            "x-max-length": self.settings.queue_max_length,
            "x-overflow": "reject-publish",
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": self.names.dead,
            "x-dead-letter-strategy": "at-least-once",
        }

    async def declare_topology(self, channel: AbstractChannel) -> None:
        await channel.declare_queue(self.names.presence, durable=True, arguments={"x-queue-type": "classic"})
        await channel.declare_queue(
            self.names.dead, durable=True, arguments={"x-queue-type": "quorum"}
        )
        await channel.declare_queue(
            self.names.events,
            durable=True,
            arguments={
                "x-queue-type": "stream",
                "x-max-age": self.settings.events_max_age,
                # A size bound beside the age: a flood of output cannot fill the broker's disk.
                "x-max-length-bytes": self.settings.events_max_mb * 1024 * 1024,
                "x-stream-max-segment-size-bytes": 8_000_000,
            },
        )
        await self.declare_callbacks(channel)
        await self.declare_stdin(channel)

    async def declare_callbacks(self, channel: AbstractChannel) -> AbstractQueue:
        return await channel.declare_queue(self.names.callbacks, durable=True, arguments={"x-queue-type": "quorum"})

    async def declare_callback_delays(self, channel: AbstractChannel, delays: tuple[float, ...]) -> None:
        """One queue per wait: a single queue with per-message expiry would hold a short wait
        behind a long one, since messages only expire at the head of a queue."""
        for seconds in set(delays):
            await channel.declare_queue(
                self.names.callback_delay(seconds),
                durable=True,
                arguments={
                    "x-queue-type": "classic",
                    "x-message-ttl": round(seconds * 1000),
                    "x-dead-letter-exchange": "",
                    "x-dead-letter-routing-key": self.names.callbacks,
                },
            )

    async def declare_stdin(self, channel: AbstractChannel) -> aio_pika.abc.AbstractExchange:
        return await channel.declare_exchange(self.names.stdin, aio_pika.ExchangeType.DIRECT, durable=True)

    async def declare_jobs(self, language: str, channel: AbstractChannel | None = None) -> AbstractQueue:
        channel = channel or self._require()
        return await channel.declare_queue(
            self.names.jobs(language), durable=True, arguments=self.job_queue_arguments()
        )

    async def executors(self) -> int:
        """How many executors are connected and consuming, from the presence queue.

        RabbitMQ leaves consumers on the asking connection out of a passive declare's count,
        so an executor in this very process is added by the caller.
        """
        stats = await self._passive(self.names.presence)
        return stats.consumers

    async def announce(self) -> Consumer:
        """Consume the presence queue for as long as this executor's connection lives."""

        async def never_called(message: AbstractIncomingMessage) -> None:
            await message.reject(requeue=False)

        async def declare(ch: AbstractChannel) -> AbstractQueue:
            return await ch.declare_queue(self.names.presence, durable=True, arguments={"x-queue-type": "classic"})

        return await self.consume(self.names.presence, 1, never_called, declare)

    async def queue_stats(self, language: str) -> QueueStats:
        """Backlog and consumer count of a language's queue (a passive declare)."""
        return await self._passive(self.names.jobs(language))

    async def _passive(self, name: str) -> QueueStats:
        self._require()
        assert self._connection is not None
        # A passive declare of a missing queue closes its channel: keep that off the publisher's.
        if self._stats_channel is None or self._stats_channel.is_closed:
            self._stats_channel = await self._connection.channel(publisher_confirms=False)
        try:
            queue = await self._stats_channel.declare_queue(name, passive=True)
        except aiormq.exceptions.ChannelNotFoundEntity:
            self._stats_channel = None
            return QueueStats(0, 0)
        result = queue.declaration_result
        return QueueStats(result.message_count or 0, result.consumer_count or 0)

    # --- publishing ----------------------------------------------------------------------------
    async def _publish(self, message: aio_pika.Message, routing_key: str) -> None:
        channel = self._require()
        try:
            await channel.default_exchange.publish(
                message, routing_key=routing_key, mandatory=True, timeout=self.settings.publish_timeout_s
            )
        except aiormq.exceptions.DeliveryError as exc:
            raise QueueFull(f"{routing_key} refused the message") from exc
        except aio_pika.exceptions.PublishError as exc:
            raise BrokerUnavailable(f"{routing_key} is not routable: {exc}") from exc
        except (
            TimeoutError,
            aiormq.exceptions.AMQPError,
            aio_pika.exceptions.AMQPException,
            ConnectionError,
            RuntimeError,
        ) as exc:
            raise BrokerUnavailable(f"RabbitMQ did not confirm: {exc!r}") from exc

    async def publish_job(self, job: Job) -> None:
        """Store a job durably; returns only once RabbitMQ confirmed it."""
        body = job.encode()
        await self._publish(
            aio_pika.Message(
                body,
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                message_id=job.id,
                content_type="application/json",
                headers={"job": job.id, "language": job.language},
            ),
            self.names.jobs(job.language),
        )

    async def publish_callback(self, task: bytes, queue: str | None = None) -> None:
        """Store a callback delivery (in the callbacks queue, or a delay queue) once confirmed."""
        await self._publish(
            aio_pika.Message(task, delivery_mode=aio_pika.DeliveryMode.PERSISTENT, content_type="application/json"),
            queue or self.names.callbacks,
        )

    async def publish_stdin(self, job_id: str, body: bytes, reply_to: str, correlation_id: str) -> None:
        """Send input to whichever executor runs ``job_id``; :class:`NotRouted` when none does."""
        channel = self._require()
        try:
            exchange = await channel.get_exchange(self.names.stdin, ensure=False)
            await exchange.publish(
                aio_pika.Message(body, reply_to=reply_to, correlation_id=correlation_id,
                                 content_type="application/json"),
                routing_key=job_id,
                mandatory=True,
                timeout=self.settings.publish_timeout_s,
            )
        except aio_pika.exceptions.PublishError as exc:
            raise NotRouted(job_id) from exc
        except (
            TimeoutError,
            aiormq.exceptions.AMQPError,
            aio_pika.exceptions.AMQPException,
            ConnectionError,
            RuntimeError,
        ) as exc:
            raise BrokerUnavailable(f"RabbitMQ did not confirm: {exc!r}") from exc

    async def channel(self, prefetch: int = 0) -> AbstractChannel:
        """A channel of its own (for a consumer), restored with the connection."""
        if self._connection is None:
            raise BrokerUnavailable("not connected")
        channel = await self._connection.channel(publisher_confirms=False)
        if prefetch:
            await channel.set_qos(prefetch_count=prefetch)
        return channel

    async def publish_event(self, event: Event) -> None:
        """Append one event to the event stream and wait for RabbitMQ's confirm."""
        await self._publish(
            aio_pika.Message(
                event.encode(),
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                content_type="application/json",
                headers={"job": event.job},
            ),
            self.names.events,
        )
        self.metrics.events_published.labels(self.role).inc()

    # --- consuming ----------------------------------------------------------------------------
    async def consume(
        self,
        queue_name: str,
        prefetch: int,
        callback: Callable[[AbstractIncomingMessage], Awaitable[None]],
        declare: Callable[[AbstractChannel], Awaitable[AbstractQueue]],
    ) -> Consumer:
        """Consume a queue on a channel of its own with manual acks and bounded prefetch."""
        if self._connection is None:
            raise BrokerUnavailable("not connected")
        channel = await self._connection.channel(publisher_confirms=False)
        await channel.set_qos(prefetch_count=prefetch)
        queue = await declare(channel)
        tag = await queue.consume(callback, no_ack=False)
        return Consumer(channel, queue, tag, queue_name)

    async def consume_jobs(
        self, language: str, prefetch: int, callback: Callable[[AbstractIncomingMessage], Awaitable[None]]
    ) -> Consumer:
        return await self.consume(
            self.names.jobs(language), prefetch, callback, lambda ch: self.declare_jobs(language, ch)
        )

    async def consume_dead(
        self, callback: Callable[[AbstractIncomingMessage], Awaitable[None]]
    ) -> Consumer:
        async def declare(ch: AbstractChannel) -> AbstractQueue:
            return await ch.declare_queue(self.names.dead, durable=True, arguments={"x-queue-type": "quorum"})

        return await self.consume(self.names.dead, 4, callback, declare)


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


def delivery_attempt(message: AbstractIncomingMessage) -> int:
    """1 for a first delivery; quorum queues count earlier ones in ``x-delivery-count``."""
    count = (message.headers or {}).get("x-delivery-count", 0)
    try:
        return int(str(count)) + 1
    except (TypeError, ValueError):
        return 1


class StreamReader:
    """Reads the event stream from a point in time on a plain connection of its own.

    Stream consumers are managed here rather than by ``connect_robust``, because a restored
    consumer would restart at its original offset; after a reconnect this one resumes right
    after the last offset it saw.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.names = Names(settings.amqp_prefix)

    async def read(
        self, start: dt.datetime | int | str, prefetch: int = 500, resume: bool = True
    ) -> AsyncIterator[tuple[int, Event]]:
        """Yield (offset, event) from ``start`` onwards, forever; reconnects when ``resume``."""
        offset: dt.datetime | int | str = start
        delay = 0.2
        while True:
            connection: aio_pika.abc.AbstractConnection | None = None
            try:
                connection = await aio_pika.connect(self.settings.amqp_url, timeout=5)
                channel = await connection.channel()
                await channel.set_qos(prefetch_count=prefetch)
                queue = await channel.declare_queue(self.names.events, passive=True)
                async with queue.iterator(arguments={"x-stream-offset": offset}) as it:
                    delay = 0.2
                    async for message in it:
                        position = int(str((message.headers or {}).get("x-stream-offset", 0)))
                        await message.ack()
                        offset = position + 1
                        try:
                            event = Event.decode(message.body)
                        except (ValueError, TypeError, KeyError):
                            log.warning("undecodable event skipped", extra={"offset": position})
                            continue
                        yield position, event
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not resume:
                    raise BrokerUnavailable(f"event stream lost: {exc!r}") from exc
                log.warning("event stream reader lost its connection", extra={"error": repr(exc), "in_s": delay})
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
            finally:
                if connection is not None:
                    with contextlib.suppress(Exception):
                        await asyncio.shield(connection.close())
