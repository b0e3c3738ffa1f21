"""Token-bucket arithmetic with an injected clock, and the limiter as a client meets it over HTTP."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from app.ratelimit import RateLimiter, TokenBucket
from tests.runbox_client import Service


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_bucket_allows_the_burst_then_refuses() -> None:
    bucket = TokenBucket(rate=2.0, burst=5, now=0.0)
    decisions = [bucket.take(0.0) for _ in range(6)]
    assert [d.allowed for d in decisions] == [True] * 5 + [False]
    assert [d.remaining for d in decisions[:5]] == [4, 3, 2, 1, 0]
    refused = decisions[-1]
    assert refused.retry_after_s == pytest.approx(0.5)
    assert refused.headers()["Retry-After"] == "1"
    assert refused.reset_s == pytest.approx(2.5)


def test_bucket_refills_at_the_rate_up_to_the_burst() -> None:
    bucket = TokenBucket(rate=2.0, burst=5, now=0.0)
    for _ in range(5):
        bucket.take(0.0)
    assert not bucket.take(0.49).allowed
    assert bucket.take(0.5).allowed  # one token back after 1/rate seconds
    assert not bucket.take(0.5).allowed
    later = bucket.take(100.0)  # never more than the burst, however long it waited
    assert later.allowed and later.remaining == 4


def test_limiter_keeps_identities_apart() -> None:
    clock = Clock()
    limiter = RateLimiter(clock)
    assert all(limiter.check("a", 1.0, 2).allowed for _ in range(2))
    assert not limiter.check("a", 1.0, 2).allowed
    assert limiter.check("b", 1.0, 2).allowed
    clock.now += 1.0
    assert limiter.check("a", 1.0, 2).allowed


def test_limiter_forgets_least_recent_identities() -> None:
    limiter = RateLimiter(Clock(), max_identities=2)
    limiter.check("a", 1, 1)
    limiter.check("b", 1, 1)
    limiter.check("c", 1, 1)
    assert limiter.check("a", 1, 1).allowed  # "a" was forgotten, so it starts full again


@pytest.fixture(scope="module")
def limited(real_stack: None) -> Iterator[Service]:
    svc = Service(
        RUNBOX_LANGUAGES="python",  # the limiter is the gateway's: one warm pool is enough to run what it lets in
        RUNBOX_ANONYMOUS_BURST="4",
        # One token back every 4 s: slow enough that a busy machine taking a second over the
        # first five submissions does not refill the bucket before the fifth (seen in CI at 2/s).
        RUNBOX_ANONYMOUS_RATE_PER_S="0.25",
        RUNBOX_API_KEYS="premium:plain:test-premium-key",
        RUNBOX_TIERS="premium=50:100:16:8",
    ).start()
    yield svc
    svc.stop()


def test_http_burst_is_cut_at_the_configured_size_and_refills(limited: Service) -> None:
    client = limited.client()
    body = {"language": "python", "source": "print(1)"}
    answers = [client.submit(body) for _ in range(6)]
    codes = [a.status_code for a in answers]
    assert codes[:4] == [202] * 4, codes
    assert codes[4] == 429, codes
    refused = answers[4]
    assert refused.json()["error"]["code"] == "rate_limited"
    assert int(refused.headers["Retry-After"]) >= 1
    assert refused.headers["RateLimit-Limit"] == "4"
    assert refused.headers["RateLimit-Remaining"] == "0"
    assert [a.headers["RateLimit-Remaining"] for a in answers[:4]] == ["3", "2", "1", "0"]
    time.sleep(4.2)  # at one per 4 s one token is back
    assert client.submit(body).status_code == 202
    assert client.submit(body).status_code == 429
    # An API key has its own bucket and tier.
    keyed = limited.client(Authorization="Bearer test-premium-key")
    assert all(keyed.submit(body).status_code == 202 for _ in range(6))
    metrics = client.http.get("/metrics").text
    assert 'runbox_rejections_total{reason="rate_limited"}' in metrics


def test_unknown_key_is_401_not_a_crash(limited: Service) -> None:
    for header in ("Bearer wrong", "Basic abc", "Bearer"):
        response = limited.client(Authorization=header).submit({"language": "python", "source": "1"})
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "unauthorized"


def test_forwarded_for_only_counts_from_trusted_proxies(real_stack: None) -> None:
    body = {"language": "python", "source": "print(1)"}
    env = {"RUNBOX_LANGUAGES": "python", "RUNBOX_ANONYMOUS_BURST": "2", "RUNBOX_ANONYMOUS_RATE_PER_S": "0.01"}
    untrusted = Service(**env).start()
    try:
        client = untrusted.client()
        # A client cannot spoof its way past the limiter with made-up X-Forwarded-For values.
        codes = [client.submit(body, headers={"X-Forwarded-For": f"203.0.113.{i}"}).status_code for i in range(4)]
        assert codes == [202, 202, 429, 429]
    finally:
        untrusted.stop()
    proxied = Service(RUNBOX_TRUSTED_PROXIES="127.0.0.1/32", **env).start()
    try:
        client = proxied.client()
        # Behind a trusted proxy, each forwarded client has its own bucket.
        for i in range(3):
            codes = [client.submit(body, headers={"X-Forwarded-For": f"198.51.100.{i}"}).status_code for _ in range(3)]
            assert codes == [202, 202, 429]
    finally:
        proxied.stop()


def test_keys_required_keeps_anonymous_out_except_the_playground(real_stack: None) -> None:
    body = {"language": "python", "source": "print('p')"}
    keys = {"RUNBOX_LANGUAGES": "python", "RUNBOX_REQUIRE_KEYS": "true", "RUNBOX_API_KEYS": "standard:plain:k1"}
    svc = Service(RUNBOX_ALLOW_ANONYMOUS_PLAYGROUND="true", **keys).start()
    try:
        anonymous = svc.client()
        refused = anonymous.submit(body)
        assert refused.status_code == 401 and refused.headers["WWW-Authenticate"] == "Bearer"
        from_playground = anonymous.submit(body, headers={"X-Runbox-Playground": "1"})
        assert from_playground.status_code == 202
        keyed = svc.client(Authorization="Bearer k1")
        job_id = keyed.submit_ok(body)
        # Following a job needs only its id (EventSource cannot send headers).
        assert anonymous.events(job_id)[-1].data["result"]["stdout"] == "p\n"
    finally:
        svc.stop()
    closed = Service(RUNBOX_ALLOW_ANONYMOUS_PLAYGROUND="false", **keys).start()
    try:
        assert closed.client().submit(body, headers={"X-Runbox-Playground": "1"}).status_code == 401
    finally:
        closed.stop()
