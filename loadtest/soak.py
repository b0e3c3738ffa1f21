"""A bounded soak in the production shape: mixed jobs under every fault, then a ledger.

    python -m loadtest.soak --minutes 10 --fault-every 40 --cluster --docker-restarts

Starts a three-node RabbitMQ cluster of its own (``scripts/rabbitmq-cluster.sh``; with
``--cluster``) or uses the machine's default node, then two gateways and two executors as
separate processes (the executors with the default identity, so two executors share this
host), all on queues of their own, 127.0.0.1 only. Several clients submit a mix of ordinary
jobs (each printing a fresh nonce, so a wrong or missing output is caught) and attack programs
for the given time while an injector, every ``--fault-every`` seconds, picks one of:

- SIGKILL an executor (a replacement starts with a new identity and cleans up after it),
- SIGTERM an executor (it drains),
- SIGKILL a gateway (restarted),
- a RabbitMQ restart: ``rabbitmqctl stop_app`` / ``start_app`` of the default node, or with
  ``--cluster`` of every node of the cluster (the whole broker down),
- with ``--cluster``: SIGKILL the node leading the job queue or the event stream, then revive it,
- with ``--docker-restarts``: stop the Docker engine for a few seconds and start it again.

After each fault it measures how long until every process answers ``/readyz`` 200 (with both
executors counted) again. Then it follows every accepted job through both gateways and prints
the ledger: submitted, accepted, refused by reason, terminal by status, lost, duplicated,
wrong, slow, and the machine's load average while it ran. Jobs whose output is checked get
the longest wall-time limit (30 s), so a busy machine does not make a right answer late; a job
that still times out after its whole limit with nothing but the start of its own output is
counted *slow*, apart from *wrong* (tests/ledger.py). The engine and default-node faults
disturb the whole machine: run it under the exclusive stack lock.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import threading
import time
from typing import Any

from tests.ledger import Load, nonce_job, wait_ready
from tests.runbox_client import ROOT, Service, delete_prefixes, gated
from tests.test_faults import restart_docker

CLUSTER = ["bash", str(ROOT / "scripts" / "rabbitmq-cluster.sh")]
# The contract's ceiling: on a 2-core machine under a soak's faults and other work, a hello
# world has taken longer than the default 5 s, and that is the machine, not a wrong answer.
CHECKED_LIMITS = {"timeout_s": 30}
ORDINARY = [
    ({"language": "bash", "source": "read x; echo \"$x\"", "stdin": "{nonce}\n"}, "{nonce}\n"),
    ({"language": "c", "source": "#include <stdio.h>\nint main(){puts(\"{nonce}\");return 0;}"}, "{nonce}\n"),
    ({"language": "javascript", "source": "console.log('{nonce}')"}, "{nonce}\n"),
]
ATTACKS: list[dict[str, Any]] = [
    {"language": "python",
     "source": "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass",
     "limits": {"timeout_s": 2}},
    {"language": "python", "source": "x = []\nwhile True:\n    x.append(bytearray(10**7))"},
    {"language": "bash", "source": "while true; do :; done", "limits": {"timeout_s": 1}},
    {"language": "python", "source": "import sys\nwhile True:\n    sys.stdout.write('x' * 65536)"},
    {"language": "bash", "source": "(sleep 1000 &) ; nohup sleep 1000 & echo left"},
    {"language": "c", "source": "int main(){char *p=0; for(;;) *p++ = 1;}"},
]


def mixed_job(rng: random.Random) -> tuple[dict[str, Any], str | None]:
    """Mostly jobs whose output is known (a fresh nonce), one in five an attack program."""
    roll = rng.random()
    if roll < 0.2:
        return rng.choice(ATTACKS), None
    if roll < 0.55:
        body, output = nonce_job(rng)
        return {**body, "limits": CHECKED_LIMITS}, output
    body, expected = rng.choice(ORDINARY)
    nonce = f"{rng.getrandbits(64):016x}"
    filled = {k: (v.replace("{nonce}", nonce) if isinstance(v, str) else v) for k, v in body.items()}
    return {**filled, "limits": CHECKED_LIMITS}, expected.replace("{nonce}", nonce)


def cluster(*args: str) -> str:
    return subprocess.run([*CLUSTER, *args], check=True, capture_output=True, text=True, timeout=300).stdout.strip()


class Injector(threading.Thread):
    """Injects one fault every ``every`` seconds until stopped; logs each and the recovery time."""

    def __init__(self, args: argparse.Namespace, gateways: list[Service], executors: list[Service]) -> None:
        super().__init__(daemon=True)
        self.args = args
        self.gateways = gateways
        self.executors = executors
        self.stop = threading.Event()
        self.log: list[str] = []
        self.faults = ["executor SIGKILL", "executor SIGTERM", "gateway SIGKILL", "rabbitmq restart"]
        if args.cluster:
            self.faults.append("rabbitmq leader-node loss")
        if args.docker_restarts:
            self.faults.append("docker engine restart")

    def run(self) -> None:
        order = self.faults.copy()
        rng = random.Random(7)
        i = 0
        while not self.stop.wait(self.args.fault_every):
            if i % len(order) == 0:
                rng.shuffle(order)  # every fault once per round, in a random order
            fault = order[i % len(order)]
            i += 1
            began = time.monotonic()
            try:
                detail = self.inject(fault, rng)
                ready = wait_ready(self.gateways + self.executors, fault, timeout=180, executors=2)
                self.log.append(f"{time.strftime('%H:%M:%S')} {fault}{detail}: injected in "
                                f"{time.monotonic() - began - ready:.1f} s, all ready {ready:.1f} s later")
            except Exception as exc:  # recorded in the ledger, never silently
                self.log.append(f"{time.strftime('%H:%M:%S')} {fault}: FAILED {exc!r}"[:400])

    def inject(self, fault: str, rng: random.Random) -> str:
        if fault.startswith("executor"):
            victim = rng.randrange(len(self.executors))
            old = self.executors[victim]
            old.stop(signal.SIGKILL if fault.endswith("SIGKILL") else signal.SIGTERM, timeout=60)
            # A fresh process with a fresh (default) identity, as a supervisor would start.
            self.executors[victim] = executor_service(old.prefix, self.args.env).start(timeout=180)
            return ""
        if fault == "gateway SIGKILL":
            gateway = rng.choice(self.gateways)
            gateway.kill()
            gateway.start(wait_ready=False)
            return ""
        if fault == "rabbitmq leader-node loss":
            prefix = self.gateways[0].prefix
            node = cluster("leader", rng.choice([f"{prefix}.jobs.python", f"{prefix}.events"]))
            cluster("kill", node)
            time.sleep(5)
            cluster("revive", node)
            return f" (leader node {node} killed, revived)"
        if fault == "rabbitmq restart" and self.args.cluster:
            cluster("restart", "3")
            return " (stop_app/start_app of every cluster node)"
        if fault == "rabbitmq restart":
            subprocess.run(["rabbitmqctl", "stop_app"], capture_output=True, timeout=120, check=False)
            time.sleep(3)
            subprocess.run(["rabbitmqctl", "start_app"], capture_output=True, timeout=120, check=False)
            return " (default node stop_app/start_app)"
        restart_docker(outage_s=5.0)
        return " (5 s outage)"


def executor_service(prefix: str, env: dict[str, str]) -> Service:
    svc = Service(roles="executor", prefix=prefix, **env)
    svc.env.pop("RUNBOX_EXECUTOR_NAME")  # the default identity: unique per process
    return svc


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m loadtest.soak")
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--clients", type=int, default=2)
    parser.add_argument("--fault-every", type=float, default=40)
    parser.add_argument("--cluster", action="store_true", help="a three-node RabbitMQ cluster of its own")
    parser.add_argument("--docker-restarts", action="store_true")
    args = parser.parse_args()

    env = {"RUNBOX_LANGUAGES": "python,bash,c,javascript", "RUNBOX_LOG_LEVEL": "WARNING",
           "RUNBOX_ANONYMOUS_RATE_PER_S": "1000", "RUNBOX_ANONYMOUS_BURST": "1000",
           "RUNBOX_ANONYMOUS_MAX_CONCURRENT": "1000", "RUNBOX_QUEUE_MAX_LENGTH": "300",
           "RUNBOX_POOL_SIZE": "2", "RUNBOX_POOL_MAX": "3"}
    if args.cluster:
        cluster("start")
        env |= {"RUNBOX_AMQP_URL": cluster("urls"), "RUNBOX_AMQP_QUORUM_SIZE": "3"}
    args.env = env
    with gated():  # executors reach the engine only through the Docker gate, as deployed
        run(args, env)


def run(args: argparse.Namespace, env: dict[str, str]) -> None:
    """Start the services, load and inject faults, settle, print the ledger."""
    first = Service(roles="gateway", **env)
    gateways = [first, Service(roles="gateway", prefix=first.prefix, **env)]
    executors = [executor_service(first.prefix, env) for _ in range(2)]
    began = time.monotonic()
    loads: list[float] = []
    injector = Injector(args, gateways, executors)
    try:
        for svc in gateways:  # gateways first: they must become ready once executors appear
            svc.start(wait_ready=False)
        for svc in executors:
            svc.start(timeout=180)
        wait_ready(gateways + executors, "start", timeout=180, executors=2)
        load = Load([g.url for g in gateways], clients=args.clients, seed=5, make=mixed_job,
                    pause_s=(0.3, 0.8), slow_ok=True).start()
        injector.start()
        end = time.monotonic() + args.minutes * 60
        while time.monotonic() < end:  # the machine's load, sampled while the soak runs
            loads.append(os.getloadavg()[0])
            time.sleep(min(10.0, max(0.0, end - time.monotonic())))
        injector.stop.set()
        injector.join(600)
        load.stop()
        try:
            wait_ready(gateways + injector.executors, "the soak's end", timeout=180, executors=2)
        except AssertionError as exc:  # in the report, and the ledger is still settled and printed
            injector.log.append(f"{time.strftime('%H:%M:%S')} at the end: {exc}"[:400])
        summary = load.settle([g.url for g in gateways], timeout=900)
    finally:
        injector.stop.set()
        for svc in gateways + injector.executors:
            svc.stop()
        if args.cluster:
            cluster("stop")
        else:
            delete_prefixes({first.prefix})
    print(f"\nsoak ledger ({args.minutes:g} min, {args.clients} clients, a fault every {args.fault_every:g} s, "
          f"{'three-node cluster' if args.cluster else 'one RabbitMQ node'}, "
          f"{time.monotonic() - began:.0f} s in all)")
    print(f"  submitted:   {summary.submitted}")
    print(f"  accepted:    {summary.accepted}")
    for reason, count in sorted(summary.refused.items()):
        print(f"  refused:     {count:5d}  {reason}")
    for status, count in sorted(summary.terminal.items()):
        print(f"  terminal:    {count:5d}  {status}")
    print(f"  lost:        {summary.lost}")
    print(f"  duplicated:  {summary.duplicated}")
    print(f"  wrong:       {summary.wrong}")
    print(f"  slow:        {summary.slow}  (timed out after the whole 30 s limit, output not wrong)")
    if loads:
        print(f"  load average (1 min, sampled every 10 s): min {min(loads):.1f}, "
              f"mean {sum(loads) / len(loads):.1f}, max {max(loads):.1f} on {os.cpu_count()} cores")
    for problem in summary.problems:
        print(f"  problem: {problem}")
    for slow in summary.slow_jobs:
        print(f"  {slow}")
    print("  faults injected:")
    for line in injector.log:
        print(f"    {line}")


if __name__ == "__main__":
    main()
