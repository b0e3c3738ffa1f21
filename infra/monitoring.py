"""Prometheus and Grafana, configured from the repository's files.

Prometheus gets ``monitoring/prometheus.yml`` with its scrape targets replaced by every gateway
and executor container this stack runs (only the program knows their names), plus the alert
rules of ``monitoring/alerts.yml``. Grafana gets the provisioning under ``dashboards/provisioning``
(its Prometheus datasource pointed at this stack's Prometheus) and every dashboard JSON under
``dashboards/``. The files are uploaded into the containers rather than bind-mounted: that works
with a remote Docker host too, and a changed file shows in the plan and replaces the container.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
import pulumi_docker as docker
import yaml

from infra.common import LOG_OPTS, docker_labels, env_list

PROMETHEUS_PORT = 9090
GRAFANA_PORT = 3000
PROMETHEUS_CONFIG = "/etc/prometheus/prometheus.yml"
# Named by the gateway and executor jobs of monitoring/prometheus.yml (authorization.credentials_file).
METRICS_TOKEN_FILE = "/etc/prometheus/runbox-metrics-token"
APP_JOBS = ("gateway", "executor", "gate")  # the runbox processes, as opposed to RabbitMQ's own metrics
PROMETHEUS_RULES = "/etc/prometheus/rules/alerts.yml"
GRAFANA_PROVISIONING = "/etc/grafana/provisioning"
# Outside /var/lib/grafana (a volume), so a dashboard deleted from the repo leaves with the container.
GRAFANA_DASHBOARDS = "/etc/grafana/dashboards"
DEFAULT_DATASOURCE = {"name": "Prometheus", "type": "prometheus", "uid": "prometheus", "access": "proxy"}
# Settings of a scrape job that say where the targets are: replaced by the stack's own targets.
DISCOVERY_KEYS = frozenset(
    {"static_configs", "file_sd_configs", "dns_sd_configs", "docker_sd_configs", "http_sd_configs"}
)


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path} is not a YAML mapping")
    return data


def render_prometheus_config(
    base: Mapping[str, Any], targets: Mapping[str, Sequence[str]], *, rules: bool = True
) -> str:
    """The repo's Prometheus config with each job's targets replaced by this stack's containers.

    ``targets`` maps a component (``gateway``, ``executor``) to its ``container:port`` list. The
    job of the same name in the base config keeps its settings (path, interval, relabelling)
    and its name, which alerts and dashboards select on; only where its targets come from
    changes, from service discovery to the containers the program made (so ``instance`` is a
    stable container name). A component the base does not mention gets a plain job. Other
    base jobs point at hosts that do not exist in the stack and are dropped; Prometheus also
    scrapes itself. Every runbox job presents the metrics token from ``METRICS_TOKEN_FILE``.
    """
    cfg = copy.deepcopy(dict(base))
    cfg.setdefault("global", {"scrape_interval": "15s", "evaluation_interval": "15s"})
    cfg.pop("alerting", None)  # no Alertmanager in this stack; alerts show in Prometheus and Grafana
    cfg["rule_files"] = [PROMETHEUS_RULES] if rules else []
    templates = {j.get("job_name"): j for j in cfg.get("scrape_configs") or [] if isinstance(j, dict)}
    jobs: list[dict[str, Any]] = []
    for component, hosts in sorted(targets.items()):
        job = {k: v for k, v in (templates.get(component) or {}).items() if k not in DISCOVERY_KEYS}
        job["job_name"] = component
        job.setdefault("metrics_path", "/metrics")
        if component in APP_JOBS:
            # runbox serves /metrics beyond loopback only to RUNBOX_METRICS_TOKEN's bearer.
            job["authorization"] = {"type": "Bearer", "credentials_file": METRICS_TOKEN_FILE}
        job["static_configs"] = [{"targets": list(hosts)}]
        jobs.append(job)
    jobs.append({"job_name": "prometheus", "static_configs": [{"targets": [f"localhost:{PROMETHEUS_PORT}"]}]})
    cfg["scrape_configs"] = jobs
    return yaml.safe_dump(cfg, sort_keys=False)


def render_datasources(provisioning_dir: Path, prometheus_url: str) -> str:
    """The repo's datasource provisioning with every Prometheus datasource pointed at ours."""
    found: list[dict[str, Any]] = []
    directory = provisioning_dir / "datasources"
    for path in sorted(directory.glob("*.y*ml")) if directory.is_dir() else []:
        found.extend(d for d in _read_yaml(path).get("datasources") or [] if isinstance(d, dict))
    prometheus = [d for d in found if d.get("type") == "prometheus"]
    if not prometheus:
        found.append({**DEFAULT_DATASOURCE, "isDefault": True})
    for datasource in found:
        if datasource.get("type") == "prometheus":
            datasource["url"] = prometheus_url
    return yaml.safe_dump({"apiVersion": 1, "datasources": found}, sort_keys=False)


def render_dashboard_providers(provisioning_dir: Path) -> str:
    """The repo's dashboard providers, each reading the directory the dashboards are uploaded to."""
    providers: list[dict[str, Any]] = []
    directory = provisioning_dir / "dashboards"
    for path in sorted(directory.glob("*.y*ml")) if directory.is_dir() else []:
        providers.extend(p for p in _read_yaml(path).get("providers") or [] if isinstance(p, dict))
    if not providers:
        providers.append({"name": "runbox", "folder": "runbox", "type": "file", "disableDeletion": True})
    for provider in providers:
        provider["type"] = "file"
        provider["options"] = {**(provider.get("options") or {}), "path": GRAFANA_DASHBOARDS}
    return yaml.safe_dump({"apiVersion": 1, "providers": providers}, sort_keys=False)


def dashboard_files(dashboards_dir: Path, provisioning_dir: Path) -> dict[str, str]:
    """Every dashboard JSON under ``dashboards_dir`` (provisioning excluded), by relative path."""
    if not dashboards_dir.is_dir():
        return {}
    files: dict[str, str] = {}
    for path in sorted(dashboards_dir.rglob("*.json")):
        if provisioning_dir == path or provisioning_dir in path.parents:
            continue
        files[str(path.relative_to(dashboards_dir))] = path.read_text()
    return files


@dataclass
class MonitoringArgs:
    """Inputs of :class:`Monitoring`."""

    prefix: str
    backend_network: pulumi.Input[str]  # to scrape the app containers
    edge_network: pulumi.Input[str]  # to publish ports; Grafana reaches Prometheus here
    scrape_targets: Mapping[str, Sequence[str]]  # job (gateway, executor) → ["container:port", ...]
    grafana_admin_password: pulumi.Output[str]  # secret
    # secret: the bearer token the app containers accept at /metrics (RUNBOX_METRICS_TOKEN); the
    # repo's scrape jobs read it from METRICS_TOKEN_FILE
    metrics_token: pulumi.Output[str]
    prometheus_config: Path
    alert_rules: Path
    dashboards_dir: Path
    provisioning_dir: Path
    prometheus_image: str = "prom/prometheus:v2.53.2"
    grafana_image: str = "grafana/grafana:11.2.0"
    bind_ip: str = "127.0.0.1"  # the UIs have no auth of their own (Prometheus) or a password (Grafana)
    prometheus_port: int = PROMETHEUS_PORT
    grafana_port: int = GRAFANA_PORT
    public_host: str = "localhost"
    retention: str = "15d"
    labels: Mapping[str, str] = field(default_factory=dict)


class Monitoring(pulumi.ComponentResource):
    """A Prometheus scraping every app container and a Grafana with the repo's dashboards."""

    prometheus: docker.Container
    grafana: docker.Container
    prometheus_url: str
    grafana_url: str
    prometheus_yml: str

    def __init__(self, name: str, args: MonitoringArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("runbox:monitoring:Monitoring", name, {}, opts)
        child = pulumi.ResourceOptions(parent=self)
        prometheus_name = f"{args.prefix}-{name}-prometheus"
        grafana_name = f"{args.prefix}-{name}-grafana"
        common: dict[str, Any] = {
            "restart": "unless-stopped",
            "privileged": False,
            "security_opts": ["no-new-privileges:true"],
            "log_driver": "json-file",
            "log_opts": LOG_OPTS,
        }

        rules = args.alert_rules.is_file()
        if not rules:
            pulumi.log.warn(f"{args.alert_rules} not found: Prometheus runs without alert rules", self)
        self.prometheus_yml = render_prometheus_config(
            _read_yaml(args.prometheus_config), args.scrape_targets, rules=rules
        )
        uploads = [
            docker.ContainerUploadArgs(file=PROMETHEUS_CONFIG, content=self.prometheus_yml),
            docker.ContainerUploadArgs(file=METRICS_TOKEN_FILE, content=args.metrics_token),
        ]
        if rules:
            uploads.append(docker.ContainerUploadArgs(file=PROMETHEUS_RULES, content=args.alert_rules.read_text()))

        prometheus_image = docker.RemoteImage(
            f"{name}-prometheus-image", name=args.prometheus_image, keep_locally=True, opts=child
        )
        volume_labels = [docker.VolumeLabelArgs(label=k, value=v) for k, v in sorted(args.labels.items())]
        prometheus_data = docker.Volume(
            f"{name}-prometheus-data", name=f"{prometheus_name}-data", labels=volume_labels, opts=child
        )
        self.prometheus = docker.Container(
            f"{name}-prometheus",
            name=prometheus_name,
            hostname=prometheus_name,
            image=prometheus_image.image_id,
            command=[
                f"--config.file={PROMETHEUS_CONFIG}",
                "--storage.tsdb.path=/prometheus",
                f"--storage.tsdb.retention.time={args.retention}",
            ],
            uploads=uploads,
            volumes=[docker.ContainerVolumeArgs(volume_name=prometheus_data.name, container_path="/prometheus")],
            networks_advanced=[
                docker.ContainerNetworksAdvancedArgs(name=args.backend_network),
                docker.ContainerNetworksAdvancedArgs(name=args.edge_network, aliases=["prometheus"]),
            ],
            ports=[docker.ContainerPortArgs(internal=PROMETHEUS_PORT, external=args.prometheus_port, ip=args.bind_ip)],
            healthcheck=docker.ContainerHealthcheckArgs(
                tests=["CMD", "wget", "-q", "-O", "/dev/null", f"http://127.0.0.1:{PROMETHEUS_PORT}/-/healthy"],
                interval="15s",
                timeout="5s",
                retries=3,
            ),
            labels=docker_labels({**args.labels, "runbox.role": "prometheus"}),
            **common,
            opts=child,
        )

        dashboards = dashboard_files(args.dashboards_dir, args.provisioning_dir)
        if not dashboards:
            pulumi.log.warn(f"no dashboard JSON under {args.dashboards_dir}", self)
        grafana_uploads = [
            docker.ContainerUploadArgs(
                file=f"{GRAFANA_PROVISIONING}/datasources/runbox.yaml",
                content=render_datasources(args.provisioning_dir, f"http://{prometheus_name}:{PROMETHEUS_PORT}"),
            ),
            docker.ContainerUploadArgs(
                file=f"{GRAFANA_PROVISIONING}/dashboards/runbox.yaml",
                content=render_dashboard_providers(args.provisioning_dir),
            ),
            *(
                docker.ContainerUploadArgs(file=f"{GRAFANA_DASHBOARDS}/{path}", content=content)
                for path, content in dashboards.items()
            ),
        ]
        grafana_image = docker.RemoteImage(
            f"{name}-grafana-image", name=args.grafana_image, keep_locally=True, opts=child
        )
        grafana_data = docker.Volume(
            f"{name}-grafana-data", name=f"{grafana_name}-data", labels=volume_labels, opts=child
        )
        self.grafana = docker.Container(
            f"{name}-grafana",
            name=grafana_name,
            hostname=grafana_name,
            image=grafana_image.image_id,
            envs=env_list(
                {
                    "GF_SECURITY_ADMIN_USER": "admin",
                    "GF_USERS_ALLOW_SIGN_UP": "false",
                    "GF_AUTH_ANONYMOUS_ENABLED": "false",
                    "GF_ANALYTICS_REPORTING_ENABLED": "false",
                    "GF_ANALYTICS_CHECK_FOR_UPDATES": "false",
                    "GF_SERVER_ROOT_URL": f"http://{args.public_host}:{args.grafana_port}/",
                },
                {"GF_SECURITY_ADMIN_PASSWORD": args.grafana_admin_password},
            ),
            uploads=grafana_uploads,
            volumes=[docker.ContainerVolumeArgs(volume_name=grafana_data.name, container_path="/var/lib/grafana")],
            networks_advanced=[docker.ContainerNetworksAdvancedArgs(name=args.edge_network)],
            ports=[docker.ContainerPortArgs(internal=GRAFANA_PORT, external=args.grafana_port, ip=args.bind_ip)],
            healthcheck=docker.ContainerHealthcheckArgs(
                tests=["CMD", "wget", "-q", "-O", "/dev/null", f"http://127.0.0.1:{GRAFANA_PORT}/api/health"],
                interval="15s",
                timeout="5s",
                retries=3,
            ),
            labels=docker_labels({**args.labels, "runbox.role": "grafana"}),
            **common,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.prometheus]),
        )
        self.prometheus_url = f"http://{args.public_host}:{args.prometheus_port}"
        self.grafana_url = f"http://{args.public_host}:{args.grafana_port}"
        self.register_outputs(
            {
                "prometheus_url": self.prometheus_url,
                "grafana_url": self.grafana_url,
                "scrape_targets": {k: list(v) for k, v in args.scrape_targets.items()},
                "dashboards": sorted(dashboards),
            }
        )
