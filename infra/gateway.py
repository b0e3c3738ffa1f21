"""The gateways: N identical HTTP front ends, each publishing its own host port."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import pulumi
import pulumi_docker as docker

from infra.common import APP_PORT, PROBE_PORT, docker_labels, env_list, hardening, secret_env


@dataclass
class GatewayArgs:
    """Inputs of :class:`Gateway`."""

    prefix: str
    image: pulumi.Input[str]
    amqp_url: pulumi.Output[str]  # secret: holds the broker password
    backend_network: pulumi.Input[str]  # reaches RabbitMQ; internal, so no egress
    edge_network: pulumi.Input[str]  # where the published port lives
    count: int = 2
    host_port: int = 8080  # gateway i is published on host_port + i
    bind_ip: str = "0.0.0.0"
    public_host: str = "localhost"
    amqp_prefix: str = "runbox"
    public_url: str = ""
    trusted_proxies: Sequence[str] = ()
    require_keys: bool = False
    api_keys: pulumi.Output[str] | None = None  # secret
    metrics_token: pulumi.Output[str] | None = None  # secret: what Prometheus presents at /metrics
    log_level: str = "INFO"
    extra_env: Mapping[str, str] = field(default_factory=dict)
    image_hash: str = ""  # label: a rebuilt image replaces the containers even under the same tag
    labels: Mapping[str, str] = field(default_factory=dict)
    depends_on: Sequence[pulumi.Resource] = ()
    metrics_address: str | None = None  # many hosts: scrape at this host address, on the published port


class Gateway(pulumi.ComponentResource):
    """``count`` gateway containers (RUNBOX_ROLES=gateway), no Docker socket, ports published."""

    containers: list[docker.Container]
    names: list[str]
    urls: list[str]
    metrics_targets: list[str]

    def __init__(self, name: str, args: GatewayArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("runbox:gateway:Gateway", name, {}, opts)
        child = pulumi.ResourceOptions(parent=self, depends_on=list(args.depends_on))
        plain = {
            **args.extra_env,
            "RUNBOX_ROLES": "gateway",
            "RUNBOX_HOST": "0.0.0.0",
            "RUNBOX_PORT": str(APP_PORT),
            "RUNBOX_PROBE_PORT": str(PROBE_PORT),
            "RUNBOX_AMQP_PREFIX": args.amqp_prefix,
            # Each gateway enforces 1/N of every rate limit, so N of them together enforce it once.
            "RUNBOX_GATEWAY_COUNT": str(args.count),
            "RUNBOX_TRUSTED_PROXIES": ",".join(args.trusted_proxies),
            "RUNBOX_PUBLIC_URL": args.public_url,
            "RUNBOX_REQUIRE_KEYS": "true" if args.require_keys else "false",
            "RUNBOX_LOG_LEVEL": args.log_level,
        }
        envs = env_list(plain, secret_env(args.metrics_token, RUNBOX_AMQP_URL=args.amqp_url,
                                          RUNBOX_API_KEYS=args.api_keys))
        labels = {**args.labels, "runbox.role": "gateway", "runbox.image-hash": args.image_hash}

        self.containers, self.names, self.urls, self.metrics_targets = [], [], [], []
        for i in range(args.count):
            child_name = f"{name}-{i}"
            docker_name = f"{args.prefix}-{child_name}"
            host_port = args.host_port + i
            self.containers.append(
                docker.Container(
                    child_name,
                    name=docker_name,
                    hostname=docker_name,
                    image=args.image,
                    envs=envs,
                    ports=[docker.ContainerPortArgs(internal=APP_PORT, external=host_port, ip=args.bind_ip)],
                    networks_advanced=[
                        # The alias is the service name monitoring/prometheus.yml's DNS discovery uses.
                        docker.ContainerNetworksAdvancedArgs(name=args.backend_network, aliases=["gateway"]),
                        docker.ContainerNetworksAdvancedArgs(name=args.edge_network),
                    ],
                    labels=docker_labels(labels),
                    **hardening(),
                    opts=child,
                )
            )
            self.names.append(docker_name)
            self.urls.append(f"http://{args.public_host}:{host_port}")
            self.metrics_targets.append(
                f"{args.metrics_address}:{host_port}" if args.metrics_address else f"{docker_name}:{APP_PORT}"
            )
        self.register_outputs({"names": self.names, "urls": self.urls, "metrics_targets": self.metrics_targets})
