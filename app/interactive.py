"""Live input for interactive jobs, from any gateway to the executor running the job, over RabbitMQ.

An executor binds the id of each interactive job it runs to an exclusive queue of its own on
the ``<prefix>.stdin`` direct exchange before the job's ``started`` event goes out, and unbinds
it when the job ends. A gateway publishes the input with ``mandatory`` and a ``reply_to``:
RabbitMQ returns a message nobody is bound for (the job is not running: 409), and otherwise
the executor answers once the input is handed to the sandbox, or why it refused it (over the
job's input rate or total). The executor is the one place that sees all of a job's input
whichever gateways it came through, so it enforces the bounds.

Live input is stdin (``{"data", "eof"}``) or a signal for the running program
(``{"signal": <number>}``, Piston's WebSocket ``signal`` message): both travel the same way
and in the same order, so a signal sent after a line of input reaches the program after it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import signal
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Protocol

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractQueue

from app.broker import Broker, BrokerUnavailable, NotRouted
from app.config import Settings
from app.executor.sandbox import SandboxError
from app.ratelimit import TokenBucket

log = logging.getLogger(__name__)

REPLY_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class StdinReply:
    """The executor's answer to one piece of input: an HTTP status, an error code and a sentence."""

    status: int
    code: str = ""
    message: str = ""
    retry_after_s: float = 0.0

    def encode(self) -> bytes:
        return json.dumps(self.__dict__, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, body: bytes) -> StdinReply:
        data = json.loads(body)
        return cls(int(data["status"]), str(data["code"]), str(data["message"]), float(data["retry_after_s"]))


NOT_RUNNING = StdinReply(409, "not_running", "The job is not interactive, or it is not running (any more).")
# What a signal costs against the job's input rate: a flood of signals is bounded like input.
SIGNAL_COST_BYTES = 64
# Signals a program may be sent. SIGKILL and SIGSTOP included: they reach only the job's own
# processes, which the job could signal itself; the agent is never among them.
DELIVERABLE_SIGNALS = frozenset(int(s) for s in signal.valid_signals() if 0 < int(s) < signal.SIGRTMIN)


class InputSink(Protocol):
    """Where a running job's input goes (a sandbox)."""

    async def send_stdin(self, job_id: str, data: str, eof: bool) -> None: ...

    async def send_signal(self, job_id: str, signum: int) -> None: ...


@dataclass
class Session:
    """One running interactive job: where its input goes and how much it has had."""

    sandbox: InputSink
    bucket: TokenBucket
    received: int = 0
    closed: bool = False
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class StdinRouter:
    """Executor side: the binding of running interactive jobs and the hand-over of their input."""

    def __init__(self, settings: Settings, broker: Broker) -> None:
        self.settings = settings
        self.broker = broker
        self.sessions: dict[str, Session] = {}
        self._channel: AbstractChannel | None = None
        self._queue: AbstractQueue | None = None

    async def start(self) -> None:
        channel = await self.broker.channel(prefetch=64)
        await self.broker.declare_stdin(channel)
        # Exclusive: it dies with this executor's connection; a restored connection declares
        # it again and re-binds the running jobs (aio-pika's robust queue). Named here, since
        # a server-made "amq.gen-" name may not be declared again.
        name = f"{self.broker.names.stdin}.executor.{self.settings.executor_id}.{secrets.token_hex(4)}"
        self._queue = await channel.declare_queue(name, exclusive=True, auto_delete=True)
        await self._queue.consume(self._on_message, no_ack=True)
        self._channel = channel

    async def close(self) -> None:
        if self._channel is not None:
            with contextlib.suppress(Exception):
                await self._channel.close()

    @contextlib.asynccontextmanager
    async def attach(self, job_id: str, sandbox: InputSink) -> AsyncIterator[None]:
        """Route ``job_id``'s input to ``sandbox`` for as long as the block runs."""
        if self._queue is None:
            raise BrokerUnavailable("the stdin relay is not started")
        rate = self.settings.stdin_rate_kb_s * 1024
        self.sessions[job_id] = Session(sandbox, TokenBucket(rate, rate, time.monotonic()))
        try:
            await self._queue.bind(self.broker.names.stdin, routing_key=job_id)
        except Exception as exc:
            self.sessions.pop(job_id, None)
            raise BrokerUnavailable(f"cannot route input to job {job_id}: {exc!r}") from exc
        try:
            yield
        finally:
            self.sessions.pop(job_id, None)
            with contextlib.suppress(Exception):
                await asyncio.shield(self._queue.unbind(self.broker.names.stdin, routing_key=job_id))

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        reply = await self.deliver(message.routing_key or "", message.body)
        if not message.reply_to or self._channel is None:
            return
        with contextlib.suppress(Exception):
            await self._channel.default_exchange.publish(
                aio_pika.Message(reply.encode(), correlation_id=message.correlation_id), routing_key=message.reply_to
            )

    async def deliver(self, job_id: str, body: bytes) -> StdinReply:
        """Check one piece of input against the job's bounds and hand it to the sandbox."""
        session = self.sessions.get(job_id)
        if session is None:
            return NOT_RUNNING
        try:
            request = json.loads(body)
            if "signal" in request:
                return await self._deliver_signal(job_id, session, request["signal"])
            data, eof = str(request["data"]), bool(request["eof"])
        except (ValueError, KeyError, TypeError):
            return StdinReply(400, "invalid_stdin", "The input message is malformed.")
        if session.closed:
            return StdinReply(409, "stdin_closed", "The job's input was already closed with eof.")
        size = len(data.encode("utf-8", "surrogatepass"))
        total = self.settings.stdin_max_kb * 1024
        if session.received + size > total:
            return StdinReply(
                413, "stdin_too_large", f"An interactive job may receive {self.settings.stdin_max_kb} KiB of input."
            )
        decision = session.bucket.take(time.monotonic(), size)
        if not decision.allowed:
            if size > session.bucket.burst:
                return StdinReply(
                    413, "stdin_too_large",
                    f"One piece of input may be at most {self.settings.stdin_rate_kb_s} KiB.",
                )
            return StdinReply(
                429, "stdin_rate_limited",
                f"Input is limited to {self.settings.stdin_rate_kb_s} KiB per second.",
                decision.retry_after_s,
            )
        session.received += size
        session.closed = eof
        # The lock keeps pieces in arrival order while one waits for the sandbox to drain.
        async with session.lock:
            try:
                await session.sandbox.send_stdin(job_id, data, eof)
            except SandboxError:
                return NOT_RUNNING
        return StdinReply(202)

    async def _deliver_signal(self, job_id: str, session: Session, signum: object) -> StdinReply:
        """Hand a signal to the sandbox for the job's running step, after the input sent before it."""
        if type(signum) is not int or signum not in DELIVERABLE_SIGNALS:
            return StdinReply(400, "invalid_signal", f"{signum!r} is not a signal a program can be sent.")
        decision = session.bucket.take(time.monotonic(), SIGNAL_COST_BYTES)
        if not decision.allowed:
            return StdinReply(
                429, "stdin_rate_limited", "Signals count against the job's input rate; slow down.",
                decision.retry_after_s,
            )
        async with session.lock:
            try:
                await session.sandbox.send_signal(job_id, signum)
            except SandboxError:
                return NOT_RUNNING
        return StdinReply(202)


class StdinRelay:
    """Gateway side: publish input for a job and wait for the executor's answer."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self._waiters: dict[str, asyncio.Future[StdinReply]] = {}
        self._queue: AbstractQueue | None = None

    async def start(self) -> None:
        channel = await self.broker.channel()
        name = f"{self.broker.names.stdin}.replies.{secrets.token_hex(8)}"
        self._queue = await channel.declare_queue(name, exclusive=True, auto_delete=True)
        await self._queue.consume(self._on_reply, no_ack=True)

    async def _on_reply(self, message: AbstractIncomingMessage) -> None:
        waiter = self._waiters.pop(message.correlation_id or "", None)
        if waiter is None or waiter.done():
            return
        try:
            waiter.set_result(StdinReply.decode(message.body))
        except (ValueError, KeyError, TypeError) as exc:
            waiter.set_exception(BrokerUnavailable(f"undecodable answer from the executor: {exc!r}"))

    async def send(self, job_id: str, data: str, eof: bool) -> StdinReply:
        """Input for the job's stdin: the executor's answer; ``NOT_RUNNING`` when no executor runs it."""
        return await self._request(job_id, {"data": data, "eof": eof})

    async def signal(self, job_id: str, signum: int) -> StdinReply:
        """A signal for the job's running program, answered like input."""
        return await self._request(job_id, {"signal": signum})

    async def _request(self, job_id: str, request: dict[str, object]) -> StdinReply:
        """Publish one piece of live input and wait for the executor's answer."""
        if self._queue is None:
            raise BrokerUnavailable("the stdin relay is not connected yet")
        correlation = secrets.token_hex(8)
        waiter: asyncio.Future[StdinReply] = asyncio.get_running_loop().create_future()
        self._waiters[correlation] = waiter
        body = json.dumps(request).encode()
        try:
            try:
                await self.broker.publish_stdin(job_id, body, self._queue.name, correlation)
            except NotRouted:
                return NOT_RUNNING
            try:
                return await asyncio.wait_for(waiter, REPLY_TIMEOUT_S)
            except TimeoutError as exc:
                raise BrokerUnavailable("the executor running the job did not answer") from exc
        finally:
            self._waiters.pop(correlation, None)


def reply_headers(reply: StdinReply) -> dict[str, str]:
    """Retry-After for a rate-limited piece of input."""
    return {"Retry-After": str(max(1, round(reply.retry_after_s + 0.5)))} if reply.status == 429 else {}
