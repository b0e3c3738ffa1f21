"""Connections to RabbitMQ (one node or a cluster) and queries that always ask RabbitMQ.

- :func:`connect_robust` fails over between the cluster's nodes: every connection attempt
  (the first and every reconnection) tries each configured node in turn, starting after the
  one last used, so losing a node means reconnecting to another within one interval.
- :class:`QueueProbe` reads a queue's backlog and consumer count with a passive declare at
  the protocol level on a plain connection of its own. aio-pika's robust channels answer a
  passive declare from their cache of queues declared earlier, which froze these figures at
  their first value; nothing here is cached except, on purpose, for ``ttl_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import aio_pika
import aiormq
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractRobustConnection
from aio_pika.exceptions import CONNECTION_EXCEPTIONS
from aio_pika.robust_connection import RobustConnection
from yarl import URL

log = logging.getLogger(__name__)


class FailoverConnection(RobustConnection):
    """A robust connection that tries every node of the cluster on each (re)connection.

    aio-pika's robust connection retries one URL forever; this one walks the list. The hook is
    aio-pika's private transport step (``__connect_transport``), the one place every attempt
    goes through; ``tests/test_units.py`` pins the behaviour, so an upgrade that renames it
    fails a test rather than silently losing failover.
    """

    def __init__(self, urls: Sequence[str], **kwargs: Any) -> None:
        super().__init__(URL(urls[0]), **kwargs)
        self.urls = [URL(u) for u in urls]
        self._next = 0

    async def _RobustConnection__connect_transport(self) -> None:
        error: BaseException | None = None
        for _ in range(len(self.urls)):
            self.url = self.urls[self._next % len(self.urls)]
            self._next += 1
            try:
                await super()._RobustConnection__connect_transport()  # type: ignore[misc]
            except CONNECTION_EXCEPTIONS as exc:
                error = exc
                node = f"{self.url.host}:{self.url.port}"
                log.warning("RabbitMQ node unreachable", extra={"node": node, "error": repr(exc)})
                continue
            # The next reconnection starts with the node after this one: if this one went
            # away, the first try goes to a node that is probably up.
            log.info("connected to RabbitMQ node", extra={"node": f"{self.url.host}:{self.url.port}"})
            return
        assert error is not None
        raise error


async def connect_robust(
    urls: Sequence[str], *, name: str, reconnect_s: float, timeout: float = 5.0
) -> AbstractRobustConnection:
    """A self-healing connection to the first node that answers, failing over on every loss."""
    connection = FailoverConnection(
        urls, reconnect_interval=reconnect_s, client_properties={"connection_name": name}
    )
    await connection.connect(timeout=timeout)
    return connection


async def connect_plain(urls: Sequence[str], *, name: str, timeout: float = 5.0) -> AbstractConnection:
    """A plain (non-robust) connection to the first node that answers; the caller heals it."""
    error: BaseException | None = None
    for url in urls:
        try:
            return await aio_pika.connect(url, timeout=timeout, client_properties={"connection_name": name})
        except CONNECTION_EXCEPTIONS as exc:
            error = exc
        except TimeoutError as exc:
            error = exc
    assert error is not None
    raise error


@dataclass(frozen=True)
class QueueStats:
    """What RabbitMQ said about a queue: ready messages and consumers (0, 0 when it is absent)."""

    messages: int
    consumers: int


class QueueProbe:
    """Asks RabbitMQ for queue figures on a short-lived plain connection of its own.

    The connection is opened on first use and dropped on any error, so the next query
    reconnects (to any node). Results are cached for ``ttl_s`` so that scrapes and probes
    arriving together cost one round of queries; concurrent callers share it.
    """

    def __init__(self, urls: Sequence[str], name: str, ttl_s: float, timeout_s: float = 3.0) -> None:
        self.urls = list(urls)
        self.name = name
        self.ttl_s = ttl_s
        self.timeout_s = timeout_s
        self._connection: AbstractConnection | None = None
        self._channel: AbstractChannel | None = None
        self._cache: dict[str, tuple[float, QueueStats]] = {}
        self._lock = asyncio.Lock()

    async def stats(self, names: Sequence[str]) -> dict[str, QueueStats]:
        """Figures for every queue in ``names``, none older than ``ttl_s``."""
        async with self._lock:
            now = time.monotonic()
            stale = [n for n in names if n not in self._cache or now - self._cache[n][0] >= self.ttl_s]
            if stale:
                try:
                    fresh = await asyncio.wait_for(self._query(stale), self.timeout_s)
                except BaseException:
                    await self.close()
                    raise
                now = time.monotonic()
                for name, stat in fresh.items():
                    self._cache[name] = (now, stat)
            return {n: self._cache[n][1] for n in names}

    async def _query(self, names: Sequence[str]) -> dict[str, QueueStats]:
        result: dict[str, QueueStats] = {}
        for name in names:
            channel = await self._open()
            raw = await channel.get_underlay_channel()
            try:
                ok = await raw.queue_declare(name, passive=True)
            except aiormq.exceptions.ChannelNotFoundEntity:
                # RabbitMQ closes a channel whose passive declare names no queue.
                self._channel = None
                result[name] = QueueStats(0, 0)
                continue
            result[name] = QueueStats(ok.message_count or 0, ok.consumer_count or 0)
        return result

    async def _open(self) -> AbstractChannel:
        if self._connection is None or self._connection.is_closed:
            self._channel = None
            self._connection = await connect_plain(self.urls, name=self.name, timeout=self.timeout_s)
        if self._channel is None or self._channel.is_closed:
            self._channel = await self._connection.channel(publisher_confirms=False)
        return self._channel

    async def close(self) -> None:
        """Drop the connection; the next query opens a new one."""
        connection, self._connection, self._channel = self._connection, None, None
        if connection is not None:
            with contextlib.suppress(Exception):
                await connection.close()
