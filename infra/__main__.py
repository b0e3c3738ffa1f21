"""runbox with Pulumi: ``pulumi up`` composes the components and exports the URLs.

Settings come from ``infra/config.py`` (the ``runbox:*`` stack config); each part is one
component in its own module, and infra/topology.py places them on the hosts. Nothing here
creates a resource directly. Without ``runbox:dockerHosts`` everything goes on the one engine
Pulumi's default provider reaches (one host carrying every role); with it, each component goes
on the hosts with its role, through their own providers.
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
from infra.topology import build  # noqa: E402

cfg = stack_config.load()
made = build(cfg)

if cfg.docker_hosts:
    pulumi.export("hosts", {h.name: list(h.roles) for h in cfg.docker_hosts})
else:
    (images,) = made.images
    (net,) = made.nets.values()
    pulumi.export("sandbox_images", sorted(images.sandboxes))
    pulumi.export("networks", {"edge": net.edge.name, "backend": net.backend.name})
pulumi.export("gateway_urls", [url for g in made.gateways for url in g.urls])
pulumi.export("executors", {n: r for e in made.executors for n, r in zip(e.names, e.runtimes, strict=True)})
pulumi.export("amqp_url", made.amqp_url)  # a secret: shown only with --show-secrets
if cfg.public_url:
    pulumi.export("public_url", cfg.public_url)
if cfg.broker_management_port is not None:
    pulumi.export("rabbitmq_management_url", f"http://{cfg.monitoring_bind_ip}:{cfg.broker_management_port}")
if made.monitoring is not None:
    pulumi.export("prometheus_url", made.monitoring.prometheus_url)
    pulumi.export("grafana_url", made.monitoring.grafana_url)
