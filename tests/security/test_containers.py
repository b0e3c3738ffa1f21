"""No sandbox container is privileged, shares a host namespace, or mounts anything of the host."""

from __future__ import annotations

import concurrent.futures
import json
import time
from typing import Any

import docker.errors

from app import seccomp
from app.config import Settings
from app.executor.sandbox import AGENT_MEMORY_MB, AGENT_MOUNT, GVISOR_COVERS, MASKED_PATHS, agent_directory
from tests.security.conftest import SECRET, Target, sandbox_uid

HOST_NAMESPACE_MODES = {"host"}


def inspect(t: Target, container_id: str) -> dict[str, Any] | None:
    try:
        return dict(t.docker.api.inspect_container(container_id))
    except docker.errors.NotFound:
        return None  # removed meanwhile (scrubbed out, replaced)


def assert_unprivileged(attrs: dict[str, Any]) -> None:
    """What every sandbox must look like, whoever started it."""
    host = attrs["HostConfig"]
    name = attrs["Name"]
    assert host["Privileged"] is False, name
    assert host["NetworkMode"] == "none", name
    for mode in ("PidMode", "IpcMode", "UTSMode", "UsernsMode"):
        assert host.get(mode) not in HOST_NAMESPACE_MODES, (name, mode, host.get(mode))
    # No volume, no mount of the host but the sandbox's own agent socket directory, read-only.
    labels = attrs["Config"]["Labels"]
    root = Settings.from_env().agent_socket_dir
    own = agent_directory(root, labels["runbox.executor"], int(labels["runbox.uid"]))
    assert host.get("Binds") in (None, [], [f"{own}:{AGENT_MOUNT}:ro"]), (name, host.get("Binds"))
    assert not host.get("Mounts") and not host.get("VolumesFrom"), name
    assert [(m["Type"], m["Source"], m["Destination"], m["RW"]) for m in attrs["Mounts"]] in (
        [], [("bind", own, AGENT_MOUNT, False)]
    ), (name, attrs["Mounts"])
    assert not host.get("Devices"), name
    assert "docker.sock" not in json.dumps(attrs), name
    assert host["ReadonlyRootfs"] is True, name
    assert host["CapDrop"] == ["ALL"] and not host.get("CapAdd"), name
    assert "no-new-privileges:true" in (host.get("SecurityOpt") or []), name


def test_no_sandbox_is_privileged(target: Target) -> None:
    t = target
    # A job asking for non-default limits gets a fresh container of its own: catch it live too.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        fresh = pool.submit(t.run, "python", "import time\ntime.sleep(4)\nprint('fresh')\n",
                            limits={"memory_mb": 128, "timeout_s": 10})
        deadline = time.monotonic() + 60
        seen_fresh = False
        inspected = 0
        while not seen_fresh and time.monotonic() < deadline:
            uids: dict[str, str] = {}  # the live sandboxes of this sweep, by uid
            for container in t.containers():
                attrs = inspect(t, container.id)
                if attrs is None:
                    continue
                inspected += 1
                assert_unprivileged(attrs)
                host = attrs["HostConfig"]
                assert host["Runtime"] == Settings.from_env().engine_runtime(t.runtime), attrs["Name"]
                uid = attrs["Config"]["Labels"]["runbox.uid"]
                assert attrs["Config"]["User"] == f"{uid}:{uid}" and sandbox_uid(uid), attrs["Name"]
                uids.setdefault(uid, container.id)
                assert uids[uid] == container.id, f"two live sandboxes share uid {uid}"
                assert f"seccomp={seccomp.profile(t.runtime)}" in host["SecurityOpt"], attrs["Name"]
                assert {"/work", "/tmp"} <= set(host["Tmpfs"]), host["Tmpfs"]
                covers = set(GVISOR_COVERS) if t.runtime == "runsc" else set()
                assert set(host["Tmpfs"]) - {"/work", "/tmp"} == covers, host["Tmpfs"]
                assert set(MASKED_PATHS) <= set(host["MaskedPaths"]), attrs["Name"]
                assert host["Memory"] == host["MemorySwap"] > 0 and host["PidsLimit"] > 0, attrs["Name"]
                assert host["LogConfig"]["Type"] == "none", attrs["Name"]
                env = "\n".join(attrs["Config"]["Env"] or [])
                assert "RUNBOX" not in env and SECRET not in env and "amqp" not in env.lower(), env
                seen_fresh |= host["Memory"] == (128 + AGENT_MEMORY_MB) * 1024 * 1024
            time.sleep(0.2)
        assert fresh.result()["result"]["stdout"] == "fresh\n"
    assert seen_fresh, "never saw the fresh container of the 128 MB job"
    assert inspected >= 3
    # Every sandbox on this engine, of any executor, is as unprivileged as ours.
    for container in t.docker.containers.list(filters={"label": "runbox.role=sandbox"}, sparse=True):
        attrs = inspect(t, container.id)
        if attrs is not None:
            assert_unprivileged(attrs)
