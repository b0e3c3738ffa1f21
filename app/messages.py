"""What travels over RabbitMQ: jobs to executors, events back to every gateway.

Job ids carry their creation time (milliseconds, hex) ahead of a random part, so any
gateway can find a job's events in the event stream by time alone, without a lookup table;
check digits keyed by the deployment (``Settings.job_id_key``) end the id, so an id no
gateway issued is refused without reading anything.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from app import jsoncodec
from app.languages import Limits
from app.result import Result

TERMINAL_STATUSES = (
    "completed",
    "timed_out",
    "memory_exceeded",
    "output_exceeded",
    "compile_error",
    "failed",
)
STATUSES = ("queued", "running", *TERMINAL_STATUSES)
EVENT_NAMES = ("queued", "started", "stdout", "stderr", "compile", "test", "result")
# Internal events never shown to clients: a job whose publish was refused after its
# "queued" event went out, and a marker a reader publishes to know it has read to the end.
DISCARDED = "discarded"
MARKER = "marker"
# Job ids carry the submitting gateway's clock, the stream's timestamps the broker's: a job's
# "queued" event is appended within this long of the time in its id.
ID_CLOCK_SLACK_S = 2.0


JOB_ID_LENGTH = 32
_TIME_HEX, _RANDOM_HEX, _CHECK_HEX = 12, 14, 6


def _check_digits(stem: str, key: bytes) -> str:
    return hmac.new(key, stem.encode(), hashlib.sha256).hexdigest()[:_CHECK_HEX]


def new_job_id(now: float | None = None, key: bytes = b"") -> str:
    """A 32-character id: 12 hex digits of milliseconds, 14 random ones, 6 check digits keyed by ``key``.

    The check digits let a gateway refuse an id it never issued without reading anything.
    """
    millis = int((time.time() if now is None else now) * 1000)
    stem = f"{millis:012x}{secrets.token_hex(_RANDOM_HEX // 2)}"
    return stem + _check_digits(stem, key)


def job_id_time(job_id: str) -> float | None:
    """The creation time embedded in a job id, or None when the id is not shaped like one of ours."""
    if len(job_id) != JOB_ID_LENGTH or job_id.strip("0123456789abcdef"):
        return None
    return int(job_id[:_TIME_HEX], 16) / 1000


def job_id_valid(job_id: str, key: bytes = b"") -> bool:
    """Whether ``job_id`` is well formed and its check digits match ``key`` (constant time)."""
    if job_id_time(job_id) is None:
        return False
    stem, check = job_id[:-_CHECK_HEX], job_id[-_CHECK_HEX:]
    return hmac.compare_digest(check, _check_digits(stem, key))


@dataclass(frozen=True)
class SourceFile:
    name: str
    content: str


@dataclass(frozen=True)
class TestCase:
    """One judged run: the program's stdin and the stdout it must print."""

    stdin: str = ""
    expected_stdout: str = ""


@dataclass(frozen=True)
class Job:
    """A request to run code, as published to a language's queue.

    ``tests`` makes it a judged job (built once, run per case); ``interactive`` keeps stdin
    open for data sent later; ``callback_url`` is told the terminal state by the gateway side.
    """

    id: str
    language: str
    source: str
    limits: Limits
    files: tuple[SourceFile, ...] = ()
    stdin: str = ""
    args: tuple[str, ...] = ()
    identity: str = ""
    created_at: float = 0.0
    version: str = ""
    tests: tuple[TestCase, ...] = ()
    interactive: bool = False
    callback_url: str = ""
    callback_renderer: str = ""  # "" or "v1": the v1 job state; "judge0": the Judge0 submission
    compile_options: tuple[str, ...] = ()  # appended to the compile command
    stack_kb: int = 0  # the run step's stack limit (RLIMIT_STACK); 0: the sandbox's default
    # Tighter limits for the compile step (``timeout_s``, ``cpu_time_s``, ``memory_mb``), each
    # within the language's compile step; absent ones are the step's own (Piston's compile_*).
    compile_limits: dict[str, float] = field(default_factory=dict)

    def encode(self) -> bytes:
        return jsoncodec.dumps(self)

    @classmethod
    def decode(cls, body: bytes) -> Job:
        data = jsoncodec.loads(body)
        return cls(
            id=data["id"],
            language=data["language"],
            source=data["source"],
            limits=Limits.from_dict(data["limits"]),
            files=tuple(SourceFile(**f) for f in data.get("files", ())),
            stdin=data.get("stdin", ""),
            args=tuple(data.get("args", ())),
            identity=data.get("identity", ""),
            created_at=data.get("created_at", 0.0),
            version=data.get("version", ""),
            tests=tuple(TestCase(**t) for t in data.get("tests", ())),
            interactive=bool(data.get("interactive", False)),
            callback_url=data.get("callback_url", ""),
            callback_renderer=data.get("callback_renderer", ""),
            compile_options=tuple(data.get("compile_options", ())),
            stack_kb=int(data.get("stack_kb", 0)),
            compile_limits=dict(data.get("compile_limits") or {}),
        )


@dataclass(frozen=True)
class Event:
    """One entry of a job's event log.

    ``attempt`` is the delivery attempt that produced it (0 for the gateway's own events) and
    ``n`` its position within that attempt; together they make the event's identity, so a
    reader drops the copies a publisher retry may leave.
    """

    job: str
    name: str
    data: dict[str, Any]
    attempt: int = 0
    n: int = 0
    ts: float = field(default_factory=time.time)

    @property
    def key(self) -> tuple[int, int]:
        return (self.attempt, self.n)

    def encode(self) -> bytes:
        return jsoncodec.dumps(self)

    @classmethod
    def decode(cls, body: bytes) -> Event:
        return cls(**jsoncodec.loads(body))

    @classmethod
    def decode_many(cls, body: bytes) -> list[Event]:
        """The events of one stream message: one object, or a list of them published together."""
        data = jsoncodec.loads(body)
        return [cls(**item) for item in data] if isinstance(data, list) else [cls(**data)]


def new_marker() -> Event:
    """A marker event of a fresh token: appended to the stream, it tells a reader it has read that far."""
    return Event(job="marker:" + secrets.token_hex(8), name=MARKER, data={})


def terminal_state(
    job: Job, status: str, result: Result, started_at: float | None, finished_at: float
) -> dict[str, Any]:
    """The data of a job's terminal ``result`` event: its status, times and typed result."""
    return {
        "id": job.id,
        "language": job.language,
        "status": status,
        "created_at": job.created_at,
        "started_at": started_at,
        "finished_at": finished_at,
        "result": result.to_dict(),
    }


def failed_state(job: Job, error: str) -> dict[str, Any]:
    """The terminal state of a job the system could not run."""
    return terminal_state(job, "failed", Result(error=error), None, time.time())


@dataclass
class JobState:
    """A job's state as folded from its events; what ``GET /api/v1/jobs/{id}`` answers."""

    id: str
    language: str = ""
    status: str = "queued"
    created_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    result: Result | None = None
    identity: str = ""
    attempt: int = 0
    interactive: bool = False

    def apply(self, event: Event) -> None:
        if self.status in TERMINAL_STATUSES:
            return
        if event.name == "queued":
            self.language = event.data.get("language", self.language)
            self.created_at = event.data.get("created_at", event.ts)
            self.identity = event.data.get("identity", "")
            self.interactive = bool(event.data.get("interactive"))
        elif event.name == "started":
            self.status = "running"
            self.started_at = event.data.get("started_at", event.ts)
            self.attempt = event.attempt
        elif event.name == "result":
            self.status = event.data["status"]
            self.started_at = event.data.get("started_at") or self.started_at
            self.finished_at = event.data.get("finished_at", event.ts)
            self.result = Result.from_dict(event.data.get("result"))

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "language": self.language,
            "status": self.status,
            "created_at": iso_time(self.created_at),
            "started_at": iso_time(self.started_at),
            "finished_at": iso_time(self.finished_at),
            "result": self.result.to_dict() if self.result is not None else None,
        }


def iso_time(ts: float | None) -> str | None:
    """A Unix time as an ISO 8601 UTC string with milliseconds."""
    if ts is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts * 1000) % 1000:03d}Z"
