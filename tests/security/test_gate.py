"""The Docker gate, attacked as a compromised executor would: straight at its socket.

Whoever takes an executor gets its Docker SDK and the gate's socket, nothing more. Every
test here speaks to the gate with the Docker SDK (or raw HTTP) and checks the refusal: a
``403`` with a JSON message, counted in ``runbox_gate_refusals_total``, and nothing done on
the engine. A sandbox exactly as the executor makes it is the only thing that gets created.
"""

from __future__ import annotations

import asyncio
import io
import json
import secrets
import time
from collections.abc import Callable, Iterator
from typing import Any

import docker
import docker.errors
import httpx
import pytest

from app.config import Settings
from app.executor.sandbox import (
    AGENT_MOUNT,
    COVER_TMPFS,
    DOCKER_MASKED_PATHS,
    Sandbox,
    agent_directory,
    agent_job,
    container_options,
    create_container,
)
from app.languages import Registry
from tests.runbox_client import Service

Options = dict[str, Any]


@pytest.fixture(scope="module")
def gate(docker_gate: tuple[Service, str]) -> Iterator[docker.DockerClient]:
    """The Docker SDK an executor holds, pointed at the gate."""
    client = docker.DockerClient(base_url=docker_gate[1], timeout=60)
    yield client
    client.close()


@pytest.fixture(scope="module")
def outsider(docker_client: docker.DockerClient) -> Iterator[Any]:
    """A container that is not a sandbox (made by the operator, straight on the engine)."""
    settings = Settings.from_env()
    image = Registry.load(("python",), image_tag=settings.image_tag).get("python")
    assert image is not None
    container = docker_client.containers.run(
        image.image, entrypoint=["sleep", "600"], detach=True, network_mode="none",
        name=f"runbox-gate-outsider-{secrets.token_hex(4)}", labels={"runbox.test": "gate-outsider"},
    )
    yield container
    container.remove(force=True)


def sandbox_options(runtime: str = "runc", uid: int | None = None) -> Options:
    """A sandbox's create options, exactly as the executor builds them."""
    settings = Settings.from_env()
    language = Registry.load(("python",), image_tag=settings.image_tag).get("python")
    assert language is not None
    return container_options(
        language, language.default_limits, runtime=runtime, engine_runtime=settings.engine_runtime(runtime),
        executor_id=f"gate-test-{secrets.token_hex(3)}", cpus=1.0,
        uid=uid if uid is not None else settings.sandbox_uid_base + secrets.randbelow(settings.sandbox_uid_count),
    )


def refusals(gate_service: Service) -> float:
    total = 0.0
    for line in httpx.get(gate_service.url + "/metrics", timeout=10).text.splitlines():
        if line.startswith("runbox_gate_refusals_total{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def assert_refused(call: Callable[[], Any], docker_gate: tuple[Service, str], words: str = "") -> str:
    """The call fails with the gate's 403 (a JSON message), and the refusal is counted."""
    before = refusals(docker_gate[0])
    with pytest.raises(docker.errors.APIError) as raised:
        call()
    error = raised.value
    assert error.response is not None and error.response.status_code == 403, error
    body = error.response.json()
    assert body["message"].startswith("runbox gate: ") and body["reason"], body
    assert words in body["message"], body
    assert refusals(docker_gate[0]) >= before + 1  # (the SDK may ask more than once)
    return str(body["message"])


def with_change(change: Callable[[Options], None]) -> Options:
    options = sandbox_options()
    change(options)
    return options


def agent_dir(options: Options, uid: int | None = None) -> str:
    """The sandbox's own agent socket directory (another uid's with ``uid``)."""
    labels = options["labels"]
    uid = int(labels["runbox.uid"]) if uid is None else uid
    return agent_directory(Settings.from_env().agent_socket_dir, labels["runbox.executor"], uid)


# Each: one thing a compromised executor would add to an otherwise perfect sandbox.
TAMPERED: dict[str, Callable[[Options], None]] = {
    "agent_dir_writable": lambda o: o.update(volumes={agent_dir(o): {"bind": AGENT_MOUNT, "mode": "rw"}}),
    "agent_dir_over_the_agent": lambda o: o.update(volumes={agent_dir(o): {"bind": "/opt/runbox", "mode": "ro"}}),
    "agent_dir_of_another_uid": lambda o: o.update(
        volumes={agent_dir(o, int(o["labels"]["runbox.uid"]) + 1): {"bind": AGENT_MOUNT, "mode": "ro"}}
    ),
    "agent_dir_and_more": lambda o: o.update(volumes={
        agent_dir(o): {"bind": AGENT_MOUNT, "mode": "ro"}, "/etc": {"bind": "/host-etc", "mode": "ro"},
    }),
    "agent_dir_root": lambda o: o.update(
        volumes={Settings.from_env().agent_socket_dir: {"bind": AGENT_MOUNT, "mode": "ro"}}
    ),
    "privileged": lambda o: o.update(privileged=True),
    "bind_root": lambda o: o.update(volumes={"/": {"bind": "/host", "mode": "rw"}}),
    "mount_docker_socket": lambda o: o.update(volumes={"/var/run/docker.sock": {"bind": "/s", "mode": "rw"}}),
    "host_network": lambda o: o.update(network_mode="host"),
    "bridge_network": lambda o: o.update(network_mode="bridge"),
    "host_pid": lambda o: o.update(pid_mode="host"),
    "host_userns": lambda o: o.update(userns_mode="host"),
    "cap_add": lambda o: o.update(cap_add=["SYS_ADMIN"]),
    "device": lambda o: o.update(devices=["/dev/kmsg:/dev/kmsg:rwm"]),
    "root_user": lambda o: o.update(user="0:0"),
    "seccomp_unconfined": lambda o: o.update(security_opt=["no-new-privileges:true", "seccomp=unconfined"]),
    "no_seccomp_profile": lambda o: o.update(security_opt=["no-new-privileges:true"]),
    "apparmor_unconfined": lambda o: o["security_opt"].append("apparmor=unconfined"),
    "writable_root": lambda o: o.update(read_only=False),
    "keep_capabilities": lambda o: o.update(cap_drop=[]),
    "foreign_image": lambda o: o.update(image="debian:bookworm-slim"),
    "other_runtime": lambda o: o.update(runtime="runsc-unregistered"),
    "entrypoint": lambda o: o.update(entrypoint=["sh", "-c", "id"]),
    "environment": lambda o: o.update(environment={"LD_PRELOAD": "/work/x.so"}),
    "no_memory_limit": lambda o: (o.pop("mem_limit"), o.pop("memswap_limit")),
    "huge_memory": lambda o: o.update(mem_limit="64g", memswap_limit="64g"),
    "swap": lambda o: o.update(memswap_limit="2g"),
    "no_pids_limit": lambda o: o.pop("pids_limit"),
    "unlimited_files": lambda o: o.update(ulimits=[docker.types.Ulimit(name="nofile", soft=1 << 20, hard=1 << 20)]),
    "sysctl": lambda o: o.update(sysctls={"kernel.shm_rmid_forced": "1"}),
    "oom_protected": lambda o: o.update(oom_score_adj=-1000),
    "oom_kill_disabled": lambda o: o.update(oom_kill_disable=True),
    "tmpfs_exec_suid": lambda o: o["tmpfs"].update({"/work": "rw,exec,size=64m"}),
    "extra_tmpfs": lambda o: o["tmpfs"].update({"/etc": "rw,size=1m"}),
    "host_ipc": lambda o: o.update(ipc_mode="host"),
    "docker_log": lambda o: o.pop("log_config"),
    "not_labelled": lambda o: o["labels"].pop("runbox.role"),
    "uid_label_mismatch": lambda o: o["labels"].update({"runbox.uid": "200000"}),
    "extra_label": lambda o: o["labels"].update({"com.example": "x"}),
    "named": lambda o: o.update(name="sandbox-with-a-name"),
    "restart_policy": lambda o: o.update(restart_policy={"Name": "always"}),
    "init_process": lambda o: o.update(init=True),
    "stop_signal": lambda o: o.update(stop_signal="SIGTERM"),
    "cgroup_parent": lambda o: o.update(cgroup_parent="/"),
    "counters_shown": lambda o: o.update(masked_paths=list(DOCKER_MASKED_PATHS)),
    "proc_unmasked": lambda o: o.update(masked_paths=[]),
    "tmpfs_over_proc_under_runc": lambda o: o["tmpfs"].update({"/proc/1": COVER_TMPFS}),
    "agent_proc_uncovered_under_gvisor": lambda o: (o.update(sandbox_options("runsc")), o["tmpfs"].pop("/proc/1")),
}


@pytest.mark.parametrize("name", sorted(TAMPERED))
def test_a_sandbox_with_anything_more_is_refused(
    name: str, gate: docker.DockerClient, docker_gate: tuple[Service, str], docker_client: docker.DockerClient
) -> None:
    options = with_change(TAMPERED[name])
    assert_refused(lambda: create_container(gate, options), docker_gate)
    # Nothing reached the engine.
    executor = options["labels"].get("runbox.executor")
    assert not docker_client.containers.list(all=True, filters={"label": f"runbox.executor={executor}"})


def test_exec_into_a_container_that_is_not_a_sandbox_is_refused(
    gate: docker.DockerClient, docker_gate: tuple[Service, str], outsider: Any
) -> None:
    assert_refused(lambda: gate.api.exec_create(outsider.id, ["id"]), docker_gate, "not an endpoint")
    assert_refused(lambda: gate.api.exec_create(outsider.name, ["id"]), docker_gate, "not an endpoint")


def test_containers_that_are_not_sandboxes_are_out_of_reach(
    gate: docker.DockerClient, docker_gate: tuple[Service, str], outsider: Any, docker_client: docker.DockerClient
) -> None:
    for call in (
        lambda: gate.api.remove_container(outsider.id, force=True),
        lambda: gate.api.remove_container(outsider.name, force=True),
        lambda: gate.api.remove_container(outsider.id[:12], force=True),
        lambda: gate.api.kill(outsider.id),
        lambda: gate.api.inspect_container(outsider.id),
        lambda: gate.api.attach_socket(outsider.id, params={"stdin": 1, "stream": 1}),
        lambda: gate.api.stop(outsider.id),
        lambda: gate.api.restart(outsider.id),
        lambda: gate.api.pause(outsider.id),
        lambda: gate.api.logs(outsider.id),
        lambda: gate.api.get_archive(outsider.id, "/etc/passwd"),
        lambda: gate.api.commit(outsider.id, repository="stolen"),
    ):
        assert_refused(call, docker_gate)
    outsider.reload()
    assert outsider.status == "running"


def test_images_cannot_be_pulled_built_or_touched(gate: docker.DockerClient, docker_gate: tuple[Service, str]) -> None:
    assert_refused(lambda: gate.images.pull("debian", tag="bookworm-slim"), docker_gate, "/images/create")
    dockerfile = io.BytesIO(b"FROM debian:bookworm-slim\nRUN id\n")
    assert_refused(lambda: gate.images.build(fileobj=dockerfile, tag="runbox-gate-evil"), docker_gate, "/build")
    assert_refused(lambda: gate.images.list(), docker_gate)
    assert_refused(lambda: gate.api.remove_image("debian:bookworm-slim"), docker_gate)
    assert_refused(lambda: gate.api.tag("debian:bookworm-slim", "runbox/sandbox-python"), docker_gate)


def test_the_rest_of_the_engine_is_refused(gate: docker.DockerClient, docker_gate: tuple[Service, str]) -> None:
    for call in (
        lambda: gate.api._result(gate.api._get(gate.api._url("/events"), stream=True)),
        lambda: gate.volumes.create("runbox-gate-evil"),
        lambda: gate.networks.create("runbox-gate-evil"),
        lambda: gate.api.inspect_network("bridge"),
        lambda: gate.swarm.init(),
        lambda: gate.plugins.list(),
        lambda: gate.api.df(),
        lambda: gate.containers.list(all=True),  # unfiltered: every container on the host
        lambda: gate.containers.list(all=True, filters={"label": "runbox.role=gateway"}),
    ):
        assert_refused(call, docker_gate)


def test_the_engine_info_shows_only_the_sandbox_runtimes(gate: docker.DockerClient) -> None:
    info = gate.info()
    settings = Settings.from_env()
    assert set(info["Runtimes"]) <= {"runc", settings.gvisor_runtime}
    assert "runc" in info["Runtimes"]
    assert "Containers" not in info and "DockerRootDir" not in info and "Name" not in info


def test_a_live_sandbox_uid_cannot_be_taken_twice(
    gate: docker.DockerClient, docker_gate: tuple[Service, str]
) -> None:
    first = create_container(gate, sandbox_options())
    try:
        uid = int(first.labels["runbox.uid"])
        assert_refused(lambda: create_container(gate, sandbox_options(uid=uid)), docker_gate, "uid")
    finally:
        first.remove(force=True)
    # Once the first sandbox is gone its uid is free again.
    second = create_container(gate, sandbox_options(uid=uid))
    second.remove(force=True)


@pytest.mark.parametrize("runtime", ["runc", "runsc"])
def test_a_real_sandbox_goes_through(runtime: str, gate: docker.DockerClient, docker_gate: tuple[Service, str]) -> None:
    """The executor's own sandbox is created, attached, started, inspected, listed, killed and removed."""
    options = sandbox_options(runtime)
    container = create_container(gate, options)
    try:
        sock = gate.api.attach_socket(container.id, params={"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1})
        container.start()
        raw = getattr(sock, "_sock", sock)
        raw.settimeout(60)
        header = raw.recv(8)
        greeting = b""
        while not greeting.endswith(b"\n"):
            greeting += raw.recv(4096)
        assert header[0] == 1 and b'"t":"ready"' in greeting, greeting
        listed = gate.containers.list(filters={"label": ["runbox.role=sandbox",
                                                         f"runbox.executor={options['labels']['runbox.executor']}"]})
        assert [c.id for c in listed] == [container.id]
        container.reload()
        assert container.attrs["HostConfig"]["Runtime"] == options["runtime"]
        container.kill()
        assert gate.api.wait(container.id, timeout=60)["StatusCode"] != 0
        raw.close()
    finally:
        container.remove(force=True)
    with pytest.raises(docker.errors.NotFound):
        gate.containers.get(container.id)
    assert httpx.get(docker_gate[0].url + "/readyz", timeout=10).status_code == 200


HOG = """
hoard = []
while True:
    hoard.append(bytearray(16 << 20))
"""


def gate_requests(gate_service: Service, endpoint: str) -> float:
    for line in httpx.get(gate_service.url + "/metrics", timeout=10).text.splitlines():
        if line.startswith(f'runbox_gate_requests_total{{endpoint="{endpoint}"}}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_a_sandbox_killed_for_its_memory_is_told_through_the_gate(
    gate: docker.DockerClient, docker_gate: tuple[Service, str], outsider: Any
) -> None:
    """The engine's ``oom`` event of a sandbox reaches its executor: the one sign of an OOM kill
    the container's state does not keep (the job's process, not the agent, was killed)."""
    settings = Settings.from_env()
    language = Registry.load(("python",), image_tag=settings.image_tag).get("python")
    assert language is not None
    limits = language.default_limits
    sandbox = Sandbox(gate, language, limits, sandbox_options())
    job = agent_job("gate-oom", language, limits, [{"name": "main.py", "content": HOG}], "", ())
    for step in job["steps"]:
        step.pop("watch_memory_kb")  # the agent would kill it at its limit, before the kernel
        step.pop("warm", None)
    before = gate_requests(docker_gate[0], "events")

    async def run() -> tuple[list[dict[str, Any]], bool]:
        await sandbox.start()
        try:
            messages = [message async for message in sandbox.run(job, 60)]
            return messages, await sandbox.oom_killed()
        finally:
            await sandbox.destroy()

    messages, out_of_memory = asyncio.run(run())
    assert messages and messages[-1]["t"] == "done", messages
    assert out_of_memory
    assert gate_requests(docker_gate[0], "events") > before
    # Only that: one sandbox's oom events over a closed span, never another container's or the host's.
    now = time.time()

    def events(**params: Any) -> Any:
        if "filters" in params:
            params["filters"] = json.dumps(params["filters"])
        return gate.api._result(gate.api._get(gate.api._url("/events"), params={"since": now - 60, **params}))

    for params in (
        {"until": now, "filters": {"container": [outsider.id], "event": ["oom"]}},
        {"until": now, "filters": {"event": ["oom"]}},
        {"filters": {"container": [outsider.id], "event": ["oom"]}},
        {"until": now, "filters": {"container": [outsider.id], "event": ["oom", "die"]}},
        {"until": now, "filters": {"container": [outsider.id], "event": ["oom"], "type": ["container"]}},
        {"until": now + 3600, "filters": {"container": [sandbox.container.id], "event": ["oom"]}},
        {"until": "nan", "filters": {"container": [sandbox.container.id], "event": ["oom"]}},
    ):
        assert_refused(lambda asked=params: events(**asked), docker_gate)
