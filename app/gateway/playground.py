"""``GET /``: the playground page, a single static file that uses the public API."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from quart import Blueprint, Response

bp = Blueprint("playground", __name__)
PAGE = Path(__file__).resolve().parent.parent / "static" / "playground.html"


@bp.get("/")
async def index() -> Any:
    return Response(PAGE.read_bytes(), content_type="text/html; charset=utf-8")
