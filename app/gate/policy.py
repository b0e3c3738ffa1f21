"""What the Docker gate lets an executor do: pure functions over one request, no I/O.

An executor needs a handful of the engine's endpoints, and only on its own sandboxes. Each
request is classified into an :class:`Endpoint`; anything that is not one of them (exec,
build, pull, images, volumes, networks, plugins, swarm, logs, archive...) is refused, and so
are the engine's events but for one sandbox's ``oom`` events over a closed span of time
(:func:`check_events_query`: whether the kernel killed it for its memory).
A create must carry a sandbox's whole configuration (:func:`check_create`): every field of
the body is either absent or empty, or one this module knows and checks; a field it does not
know is refused, so a new engine option can never slip through.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlencode

from app import seccomp
from app.executor.sandbox import (
    AGENT_MEMORY_MB,
    AGENT_MOUNT,
    AGENT_PROCESSES,
    COVER_TMPFS,
    GVISOR_COVERS,
    GVISOR_THREADS,
    MASKED_PATHS,
    SHM_MB,
    TMP_MB,
    agent_directory,
)
from app.languages import Language

VERSION_PREFIX = re.compile(r"^/v\d+\.\d+(?=/)")
CONTAINER_ID = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}"
# Container endpoints an executor uses on its sandboxes, by method and path suffix.
CONTAINER_ACTIONS = {
    ("POST", "start"): "start",
    ("POST", "attach"): "attach",
    ("POST", "wait"): "wait",
    ("POST", "kill"): "kill",
    ("GET", "json"): "inspect",
}
SANDBOX_LABEL = ("runbox.role", "sandbox")
LABELS = {"runbox.role", "runbox.executor", "runbox.language", "runbox.uid"}
OWNER_LABEL = "runbox.owner"  # host/pid namespace/pid of the executor process, optional (app/executor/engine.py)
MAX_EXECUTOR_NAME = 128
TMPFS = re.compile(r"^rw,exec,nosuid,nodev,size=(\d+)m,uid=(\d+),gid=(\d+),mode=0700$")
TMPFS_MAX_MB = {"/work": 1024, "/tmp": TMP_MB}
ULIMITS_MAX = {"nofile": 4096, "core": 0}
MAX_CPUS = 4.0
EVENTS_CLOCK_SLACK_S = 5.0  # an events span may end this far past the gate's clock (executor and gate share a host)


class Refused(Exception):
    """The request breaks the policy; ``reason`` is one of ``app.metrics.GATE_REFUSALS`` (a metric label)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class Request:
    """A request as the gate understood it: which endpoint, on which container."""

    endpoint: str
    container: str | None = None  # as named in the path: an id, a prefix or a name
    query: str = ""


@dataclass(frozen=True)
class Sandbox:
    """What a valid create asks for, as far as the gate keeps track of it."""

    uid: int
    language: str
    executor: str


def classify(method: str, target: str, now: float) -> Request:
    """Map a request line onto an allowed endpoint, or refuse it (``now``: the gate's clock)."""
    path, _, query = target.partition("?")
    path = VERSION_PREFIX.sub("", path)
    if method in ("GET", "HEAD") and path == "/_ping":
        return Request("ping")
    if method == "GET" and path == "/version":
        return Request("version")
    if method == "GET" and path == "/runbox/runtimes":
        return Request("runtimes")
    if method == "GET" and path == "/info":
        return Request("info")  # answered by the gate itself, with only what executors check
    if method == "POST" and path == "/containers/create":
        if query:
            raise Refused("policy", "a sandbox is created without a name or platform")
        return Request("create")
    if method == "GET" and path == "/containers/json":
        check_list_query(query)
        return Request("list", query=query)
    if method == "GET" and path == "/events":
        return Request("events", check_events_query(query, now), query)
    match = re.fullmatch(rf"/containers/({CONTAINER_ID})(?:/([a-z]+))?", path)
    if match:
        container, action = match[1], match[2]
        if action is None and method == "DELETE":
            params = parse_qs(query)
            if params.get("link", ["0"])[0] not in ("0", "false", "False"):
                raise Refused("policy", "removing links is not an executor's business")
            return Request("remove", container, query)
        endpoint = CONTAINER_ACTIONS.get((method, action or ""))
        if endpoint is not None:
            return Request(endpoint, container, query)
    raise Refused("endpoint", f"{method} {path} is not an endpoint the runbox gate allows")


def check_list_query(query: str) -> None:
    """A list must be filtered to sandboxes (``label=runbox.role=sandbox``)."""
    try:
        filters = json.loads(parse_qs(query).get("filters", ["{}"])[0])
    except ValueError as exc:
        raise Refused("bad_request", "filters is not JSON") from exc
    labels = filters.get("label") if isinstance(filters, dict) else None
    if isinstance(labels, dict):  # the engine also takes {"label": {"a=b": true}}
        labels = [k for k, v in labels.items() if v]
    if not isinstance(labels, list) or "=".join(SANDBOX_LABEL) not in labels:
        raise Refused("policy", "a container list must be filtered by label runbox.role=sandbox")


def check_events_query(query: str, now: float) -> str:
    """The container whose events are asked for: only ``oom`` events of one container, from ``since``
    to ``until`` no later than ``now`` (so the answer ends at once rather than streaming the
    host's activity, or holding a connection open until a far ``until``)."""
    params = parse_qs(query)
    try:
        since, until = (float(params[name][0]) for name in ("since", "until"))
        filters = json.loads(params.get("filters", ["{}"])[0])
    except (KeyError, ValueError) as exc:
        raise Refused("policy", "events are asked for with since, until and filters") from exc
    if not since <= until <= now + EVENTS_CLOCK_SLACK_S:  # also refuses NaN
        raise Refused("policy", "events are asked for over a span that has ended")
    if not isinstance(filters, dict) or set(filters) != {"container", "event"}:
        raise Refused("policy", "events are asked for one container's oom events, filtered by both")
    containers, events = filters["container"], filters["event"]
    if isinstance(containers, dict):  # the engine also takes {"container": {"id": true}}
        containers = [k for k, v in containers.items() if v]
    if isinstance(events, dict):
        events = [k for k, v in events.items() if v]
    if (
        not isinstance(containers, list) or len(containers) != 1 or events != ["oom"]
        or not isinstance(containers[0], str) or not re.fullmatch(CONTAINER_ID, containers[0])
    ):
        raise Refused("policy", "events are asked for one container's oom events, filtered by both")
    return containers[0]


def events_target(prefix: str, query: str, container: str) -> str:
    """The events request to send the engine: the asked span, filtered by the sandbox's full id."""
    params = parse_qs(query)
    filters = json.dumps({"container": [container], "event": ["oom"]})
    span = {"since": params["since"][0], "until": params["until"][0]}
    return f"{prefix}/events?" + urlencode({**span, "filters": filters})


def is_sandbox(labels: dict[str, str] | None) -> bool:
    """Whether a container's labels make it a runbox sandbox."""
    return bool(labels) and (labels or {}).get(SANDBOX_LABEL[0]) == SANDBOX_LABEL[1]


def _empty(value: Any) -> bool:
    return value is None or value is False or value in ("", 0, [], {})


def _present(section: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in section.items() if not _empty(v)}


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise Refused("policy", message)


def check_create(
    body: Any,
    images: dict[str, Language],
    runtimes: dict[str, str],
    uid_range: range,
    agent_root: str = "",
) -> Sandbox:
    """Check a create body against the sandbox policy; return what it creates, or raise :class:`Refused`.

    ``images`` maps each allowed image to its language, ``runtimes`` each allowed engine
    runtime name to runbox's name for it (``runc``/``runsc``), ``uid_range`` the sandbox uids,
    ``agent_root`` the directory of agent sockets (``RUNBOX_AGENT_SOCKET_DIR``): a sandbox may
    mount its own directory there read-only, and nothing else of the host.
    """
    _require(isinstance(body, dict), "the create body must be a JSON object")
    config = _present(body)
    host = config.pop("HostConfig", None)
    _require(isinstance(host, dict), "a sandbox needs its HostConfig")
    assert isinstance(host, dict)
    host = _present(host)

    image = config.pop("Image", None)
    language = images.get(image) if isinstance(image, str) else None
    _require(language is not None, f"image {image!r} is not a configured sandbox image")
    assert language is not None
    user = config.pop("User", "")
    match = re.fullmatch(r"(\d+):(\d+)", user) if isinstance(user, str) else None
    _require(match is not None and match[1] == match[2], "a sandbox runs as uid:gid, both the same number")
    assert match is not None
    uid = int(match[1])
    _require(uid in uid_range, f"uid {uid} is outside the sandbox uids {uid_range.start}-{uid_range.stop - 1}")
    labels = config.pop("Labels", {})
    _require(
        isinstance(labels, dict) and set(labels) - {OWNER_LABEL} == LABELS
        and len(str(labels.get(OWNER_LABEL, ""))) <= MAX_EXECUTOR_NAME + 16,
        f"a sandbox has exactly the labels {sorted(LABELS)} (and {OWNER_LABEL})",
    )
    executor = labels.get("runbox.executor")
    _require(
        labels.get("runbox.role") == "sandbox"
        and labels.get("runbox.language") == language.key
        and labels.get("runbox.uid") == str(uid)
        and isinstance(executor, str)
        and 0 < len(executor) <= MAX_EXECUTOR_NAME,
        "the labels must name the sandbox role, its image's language, its uid and its executor",
    )
    _require(config.pop("OpenStdin", False) is True, "a sandbox's agent reads its jobs on an open stdin")
    _require(config.pop("Hostname", "sandbox") == "sandbox", "a sandbox's hostname is 'sandbox'")
    _require(config.pop("StopSignal", "SIGKILL") == "SIGKILL", "a sandbox is stopped with SIGKILL")
    for flag in ("AttachStdin", "AttachStdout", "AttachStderr"):
        _require(isinstance(config.pop(flag, False), bool), f"{flag} is a boolean")
    volumes = config.pop("Volumes", {})
    _require(volumes in ({}, {AGENT_MOUNT: {}}), f"a sandbox's only volume is {AGENT_MOUNT}")
    _require(not config, f"fields not allowed in a sandbox: {sorted(config)}")

    binds = host.pop("Binds", [])
    own = f"{agent_directory(agent_root, str(executor), uid)}:{AGENT_MOUNT}:ro" if agent_root else None
    _require(
        binds == [] or (own is not None and binds == [own]),
        "a sandbox mounts nothing of the host but its own agent socket directory, read-only",
    )
    runtime = host.pop("Runtime", "runc")
    _require(runtime in runtimes, f"runtime {runtime!r} is not an allowed sandbox runtime")
    _check_host(host, language, runtimes[runtime], uid)
    return Sandbox(uid, language.key, str(executor))


def _check_host(host: dict[str, Any], language: Language, runtime: str, uid: int) -> None:
    """The HostConfig of a sandbox: no privilege, no host resource, every limit bounded."""
    _require(host.pop("NetworkMode", None) == "none", "a sandbox has network mode none")
    _require(host.pop("ReadonlyRootfs", False) is True, "a sandbox's root filesystem is read-only")
    _require(host.pop("CapDrop", None) == ["ALL"], "a sandbox drops every capability")
    security = ["no-new-privileges:true", f"seccomp={seccomp.profile(runtime)}"]
    _require(
        sorted(host.pop("SecurityOpt", [])) == sorted(security),
        "a sandbox has no-new-privileges and exactly runbox's seccomp profile for its runtime",
    )
    _require(host.pop("IpcMode", None) == "private", "a sandbox has a private IPC namespace")
    _require(host.pop("LogConfig", None) == {"Type": "none", "Config": {}}, "a sandbox has no Docker log")
    compile_mb = language.compile.memory_mb if language.compile else 0
    ceiling = (max(language.max_limits.memory_mb, compile_mb) + AGENT_MEMORY_MB) * 1024 * 1024
    memory = host.pop("Memory", 0)
    _require(
        isinstance(memory, int) and 0 < memory <= ceiling and host.pop("MemorySwap", 0) == memory,
        f"a sandbox's memory is limited to at most {ceiling} bytes, with no swap",
    )
    pids = host.pop("PidsLimit", 0)
    pids_ceiling = language.max_limits.processes + AGENT_PROCESSES + (GVISOR_THREADS if runtime == "runsc" else 0)
    _require(isinstance(pids, int) and 0 < pids <= pids_ceiling, f"a sandbox's process limit is 1-{pids_ceiling}")
    cpus = host.pop("NanoCpus", 0)
    _require(isinstance(cpus, int) and 0 < cpus <= MAX_CPUS * 1e9, "a sandbox's CPU quota is set and bounded")
    shm = host.pop("ShmSize", 0)
    _require(isinstance(shm, int) and 0 < shm <= SHM_MB * 1024 * 1024, f"/dev/shm is at most {SHM_MB} MB")
    oom = host.pop("OomScoreAdj", 0)
    _require(isinstance(oom, int) and 0 <= oom <= 1000, "a sandbox may only be more likely to be OOM-killed")
    masked = host.pop("MaskedPaths", [])
    _require(
        isinstance(masked, list) and set(MASKED_PATHS) <= set(masked)
        and all(isinstance(p, str) and p.startswith(("/proc/", "/sys/")) for p in masked),
        "a sandbox masks Docker's paths and every counter of earlier jobs",
    )
    tmpfs = host.pop("Tmpfs", {})
    _require(isinstance(tmpfs, dict), "Tmpfs is an object")
    covers = {path: tmpfs.pop(path) for path in GVISOR_COVERS if path in tmpfs}
    _require(
        all(options == COVER_TMPFS for options in covers.values())
        and len(covers) == (len(GVISOR_COVERS) if runtime == "runsc" else 0),
        "under gVisor (only) a sandbox covers its cgroup counters and /proc/1 with empty read-only tmpfs mounts",
    )
    _require(set(tmpfs) == set(TMPFS_MAX_MB), "a sandbox has tmpfs /work and /tmp (and gVisor's covers) only")
    for path, options in tmpfs.items():
        match = TMPFS.fullmatch(options) if isinstance(options, str) else None
        _require(
            match is not None and int(match[1]) <= TMPFS_MAX_MB[path] and match[2] == match[3] == str(uid),
            f"tmpfs {path} must be size-capped, nosuid, nodev and owned by the sandbox's uid",
        )
    ulimits = host.pop("Ulimits", [])
    _require(isinstance(ulimits, list), "Ulimits is a list")
    for ulimit in ulimits:
        name = ulimit.get("Name") if isinstance(ulimit, dict) else None
        _require(
            name in ULIMITS_MAX and 0 <= ulimit.get("Soft", -1) <= ulimit.get("Hard", -1) <= ULIMITS_MAX[name],
            f"ulimit {name!r} is not one a sandbox may set that high",
        )
    _require(not host, f"host settings not allowed in a sandbox: {sorted(host)}")
