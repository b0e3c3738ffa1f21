"""End to end with the real Docker engine: the app image from the root Dockerfile runs a job.

Two containers of the image, as Pulumi runs them: the Docker gate (RUNBOX_ROLES=gate), the only
one with the engine's socket, and one playing gateway and executor with host networking, so it
reaches the host's RabbitMQ on 127.0.0.1:5672 and serves on a free loopback port; it drives the
host's engine only through the gate's socket, in a directory both mount. Both have the same
hardening (read-only root, no capabilities, the image's non-root user plus the socket's group,
never privileged). The image is rebuilt only when what it is built from changed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import docker
import docker.errors
import httpx
import pytest

from app.broker import Names
from app.executor.engine import OWNER_LABEL, owner_label
from infra.images import app_context_hash
from tests.runbox_client import free_port

ROOT = Path(__file__).resolve().parent.parent
IMAGE = os.environ.get("RUNBOX_APP_IMAGE", "runbox/app:dev")
SANDBOX_IMAGE = "runbox/sandbox-python:latest"
HASH_LABEL = "runbox.context-hash"
SOCKET = "/var/run/docker.sock"
# The host's RabbitMQ; another loopback broker can be named for a run (host networking: the
# container sees the same 127.0.0.1).
AMQP_URL = os.environ.get("RUNBOX_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
# CA certificates this host added to its trust store. A build whose egress goes through a
# TLS-intercepting proxy (as on the project's machines) needs them to reach PyPI; elsewhere the
# directory is empty and the build argument stays empty.
LOCAL_CA_DIR = Path("/usr/local/share/ca-certificates")
TERMINAL = {"completed", "timed_out", "memory_exceeded", "output_exceeded", "compile_error", "failed"}


def _missing(what: str) -> None:
    """Absent prerequisites skip locally and fail on CI, like tests/conftest.py."""
    if os.environ.get("CI"):
        pytest.fail(what)
    pytest.skip(what)


def _extra_ca_certs() -> str:
    if not LOCAL_CA_DIR.is_dir():
        return ""
    return "\n".join(p.read_text() for p in sorted(LOCAL_CA_DIR.rglob("*.crt")))


@pytest.fixture(scope="module")
def client() -> Iterator[docker.DockerClient]:
    """The host's Docker engine, once RabbitMQ is known to listen where the container will look."""
    amqp = urlsplit(AMQP_URL)
    try:
        with socket.create_connection((amqp.hostname or "127.0.0.1", amqp.port or 5672), timeout=5):
            pass
    except OSError:
        _missing(f"RabbitMQ does not listen on {amqp.hostname}:{amqp.port}; run scripts/setup.sh")
    try:
        c = docker.from_env(timeout=120)
        c.ping()
    except docker.errors.DockerException:
        _missing("the Docker engine does not answer; run scripts/setup.sh")
    yield c
    c.close()


@pytest.fixture(scope="module")
def app_image(client: docker.DockerClient) -> str:
    """``docker build -t runbox/app:dev .``, skipped when an image of the same context exists."""
    digest = app_context_hash(ROOT)
    with contextlib.suppress(docker.errors.ImageNotFound):
        if client.images.get(IMAGE).labels.get(HASH_LABEL) == digest:
            return IMAGE
    cmd = ["docker", "build", "-q", "-t", IMAGE, "--label", f"{HASH_LABEL}={digest}"]
    ca = _extra_ca_certs()
    if ca:
        cmd += ["--build-arg", f"EXTRA_CA_CERTS={ca}"]
    proc = subprocess.run([*cmd, str(ROOT)], capture_output=True, text=True, timeout=900, check=False)
    assert proc.returncode == 0, f"docker build failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    assert client.images.get(IMAGE).labels.get(HASH_LABEL) == digest
    return IMAGE


def _logs(container: Any) -> str:
    with contextlib.suppress(docker.errors.APIError):
        return str(container.logs(tail=80).decode(errors="replace"))
    return "(no logs)"


def _exists(client: docker.DockerClient, container_id: str) -> bool:
    try:
        client.containers.get(container_id)
    except docker.errors.NotFound:
        return False
    return True


def _wait_ready(container: Any, url: str, timeout: float = 120) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        container.reload()
        assert container.status in ("created", "running"), f"container {container.status}:\n{_logs(container)}"
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        time.sleep(0.5)
    raise AssertionError(f"/readyz not 200 after {timeout}s:\n{_logs(container)}")


def _wait_terminal(url: str, job_id: str, timeout: float = 60) -> dict[str, Any]:
    end = time.monotonic() + timeout
    while True:
        response = httpx.get(f"{url}/api/v1/jobs/{job_id}", timeout=5)
        assert response.status_code == 200, response.text
        state: dict[str, Any] = response.json()
        if state["status"] in TERMINAL or time.monotonic() > end:
            return state
        time.sleep(0.2)


async def _delete_queues(prefix: str) -> None:
    """Best effort: this run's queues and stream have no further use."""
    import aio_pika

    names = Names(prefix)
    connection = await aio_pika.connect(AMQP_URL, timeout=10)
    async with connection:
        for queue in (names.jobs("python"), names.dead, names.events):
            channel = await connection.channel()
            with contextlib.suppress(Exception):
                await channel.queue_delete(queue)


@pytest.mark.timeout(1200)
def test_app_image_runs_a_python_job(client: docker.DockerClient, app_image: str) -> None:
    try:
        client.images.get(SANDBOX_IMAGE)
    except docker.errors.ImageNotFound:
        _missing(f"{SANDBOX_IMAGE} is missing; build it with .venv/bin/python -m app.images build python")

    token = secrets.token_hex(4)
    executor_name = f"test-image-{token}"
    prefix = f"test-image-{token}"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    hardened: dict[str, Any] = {
        # The image's non-root user: the engine socket's group is enough (for the gate's too).
        "group_add": [str(os.stat(SOCKET).st_gid)],
        "read_only": True,
        "tmpfs": {"/tmp": "rw,noexec,nosuid,nodev,size=64m"},
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges:true"],
        "privileged": False,
        "labels": {"runbox.test": "app-image"},
    }
    # A sandbox of an executor on the host, which is alive (this process stands for it): the
    # container's executor shares the host's name but not its pids, and must leave it alone.
    bystander = client.containers.create(
        SANDBOX_IMAGE, command=["true"], name=f"runbox-apptest-bystander-{token}", network_disabled=True,
        labels={"runbox.role": "sandbox", "runbox.executor": f"{executor_name}-bystander",
                "runbox.language": "python", OWNER_LABEL: owner_label(), "runbox.test": "app-image"},
    )
    gate_dir = tempfile.mkdtemp(prefix="runbox-apptest-gate-")
    os.chown(gate_dir, 0, os.stat(SOCKET).st_gid)
    os.chmod(gate_dir, 0o770)
    gate_port = free_port()
    gate = client.containers.run(
        app_image,
        name=f"runbox-apptest-gate-{token}",
        detach=True,
        network_mode="host",
        environment={
            "RUNBOX_ROLES": "gate",
            "RUNBOX_HOST": "127.0.0.1",
            "RUNBOX_PORT": str(gate_port),
            "RUNBOX_PROBE_PORT": str(free_port()),  # host networking: the image's 8081 may be taken
            "RUNBOX_GATE_SOCKET": "/run/runbox/gate.sock",
            "RUNBOX_GATE_SOCKET_GID": str(os.stat(SOCKET).st_gid),
            "RUNBOX_ENGINE_URL": f"unix://{SOCKET}",
        },
        volumes={SOCKET: {"bind": SOCKET, "mode": "rw"}, gate_dir: {"bind": "/run/runbox", "mode": "rw"}},
        **hardened,
    )
    try:
        _wait_ready(gate, f"http://127.0.0.1:{gate_port}")
    except BaseException:
        gate.remove(force=True)
        bystander.remove(force=True)
        raise
    container = client.containers.run(
        app_image,
        name=f"runbox-apptest-{token}",
        detach=True,
        network_mode="host",
        environment={
            "RUNBOX_ROLES": "gateway,executor",
            "RUNBOX_HOST": "127.0.0.1",  # host networking: loopback only, as the test talks only there
            "RUNBOX_PORT": str(port),
            "RUNBOX_PROBE_PORT": str(free_port()),
            "RUNBOX_AMQP_URL": AMQP_URL,
            "RUNBOX_AMQP_PREFIX": prefix,
            "RUNBOX_EXECUTOR_NAME": executor_name,
            "RUNBOX_LANGUAGES": "python",  # the one sandbox image this test can count on
            "RUNBOX_POOL_MIN": "1",
            "RUNBOX_POOL_SIZE": "1",
            "RUNBOX_POOL_MAX": "2",
            "RUNBOX_DOCKER_URL": "unix:///run/runbox/gate.sock",
        },
        volumes={gate_dir: {"bind": "/run/runbox", "mode": "ro"}},
        **hardened,
    )
    try:
        container.reload()
        assert container.attrs["Config"]["User"] == "runbox:runbox"
        assert container.attrs["HostConfig"]["Privileged"] is False
        assert "docker.sock" not in str(container.attrs["Mounts"])  # only the gate has the engine
        _wait_ready(container, url)
        # The image's own HEALTHCHECK command, run now rather than at its first interval.
        for probed in (container, gate):
            probed.reload()
            check = probed.attrs["Config"]["Healthcheck"]["Test"]
            assert check[0] == "CMD"
            outcome = probed.exec_run(check[1:])
            assert outcome.exit_code == 0, outcome.output

        response = httpx.post(
            f"{url}/api/v1/jobs",
            json={"language": "python", "source": "print('hello from the app image')"},
            timeout=10,
        )
        assert response.status_code == 202, response.text
        state = _wait_terminal(url, response.json()["id"])
        assert state["status"] == "completed", (state, _logs(container))
        assert state["result"]["stdout"] == "hello from the app image\n"
        assert state["result"]["exit_code"] == 0

        # The sandboxes are siblings on the host's engine, made by this executor, with no network.
        sandboxes = client.containers.list(all=True, filters={"label": f"runbox.executor={executor_name}"})
        assert sandboxes, "the executor left no trace of its warm pool"
        for sandbox in sandboxes:
            assert sandbox.attrs["HostConfig"]["NetworkMode"] == "none"
            assert sandbox.attrs["HostConfig"]["Privileged"] is False
    finally:
        # SIGTERM first: the executor drains and removes its own sandboxes (through the gate).
        with contextlib.suppress(docker.errors.APIError):
            container.stop(timeout=45)
        bystander_left = _exists(client, bystander.id)
        with contextlib.suppress(docker.errors.APIError):
            bystander.remove(force=True)
        for stopped in (container, gate):
            with contextlib.suppress(docker.errors.APIError):
                stopped.remove(force=True)
        shutil.rmtree(gate_dir, ignore_errors=True)
        for leftover in client.containers.list(all=True, filters={"label": f"runbox.executor={executor_name}"}):
            with contextlib.suppress(docker.errors.APIError):
                leftover.remove(force=True)
        with contextlib.suppress(Exception):
            asyncio.run(_delete_queues(prefix))
    assert not client.containers.list(all=True, filters={"label": f"runbox.executor={executor_name}"})
    assert bystander_left, "the container's executor removed a sandbox of a live executor on the host"
