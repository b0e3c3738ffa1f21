"""What every API flavour (v1, Piston, Judge0) shares: who is asking, may they, and submitting.

Validation happens before anything is published, so bad input is a 4xx with nothing
queued. A job is answered 202 only after RabbitMQ confirmed both its ``queued`` event and
the job itself.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import logging
import re
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from quart import Request

from app.broker import Broker, BrokerUnavailable, QueueFull
from app.config import KeyTier, Settings, hash_key
from app.events import EventLog
from app.gateway.errors import ApiError
from app.languages import Language, LimitError, Limits, Registry
from app.messages import DISCARDED, Event, Job, SourceFile, new_job_id
from app.metrics import Metrics
from app.ratelimit import Decision, RateLimiter

log = logging.getLogger(__name__)

FILE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,99}$")
MAX_FILES = 32
MAX_ARGS = 64


@dataclass(frozen=True)
class Identity:
    """Who is asking: an API key's hash or a client address, with the tier that applies."""

    key: str  # "key:<sha256>" or "ip:<address>"; never logged or labelled in metrics
    tier: KeyTier

    @property
    def tag(self) -> str:
        """A short, non-reversible tag stored with jobs to count them per identity."""
        return hashlib.sha256(self.key.encode()).hexdigest()[:20]


class Gateway:
    """Services of the gateway role, kept on the app object."""

    def __init__(
        self, settings: Settings, registry: Registry, broker: Broker, events: EventLog, metrics: Metrics
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.broker = broker
        self.events = events
        self.metrics = metrics
        self.limiter = RateLimiter()
        self.tiers = settings.tier_table()
        self.keys = settings.key_table()
        self.proxies = [ipaddress.ip_network(p, strict=False) for p in settings.trusted_proxies]
        self.streams: dict[str, int] = defaultdict(int)
        share = max(1, settings.gateway_count)
        for tier in self.tiers.values():
            metrics.ratelimit_tokens.labels(tier.name).set(tier.rate_per_s / share)

    # --- identity ----------------------------------------------------------------------------
    def client_address(self, request: Request) -> str:
        """The socket's peer; ``X-Forwarded-For`` only counts when the peer is a trusted proxy."""
        peer = request.remote_addr or "unknown"
        if not self.proxies:
            return peer
        chain = [peer]
        forwarded = request.headers.get("X-Forwarded-For", "")
        chain = [a.strip() for a in forwarded.split(",") if a.strip()] + chain
        # Walk from the nearest hop back; the first address that is not a trusted proxy is the client.
        for address in reversed(chain):
            try:
                ip = ipaddress.ip_address(address)
            except ValueError:
                return address
            if not any(ip in net for net in self.proxies):
                return address
        return chain[0]

    def identify(self, request: Request, *, playground: bool = False, reading: bool = False) -> Identity:
        """Resolve the caller; 401 for an unknown key, or for no key when keys are required."""
        header = request.headers.get("Authorization", "")
        if header:
            scheme, _, token = header.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                self.metrics.rejections.labels("unauthorized").inc()
                raise ApiError(401, "unauthorized", "The Authorization header must be 'Bearer <API key>'.")
            digest = hash_key(token.strip())
            tier_name = self.keys.get(digest)
            if tier_name is None:
                self.metrics.rejections.labels("unauthorized").inc()
                raise ApiError(401, "unauthorized", "The API key is not known to this service.")
            return Identity("key:" + digest, self.tiers[tier_name])
        anonymous_ok = reading or (playground and self.settings.allow_anonymous_playground)
        if self.settings.require_keys and not anonymous_ok:
            self.metrics.rejections.labels("unauthorized").inc()
            raise ApiError(
                401,
                "unauthorized",
                "This service requires an API key: send 'Authorization: Bearer <key>'.",
                {"WWW-Authenticate": "Bearer"},
            )
        return Identity("ip:" + self.client_address(request), self.tiers["anonymous"])

    def admit(self, identity: Identity) -> Decision:
        """Take a token from the caller's bucket and check its concurrent jobs; 429 when over."""
        tier = identity.tier
        rate = tier.rate_per_s / max(1, self.settings.gateway_count)
        decision = self.limiter.check(identity.key, rate, tier.burst)
        if not decision.allowed:
            self.metrics.rejections.labels("rate_limited").inc()
            raise ApiError(
                429,
                "rate_limited",
                f"Too many requests: this client may submit {tier.burst} jobs at once and "
                f"{rate:g} per second after that. Retry after {decision.headers()['Retry-After']} s.",
                decision.headers(),
            )
        self.check_concurrency(identity, 1, decision.headers())
        return decision

    def check_concurrency(self, identity: Identity, jobs: int, headers: dict[str, str] | None = None) -> None:
        """429 when ``jobs`` more would take the caller past its queued-or-running allowance."""
        running = self.events.in_flight(identity.tag)
        allowed = identity.tier.max_concurrent_jobs
        if running + jobs > allowed:
            self.metrics.rejections.labels("concurrency").inc()
            raise ApiError(
                429,
                "too_many_jobs",
                f"This client has {running} jobs queued or running; {jobs} more would pass the limit of "
                f"{allowed}. Wait for one to finish.",
                {**(headers or {}), "Retry-After": str(self.settings.retry_after_s)},
            )

    def open_stream(self, identity: Identity) -> None:
        if self.streams[identity.key] >= identity.tier.max_streams:
            self.metrics.rejections.labels("streams").inc()
            raise ApiError(
                429,
                "too_many_streams",
                f"This client already has {identity.tier.max_streams} event streams open on this gateway.",
                {"Retry-After": str(self.settings.retry_after_s)},
            )
        self.streams[identity.key] += 1
        self.metrics.sse_streams.inc()

    def close_stream(self, identity: Identity) -> None:
        self.streams[identity.key] -= 1
        if self.streams[identity.key] <= 0:
            del self.streams[identity.key]
        self.metrics.sse_streams.dec()

    # --- validation --------------------------------------------------------------------------
    def language(self, name: Any) -> Language:
        if not isinstance(name, str) or not name:
            self.metrics.rejections.labels("bad_request").inc()
            raise ApiError(400, "invalid_language", f"'language' must be one of: {', '.join(self.registry.names())}.")
        language = self.registry.get(name)
        if language is None:
            self.metrics.rejections.labels("bad_request").inc()
            raise ApiError(
                400,
                "unknown_language",
                f"Unknown language {name!r}; valid names: {', '.join(self.registry.names())}.",
            )
        return language

    def bad(self, code: str, message: str) -> ApiError:
        self.metrics.rejections.labels("bad_request").inc()
        return ApiError(400, code, message)

    def build_job(self, body: Any, identity: Identity) -> Job:
        """Check a v1 submit body field by field; every problem is a 400 naming the field."""
        if not isinstance(body, dict):
            raise self.bad("invalid_body", "The body must be a JSON object.")
        language = self.language(body.get("language"))
        source = body.get("source")
        if not isinstance(source, str):
            raise self.bad("invalid_source", "'source' is required and must be a string.")
        files = self.files(body.get("files"), language)
        stdin = body.get("stdin", "")
        if stdin is None:
            stdin = ""
        if not isinstance(stdin, str):
            raise self.bad("invalid_stdin", "'stdin' must be a string.")
        args = body.get("args", [])
        if args is None:
            args = []
        if not isinstance(args, list) or not all(isinstance(a, str) for a in args) or len(args) > MAX_ARGS:
            raise self.bad("invalid_args", f"'args' must be a list of at most {MAX_ARGS} strings.")
        try:
            limits = language.resolve_limits(body.get("limits"))
        except LimitError as exc:
            raise self.bad("invalid_limits", str(exc)) from exc
        return self.make_job(language, source, files, stdin, tuple(args), limits, identity)

    def files(self, raw: Any, language: Language) -> tuple[SourceFile, ...]:
        if raw is None:
            return ()
        if not isinstance(raw, list) or len(raw) > MAX_FILES:
            raise self.bad("invalid_files", f"'files' must be a list of at most {MAX_FILES} objects.")
        seen = {language.source_file}
        out = []
        for item in raw:
            if (
                not isinstance(item, dict)
                or not isinstance(item.get("name"), str)
                or not isinstance(item.get("content"), str)
            ):
                raise self.bad("invalid_files", "Each entry of 'files' needs a string 'name' and 'content'.")
            name = item["name"]
            if not FILE_NAME.match(name) or name in seen:
                raise self.bad(
                    "invalid_files",
                    f"File name {name!r} is not allowed: use letters, digits, '.', '_' or '-', no paths, "
                    f"no duplicates, and not the main file's name {language.source_file!r}.",
                )
            seen.add(name)
            out.append(SourceFile(name, item["content"]))
        return tuple(out)

    def make_job(
        self,
        language: Language,
        source: str,
        files: tuple[SourceFile, ...],
        stdin: str,
        args: tuple[str, ...],
        limits: Limits,
        identity: Identity,
    ) -> Job:
        now = time.time()
        return Job(
            id=new_job_id(now),
            language=language.name,
            source=source,
            limits=limits,
            files=files,
            stdin=stdin,
            args=args,
            identity=identity.tag,
            created_at=now,
        )

    # --- submitting --------------------------------------------------------------------------
    async def submit(self, job: Job, api: str) -> None:
        """Store the job durably or raise a 503; never a 202 for a job that was not stored."""
        retry = {"Retry-After": str(self.settings.retry_after_s)}
        queued = Event(
            job=job.id,
            name="queued",
            data={"language": job.language, "created_at": job.created_at, "identity": job.identity},
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
                raise outcome
        if not isinstance(event_sent, BaseException):
            self.events.note_local(queued)
        if isinstance(job_sent, BrokerUnavailable | QueueFull):
            exc = job_sent
            full = isinstance(exc, QueueFull)
            discard = Event(job=job.id, name=DISCARDED, data={}, n=1)
            self.events.note_local(discard)
            try:
                await self.broker.publish_event(discard)
            except BrokerUnavailable:
                log.warning("could not mark a refused job discarded", extra={"job": job.id})
            if full:
                self.metrics.rejections.labels("queue_full").inc()
                raise ApiError(
                    503,
                    "queue_full",
                    f"The {job.language} queue is full; try again in {self.settings.retry_after_s} s.",
                    retry,
                ) from exc
            self.metrics.rejections.labels("broker_unavailable").inc()
            raise ApiError(
                503, "broker_unavailable", "The job queue is unreachable; try again shortly.", retry
            ) from exc
        self.metrics.jobs_submitted.labels(job.language, api).inc()
        log.info("job queued", extra={"job": job.id, "language": job.language, "api": api})
