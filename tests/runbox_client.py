"""A small test client for runbox: submit, follow SSE, wait for results; and a service launcher."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class SseEvent:
    id: int
    name: str
    data: dict[str, Any]


def parse_sse(lines: Iterator[str]) -> Iterator[SseEvent]:
    """Parse a text/event-stream line by line (comments skipped)."""
    fields: dict[str, str] = {}
    for line in lines:
        if line == "":
            if "data" in fields:
                yield SseEvent(int(fields.get("id", "0")), fields.get("event", "message"), json.loads(fields["data"]))
            fields = {}
            continue
        if line.startswith(":"):
            continue
        key, _, value = line.partition(":")
        fields[key] = value[1:] if value.startswith(" ") else value


@dataclass
class Client:
    """Synchronous helper around httpx for the v1 API."""

    base_url: str
    headers: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.http = httpx.Client(base_url=self.base_url, headers=self.headers, timeout=60)

    def close(self) -> None:
        self.http.close()

    def submit(self, body: dict[str, Any], **kwargs: Any) -> httpx.Response:
        return self.http.post("/api/v1/jobs", json=body, **kwargs)

    def submit_ok(self, body: dict[str, Any]) -> str:
        """Submit and expect acceptance, retrying a 503 as its ``Retry-After`` asks (a few times at most).

        A 503 means nothing was queued and the client should come back (the contract's terms):
        on a machine running much else, a publish confirm can outlast the gateway's wait.
        Tests of the refusals themselves call :meth:`submit`.
        """
        for _ in range(3):
            response = self.submit(body)
            if response.status_code != 503 or "Retry-After" not in response.headers:
                break
            time.sleep(min(float(response.headers["Retry-After"]), 2.0))
        assert response.status_code == 202, response.text
        return str(response.json()["id"])

    def events(self, job_id: str, last_event_id: int | None = None, timeout: float = 60) -> list[SseEvent]:
        """Every event of a job from the start (or after ``last_event_id``) to its result."""
        return list(self.iter_events(job_id, last_event_id, timeout))

    def iter_events(self, job_id: str, last_event_id: int | None = None, timeout: float = 60) -> Iterator[SseEvent]:
        headers = {"Accept": "text/event-stream"}
        if last_event_id is not None:
            headers["Last-Event-ID"] = str(last_event_id)
        with self.http.stream("GET", f"/api/v1/jobs/{job_id}/events", headers=headers, timeout=timeout) as response:
            assert response.status_code == 200, response.read()
            assert response.headers["content-type"].startswith("text/event-stream")
            for event in parse_sse(response.iter_lines()):
                yield event
                if event.name == "result":
                    return

    def run(self, body: dict[str, Any], timeout: float = 60) -> dict[str, Any]:
        """Submit, follow to the result event, and return the final job state."""
        job_id = self.submit_ok(body)
        events = self.events(job_id, timeout=timeout)
        assert events[-1].name == "result", events
        return events[-1].data

    def state(self, job_id: str) -> dict[str, Any]:
        response = self.http.get(f"/api/v1/jobs/{job_id}")
        assert response.status_code == 200, response.text
        return dict(response.json())

    def wait_state(self, job_id: str, timeout: float = 60) -> dict[str, Any]:
        end = time.monotonic() + timeout
        while True:
            state = self.state(job_id)
            if state["status"] not in ("queued", "running") or time.monotonic() > end:
                return state
            time.sleep(0.1)


CREATED_PREFIXES: set[str] = set()
# The languages runbox began with: enough for every test but tests/test_languages.py, which
# names its own; forty-odd warm pools would only slow every service's start.
CORE_LANGUAGES = ("bash", "c", "cpp", "go", "java", "javascript", "php", "python", "ruby", "rust", "typescript")
# Delay queues of callback retries, by wait in ms: the defaults and what the tests configure.
CALLBACK_DELAYS_MS = {1000, 2000, 5000, 15000, 30000, 60000, 120000, 300000, 600000, 900000, 1200000, 1800000}


def delete_prefixes(prefixes: set[str], url: str = "amqp://guest:guest@127.0.0.1:5672/") -> None:
    """Delete every queue and stream named after these prefixes.

    RabbitMQ deletes an absent queue or exchange without complaint, so one channel per prefix
    serves all of its names (a channel per name cost a session's teardown some 15 s); the
    prefixes are deleted side by side on one connection.
    """
    import aio_pika
    import aio_pika.abc

    from app.languages import Registry

    units = Registry.load().unit_keys()

    async def delete_one(connection: aio_pika.abc.AbstractConnection, prefix: str) -> None:
        names = [f"{prefix}.jobs.{n}" for n in units]
        names += [f"{prefix}.jobs.dead", f"{prefix}.events", f"{prefix}.presence", f"{prefix}.callbacks"]
        names += [f"{prefix}.callbacks.delay.{ms}" for ms in CALLBACK_DELAYS_MS]
        channel = await connection.channel()
        try:
            for name in names:
                if channel.is_closed:  # a refused delete closes the channel: go on with a new one
                    channel = await connection.channel()
                with contextlib.suppress(Exception):
                    await channel.queue_delete(name)
            if channel.is_closed:
                channel = await connection.channel()
            with contextlib.suppress(Exception):
                await channel.exchange_delete(f"{prefix}.stdin")
        finally:
            if not channel.is_closed:
                await channel.close()

    async def run() -> None:
        connection = await aio_pika.connect(url)
        async with connection:
            await asyncio.gather(*(delete_one(connection, prefix) for prefix in prefixes))

    if prefixes:
        asyncio.run(run())


def _die_with_parent() -> None:
    """A service outlives no test run: SIGTERM it (it drains) when the test process dies."""
    ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Service:
    """A real runbox process (``python -m app serve``) with its own queues and executor name."""

    def __init__(self, roles: str = "gateway,executor", prefix: str | None = None, **env: str) -> None:
        self.port = free_port()
        self.prefix = prefix or f"test-{secrets.token_hex(4)}"
        CREATED_PREFIXES.add(self.prefix)
        self.env = {
            **os.environ,
            "RUNBOX_ROLES": roles,
            "RUNBOX_PORT": str(self.port),
            "RUNBOX_AMQP_PREFIX": self.prefix,
            "RUNBOX_EXECUTOR_NAME": f"test-{secrets.token_hex(4)}",
            "RUNBOX_POOL_MIN": "1",
            "RUNBOX_POOL_SIZE": "2",
            "RUNBOX_POOL_MAX": "4",
            "RUNBOX_LOG_LEVEL": "INFO",
            "RUNBOX_LANGUAGES": ",".join(CORE_LANGUAGES),
            **env,
        }
        self.roles = roles
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = (
            Path(os.environ.get("RUNBOX_TEST_LOGS", "/tmp/runbox-test-logs")) / f"{self.prefix}-{self.port}.log"
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, wait_ready: bool = True, timeout: float = 120) -> Service:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "app", "serve"],
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=log,
            # PR_SET_PDEATHSIG fires when the creating *thread* ends, so only the main thread may use it.
            preexec_fn=_die_with_parent if threading.current_thread() is threading.main_thread() else None,
        )
        end = time.monotonic() + timeout
        path = "/readyz" if wait_ready else "/healthz"
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"runbox exited with {self.proc.returncode}; see {self.log_path}")
            try:
                if httpx.get(self.url + path, timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.kill()
        raise RuntimeError(f"runbox not ready after {timeout}s; see {self.log_path}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def client(self, **headers: str) -> Client:
        return Client(self.url, headers)

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")


def start_gate(directory: Path, **env: str) -> tuple[Service, str]:
    """A Docker gate process (the only one holding the engine's socket) listening in ``directory``.

    Returns the process and the ``RUNBOX_DOCKER_URL`` executors use to reach it.
    """
    socket_path = directory / "gate.sock"
    # The gate admits the images of every language unit, whichever ones a test's services run.
    env = {"RUNBOX_LANGUAGES": "", **env}
    gate = Service(roles="gate", RUNBOX_GATE_SOCKET=str(socket_path), **env).start(timeout=60)
    return gate, f"unix://{socket_path}"


@contextlib.contextmanager
def gated(**env: str) -> Iterator[Service]:
    """A Docker gate for this process's services: every Service made inside gets its socket."""
    with tempfile.TemporaryDirectory(prefix="runbox-gate-") as directory:
        gate, url = start_gate(Path(directory), **env)
        previous = os.environ.get("RUNBOX_DOCKER_URL")
        os.environ["RUNBOX_DOCKER_URL"] = url
        try:
            yield gate
        finally:
            if previous is None:
                os.environ.pop("RUNBOX_DOCKER_URL", None)
            else:
                os.environ["RUNBOX_DOCKER_URL"] = previous
            gate.stop()

