"""Hostile admission: bursts past every cap, spoofed forwarding headers, anonymous playground,
unauthenticated metrics, and a Judge0 batch of expensive items. Identity rules are pure and
tested without a service; caps are tested against the real one."""

from __future__ import annotations

import concurrent.futures

import httpx
import pytest
from werkzeug.datastructures import Headers

from app.config import Settings
from app.gateway.identity import Identities, group
from app.web.errors import ApiError
from tests.abuse.conftest import BURST_KEY, KEY, Target

SLEEPY = {"language": "python", "source": "import time; time.sleep(3)"}


def test_forwarded_for_takes_the_right_most_untrusted_hop() -> None:
    ids = Identities(Settings(trusted_proxies=("10.0.0.0/8",)))
    # Whatever a client writes on the left, the hop our proxy saw is the client.
    assert ids.client_address("10.0.0.5", "1.2.3.4, 203.0.113.7") == "203.0.113.7"
    assert ids.client_address("10.0.0.5", "6.6.6.6, 203.0.113.7, 10.0.0.9") == "203.0.113.7"
    # An untrusted peer's header is ignored entirely.
    assert ids.client_address("198.51.100.1", "203.0.113.7") == "198.51.100.1"
    # Garbage in the chain stops the walk at the last trusted proxy.
    assert ids.client_address("10.0.0.5", "203.0.113.7, not-an-ip") == "10.0.0.5"
    assert ids.client_address("10.0.0.5", "") == "10.0.0.5"


def test_ipv6_clients_share_limits_per_64() -> None:
    assert group("2001:db8:1:2:aaaa::1") == group("2001:db8:1:2:ffff::9") == "2001:db8:1:2::/64"
    assert group("2001:db8:1:3::1") != group("2001:db8:1:2::1")
    assert group("::ffff:192.0.2.1") == "192.0.2.1"
    assert group("192.0.2.1") == "192.0.2.1"


def test_keys_required_means_required_unless_the_operator_opens_the_playground() -> None:
    closed = Identities(Settings(require_keys=True))
    with pytest.raises(ApiError) as refused:
        closed.identify(Headers({"X-Runbox-Playground": "1"}), "192.0.2.1", playground=True)
    assert refused.value.status == 401
    opened = Identities(Settings(require_keys=True, allow_anonymous_playground=True))
    assert opened.identify(Headers(), "192.0.2.1", playground=True).anonymous


def test_metrics_need_an_allowed_address_or_the_token(target: Target) -> None:
    with target.http() as http:
        (answer,) = target.refused(lambda: [http.get("/metrics")], "forbidden", status=403)
    assert "RUNBOX_METRICS" in answer.json()["error"]["message"]


def test_unknown_routes_and_methods_are_counted_4xx(target: Target) -> None:
    with target.http() as http:
        target.refused(lambda: [http.get("/api/v1/nothing-here")], "not_found", status=404)
        target.refused(lambda: [http.delete("/api/v1/languages")], "bad_request", status=405)


def test_submission_rate_is_cut_at_the_burst(target: Target) -> None:
    with target.http(Authorization=f"Bearer {KEY}") as keyed:  # 1/s, burst 2
        before = target.submitted()
        answers = [keyed.post("/api/v1/jobs", json={"language": "python", "source": "print(1)"}) for _ in range(5)]
    codes = [a.status_code for a in answers]
    assert codes[:2] == [202, 202] and set(codes[2:]) == {429}, codes
    assert all(a.json()["error"]["code"] == "rate_limited" for a in answers[2:])
    assert target.submitted() == before + 2


def test_simultaneous_burst_cannot_pass_the_jobs_cap(target: Target) -> None:
    before = target.submitted()
    headers = {"Authorization": f"Bearer {BURST_KEY}"}
    with httpx.Client(base_url=target.url, headers=headers, timeout=30) as http, concurrent.futures.ThreadPoolExecutor(
        16
    ) as pool:
        answers = list(pool.map(lambda _: http.post("/api/v1/jobs", json=SLEEPY), range(16)))
    codes = sorted(a.status_code for a in answers)
    # The tier allows three jobs at once: the slots are reserved before the publish, so a
    # burst of sixteen simultaneous submissions gets exactly three in.
    assert codes.count(202) == 3, codes
    assert all(a.json()["error"]["code"] == "too_many_jobs" for a in answers if a.status_code == 429)
    assert target.submitted() == before + 3


def test_judge0_batch_of_expensive_items_is_refused_whole(target: Target) -> None:
    expensive = {"language_id": 71, "source_code": "while True: pass", "wall_time_limit": 30, "cpu_time_limit": 30,
                 "memory_limit": 1024 * 1024}
    with target.http(Authorization=f"Bearer {BURST_KEY}") as http:
        (answer,) = target.refused(
            lambda: [http.post("/submissions/batch", json={"submissions": [expensive] * 20})], "concurrency",
            "judge0", 429,
        )
    assert "Retry-After" in answer.headers
