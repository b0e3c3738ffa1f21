"""Judge0's listing and information endpoints: ``GET /submissions``, ``/statistics``,
``/workers``, ``/system_info``, ``/authenticate`` and ``/authorize``.

Judge0 answers these from its database and its Resque workers; runbox has neither, so each
is answered from what a gateway does hold, and says so (README, "Judge0 compatibility"):

- ``GET /submissions`` lists the submissions of the caller's API key (anonymous callers get
  403) that this gateway's event cache still holds (every gateway tails the whole event
  stream into a bounded cache), newest first, with Judge0's ``page``/``per_page`` and
  ``meta``. Judge0 lets only an authorized administrator list every submission; runbox has no
  such role, so nobody sees others' code.
- ``/statistics`` counts the jobs in that cache (all APIs), by day, language and status.
- ``/workers`` has one row per language queue: its backlog and its consumers (executors)
  from RabbitMQ, as ``/readyz`` reads them, and the jobs the cache shows running.
- ``/system_info`` describes the machine of the gateway that answers (not the executors').
"""

from __future__ import annotations

import asyncio
import os
import platform
import re
import sys
import time
from collections import Counter
from typing import Any

from quart import Response, jsonify, request

from app.events import JobRecord
from app.gateway import gateway
from app.gateway.judge0.contract import META_EVENT, STATUS_NAMES, judge0_languages, judge0_name
from app.gateway.judge0.render import (
    NotUtf8,
    query_flag,
    render,
    requested_fields,
    runs_view,
    stored_meta,
    verdict,
)
from app.gateway.judge0.routes import TOKEN_HEADER, bp
from app.gateway.output import result_of
from app.languages import Registry
from app.web.errors import ApiError
from app.web.health import queue_stats

DEFAULT_PER_PAGE = 20  # Judge0's Submission.per_page
MAX_PER_PAGE = 100  # a page is rendered in one request: bound the work
STATS_DAYS = 30
# Listing and statistics walk this gateway's whole cache: they cost a read token per this many
# jobs walked, up to a cap that stays within every tier's read burst.
RECORDS_PER_TOKEN = 1000
MAX_SCAN_COST = 20
LIST_NOT_UTF8 = (
    "some attributes for one or more submissions cannot be converted to UTF-8, use base64_encoded=true query parameter"
)


def ruby_int(raw: str | None, default: int) -> int:
    """A query parameter read the way Rails' ``to_i`` reads it: leading digits, else 0."""
    if raw is None:
        return default
    match = re.match(r"\s*([-+]?\d+)", raw)
    return int(match.group(1)) if match else 0


def scan_cost(records: int) -> int:
    """Read tokens a request reading ``records`` cached jobs costs: a whole cache is not free to scan."""
    return min(MAX_SCAN_COST, 1 + records // RECORDS_PER_TOKEN)


def newest_first(records: list[JobRecord]) -> list[JobRecord]:
    """Judge0 orders submissions by creation time, newest first."""
    return sorted(records, key=lambda record: record.state.created_at or 0.0, reverse=True)


@bp.get("/submissions")
async def list_submissions() -> Any:
    """The caller's Judge0 submissions still held by this gateway, paginated as Judge0 pages them."""
    gw = gateway()
    identity = gw.identify(token_header=TOKEN_HEADER)
    if identity.anonymous:
        # An address is no proof of authorship (NAT, proxies): only a key's own submissions
        # are listed. Judge0 likewise answers 403 to a caller it has not authorized.
        raise ApiError(403, "forbidden", "listing submissions needs an API key (X-Auth-Token)")
    fields = requested_fields()
    encoded = query_flag("base64_encoded")
    page = ruby_int(request.args.get("page"), 1)
    per_page = ruby_int(request.args.get("per_page"), DEFAULT_PER_PAGE)
    if page <= 0:
        raise ApiError(400, "invalid_page", f"invalid page: {page}")
    if per_page < 0:
        raise ApiError(400, "invalid_per_page", f"invalid per_page: {per_page}")
    per_page = min(per_page, MAX_PER_PAGE)
    mine = newest_first([
        record for record in gw.events.records()
        if record.complete and record.state.identity == identity.tag and META_EVENT in record.extra
    ])
    total = len(mine)
    pages = -(-total // per_page) if per_page else 0
    chosen = mine[(page - 1) * per_page: page * per_page] if per_page else []
    gw.admission.read(identity, max(len(chosen), scan_cost(len(mine))))
    try:
        submissions = [render(gw.registry, record.state, record, fields, encoded) for record in chosen]
    except NotUtf8:
        raise ApiError(400, "not_utf8", LIST_NOT_UTF8) from None
    meta = {
        "current_page": page,
        "next_page": page + 1 if page < pages else None,
        "prev_page": page - 1 if page > 1 else None,
        "total_pages": pages,
        "total_count": total,
    }
    return jsonify({"submissions": submissions, "meta": meta})


@bp.get("/statistics")
async def statistics() -> Any:
    """Counts of the jobs this gateway's event cache holds, in Judge0's shape."""
    gw = gateway()
    records = [record for record in gw.events.records() if record.complete]
    gw.admission.read(gw.identify(reading=True, token_header=TOKEN_HEADER), scan_cost(len(records)))
    days: Counter[str] = Counter()
    languages: Counter[int] = Counter()
    statuses: Counter[int] = Counter()
    names: dict[int, str] = {}
    for record in records:
        state = record.state
        if state.created_at:
            days[time.strftime("%Y-%m-%d", time.gmtime(state.created_at))] += 1
        lang = gw.registry.get(state.language) if state.language else None
        meta = stored_meta(record)
        language_id = meta.get("language_id") or (lang.judge0_id if lang else 0)
        if language_id and lang is not None:
            languages[language_id] += 1
            names.setdefault(language_id, judge0_name(lang))
        once = runs_view(state, meta)
        status_id, _ = verdict(once, record, meta, result_of(once).stdout)
        statuses[status_id] += 1
    today = time.strftime("%Y-%m-%d", time.gmtime())
    recent = {
        day: days.get(day, 0)
        for day in (time.strftime("%Y-%m-%d", time.gmtime(time.time() - n * 86400)) for n in range(STATS_DAYS))
    }
    return jsonify(
        {
            "now": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "submissions": {"total": len(records), "today": days.get(today, 0), "last_30_days": recent},
            "languages": [
                {"language": {"id": lid, "name": names[lid]}, "count": count}
                for lid, count in languages.most_common()
            ],
            "statuses": [
                {"status": {"id": sid, "name": STATUS_NAMES[sid]}, "count": count}
                for sid, count in statuses.most_common()
            ],
            "database": {"size_pretty": f"{gw.events.cached_bytes // 1024} kB",
                         "size_in_bytes": gw.events.cached_bytes},
        }
    )


def unit_key(registry: Registry, record: JobRecord) -> str:
    """The unit (queue) a job went to: by its Judge0 id when it has one, else its language's default."""
    language_id = stored_meta(record).get("language_id")
    lang = judge0_languages(registry).get(language_id) if isinstance(language_id, int) else None
    lang = lang or registry.get(record.state.language)
    return lang.key if lang is not None else ""


@bp.get("/workers")
async def workers() -> Any:
    """One row per language queue: backlog and executors from RabbitMQ, running jobs from the cache."""
    gw = gateway()
    gw.reader(TOKEN_HEADER)
    try:
        stats = await asyncio.wait_for(queue_stats(), 3)
    except Exception:  # unreachable, timed out or a channel error: the figures are unknown
        raise ApiError(503, "broker_unavailable", "RabbitMQ did not answer; try again shortly.",
                       {"Retry-After": str(gw.settings.retry_after_s)}, reason="busy") from None
    running: Counter[str] = Counter(
        unit_key(gw.registry, record) for record in gw.events.records() if record.state.status == "running"
    )
    rows = []
    for key, stat in stats.items():
        working = min(stat.consumers, running.get(key, 0))
        rows.append({
            "queue": key,
            "size": stat.messages,
            "available": stat.consumers,
            "idle": stat.consumers - working,
            "working": working,
            "paused": 0,
            "failed": 0,
        })
    return jsonify(rows)


def meminfo() -> dict[str, int]:
    """``/proc/meminfo`` in kB, by field; empty where there is none."""
    out: dict[str, int] = {}
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                name, _, rest = line.partition(":")
                number = rest.split()
                if number and number[0].isdecimal():
                    out[name] = int(number[0])
    except OSError:
        return {}
    return out


def cpu_model() -> str:
    """The first ``model name`` of ``/proc/cpuinfo``, as lscpu shows it."""
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def gibibytes(kb: int) -> str:
    """A size as ``free -h`` prints it, e.g. ``23Gi``."""
    return f"{kb / 1024 / 1024:.1f}Gi" if kb >= 1024 * 1024 else f"{kb // 1024}Mi"


@bp.get("/system_info")
async def system_info() -> Any:
    """lscpu-style facts about the answering gateway's machine, with ``Mem`` and ``Swap`` as Judge0 adds."""
    gateway().reader(TOKEN_HEADER)
    memory = meminfo()
    return jsonify(
        {
            "Architecture": platform.machine(),
            "Byte Order": "Little Endian" if sys.byteorder == "little" else "Big Endian",
            "CPU(s)": str(os.cpu_count() or 0),
            "Model name": cpu_model(),
            "Operating System": platform.system(),
            "Kernel": platform.release(),
            "Mem": gibibytes(memory.get("MemTotal", 0)),
            "Swap": gibibytes(memory.get("SwapTotal", 0)),
        }
    )


@bp.post("/authenticate")
async def authenticate() -> Any:
    """200 when the ``X-Auth-Token`` (header or parameter) is accepted, 401 otherwise; as Judge0."""
    gateway().identify(token_header=TOKEN_HEADER)
    return Response(status=200)


@bp.post("/authorize")
async def authorize() -> Any:
    """Judge0's administrator check: runbox has no administrator token, so 403 like Judge0 without one."""
    gateway().identify(token_header=TOKEN_HEADER)
    raise ApiError(403, "forbidden", "authorization is not configured on this server")
