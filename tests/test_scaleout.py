"""The production shape: gateways and executors as separate processes, two or more of each.

Real RabbitMQ, real Docker, real sandboxes. Faults that only touch runbox's own processes
(SIGKILL of an executor or a gateway, two executors on one host, start orders, a taken port,
an unreachable engine) live here; restarts of RabbitMQ and the Docker engine, which disturb
every process on the machine, are in tests/test_faults.py.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import docker
import pytest

from tests.ledger import Load, metric, wait_ready, wait_unready
from tests.runbox_client import ROOT, Service

HELLO = {"language": "python", "source": "print('hello')"}
LOAD_ENV = {"RUNBOX_LANGUAGES": "python", "RUNBOX_ANONYMOUS_RATE_PER_S": "1000", "RUNBOX_ANONYMOUS_BURST": "1000",
            "RUNBOX_ANONYMOUS_MAX_CONCURRENT": "1000"}


def executor(prefix: str, named: bool = False, **env: str) -> Service:
    """An executor-only process; by default with the default (unique per process) identity."""
    svc = Service(roles="executor", prefix=prefix, **{**LOAD_ENV, **env})
    if not named:
        svc.env.pop("RUNBOX_EXECUTOR_NAME")
    return svc


def owned_sandboxes(pid: int) -> list[str]:
    """Sandbox containers made by the process ``pid`` on this host (the owner label)."""
    client = docker.from_env()
    try:
        # The executors are this process's children: the same host and pid namespace.
        owner = f"{socket.gethostname()}/{os.stat('/proc/self/ns/pid').st_ino}/{pid}"
        found = client.containers.list(all=True, sparse=True, filters={"label": [f"runbox.owner={owner}"]})
        return [c.id for c in found]
    finally:
        client.close()


@pytest.fixture()
def split(real_stack: None) -> Iterator[tuple[list[Service], list[Service]]]:
    """Two gateways started before any executor, then two executors, each its own process."""
    first = Service(roles="gateway", **LOAD_ENV)
    gateways = [first, Service(roles="gateway", prefix=first.prefix, **LOAD_ENV)]
    executors = [executor(first.prefix) for _ in range(2)]
    try:
        for svc in gateways:
            svc.start(wait_ready=False)
        for svc in gateways:
            assert wait_unready(svc, "no_executor")["message"]
        for svc in executors:
            svc.start()
        wait_ready(gateways + executors, "two executors started", executors=2)
        yield gateways, executors
    finally:
        for svc in gateways + executors:
            svc.stop()


def test_gateways_first_then_executors_counts_follow_every_change(split: tuple[list[Service], list[Service]]) -> None:
    gateways, executors = split
    for gw in gateways:
        assert metric(gw, "runbox_executors") == 2
        assert metric(gw, "runbox_queue_consumers", '{language="python"}') == 2
    assert gateways[0].client().run(HELLO)["result"]["stdout"] == "hello\n"

    executors[0].kill()
    wait_ready(gateways, "an executor was SIGKILLed", executors=1)
    for gw in gateways:
        assert metric(gw, "runbox_queue_consumers", '{language="python"}') == 1

    executors[1].stop()
    for gw in gateways:
        wait_unready(gw, "no_executor")
    job = gateways[1].client().submit_ok(HELLO)
    assert gateways[0].client().state(job)["status"] == "queued"

    executors[0].start()
    wait_ready(gateways, "an executor came back", executors=1)
    assert gateways[0].client().wait_state(job)["result"]["stdout"] == "hello\n"


def test_executor_sigkill_under_load_loses_nothing(split: tuple[list[Service], list[Service]]) -> None:
    gateways, executors = split
    load = Load([g.url for g in gateways], seed=1).start()
    time.sleep(4)
    victim = executors[0]
    assert victim.proc is not None
    pid = victim.proc.pid
    victim.kill()
    assert owned_sandboxes(pid), "a SIGKILLed executor leaves its sandboxes behind"
    replacement = executor(gateways[0].prefix).start()  # a new identity: it must still clean up
    executors.append(replacement)
    assert owned_sandboxes(pid) == [], "the successor on this host removed the dead executor's sandboxes"
    time.sleep(4)
    load.finish(gateways, "executor SIGKILL", executors=2)


def test_gateway_sigkill_under_load_loses_nothing(split: tuple[list[Service], list[Service]]) -> None:
    gateways, _ = split
    load = Load([g.url for g in gateways], seed=2).start()
    time.sleep(4)
    gateways[0].kill()
    time.sleep(1)
    gateways[0].start(wait_ready=False)
    time.sleep(3)
    load.finish(gateways, "gateway SIGKILL", executors=2)


def test_two_executors_on_one_host_keep_their_own_sandboxes(real_stack: None) -> None:
    # Executors first, gateway last: the other start order.
    first = executor(f"test-{time.time_ns():x}")
    second = executor(first.prefix)
    gateway = Service(roles="gateway", prefix=first.prefix, **LOAD_ENV)
    try:
        first.start()
        second.start()
        assert first.proc is not None and second.proc is not None
        mine, theirs = owned_sandboxes(first.proc.pid), owned_sandboxes(second.proc.pid)
        assert mine and theirs, "both executors keep warm sandboxes"
        gateway.start()
        wait_ready([gateway], "two executors and a gateway", executors=2)
        load = Load([gateway.url], seed=3).start()
        time.sleep(5)
        load.finish([gateway], "two executors on one host", executors=2)
        assert first.stop() == 0
        assert owned_sandboxes(first.proc.pid) == []
        assert owned_sandboxes(second.proc.pid), "stopping one executor left the other's sandboxes alone"
        wait_ready([gateway], "one of two executors stopped", executors=1)
        assert gateway.client().run(HELLO)["result"]["stdout"] == "hello\n"
    finally:
        for svc in (gateway, first, second):
            svc.stop()


def test_a_taken_port_ends_the_process_at_once(real_stack: None) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {**Service().env, "RUNBOX_PORT": str(port)}
        began = time.monotonic()
        proc = subprocess.run([sys.executable, "-m", "app"], cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=60, check=False)
        print(f"exited {proc.returncode} after {time.monotonic() - began:.1f} s")
    assert proc.returncode != 0
    assert f"127.0.0.1:{port}" in proc.stderr and "already in use" in proc.stderr
    assert "executor consuming" not in proc.stdout + proc.stderr


def test_executor_without_its_engine_is_not_ready_and_says_why(real_stack: None) -> None:
    svc = executor(f"test-{time.time_ns():x}", RUNBOX_DOCKER_URL="unix:///nonexistent/docker.sock")
    try:
        svc.start(wait_ready=False)
        error = wait_unready(svc, "engine_unavailable")
        assert "Docker engine is unreachable" in error["message"]
        assert svc.proc is not None and svc.proc.poll() is None, "it waits for the engine instead of exiting"
        assert svc.stop(signal.SIGTERM) == 0
    finally:
        svc.stop()
