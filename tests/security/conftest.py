"""The attack suite: one real runbox service per container runtime, and a way to run attacks.

Every test in ``tests/security`` runs against both runtimes: the session-scoped ``runtime``
fixture is parametrized over runc and runsc (gVisor) and the services depend on it, so pytest
runs every attack against runc services, stops them, then runs them all again against runsc
services. Each service is a real gateway+executor process (RabbitMQ, Docker, warm pools)
limited to the languages the attacks use, with small pools and allowances no attack can
exhaust. Its environment holds a secret (an API key, and the broker URL's connection name:
the password must stay the broker's) that no job may ever see.

The persistence attacks use a second service per runtime (``reuse_target``): python, bash,
ruby, javascript, php, typescript and java only, one container each (pool 1:1:1) and a memory budget of exactly those,
so the pool cannot warm a replacement while a container is being scrubbed: a job and the
job after it run in the same container, which is how those attacks prove the scrub.

Attacks of one module are independent, so a module hands them to :class:`Batch`, which runs
them side by side in threads the first time one of the module's tests asks for its result;
each test then re-raises its own attack's outcome (a failure, an xfail, or nothing).
"""

from __future__ import annotations

import concurrent.futures
import ipaddress
import json
import os
import secrets
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import docker
import pytest

from app.config import Settings
from app.executor.sandbox import AGENT_MEMORY_MB, container_memory_mb
from app.languages import Registry
from tests.runbox_client import Client, Service, SseEvent

RUNTIMES = ("runc", "runsc")
LANGUAGES = ("python", "c", "bash", "javascript", "go", "ruby", "java", "rust")
POOLS = "python=1:1:2,bash=1:1:2,ruby=0:1:1,c=1:2:3,javascript=1:1:2,go=0:1:1,java=0:1:1,rust=0:1:1"
REUSE_LANGUAGES = ("python", "bash", "ruby", "javascript", "php", "typescript", "java")
# A secret the service holds: an API key (hashed by the service) and the broker URL's
# connection name. A job must never see either, nor any RUNBOX_* variable.
SECRET = f"sekret-{secrets.token_hex(8)}"
AMQP_URL = f"amqp://guest:guest@127.0.0.1:5672/?name=runbox-{SECRET}"
API_KEY = f"key-{SECRET}"
DEFAULT_MEMORY_KB = 256 * 1024
CONTAINER_MEMORY_KB = (256 + AGENT_MEMORY_MB) * 1024

HELLO: dict[str, str] = {
    "python": 'print("hello, after")\n',
    "c": '#include <stdio.h>\nint main(void) { puts("hello, after"); return 0; }\n',
    "bash": 'echo "hello, after"\n',
    "javascript": 'console.log("hello, after");\n',
    "go": 'package main\n\nimport "fmt"\n\nfunc main() { fmt.Println("hello, after") }\n',
    "ruby": 'puts "hello, after"\n',
    "java": 'public class Main { public static void main(String[] a) { System.out.println("hello, after"); } }\n',
    "rust": 'fn main() { println!("hello, after"); }\n',
    "php": '<?php echo "hello, after\\n";\n',
}


# Every job the suite runs, for the record written at the end of the session
# ($RUNBOX_TEST_LOGS/security-jobs.json): which attack, runtime, language, outcome.
RECORD: list[dict[str, Any]] = []
CURRENT = threading.local()


def sandbox_uid(value: str | int) -> bool:
    """Whether a uid is one of the host uids sandboxes get (one per container, never shared)."""
    settings = Settings.from_env()
    return settings.sandbox_uid_base <= int(value) < settings.sandbox_uid_base + settings.sandbox_uid_count


def bridge_gateway() -> str:
    """The Docker host's address on the default bridge, read from ``docker network inspect bridge``."""
    out = subprocess.run(
        ["docker", "network", "inspect", "bridge"], capture_output=True, text=True, check=True
    ).stdout
    config = json.loads(out)[0]["IPAM"]["Config"][0]
    if config.get("Gateway"):
        return str(config["Gateway"])
    # The engine leaves Gateway out when it picked the default: the subnet's first address.
    return str(next(ipaddress.ip_network(config["Subnet"]).hosts()))


@dataclass
class Target:
    """A running service of one runtime, with helpers to attack it and check it survived."""

    runtime: str
    service: Service
    gateway_ip: str
    docker: docker.DockerClient
    client: Client = field(init=False)

    def __post_init__(self) -> None:
        # Attacks run in threads while pytest rewrites os.environ (PYTEST_CURRENT_TEST); a
        # client made here reads the environment once, where httpx.get would iterate it per call.
        self.client = self.service.client()

    @property
    def agent_closed(self) -> str:
        """How opening the agent's ``/proc/1`` entries fails: runc checks ptrace access to the
        non-dumpable agent; under gVisor an empty tmpfs covers the whole directory."""
        return "Permission denied" if self.runtime == "runc" else "No such file or directory"

    @property
    def executor(self) -> str:
        return self.service.env["RUNBOX_EXECUTOR_NAME"]

    def body(self, language: str, source: str, **extra: Any) -> dict[str, Any]:
        body: dict[str, Any] = {"language": language, "source": source}
        body.update({k: v for k, v in extra.items() if v is not None})
        return body

    def run(self, language: str, source: str, timeout: float = 240, **extra: Any) -> dict[str, Any]:
        """Submit a job and return its final state (``limits``, ``stdin``, ``files``, ``args`` as keywords)."""
        return self.record(language, self.client.run(self.body(language, source, **extra), timeout=timeout))

    def run_events(self, language: str, source: str, **extra: Any) -> tuple[dict[str, Any], list[SseEvent]]:
        job_id = self.client.submit_ok(self.body(language, source, **extra))
        events = self.client.events(job_id, timeout=240)
        assert events[-1].name == "result", events[-3:]
        return self.record(language, events[-1].data), events

    def record(self, language: str, state: dict[str, Any]) -> dict[str, Any]:
        result = state.get("result") or {}
        RECORD.append({
            "runtime": self.runtime, "attack": getattr(CURRENT, "attack", None), "language": language,
            "status": state.get("status"), "limit": result.get("limit"), "signal": result.get("signal"),
            "duration_ms": result.get("duration_ms"), "memory_peak_kb": result.get("memory_peak_kb"),
            "error": result.get("error"),
        })
        return state

    def healthy(self, timeout: float = 45) -> None:
        """``/readyz`` answers 200 (a pool replacing a container may say ``warming`` for a moment)."""
        end = time.monotonic() + timeout
        while True:
            response = self.client.http.get("/readyz", timeout=10)
            if response.status_code == 200:
                return
            assert time.monotonic() < end, f"/readyz stayed {response.status_code}: {response.text}"
            time.sleep(0.25)

    def normal_job_works(self, language: str) -> None:
        """After an attack: a plain program of the same language runs correctly and the service is ready."""
        state = self.run(language, HELLO[language])
        assert state["status"] == "completed", self.explain(state)
        assert state["result"]["stdout"] == "hello, after\n", self.explain(state)
        assert state["result"]["exit_code"] == 0, self.explain(state)
        self.healthy()

    def containers(self, language: str | None = None) -> list[Any]:
        labels = ["runbox.role=sandbox", f"runbox.executor={self.executor}"]
        if language:
            labels.append(f"runbox.language={language}")
        # sparse: no inspect per container, so one removed meanwhile is no error
        return list(self.docker.containers.list(filters={"label": labels}, sparse=True))

    def writable_layer_bytes(self) -> dict[str, int]:
        """Each live sandbox container's writable layer (``docker inspect --size``): its only host disk."""
        ids = [c.id for c in self.containers()]
        if not ids:
            return {}
        out = subprocess.run(
            ["docker", "inspect", "--size", "--format", "{{.Id}} {{.SizeRw}}", *ids],
            capture_output=True, text=True, check=False,
        ).stdout
        sizes = {}
        for line in out.splitlines():
            container_id, _, size = line.partition(" ")
            sizes[container_id] = int(size) if size.isdigit() else 0
        return sizes

    def pool_state(self, language: str) -> dict[str, float]:
        """The language's pool gauges (idle, busy, warming) from ``/metrics``."""
        states: dict[str, float] = {}
        for line in self.client.http.get("/metrics", timeout=10).text.splitlines():
            if line.startswith("runbox_pool_containers{") and f'language="{language}"' in line:
                states[line.split('state="')[1].split('"')[0]] = float(line.rsplit(" ", 1)[1])
        return states

    def settle(self, language: str, timeout: float = 60) -> str:
        """Wait until the language's pool is exactly one idle container; return that container's id.

        A job submitted while the container is still being scrubbed would make the pool warm
        a second one (and drop the first); waiting keeps "the next job" in "the same container".
        """
        end = time.monotonic() + timeout
        while True:
            state = self.pool_state(language)
            if state.get("idle") == 1 and not state.get("busy") and not state.get("warming"):
                ids = self.container_ids(language)
                if len(ids) == 1:
                    return ids.pop()
            assert time.monotonic() < end, f"{language} pool did not settle: {state}"
            time.sleep(0.1)

    def container_ids(self, language: str) -> set[str]:
        return {c.id for c in self.containers(language)}

    def explain(self, state: dict[str, Any]) -> str:
        result = dict(state.get("result") or {})
        for key in ("stdout", "stderr", "compile_output"):
            if isinstance(result.get(key), str) and len(result[key]) > 1500:
                result[key] = result[key][:1500] + f"... ({len(result[key])} chars)"
        return f"[{self.runtime}] status={state.get('status')} result={result} (log: {self.service.log_path})"


class Batch:
    """Runs a module's attacks side by side, once, and hands each test its own outcome."""

    def __init__(self, target: Target, attacks: dict[str, Callable[[Target], None]], workers: int = 6) -> None:
        self.target = target
        self.attacks = attacks
        self.workers = workers
        self.futures: dict[str, concurrent.futures.Future[None]] = {}
        self.pool: concurrent.futures.ThreadPoolExecutor | None = None

    def result(self, name: str, timeout: float = 280) -> None:
        if self.pool is None:
            self.pool = concurrent.futures.ThreadPoolExecutor(self.workers, thread_name_prefix="attack")
            self.futures = {n: self.pool.submit(self._run, n, fn) for n, fn in self.attacks.items()}
        self.futures[name].result(timeout)

    def _run(self, name: str, fn: Callable[[Target], None]) -> None:
        CURRENT.attack = name
        try:
            fn(self.target)
        finally:
            CURRENT.attack = None

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)


def reused(t: Target, language: str, before: str) -> None:
    """After a job, the language's single container is the one it ran in: its scrub passed the check."""
    assert t.settle(language) == before, f"container replaced: its scrub found traces ({t.service.log_path})"


def warm_processes(t: Target, container_id: str) -> dict[int, str]:
    """The warm processes waiting in the idle container (process id: command, without the pipe's
    number), read from its /proc by a process run in it (`docker top` does not list gVisor's)."""
    code, out = t.docker.containers.get(container_id).exec_run(["python3", "-c", LIST_WARM])
    assert code == 0, out
    return {int(pid): command for pid, command in json.loads(out).items()}


LIST_WARM = r"""
import json, os
found = {}
for pid in filter(str.isdigit, os.listdir("/proc")):
    if int(pid) == os.getpid():
        continue  # this script, whose own text names the path
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().decode().split("\0")[:-1]
    except OSError:
        continue
    if any("/opt/runbox/warm/" in arg for arg in argv):  # a stub's path, or a JVM's boot class path
        found[pid] = " ".join(argv[:-1])
print(json.dumps(found))
"""


def make_batch(target: Target, attacks: dict[str, Callable[[Target], None]], workers: int = 6) -> Iterator[Batch]:
    batch = Batch(target, attacks, workers)
    yield batch
    batch.close()


def attack_registry() -> tuple[dict[str, Callable[[Target], None]], Callable[[str], Callable[..., Any]]]:
    """A module's attacks by name, and the decorator that registers one."""
    attacks: dict[str, Callable[[Target], None]] = {}

    def register(name: str) -> Callable[[Callable[[Target], None]], Callable[[Target], None]]:
        def wrap(fn: Callable[[Target], None]) -> Callable[[Target], None]:
            assert name not in attacks, name
            attacks[name] = fn
            return fn

        return wrap

    return attacks, register


@pytest.fixture(scope="session", autouse=True)
def write_record() -> Iterator[None]:
    yield
    if RECORD:
        directory = os.environ.get("RUNBOX_TEST_LOGS", "/tmp/runbox-test-logs")
        os.makedirs(directory, exist_ok=True)
        with open(os.path.join(directory, "security-jobs.json"), "w") as f:
            json.dump(RECORD, f, indent=1)


@pytest.fixture(autouse=True)
def name_the_attack(request: pytest.FixtureRequest) -> Iterator[None]:
    """Jobs a test runs itself (not through a Batch) are recorded under the test's name."""
    CURRENT.attack = request.node.name
    yield
    CURRENT.attack = None


@pytest.fixture(scope="session", params=RUNTIMES)
def runtime(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="session")
def docker_client() -> Iterator[docker.DockerClient]:
    client = docker.from_env(timeout=120)
    yield client
    client.close()


def start_target(runtime: str, docker_client: docker.DockerClient, **env: str) -> Target:
    if runtime == "runsc" and "runsc" not in docker_client.info().get("Runtimes", {}):
        pytest.fail("the Docker engine has no runsc runtime; run scripts/setup.sh")
    service = Service(
        RUNBOX_RUNTIME=runtime,
        RUNBOX_ANONYMOUS_RATE_PER_S="1000",
        RUNBOX_ANONYMOUS_BURST="1000",
        RUNBOX_ANONYMOUS_MAX_CONCURRENT="100",
        RUNBOX_ANONYMOUS_MAX_STREAMS="200",
        RUNBOX_AMQP_URL=AMQP_URL,
        RUNBOX_API_KEYS=f"standard:plain:{API_KEY}",
        RUNBOX_SECURITY_SUITE_SECRET=SECRET,  # read by nothing; it must not reach a job either
        **env,
    ).start(timeout=240)
    return Target(runtime, service, bridge_gateway(), docker_client)


def stop_target(tgt: Target) -> None:
    tgt.client.close()
    tgt.service.stop()


@pytest.fixture(scope="session")
def target(real_stack: None, runtime: str, docker_client: docker.DockerClient) -> Iterator[Target]:
    """A service on ``runtime`` running only the attacked languages, with small pools."""
    tgt = start_target(
        runtime, docker_client,
        RUNBOX_LANGUAGES=",".join(LANGUAGES),
        RUNBOX_POOL_MIN="0", RUNBOX_POOL_SIZE="1", RUNBOX_POOL_MAX="2", RUNBOX_POOL_OVERRIDES=POOLS,
    )
    yield tgt
    stop_target(tgt)


@pytest.fixture(scope="session")
def reuse_target(real_stack: None, runtime: str, docker_client: docker.DockerClient) -> Iterator[Target]:
    """A service whose python, bash and ruby jobs always run in their language's one container."""
    registry = Registry.load(REUSE_LANGUAGES, image_tag=Settings.from_env().image_tag)
    budget = sum(container_memory_mb(lang, lang.default_limits) for lang in registry)
    tgt = start_target(
        runtime, docker_client,
        RUNBOX_LANGUAGES=",".join(REUSE_LANGUAGES),
        RUNBOX_POOL_MIN="1", RUNBOX_POOL_SIZE="1", RUNBOX_POOL_MAX="1",
        RUNBOX_MEMORY_BUDGET_MB=str(budget),
    )
    yield tgt
    stop_target(tgt)
