"""Never lose a job: faults injected for real (SIGKILL, SIGTERM, RabbitMQ and Docker restarts)."""

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

from tests.runbox_client import Client, Service

SLOW = {
    "language": "python",
    "source": "import time\nfor i in range(6):\n    print('tick', i, flush=True)\n    time.sleep(0.5)\nprint('done')",
}
SLOW_OUT = "".join(f"tick {i}\n" for i in range(6)) + "done\n"
HELLO = {"language": "python", "source": "print('hello')"}


def sandboxes(executor: str) -> list[str]:
    client = docker.from_env()
    try:
        return [c.id for c in client.containers.list(
            all=True, filters={"label": ["runbox.role=sandbox", f"runbox.executor={executor}"]})]
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
    ex = Service(RUNBOX_LANGUAGES="python").start()
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


@pytest.mark.skipif(shutil.which("rabbitmqctl") is None, reason="needs a local RabbitMQ")
def test_rabbitmq_restart_under_load(real_stack: None) -> None:
    svc = Service(RUNBOX_LANGUAGES="python", RUNBOX_ANONYMOUS_BURST="1000", RUNBOX_ANONYMOUS_RATE_PER_S="1000",
                  RUNBOX_ANONYMOUS_MAX_CONCURRENT="1000").start()
    client = svc.client()
    accepted: list[str] = []
    refused: list[float] = []
    stop = threading.Event()

    def submitter() -> None:
        c = Client(svc.url)
        while not stop.is_set():
            began = time.monotonic()
            try:
                response = c.submit({"language": "python", "source": "import time\ntime.sleep(0.3)\nprint('ok')"})
            except httpx.HTTPError:
                continue
            if response.status_code == 202:
                accepted.append(response.json()["id"])
            else:
                assert response.status_code == 503, response.text
                assert response.headers.get("Retry-After")
                refused.append(time.monotonic() - began)
            time.sleep(0.05)
        c.close()

    threads = [threading.Thread(target=submitter) for _ in range(3)]
    try:
        for t in threads:
            t.start()
        time.sleep(2)
        rabbitmq("stop_app")
        time.sleep(3)
        rabbitmq("start_app")
        rabbitmq("await_startup")
        time.sleep(3)
        stop.set()
        for t in threads:
            t.join(30)
        assert refused, "submissions while RabbitMQ was down are refused"
        assert max(refused) < 6, "refusals are fast, never a hang"
        assert len(accepted) > 10
        wait_for(lambda: svc.client().http.get("/readyz").status_code == 200, 60, "readiness after restart")
        finals = {job_id: client.wait_state(job_id, timeout=120)["status"] for job_id in accepted}
        assert set(finals.values()) == {"completed"}, finals
    finally:
        stop.set()
        svc.stop()


def restart_docker() -> None:
    """Stop the Docker engine and start it again the way scripts/setup.sh does."""
    systemd = subprocess.run(["systemctl", "is-active", "docker"], capture_output=True, text=True,
                             check=False).stdout.strip() == "active" if shutil.which("systemctl") else False
    if systemd:
        subprocess.run(["systemctl", "restart", "docker"], check=True, timeout=120)
    else:
        subprocess.run(["pkill", "-TERM", "-x", "dockerd"], check=False)
        wait_for(lambda: subprocess.run(["pgrep", "-x", "dockerd"], capture_output=True).returncode != 0, 60,
                 "dockerd to stop")
        with open("/var/log/runbox/dockerd.log", "ab") as log:
            subprocess.Popen(["dockerd"], stdout=log, stderr=log, start_new_session=True)
    wait_for(lambda: subprocess.run(["docker", "info"], capture_output=True).returncode == 0, 90, "dockerd")


def test_docker_engine_restart(real_stack: None) -> None:
    svc = Service(RUNBOX_LANGUAGES="python").start()
    try:
        client = svc.client()
        assert client.run(HELLO)["status"] == "completed"
        restart_docker()
        jobs = [client.submit_ok(HELLO) for _ in range(5)]
        finals = [client.wait_state(j, timeout=180) for j in jobs]
        assert [f["status"] for f in finals] == ["completed"] * 5
        assert all(f["result"]["stdout"] == "hello\n" for f in finals)
    finally:
        svc.stop()
