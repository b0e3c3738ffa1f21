"""Judge0 CE compatible API, so Judge0 clients (the official ``judge0`` PyPI SDK included) work unchanged.

Endpoints: ``/about``, ``/version``, ``/config_info``, ``/statuses``, ``/languages``,
``/languages/all``, ``/languages/{id}``, ``POST /submissions`` (``wait``, ``base64_encoded``,
``fields``), ``GET /submissions/{token}``, ``POST /submissions/batch`` and
``GET /submissions/batch?tokens=`` (the listing and information endpoints are in
``info.py``). Submissions become ordinary runbox jobs; a token is the job's id. Language ids
come from each language's ``judge0_id``; a ``callback_url`` is delivered by the gateways'
callback sender with the ``judge0`` renderer (``render.callback_renderer``).

Judge0 keeps request attributes (``expected_output``, limits, the source...) with the
submission and answers them back. runbox's job state does not hold them, so they travel in
one extra event on the job's event stream, published before the job itself: every gateway
folds it into the job's record, it survives gateway restarts, and it is read back when a
token is fetched. ``expected_output`` is compared when the submission is rendered, the way
Judge0 compares (trailing whitespace of each line and trailing blank lines ignored).
"""

from __future__ import annotations

import asyncio
from typing import Any

from quart import Blueprint, Response, jsonify, request

from app.events import JobRecord
from app.gateway import gateway
from app.gateway.identity import Identity
from app.gateway.judge0.contract import (
    CONVERSION_ERROR,
    DEFAULT_CPU_EXTRA_S,
    DEFAULT_STACK_KB,
    JUDGE0_VERSION,
    MAX_BATCH,
    MAX_CPU_EXTRA_S,
    MAX_EXTRACT_KB,
    MAX_RUNS,
    MAX_STACK_KB,
    META_EVENT,
    META_EVENT_N,
    STATUSES,
    SYNC_WAIT_SLACK_S,
    compiler_option_languages,
    describe_language,
    judge0_languages,
    judge0_name,
    limit_bounds,
    unprocessable,
)
from app.gateway.judge0.parse import Submission, read_submission
from app.gateway.judge0.render import NotUtf8, query_flag, render, requested_fields
from app.gateway.service import Gateway
from app.messages import Event, Job, JobState
from app.web.errors import ApiError, json_response

bp = Blueprint("compat_judge0", __name__)
# Judge0 authenticates with X-Auth-Token; clients configured for it keep working when this
# deployment requires API keys (Authorization wins when both are sent).
TOKEN_HEADER = "X-Auth-Token"
# Which Judge0 attribute a validator refusal is about, for Judge0's per-attribute 422 body.
FIELD_OF_CODE = {
    "invalid_files": "additional_files",
    "invalid_args": "command_line_arguments",
    "invalid_compile_options": "compiler_options",
    "invalid_limits": "limits",
    "invalid_callback_url": "callback_url",
}
BATCH_TOO_LARGE = f"number of submissions in a batch should be less than or equal to {MAX_BATCH}"
BATCH_EMPTY = "there should be at least one submission in a batch"


# --- languages, statuses, configuration -------------------------------------------------------
@bp.get("/about")
async def about() -> Any:
    """Judge0's ``/about``; clients read ``version`` to pick their language-id table."""
    return jsonify(
        {
            "version": JUDGE0_VERSION,
            "homepage": request.host_url,
            "source_code": None,
            "maintainer": "runbox (Judge0 CE compatible API)",
        }
    )


@bp.get("/version")
async def version() -> Any:
    """Judge0's ``/version``: the version as plain text."""
    return Response(JUDGE0_VERSION, content_type="text/plain; charset=utf-8")


@bp.get("/statuses")
async def statuses() -> Any:
    """The fourteen Judge0 statuses."""
    return jsonify([{"id": sid, "description": name} for sid, name in STATUSES])


@bp.get("/languages")
async def languages() -> Any:
    """Active languages as ``[{id, name}]``."""
    langs = sorted(judge0_languages(gateway().registry).values(), key=judge0_name)
    return jsonify([{"id": lang.judge0_id, "name": judge0_name(lang)} for lang in langs])


@bp.get("/languages/all")
async def all_languages() -> Any:
    """Active and archived languages; none of ours is archived."""
    langs = sorted(judge0_languages(gateway().registry).values(), key=judge0_name)
    return jsonify([{"id": lang.judge0_id, "name": judge0_name(lang), "is_archived": False} for lang in langs])


@bp.get("/languages/<language_id>")
async def language(language_id: str) -> Any:
    """One language; 404 for an id this deployment does not run."""
    known = judge0_languages(gateway().registry)
    lang = known.get(int(language_id)) if language_id.isdecimal() else None
    if lang is None:
        raise ApiError(404, "not_found", f"language with id {language_id[:20]} doesn't exist")
    return jsonify(describe_language(lang))


@bp.get("/config_info")
async def config_info() -> Any:
    """Judge0's configuration document, describing what this deployment accepts."""
    gw = gateway()
    defaults, ceilings = limit_bounds(gw.registry)
    return jsonify(
        {
            "maintenance_mode": False,
            "enable_wait_result": True,
            "enable_compiler_options": True,
            "allowed_languages_for_compile_options": compiler_option_languages(gw.registry),
            "enable_command_line_arguments": True,
            "enable_submission_delete": False,
            "enable_callbacks": bool(gw.settings.callback_secret),
            "callbacks_max_tries": len(gw.settings.callback_delays()) + 1,
            "callbacks_timeout": float(gw.settings.callback_timeout_s),
            "enable_additional_files": True,
            "max_queue_size": gw.settings.queue_max_length,
            "cpu_time_limit": defaults.cpu_time_s,
            "max_cpu_time_limit": ceilings.cpu_time_s,
            "cpu_extra_time": DEFAULT_CPU_EXTRA_S,
            "max_cpu_extra_time": MAX_CPU_EXTRA_S,
            "wall_time_limit": defaults.timeout_s,
            "max_wall_time_limit": ceilings.timeout_s,
            "memory_limit": defaults.memory_mb * 1024,
            "max_memory_limit": ceilings.memory_mb * 1024,
            "stack_limit": DEFAULT_STACK_KB,
            "max_stack_limit": MAX_STACK_KB,
            "max_processes_and_or_threads": defaults.processes,
            "max_max_processes_and_or_threads": ceilings.processes,
            "enable_per_process_and_thread_time_limit": False,
            "allow_enable_per_process_and_thread_time_limit": False,
            "enable_per_process_and_thread_memory_limit": False,
            "allow_enable_per_process_and_thread_memory_limit": False,
            "max_file_size": defaults.file_size_kb,
            "max_max_file_size": ceilings.file_size_kb,
            "number_of_runs": 1,
            "max_number_of_runs": MAX_RUNS,
            "redirect_stderr_to_stdout": False,
            "max_extract_size": MAX_EXTRACT_KB,
            "enable_batched_submissions": True,
            "max_submission_batch_size": MAX_BATCH,
            "submission_cache_duration": 0.0,
            "use_docs_as_homepage": False,
            "allow_enable_network": False,
            "enable_network": False,
        }
    )




# --- submissions -------------------------------------------------------------------------------
async def prepare(gw: Gateway, identity: Identity, sub: Submission) -> Job | dict[str, list[str]]:
    """The validated job, or Judge0's per-attribute errors for what the validator refused."""
    try:
        return await gw.validator.check(sub.draft, identity)
    except ApiError as exc:
        if exc.status != 400:
            raise
        return {FIELD_OF_CODE.get(exc.code, "submission"): [exc.message]}


async def enqueue(gw: Gateway, job: Job, sub: Submission) -> None:
    """Publish the job with the submission's attributes stored beside it as an extra event."""
    meta = Event(job=job.id, name=META_EVENT, data={"submission": sub.meta}, n=META_EVENT_N)
    await gw.publisher.submit(job, "judge0", (meta,))


def sync_budget(gw: Gateway, job: Job, sub: Submission) -> float:
    """How long ``wait=true`` waits: the job's own time budget plus room to get an executor."""
    compile_step = sub.draft.language.compile
    run_time = job.limits.timeout_s
    if job.tests:  # number_of_runs > 1: every run, within the operator's ceiling
        run_time = min(gw.settings.judge_max_total_s, len(job.tests) * run_time)
    return run_time + (compile_step.timeout_s if compile_step else 0.0) + SYNC_WAIT_SLACK_S


@bp.post("/submissions")
async def create_submission() -> Any:
    """Create one submission; 201 with its token, or with its result when ``wait=true``."""
    gw = gateway()
    identity = gw.identify(token_header=TOKEN_HEADER)
    fields = requested_fields()
    encoded = query_flag("base64_encoded")
    wait = query_flag("wait")
    with gw.admission.submit(identity) as reservation:
        sub = read_submission(gw.registry, await gw.read_json(empty={}), encoded)
        if not isinstance(sub, Submission):
            raise unprocessable(sub)
        job = await prepare(gw, identity, sub)
        if not isinstance(job, Job):
            raise unprocessable(job)
        reservation.bind(job.id)
        await enqueue(gw, job, sub)
    headers = reservation.decision.headers()
    if not wait:
        return json_response(201, {"token": job.id}, headers)
    state = await gw.events.wait_terminal(job.id, sync_budget(gw, job, sub))
    record = await gw.events.record(job.id)
    if state is None:
        state = record.state if record else JobState(job.id, language=job.language, created_at=job.created_at)
    try:
        body = render(gw.registry, state, record, fields, encoded)
    except NotUtf8:
        body = {"token": job.id, "error": CONVERSION_ERROR}
    return json_response(201, body, headers)


@bp.post("/submissions/batch")
async def create_batch() -> Any:
    """Create up to 20 submissions; each answers ``{token}`` or its own validation errors.

    One token is taken before the body is read; once the batch is parsed, the rest of its
    tokens and all its job slots are taken at once, so the whole batch is admitted or
    refused up front and a client never loses track of submissions queued before a refusal.
    """
    gw = gateway()
    identity = gw.identify(token_header=TOKEN_HEADER)
    encoded = query_flag("base64_encoded")
    with gw.admission.submit(identity) as reservation:
        body = await gw.read_json(empty={})
        items = body.get("submissions") if isinstance(body, dict) else None
        count = len(items) if isinstance(items, list) else 0
        if count > MAX_BATCH:
            raise ApiError(400, "batch_too_large", BATCH_TOO_LARGE)
        if not isinstance(items, list) or count == 0:
            raise ApiError(400, "batch_empty", BATCH_EMPTY)
        parsed = [read_submission(gw.registry, item, encoded) for item in items]
        checked: list[Job | dict[str, list[str]]] = []
        for sub in parsed:
            checked.append(await prepare(gw, identity, sub) if isinstance(sub, Submission) else sub)
        valid = sum(isinstance(job, Job) for job in checked)
        if not valid:
            raise unprocessable(checked)
        if valid > 1:
            reservation.grow(valid - 1)
        pending = [(sub, job) for sub, job in zip(parsed, checked, strict=True)
                   if isinstance(job, Job) and isinstance(sub, Submission)]
        for _, job in pending:
            reservation.bind(job.id)
        # Published together: their confirms come back in one round trip or two, not two per
        # submission one after another (the official client gives up on a batch after 5 s).
        outcomes = dict(zip((job.id for _, job in pending),
                            await asyncio.gather(*(enqueue(gw, job, sub) for sub, job in pending),
                                                 return_exceptions=True), strict=True))
        for outcome in outcomes.values():
            if isinstance(outcome, BaseException) and not isinstance(outcome, ApiError):
                raise outcome
        refused = [o for o in outcomes.values() if isinstance(o, ApiError)]
        if len(refused) == len(outcomes) and refused[0].status >= 500:
            raise refused[0]  # nothing was queued: the whole batch is refused, as a single one would be
        answers: list[Any] = []
        for item in checked:
            if not isinstance(item, Job):
                answers.append(item)
                continue
            outcome = outcomes[item.id]
            answers.append({"error": outcome.message} if isinstance(outcome, ApiError) else {"token": item.id})
    return json_response(201, answers, reservation.decision.headers())


def tokens_asked() -> list[str]:
    raw = request.headers.get("tokens") or request.args.get("tokens", "")
    tokens = [token.strip() for token in raw.split(",") if token.strip()]
    if len(tokens) > MAX_BATCH:
        raise ApiError(400, "batch_too_large", BATCH_TOO_LARGE)
    if not tokens:
        raise ApiError(400, "batch_empty", BATCH_EMPTY)
    return tokens


@bp.get("/submissions/batch")
async def get_batch() -> Any:
    """Several submissions by ``tokens=a,b,c``; an unknown token answers null in its place."""
    gw = gateway()
    identity = gw.identify(reading=True, token_header=TOKEN_HEADER)
    fields = requested_fields()
    encoded = query_flag("base64_encoded")
    tokens = tokens_asked()
    gw.admission.read(identity, len(tokens))

    async def lookup(token: str) -> JobRecord | None:
        try:
            return await gw.lookup(token, fresh=True)
        except ApiError as exc:
            if exc.status not in (404, 410):
                raise
            return None

    # Looked up together, so the running ones share one catch-up with the stream.
    records = await asyncio.gather(*(lookup(token) for token in tokens))
    out: list[dict[str, Any] | None] = []
    for record in records:
        if record is None:
            out.append(None)
            continue
        try:
            out.append(render(gw.registry, record.state, record, fields, encoded))
        except NotUtf8:
            raise ApiError(
                400,
                "not_utf8",
                "some attributes for one or more submissions cannot be converted to UTF-8, "
                "use base64_encoded=true query parameter",
            ) from None
    return jsonify({"submissions": out})


@bp.get("/submissions/<token>")
async def get_submission(token: str) -> Any:
    """One submission by token; 404 for a token this deployment never issued."""
    gw = gateway()
    gw.reader(TOKEN_HEADER)
    fields = requested_fields()
    encoded = query_flag("base64_encoded")
    try:
        record = await gw.lookup(token, fresh=True)
    except ApiError as exc:
        if exc.status == 404:
            raise ApiError(404, "not_found", f"submission with token {token[:64]} doesn't exist") from None
        raise
    try:
        return jsonify(render(gw.registry, record.state, record, fields, encoded))
    except NotUtf8:
        raise ApiError(400, "not_utf8", CONVERSION_ERROR) from None


@bp.delete("/submissions/<token>")
async def delete_submission(token: str) -> Any:
    """Deleting is disabled (config_info says so), as on Judge0 hosts that do not allow it."""
    raise ApiError(400, "delete_not_allowed", "delete not allowed")
