"""The gateway's one way in, composed: identify, admit, read, validate, publish, look up.

Every API flavour is a thin adapter over this object. A submission goes
``identify -> admission.submit (rate and job slots reserved) -> read_json (capped, strict)
-> adapter translation -> validator.check -> publisher.submit``; a read goes
``identify(reading) -> admission.read -> lookup``. Refusals are :class:`ApiError` and are
counted by the one error handler.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from quart import request

from app.broker import Broker
from app.config import Settings
from app.events import EventLog, ExpiredJob, JobRecord, ReplayBusy
from app.gateway.admission import Admission
from app.gateway.callbacks import CallbackSender
from app.gateway.identity import Identities, Identity
from app.gateway.publish import Publisher
from app.gateway.validate import Validator
from app.interactive import StdinRelay, StdinReply
from app.languages import Registry
from app.metrics import Metrics
from app.web import body
from app.web.errors import ApiError

STDIN_START_WAIT_S = 10.0  # input for an interactive job still queued waits this long for it to start


class Gateway:
    """Services of the gateway role, kept on the app object."""

    def __init__(
        self, settings: Settings, registry: Registry, broker: Broker, events: EventLog, metrics: Metrics
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.events = events
        self.metrics = metrics
        self.identities = Identities(settings)
        self.admission = Admission(settings, events)
        self.validator = Validator(settings, registry)
        self.publisher = Publisher(settings, broker, events, metrics, self.admission)
        self.stdin = StdinRelay(broker)
        self.callbacks = CallbackSender(settings, broker, events, metrics)
        share = max(1, settings.gateway_count)
        for tier in self.identities.tiers.values():
            metrics.ratelimit_tokens.labels(tier.name).set(tier.rate_per_s / share)

    def identify(self, *, playground: bool = False, reading: bool = False, token_header: str | None = None) -> Identity:
        """The current request's identity (see :class:`Identities`)."""
        return self.identities.identify(
            request.headers, request.remote_addr, playground=playground, reading=reading, token_header=token_header,
            token_param=request.args.get(token_header, "") if token_header else "",
        )

    def reader(self, token_header: str | None = None) -> Identity:
        """Identify a reader of job state and take one read token; 401/429 otherwise."""
        identity = self.identify(reading=True, token_header=token_header)
        self.admission.read(identity)
        return identity

    async def read_json(self, *, empty: Any = None) -> Any:
        """The body as strict JSON (400) within the cap (413); ``empty`` stands for a blank body if given."""
        try:
            data = await body.read_bytes()
        except body.BodyTooLarge as exc:
            raise ApiError(
                413,
                "body_too_large",
                f"The request body is {'at least ' if exc.size == exc.cap + 1 else ''}{exc.size} bytes; "
                f"this service accepts at most {exc.cap} bytes.",
            ) from None
        except TimeoutError:
            raise ApiError(408, "body_timeout", "The request body did not arrive in time.") from None
        if not data.strip():
            if empty is not None:
                return empty
            raise ApiError(400, "invalid_json", "The request body is empty; send a JSON object.")
        try:
            return body.parse_json(data)
        except body.BadJson as exc:
            raise ApiError(400, "invalid_json", f"The request body is not acceptable JSON: {exc}.") from None

    async def lookup(self, job_id: str, fresh: bool = False) -> JobRecord:
        """The job's record; 404 for an id never issued, 410 when its history aged out, 503 when busy.

        ``fresh`` is for reads that answer with the job's state (see :meth:`EventLog.record`).
        """
        try:
            record = await self.events.record(job_id, fresh)
        except ExpiredJob:
            raise ApiError(
                410,
                "expired",
                f"Job {job_id!r} is older than the history this deployment keeps "
                f"({self.settings.events_max_age}); its state is gone.",
            ) from None
        except ReplayBusy:
            raise ApiError(
                503,
                "busy",
                "Reading this job's history back is taking too long; try again shortly.",
                {"Retry-After": str(self.settings.retry_after_s)},
                reason="busy",
            ) from None
        if record is None:
            raise ApiError(404, "not_found", f"No job with id {job_id[:64]!r}.")
        return record

    async def send_stdin(self, record: JobRecord, data: str, eof: bool) -> StdinReply:
        """Relay input to the executor running the job; a job still queued is waited for a little."""
        refusal = await self._started(record)
        return refusal or await self.stdin.send(record.state.id, data, eof)

    async def send_signal(self, record: JobRecord, signum: int) -> StdinReply:
        """Relay a signal to the job's running program, on the same way and terms as its input."""
        refusal = await self._started(record)
        return refusal or await self.stdin.signal(record.state.id, signum)

    async def _started(self, record: JobRecord) -> StdinReply | None:
        """None once the interactive job runs; else why it takes no input (a queued job is waited for)."""
        state = record.state
        if not state.interactive:
            return StdinReply(409, "not_interactive", "The job was not submitted with 'interactive': true.")
        deadline = time.monotonic() + STDIN_START_WAIT_S
        while state.status == "queued" and time.monotonic() < deadline:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(record.changed.wait(), deadline - time.monotonic())
            record = self.events.current(record)
            state = record.state
        if state.terminal:
            return StdinReply(409, "not_running", f"The job has ended ({state.status}); it takes no more input.")
        if state.status == "queued":
            return StdinReply(409, "not_running", "The job has not started yet; send input once it has.")
        return None
