"""HTTP metrics for every role: requests by route template, method and code, and their latency.

The route label is the URL rule's template (``/api/v1/jobs/<job_id>``), never the raw path,
so job ids and other path values never become label values. Requests that match no rule are
counted under ``unmatched``; unusual methods under ``OTHER``. For a streamed response (SSE)
the hook runs when the response starts, so its duration is the time to the first byte.
"""

from __future__ import annotations

import time

from quart import Quart, Response, g, request

from app.metrics import Metrics

UNMATCHED = "unmatched"
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def route_label() -> str:
    """The matched URL rule's template, or ``unmatched``: a bounded set of values."""
    rule = request.url_rule
    return rule.rule if rule is not None else UNMATCHED


def register(app: Quart) -> None:
    """Count and time every request answered by ``app`` on its ``runbox.metrics``."""
    metrics: Metrics = app.extensions["runbox.metrics"]

    @app.before_request
    async def _start_timer() -> None:
        g.runbox_request_started = time.perf_counter()

    @app.after_request
    async def _observe(response: Response) -> Response:
        route = route_label()
        method = request.method if request.method in METHODS else "OTHER"
        started: float | None = g.get("runbox_request_started")
        took = None if started is None else time.perf_counter() - started
        metrics.answered(route, method, response.status_code, took)
        return response
