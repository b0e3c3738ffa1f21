"""runbox over many Docker hosts (``runbox:dockerHosts``): which component goes on which host.

- every host: its own networks, through its own provider (infra/hosts.py);
- ``broker`` hosts: one RabbitMQ node each, clustered, AMQP only over TLS with the stack's
  own user; queues and the stream are replicated over up to three nodes
  (``RUNBOX_AMQP_QUORUM_SIZE``) and every app container lists every node (failover);
- ``gateway`` / ``executor`` hosts: the app image (built there, run by its content id) and
  ``gatewayCount`` / ``executorCount`` containers spread round-robin over the hosts with the
  role; each executor host also gets the sandbox images and, when an executor there runs
  gVisor, a check that the engine has ``runsc`` before any executor is created;
- the ``monitoring`` host: Prometheus scraping every gateway, executor and RabbitMQ node on the
  hosts' addresses, and Grafana.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pulumi

from infra.broker import Broker, BrokerArgs, BrokerTls
from infra.config import DockerHost, InfraConfig
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


@dataclass
class Deployment:
    """What the many-host program made, for the exports."""

    hosts: Hosts
    brokers: list[Broker]
    gateways: list[Gateway]
    executors: list[Executor]
    checks: list[RuntimeCheck]
    monitoring: Monitoring | None


def compose(cfg: InfraConfig) -> Deployment:
    """Create every component on its host."""
    assert cfg.broker_tls_ca is not None and cfg.broker_tls_cert is not None and cfg.broker_tls_key is not None
    hosts = Hosts("hosts", HostsArgs(cfg.docker_hosts))
    nets = {h.name: Network(f"{h.name}-net", NetworkArgs(prefix=cfg.prefix, labels=cfg.labels), hosts.opts(h))
            for h in cfg.docker_hosts}

    broker_hosts = [h for h in cfg.docker_hosts if h.has("broker")]
    node_names = {f"{cfg.prefix}-{h.name}-broker": h.address for h in broker_hosts}
    tls = BrokerTls(ca=cfg.broker_tls_ca, cert=cfg.broker_tls_cert, key=cfg.broker_tls_key)
    brokers = [
        Broker(
            f"{h.name}-broker",
            BrokerArgs(
                prefix=cfg.prefix,
                network=nets[h.name].backend.name,
                password=cfg.broker_password,
                user=cfg.broker_user,
                image=cfg.broker_image,
                labels={**cfg.labels, "runbox.host": h.name},
                management_network=nets[h.name].edge.name,
                tls=tls,
                address=h.address,
                cluster_nodes=node_names,
                erlang_cookie=cfg.erlang_cookie,
            ),
            hosts.opts(h),
        )
        for h in broker_hosts
    ]
    urls: pulumi.Output[str] = pulumi.Output.all(*(b.amqp_url for b in brokers)).apply(",".join)
    amqp_url: pulumi.Output[str] = pulumi.Output.secret(urls)
    replicas = {"RUNBOX_AMQP_QUORUM_SIZE": str(min(MAX_REPLICAS, len(brokers)))}

    gateways: list[Gateway] = []
    executors: list[Executor] = []
    checks: list[RuntimeCheck] = []
    app_hosts = [h for h in cfg.docker_hosts if h.has("gateway") or h.has("executor")]
    gateway_share = spread(cfg.gateway_count, [h for h in cfg.docker_hosts if h.has("gateway")])
    executor_hosts = [h for h in cfg.docker_hosts if h.has("executor")]
    executor_share = spread(cfg.executor_count, executor_hosts)
    executor_index = 0
    for h in app_hosts:
        labels = {**cfg.labels, "runbox.host": h.name}
        images = Images(
            f"{h.name}-images",
            ImagesArgs(
                app_image=cfg.app_image,
                languages_dir=cfg.languages_dir,
                sandbox_context=cfg.sandbox_context,
                build=cfg.build_images,
                app_build_args=cfg.app_build_args,
                sandboxes=h.has("executor"),
                by_digest=True,
            ),
            hosts.opts(h),
        )
        net = nets[h.name]
        if gateway_share.get(h.name):
            gateways.append(
                Gateway(
                    f"{h.name}-gateway",
                    GatewayArgs(
                        prefix=cfg.prefix,
                        image=images.app_ref,
                        amqp_url=amqp_url,
                        backend_network=net.backend.name,
                        edge_network=net.edge.name,
                        count=gateway_share[h.name],
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
                        depends_on=[*brokers, images.app],
                        metrics_address=h.address,
                    ),
                    hosts.opts(h),
                )
            )
        count = executor_share.get(h.name, 0)
        if not count:
            continue
        runtimes = [
            cfg.executor_runtimes[i] if i < len(cfg.executor_runtimes) else cfg.runtime
            for i in range(executor_index, executor_index + count)
        ]
        executor_index += count
        after: list[pulumi.Resource] = [*brokers, images.app, *images.sandboxes.values()]
        if "runsc" in runtimes:
            check = RuntimeCheck(
                f"{h.name}-gvisor-check",
                RuntimeCheckArgs(prefix=cfg.prefix, image=images.app_ref, runtime="runsc", labels=labels),
                hosts.opts(h, depends_on=[images.app]),
            )
            checks.append(check)
            after.append(check)
        # The host's Docker gate: its executors never see the engine's socket.
        gate = Gate(
            f"{h.name}-gate",
            GateArgs(
                prefix=cfg.prefix,
                image=images.app_ref,
                network=net.backend.name,
                docker_socket=cfg.docker_socket,
                docker_gid=cfg.docker_gid,
                log_level=cfg.log_level,
                metrics_token=cfg.metrics_token,
                image_hash=images.app_hash,
                labels=labels,
                depends_on=[images.app],
            ),
            hosts.opts(h),
        )
        after.append(gate.container)
        executors.append(
            Executor(
                f"{h.name}-executor",
                ExecutorArgs(
                    prefix=cfg.prefix,
                    image=images.app_ref,
                    amqp_url=amqp_url,
                    metrics_token=cfg.metrics_token,
                    network=net.backend.name,
                    count=count,
                    runtime=cfg.runtime,
                    runtimes=runtimes,
                    gate_dir=gate.socket_dir,
                    docker_url=gate.docker_url,
                    docker_gid=cfg.docker_gid,
                    amqp_prefix=cfg.amqp_prefix,
                    log_level=cfg.log_level,
                    extra_env={**cfg.executor_env, **replicas},
                    image_hash=images.app_hash,
                    sandbox_hash=images.sandbox_hash,
                    labels=labels,
                    depends_on=after,
                    # The brokers are on other hosts: the executor needs a route off this one.
                    extra_networks=[net.edge.name],
                    metrics_port=cfg.executor_metrics_port,
                    publish_ip=h.address,
                ),
                hosts.opts(h),
            )
        )

    monitoring = None
    if cfg.monitoring:
        (h,) = [h for h in cfg.docker_hosts if h.has("monitoring")]
        targets = {
            "gateway": [t for g in gateways for t in g.metrics_targets],
            "executor": [t for e in executors for t in e.metrics_targets],
            "rabbitmq": [b.metrics_target for b in brokers],
        }
        net = nets[h.name]
        monitoring = Monitoring(
            f"{h.name}-monitoring",
            monitoring_args(cfg, net.backend.name, net.edge.name, targets, h.address,
                            {**cfg.labels, "runbox.host": h.name}),
            hosts.opts(h),
        )
    return Deployment(hosts, brokers, gateways, executors, checks, monitoring)
