"""RabbitMQ: one container, its data on a named volume, healthy before anything uses it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import quote

import pulumi
import pulumi_docker as docker

AMQP_PORT = 5672
MANAGEMENT_PORT = 15672


def amqp_url(user: str, password: str, host: str, port: int = AMQP_PORT) -> str:
    """The URL the app's RUNBOX_AMQP_URL expects; user and password are percent-encoded."""
    return f"amqp://{quote(user, safe='')}:{quote(password, safe='')}@{host}:{port}/"


@dataclass
class BrokerArgs:
    """Inputs of :class:`Broker`."""

    prefix: str
    network: pulumi.Input[str]  # the internal backend network
    password: pulumi.Output[str]  # a secret: it only ever travels inside secret Outputs
    user: str = "runbox"
    image: str = "rabbitmq:3.13-management"  # any image with rabbitmq-server and rabbitmq-diagnostics
    management_port: int | None = None  # publish the management UI on bind_ip:port when set
    management_network: pulumi.Input[str] | None = None  # a network that can publish ports (edge)
    bind_ip: str = "127.0.0.1"
    labels: Mapping[str, str] = field(default_factory=dict)


class Broker(pulumi.ComponentResource):
    """RabbitMQ with a data volume and a healthcheck; exposes ``amqp_url`` as a secret."""

    container: docker.Container
    volume: docker.Volume
    image: docker.RemoteImage
    host: str
    amqp_url: pulumi.Output[str]

    def __init__(self, name: str, args: BrokerArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("runbox:broker:Broker", name, {}, opts)
        child = pulumi.ResourceOptions(parent=self)
        docker_name = f"{args.prefix}-{name}"
        labels = {**args.labels, "runbox.role": "broker"}
        self.host = docker_name

        # keep_locally: the image may be shared with other stacks (or built here, with no registry).
        self.image = docker.RemoteImage(f"{name}-image", name=args.image, keep_locally=True, opts=child)
        # Queues, the event stream and the user database live here; a replaced container keeps them.
        self.volume = docker.Volume(
            f"{name}-data",
            name=f"{docker_name}-data",
            labels=[docker.VolumeLabelArgs(label=k, value=v) for k, v in sorted(labels.items())],
            opts=child,
        )
        networks = [docker.ContainerNetworksAdvancedArgs(name=args.network, aliases=["rabbitmq"])]
        ports: list[docker.ContainerPortArgs] = []
        if args.management_port is not None:
            if args.management_network is None:
                raise ValueError("publishing the management UI needs a non-internal management_network")
            networks.append(docker.ContainerNetworksAdvancedArgs(name=args.management_network))
            ports.append(
                docker.ContainerPortArgs(internal=MANAGEMENT_PORT, external=args.management_port, ip=args.bind_ip)
            )
        # The default user is created from these only on first boot (empty volume); the secret
        # Output keeps the password out of the plan and the state in clear.
        password = args.password.apply(pulumi.Output.secret)  # secret even if handed a plain Output
        envs = password.apply(
            lambda password: [f"RABBITMQ_DEFAULT_USER={args.user}", f"RABBITMQ_DEFAULT_PASS={password}"]
        )
        self.container = docker.Container(
            name,
            name=docker_name,
            image=self.image.image_id,
            # RabbitMQ names its node (and its data directory) after the host name: a fixed one
            # lets a replaced container find its queues on the volume.
            hostname=docker_name,
            envs=envs,
            volumes=[docker.ContainerVolumeArgs(volume_name=self.volume.name, container_path="/var/lib/rabbitmq")],
            networks_advanced=networks,
            ports=ports,
            restart="unless-stopped",
            privileged=False,
            healthcheck=docker.ContainerHealthcheckArgs(
                tests=["CMD", "rabbitmq-diagnostics", "-q", "ping"],
                interval="10s",
                timeout="5s",
                retries=6,
                start_period="30s",
            ),
            # Containers that depend on the broker are created only once it answers.
            wait=True,
            wait_timeout=180,
            stop_timeout=30,
            labels=[docker.ContainerLabelArgs(label=k, value=v) for k, v in sorted(labels.items())],
            opts=child,
        )
        self.amqp_url = password.apply(lambda password: amqp_url(args.user, password, docker_name))
        outputs: dict[str, pulumi.Input[str]] = {
            "host": self.host,
            "amqp_url": self.amqp_url,
            "volume": self.volume.name,
        }
        if args.management_port is not None:
            outputs["management_url"] = f"http://{args.bind_ip}:{args.management_port}"
        self.register_outputs(outputs)
