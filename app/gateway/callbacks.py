"""Delivering callbacks: gateways consume the callbacks queue and call the clients' URLs.

Gateways compete for the one durable queue, so exactly one attempts each delivery at a time.
An attempt renders the job's terminal state (by the task's renderer: the v1 job state, or
an API flavour's own shape), checks the URL against the address policy again (the name may
resolve elsewhere now than at submission), connects only to the addresses just checked, and
signs the body. A 2xx within the timeout acks the task; anything else parks it in the delay
queue of its next wait (it comes back when that expires), up to the last configured wait;
then it is dropped and counted. A task is acked only after its retry is confirmed stored, so
a gateway dying mid-attempt means another attempt, never a lost callback: receivers must
expect the same ``Runbox-Delivery`` more than once.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import time
from collections.abc import Callable
from typing import Any

import aiohttp
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage
from aiohttp.abc import AbstractResolver, ResolveResult

from app import urlpolicy
from app.broker import Broker, BrokerUnavailable, QueueFull
from app.callbacks import CallbackTask, signature
from app.config import Settings
from app.events import EventLog, JobRecord
from app.metrics import Metrics

log = logging.getLogger(__name__)

Renderer = Callable[[JobRecord], Any]
PREFETCH = 32
USER_AGENT = "runbox-callbacks/1"


class PinnedResolver(AbstractResolver):
    """Answers with the addresses the policy just checked, so the connection goes nowhere else."""

    def __init__(self, addresses: list[urlpolicy.Address]) -> None:
        self.addresses = addresses

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        return [
            {
                "hostname": host,
                "host": str(address),
                "port": port,
                "family": socket.AF_INET6 if address.version == 6 else socket.AF_INET,
                "proto": 0,
                "flags": socket.AI_NUMERICHOST,
            }
            for address in self.addresses
        ]

    async def close(self) -> None:
        return None


def render_v1(record: JobRecord) -> Any:
    """The native API's callback body: exactly what ``GET /api/v1/jobs/{id}`` answers."""
    return record.state.public()


class CallbackSender:
    """Consumes ``<prefix>.callbacks`` and delivers each task, retrying through the delay queues."""

    def __init__(self, settings: Settings, broker: Broker, events: EventLog, metrics: Metrics) -> None:
        self.settings = settings
        self.broker = broker
        self.events = events
        self.metrics = metrics
        self.delays = settings.callback_delays()
        self.allowed = urlpolicy.networks(settings.callback_allow_cidrs)
        self.renderers: dict[str, Renderer] = {"v1": render_v1}
        self._channel: AbstractChannel | None = None

    def add_renderer(self, name: str, renderer: Renderer) -> None:
        """Let an API flavour render its own callback body (Judge0 PUTs its submission)."""
        self.renderers[name] = renderer

    async def start(self) -> None:
        channel = await self.broker.channel(prefetch=PREFETCH)
        queue = await self.broker.declare_callbacks(channel)
        await self.broker.declare_callback_delays(self.delays)
        await queue.consume(self._on_message, no_ack=False)
        self._channel = channel

    async def close(self) -> None:
        if self._channel is not None:
            with contextlib.suppress(Exception):
                await self._channel.close()

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        """Decide the task's fate: acked when delivered, dropped or re-queued for later; else nacked."""
        try:
            task = CallbackTask.decode(message.body)
        except (ValueError, KeyError, TypeError):
            log.error("undecodable callback task dropped")
            await message.ack()
            return
        outcome = await self.attempt(task)
        self.metrics.callback_attempts.labels(outcome).inc()
        if outcome in ("delivered", "refused") or task.attempt > len(self.delays):
            if outcome != "delivered":
                self.metrics.callbacks_abandoned.labels(outcome if outcome == "refused" else "retries_exhausted").inc()
                log.warning("callback abandoned", extra={"job": task.job, "outcome": outcome, "attempt": task.attempt})
            await message.ack()
            return
        wait = self.delays[task.attempt - 1]
        retry = CallbackTask(task.delivery, task.job, task.url, task.method, task.renderer, task.attempt + 1)
        try:
            await self.broker.publish_callback(retry.job, retry.encode(), self.broker.names.callback_delay(wait))
        except (BrokerUnavailable, QueueFull) as exc:
            log.warning("could not park a callback retry; it stays queued", extra={"job": task.job, "error": str(exc)})
            with contextlib.suppress(Exception):
                await message.nack(requeue=True)
            return
        log.info("callback failed; retrying later",
                 extra={"job": task.job, "outcome": outcome, "attempt": task.attempt, "in_s": wait})
        await message.ack()

    async def attempt(self, task: CallbackTask) -> str:
        """One delivery attempt; its outcome as a bounded metric label."""
        renderer = self.renderers.get(task.renderer)
        try:
            record = await self.events.record(task.job)
            if record is not None and not record.state.terminal:
                # The task can overtake the terminal event on its way through this gateway's
                # reading of the stream (it was published after it): read up to now first.
                await self.events.sync()
                record = self.events.current(record)
        except BrokerUnavailable:
            return "not_ready"
        if renderer is None or record is None or not record.state.terminal:
            return "not_ready"
        body = json.dumps(renderer(record), separators=(",", ":"), ensure_ascii=False).encode()
        try:
            _, addresses = await urlpolicy.check(task.url, self.allowed)
        except urlpolicy.UrlRefused as exc:
            log.warning("callback address refused at delivery", extra={"job": task.job, "error": str(exc)})
            return "refused"
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            "Runbox-Delivery": task.delivery,
            "Runbox-Signature": signature(self.settings.callback_secret, int(time.time()), body),
        }
        connector = aiohttp.TCPConnector(resolver=PinnedResolver(addresses), force_close=True, use_dns_cache=False)
        timeout = aiohttp.ClientTimeout(total=self.settings.callback_timeout_s)
        try:
            async with (
                aiohttp.ClientSession(connector=connector, timeout=timeout) as session,
                session.request(task.method, task.url, data=body, headers=headers, allow_redirects=False) as response,
            ):
                status = response.status
        except TimeoutError:
            return "timeout"
        except (aiohttp.ClientError, OSError):
            return "unreachable"
        return "delivered" if 200 <= status < 300 else "http_error"
