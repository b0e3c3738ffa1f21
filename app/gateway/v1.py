"""``/api/v1``: the native API. A thin adapter: the v1 body to a draft, the job record to JSON."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from quart import Blueprint, Response, jsonify, make_response, request

from app.gateway import gateway
from app.gateway.models import parse_submit
from app.gateway.sse import KEEPALIVE, encode, public_data
from app.gateway.validate import Draft
from app.interactive import reply_headers
from app.messages import SourceFile, TestCase
from app.web.errors import ApiError

bp = Blueprint("api_v1", __name__, url_prefix="/api/v1")
# Sent by the playground page; with RUNBOX_ALLOW_ANONYMOUS_PLAYGROUND it may submit without a
# key at the anonymous tier's allowance even when keys are required.
PLAYGROUND_HEADER = "X-Runbox-Playground"


def draft(body: Any) -> Draft:
    """Translate a v1 submit body (checked against :class:`SubmitBody`) into a draft."""
    parsed = parse_submit(body)
    language = gateway().validator.language(parsed.language, parsed.version)
    limits = parsed.limits.model_dump(exclude_none=True) if parsed.limits is not None else None
    return Draft(
        language=language,
        source=parsed.source,
        files=tuple(SourceFile(f.name, f.content) for f in parsed.files or ()),
        stdin=parsed.stdin or "",
        args=tuple(parsed.args or ()),
        limits=limits,
        version=parsed.version or "",
        tests=tuple(TestCase(t.stdin, t.expected_stdout) for t in parsed.tests or ()),
        interactive=bool(parsed.interactive),
        callback_url=parsed.callback_url or "",
    )


@bp.post("/jobs")
async def submit() -> Any:
    gw = gateway()
    identity = gw.identify(playground=request.headers.get(PLAYGROUND_HEADER) == "1")
    with gw.admission.submit(identity) as reservation:
        job = await gw.validator.check(draft(await gw.read_json()), identity)
        reservation.bind(job.id)
        await gw.publisher.submit(job, "v1")
    base = request.root_path or ""
    location = f"{base}/api/v1/jobs/{job.id}"
    response = jsonify({"id": job.id, "status": "queued", "events_url": f"{location}/events", "result_url": location})
    response.status_code = 202
    response.headers["Location"] = location
    response.headers.update(reservation.decision.headers())
    return response


@bp.post("/jobs/<job_id>/stdin")
async def job_stdin(job_id: str) -> Any:
    """Append to an interactive job's stdin; 409 when it is not interactive or not running."""
    gw = gateway()
    # Like following a job, sending it input needs only its id (a capability); a wrong key is
    # refused. The executor bounds the input per job, whichever gateways it comes through.
    gw.reader()
    data, eof = gw.validator.stdin(await gw.read_json())
    record = await gw.lookup(job_id)
    reply = await gw.send_stdin(record, data, eof)
    if reply.status != 202:
        raise ApiError(reply.status, reply.code, reply.message, reply_headers(reply))
    response = jsonify({"id": job_id, "accepted_bytes": len(data.encode("utf-8", "surrogatepass")), "eof": eof})
    response.status_code = 202
    return response


@bp.get("/jobs/<job_id>")
async def job_state(job_id: str) -> Any:
    gw = gateway()
    gw.reader()
    record = await gw.lookup(job_id, fresh=True)
    return jsonify(record.state.public())


def last_event_id() -> int:
    raw = request.headers.get("Last-Event-ID") or request.args.get("last_event_id") or "0"
    if not raw.isdecimal() or len(raw) > 12:
        raise ApiError(400, "invalid_last_event_id", "Last-Event-ID must be a whole number (at most 12 digits).")
    return int(raw)


@bp.get("/jobs/<job_id>/events")
async def job_events(job_id: str) -> Any:
    gw = gateway()
    # A job id is an unguessable capability, so following a job needs no key (browsers'
    # EventSource cannot send one); a wrong key is still refused, and reads and streams are capped.
    identity = gw.reader()
    after = last_event_id()
    await gw.lookup(job_id)
    gw.admission.open_stream(identity)
    gw.metrics.sse_streams.inc()

    async def stream() -> AsyncIterator[bytes]:
        try:
            async for batch in gw.events.follow(job_id, after):
                if batch is None:
                    yield KEEPALIVE
                    continue
                # Every event already known goes out in one chunk: one socket write, not one per event.
                yield b"".join(encode(seq, event.name, public_data(event, state)) for seq, event, state in batch)
        finally:
            gw.admission.close_stream(identity)
            gw.metrics.sse_streams.dec()

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
    return jsonify(gateway().registry.describe())
