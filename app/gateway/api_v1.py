"""``/api/v1``: submit jobs, read their state, follow their events."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from quart import Blueprint, Response, jsonify, make_response, request

from app.gateway import gateway
from app.gateway.errors import ApiError
from app.gateway.sse import KEEPALIVE, encode, public_data

bp = Blueprint("api_v1", __name__, url_prefix="/api/v1")
# Sent by the playground page; with RUNBOX_ALLOW_ANONYMOUS_PLAYGROUND it may submit without a
# key at the anonymous tier's allowance even when keys are required.
PLAYGROUND_HEADER = "X-Runbox-Playground"


async def json_body() -> Any:
    """The request's JSON, or a 400 that says what is wrong with it."""
    data = await request.get_data(cache=True)
    if not data:
        gateway().metrics.rejections.labels("bad_request").inc()
        raise ApiError(400, "invalid_json", "The request body is empty; send a JSON object.")
    body = await request.get_json(force=True, silent=True)
    if body is None:
        gateway().metrics.rejections.labels("bad_request").inc()
        raise ApiError(400, "invalid_json", "The request body is not valid JSON.")
    return body


def not_found(job_id: str) -> ApiError:
    return ApiError(404, "not_found", f"No job with id {job_id!r}.")


@bp.post("/jobs")
async def submit() -> Any:
    gw = gateway()
    # Read the body before any refusal: answering without reading it makes the server drop
    # the connection, and the client's next request on it fails.
    await request.get_data(cache=True)
    identity = gw.identify(request, playground=request.headers.get(PLAYGROUND_HEADER) == "1")
    body = await json_body()
    job = gw.build_job(body, identity)
    decision = gw.admit(identity)
    await gw.submit(job, "v1")
    base = request.root_path or ""
    location = f"{base}/api/v1/jobs/{job.id}"
    response = jsonify(
        {
            "id": job.id,
            "status": "queued",
            "events_url": f"{location}/events",
            "result_url": location,
        }
    )
    response.status_code = 202
    response.headers["Location"] = location
    response.headers.update(decision.headers())
    return response


@bp.get("/jobs/<job_id>")
async def job_state(job_id: str) -> Any:
    record = await gateway().events.record(job_id)
    if record is None:
        raise not_found(job_id)
    return jsonify(record.state.public())


def last_event_id() -> int:
    raw = request.headers.get("Last-Event-ID") or request.args.get("last_event_id") or "0"
    try:
        value = int(raw)
    except ValueError as exc:
        raise ApiError(400, "invalid_last_event_id", "Last-Event-ID must be a whole number.") from exc
    if value < 0:
        raise ApiError(400, "invalid_last_event_id", "Last-Event-ID must not be negative.")
    return value


@bp.get("/jobs/<job_id>/events")
async def job_events(job_id: str) -> Any:
    gw = gateway()
    # A job id is an unguessable capability, so following a job needs no key (browsers'
    # EventSource cannot send one); a wrong key is still refused, and streams are capped.
    identity = gw.identify(request, reading=True)
    after = last_event_id()
    if await gw.events.record(job_id) is None:
        raise not_found(job_id)
    gw.open_stream(identity)

    async def stream() -> AsyncIterator[bytes]:
        try:
            async for item in gw.events.follow(job_id, after):
                if item is None:
                    yield KEEPALIVE
                    continue
                seq, event, state = item
                yield encode(seq, event.name, public_data(event, state))
        finally:
            gw.close_stream(identity)

    response = await make_response(
        stream(),
        200,
        {"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
    if isinstance(response, Response):
        response.timeout = None
    return response


@bp.get("/languages")
async def languages() -> Any:
    return jsonify([lang.describe() for lang in gateway().registry])
