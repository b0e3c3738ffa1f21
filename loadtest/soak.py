"""A bounded soak run: mixed languages and attack programs under injected faults, then a ledger.

    python -m loadtest.soak --minutes 5 [--broker-restarts] [--docker-restarts]

Starts two gateways and two executors of its own (own queues, 127.0.0.1 only), submits a
mix of ordinary jobs and attack programs from several clients for the given time while a
fault injector SIGKILLs and SIGTERMs executors, kills a gateway, and optionally restarts
RabbitMQ and the Docker engine. It then waits for every accepted job and prints a ledger:
submitted, accepted, rejected by reason, terminal by status, lost, duplicated. Lost and
duplicated must both be 0.
"""

from __future__ import annotations

import argparse
import collections
import random
import signal
import subprocess
import threading
import time

import httpx

from tests.runbox_client import Client, Service, delete_prefixes, gated
from tests.test_faults import restart_docker

JOBS = [
    ("ok", {"language": "python", "source": "print(sum(range(10**5)))"}),
    ("ok", {"language": "python",
            "source": "import time\nfor i in range(3):\n    print(i, flush=True)\n    time.sleep(0.4)"}),
    ("ok", {"language": "bash", "source": "echo $((6*7)); read x; echo got $x", "stdin": "line\n"}),
    ("ok", {"language": "c", "source": "#include <stdio.h>\nint main(){puts(\"c ok\");return 0;}"}),
    ("ok", {"language": "javascript", "source": "console.log([1,2,3].map(x => x * 2).join(','))"}),
    ("attack", {"language": "python",
                "source": "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass",
                "limits": {"timeout_s": 2}}),
    ("attack", {"language": "python", "source": "x = []\nwhile True:\n    x.append(bytearray(10**7))"}),
    ("attack", {"language": "bash", "source": "while true; do :; done", "limits": {"timeout_s": 1}}),
    ("attack", {"language": "python", "source": "import sys\nwhile True:\n    sys.stdout.write('x' * 65536)"}),
    ("attack", {"language": "bash", "source": "(sleep 1000 &) ; nohup sleep 1000 & echo left"}),
    ("attack", {"language": "c", "source": "int main(){char *p=0; for(;;) *p++ = 1;}"}),
]


PROBLEMS: list[str] = []


class Ledger:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.submitted = 0
        self.accepted: list[str] = []
        self.rejected: collections.Counter[str] = collections.Counter()

    def note(self, response: httpx.Response | None, error: str = "") -> None:
        with self.lock:
            self.submitted += 1
            if response is not None and response.status_code == 202:
                self.accepted.append(response.json()["id"])
            elif response is not None:
                try:
                    code = response.json()["error"]["code"]
                except ValueError:
                    code = "?"
                self.rejected[f"{response.status_code} {code}"] += 1
            else:
                self.rejected[f"connection error ({error})"] += 1


def submitter(urls: list[str], ledger: Ledger, stop: threading.Event, seed: int) -> None:
    rng = random.Random(seed)
    while not stop.is_set():
        _, body = rng.choice(JOBS)
        url = rng.choice(urls)
        try:
            response = httpx.post(url + "/api/v1/jobs", json=body, timeout=10)
            ledger.note(response)
        except httpx.HTTPError as exc:
            ledger.note(None, type(exc).__name__)
            time.sleep(0.2)
        time.sleep(rng.uniform(0.05, 0.3))


def injector(args: argparse.Namespace, gateways: list[Service], executors: list[Service], stop: threading.Event,
             log: list[str]) -> None:
    faults = ["sigkill executor", "sigterm executor", "kill gateway"]
    if args.broker_restarts:
        faults.append("restart rabbitmq")
    if args.docker_restarts:
        faults.append("restart docker")
    rng = random.Random(7)
    while not stop.wait(args.fault_every):
        fault = rng.choice(faults)
        began = time.monotonic()
        if fault.endswith("executor"):
            victim = rng.choice(executors)
            victim.stop(signal.SIGKILL if fault.startswith("sigkill") else signal.SIGTERM, timeout=60)
            victim.start(timeout=180)
        elif fault == "kill gateway":
            victim = rng.choice(gateways)
            victim.kill()
            victim.start(wait_ready=False)
        elif fault == "restart rabbitmq":
            subprocess.run(["rabbitmqctl", "stop_app"], capture_output=True, timeout=120, check=False)
            time.sleep(2)
            subprocess.run(["rabbitmqctl", "start_app"], capture_output=True, timeout=120, check=False)
        elif fault == "restart docker":
            restart_docker()
        log.append(f"{time.strftime('%H:%M:%S')} {fault} ({time.monotonic() - began:.1f} s)")


def settle(gateways: list[Service], ids: list[str], timeout: float) -> dict[str, list[str]]:
    """Follow every job to its end through both gateways; the result events each one saw."""
    end = time.monotonic() + timeout
    seen: dict[str, list[str]] = {}
    for job_id in ids:
        statuses: list[str] = []
        for gw in gateways:
            client = Client(gw.url)
            try:
                remaining = max(1.0, end - time.monotonic())
                events = client.events(job_id, timeout=remaining)
                statuses += [e.data["status"] for e in events if e.name == "result"]
                if len({e.id for e in events}) != len(events):
                    statuses.append("duplicate-event-id")
            except (httpx.HTTPError, AssertionError) as exc:
                statuses.append("lost")
                if len(PROBLEMS) < 5:
                    PROBLEMS.append(f"{job_id} via {gw.url}: {exc!r}"[:300])
            finally:
                client.close()
        seen[job_id] = statuses
    return seen


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m loadtest.soak")
    parser.add_argument("--minutes", type=float, default=5)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--fault-every", type=float, default=20)
    parser.add_argument("--broker-restarts", action="store_true")
    parser.add_argument("--docker-restarts", action="store_true")
    args = parser.parse_args()

    env = {"RUNBOX_LANGUAGES": "python,bash,c,javascript", "RUNBOX_LOG_LEVEL": "WARNING",
           "RUNBOX_ANONYMOUS_RATE_PER_S": "1000", "RUNBOX_ANONYMOUS_BURST": "1000",
           "RUNBOX_ANONYMOUS_MAX_CONCURRENT": "1000", "RUNBOX_QUEUE_MAX_LENGTH": "200",
           "RUNBOX_POOL_SIZE": "2", "RUNBOX_POOL_MAX": "3"}
    with gated():
        run(args, env)


def run(args: argparse.Namespace, env: dict[str, str]) -> None:
    first = Service(roles="gateway", **env)
    gateways = [first, Service(roles="gateway", prefix=first.prefix, **env)]
    executors = [Service(roles="executor", prefix=first.prefix, **env) for _ in range(2)]
    for svc in gateways:
        svc.start(wait_ready=False)
    for svc in executors:
        svc.start()
    ledger = Ledger()
    stop = threading.Event()
    faults: list[str] = []
    threads = [threading.Thread(target=submitter, args=([g.url for g in gateways], ledger, stop, i))
               for i in range(args.clients)]
    threads.append(threading.Thread(target=injector, args=(args, gateways, executors, stop, faults)))
    began = time.monotonic()
    try:
        for t in threads:
            t.start()
        time.sleep(args.minutes * 60)
        stop.set()
        for t in threads:
            t.join(600)
        for svc in gateways:
            if svc.proc is None or svc.proc.poll() is not None:
                svc.start(wait_ready=False)
        seen = settle(gateways, list(ledger.accepted), timeout=600)
    finally:
        stop.set()
        for svc in gateways + executors:
            svc.stop()
        delete_prefixes({first.prefix})
    terminal: collections.Counter[str] = collections.Counter()
    lost = duplicated = inconsistent = 0
    for statuses in seen.values():
        if "lost" in statuses or not statuses:
            lost += 1
            continue
        if len(statuses) != len(gateways) or "duplicate-event-id" in statuses:
            duplicated += 1
        if len(set(statuses)) > 1:
            inconsistent += 1
        terminal[statuses[0]] += 1
    print(f"\nsoak ledger ({args.minutes:g} min, {args.clients} clients, faults every {args.fault_every:g} s, "
          f"{time.monotonic() - began:.0f} s in all)")
    print(f"  submitted:   {ledger.submitted}")
    print(f"  accepted:    {len(ledger.accepted)}")
    for reason, count in sorted(ledger.rejected.items()):
        print(f"  rejected:    {count:5d}  {reason}")
    for status, count in sorted(terminal.items()):
        print(f"  terminal:    {count:5d}  {status}")
    print(f"  lost:        {lost}")
    print(f"  duplicated:  {duplicated}")
    print(f"  gateways disagreeing: {inconsistent}")
    for problem in PROBLEMS:
        print(f"  problem: {problem}")
    print("  faults injected:")
    for line in faults:
        print(f"    {line}")


if __name__ == "__main__":
    main()
