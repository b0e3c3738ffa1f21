"""The gateway role: HTTP API, SSE, compatibility APIs, playground."""

from __future__ import annotations

from quart import current_app

from app.gateway.service import Gateway


def gateway() -> Gateway:
    """The gateway services of the running app."""
    service: Gateway = current_app.extensions["runbox.gateway"]
    return service
