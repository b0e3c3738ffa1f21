"""The abuse suite: hostile requests against a real runbox service, each checked the same way.

One gateway+executor process (python only, small allowances so every cap is reachable) serves
the whole suite. :class:`Target` checks what the contract promises for every hostile
request: a 4xx in the flavour's error shape, the refusal counted in
``runbox_rejections_total{reason}``, no job queued (``runbox_jobs_submitted_total``
unchanged) and ``/healthz`` answering meanwhile.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.runbox_client import Service

KEY = "abuse-key"
BURST_KEY = "abuse-burst-key"  # a generous rate but three jobs at a time: bursts meet the jobs cap
METRICS_TOKEN = "abuse-metrics-token"
ENV = {
    "RUNBOX_LANGUAGES": "python",
    "RUNBOX_POOL_SIZE": "1",
    "RUNBOX_POOL_MAX": "2",
    "RUNBOX_ANONYMOUS_RATE_PER_S": "50",
    "RUNBOX_ANONYMOUS_BURST": "200",
    "RUNBOX_ANONYMOUS_MAX_CONCURRENT": "3",
    "RUNBOX_ANONYMOUS_MAX_STREAMS": "4",
    "RUNBOX_READ_RATE_FACTOR": "2",
    "RUNBOX_API_KEYS": f"standard:plain:{KEY},burst:plain:{BURST_KEY}",
    "RUNBOX_TIERS": "standard=1:2:4:4,burst=100:100:3:8",
    "RUNBOX_BODY_TIMEOUT_S": "2",
    "RUNBOX_MAX_BODY_KB": "256",
    "RUNBOX_CALLBACK_SECRET": "abuse-callback-secret",  # callbacks on, so their address policy is what refuses
    # Only a token may read the metrics here, so the refusal of anonymous scrapes is testable.
    "RUNBOX_METRICS_ALLOW_CIDRS": "192.0.2.0/24",
    "RUNBOX_METRICS_TOKEN": METRICS_TOKEN,
}


@dataclass
class Target:
    service: Service

    @property
    def url(self) -> str:
        return self.service.url

    def http(self, **headers: str) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)

    def metrics(self) -> str:
        return httpx.get(self.url + "/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}, timeout=10).text

    def counter(self, name: str, label: str | None = None) -> float:
        pattern = rf'^{name}\{{{label}\}} (\S+)$' if label else rf'^{name}(?:\{{[^}}]*\}})? (\S+)$'
        return sum(float(v) for v in re.findall(pattern, self.metrics(), re.M))

    def rejections(self, reason: str) -> float:
        return self.counter("runbox_rejections_total", f'reason="{reason}"')

    def submitted(self) -> float:
        return self.counter("runbox_jobs_submitted_total")

    def refused(
        self, attack: Callable[[], list[httpx.Response]], reason: str, shape: str = "v1", status: int | None = None
    ) -> list[httpx.Response]:
        """Run ``attack`` while probing /healthz; check every answer is a counted 4xx, nothing queued."""
        before_jobs, before = self.submitted(), self.rejections(reason)
        health: list[int] = []
        stop = threading.Event()

        def probe() -> None:
            while not stop.is_set():
                health.append(httpx.get(self.url + "/healthz", timeout=5).status_code)
                stop.wait(0.05)

        prober = threading.Thread(target=probe)
        prober.start()
        try:
            answers = attack()
        finally:
            stop.set()
            prober.join()
        assert answers
        for answer in answers:
            assert 400 <= answer.status_code < 500, answer.text[:300]
            if status is not None:
                assert answer.status_code == status, answer.text[:300]
            check_shape(answer, shape)
        assert self.rejections(reason) - before >= len(answers), reason
        assert self.submitted() == before_jobs, "a refused request queued a job"
        assert health and all(code == 200 for code in health), health
        return answers


def check_shape(answer: httpx.Response, shape: str) -> None:
    """The flavour's error body: v1 ``{"error": {code, message}}``, Piston ``{"message"}``, Judge0 ``{"error"}``."""
    body: Any = answer.json()
    if shape == "v1":
        assert set(body) == {"error"} and isinstance(body["error"]["code"], str), body
        assert isinstance(body["error"]["message"], str) and len(body["error"]["message"]) > 10, body
    elif shape == "piston":
        assert set(body) == {"message"} and isinstance(body["message"], str), body
    elif shape == "judge0":
        assert isinstance(body, dict | list) and body, body
        if isinstance(body, dict) and "error" in body:
            assert isinstance(body["error"], str)
    else:
        raise AssertionError(shape)


@pytest.fixture(scope="session")
def target(real_stack: None) -> Iterator[Target]:
    svc = Service(**ENV).start()
    yield Target(svc)
    svc.stop()
