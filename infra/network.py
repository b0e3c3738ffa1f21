"""The stack's Docker networks.

- ``edge``: an ordinary bridge; only what publishes a port (gateways, Grafana, Prometheus, the
  RabbitMQ management UI when asked for) joins it.
- ``backend``: an *internal* bridge (no route out of the host): RabbitMQ, gateways, executors and
  Prometheus talk over it, so the broker and the executors have no egress at all.

Sandboxes are on neither: the executor creates each one at run time with ``network_mode="none"``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import pulumi
import pulumi_docker as docker


@dataclass
class NetworkArgs:
    """Inputs of :class:`Network`."""

    prefix: str  # Docker object names start with it, so two stacks on one host never collide
    labels: Mapping[str, str] = field(default_factory=dict)


class Network(pulumi.ComponentResource):
    """The edge bridge and the internal backend bridge."""

    edge: docker.Network
    backend: docker.Network

    def __init__(self, name: str, args: NetworkArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("runbox:network:Network", name, {}, opts)
        child = pulumi.ResourceOptions(parent=self)
        labels = [docker.NetworkLabelArgs(label=k, value=v) for k, v in sorted(args.labels.items())]
        self.edge = docker.Network(
            f"{name}-edge",
            name=f"{args.prefix}-{name}-edge",
            driver="bridge",
            internal=False,
            labels=labels,
            opts=child,
        )
        self.backend = docker.Network(
            f"{name}-backend",
            name=f"{args.prefix}-{name}-backend",
            driver="bridge",
            internal=True,
            labels=labels,
            opts=child,
        )
        self.register_outputs({"edge": self.edge.name, "backend": self.backend.name})
