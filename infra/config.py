"""Every setting of the Pulumi program, read once from the stack's configuration.

Keys live in the ``runbox`` namespace (``pulumi config set runbox:gatewayCount 3``); secrets are
set with ``--secret``. Everything has a default except the two passwords. Paths are relative to
the repository root, whatever directory Pulumi runs the program from.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi

from app.config import Settings

ROOT = Path(__file__).resolve().parent.parent
NAMESPACE = "runbox"
RUNTIMES = ("runc", "runsc")

# The RUNBOX_* variables the app reads (app/config.py is the one source of their names).
APP_ENV_NAMES = frozenset("RUNBOX_" + f.name.upper() for f in dataclasses.fields(Settings))
# Set by the components themselves; an extra env map may not override them, because each one
# ties a container to the topology (its role, its broker, its name, its port).
MANAGED_ENV_NAMES = frozenset(
    {
        "RUNBOX_ROLES",
        "RUNBOX_HOST",
        "RUNBOX_PORT",
        "RUNBOX_AMQP_URL",
        "RUNBOX_AMQP_PREFIX",
        "RUNBOX_EXECUTOR_NAME",
        "RUNBOX_RUNTIME",
        "RUNBOX_DOCKER_URL",
        "RUNBOX_GATEWAY_COUNT",
        "RUNBOX_TRUSTED_PROXIES",
        "RUNBOX_PUBLIC_URL",
        "RUNBOX_REQUIRE_KEYS",
        "RUNBOX_API_KEYS",
        "RUNBOX_LOG_LEVEL",
    }
)


class InfraConfigError(ValueError):
    """A stack setting is malformed; the message names the ``runbox:`` key to fix."""


@dataclass(frozen=True)
class InfraConfig:
    """The whole stack configuration, validated."""

    prefix: str
    broker_password: pulumi.Output[str]
    grafana_admin_password: pulumi.Output[str] | None
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
    docker_socket: str = "/var/run/docker.sock"
    docker_gid: int | None = None
    executor_env: dict[str, str] = field(default_factory=dict)

    log_level: str = "INFO"

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
        docker_socket=c.get("dockerSocket") or InfraConfig.docker_socket,
        docker_gid=c.get_int("dockerGid"),
        executor_env=_env(c, "executorEnv"),
        log_level=c.get("logLevel") or InfraConfig.log_level,
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
