"""What every runbox app container shares: its environment, healthcheck, hardening and labels."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pulumi
import pulumi_docker as docker

APP_PORT = 8080  # RUNBOX_PORT inside every app container; published (gateways) or scraped (all)
PROBE_PORT = 8081  # RUNBOX_PROBE_PORT: liveness answered outside the event loop, for the healthcheck
# SIGTERM drains: running jobs may take up to 30 s (app/server.py), then the executor removes
# its sandboxes; Docker's default 10 s would kill it half way and leave containers behind.
STOP_TIMEOUT_S = 45
LOG_OPTS = {"max-size": "10m", "max-file": "3"}  # a noisy container cannot fill the host's disk


def docker_labels(labels: Mapping[str, str]) -> list[docker.ContainerLabelArgs]:
    """Container labels in a stable order (an unordered list would show as a diff every run)."""
    return [docker.ContainerLabelArgs(label=k, value=v) for k, v in sorted(labels.items())]


def env_list(plain: Mapping[str, str], secret: Mapping[str, pulumi.Input[str]]) -> pulumi.Output[list[str]]:
    """``NAME=value`` entries, sorted; a secret Output whenever ``secret`` is not empty.

    The ``secret`` values (the AMQP URL holds the broker password) are joined inside ``apply``
    and the result is marked secret even if a value arrived as a plain Output, so they never
    exist as a plain string outside a secret Output.
    """
    overlap = set(plain) & set(secret)
    if overlap:
        raise ValueError(f"set twice: {sorted(overlap)}")

    def render(values: dict[str, str]) -> list[str]:
        merged = {**plain, **values}
        return [f"{k}={merged[k]}" for k in sorted(merged)]

    if not secret:  # Output.all() of nothing is a list, not a mapping
        return pulumi.Output.from_input(render({}))
    return pulumi.Output.secret(pulumi.Output.all(**secret).apply(render))


def healthcheck() -> docker.ContainerHealthcheckArgs:
    """Liveness only, on the probe port: answered however busy the app is, failing if its loop stalls.

    Readiness is /readyz on the main port, for balancers.
    """
    probe = f"import urllib.request; urllib.request.urlopen('http://127.0.0.1:{PROBE_PORT}/healthz', timeout=2)"
    return docker.ContainerHealthcheckArgs(
        tests=["CMD", "python", "-c", probe], interval="10s", timeout="3s", retries=3, start_period="20s"
    )


def hardening() -> dict[str, Any]:
    """Options every app container gets: nothing privileged, nothing writable but a small /tmp."""
    return {
        "privileged": False,
        "read_only": True,
        "tmpfs": {"/tmp": "rw,noexec,nosuid,nodev,size=64m"},
        "capabilities": docker.ContainerCapabilitiesArgs(drops=["ALL"]),
        "security_opts": ["no-new-privileges:true"],
        "restart": "unless-stopped",
        "stop_timeout": STOP_TIMEOUT_S,
        "destroy_grace_seconds": STOP_TIMEOUT_S,
        "log_driver": "json-file",
        "log_opts": LOG_OPTS,
        "healthcheck": healthcheck(),
    }


def secret_env(
    metrics_token: pulumi.Output[str] | None, **values: pulumi.Input[str] | None
) -> dict[str, pulumi.Input[str]]:
    """The secret part of an app container's environment: the ``values`` that are set, plus the
    metrics token (``RUNBOX_METRICS_TOKEN``, what Prometheus presents at ``/metrics``) when there is one."""
    secret = {name: value for name, value in values.items() if value is not None}
    if metrics_token is not None:
        secret["RUNBOX_METRICS_TOKEN"] = metrics_token
    return secret


def metrics_endpoint(
    docker_name: str, port: int | None, publish_ip: str
) -> tuple[list[docker.ContainerPortArgs], str]:
    """Where Prometheus scrapes a container that publishes nothing else: ``(ports, "host:port")``.

    Without ``port`` it is scraped by name over the host's backend network (Prometheus on the
    same host); with it, ``/metrics`` is published on ``publish_ip:port`` for a Prometheus on
    another host.
    """
    if port is None:
        return [], f"{docker_name}:{APP_PORT}"
    return [docker.ContainerPortArgs(internal=APP_PORT, external=port, ip=publish_ip)], f"{publish_ip}:{port}"
