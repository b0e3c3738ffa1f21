"""Every refusal and failure of a request, answered in one place and counted in one place.

Anything in a request may raise :class:`ApiError` (or let a broker or HTTP exception out);
one handler turns it into a response. The response's *body* depends on the API flavour the
request was for (v1's ``{"error": {"code", "message"}}``, Piston's ``{"message"}``, Judge0's
``{"error"}`` or field errors), chosen by the blueprint that matched; the status, headers and
the ``runbox_rejections_total{reason}`` count are the same for every flavour. A refused
request whose body was never read has that body drained (discarded, never stored, up to a
small bound) first, so the client reads the answer instead of a reset connection.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from quart import Quart, Response, current_app, jsonify, request
from werkzeug.exceptions import HTTPException

from app.broker import BrokerUnavailable
from app.metrics import Metrics
from app.web import body

log = logging.getLogger(__name__)

# The rejection reason a status stands for when the raiser did not name one.
_STATUS_REASONS = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "bad_request",
    408: "slow_body",
    410: "expired",
    413: "body_too_large",
    415: "bad_request",
    422: "bad_request",
    429: "rate_limited",
    431: "headers_too_large",
}


class ApiError(Exception):
    """An answer other than success; raised anywhere in a request, rendered by the one handler.

    ``reason`` labels the refusal in ``runbox_rejections_total`` (derived from the status when
    not given; 5xx answers that are not refusals leave it empty). ``details`` is a flavour's
    own body when it has one (Judge0's per-field 422 errors).
    """

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        headers: dict[str, str] | None = None,
        *,
        reason: str | None = None,
        details: Any = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}
        self.reason = reason if reason is not None else _STATUS_REASONS.get(status, "")
        self.details = details


Shape = Callable[[ApiError], Any]


def json_response(status: int, payload: Any, headers: dict[str, str] | None = None) -> Response:
    """A JSON body with a status and extra headers; every flavour's answers are built on it."""
    response = jsonify(payload)
    response.status_code = status
    for key, value in (headers or {}).items():
        response.headers[key] = value
    return response


def native_body(exc: ApiError) -> Any:
    """The native error body, ``{"error": {"code", "message"}}``."""
    return {"error": {"code": exc.code, "message": exc.message}}


def native_shape(exc: ApiError) -> Response:
    return json_response(exc.status, native_body(exc), exc.headers)


_HTTP_CODES = {
    400: ("bad_request", "The request could not be understood."),
    404: ("not_found", "There is nothing at this address."),
    405: ("method_not_allowed", "This address does not accept that method."),
    408: ("body_timeout", "The request body did not arrive in time."),
    413: ("body_too_large", "The request body is larger than this service accepts."),
}


def from_http(exc: HTTPException) -> ApiError:
    """A framework-raised HTTP error (no route, wrong method, body timeout) as an ApiError."""
    status = exc.code or 500
    code, message = _HTTP_CODES.get(status, ("http_error", exc.description or "HTTP error"))
    headers = {}
    allowed: Any = getattr(exc, "valid_methods", None)
    if status == 405 and allowed:
        headers["Allow"] = ", ".join(sorted(allowed))
    return ApiError(status, code, message, headers)


def register(app: Quart, shapes: dict[str, Shape] | None = None) -> None:
    """Install the one handler: no request ever ends in a stack trace.

    ``shapes`` maps a blueprint name to the function that renders that flavour's body.
    """
    table = dict(shapes or {})

    async def answer(exc: ApiError) -> Any:
        metrics: Metrics = current_app.extensions["runbox.metrics"]
        if exc.reason:
            metrics.rejections.labels(exc.reason).inc()
        close = await body.drain_unread()
        shape = table.get(request.blueprint or "", native_shape)
        response = shape(exc)
        if close and isinstance(response, Response):
            response.headers["Connection"] = "close"
        return response

    @app.errorhandler(ApiError)
    async def _api_error(exc: ApiError) -> Any:
        return await answer(exc)

    @app.errorhandler(HTTPException)
    async def _http_error(exc: HTTPException) -> Any:
        return await answer(from_http(exc))

    @app.errorhandler(BrokerUnavailable)
    async def _broker(exc: BrokerUnavailable) -> Any:
        retry = str(current_app.extensions["runbox.settings"].retry_after_s)
        return await answer(
            ApiError(
                503,
                "broker_unavailable",
                "The job queue is unreachable; try again shortly.",
                {"Retry-After": retry},
                reason="broker_unavailable",
            )
        )

    @app.errorhandler(Exception)
    async def _unexpected(exc: Exception) -> Any:
        log.exception("unhandled error")
        return await answer(ApiError(500, "internal", "The service hit an unexpected error; it has been logged."))
