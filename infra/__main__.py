"""runbox with Pulumi: ``pulumi up`` composes the components and exports the URLs.

Settings come from ``infra/config.py`` (the ``runbox:*`` stack config); each part is one
component in its own module. Nothing here creates a resource directly. Without
``runbox:dockerHosts`` everything goes on the one engine Pulumi's default provider reaches;
with it, infra/topology.py places each component on its hosts through their own providers.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Pulumi runs this directory as a script (sys.path[0] is infra/); the repository root must be
# importable for ``infra.*`` and for ``app.*`` (language definitions, setting names).
ROOT = str(Path(__file__).resolve().parent.parent)
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import pulumi  # noqa: E402

from infra import config as stack_config  # noqa: E402
from infra.broker import Broker, BrokerArgs  # noqa: E402
from infra.executor import Executor, ExecutorArgs  # noqa: E402
from infra.gate import Gate, GateArgs  # noqa: E402
from infra.gateway import Gateway, GatewayArgs  # noqa: E402
from infra.images import Images, ImagesArgs  # noqa: E402
from infra.monitoring import Monitoring  # noqa: E402
from infra.network import Network, NetworkArgs  # noqa: E402
from infra.topology import compose, monitoring_args  # noqa: E402

cfg = stack_config.load()


def one_host() -> None:
    """Everything on one Docker host."""
    net = Network("net", NetworkArgs(prefix=cfg.prefix, labels=cfg.labels))

    images = Images(
        "images",
        ImagesArgs(
            app_image=cfg.app_image,
            languages_dir=cfg.languages_dir,
            sandbox_context=cfg.sandbox_context,
            build=cfg.build_images,
            app_build_args=cfg.app_build_args,
        ),
    )

    broker = Broker(
        "broker",
        BrokerArgs(
            prefix=cfg.prefix,
            network=net.backend.name,
            password=cfg.broker_password,
            user=cfg.broker_user,
            image=cfg.broker_image,
            management_port=cfg.broker_management_port,
            management_network=net.edge.name,
            bind_ip=cfg.monitoring_bind_ip,
            labels=cfg.labels,
        ),
    )

    gateway = Gateway(
        "gateway",
        GatewayArgs(
            prefix=cfg.prefix,
            image=images.app_ref,
            amqp_url=broker.amqp_url,
            backend_network=net.backend.name,
            edge_network=net.edge.name,
            count=cfg.gateway_count,
            host_port=cfg.gateway_port,
            bind_ip=cfg.bind_ip,
            public_host=cfg.public_host,
            amqp_prefix=cfg.amqp_prefix,
            public_url=cfg.public_url,
            trusted_proxies=cfg.trusted_proxies,
            require_keys=cfg.require_keys,
            api_keys=cfg.api_keys,
            metrics_token=cfg.metrics_token,
            log_level=cfg.log_level,
            extra_env=cfg.gateway_env,
            image_hash=images.app_hash,
            labels=cfg.labels,
            depends_on=[broker.container, images.app],
        ),
    )

    gate = Gate(
        "gate",
        GateArgs(
            prefix=cfg.prefix,
            image=images.app_ref,
            network=net.backend.name,
            docker_socket=cfg.docker_socket,
            docker_gid=cfg.docker_gid,
            log_level=cfg.log_level,
            metrics_token=cfg.metrics_token,
            image_hash=images.app_hash,
            labels=cfg.labels,
            depends_on=[images.app],
        ),
    )

    executor = Executor(
        "executor",
        ExecutorArgs(
            prefix=cfg.prefix,
            image=images.app_ref,
            amqp_url=broker.amqp_url,
            metrics_token=cfg.metrics_token,
            network=net.backend.name,
            count=cfg.executor_count,
            runtime=cfg.runtime,
            runtimes=cfg.executor_runtimes,
            gate_dir=gate.socket_dir,
            docker_url=gate.docker_url,
            docker_gid=cfg.docker_gid,
            amqp_prefix=cfg.amqp_prefix,
            log_level=cfg.log_level,
            extra_env=cfg.executor_env,
            image_hash=images.app_hash,
            sandbox_hash=images.sandbox_hash,
            labels=cfg.labels,
            # A pool warms its containers as soon as the executor starts: the images must exist.
            depends_on=[broker.container, gate.container, images.app, *images.sandboxes.values()],
        ),
    )

    pulumi.export("gateway_urls", gateway.urls)
    pulumi.export("executors", dict(zip(executor.names, executor.runtimes, strict=True)))
    pulumi.export("sandbox_images", sorted(images.sandboxes))
    pulumi.export("networks", {"edge": net.edge.name, "backend": net.backend.name})
    pulumi.export("amqp_url", broker.amqp_url)  # a secret: shown only with --show-secrets
    if cfg.public_url:
        pulumi.export("public_url", cfg.public_url)
    if cfg.broker_management_port is not None:
        pulumi.export("rabbitmq_management_url", f"http://{cfg.monitoring_bind_ip}:{cfg.broker_management_port}")

    if cfg.monitoring:
        targets = {
            "gateway": gateway.metrics_targets,
            "executor": executor.metrics_targets,
            "gate": gate.metrics_targets,
            "rabbitmq": [broker.metrics_target],
        }
        monitoring = Monitoring(
            "monitoring", monitoring_args(cfg, net.backend.name, net.edge.name, targets, cfg.public_host, cfg.labels)
        )
        pulumi.export("prometheus_url", monitoring.prometheus_url)
        pulumi.export("grafana_url", monitoring.grafana_url)


def many_hosts() -> None:
    """``runbox:dockerHosts``: each component on the hosts with its role."""
    made = compose(cfg)
    pulumi.export("hosts", {h.name: list(h.roles) for h in cfg.docker_hosts})
    pulumi.export("gateway_urls", [url for g in made.gateways for url in g.urls])
    pulumi.export("executors", {n: r for e in made.executors for n, r in zip(e.names, e.runtimes, strict=True)})
    pulumi.export("amqp_url", pulumi.Output.all(*(b.amqp_url for b in made.brokers)).apply(",".join))
    if made.monitoring is not None:
        pulumi.export("prometheus_url", made.monitoring.prometheus_url)
        pulumi.export("grafana_url", made.monitoring.grafana_url)


if cfg.docker_hosts:
    many_hosts()
else:
    one_host()
