"""A three-node RabbitMQ cluster: losing the node that leads the job queue and the event stream.

The cluster is made by ``scripts/rabbitmq-cluster.sh`` from three extra nodes of this
machine's RabbitMQ (their own names, ports and directories; the default node is never
touched). Gateways and executors run as separate processes, two of each, configured with
every node (``RUNBOX_AMQP_URL``) and three replicas per queue and stream
(``RUNBOX_AMQP_QUORUM_SIZE=3``). Under load, the leader of the job queue and of the event
stream is SIGKILLed: no accepted job and no event may be lost, and every process carries on
through the other nodes.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.ledger import Load, wait_ready
from tests.runbox_client import ROOT, Service

SCRIPT = ROOT / "scripts" / "rabbitmq-cluster.sh"
ENV = {"RUNBOX_LANGUAGES": "python", "RUNBOX_ANONYMOUS_RATE_PER_S": "1000", "RUNBOX_ANONYMOUS_BURST": "1000",
       "RUNBOX_ANONYMOUS_MAX_CONCURRENT": "1000", "RUNBOX_AMQP_QUORUM_SIZE": "3"}


def cluster(*args: str) -> str:
    return subprocess.run(["bash", str(SCRIPT), *args], check=True, capture_output=True, text=True,
                          timeout=300).stdout.strip()


def ctl(*args: str) -> str:
    return subprocess.run(["rabbitmqctl", "-q", "-n", f"runbox-c1@{node_host()}", *args], check=True,
                          capture_output=True, text=True, timeout=60).stdout


def node_host() -> str:
    return subprocess.run(["hostname", "-s"], capture_output=True, text=True, check=True).stdout.strip()


@pytest.fixture(scope="module")
def urls(real_stack: None) -> Iterator[str]:
    if shutil.which("rabbitmq-server") is None:
        pytest.fail("RabbitMQ is not installed; run scripts/setup.sh")
    cluster("start")
    yield cluster("urls")
    cluster("stop")


@pytest.fixture()
def split(urls: str) -> Iterator[tuple[list[Service], list[Service]]]:
    env = {**ENV, "RUNBOX_AMQP_URL": urls}
    first = Service(roles="gateway", **env)
    gateways = [first, Service(roles="gateway", prefix=first.prefix, **env)]
    executors = [Service(roles="executor", prefix=first.prefix, **env) for _ in range(2)]
    try:
        for svc in gateways + executors:
            svc.start(wait_ready=False)
        wait_ready(gateways + executors, "start on the cluster", timeout=180, executors=2)
        yield gateways, executors
    finally:
        for svc in gateways + executors:
            svc.stop()


def members(name: str) -> int:
    for line in ctl("list_queues", "name", "members", "--no-table-headers").splitlines():
        if line.split("\t")[0] == name:
            return line.count("runbox-c")
    raise AssertionError(f"{name} not found")


@pytest.mark.timeout(900)  # node kills and restarts take minutes on a loaded 2-core machine
def test_leader_node_loss_loses_no_job_and_no_event(split: tuple[list[Service], list[Service]]) -> None:
    gateways, executors = split
    prefix = gateways[0].prefix
    jobs, events = f"{prefix}.jobs.python", f"{prefix}.events"
    assert members(jobs) == 3 and members(events) == 3, "the job queue and the stream have three replicas"
    # Kill each distinct leader in turn (never two nodes at once: two of three is a lost majority).
    leaders = sorted({cluster("leader", jobs), cluster("leader", events)})
    assert all(leaders), leaders
    load = Load([g.url for g in gateways], seed=21, pause_s=(0.2, 0.6)).start()
    time.sleep(4)
    for node in leaders:
        cluster("kill", node)
        time.sleep(8)  # the load goes on against the two other nodes
        wait_ready(gateways + executors, f"node {node} was killed", timeout=60, executors=2)
        cluster("revive", node)
    time.sleep(3)
    summary = load.finish(gateways, f"leader loss ({', '.join(leaders)})", executors=2,
                          also_ready=executors)
    assert summary.terminal["completed"] == summary.accepted
    # RabbitMQ's own Prometheus plugin (scraped by monitoring/prometheus.yml's rabbitmq job).
    for port in (15701, 15702, 15703):
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
        assert "rabbitmq_build_info" in text and "rabbitmq_connections" in text, port
