"""Warm pools, backpressure and fairness, observed through the real service and its metrics."""

from __future__ import annotations

import re
import threading
import time

from tests.runbox_client import Client, Service

HELLO = {"language": "python", "source": "print('hi')"}
SLOW = {"language": "python", "source": "import time\ntime.sleep(1.5)\nprint('slow')"}
OPEN = {"RUNBOX_ANONYMOUS_RATE_PER_S": "1000", "RUNBOX_ANONYMOUS_BURST": "1000",
        "RUNBOX_ANONYMOUS_MAX_CONCURRENT": "1000"}


def metric(client: Client, name: str, **labels: str) -> float:
    text = client.http.get("/metrics").text
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line.split(" ")[0]))
        if all(found.get(k) == v for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def wait_metric(client: Client, name: str, value: float, timeout: float = 60, **labels: str) -> None:
    end = time.monotonic() + timeout
    while metric(client, name, **labels) < value:
        assert time.monotonic() < end, f"{name}{labels} never reached {value}"
        time.sleep(0.1)


def test_warm_pool_serves_jobs_without_creating_containers(real_stack: None) -> None:
    svc = Service(RUNBOX_LANGUAGES="python", RUNBOX_POOL_SIZE="3", **OPEN).start()
    try:
        client = svc.client()
        wait_metric(client, "runbox_pool_containers", 3, language="python", state="idle")
        created = metric(client, "runbox_container_events_total", language="python", event="created")
        for _ in range(5):
            assert client.run(HELLO)["result"]["stdout"] == "hi\n"
        # Counted once a container's scrub says ready, which may come just after the last result.
        wait_metric(client, "runbox_container_events_total", 5, timeout=10, language="python", event="reused")
        assert metric(client, "runbox_container_events_total", language="python", event="recycled") == 0
        # Reuse, not creation, served the jobs.
        assert metric(client, "runbox_container_events_total", language="python", event="created") == created
        # A job asking for non-default memory gets a fresh container of its own, removed after.
        before = metric(client, "runbox_container_events_total", language="python", event="created")
        state = client.run({**HELLO, "limits": {"memory_mb": 128}})
        assert state["status"] == "completed"
        assert metric(client, "runbox_container_events_total", language="python", event="created") >= before + 1
        wait_metric(client, "runbox_container_events_total", 1, language="python", event="recycled")
    finally:
        svc.stop()


def test_containers_are_replaced_only_when_retired_and_in_the_background(real_stack: None) -> None:
    # Two run slots, a pool of three, each container retired after four jobs: sequential jobs
    # and a burst beyond the slots must be served by the pool's own containers, a container
    # started only to replace a retired one (never a surplus started while another was being
    # scrubbed and removed again), and the pool back at its size after the jobs.
    env = {"RUNBOX_LANGUAGES": "python", "RUNBOX_MAX_RUNNING": "2", "RUNBOX_POOL_MIN": "1",
           "RUNBOX_POOL_SIZE": "3", "RUNBOX_POOL_MAX": "6", "RUNBOX_CONTAINER_MAX_USES": "4", **OPEN}
    executor = Service(roles="executor", **env).start()
    gateway = Service(roles="gateway", prefix=executor.prefix, **env).start()
    try:
        client, stats = gateway.client(), executor.client()
        wait_metric(stats, "runbox_pool_containers", 3, language="python", state="idle")
        created = metric(stats, "runbox_container_events_total", language="python", event="created")
        for _ in range(4):
            assert client.run(HELLO)["result"]["stdout"] == "hi\n"
        burst = [client.submit_ok(HELLO) for _ in range(8)]
        for job_id in burst:
            state = client.wait_state(job_id, timeout=60)
            assert state["status"] == "completed" and state["result"]["stdout"] == "hi\n", state
        wait_metric(stats, "runbox_pool_containers", 3, language="python", state="idle")
        # A retired container's successor may be idle before the engine has finished removing it.
        retired = metric(stats, "runbox_container_events_total", language="python", event="recycled")
        wait_metric(stats, "runbox_container_events_total", retired, language="python", event="removed")
        counts = {event: metric(stats, "runbox_container_events_total", language="python", event=event)
                  for event in ("created", "recycled", "removed")}
        assert counts["recycled"] >= 1, counts  # 12 jobs on three containers: some served four
        assert counts["created"] - created == counts["recycled"] == counts["removed"], counts
        assert metric(stats, "runbox_pool_containers", language="python") == 3
    finally:
        gateway.stop()
        executor.stop()


def test_full_queue_answers_503_with_retry_after(real_stack: None) -> None:
    svc = Service(RUNBOX_LANGUAGES="python", RUNBOX_QUEUE_MAX_LENGTH="2", RUNBOX_MAX_RUNNING="1",
                  RUNBOX_POOL_MIN="1", RUNBOX_POOL_SIZE="1", RUNBOX_POOL_MAX="1", **OPEN).start()
    try:
        client = svc.client()
        answers = [client.submit(SLOW) for _ in range(8)]
        codes = [a.status_code for a in answers]
        assert 503 in codes, codes
        refused = next(a for a in answers if a.status_code == 503)
        assert refused.json()["error"]["code"] == "queue_full"
        assert int(refused.headers["Retry-After"]) >= 1
        accepted = [a.json()["id"] for a in answers if a.status_code == 202]
        # The executor holds at most its capacity; the rest waited durably in RabbitMQ.
        assert metric(client, "runbox_executor_waiting_jobs", language="python") <= 1
        for job_id in accepted:
            assert client.wait_state(job_id, timeout=60)["status"] == "completed"
        assert metric(client, "runbox_rejections_total", reason="queue_full") >= 1
    finally:
        svc.stop()


def test_flood_in_one_language_does_not_starve_another(real_stack: None) -> None:
    svc = Service(RUNBOX_LANGUAGES="python,bash", RUNBOX_MAX_RUNNING="2", RUNBOX_POOL_SIZE="2",
                  RUNBOX_POOL_MAX="2", **OPEN).start()
    try:
        client = svc.client()
        flood = [client.submit_ok(SLOW) for _ in range(12)]
        time.sleep(0.5)
        began = time.monotonic()
        other = client.run({"language": "bash", "source": "echo fair"})
        took = time.monotonic() - began
        assert other["result"]["stdout"] == "fair\n"
        assert took < 5, f"bash waited {took:.1f}s behind the python flood"
        still_waiting = sum(client.state(j)["status"] in ("queued", "running") for j in flood)
        assert still_waiting > 4, "the python flood was still going when bash ran"
    finally:  # the flood is not waited out: stopping drains the running jobs, the queue goes with the prefix
        svc.stop()


def test_one_identity_cannot_hold_every_slot(real_stack: None) -> None:
    svc = Service(RUNBOX_LANGUAGES="python", RUNBOX_ANONYMOUS_MAX_CONCURRENT="2",
                  RUNBOX_ANONYMOUS_BURST="100", RUNBOX_ANONYMOUS_RATE_PER_S="100",
                  RUNBOX_API_KEYS="standard:plain:other-user").start()
    try:
        client = svc.client()
        first = [client.submit(SLOW) for _ in range(2)]
        assert [r.status_code for r in first] == [202, 202]
        third = client.submit(SLOW)
        assert third.status_code == 429
        assert third.json()["error"]["code"] == "too_many_jobs"
        # Someone else still gets in at once.
        other = svc.client(Authorization="Bearer other-user")
        assert other.run(HELLO)["status"] == "completed"
        for r in first:
            client.wait_state(r.json()["id"])
        assert client.submit(HELLO).status_code == 202
    finally:
        svc.stop()


def test_idle_languages_give_memory_to_a_busy_one(real_stack: None) -> None:
    # Room for about three warm containers in all: python's idle pool holds most of it.
    svc = Service(RUNBOX_LANGUAGES="python,bash", RUNBOX_MEMORY_BUDGET_MB="930", RUNBOX_POOL_MIN="0",
                  RUNBOX_POOL_SIZE="3", RUNBOX_POOL_MAX="3", **OPEN).start()
    try:
        results: list[dict] = []

        def run_bash() -> None:
            c = Client(svc.url)
            results.append(c.run({"language": "bash", "source": "sleep 1; echo ok"}))
            c.close()

        threads = [threading.Thread(target=run_bash) for _ in range(3)]
        began = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join(90)
        assert [r["result"]["stdout"] for r in results] == ["ok\n"] * 3
        assert time.monotonic() - began < 30, "bash waited for python's idle containers to expire"
    finally:
        svc.stop()
