"""Which component goes on which Docker host: one builder for one host and for many.

Without ``runbox:dockerHosts`` the stack is one host carrying every role, reached through
Pulumi's default provider, its resources named as before hosts existed (``broker``,
``gateway``...). With it, every entry is a host with its own provider (infra/hosts.py) and
its resources are named after it (``h1-broker``...). The same code places both; what differs
is only what crossing hosts needs (``apart``):

- every host: its own networks;
- ``broker`` hosts: one RabbitMQ node each. Apart, the nodes cluster, AMQP goes only over TLS
  with the stack's own user, queues and the stream are replicated over up to three nodes
  (``RUNBOX_AMQP_QUORUM_SIZE``) and every app container lists every node (failover);
- ``gateway`` / ``executor`` hosts: the app image (apart: run by its content id, so every
  host runs the bits built there) and ``gatewayCount`` / ``executorCount`` containers spread
  round-robin over the hosts with the role; each executor host also gets the sandbox images,
  its Docker gate and, apart, when an executor there runs gVisor, a check that the engine has
  ``runsc`` before any executor is created;
- the ``monitoring`` host: Prometheus scraping every gateway, executor, Docker gate and
  RabbitMQ node (apart: on the hosts' addresses, where each publishes its metrics), and Grafana.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pulumi

from infra.broker import Broker, BrokerArgs, BrokerTls
from infra.config import ROLES, DockerHost, InfraConfig
from infra.executor import Executor, ExecutorArgs
from infra.gate import Gate, GateArgs
from infra.gateway import Gateway, GatewayArgs
from infra.hosts import Hosts, HostsArgs, RuntimeCheck, RuntimeCheckArgs
from infra.images import Images, ImagesArgs
from infra.monitoring import Monitoring, MonitoringArgs
from infra.network import Network, NetworkArgs

MAX_REPLICAS = 3


def monitoring_args(
    cfg: InfraConfig,
    backend: pulumi.Input[str],
    edge: pulumi.Input[str],
    targets: Mapping[str, Sequence[str]],
    public_host: str,
    labels: Mapping[str, str],
) -> MonitoringArgs:
    """Prometheus and Grafana for ``targets`` (job name: ``host:port`` list), from the stack settings."""
    # config.load requires both when monitoring is on
    assert cfg.grafana_admin_password is not None and cfg.metrics_token is not None
    return MonitoringArgs(
        prefix=cfg.prefix,
        backend_network=backend,
        edge_network=edge,
        scrape_targets=targets,
        grafana_admin_password=cfg.grafana_admin_password,
        metrics_token=cfg.metrics_token,
        prometheus_config=cfg.prometheus_config,
        alert_rules=cfg.alert_rules,
        dashboards_dir=cfg.dashboards_dir,
        provisioning_dir=cfg.grafana_provisioning_dir,
        prometheus_image=cfg.prometheus_image,
        grafana_image=cfg.grafana_image,
        bind_ip=cfg.monitoring_bind_ip,
        prometheus_port=cfg.prometheus_port,
        grafana_port=cfg.grafana_port,
        # The UIs are reachable where they are bound: loopback by default, else the public host.
        public_host=public_host if cfg.monitoring_bind_ip in ("0.0.0.0", "") else cfg.monitoring_bind_ip,
        labels=labels,
    )


def spread(count: int, hosts: Sequence[DockerHost]) -> dict[str, int]:
    """``count`` containers over ``hosts`` round-robin: {host name: how many}, every host listed."""
    share = {h.name: 0 for h in hosts}
    for i in range(count):
        share[hosts[i % len(hosts)].name] += 1
    return share


@dataclass(frozen=True)
class Site:
    """One host of the stack as the builder uses it: its roles, its provider, its resources' names."""

    host: DockerHost
    hosts: Hosts | None  # the providers; None: Pulumi's default provider (the one-host stack)

    def opts(self, **kwargs: object) -> pulumi.ResourceOptions | None:
        """Options putting a component (and its children) on this host's engine."""
        if self.hosts is None:
            return pulumi.ResourceOptions(**kwargs) if kwargs else None  # type: ignore[arg-type]
        return self.hosts.opts(self.host, **kwargs)

    def name(self, part: str) -> str:
        """A resource name: ``part`` on the one host, ``<host>-<part>`` on many."""
        return f"{self.host.name}-{part}" if self.host.name else part

    def labels(self, cfg: InfraConfig) -> dict[str, str]:
        return {**cfg.labels, "runbox.host": self.host.name} if self.host.name else cfg.labels


@dataclass
class Deployment:
    """What the program made, for the exports."""

    sites: list[Site]
    nets: dict[str, Network]
    brokers: list[Broker]
    images: list[Images]
    gateways: list[Gateway]
    gates: list[Gate]
    executors: list[Executor]
    checks: list[RuntimeCheck]
    monitoring: Monitoring | None
    amqp_url: pulumi.Output[str]  # secret: every node


def sites(cfg: InfraConfig) -> list[Site]:
    """``runbox:dockerHosts`` with a provider each, or the one host every role goes on."""
    if not cfg.docker_hosts:
        return [Site(DockerHost("", "", ROLES, cfg.public_host), None)]
    hosts = Hosts("hosts", HostsArgs(cfg.docker_hosts))
    return [Site(h, hosts) for h in cfg.docker_hosts]


def build(cfg: InfraConfig) -> Deployment:
    """Create every component on its host."""
    apart = bool(cfg.docker_hosts)  # components meet over host addresses (and TLS), not one host's networks
    placed = sites(cfg)
    nets = {s.host.name: Network(s.name("net"), NetworkArgs(prefix=cfg.prefix, labels=cfg.labels), s.opts())
            for s in placed}
    brokers = make_brokers(cfg, [s for s in placed if s.host.has("broker")], nets, apart)
    amqp_url: pulumi.Output[str] = pulumi.Output.secret(
        pulumi.Output.all(*(b.amqp_url for b in brokers)).apply(",".join))
    # One node needs no replica count (RabbitMQ's default: every node, i.e. one).
    replicas = {"RUNBOX_AMQP_QUORUM_SIZE": str(min(MAX_REPLICAS, len(brokers)))} if apart else {}

    made = Deployment(placed, nets, brokers, [], [], [], [], [], None, amqp_url)
    gateway_share = spread(cfg.gateway_count, [s.host for s in placed if s.host.has("gateway")])
    executor_share = spread(cfg.executor_count, [s.host for s in placed if s.host.has("executor")])
    runtimes = [cfg.executor_runtimes[i] if i < len(cfg.executor_runtimes) else cfg.runtime
                for i in range(cfg.executor_count)]
    for site in placed:
        gateways, executors = gateway_share.get(site.host.name, 0), executor_share.get(site.host.name, 0)
        if not gateways and not executors:
            continue
        h, net, labels = site.host, nets[site.host.name], site.labels(cfg)
        images = Images(
            site.name("images"),
            ImagesArgs(
                app_image=cfg.app_image,
                languages_dir=cfg.languages_dir,
                sandbox_context=cfg.sandbox_context,
                build=cfg.build_images,
                app_build_args=cfg.app_build_args,
                sandboxes=h.has("executor"),
                by_digest=apart,
            ),
            site.opts(),
        )
        made.images.append(images)
        if gateways:
            made.gateways.append(
                Gateway(
                    site.name("gateway"),
                    GatewayArgs(
                        prefix=cfg.prefix,
                        image=images.app_ref,
                        amqp_url=amqp_url,
                        backend_network=net.backend.name,
                        edge_network=net.edge.name,
                        count=gateways,
                        host_port=cfg.gateway_port,
                        bind_ip=cfg.bind_ip,
                        public_host=h.address,
                        amqp_prefix=cfg.amqp_prefix,
                        public_url=cfg.public_url,
                        trusted_proxies=cfg.trusted_proxies,
                        require_keys=cfg.require_keys,
                        api_keys=cfg.api_keys,
                        metrics_token=cfg.metrics_token,
                        log_level=cfg.log_level,
                        extra_env={**cfg.gateway_env, **replicas},
                        image_hash=images.app_hash,
                        labels=labels,
                        depends_on=[*(b.container for b in brokers), images.app],
                        metrics_address=h.address if apart else None,
                    ),
                    site.opts(),
                )
            )
        if not executors:
            continue
        mine, runtimes = runtimes[:executors], runtimes[executors:]
        after: list[pulumi.Resource] = [*(b.container for b in brokers), images.app, *images.sandboxes.values()]
        if apart and "runsc" in mine:
            check = RuntimeCheck(
                site.name("gvisor-check"),
                RuntimeCheckArgs(prefix=cfg.prefix, image=images.app_ref, runtime=cfg.gvisor_runtime, labels=labels),
                site.opts(depends_on=[images.app]),
            )
            made.checks.append(check)
            after.append(check)
        # The host's Docker gate: its executors never see the engine's socket.
        gate = Gate(
            site.name("gate"),
            GateArgs(
                prefix=cfg.prefix,
                image=images.app_ref,
                network=net.backend.name,
                docker_socket=cfg.docker_socket,
                docker_gid=cfg.docker_gid,
                gvisor_runtime=cfg.gvisor_runtime,
                log_level=cfg.log_level,
                metrics_token=cfg.metrics_token,
                image_hash=images.app_hash,
                labels=labels,
                depends_on=[images.app],
                extra_networks=[net.edge.name] if apart else [],
                metrics_port=cfg.gate_metrics_port if apart else None,
                publish_ip=h.address if apart else "",
            ),
            site.opts(),
        )
        made.gates.append(gate)
        after.append(gate.container)
        made.executors.append(
            Executor(
                site.name("executor"),
                ExecutorArgs(
                    prefix=cfg.prefix,
                    image=images.app_ref,
                    amqp_url=amqp_url,
                    metrics_token=cfg.metrics_token,
                    network=net.backend.name,
                    count=executors,
                    runtime=cfg.runtime,
                    runtimes=mine,
                    gate_dir=gate.socket_dir,
                    docker_url=gate.docker_url,
                    agent_dir=gate.agent_dir,
                    docker_gid=cfg.docker_gid,
                    gvisor_runtime=cfg.gvisor_runtime,
                    amqp_prefix=cfg.amqp_prefix,
                    log_level=cfg.log_level,
                    extra_env={**cfg.executor_env, **replicas},
                    image_hash=images.app_hash,
                    sandbox_hash=images.sandbox_hash,
                    labels=labels,
                    # A pool warms its containers as soon as the executor starts: the images must exist.
                    depends_on=after,
                    # Apart, the brokers and Prometheus are on other hosts: a route off this one,
                    # and metrics published on the host's address.
                    extra_networks=[net.edge.name] if apart else [],
                    metrics_port=cfg.executor_metrics_port if apart else None,
                    publish_ip=h.address if apart else "",
                ),
                site.opts(),
            )
        )

    if cfg.monitoring:
        (site,) = [s for s in placed if s.host.has("monitoring")]
        targets = {
            "gateway": [t for g in made.gateways for t in g.metrics_targets],
            "executor": [t for e in made.executors for t in e.metrics_targets],
            "gate": [t for g in made.gates for t in g.metrics_targets],
            "rabbitmq": [b.metrics_target for b in brokers],
        }
        net = nets[site.host.name]
        made.monitoring = Monitoring(
            site.name("monitoring"),
            monitoring_args(cfg, net.backend.name, net.edge.name, targets, site.host.address, site.labels(cfg)),
            site.opts(),
        )
    return made


def make_brokers(cfg: InfraConfig, placed: list[Site], nets: Mapping[str, Network], apart: bool) -> list[Broker]:
    """One RabbitMQ node per broker host; apart, clustered over TLS on the hosts' addresses."""
    tls = None
    if apart:
        assert cfg.broker_tls_ca is not None and cfg.broker_tls_cert is not None and cfg.broker_tls_key is not None
        tls = BrokerTls(ca=cfg.broker_tls_ca, cert=cfg.broker_tls_cert, key=cfg.broker_tls_key)
    node_names = {f"{cfg.prefix}-{s.name('broker')}": s.host.address for s in placed} if apart else {}
    return [
        Broker(
            s.name("broker"),
            BrokerArgs(
                prefix=cfg.prefix,
                network=nets[s.host.name].backend.name,
                password=cfg.broker_password,
                user=cfg.broker_user,
                image=cfg.broker_image,
                management_port=cfg.broker_management_port,
                management_network=nets[s.host.name].edge.name,
                bind_ip=cfg.monitoring_bind_ip,
                labels=s.labels(cfg),
                tls=tls,
                address=s.host.address if apart else None,
                cluster_nodes=node_names,
                erlang_cookie=cfg.erlang_cookie,
            ),
            s.opts(),
        )
        for s in placed
    ]
