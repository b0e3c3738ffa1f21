"""A Piston ``/api/v2/connect`` client's side, over a real WebSocket client library (websockets)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection

from tests.runbox_client import Service


def ws_url(service: Service) -> str:
    return service.url.replace("http://", "ws://") + "/api/v2/connect"


def receive(ws: ClientConnection) -> dict[str, Any]:
    message = json.loads(ws.recv(timeout=60))
    assert isinstance(message, dict)
    return message


def output_until(ws: ClientConnection, text: str, stream: str = "stdout") -> list[dict[str, Any]]:
    """Messages until ``stream``'s data adds up to ``text`` (chunks may split or join)."""
    seen: list[dict[str, Any]] = []
    got = ""
    while got != text:
        message = receive(ws)
        seen.append(message)
        if message["type"] == "data" and message["stream"] == stream:
            got += message["data"]
        assert text.startswith(got) and message["type"] != "exit", (text, seen)
    return seen


def closed_with(ws: ClientConnection) -> tuple[int, list[dict[str, Any]]]:
    """The close code the server ended the session with, and the messages before it."""
    seen = []
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            seen.append(receive(ws))
    assert closed.value.rcvd is not None
    return closed.value.rcvd.code, seen
