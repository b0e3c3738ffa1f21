"""``python -m app``: serve the roles named by ``RUNBOX_ROLES`` until SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import asyncio
import errno
import os
import signal
import socket
import sys

from hypercorn.asyncio import serve

from app import logs
from app.config import ConfigError, Settings
from app.metrics import Metrics
from app.server import asgi_app, create_app
from app.web import probe
from app.web import server as web_server


def listen(host: str, port: int, variable: str = "RUNBOX_HOST/RUNBOX_PORT") -> socket.socket:
    """Bind the HTTP port before anything else starts, so a taken port ends the process at once.

    Hypercorn would bind only after the app's startup, by which time this process's executor
    may already be consuming jobs; a failure then left it hanging instead of exiting.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        why = "already in use" if exc.errno == errno.EADDRINUSE else (exc.strerror or str(exc))
        raise SystemExit(f"runbox: cannot listen on {host}:{port} ({variable}): {why}") from exc
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


async def _serve(settings: Settings, sock: socket.socket, probe_sock: socket.socket | None) -> None:
    app = create_app(settings)
    metrics: Metrics = app.extensions["runbox.metrics"]
    web_server.install()
    config = web_server.ServerConfig(
        settings.max_header_kb * 1024, lambda reason: metrics.rejections.labels(reason).inc()
    )
    config.bind = [f"fd://{sock.fileno()}"]
    config.accesslog = None
    config.graceful_timeout = 30
    config.keep_alive_timeout = 75
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with probe.serving(probe_sock, settings.roles, metrics, settings.liveness_stall_s):
        await serve(asgi_app(app), config, shutdown_trigger=stop.wait)


def main() -> None:
    """Entry point of the ``runbox`` command."""
    parser = argparse.ArgumentParser(prog="runbox", description="Run the runbox gateway and/or executor.")
    parser.add_argument(
        "command", nargs="?", default="serve", choices=["serve", "gate"],
        help="serve: the roles of RUNBOX_ROLES; gate: the Docker API gate alone (RUNBOX_ROLES=gate)",
    )
    command = parser.parse_args().command
    try:
        env = dict(os.environ, RUNBOX_ROLES="gate") if command == "gate" else None
        settings = Settings.from_env(env)
    except ConfigError as exc:
        print(f"runbox: {exc}", file=sys.stderr)
        sys.exit(2)
    sock = listen(settings.host, settings.port)  # exits non-zero, naming the port, when it is taken
    probe_sock = listen(settings.host, settings.probe_port, "RUNBOX_PROBE_PORT") if settings.probe_port else None
    logs.setup(settings.log_level, "+".join(settings.roles))
    asyncio.run(_serve(settings, sock, probe_sock))


if __name__ == "__main__":
    main()
