"""Locust load profile: submit a job and follow its SSE stream to the result, in a mix of languages.

    RUNBOX_API_KEY=KEY locust -f loadtest/locustfile.py --headless -u 20 -r 5 -t 1m --host http://127.0.0.1:8080

The profile sends ``RUNBOX_API_KEY`` (give it a key of a tier sized for the test) so that it
measures the service rather than the anonymous allowance; without it, it runs anonymously.
"""

from __future__ import annotations

import os
import random

from locust import HttpUser, between, task

JOBS = [
    {"language": "python", "source": "print('hello')"},
    {"language": "python", "source": "print(sum(i * i for i in range(10**5)))"},
    {"language": "bash", "source": "echo $((6 * 7))"},
    {"language": "javascript", "source": "console.log('hi')"},
]


class Submitter(HttpUser):
    """A client that submits a job, then reads its events until the result arrives."""

    wait_time = between(0.05, 0.5)

    def on_start(self) -> None:
        key = os.environ.get("RUNBOX_API_KEY", "")
        if key:
            self.client.headers["Authorization"] = f"Bearer {key}"

    @task
    def run_job(self) -> None:
        response = self.client.post("/api/v1/jobs", json=random.choice(JOBS), name="POST /api/v1/jobs")
        if response.status_code != 202:
            return
        job_id = response.json()["id"]
        with self.client.get(
            f"/api/v1/jobs/{job_id}/events", stream=True, name="GET /api/v1/jobs/[id]/events", catch_response=True
        ) as stream:
            for line in stream.iter_lines(decode_unicode=True):
                if line == "event: result":
                    stream.success()
                    return
            stream.failure("the stream ended without a result event")
