"""``python -m app``: serve the roles named by ``RUNBOX_ROLES`` until SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

from hypercorn.asyncio import serve
from hypercorn.config import Config

from app import logs
from app.config import ConfigError, Settings
from app.server import create_app


async def _serve(settings: Settings) -> None:
    app = create_app(settings)
    config = Config()
    config.bind = [f"{settings.host}:{settings.port}"]
    config.accesslog = None
    config.graceful_timeout = 30
    config.keep_alive_timeout = 75
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await serve(app, config, shutdown_trigger=stop.wait)


def main() -> None:
    """Entry point of the ``runbox`` command."""
    parser = argparse.ArgumentParser(prog="runbox", description="Run the runbox gateway and/or executor.")
    parser.add_argument("command", nargs="?", default="serve", choices=["serve"])
    parser.parse_args()
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        print(f"runbox: {exc}", file=sys.stderr)
        sys.exit(2)
    logs.setup(settings.log_level, "+".join(settings.roles))
    asyncio.run(_serve(settings))


if __name__ == "__main__":
    main()
