"""Every setting of the Pulumi program, read once from the stack's configuration.

Keys live in the ``runbox`` namespace (``pulumi config set runbox:gatewayCount 3``); secrets are
set with ``--secret``. Everything has a default except the two passwords. Paths are relative to
the repository root, whatever directory Pulumi runs the program from.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pulumi

from app.config import Settings

ROOT = Path(__file__).resolve().parent.parent
NAMESPACE = "runbox"
RUNTIMES = ("runc", "runsc")
ROLES = ("broker", "gateway", "executor", "monitoring")

# The RUNBOX_* variables the app reads (app/config.py is the one source of their names).
APP_ENV_NAMES = frozenset("RUNBOX_" + f.name.upper() for f in dataclasses.fields(Settings))
# Set by the components themselves; an extra env map may not override them, because each one
# ties a container to the topology (its role, its broker, its name, its port).
MANAGED_ENV_NAMES = frozenset(
    {
        "RUNBOX_ROLES",
        "RUNBOX_METRICS_TOKEN",
        "RUNBOX_HOST",
        "RUNBOX_PORT",
        "RUNBOX_PROBE_PORT",
        "RUNBOX_AMQP_URL",
        "RUNBOX_AMQP_PREFIX",
        "RUNBOX_EXECUTOR_NAME",
        "RUNBOX_RUNTIME",
        "RUNBOX_GVISOR_RUNTIME",
        "RUNBOX_DOCKER_URL",
        "RUNBOX_GATEWAY_COUNT",
        "RUNBOX_TRUSTED_PROXIES",
        "RUNBOX_PUBLIC_URL",
        "RUNBOX_REQUIRE_KEYS",
        "RUNBOX_API_KEYS",
        "RUNBOX_LOG_LEVEL",
        "RUNBOX_AMQP_QUORUM_SIZE",
    }
)


class InfraConfigError(ValueError):
    """A stack setting is malformed; the message names the ``runbox:`` key to fix."""


@dataclass(frozen=True)
class DockerHost:
    """One Docker engine of a many-host stack (an entry of ``runbox:dockerHosts``).

    ``url`` is how Pulumi reaches its engine (``ssh://deploy@10.0.0.5`` or
    ``tcp://10.0.0.5:2376``); ``address`` is where the other hosts reach what it publishes,
    by default the URL's host part.
    """

    name: str
    url: str
    roles: tuple[str, ...]
    address: str

    def has(self, role: str) -> bool:
        return role in self.roles


def parse_docker_hosts(raw: Any) -> tuple[DockerHost, ...]:
    """``runbox:dockerHosts``: a JSON list of ``{"name", "url", "roles"}`` (``address`` optional)."""
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError as exc:
            raise InfraConfigError("runbox:dockerHosts must be a JSON list of {name, url, roles}") from exc
    if not isinstance(raw, list) or not raw:
        raise InfraConfigError("runbox:dockerHosts must be a non-empty JSON list of {name, url, roles}")
    hosts: list[DockerHost] = []
    for entry in raw:
        if not isinstance(entry, dict) or not {"name", "url", "roles"} <= set(entry):
            raise InfraConfigError(f"runbox:dockerHosts entry {entry!r} needs name, url and roles")
        name, url, roles = entry["name"], entry["url"], entry["roles"]
        if not isinstance(name, str) or not name.replace("-", "").isalnum():
            raise InfraConfigError(f"runbox:dockerHosts name {name!r} may hold only letters, digits and '-'")
        if not isinstance(roles, list) or not roles or any(r not in ROLES for r in roles):
            raise InfraConfigError(f"runbox:dockerHosts {name}: roles must be a list among {', '.join(ROLES)}")
        if not isinstance(url, str) or "://" not in url:
            raise InfraConfigError(f"runbox:dockerHosts {name}: url must be like ssh://user@host or tcp://host:2376")
        address = entry.get("address") or urlsplit(url).hostname or ""
        if not address:
            raise InfraConfigError(f"runbox:dockerHosts {name}: give an address the other hosts can reach")
        hosts.append(DockerHost(name, url, tuple(dict.fromkeys(roles)), str(address)))
    names = [h.name for h in hosts]
    if len(set(names)) != len(names):
        raise InfraConfigError("runbox:dockerHosts names must be unique")
    for role in ("broker", "gateway", "executor"):
        if not any(h.has(role) for h in hosts):
            raise InfraConfigError(f"runbox:dockerHosts has no host with the {role} role")
    if sum(h.has("monitoring") for h in hosts) > 1:
        raise InfraConfigError("runbox:dockerHosts: at most one host has the monitoring role")
    return tuple(hosts)


DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")


@dataclass(frozen=True)
class InfraConfig:
    """The whole stack configuration, validated."""

    prefix: str
    broker_password: pulumi.Output[str]
    grafana_admin_password: pulumi.Output[str] | None
    # Bearer token Prometheus sends to every app container: /metrics answers only loopback otherwise.
    metrics_token: pulumi.Output[str] | None = None
    api_keys: pulumi.Output[str] | None = None

    # images
    build_images: bool = True
    app_image: str = "runbox/app:latest"
    app_build_args: dict[str, str] = field(default_factory=dict)
    languages_dir: Path = ROOT / "app" / "languages"
    sandbox_context: Path = ROOT / "sandbox_images"

    # broker
    broker_image: str = "rabbitmq:3.13-management"
    broker_user: str = "runbox"
    broker_management_port: int | None = None
    amqp_prefix: str = "runbox"

    # gateways
    gateway_count: int = 2
    gateway_port: int = 8080
    bind_ip: str = "0.0.0.0"
    public_host: str = "localhost"
    public_url: str = ""
    trusted_proxies: tuple[str, ...] = ()
    require_keys: bool = False
    gateway_env: dict[str, str] = field(default_factory=dict)

    # executors
    executor_count: int = 1
    runtime: str = "runc"
    executor_runtimes: tuple[str, ...] = ()
    # The engine's name for the gVisor that ``runsc`` means (scripts/setup.sh registers it on each
    # host): RUNBOX_GVISOR_RUNTIME of every executor and gate, and what the hosts' check runs.
    gvisor_runtime: str = Settings.gvisor_runtime
    docker_socket: str = "/var/run/docker.sock"
    docker_gid: int | None = None
    executor_env: dict[str, str] = field(default_factory=dict)

    log_level: str = "INFO"

    # many hosts: empty means one host, the engine Pulumi's default provider reaches
    docker_hosts: tuple[DockerHost, ...] = ()
    broker_tls_ca: pulumi.Output[str] | None = None  # PEM; secrets, required with docker_hosts
    broker_tls_cert: pulumi.Output[str] | None = None
    broker_tls_key: pulumi.Output[str] | None = None
    erlang_cookie: pulumi.Output[str] | None = None  # shared by the broker nodes of a cluster
    executor_metrics_port: int = 9180  # many hosts: executor i on a host publishes metrics on port + i
    gate_metrics_port: int = 9179  # many hosts: each executor host's Docker gate publishes metrics here

    # monitoring
    monitoring: bool = True
    prometheus_image: str = "prom/prometheus:v2.53.2"
    grafana_image: str = "grafana/grafana:11.2.0"
    prometheus_config: Path = ROOT / "monitoring" / "prometheus.yml"
    alert_rules: Path = ROOT / "monitoring" / "alerts.yml"
    dashboards_dir: Path = ROOT / "dashboards"
    grafana_provisioning_dir: Path = ROOT / "dashboards" / "provisioning"
    monitoring_bind_ip: str = "127.0.0.1"
    prometheus_port: int = 9090
    grafana_port: int = 3000

    @property
    def labels(self) -> dict[str, str]:
        """Docker labels on every object, so one stack's objects can be listed and told apart."""
        return {"runbox.stack": self.prefix}


def _path(value: str | None, default: Path) -> Path:
    if not value:
        return default
    path = Path(value)
    return path if path.is_absolute() else ROOT / path


def _object(config: pulumi.Config, key: str) -> dict[str, Any]:
    value = config.get_object(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InfraConfigError(f"runbox:{key} must be an object")
    return value


def _strings(config: pulumi.Config, key: str) -> tuple[str, ...]:
    """A list setting given either as a YAML/JSON list or as a comma-separated string."""
    raw = config.get(key)
    if raw is None:
        return ()
    try:
        value = json.loads(raw)
    except ValueError:
        value = raw
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise InfraConfigError(f"runbox:{key} must be a list of strings or a comma-separated string")


def _env(config: pulumi.Config, key: str) -> dict[str, str]:
    """Extra RUNBOX_* settings for one role, checked against app/config.py's names."""
    env = {str(k): str(v) for k, v in _object(config, key).items()}
    for name in env:
        if name not in APP_ENV_NAMES:
            raise InfraConfigError(f"runbox:{key} names {name}, which app/config.py does not read")
        if name in MANAGED_ENV_NAMES:
            raise InfraConfigError(f"runbox:{key} may not set {name}: the program sets it from the topology")
    return env


def load(config: pulumi.Config | None = None) -> InfraConfig:
    """Read and validate the stack's ``runbox:*`` settings."""
    c = config or pulumi.Config(NAMESPACE)
    monitoring = c.get_bool("monitoring")
    monitoring = True if monitoring is None else monitoring
    cfg = InfraConfig(
        prefix=c.get("prefix") or f"runbox-{pulumi.get_stack()}",
        broker_password=c.require_secret("brokerPassword"),
        grafana_admin_password=c.require_secret("grafanaAdminPassword") if monitoring else None,
        metrics_token=c.require_secret("metricsToken") if monitoring else None,
        api_keys=c.get_secret("apiKeys"),
        build_images=_bool(c, "buildImages", True),
        app_image=c.get("appImage") or InfraConfig.app_image,
        app_build_args={str(k): str(v) for k, v in _object(c, "appBuildArgs").items()},
        languages_dir=_path(c.get("languagesDir"), InfraConfig.languages_dir),
        sandbox_context=_path(c.get("sandboxContext"), InfraConfig.sandbox_context),
        broker_image=c.get("brokerImage") or InfraConfig.broker_image,
        broker_user=c.get("brokerUser") or InfraConfig.broker_user,
        broker_management_port=c.get_int("brokerManagementPort"),
        amqp_prefix=c.get("amqpPrefix") or InfraConfig.amqp_prefix,
        gateway_count=_int(c, "gatewayCount", InfraConfig.gateway_count),
        gateway_port=_int(c, "gatewayPort", InfraConfig.gateway_port),
        bind_ip=c.get("bindIp") or InfraConfig.bind_ip,
        public_host=c.get("publicHost") or InfraConfig.public_host,
        public_url=c.get("publicUrl") or "",
        trusted_proxies=_strings(c, "trustedProxies"),
        require_keys=_bool(c, "requireKeys", False),
        gateway_env=_env(c, "gatewayEnv"),
        executor_count=_int(c, "executorCount", InfraConfig.executor_count),
        runtime=c.get("runtime") or InfraConfig.runtime,
        executor_runtimes=_strings(c, "executorRuntimes"),
        gvisor_runtime=c.get("gvisorRuntime") or InfraConfig.gvisor_runtime,
        docker_socket=c.get("dockerSocket") or InfraConfig.docker_socket,
        docker_gid=c.get_int("dockerGid"),
        executor_env=_env(c, "executorEnv"),
        log_level=c.get("logLevel") or InfraConfig.log_level,
        docker_hosts=parse_docker_hosts(c.get("dockerHosts")) if c.get("dockerHosts") else (),
        broker_tls_ca=c.get_secret("brokerTlsCa"),
        broker_tls_cert=c.get_secret("brokerTlsCert"),
        broker_tls_key=c.get_secret("brokerTlsKey"),
        erlang_cookie=c.get_secret("erlangCookie"),
        executor_metrics_port=_int(c, "executorMetricsPort", InfraConfig.executor_metrics_port),
        gate_metrics_port=_int(c, "gateMetricsPort", InfraConfig.gate_metrics_port),
        monitoring=monitoring,
        prometheus_image=c.get("prometheusImage") or InfraConfig.prometheus_image,
        grafana_image=c.get("grafanaImage") or InfraConfig.grafana_image,
        prometheus_config=_path(c.get("prometheusConfig"), InfraConfig.prometheus_config),
        alert_rules=_path(c.get("alertRules"), InfraConfig.alert_rules),
        dashboards_dir=_path(c.get("dashboardsDir"), InfraConfig.dashboards_dir),
        grafana_provisioning_dir=_path(c.get("grafanaProvisioningDir"), InfraConfig.grafana_provisioning_dir),
        monitoring_bind_ip=c.get("monitoringBindIp") or InfraConfig.monitoring_bind_ip,
        prometheus_port=_int(c, "prometheusPort", InfraConfig.prometheus_port),
        grafana_port=_int(c, "grafanaPort", InfraConfig.grafana_port),
    )
    validate(cfg)
    return cfg


def _bool(config: pulumi.Config, key: str, default: bool) -> bool:
    value = config.get_bool(key)
    return default if value is None else value


def _int(config: pulumi.Config, key: str, default: int) -> int:
    value = config.get_int(key)
    return default if value is None else value


def validate(cfg: InfraConfig) -> None:
    """Reject settings that cannot work, before any resource is planned."""
    if cfg.gateway_count < 1:
        raise InfraConfigError("runbox:gatewayCount must be at least 1")
    if cfg.executor_count < 1:
        raise InfraConfigError("runbox:executorCount must be at least 1")
    for runtime in (cfg.runtime, *cfg.executor_runtimes):
        if runtime not in RUNTIMES:
            raise InfraConfigError(f"runbox:runtime and runbox:executorRuntimes take runc or runsc, not {runtime!r}")
    if len(cfg.executor_runtimes) > cfg.executor_count:
        raise InfraConfigError("runbox:executorRuntimes lists more runtimes than runbox:executorCount executors")
    ports = [cfg.gateway_port + i for i in range(cfg.gateway_count)]
    if cfg.monitoring:
        ports += [cfg.prometheus_port, cfg.grafana_port]
    if cfg.broker_management_port is not None:
        ports.append(cfg.broker_management_port)
    if len(set(ports)) != len(ports):
        raise InfraConfigError(f"published host ports overlap: {sorted(ports)}")
    if not cfg.prefix.replace("-", "").replace("_", "").isalnum():
        raise InfraConfigError("runbox:prefix may hold only letters, digits, '-' and '_'")
    if cfg.docker_hosts:
        validate_hosts(cfg)


def validate_hosts(cfg: InfraConfig) -> None:
    """A many-host stack: RabbitMQ crosses hosts only over TLS, and every host runs the same image bits."""
    for key, value in (("brokerTlsCa", cfg.broker_tls_ca), ("brokerTlsCert", cfg.broker_tls_cert),
                       ("brokerTlsKey", cfg.broker_tls_key)):
        if value is None:
            raise InfraConfigError(
                f"runbox:{key} is required with runbox:dockerHosts (RabbitMQ crosses hosts over TLS)"
            )
    if sum(h.has("broker") for h in cfg.docker_hosts) > 1 and cfg.erlang_cookie is None:
        raise InfraConfigError("runbox:erlangCookie (a secret) is required when several hosts have the broker role")
    published = [cfg.gateway_port + i for i in range(cfg.gateway_count)]
    published += [cfg.executor_metrics_port + i for i in range(cfg.executor_count)]
    if cfg.gate_metrics_port in published:
        raise InfraConfigError(f"runbox:gateMetricsPort {cfg.gate_metrics_port} overlaps a gateway or executor port")
    if cfg.monitoring and not any(h.has("monitoring") for h in cfg.docker_hosts):
        raise InfraConfigError("runbox:dockerHosts needs a host with the monitoring role (or runbox:monitoring false)")
    pulled = [("brokerImage", cfg.broker_image)]
    if not cfg.build_images:
        pulled.append(("appImage", cfg.app_image))
    if cfg.monitoring:
        pulled += [("prometheusImage", cfg.prometheus_image), ("grafanaImage", cfg.grafana_image)]
    for key, image in pulled:
        if not DIGEST.search(image):
            raise InfraConfigError(
                f"runbox:{key} must be pinned by digest (name@sha256:...) on many hosts, so each runs the same bits"
            )
