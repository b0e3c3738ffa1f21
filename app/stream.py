"""Reading the event stream, from a point in time or an offset, across reconnections."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import AsyncGenerator, AsyncIterator

import aio_pika

from app.amqp import connect_plain
from app.broker import Broker, BrokerUnavailable, Names
from app.config import Settings
from app.messages import ID_CLOCK_SLACK_S, Event, new_marker

log = logging.getLogger(__name__)


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
        self,
        start: dt.datetime | int | str,
        prefetch: int = 500,
        resume: bool = True,
        connection: aio_pika.abc.AbstractConnection | None = None,
    ) -> AsyncGenerator[tuple[int, Event], None]:
        """Yield (offset, event) from ``start`` onwards, forever; reconnects when ``resume``.

        With ``connection`` (shared by the caller, never closed here), the read uses a
        channel of its own on it instead of a connection of its own.
        """
        offset: dt.datetime | int | str = start
        delay = 0.2
        shared = connection
        while True:
            connection = shared
            channel: aio_pika.abc.AbstractChannel | None = None
            try:
                if connection is None:
                    connection = await connect_plain(self.settings.amqp_urls, name="runbox-events", timeout=5)
                channel = await connection.channel()
                await channel.set_qos(prefetch_count=prefetch)
                queue = await channel.declare_queue(self.names.events, passive=True)
                async with queue.iterator(arguments={"x-stream-offset": offset}) as it:
                    delay = 0.2
                    unacked = 0
                    async for message in it:
                        position = int(str((message.headers or {}).get("x-stream-offset", 0)))
                        # On a stream an ack only returns consumer credit (nothing is removed or
                        # redelivered), so one ack for every quarter of the prefetch keeps the
                        # credit flowing at a fraction of the frames of one ack per message.
                        unacked += 1
                        if unacked >= max(1, prefetch // 4):
                            await message.ack(multiple=True)
                            unacked = 0
                        offset = position + 1
                        try:
                            events = Event.decode_many(message.body)
                        except (ValueError, TypeError, KeyError):
                            log.warning("undecodable event skipped", extra={"offset": position})
                            continue
                        for event in events:
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
                if shared is not None and channel is not None:
                    with contextlib.suppress(Exception):
                        await asyncio.shield(channel.close())
                elif shared is None and connection is not None:
                    with contextlib.suppress(Exception):
                        await asyncio.shield(connection.close())

    async def until_now(
        self, broker: Broker, created: float, connection: aio_pika.abc.AbstractConnection | None = None
    ) -> AsyncIterator[Event]:
        """Every event appended since a job ``created`` then (its id's time), up to a marker published now.

        The marker bounds the read to what the stream held when it was asked, however busy it
        is. Raises :class:`BrokerUnavailable` when the stream is lost; callers bound the time.
        """
        marker = new_marker()
        start = dt.datetime.fromtimestamp(created - ID_CLOCK_SLACK_S, tz=dt.UTC)
        await broker.publish_event(marker)
        async with contextlib.aclosing(self.read(start, resume=False, connection=connection)) as events:
            async for _, event in events:
                if event.job == marker.job:
                    return
                yield event
