"""Never lose a job: faults injected for real (SIGKILL, SIGTERM, RabbitMQ and Docker restarts).

The RabbitMQ and Docker engine restarts disturb every process on the machine: run this file
alone, under the exclusive stack lock (``flock -x /tmp/runbox-stack.lock``). The engine and
RabbitMQ are always left running.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator

import docker
import httpx
import pytest

from tests.ledger import Load, wait_ready, wait_unready
from tests.runbox_client import Client, Service

SLOW = {
    "language": "python",
    "source": "import time\nfor i in range(6):\n    print('tick', i, flush=True)\n    time.sleep(0.5)\nprint('done')",
}
SLOW_OUT = "".join(f"tick {i}\n" for i in range(6)) + "done\n"
HELLO = {"language": "python", "source": "print('hello')"}
LOAD_ENV = {"RUNBOX_LANGUAGES": "python", "RUNBOX_ANONYMOUS_RATE_PER_S": "1000", "RUNBOX_ANONYMOUS_BURST": "1000",
            "RUNBOX_ANONYMOUS_MAX_CONCURRENT": "1000"}


def sandboxes(executor: str) -> list[str]:
    client = docker.from_env()
    try:
        # sparse: no inspect per container, so one being removed meanwhile is no 404
        return [c.id for c in client.containers.list(
            all=True, sparse=True, filters={"label": ["runbox.role=sandbox", f"runbox.executor={executor}"]})]
    finally:
        client.close()


def wait_for(predicate, timeout: float = 60, what: str = "condition") -> None:  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def wait_started(client: Client, job_id: str) -> None:
    wait_for(lambda: client.state(job_id)["status"] == "running", what="the job to start")


@pytest.fixture()
def gateway(real_stack: None) -> Iterator[Service]:
    svc = Service(roles="gateway", RUNBOX_LANGUAGES="python").start(wait_ready=False)
    yield svc
    svc.stop()


def executor_for(gateway: Service, name: str | None = None, **env: str) -> Service:
    svc = Service(roles="executor", prefix=gateway.prefix, RUNBOX_LANGUAGES="python", **env)
    if name:
        svc.env["RUNBOX_EXECUTOR_NAME"] = name
    return svc


def test_killed_executor_job_runs_again_and_completes(gateway: Service) -> None:
    ex = executor_for(gateway).start()
    name = ex.env["RUNBOX_EXECUTOR_NAME"]
    client = gateway.client()
    job_id = client.submit_ok(SLOW)
    wait_started(client, job_id)
    time.sleep(0.8)
    ex.kill()
    assert sandboxes(name), "a SIGKILLed executor leaves its containers behind"
    left = set(sandboxes(name))
    restarted = executor_for(gateway, name).start()
    try:
        events = client.events(job_id, timeout=90)
        final = events[-1].data
        assert final["status"] == "completed"
        assert final["result"]["stdout"] == SLOW_OUT, "the final result holds only the last attempt's output"
        attempts = [e.data["attempt"] for e in events if e.name == "started"]
        assert attempts == [1, 2]
        # Every output event says which attempt wrote it; the second attempt's are complete.
        second = "".join(e.data["data"] for e in events if e.name == "stdout" and e.data["attempt"] == 2)
        assert second == SLOW_OUT
        assert [e.id for e in events] == list(range(1, len(events) + 1))
        assert not left & set(sandboxes(name)), "the restarted executor removed its predecessor's containers"
        assert client.run(HELLO)["status"] == "completed"
    finally:
        restarted.stop()
    assert sandboxes(name) == []


def test_job_that_crashes_every_executor_ends_failed_through_dead_letters(real_stack: None) -> None:
    gateway = Service(roles="gateway", RUNBOX_LANGUAGES="python", RUNBOX_DELIVERY_LIMIT="1").start(wait_ready=False)
    marker = "CRASH-THE-EXECUTOR-" + gateway.prefix
    env = {"RUNBOX_FAULT_CRASH_MARKER": marker, "RUNBOX_DELIVERY_LIMIT": "1"}
    gateway_env_limit = executor_for(gateway, **env)
    name = gateway_env_limit.env["RUNBOX_EXECUTOR_NAME"]
    ex = gateway_env_limit.start()
    client = gateway.client()
    poison = client.submit_ok({"language": "python", "source": f"print('{marker}')"})
    crashes = 0
    end = time.monotonic() + 120
    while client.state(poison)["status"] in ("queued", "running") and time.monotonic() < end:
        if ex.proc is not None and ex.proc.poll() is not None:
            crashes += 1
            # A supervisor's restart: the poison job may crash it again before it is ready.
            ex = executor_for(gateway, name, **env)
            with contextlib.suppress(RuntimeError):
                ex.start(wait_ready=False)
        time.sleep(0.2)
    try:
        state = client.state(poison)
        assert state["status"] == "failed"
        assert "attempted" in state["result"]["error"]
        assert crashes >= 2  # the first delivery and the one allowed redelivery
        assert client.run(HELLO)["result"]["stdout"] == "hello\n", "other jobs carry on"
    finally:
        ex.stop()
        gateway.stop()


def test_sigterm_drains_the_executor(gateway: Service) -> None:
    ex = executor_for(gateway).start()
    name = ex.env["RUNBOX_EXECUTOR_NAME"]
    client = gateway.client()
    job_id = client.submit_ok(SLOW)
    wait_started(client, job_id)
    assert ex.stop(signal.SIGTERM, timeout=60) == 0
    state = client.state(job_id)
    assert state["status"] == "completed", "a draining executor finishes what it runs"
    assert state["result"]["stdout"] == SLOW_OUT
    assert sandboxes(name) == [], "a drained executor removes its containers"
    # No executor now: the gateway is not ready and new jobs wait durably.
    assert client.http.get("/readyz").status_code == 503
    waiting = client.submit_ok(HELLO)
    time.sleep(1)
    assert client.state(waiting)["status"] == "queued"
    ex2 = executor_for(gateway).start()
    try:
        assert client.wait_state(waiting)["status"] == "completed"
    finally:
        ex2.stop()


def test_gateway_restart_while_clients_watch(real_stack: None) -> None:
    ex = Service(roles="executor", RUNBOX_LANGUAGES="python").start()
    gw = Service(roles="gateway", prefix=ex.prefix, RUNBOX_LANGUAGES="python").start()
    try:
        client = gw.client()
        job_id = client.submit_ok(SLOW)
        seen = []
        for event in client.iter_events(job_id):
            seen.append(event)
            if sum(e.name == "stdout" for e in seen) == 2:
                break
        client.close()
        gw.kill()
        gw.start()
        rest = gw.client().events(job_id, last_event_id=seen[-1].id)
        everything = seen + rest
        assert [e.id for e in everything] == list(range(1, len(everything) + 1))
        assert "".join(e.data["data"] for e in everything if e.name == "stdout") == SLOW_OUT
        assert everything[-1].data["status"] == "completed"
    finally:
        gw.stop()
        ex.stop()


def rabbitmq(*args: str) -> None:
    subprocess.run(["rabbitmqctl", *args], check=True, capture_output=True, timeout=120)


@pytest.fixture()
def split(real_stack: None) -> Iterator[tuple[list[Service], list[Service]]]:
    """The production shape: two gateway processes and two executor processes."""
    first = Service(roles="gateway", **LOAD_ENV)
    gateways = [first, Service(roles="gateway", prefix=first.prefix, **LOAD_ENV)]
    executors = [Service(roles="executor", prefix=first.prefix, **LOAD_ENV) for _ in range(2)]
    try:
        for svc in executors + gateways:
            svc.start()
        wait_ready(gateways, "start", executors=2)
        yield gateways, executors
    finally:
        for svc in gateways + executors:
            svc.stop()


def first_acceptance(url: str, timeout: float = 60) -> float:
    """Seconds until a submission is accepted again."""
    began = time.monotonic()
    with httpx.Client(timeout=10) as http:
        while time.monotonic() - began < timeout:
            with contextlib.suppress(httpx.HTTPError):
                if http.post(url + "/api/v1/jobs", json=HELLO).status_code == 202:
                    return time.monotonic() - began
            time.sleep(0.05)
    raise AssertionError(f"{url} accepted nothing for {timeout} s")


@pytest.mark.skipif(shutil.which("rabbitmqctl") is None, reason="needs a local RabbitMQ")
def test_rabbitmq_restart_under_load(split: tuple[list[Service], list[Service]]) -> None:
    gateways, executors = split
    load = Load([g.url for g in gateways], seed=11).start()
    time.sleep(3)
    rabbitmq("stop_app")
    time.sleep(1)
    for gw in gateways:
        assert wait_unready(gw, "broker_unavailable", timeout=30)
    began = time.monotonic()
    refused = httpx.post(gateways[0].url + "/api/v1/jobs", json=HELLO, timeout=30)
    assert refused.status_code == 503 and refused.headers.get("Retry-After"), "refused fast while RabbitMQ is down"
    assert time.monotonic() - began < 6, "a refusal is fast, never a hang"
    time.sleep(3)
    rabbitmq("start_app")
    rabbitmq("await_startup")
    # Readiness tells the truth again soon after RabbitMQ is back, in every process.
    wait_ready(gateways + executors, "RabbitMQ was back", executors=2)
    print(f"submissions accepted again {first_acceptance(gateways[0].url):.1f} s after RabbitMQ was back")
    time.sleep(3)
    load.finish(gateways, "a RabbitMQ restart", executors=2, also_ready=executors)
    assert load.summary.refused, "submissions while RabbitMQ was down are refused"


def restart_docker(outage_s: float = 0.0) -> None:
    """Stop the Docker engine, wait ``outage_s``, and start it again the way scripts/setup.sh does."""
    systemd = subprocess.run(["systemctl", "is-active", "docker"], capture_output=True, text=True,
                             check=False).stdout.strip() == "active" if shutil.which("systemctl") else False
    if systemd:
        subprocess.run(["systemctl", "stop", "docker"], check=True, timeout=120)
        time.sleep(outage_s)
        subprocess.run(["systemctl", "start", "docker"], check=True, timeout=120)
    else:
        subprocess.run(["pkill", "-TERM", "-x", "dockerd"], check=False)
        wait_for(lambda: subprocess.run(["pgrep", "-x", "dockerd"], capture_output=True).returncode != 0, 60,
                 "dockerd to stop")
        time.sleep(outage_s)
        with open("/var/log/runbox/dockerd.log", "ab") as log:
            # Its own session, so the engine outlives this test.
            subprocess.Popen(["dockerd"], stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True)
    wait_for(lambda: subprocess.run(["docker", "info"], capture_output=True).returncode == 0, 90, "dockerd")


def test_docker_engine_outage_under_load(split: tuple[list[Service], list[Service]]) -> None:
    gateways, executors = split
    load = Load([g.url for g in gateways], seed=12).start()
    time.sleep(3)
    outage = threading.Thread(target=restart_docker, args=(10.0,))  # executors check the engine every 2 s
    outage.start()
    for ex in executors:
        reason = wait_unready(ex, "engine_unavailable", timeout=30)
        assert "Docker engine" in reason["message"], reason
    outage.join()
    wait_ready(gateways + executors, "the engine was back", executors=2)
    time.sleep(3)
    load.finish(gateways, "a 10 s Docker engine outage", executors=2, also_ready=executors)
    client = gateways[0].client()
    finals = [client.wait_state(client.submit_ok(HELLO), timeout=120) for _ in range(3)]
    assert [f["result"]["stdout"] for f in finals] == ["hello\n"] * 3
