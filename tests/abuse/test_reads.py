"""Hostile reads: made-up and old ids in bulk, streams past the cap, polling past the read rate.

An id no gateway issued is refused from its check digits alone; an old one is read back
through the bounded replay machinery; a job whose history the stream no longer keeps is 410.
"""

from __future__ import annotations

import concurrent.futures
import secrets
import threading
import time

import httpx

from app.config import Settings
from app.messages import new_job_id
from tests.abuse.conftest import KEY, Target


def made_up(age_s: float) -> str:
    """An id shaped like ours, from ``age_s`` ago, with random (wrong) check digits."""
    millis = int((time.time() - age_s) * 1000)
    return f"{millis:012x}{secrets.token_hex(10)}"


def forged(target: Target, age_s: float) -> str:
    """An id with valid check digits (the key derived from the broker, as the service derives it)."""
    env = target.service.env
    settings = Settings(amqp_url=env.get("RUNBOX_AMQP_URL", Settings().amqp_url), amqp_prefix=target.service.prefix)
    return new_job_id(time.time() - age_s, settings.job_id_key)


def parallel(calls: list, workers: int = 40) -> list[httpx.Response]:
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        return list(pool.map(lambda call: call(), calls))


def test_made_up_ids_in_bulk_are_fast_404s_in_every_api(target: Target) -> None:
    ids = [made_up(20 * 3600) for _ in range(60)]
    with target.http() as http:
        target.refused(lambda: parallel([lambda i=i: http.get(f"/api/v1/jobs/{i}") for i in ids]), "not_found",
                       status=404)
        target.refused(lambda: parallel([lambda i=i: http.get(f"/api/v1/jobs/{i}/events") for i in ids[:20]]),
                       "not_found", status=404)
        target.refused(lambda: parallel([lambda i=i: http.get(f"/submissions/{i}") for i in ids[:20]]), "not_found",
                       "judge0", 404)
        for junk in ("nope", "0" * 32, "z" * 32, "1" * 5000):
            assert http.get(f"/api/v1/jobs/{junk}").status_code in (404, 414, 431)


def test_old_ids_with_valid_check_digits_share_bounded_replays(target: Target) -> None:
    ids = [forged(target, 20 * 3600) for _ in range(12)]
    with target.http() as http:
        answers = parallel([lambda i=i: http.get(f"/api/v1/jobs/{i}") for i in ids], workers=12)
        assert http.get("/healthz").status_code == 200
    # Never seen by this deployment: unknown (404), older than its stream (410) or, if the
    # bounded replays are all taken past their deadline, busy (503); never a hang or a crash.
    assert all(a.status_code in (404, 410, 503) for a in answers), [a.status_code for a in answers]
    assert all(set(a.json()) == {"error"} for a in answers)


def test_aged_out_history_is_410(target: Target) -> None:
    old = forged(target, 3 * 86400)  # the stream keeps one day
    with target.http() as http:
        (answer,) = target.refused(lambda: [http.get(f"/api/v1/jobs/{old}")], "expired", status=410)
    assert answer.json()["error"]["code"] == "expired"


def test_reads_are_rate_limited_per_identity(target: Target) -> None:
    job = made_up(10)
    with target.http(Authorization=f"Bearer {KEY}") as keyed:  # tier: 1/s, burst 2; reads: 2x that
        answers = target.refused(
            lambda: [r for r in (keyed.get(f"/api/v1/jobs/{job}") for _ in range(8)) if r.status_code == 429],
            "rate_limited", status=429,
        )
    assert answers and "Retry-After" in answers[0].headers


def test_streams_past_the_cap_are_429(target: Target) -> None:
    with target.http() as http:
        # A job that outlives the test, so the four streams stay open however slow the machine is.
        answer = http.post("/api/v1/jobs", json={"language": "python", "source": "import time; time.sleep(25)",
                                                 "limits": {"timeout_s": 30}})
        job = answer.json()["id"]
    opened = threading.Barrier(5)
    results: list[int] = []
    lock = threading.Lock()

    def hold() -> None:
        with httpx.Client(base_url=target.url, timeout=30) as c, c.stream("GET", f"/api/v1/jobs/{job}/events") as r:
            with lock:
                results.append(r.status_code)
            opened.wait()

    holders = [threading.Thread(target=hold) for _ in range(4)]  # the anonymous allowance is 4
    for holder in holders:
        holder.start()
    try:
        opened_ok = False
        end = time.monotonic() + 20
        while time.monotonic() < end and not opened_ok:
            with lock:
                opened_ok = len(results) == 4
            time.sleep(0.05)
        assert results == [200] * 4, results
        with target.http() as http:
            target.refused(lambda: parallel([lambda: http.get(f"/api/v1/jobs/{job}/events")] * 30), "streams",
                           status=429)
    finally:
        opened.wait()
        for holder in holders:
            holder.join()


def test_an_older_event_stream_is_used_as_it_is_and_bounded_by_a_policy() -> None:
    """A stream declared without ``x-max-length-bytes`` (an older runbox) cannot be redeclared
    with it (PRECONDITION_FAILED): the broker carries on with it, and the policy its log names
    gives it the byte bound.
    """
    import asyncio
    import subprocess

    import aio_pika
    from prometheus_client import CollectorRegistry

    from app.broker import Broker
    from app.languages import Registry
    from app.metrics import Metrics
    from tests.runbox_client import CREATED_PREFIXES, delete_prefixes

    prefix = f"test-{secrets.token_hex(4)}"
    CREATED_PREFIXES.add(prefix)
    settings = Settings(amqp_prefix=prefix)
    broker = Broker(settings, Metrics(CollectorRegistry()), "gateway", Registry.load(("python",)))
    old = {"x-queue-type": "stream", "x-max-age": settings.events_max_age}

    async def scenario() -> tuple[bool, bool]:
        connection = await aio_pika.connect(settings.amqp_urls[0])
        try:
            async with connection.channel() as channel:
                await channel.declare_queue(broker.names.events, durable=True, arguments=old)
            kept = await broker.declare_events(connection)  # no PRECONDITION_FAILED out of it
            fresh = Broker(Settings(amqp_prefix=prefix + "-new"), broker.metrics, "gateway", broker.registry)
            CREATED_PREFIXES.add(prefix + "-new")
            return kept, await fresh.declare_events(connection)
        finally:
            await connection.close()

    kept, declared = asyncio.run(scenario())
    assert (kept, declared) == (False, True)
    policy = f"{broker.names.events}-bounds"
    try:
        subprocess.run(broker.events_policy_command(), shell=True, check=True, capture_output=True, timeout=60)
        listed = subprocess.run(["rabbitmqctl", "-q", "list_queues", "name", "policy"], capture_output=True,
                                text=True, check=True, timeout=60).stdout
        assert f"{broker.names.events}\t{policy}" in listed
    finally:
        subprocess.run(["rabbitmqctl", "-q", "clear_policy", policy], capture_output=True, timeout=60)
        delete_prefixes({prefix, prefix + "-new"})
