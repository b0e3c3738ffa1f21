"""Callback deliveries: the task that travels through RabbitMQ, and the signature receivers check.

Whoever publishes a job's terminal event (an executor, or the dead-letter handler) also
publishes a :class:`CallbackTask` to the durable callbacks queue; gateways deliver it
(``app/gateway/callbacks.py``), since executors have no network path they should use. The
delivery id is the job's id, so every attempt and every duplicate of one callback carries the
same ``Runbox-Delivery``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import asdict, dataclass

from app.messages import Job

# How each API flavour reports a finished job: the v1 state is POSTed, Judge0 PUTs its submission.
METHODS = {"v1": "POST", "judge0": "PUT"}


@dataclass(frozen=True)
class CallbackTask:
    """One callback to deliver: where, how, and which renderer turns the job's state into the body."""

    delivery: str
    job: str
    url: str
    method: str = "POST"
    renderer: str = "v1"
    attempt: int = 1

    def encode(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":")).encode()

    @classmethod
    def decode(cls, body: bytes) -> CallbackTask:
        data = json.loads(body)
        return cls(
            delivery=str(data["delivery"]),
            job=str(data["job"]),
            url=str(data["url"]),
            method=str(data.get("method", "POST")),
            renderer=str(data.get("renderer", "v1")),
            attempt=int(data.get("attempt", 1)),
        )

    @classmethod
    def for_job(cls, job: Job) -> CallbackTask:
        renderer = job.callback_renderer or "v1"
        return cls(delivery=job.id, job=job.id, url=job.callback_url, method=METHODS.get(renderer, "POST"),
                   renderer=renderer)


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """The ``Runbox-Signature`` header: ``t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">``."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def verify(secret: str, header: str, body: bytes) -> bool:
    """Whether ``header`` is a valid signature of ``body`` (what a receiver does; used by tests)."""
    parts = dict(part.split("=", 1) for part in header.split(",") if "=" in part)
    try:
        timestamp = int(parts["t"])
    except (KeyError, ValueError):
        return False
    return hmac.compare_digest(signature(secret, timestamp, body), f"t={timestamp},v1={parts.get('v1', '')}")
