"""RabbitMQ: one container per node, its data on a named volume, healthy before anything uses it.

On one host it listens on the internal backend network only. On many hosts (``tls`` set) each
broker host runs one node of a cluster: AMQP only over TLS on 5671, published on the host's
address together with the Prometheus plugin's port and the ports the nodes cluster over;
the nodes find each other from a fixed list (``cluster_nodes``) and share an Erlang cookie.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import quote

import pulumi
import pulumi_docker as docker

AMQP_PORT = 5672
AMQPS_PORT = 5671
MANAGEMENT_PORT = 15672
PROMETHEUS_PORT = 15692  # RabbitMQ's own Prometheus plugin
CLUSTER_PORTS = (4369, 25672)  # epmd and Erlang distribution: the nodes of a cluster talk over these
CONF = "/etc/rabbitmq/conf.d/90-runbox.conf"
TLS_DIR = "/etc/rabbitmq/tls"


def amqp_url(user: str, password: str, host: str, port: int = AMQP_PORT, ca_pem: str | None = None) -> str:
    """The URL the app's RUNBOX_AMQP_URL expects; user and password are percent-encoded.

    With ``ca_pem`` it is an ``amqps://`` URL carrying the CA (DER, base64) as ``cadata``, so the
    app's read-only containers verify the broker without a CA file on disk.
    """
    credentials = f"{quote(user, safe='')}:{quote(password, safe='')}"
    if ca_pem is None:
        return f"amqp://{credentials}@{host}:{port}/"
    return f"amqps://{credentials}@{host}:{port}/?cadata={quote(pem_to_base64_der(ca_pem), safe='')}"


def pem_to_base64_der(pem: str) -> str:
    """The base64 body of the first certificate in a PEM text (what ``cadata`` takes)."""
    lines = pem.strip().splitlines()
    try:
        start = lines.index("-----BEGIN CERTIFICATE-----")
        end = lines.index("-----END CERTIFICATE-----", start)
    except ValueError as exc:
        raise ValueError("the broker CA is not a PEM certificate") from exc
    body = "".join(lines[start + 1 : end])
    base64.b64decode(body, validate=True)
    return body


def rabbitmq_conf(tls: bool, cluster_nodes: list[str]) -> str:
    """The node's rabbitmq.conf additions: TLS-only AMQP, the Prometheus port, the peer list."""
    lines = [f"prometheus.tcp.port = {PROMETHEUS_PORT}"]
    if tls:
        lines += [
            "listeners.tcp = none",
            f"listeners.ssl.default = {AMQPS_PORT}",
            f"ssl_options.cacertfile = {TLS_DIR}/ca.pem",
            f"ssl_options.certfile = {TLS_DIR}/cert.pem",
            f"ssl_options.keyfile = {TLS_DIR}/key.pem",
            # Clients prove who they are with their user and password, not a certificate.
            "ssl_options.verify = verify_none",
            "ssl_options.fail_if_no_peer_cert = false",
        ]
    if len(cluster_nodes) > 1:
        lines.append("cluster_formation.peer_discovery_backend = classic_config")
        lines += [f"cluster_formation.classic_config.nodes.{i} = rabbit@{node}"
                  for i, node in enumerate(cluster_nodes, start=1)]
    return "\n".join(lines) + "\n"


@dataclass
class BrokerTls:
    """The node's TLS material (PEM), all secrets."""

    ca: pulumi.Output[str]
    cert: pulumi.Output[str]
    key: pulumi.Output[str]


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
    # Many hosts: TLS material, the address this node is published on, every node's
    # {container host name: address} (this one included), and the cluster's shared cookie.
    tls: BrokerTls | None = None
    address: str | None = None
    cluster_nodes: Mapping[str, str] = field(default_factory=dict)
    erlang_cookie: pulumi.Output[str] | None = None
    node_name: str | None = None  # the container's host name; default: <prefix>-<name>


class Broker(pulumi.ComponentResource):
    """RabbitMQ with a data volume and a healthcheck; exposes ``amqp_url`` as a secret."""

    container: docker.Container
    volume: docker.Volume
    image: docker.RemoteImage
    host: str
    amqp_url: pulumi.Output[str]
    metrics_target: str  # where Prometheus scrapes RabbitMQ's own metrics

    def __init__(self, name: str, args: BrokerArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("runbox:broker:Broker", name, {}, opts)
        child = pulumi.ResourceOptions(parent=self)
        docker_name = args.node_name or f"{args.prefix}-{name}"
        labels = {**args.labels, "runbox.role": "broker"}
        self.host = docker_name
        if args.tls is not None and args.address is None:
            raise ValueError("a TLS broker is published on its host's address: set address")

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
        cookie: pulumi.Output[str] = (
            args.erlang_cookie.apply(pulumi.Output.secret)
            if args.erlang_cookie is not None
            else pulumi.Output.from_input("")
        )

        def render_env(values: list[str]) -> list[str]:
            password, cookie = values
            envs = [f"RABBITMQ_DEFAULT_USER={args.user}", f"RABBITMQ_DEFAULT_PASS={password}"]
            if cookie:
                # Server and CLI tools (the healthcheck) both need it to talk to the node.
                envs += [f"RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS=-setcookie {cookie}",
                         f"RABBITMQ_CTL_ERL_ARGS=-setcookie {cookie}"]
            return envs

        envs: pulumi.Output[list[str]] = pulumi.Output.secret(pulumi.Output.all(password, cookie).apply(render_env))
        nodes = sorted(args.cluster_nodes) or [docker_name]
        uploads = [
            docker.ContainerUploadArgs(file=CONF, content=rabbitmq_conf(args.tls is not None, nodes)),
            docker.ContainerUploadArgs(
                file="/etc/rabbitmq/enabled_plugins", content="[rabbitmq_management,rabbitmq_prometheus].\n"
            ),
        ]
        if args.tls is not None:
            if args.management_network is None:
                raise ValueError("a TLS broker publishes its ports: it needs a non-internal management_network")
            if args.management_port is None:
                networks.append(docker.ContainerNetworksAdvancedArgs(name=args.management_network))
            for file, pem in (("ca.pem", args.tls.ca), ("cert.pem", args.tls.cert), ("key.pem", args.tls.key)):
                uploads.append(docker.ContainerUploadArgs(file=f"{TLS_DIR}/{file}", content=pulumi.Output.secret(pem)))
            assert args.address is not None
            ports += [
                docker.ContainerPortArgs(internal=port, external=port, ip=args.address)
                for port in (AMQPS_PORT, PROMETHEUS_PORT, *(CLUSTER_PORTS if len(nodes) > 1 else ()))
            ]
        hosts = [docker.ContainerHostArgs(host=node, ip=address)
                 for node, address in sorted(args.cluster_nodes.items()) if node != docker_name]
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
            uploads=uploads,
            hosts=hosts,
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
        if args.tls is None:
            self.amqp_url = password.apply(lambda password: amqp_url(args.user, password, docker_name))
        else:
            address = args.address
            self.amqp_url = pulumi.Output.secret(
                pulumi.Output.all(password, args.tls.ca).apply(
                    lambda values: amqp_url(args.user, values[0], str(address), AMQPS_PORT, ca_pem=values[1])
                )
            )
        self.metrics_target = f"{args.address if args.tls is not None else docker_name}:{PROMETHEUS_PORT}"
        outputs: dict[str, pulumi.Input[str]] = {
            "host": self.host,
            "amqp_url": self.amqp_url,
            "volume": self.volume.name,
        }
        if args.management_port is not None:
            outputs["management_url"] = f"http://{args.bind_ip}:{args.management_port}"
        self.register_outputs(outputs)
