"""RabbitMQ through aio-pika: the only path between gateways and executors.

Topology (declared identically by every process, so any may start first):
- ``<prefix>.jobs.<language>``: a durable quorum queue per language, with a return limit,
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
- ``<prefix>.presence``: a queue nothing is ever published to; each executor consumes it
  once, so its consumer count is the number of executors.

With ``RUNBOX_AMQP_QUORUM_SIZE`` set (3 on a three-node cluster) every queue and the stream
are replicated across that many nodes, and ``RUNBOX_AMQP_URL`` lists every node (see
:mod:`app.amqp` for the failover).

The executor never sees an aio-pika object: a delivery reaches it as a
:class:`~app.deliveries.Delivery` (the raw job, its attempt number, and ack / requeue /
reject), as Dramatiq's worker gets a message proxy. The event stream is read through
:class:`~app.stream.StreamReader`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import zlib
from collections.abc import Awaitable, Callable
from typing import Any, cast

import aio_pika
import aiormq
from aio_pika.abc import (
    AbstractChannel,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustConnection,
)

from app.amqp import QueueProbe, QueueStats, connect_robust
from app.config import Settings
from app.deliveries import Consumer, DeliveryHandler, adapt
from app.languages import Registry
from app.messages import Event, Job
from app.metrics import Metrics

log = logging.getLogger(__name__)

# Confirmed publishing channels per connection. aiormq publishes one message at a time per
# channel, under a lock; once publishers queue on it, each hand-over of the lock costs a turn
# of the event loop, so under a storm of requests (a turn taking tens of milliseconds) one
# channel confirmed about 30 messages a second and submissions waited seconds for their
# confirms. A job's messages always take the same channel (see :meth:`Broker._channel_for`).
PUBLISH_CHANNELS = 16


class BrokerUnavailable(RuntimeError):
    """RabbitMQ cannot be reached or did not confirm in time; nothing was stored."""


class QueueFull(RuntimeError):
    """RabbitMQ refused the job because its language's queue is at its length limit."""


class NotRouted(RuntimeError):
    """No queue is bound for the message's routing key (an interactive job not running here)."""


__all__ = ["Broker", "BrokerUnavailable", "NotRouted", "QueueFull", "QueueStats"]


class Names:
    """Queue and stream names derived from one prefix."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.events = f"{prefix}.events"
        self.dead = f"{prefix}.jobs.dead"
        # Executors consume this never-published queue to announce themselves. A transient
        # classic queue: when the node holding it dies, RabbitMQ deletes it and cancels its
        # consumers, each executor declares it again on its own node and consumes anew, and the
        # count is right again within a reconnection. (A quorum queue would keep counting the
        # lost node's consumers, as "suspected down", until that node came back.)
        self.presence = f"{prefix}.presence"
        self.stdin = f"{prefix}.stdin"
        self.callbacks = f"{prefix}.callbacks"

    def callback_delay(self, seconds: float) -> str:
        return f"{self.prefix}.callbacks.delay.{round(seconds * 1000)}"

    def jobs(self, language: str) -> str:
        return f"{self.prefix}.jobs.{language}"


class Broker:
    """A self-healing connection with a few confirmed publishing channels.

    ``connect_robust`` restores channels, queues and consumers after a broker restart; while
    the connection is down, publishes fail fast with :class:`BrokerUnavailable` instead of
    waiting, so the gateway can answer 503 at once.
    """

    def __init__(self, settings: Settings, metrics: Metrics, role: str, registry: Registry | None = None) -> None:
        self.settings = settings
        self.metrics = metrics
        self.role = role
        # A job goes to the queue of the unit its language and version name (one per version).
        self.registry = registry
        self.names = Names(settings.amqp_prefix)
        self._connection: AbstractRobustConnection | None = None
        self._publish_channels: list[AbstractChannel] = []
        self._connected = asyncio.Event()
        self.probe = QueueProbe(settings.amqp_urls, f"runbox-{role}-stats", ttl_s=settings.stats_ttl_s)

    # --- lifecycle ---------------------------------------------------------------------------
    async def connect(self, attempts: int | None = None) -> None:
        """Connect, retrying with backoff; ``attempts=None`` retries until cancelled."""
        delay = 0.2
        tried = 0
        while True:
            tried += 1
            try:
                connection = await connect_robust(
                    self.settings.amqp_urls, name=f"runbox-{self.role}", reconnect_s=self.settings.amqp_reconnect_s
                )
                break
            except (TimeoutError, OSError, RuntimeError, aiormq.exceptions.AMQPError) as exc:
                if attempts is not None and tried >= attempts:
                    raise BrokerUnavailable(f"cannot connect to RabbitMQ: {exc}") from exc
                log.warning("broker connect failed, retrying", extra={"error": str(exc), "in_s": delay})
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        connection.reconnect_callbacks.add(self._on_reconnect)
        connection.close_callbacks.add(self._on_close)
        self._connection = connection
        # The topology is declared on a channel of its own, closed at once: a robust channel
        # re-declares whatever was declared on it before it may publish again, and after the
        # loss of a cluster node that waits for every queue's and the stream's new leader, so
        # submissions would be refused for that long. The publishing channel restores at once.
        await self.declare_events(connection)
        async with connection.channel(publisher_confirms=False) as setup:
            await self.declare_topology(setup)
        self._publish_channels = [
            await connection.channel(publisher_confirms=True, on_return_raises=True) for _ in range(PUBLISH_CHANNELS)
        ]
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
            and bool(self._publish_channels)
            and not any(channel.is_closed for channel in self._publish_channels)
        )

    async def wait_connected(self) -> None:
        await self._connected.wait()

    async def wait_publishable(self, timeout: float) -> bool:
        """Whether publishing works again within ``timeout`` seconds.

        A reconnection restores channels one at a time, the publishing channels not first, so
        being connected is not enough: this also polls the channels until they are open.
        """
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while not self.connected:
            left = end - loop.time()
            if left <= 0:
                return False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._connected.wait(), left)
            await asyncio.sleep(min(0.05, max(0.0, end - loop.time())))
        return True

    async def close(self) -> None:
        """Close the connection and the statistics probe's."""
        await self.probe.close()
        if self._connection is not None:
            with contextlib.suppress(Exception):
                await self._connection.close()
        self._connected.clear()
        self.metrics.broker_up.labels(self.role).set(0)

    def _require(self) -> None:
        if not self.connected:
            raise BrokerUnavailable("RabbitMQ is not reachable")

    def _channel_for(self, key: str) -> AbstractChannel:
        """The publishing channel of ``key`` (a job id): RabbitMQ keeps the order of one
        channel's messages, so a job's events, and its ``queued`` event and the job, stay in
        the order they were published even when not awaited one by one."""
        self._require()
        return self._publish_channels[zlib.crc32(key.encode()) % len(self._publish_channels)]

    # --- topology ------------------------------------------------------------------------------
    def quorum_arguments(self) -> dict[str, Any]:
        """A quorum queue, replicated over ``amqp_quorum_size`` nodes when that is set."""
        arguments: dict[str, Any] = {"x-queue-type": "quorum"}
        if self.settings.amqp_quorum_size:
            arguments["x-quorum-initial-group-size"] = self.settings.amqp_quorum_size
        return arguments

    def stream_arguments(self) -> dict[str, Any]:
        arguments: dict[str, Any] = {
            "x-queue-type": "stream",
            "x-max-age": self.settings.events_max_age,
            "x-stream-max-segment-size-bytes": 8_000_000,
            # A size bound beside the age: a flood of output cannot fill the broker's disk.
            "x-max-length-bytes": self.settings.events_max_mb * 1024 * 1024,
        }
        if self.settings.amqp_quorum_size:
            arguments["x-initial-cluster-size"] = self.settings.amqp_quorum_size
        return arguments

    def job_queue_arguments(self) -> dict[str, Any]:
        return {
            **self.quorum_arguments(),
            "x-delivery-limit": self.settings.return_limit,
            "x-max-length": self.settings.queue_max_length,
            "x-overflow": "reject-publish",
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": self.names.dead,
            "x-dead-letter-strategy": "at-least-once",
        }

    def events_policy_command(self) -> str:
        """The ``rabbitmqctl`` command that bounds an existing event stream by size through a policy."""
        pattern = "^" + self.names.events.replace(".", "\\.") + "$"
        definition = f'{{"max-length-bytes": {self.settings.events_max_mb * 1024 * 1024}}}'
        return f"rabbitmqctl set_policy {self.names.events}-bounds '{pattern}' '{definition}' --apply-to queues"

    async def declare_events(self, connection: aio_pika.abc.AbstractConnection) -> bool:
        """Declare the event stream; False when it exists with other arguments (it is used as it is).

        RabbitMQ refuses to redeclare a queue with different arguments (PRECONDITION_FAILED),
        and a stream cannot be altered: a stream made by an older runbox (no
        ``x-max-length-bytes``) or under another ``RUNBOX_EVENTS_MAX_*`` keeps its arguments.
        It is used as it is, and the log names the policy that gives it the byte bound (stream
        policies may set ``max-length-bytes`` and ``max-age``; see docs/deploy.md).
        """
        try:
            async with connection.channel(publisher_confirms=False) as channel:
                await channel.declare_queue(self.names.events, durable=True, arguments=self.stream_arguments())
        except aiormq.exceptions.ChannelPreconditionFailed as exc:
            log.warning(
                "the event stream exists with other arguments and is used as it is; bound it by a policy",
                extra={"error": str(exc), "command": self.events_policy_command()},
            )
            return False
        return True

    async def declare_topology(self, channel: AbstractChannel) -> None:
        await self.declare_presence(channel)
        await channel.declare_queue(self.names.dead, durable=True, arguments=self.quorum_arguments())
        await self.declare_callbacks(channel)
        await self.declare_stdin(channel)

    async def declare_callbacks(self, channel: AbstractChannel) -> AbstractQueue:
        return await channel.declare_queue(self.names.callbacks, durable=True, arguments=self.quorum_arguments())

    async def declare_callback_delays(self, delays: tuple[float, ...]) -> None:
        """One queue per wait: a single queue with per-message expiry would hold a short wait
        behind a long one, since messages only expire at the head of a queue.

        Declared on a short-lived channel: these are classic queues, which live on one node of
        a cluster; a robust channel that had declared them could not be restored while that
        node is down, and would hold its consumer (and the connection's recovery) back.
        """
        self._require()
        assert self._connection is not None
        async with self._connection.channel(publisher_confirms=False) as channel:
            await self._declare_delays_on(channel, delays)

    async def _declare_delays_on(self, channel: AbstractChannel, delays: tuple[float, ...]) -> None:
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

    async def declare_presence(self, channel: AbstractChannel) -> AbstractQueue:
        return await channel.declare_queue(self.names.presence, durable=False, arguments={"x-queue-type": "classic"})

    async def declare_jobs(self, language: str) -> bool:
        """Declare a language's queue on a short-lived channel (see :meth:`connect` for why).

        False when it exists with other arguments (made by an older runbox, whose
        ``x-delivery-limit`` was the delivery limit itself): RabbitMQ cannot alter a queue's
        arguments, so it is used as it is and the log says so (docs/deploy.md, upgrading).
        """
        self._require()
        assert self._connection is not None
        try:
            async with self._connection.channel(publisher_confirms=False) as setup:
                await setup.declare_queue(
                    self.names.jobs(language), durable=True, arguments=self.job_queue_arguments()
                )
        except aiormq.exceptions.ChannelPreconditionFailed as exc:
            log.warning(
                "a job queue exists with other arguments and is used as it is; re-create it once drained",
                extra={"queue": self.names.jobs(language), "error": str(exc)},
            )
            return False
        return True

    async def _declare_jobs_on(self, channel: AbstractChannel, language: str) -> AbstractQueue:
        # Passive: declare_jobs made it (or found it made with other arguments), and a
        # consumer's channel re-declares on every reconnection, where a mismatch would close it.
        return await channel.declare_queue(self.names.jobs(language), passive=True)

    async def executors(self) -> int:
        """How many executors are consuming, anywhere (this process's own included), from the presence queue."""
        stats = await self.probe.stats([self.names.presence])
        return stats[self.names.presence].consumers

    async def announce(self) -> Consumer:
        """Consume the presence queue for as long as this executor's connection lives."""

        async def never_called(message: AbstractIncomingMessage) -> None:
            await message.reject(requeue=False)

        return await self._consume(self.names.presence, 1, never_called, self.declare_presence)

    async def queue_stats(self, languages: list[str]) -> dict[str, QueueStats]:
        """Backlog and consumer count of each language's queue, as RabbitMQ says now (or within the TTL)."""
        stats = await self.probe.stats([self.names.jobs(lang) for lang in languages])
        return {lang: stats[self.names.jobs(lang)] for lang in languages}

    # --- publishing ----------------------------------------------------------------------------
    async def _publish(
        self,
        message: aio_pika.Message,
        routing_key: str,
        key: str,
        exchange: str = "",
        unroutable: type[Exception] | None = None,
    ) -> None:
        """Publish with ``mandatory`` and wait for the confirm; each failure becomes one of our errors.

        A returned (unroutable) message raises ``unroutable`` (default :class:`BrokerUnavailable`),
        a queue refusing it (its length limit) :class:`QueueFull`, anything else
        :class:`BrokerUnavailable`.
        """
        channel = self._channel_for(key)
        try:
            # aiormq's own publish, not aio-pika's: aio-pika also waits, under the channel's
            # lock, for the frame to be written, two or three more turns of the event loop
            # for each message. Without that wait the lock covers only the enqueueing (the
            # order is kept); the connection's writer task still drains the socket.
            underlay = cast(aiormq.Channel, await channel.get_underlay_channel())  # its abc lacks ``wait``
            await underlay.basic_publish(
                message.body,
                exchange=exchange,
                routing_key=routing_key,
                properties=message.properties,
                mandatory=True,
                timeout=self.settings.publish_timeout_s,
                wait=False,
            )
        except aio_pika.exceptions.PublishError as exc:  # a DeliveryError too: checked first
            raise (unroutable or BrokerUnavailable)(f"{routing_key} is not routable: {exc}") from exc
        except aiormq.exceptions.DeliveryError as exc:
            raise QueueFull(f"{routing_key} refused the message") from exc
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
                headers={"job": job.id, "language": job.language, "version": job.version},
            ),
            self.names.jobs(self.registry.queue_key(job.language, job.version) if self.registry else job.language),
            job.id,
        )

    async def publish_event(self, event: Event) -> None:
        """Append one event to the event stream and wait for RabbitMQ's confirm."""
        await self.publish_events([event])

    async def publish_events(self, events: list[Event]) -> None:
        """Append events of one job to the stream as one message (a JSON list when several), confirmed.

        One message instead of one per event: a short job's started, output and result cost
        one publish and one confirm (see :meth:`StreamReader.read` for the reading side).
        """
        body = events[0].encode() if len(events) == 1 else b"[" + b",".join(e.encode() for e in events) + b"]"
        await self._publish(
            aio_pika.Message(
                body,
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                content_type="application/json",
                headers={"job": events[0].job},
            ),
            self.names.events,
            events[0].job,
        )
        self.metrics.events_published.labels(self.role).inc(len(events))

    async def publish_callback(self, job_id: str, task: bytes, queue: str | None = None) -> None:
        """Store a callback delivery of ``job_id`` (in the callbacks queue, or a delay queue) once confirmed."""
        await self._publish(
            aio_pika.Message(task, delivery_mode=aio_pika.DeliveryMode.PERSISTENT, content_type="application/json"),
            queue or self.names.callbacks,
            job_id,
        )

    async def publish_stdin(self, job_id: str, body: bytes, reply_to: str, correlation_id: str) -> None:
        """Send input to whichever executor runs ``job_id``; :class:`NotRouted` when none does."""
        message = aio_pika.Message(
            body, reply_to=reply_to, correlation_id=correlation_id, content_type="application/json"
        )
        await self._publish(message, job_id, job_id, exchange=self.names.stdin, unroutable=NotRouted)

    async def channel(self, prefetch: int = 0) -> AbstractChannel:
        """A channel of its own (for a consumer), restored with the connection."""
        if self._connection is None:
            raise BrokerUnavailable("not connected")
        channel = await self._connection.channel(publisher_confirms=False)
        if prefetch:
            await channel.set_qos(prefetch_count=prefetch)
        return channel

    # --- consuming ----------------------------------------------------------------------------
    async def _consume(
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

    async def consume_jobs(self, language: str, prefetch: int, handler: DeliveryHandler) -> Consumer:
        """Hand each job of ``language`` to ``handler`` as a :class:`Delivery`; at most ``prefetch`` unsettled."""
        return await self._consume(
            self.names.jobs(language), prefetch, adapt(handler), lambda ch: self._declare_jobs_on(ch, language)
        )

    async def consume_dead(self, handler: DeliveryHandler) -> Consumer:
        """Hand each dead-lettered job to ``handler`` as a :class:`Delivery`."""

        async def declare(ch: AbstractChannel) -> AbstractQueue:
            return await ch.declare_queue(self.names.dead, durable=True, arguments=self.quorum_arguments())

        return await self._consume(self.names.dead, 4, adapt(handler), declare)
