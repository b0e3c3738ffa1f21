"""The overload storm: many submissions at high concurrency, ``/healthz`` probed throughout.

    python -m loadtest.bench storm [--jobs 10000] [--concurrency 200] [--split]

Rate limits are lifted (a key of an unlimited tier), so what the deployment cannot absorb
must be refused by the service itself: the figures are how fast every submission is answered
(202 or 503 with ``Retry-After``), how many were shed, and how fast ``/healthz`` answered while
it happened. The probes come from a process of their own: probed from the load generator's
event loop, they would time its backlog of 200 clients rather than the gateway's answer.
Traffic goes to 127.0.0.1 only and the run is bounded by ``--jobs``. Afterwards
every accepted job is looked up until it is terminal (bounded wait) to count any lost.
"""

from __future__ import annotations

import asyncio
import http.client
import multiprocessing
import statistics
import time
import urllib.parse
from collections import Counter
from typing import Any

import aiohttp
import httpx

HELLO = {"language": "python", "source": "print('hello, world')"}
ENV = {"RUNBOX_POOL_SIZE": "6", "RUNBOX_POOL_MAX": "8"}
PROBE_INTERVAL_S = 0.05
FOLLOW_S = 900.0


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[max(0, min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1))))]


def probe_health(urls: list[str], stop: Any, out: Any) -> None:
    """Probe each URL's ``/healthz`` on a fresh connection every ``PROBE_INTERVAL_S`` until ``stop``.

    Sends the seconds each took, per URL. A fresh connection per probe, as an orchestrator's
    liveness check would make; a failed probe counts as infinitely slow. The standard
    library's client, as light as a kubelet's probe: ``httpx.get`` builds a client (and an SSL
    context) per call, 80 ms of the prober's own CPU that the figures counted as the gateway's.
    """
    health: dict[str, list[float]] = {url: [] for url in urls}
    while not stop.is_set():
        for url in urls:
            host, _, port = urllib.parse.urlsplit(url).netloc.rpartition(":")
            began = time.perf_counter()
            connection = http.client.HTTPConnection(host, int(port), timeout=30)
            try:
                connection.request("GET", "/healthz")
                response = connection.getresponse()
                response.read()
                ok = response.status == 200
            except OSError:
                ok = False
            finally:
                connection.close()
            health[url].append(time.perf_counter() - began if ok else float("inf"))
        time.sleep(PROBE_INTERVAL_S)
    out.send(health)


async def storm(url: str, jobs: int, concurrency: int, headers: dict[str, str], probe_url: str = "") -> dict[str, Any]:
    by_outcome: dict[str, list[float]] = {}
    outcomes: Counter[str] = Counter()
    accepted: list[str] = []
    left = jobs
    async def submitter(session: aiohttp.ClientSession) -> None:
        nonlocal left
        while left > 0:
            left -= 1
            began = time.perf_counter()
            try:
                async with session.post(url + "/api/v1/jobs", json=HELLO) as response:
                    body = await response.json(content_type=None)
                    retry_after = "Retry-After" in response.headers
                    status = response.status
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                outcomes[f"error {type(exc).__name__}"] += 1
                continue
            took = time.perf_counter() - began
            if status == 202:
                accepted.append(body["id"])
                outcome = "202"
            else:
                code = body.get("error", {}).get("code", "?")
                retry = "with Retry-After" if retry_after else "WITHOUT Retry-After"
                outcome = f"{status} {code} {retry}"
            outcomes[outcome] += 1
            by_outcome.setdefault(outcome, []).append(took)

    context = multiprocessing.get_context("spawn")
    stop = context.Event()
    receive, send = context.Pipe(duplex=False)
    probed = [url, probe_url] if probe_url else [url]
    prober = context.Process(target=probe_health, args=(probed, stop, send), daemon=True)
    prober.start()
    began = time.perf_counter()
    try:
        # aiohttp rather than httpx: at 200 connections httpx spent 11 to 17 ms of CPU per
        # request on two cores, so the figures timed the load generator's backlog, not the gateway.
        connector = aiohttp.TCPConnector(limit=concurrency)
        timeout = aiohttp.ClientTimeout(total=120)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout, headers=headers) as session:
            await asyncio.gather(*(submitter(session) for _ in range(concurrency)))
    finally:
        took = time.perf_counter() - began
        stop.set()
        health: dict[str, list[float]] = await asyncio.to_thread(receive.recv)
        prober.join(10)
    return {"by_outcome": by_outcome, "outcomes": outcomes, "accepted": accepted,
            "health": health, "seconds": took}


async def follow(url: str, ids: list[str], headers: dict[str, str], deadline_s: float) -> Counter[str]:
    """Look every accepted job up until it is terminal or the deadline passes; count by status."""
    end = time.monotonic() + deadline_s
    statuses: Counter[str] = Counter()
    pending = list(ids)
    async with httpx.AsyncClient(base_url=url, timeout=30, headers=headers) as client:
        while pending and time.monotonic() < end:
            still: list[str] = []
            for i in range(0, len(pending), 50):
                batch = pending[i:i + 50]
                states = await asyncio.gather(*(client.get(f"/api/v1/jobs/{j}") for j in batch),
                                              return_exceptions=True)
                for job_id, state in zip(batch, states, strict=True):
                    status = state.json().get("status") if isinstance(state, httpx.Response) else None
                    if status in (None, "queued", "running"):
                        still.append(job_id)
                    else:
                        statuses[str(status)] += 1
            pending = still
            if pending:
                await asyncio.sleep(2)
    statuses["not terminal by the deadline"] = len(pending)
    return statuses


def run(url: str, jobs: int, concurrency: int, headers: dict[str, str], probe_url: str = "") -> None:
    """Run the storm against ``url`` and print every figure beside its target.

    With ``probe_url`` (the gateway's RUNBOX_PROBE_PORT) its ``/healthz`` is probed too.
    """
    result = asyncio.run(storm(url, jobs, concurrency, headers, probe_url))
    answers = [a * 1000 for took in result["by_outcome"].values() for a in took]
    print(f"\noverload storm: {jobs} submissions at {concurrency} concurrent in {result['seconds']:.1f} s")
    for outcome, count in sorted(result["outcomes"].items()):
        took = [a * 1000 for a in result["by_outcome"].get(outcome, [])]
        print(f"  {outcome:<48} {count:6}   answered p50 {pct(took, 50):8.1f} ms  p99 {pct(took, 99):8.1f} ms")
    print(f"POST answered     p50 {pct(answers, 50):8.1f} ms  p99 {pct(answers, 99):8.1f} ms  "
          f"max {max(answers, default=float('nan')):8.1f} ms  mean {statistics.fmean(answers or [0]):.1f}"
          f"   (target p99 <= 1000 ms)")
    for probed, seconds in result["health"].items():
        health = [h * 1000 for h in seconds]
        where = "probe port" if probed == probe_url else "main port"
        print(f"/healthz, {where} ({len(health)} probes) p50 {pct(health, 50):8.1f} ms  p99 {pct(health, 99):8.1f} ms  "
              f"max {max(health, default=float('nan')):8.1f} ms   (target p99 <= 100 ms)")
    shed = sum(n for k, n in result["outcomes"].items() if k.startswith("503") and "with Retry-After" in k)
    print(f"shed with 503 + Retry-After: {shed}; accepted: {len(result['accepted'])}")
    statuses = asyncio.run(follow(url, result["accepted"], headers, FOLLOW_S))
    print("accepted jobs by final status: " + ", ".join(f"{k} {v}" for k, v in sorted(statuses.items())))
