"""Token buckets per identity, with an injected clock so the arithmetic is testable.

Each identity's bucket holds up to ``burst`` tokens and refills at ``rate`` tokens per
second; a request takes one token or is refused with the time until one is back. With
several gateways, each is configured with its share of the deployment's rate (the rate
divided by ``RUNBOX_GATEWAY_COUNT``), so the whole deployment admits the configured rate.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Decision:
    allowed: bool
    limit: int  # the bucket's size
    remaining: int  # whole tokens left after this request
    reset_s: float  # seconds until the bucket is full again
    retry_after_s: float  # seconds until one token is back (0 when allowed)

    def headers(self) -> dict[str, str]:
        headers = {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(math.ceil(self.reset_s)),
        }
        if not self.allowed:
            headers["Retry-After"] = str(max(1, math.ceil(self.retry_after_s)))
        return headers


class TokenBucket:
    """One bucket; ``take`` is all the arithmetic there is."""

    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = float(burst)
        self.stamp = now

    def take(self, now: float, cost: float = 1.0) -> Decision:
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        allowed = self.tokens >= cost
        if allowed:
            self.tokens -= cost
        missing = self.burst - self.tokens
        return Decision(
            allowed=allowed,
            limit=self.burst,
            remaining=int(self.tokens),
            reset_s=missing / self.rate if self.rate > 0 else math.inf,
            retry_after_s=0.0 if allowed else (cost - self.tokens) / self.rate if self.rate > 0 else math.inf,
        )


class RateLimiter:
    """Buckets keyed by identity, at most ``max_identities`` of them (least recently used go first)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, max_identities: int = 100_000) -> None:
        self.clock = clock
        self.max_identities = max_identities
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def check(self, identity: str, rate: float, burst: int, cost: int = 1) -> Decision:
        """Take ``cost`` tokens from ``identity``'s bucket (made with ``rate`` and ``burst``)."""
        now = self.clock()
        bucket = self._buckets.get(identity)
        if bucket is None or bucket.rate != rate or bucket.burst != burst:
            bucket = TokenBucket(rate, burst, now)
            self._buckets[identity] = bucket
            if len(self._buckets) > self.max_identities:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(identity)
        return bucket.take(now, cost)
