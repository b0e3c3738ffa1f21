"""May this identity do this now: rate limits for submissions and reads, job and stream caps.

Admission is taken before a request's body is read or parsed, so a refused client costs a
header lookup and a token-bucket update, nothing more. A submission's concurrent-jobs
allowance is *reserved* in the same step (check and reserve with no ``await`` between them,
so a burst of simultaneous submissions cannot all pass a check made before any of them was
published); the reservation is released once the publish succeeded (the job is then counted
from the event log) or failed. A reservation names its job once the job has an id: the event
log may read the job's "queued" event back before the publish is confirmed, and a job counted
both ways would refuse a client that is within its allowance.

Before any of that, a gateway that already has ``max_pending_submits`` submissions in hand
sheds the new one with 503 + ``Retry-After``: under a storm, work beyond what the deployment
absorbs is refused in microseconds instead of queueing inside the gateway, where it would
delay every answer (and ``/healthz``) behind it. It sheds the same way while its publishes
wait too long for RabbitMQ's confirm (``shed_after_ms``, measured on the oldest of at least
``SHED_MIN_PUBLISHING``): the bound on submissions in hand suits no deployment's speed in
particular, while the confirms' delay is how far behind this one is. Only the publish is
timed, never a request's body, which a slow client could hold back on purpose.
"""

from __future__ import annotations

import contextlib
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field

from app.config import Settings
from app.events import EventLog
from app.gateway.identity import Identity
from app.ratelimit import Decision, RateLimiter
from app.web.errors import ApiError

# A few slow confirms are a busy machine's or a channel's trouble, which a client would only
# meet as refusals (seen: a burst of 20 jobs under gVisor start-ups, shed with 4); a gateway
# holding this many publishes at once, all behind a slow one, is being flooded.
SHED_MIN_PUBLISHING = 16


@dataclass
class Reservation:
    """Job slots held for an identity between admission and the end of its publish."""

    admission: Admission
    identity: Identity
    jobs: int
    decision: Decision
    released: bool = field(default=False)
    job_ids: list[str] = field(default_factory=list)

    def bind(self, job_id: str) -> None:
        """Name a job this reservation holds a slot for, before it is published."""
        self.job_ids.append(job_id)
        self.admission.bind(self.identity, job_id)

    def release(self) -> None:
        """Give the slots back (idempotent); call when the publish succeeded or failed."""
        if not self.released:
            self.released = True
            self.admission.pending -= 1
            self.admission.unreserve(self.identity, self.jobs, self.job_ids)

    def grow(self, jobs: int) -> None:
        """Take tokens and reserve slots for ``jobs`` more (a batch, whose size is known only once parsed)."""
        self.decision = self.admission.submit_tokens(self.identity, jobs)
        self.admission.reserve(self.identity, jobs, self.decision.headers())
        self.jobs += jobs

    def __enter__(self) -> Reservation:
        return self

    def __exit__(self, *_: object) -> None:
        self.release()


class Admission:
    """Token buckets (submissions and reads apart), reserved job slots and open streams."""

    def __init__(self, settings: Settings, events: EventLog) -> None:
        self.settings = settings
        self.events = events
        self.limiter = RateLimiter()
        self.share = max(1, settings.gateway_count)
        self._reserved: dict[str, int] = defaultdict(int)
        self._bound: dict[str, set[str]] = {}  # ids of reserved jobs, which the event log may count too
        self._streams: dict[str, int] = defaultdict(int)
        self.pending = 0  # submissions admitted and not yet answered
        self._publishing: dict[object, float] = {}  # publishes awaiting their confirm, oldest first: start time

    def _take(self, bucket: str, identity: Identity, rate: float, burst: int, cost: int, what: str) -> Decision:
        decision = self.limiter.check(bucket, rate, burst, cost)
        if not decision.allowed:
            raise ApiError(
                429,
                "rate_limited",
                f"Too many {what}: this client may make {burst} at once and {rate:g} per second after "
                f"that. Retry after {decision.headers()['Retry-After']} s.",
                decision.headers(),
                reason="rate_limited",
            )
        return decision

    def submit_tokens(self, identity: Identity, jobs: int) -> Decision:
        """Take ``jobs`` submission tokens; 429 when the bucket is short."""
        tier = identity.tier
        rate = tier.rate_per_s / self.share
        return self._take("submit:" + identity.key, identity, rate, tier.burst, jobs, "submissions")

    @contextlib.contextmanager
    def publishing(self) -> Iterator[None]:
        """Time one publish until RabbitMQ confirmed (or refused) it, for :meth:`overloaded`."""
        token = object()
        self._publishing[token] = time.monotonic()
        try:
            yield
        finally:
            del self._publishing[token]

    def overloaded(self) -> ApiError | None:
        """The 503 a new submission gets now: ``max_pending_submits`` in hand, or publishes confirmed too slowly."""
        bound = self.settings.max_pending_submits
        retry = self.settings.retry_after_s
        if bound and self.pending >= bound:
            why = f"This gateway is handling {bound} submissions already"
        elif self._confirms_late():
            why = f"This gateway's submissions wait more than {self.settings.shed_after_ms} ms for the job queue"
        else:
            return None
        return ApiError(
            503, "overloaded", f"{why}; try again in {retry} s.", {"Retry-After": str(retry)}, reason="overloaded"
        )

    def _confirms_late(self) -> bool:
        limit = self.settings.shed_after_ms
        if not limit or len(self._publishing) < SHED_MIN_PUBLISHING:
            return False
        oldest = next(iter(self._publishing.values()))
        return (time.monotonic() - oldest) * 1000 > limit

    def submit(self, identity: Identity, jobs: int = 1) -> Reservation:
        """Take ``jobs`` tokens and reserve ``jobs`` job slots; 429 when either is short, 503 when overloaded."""
        shed = self.overloaded()
        if shed is not None:
            raise shed  # before taking any token: the client was refused for our load, not its own
        decision = self.submit_tokens(identity, jobs)
        self.reserve(identity, jobs, decision.headers())
        self.pending += 1
        return Reservation(self, identity, jobs, decision)

    def read(self, identity: Identity, cost: int = 1) -> Decision:
        """Take read tokens (job state, streams, Judge0 polls); 429 when the client polls too fast."""
        tier = identity.tier
        factor = self.settings.read_rate_factor
        rate = tier.rate_per_s * factor / self.share
        burst = max(1, int(tier.burst * factor))
        return self._take("read:" + identity.key, identity, rate, burst, cost, "reads")

    def held(self, identity: Identity) -> int:
        """Jobs the identity has queued or running, or is submitting now; each counted once."""
        in_flight = self.events.in_flight(identity.tag)
        bound = self._bound.get(identity.tag, ())
        both = sum(1 for job_id in bound if job_id in in_flight)
        return len(in_flight) + self._reserved.get(identity.tag, 0) - both

    def reserve(self, identity: Identity, jobs: int, headers: dict[str, str]) -> None:
        running = self.held(identity)
        allowed = identity.tier.max_concurrent_jobs
        if running + jobs > allowed:
            raise ApiError(
                429,
                "too_many_jobs",
                f"This client has {running} jobs queued or running; {jobs} more would pass the limit of "
                f"{allowed}. Wait for one to finish.",
                {**headers, "Retry-After": str(self.settings.retry_after_s)},
                reason="concurrency",
            )
        self._reserved[identity.tag] += jobs

    def bind(self, identity: Identity, job_id: str) -> None:
        self._bound.setdefault(identity.tag, set()).add(job_id)

    def unreserve(self, identity: Identity, jobs: int, job_ids: list[str]) -> None:
        left = self._reserved.get(identity.tag, 0) - jobs
        if left > 0:
            self._reserved[identity.tag] = left
        else:
            self._reserved.pop(identity.tag, None)
        bound = self._bound.get(identity.tag)
        if bound is not None:
            bound.difference_update(job_ids)
            if not bound:
                del self._bound[identity.tag]

    def open_stream(self, identity: Identity) -> None:
        """Count an event stream against the identity's allowance on this gateway; 429 when full."""
        if self._streams[identity.key] >= identity.tier.max_streams:
            if not self._streams[identity.key]:
                del self._streams[identity.key]
            raise ApiError(
                429,
                "too_many_streams",
                f"This client already has {identity.tier.max_streams} event streams open on this gateway.",
                {"Retry-After": str(self.settings.retry_after_s)},
                reason="streams",
            )
        self._streams[identity.key] += 1

    def close_stream(self, identity: Identity) -> None:
        self._streams[identity.key] -= 1
        if self._streams[identity.key] <= 0:
            del self._streams[identity.key]
