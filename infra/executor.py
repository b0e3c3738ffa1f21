"""The executors: containers that run sandboxes through the Docker gate.

They never see the engine's socket (root on the host): they mount the directory holding the
gate's socket (infra/gate.py), which lets them create, drive and remove sandboxes and nothing
else. They join only the internal backend network (RabbitMQ and Prometheus), publish nothing,
and are never ``privileged``: the sandboxes they start are sibling containers made by the
host's engine, each with ``network_mode="none"``, the runtime below, and every limit set in
app/executor/sandbox.py.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_docker as docker

from app.config import Settings
from infra.common import APP_PORT, PROBE_PORT, docker_labels, env_list, hardening, metrics_endpoint, secret_env

GATE_DIR_IN_CONTAINER = "/run/runbox"
APP_UID = 10000  # the image's non-root user (Dockerfile)


@dataclass
class ExecutorArgs:
    """Inputs of :class:`Executor`."""

    prefix: str
    image: pulumi.Input[str]
    amqp_url: pulumi.Output[str]  # secret: holds the broker password
    network: pulumi.Input[str]  # the internal backend network
    metrics_token: pulumi.Output[str] | None = None  # secret: what Prometheus presents at /metrics
    count: int = 1
    runtime: str = "runc"  # RUNBOX_RUNTIME for the sandboxes: runc, or runsc (gVisor)
    runtimes: Sequence[str] = ()  # per-executor overrides of ``runtime``, by index
    gvisor_runtime: str = Settings.gvisor_runtime  # the engine's name for ``runsc`` (RUNBOX_GVISOR_RUNTIME)
    gate_dir: str = "/run/runbox-gate"  # on the host: the directory of the gate's socket
    docker_url: str = "unix:///run/runbox/gate.sock"  # the gate's socket, as the executor sees it
    # Agent sockets: the same path on the host and in the executor (the engine mounts the host's
    # into each sandbox); it must be writable by the executor's user, else it uses attach streams.
    agent_dir: str = "/run/runbox-agents"
    # The host's group owning the gate's socket: the executor runs as the image's user with that
    # group added. None runs it as root instead (still unprivileged, no capabilities).
    docker_gid: int | None = None
    amqp_prefix: str = "runbox"
    log_level: str = "INFO"
    extra_env: Mapping[str, str] = field(default_factory=dict)
    image_hash: str = ""  # app image digest label
    sandbox_hash: str = ""  # sandbox images digest label: new images restart the warm pools
    labels: Mapping[str, str] = field(default_factory=dict)
    depends_on: Sequence[pulumi.Resource] = ()  # the broker and the sandbox images
    # Many hosts: a network with a route to the brokers on other hosts, and metrics published
    # on ``publish_ip`` (executor i on ``metrics_port + i``) for a Prometheus on another host.
    extra_networks: Sequence[pulumi.Input[str]] = ()
    metrics_port: int | None = None
    publish_ip: str = ""


class Executor(pulumi.ComponentResource):
    """``count`` executor containers (RUNBOX_ROLES=executor) with the gate's socket mounted."""

    containers: list[docker.Container]
    names: list[str]
    runtimes: list[str]
    metrics_targets: list[str]

    def __init__(self, name: str, args: ExecutorArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("runbox:executor:Executor", name, {}, opts)
        child = pulumi.ResourceOptions(parent=self, depends_on=list(args.depends_on))
        labels = {
            **args.labels,
            "runbox.role": "executor",
            "runbox.image-hash": args.image_hash,
            "runbox.sandbox-hash": args.sandbox_hash,
        }
        if args.docker_gid is None:
            identity: dict[str, Any] = {"user": "0:0"}
        else:
            identity = {"user": f"{APP_UID}:{APP_UID}", "group_adds": [str(args.docker_gid)]}

        self.containers, self.names, self.runtimes, self.metrics_targets = [], [], [], []
        secret = secret_env(args.metrics_token, RUNBOX_AMQP_URL=args.amqp_url)
        for i in range(args.count):
            child_name = f"{name}-{i}"
            docker_name = f"{args.prefix}-{child_name}"
            runtime = args.runtimes[i] if i < len(args.runtimes) else args.runtime
            envs = env_list(
                {
                    **args.extra_env,
                    "RUNBOX_ROLES": "executor",
                    "RUNBOX_HOST": "0.0.0.0",
                    "RUNBOX_PORT": str(APP_PORT),
                    "RUNBOX_PROBE_PORT": str(PROBE_PORT),
                    "RUNBOX_AMQP_PREFIX": args.amqp_prefix,
                    # Stable across updates: a replaced executor removes its predecessor's sandboxes,
                    # which carry this name in their runbox.executor label.
                    "RUNBOX_EXECUTOR_NAME": docker_name,
                    "RUNBOX_RUNTIME": runtime,
                    "RUNBOX_GVISOR_RUNTIME": args.gvisor_runtime,
                    "RUNBOX_DOCKER_URL": args.docker_url,
                    "RUNBOX_AGENT_SOCKET_DIR": args.agent_dir,
                    "RUNBOX_LOG_LEVEL": args.log_level,
                },
                secret,
            )
            port = None if args.metrics_port is None else args.metrics_port + i
            ports, target = metrics_endpoint(docker_name, port, args.publish_ip)
            self.containers.append(
                docker.Container(
                    child_name,
                    name=docker_name,
                    hostname=docker_name,
                    image=args.image,
                    envs=envs,
                    volumes=[
                        docker.ContainerVolumeArgs(
                            host_path=args.gate_dir, container_path=GATE_DIR_IN_CONTAINER, read_only=True
                        ),
                        docker.ContainerVolumeArgs(host_path=args.agent_dir, container_path=args.agent_dir),
                    ],
                    ports=ports,
                    networks_advanced=[
                        docker.ContainerNetworksAdvancedArgs(name=args.network, aliases=["executor"]),
                        *(docker.ContainerNetworksAdvancedArgs(name=n) for n in args.extra_networks),
                    ],
                    labels=docker_labels({**labels, "runbox.runtime": runtime}),
                    **identity,
                    **hardening(),
                    opts=child,
                )
            )
            self.names.append(docker_name)
            self.runtimes.append(runtime)
            self.metrics_targets.append(target)
        self.register_outputs({"names": self.names, "runtimes": self.runtimes, "metrics_targets": self.metrics_targets})
