"""Many Docker hosts: one explicit provider per host, and a gVisor check on each executor host.

Every resource of a many-host stack is created through the provider of the host it belongs
to (passed down as the components' ``providers``), never through Pulumi's default provider, so
a resource can never land on the wrong engine. Another component that needs per-host access
(a Docker API gate in front of each engine, say) takes ``Hosts.providers`` the same way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import pulumi
import pulumi_docker as docker

from app.config import Settings
from infra.common import docker_labels
from infra.config import DockerHost


@dataclass
class HostsArgs:
    """Inputs of :class:`Hosts`."""

    hosts: Sequence[DockerHost]


class Hosts(pulumi.ComponentResource):
    """A ``docker.Provider`` per entry of ``runbox:dockerHosts``."""

    providers: dict[str, docker.Provider]

    def __init__(self, name: str, args: HostsArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("runbox:hosts:Hosts", name, {}, opts)
        self.providers = {
            host.name: docker.Provider(f"{name}-{host.name}", host=host.url, opts=pulumi.ResourceOptions(parent=self))
            for host in args.hosts
        }
        self.register_outputs({"hosts": sorted(self.providers)})

    def opts(self, host: DockerHost, **kwargs: object) -> pulumi.ResourceOptions:
        """Options that put a component (and all its children) on ``host``'s engine."""
        return pulumi.ResourceOptions(providers={"docker": self.providers[host.name]}, **kwargs)  # type: ignore[arg-type]


@dataclass
class RuntimeCheckArgs:
    """Inputs of :class:`RuntimeCheck`."""

    prefix: str
    image: pulumi.Input[str]  # any image with a shell-free ``python``: the app image
    runtime: str = Settings.gvisor_runtime  # the engine's name: the one the executors' sandboxes use
    labels: Mapping[str, str] = field(default_factory=dict)


class RuntimeCheck(pulumi.ComponentResource):
    """Runs one throw-away container under ``runtime`` on the host and waits for it to succeed.

    If the engine has no such runtime (gVisor not installed or not registered in daemon.json),
    creating the container fails and ``pulumi up`` stops before any executor of that host is
    created; the executors depend on this check. (An executor started anyway also refuses to
    become ready and says why: app/executor/engine.py.)
    """

    container: docker.Container

    def __init__(self, name: str, args: RuntimeCheckArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("runbox:hosts:RuntimeCheck", name, {}, opts)
        self.container = docker.Container(
            name,
            name=f"{args.prefix}-{name}",
            image=args.image,
            runtime=args.runtime,
            command=["python", "-c", "import platform; print(platform.release())"],
            network_mode="none",
            # Run to completion during the update; a non-zero exit fails the update.
            attach=True,
            must_run=False,
            logs=True,
            labels=docker_labels({**args.labels, "runbox.role": "runtime-check", "runbox.runtime": args.runtime}),
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.register_outputs({"runtime": args.runtime})
