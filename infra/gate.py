"""The Docker gate: the one container that mounts the engine's socket.

Access to the engine's socket is root on the host. The gate (``RUNBOX_ROLES=gate``) holds it
and serves the executors a sandbox-only subset of the Engine API on a socket of its own, in a
host directory the executors mount instead (``app/gate/``). The gate joins the internal
backend network only so Prometheus can scrape its refusals; its API is never on a network.
It also mounts, read-only, the directory of the gVisor that ``scripts/setup.sh`` installs, to
report that runtime's version.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_docker as docker

from app.config import Settings
from infra.common import APP_PORT, PROBE_PORT, docker_labels, env_list, hardening, metrics_endpoint, secret_env

SOCKET_DIR_IN_CONTAINER = "/run/runbox"
GATE_SOCKET = f"{SOCKET_DIR_IN_CONTAINER}/gate.sock"
ENGINE_SOCKET_IN_CONTAINER = "/var/run/docker.sock"
APP_UID = 10000  # the image's non-root user (Dockerfile)


@dataclass
class GateArgs:
    """Inputs of :class:`Gate`."""

    prefix: str
    image: pulumi.Input[str]
    network: pulumi.Input[str]  # the internal backend network (metrics only)
    docker_socket: str = "/var/run/docker.sock"  # the engine's, on the host
    socket_dir: str = "/run/runbox-gate"  # on the host: where the gate's socket appears for executors
    agent_dir: str = "/run/runbox-agents"  # on the host: agent sockets, the one host path a sandbox may mount
    # The host's group owning the engine's socket: the gate runs as the image's user with that
    # group added and gives its own socket to the same group (the executors get it too).
    # None runs it as root (still without capabilities).
    docker_gid: int | None = None
    runtime_dir: str = "/usr/local/lib/runbox"  # the gVisor setup.sh installs, for its version
    gvisor_runtime: str = Settings.gvisor_runtime  # the engine's name for ``runsc`` the gate admits
    log_level: str = "INFO"
    metrics_token: pulumi.Output[str] | None = None  # secret: what Prometheus presents at /metrics
    extra_env: Mapping[str, str] = field(default_factory=dict)
    image_hash: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    depends_on: Sequence[pulumi.Resource] = ()
    # Many hosts: a network that can publish, and /metrics published on ``publish_ip:metrics_port``
    # for a Prometheus on another host (the backend network is internal and host-local).
    extra_networks: Sequence[pulumi.Input[str]] = ()
    metrics_port: int | None = None
    publish_ip: str = ""


class Gate(pulumi.ComponentResource):
    """One gate container; ``docker_url`` and ``socket_dir`` are what executors need to reach it."""

    container: docker.Container
    name: str
    docker_url: str
    socket_dir: str
    agent_dir: str
    metrics_targets: list[str]

    def __init__(self, name: str, args: GateArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("runbox:gate:Gate", name, {}, opts)
        self.name = f"{args.prefix}-{name}"
        self.docker_url = f"unix://{GATE_SOCKET}"
        self.socket_dir = args.socket_dir
        self.agent_dir = args.agent_dir
        if args.docker_gid is None:
            identity: dict[str, Any] = {"user": "0:0"}
            variables: dict[str, str] = {}
        else:
            identity = {"user": f"{APP_UID}:{APP_UID}", "group_adds": [str(args.docker_gid)]}
            variables = {"RUNBOX_GATE_SOCKET_GID": str(args.docker_gid)}
        variables.update({
            **args.extra_env,
            "RUNBOX_ROLES": "gate",
            "RUNBOX_HOST": "0.0.0.0",
            "RUNBOX_PORT": str(APP_PORT),
            "RUNBOX_PROBE_PORT": str(PROBE_PORT),
            "RUNBOX_GATE_SOCKET": GATE_SOCKET,
            "RUNBOX_ENGINE_URL": f"unix://{ENGINE_SOCKET_IN_CONTAINER}",
            "RUNBOX_GVISOR_RUNTIME": args.gvisor_runtime,
            "RUNBOX_AGENT_SOCKET_DIR": args.agent_dir,
            "RUNBOX_LOG_LEVEL": args.log_level,
        })
        # The only secret the gate holds is the metrics token; the engine's socket is its real power.
        envs = env_list(variables, secret_env(args.metrics_token))
        ports, target = metrics_endpoint(self.name, args.metrics_port, args.publish_ip)
        self.container = docker.Container(
            name,
            name=self.name,
            hostname=self.name,
            image=args.image,
            envs=envs,
            volumes=[
                docker.ContainerVolumeArgs(host_path=args.docker_socket, container_path=ENGINE_SOCKET_IN_CONTAINER),
                docker.ContainerVolumeArgs(host_path=args.socket_dir, container_path=SOCKET_DIR_IN_CONTAINER),
                docker.ContainerVolumeArgs(host_path=args.runtime_dir, container_path=args.runtime_dir, read_only=True),
            ],
            ports=ports or None,  # one host: scraped by name, nothing published
            networks_advanced=[
                docker.ContainerNetworksAdvancedArgs(name=args.network, aliases=["gate"]),
                *(docker.ContainerNetworksAdvancedArgs(name=n) for n in args.extra_networks),
            ],
            labels=docker_labels({**args.labels, "runbox.role": "gate", "runbox.image-hash": args.image_hash}),
            **identity,
            **hardening(),
            opts=pulumi.ResourceOptions(parent=self, depends_on=list(args.depends_on)),
        )
        self.metrics_targets = [target]
        self.register_outputs(
            {"name": self.name, "docker_url": self.docker_url, "metrics_targets": self.metrics_targets}
        )
