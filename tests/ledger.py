"""Load with a ledger, for the fault, cluster and soak runs: accepted, terminal, lost, duplicated, wrong.

Each submission prints a fresh nonce, so a result can be checked against what its own job
should print: a result with another job's output, a missing stdout event or a wrong status
counts as *wrong*; a job accepted with 202 that never reaches a terminal status through the
gateways is *lost*; a job whose event stream shows two results, repeated or missing event
ids, or on which the gateways disagree is *duplicated*. A load made with ``slow_ok`` (the soak,
on a machine other work also loads) counts apart, as *slow*, a job that ended ``timed_out``
after running its whole wall-time limit with nothing but the start of its own output: the
machine was too busy, not the answer wrong; anything else unexpected stays *wrong*. Also here:
waiting for ``/readyz`` to tell the truth again after a fault, and reading one figure from
``/metrics``.
"""

from __future__ import annotations

import collections
import random
import re
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from tests.runbox_client import Client, Service

DEFAULT_WALL_S = 5.0  # the contract's default wall-time limit


def nonce_job(rng: random.Random) -> tuple[dict[str, Any], str]:
    """A python job printing a fresh nonce, sometimes after a pause (so some run during a fault)."""
    nonce = secrets.token_hex(8)
    pause = rng.choice([0, 0, 0.3, 1.0])
    source = f"import time\ntime.sleep({pause})\nprint({nonce!r})"
    # A wall-time limit far above what the program needs: on a 2-core machine running a
    # three-node cluster and faults, a 5 s default can pass before a 1 s sleep is over.
    return {"language": "python", "source": source, "limits": {"timeout_s": 20}}, nonce + "\n"


@dataclass
class Summary:
    """The ledger's totals; ``clean`` when nothing was lost, duplicated or wrong."""

    submitted: int = 0
    accepted: int = 0
    refused: collections.Counter[str] = field(default_factory=collections.Counter)
    terminal: collections.Counter[str] = field(default_factory=collections.Counter)
    lost: int = 0
    duplicated: int = 0
    wrong: int = 0
    slow: int = 0  # only with Load(slow_ok=True): timed out at the full wall limit, output not wrong
    problems: list[str] = field(default_factory=list)
    slow_jobs: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return self.lost == 0 and self.duplicated == 0 and self.wrong == 0

    def line(self) -> str:
        refused = ", ".join(f"{n} {why}" for why, n in sorted(self.refused.items())) or "none"
        terminal = ", ".join(f"{n} {status}" for status, n in sorted(self.terminal.items()))
        return (
            f"submitted {self.submitted}, accepted {self.accepted} (refused: {refused}); terminal: {terminal}; "
            f"lost {self.lost}, duplicated {self.duplicated}, wrong {self.wrong}"
        )

    def problem(self, text: str) -> None:
        if len(self.problems) < 10:
            self.problems.append(text[:400])


class Load:
    """Clients submitting to every gateway in turn until stopped; remembers what each job must print."""

    def __init__(
        self,
        urls: Sequence[str],
        clients: int = 3,
        seed: int = 0,
        make: Callable[[random.Random], tuple[dict[str, Any], str | None]] = nonce_job,
        pause_s: tuple[float, float] = (0.05, 0.25),
        slow_ok: bool = False,
    ) -> None:
        self.urls = list(urls)
        self.clients = clients
        self.seed = seed
        self.make = make
        self.pause_s = pause_s
        self.slow_ok = slow_ok
        self.walls: dict[str, float] = {}  # job id: its wall-time limit in seconds
        self.summary = Summary()
        self.expected: dict[str, str | None] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> Load:
        for i in range(self.clients):
            thread = threading.Thread(target=self._submit, args=(self.seed * 100 + i,), daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(60)

    def _submit(self, seed: int) -> None:
        rng = random.Random(seed)
        with httpx.Client(timeout=15) as http:
            while not self._stop.is_set():
                body, expected = self.make(rng)
                url = rng.choice(self.urls)
                try:
                    response = http.post(url + "/api/v1/jobs", json=body)
                except httpx.HTTPError as exc:
                    self._note(None, None, f"connection error ({type(exc).__name__})")
                    time.sleep(0.2)
                    continue
                if response.status_code == 202:
                    self._note(response.json()["id"], expected, "",
                               float((body.get("limits") or {}).get("timeout_s", DEFAULT_WALL_S)))
                else:
                    try:
                        code = response.json()["error"]["code"]
                    except (ValueError, KeyError, TypeError):
                        code = "?"
                    self._note(None, None, f"{response.status_code} {code}")
                time.sleep(rng.uniform(*self.pause_s))

    def _note(self, job_id: str | None, expected: str | None, refused: str, wall_s: float = 0.0) -> None:
        with self._lock:
            self.summary.submitted += 1
            if job_id is not None:
                self.summary.accepted += 1
                self.expected[job_id] = expected
                self.walls[job_id] = wall_s
            else:
                self.summary.refused[refused] += 1

    def finish(self, gateways: Sequence[Service], fault: str, executors: int | None = None,
               also_ready: Sequence[Service] = (), timeout: float = 300) -> Summary:
        """Stop submitting; once every gateway (and ``also_ready``) is ready again, settle and check the ledger."""
        self.stop()
        wait_ready([*gateways, *also_ready], fault, executors=executors)
        summary = self.settle([g.url for g in gateways], timeout)
        print(f"ledger after {fault}: {summary.line()}")
        assert summary.accepted > 10, "too little load to show anything"
        assert summary.clean, summary.problems
        return summary

    def settle(self, urls: Sequence[str], timeout: float = 300) -> Summary:
        """Follow every accepted job to its end through each gateway and fill in the ledger."""
        end = time.monotonic() + timeout
        summary = self.summary
        clients = [Client(url) for url in urls]
        try:
            for i, (job_id, expected) in enumerate(list(self.expected.items())):
                wall_s = self.walls.get(job_id, 0.0) if self.slow_ok else None
                self._check(job_id, expected, clients[i % len(clients)], clients, end, summary, wall_s)
        finally:
            for client in clients:
                client.close()
        return summary

    @staticmethod
    def _check(job_id: str, expected: str | None, via: Client, every: list[Client], end: float,
               summary: Summary, slow_wall_s: float | None = None) -> None:
        try:
            events = via.events(job_id, timeout=max(5.0, end - time.monotonic()))
        except (httpx.HTTPError, AssertionError) as exc:
            summary.lost += 1
            summary.problem(f"lost {job_id} via {via.base_url}: {exc!r}")
            return
        results = [e for e in events if e.name == "result"]
        if not results:
            summary.lost += 1
            summary.problem(f"lost {job_id}: stream ended without a result")
            return
        final = results[-1].data
        summary.terminal[final["status"]] += 1
        ids = [e.id for e in events]
        if len(results) > 1 or ids != list(range(1, len(ids) + 1)):
            summary.duplicated += 1
            summary.problem(f"duplicated {job_id}: {len(results)} results, ids {ids}")
            return
        # Each gateway reads the event stream on its own: allow it a moment to catch up.
        statuses: dict[str, str] = {}
        for client in every:
            try:
                statuses[client.base_url] = client.wait_state(job_id, timeout=30)["status"]
            except AssertionError as exc:  # this gateway does not know the job
                statuses[client.base_url] = f"unknown ({str(exc)[:80]})"
        if set(statuses.values()) != {final["status"]}:
            summary.duplicated += 1
            summary.problem(f"gateways disagree on {job_id}: {statuses} vs {final['status']} via {via.base_url}")
            return
        if expected is None:
            return
        # The output of the attempt that produced the result: the last one that started (a
        # redelivered job's earlier attempts stream their output too, tagged with their number).
        started = [e.data.get("attempt") for e in events if e.name == "started"]
        attempt = final.get("attempt", started[-1] if started else None)
        streamed = "".join(
            e.data["data"] for e in events
            if e.name == "stdout" and (attempt is None or e.data.get("attempt") == attempt)
        )
        stdout = final.get("result", {}).get("stdout")
        duration_ms = final.get("result", {}).get("duration_ms") or 0
        if (slow_wall_s is not None and final["status"] == "timed_out" and duration_ms >= slow_wall_s * 1000
                and expected.startswith(stdout or "") and expected.startswith(streamed)):
            summary.slow += 1
            if len(summary.slow_jobs) < 10:
                summary.slow_jobs.append(f"slow {job_id} ({final.get('language')}): timed_out after {duration_ms} ms "
                                         f"(limit {slow_wall_s:g} s), stdout={stdout!r}")
            return
        if final["status"] != "completed" or stdout != expected or streamed != expected:
            summary.wrong += 1
            summary.problem(f"wrong {job_id} ({final.get('language')}): {final['status']} stdout={stdout!r} "
                            f"streamed={streamed!r} "
                            f"expected={expected!r} error={final.get('result', {}).get('error')!r}")


def readyz(svc: Service) -> httpx.Response:
    return httpx.get(svc.url + "/readyz", timeout=10)


def wait_ready(services: list[Service], what: str, timeout: float = 60, executors: int | None = None) -> float:
    """Wait until every service answers /readyz 200 (with ``executors`` counted); return how long it took."""
    began = time.monotonic()
    end = began + timeout
    last = ""
    while time.monotonic() < end:
        try:
            answers = [readyz(s) for s in services]
        except httpx.HTTPError as exc:  # a process still starting (or restarting) is not ready yet
            last = f"{exc!r}"
            time.sleep(0.2)
            continue
        last = "; ".join(f"{s.url}: {a.status_code} {a.text[:200]}" for s, a in zip(services, answers, strict=True))
        if all(a.status_code == 200 and (executors is None or a.json()["executors"] == executors) for a in answers):
            took = time.monotonic() - began
            print(f"ready after {what} in {took:.1f} s")
            return took
        time.sleep(0.2)
    raise AssertionError(f"not ready after {what} within {timeout} s: {last}")


def wait_unready(svc: Service, code: str, timeout: float = 60) -> dict[str, str]:
    end = time.monotonic() + timeout
    answer = readyz(svc)
    while time.monotonic() < end:
        answer = readyz(svc)
        if answer.status_code == 503 and answer.json()["error"]["code"] == code:
            return dict(answer.json()["error"])
        time.sleep(0.2)
    raise AssertionError(f"{svc.url} never reported {code}: {answer.status_code} {answer.text}")


def metric(svc: Service, name: str, labels: str = "") -> float:
    text = httpx.get(svc.url + "/metrics", timeout=10).text
    match = re.search(rf"^{re.escape(name)}{re.escape(labels)} (\S+)$", text, re.M)
    assert match, f"{name}{labels} not exported"
    return float(match.group(1))
