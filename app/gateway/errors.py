"""The one error shape of the API, ``{"error": {"code", "message"}}``, for every failure."""

from __future__ import annotations

import logging
from typing import Any

from quart import Quart, Response, jsonify
from werkzeug.exceptions import HTTPException

from app.broker import BrokerUnavailable

log = logging.getLogger(__name__)


class ApiError(Exception):
    """An answer other than success; raised anywhere in a request, rendered by the handler."""

    def __init__(
        self, status: int, code: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


def json_response(status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
    """A JSON body with a status and extra headers; every API flavour's error shape is built on it."""
    response = jsonify(body)
    response.status_code = status
    for key, value in (headers or {}).items():
        response.headers[key] = value
    return response


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Response:
    return json_response(status, {"error": {"code": code, "message": message}}, headers)


_HTTP_CODES = {
    400: ("bad_request", "The request could not be understood."),
    404: ("not_found", "There is nothing at this address."),
    405: ("method_not_allowed", "This address does not accept that method."),
    413: ("body_too_large", "The request body is larger than this service accepts."),
}


def register(app: Quart) -> None:
    """Install handlers so that no request ever ends in a stack trace."""

    @app.errorhandler(ApiError)
    async def _api_error(exc: ApiError) -> Any:
        return error_response(exc.status, exc.code, exc.message, exc.headers)

    @app.errorhandler(HTTPException)
    async def _http_error(exc: HTTPException) -> Any:
        status = exc.code or 500
        code, message = _HTTP_CODES.get(status, ("http_error", exc.description or "HTTP error"))
        if status == 413:
            message = "The request body is far larger than this service accepts."
        return error_response(status, code, message)

    @app.errorhandler(BrokerUnavailable)
    async def _broker(exc: BrokerUnavailable) -> Any:
        return error_response(
            503, "broker_unavailable", "The job queue is unreachable; try again shortly.", {"Retry-After": "2"}
        )

    @app.errorhandler(Exception)
    async def _unexpected(exc: Exception) -> Any:
        log.exception("unhandled error")
        return error_response(500, "internal", "The service hit an unexpected error; it has been logged.")
