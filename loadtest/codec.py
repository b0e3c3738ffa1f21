"""The JSON work of one hello-world job in the gateway and the executor, two ways in one run.

Every message a job makes, encoded and decoded where the service does: the gateway encodes
the job and its ``queued`` event, reads back the ``queued`` event and the executor's one
message of ``started``, output and ``result``, and writes three SSE frames; the executor
decodes the job, encodes its events, sends the agent its job and reads the agent's reports.
The floor is the standard library as runbox used it before ``app.jsoncodec``
(``dataclasses.asdict``, then ``json.dumps``; ``json.loads``). CPU time of this process,
median and best of several rounds::

    python -m loadtest.codec [--rounds 7] [--jobs 5000]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time
from collections.abc import Callable
from typing import Any

from app import jsoncodec
from app.languages import Limits
from app.messages import Event, Job

Codec = tuple[Callable[[Any], bytes], Callable[[bytes], Any]]


def _std_dumps(value: Any) -> bytes:
    plain = dataclasses.asdict(value) if dataclasses.is_dataclass(value) and not isinstance(value, type) else value
    return json.dumps(plain, separators=(",", ":")).encode()


STDLIB: Codec = (_std_dumps, json.loads)
ORJSON: Codec = (jsoncodec.dumps, jsoncodec.loads)


def one_job(codec: Codec) -> Callable[[], None]:
    """A closure doing one job's encodes and decodes with ``codec``."""
    dumps, loads = codec
    now = time.time()
    job = Job(id="j_0123456789abcdef", language="python", source='print("hello, world")\n', limits=Limits(),
              identity="key:0123456789ab", created_at=now)
    queued = Event(job=job.id, name="queued", data={"language": "python", "created_at": now,
                                                    "identity": job.identity, "interactive": False})
    result = {"status": "completed", "exit_code": 0, "signal": None, "stdout": "hello, world\n", "stderr": "",
              "compile_output": None, "duration_ms": 3, "cpu_ms": 2, "memory_peak_kb": 9120,
              "truncated": {"stdout": False, "stderr": False}}
    events = [Event(job=job.id, name="started", data={"started_at": now}, attempt=1, n=1),
              Event(job=job.id, name="stdout", data={"data": "hello, world\n"}, attempt=1, n=2),
              Event(job=job.id, name="result", data=result, attempt=1, n=3)]
    agent_job = {"id": job.id, "token": "0" * 32, "auth": "1" * 32, "next": "2" * 32,
                 "files": [{"name": "main.py", "content": job.source}],
                 "steps": [{"name": "run", "argv": ["python3", "main.py"], "limits": dataclasses.asdict(job.limits),
                            "stream": True, "warm": ["python3", "/opt/runbox/warm/python.py"]}]}
    reports = [dumps({"t": "out", "k": "0" * 32, "s": "stdout", "d": "hello, world\n"}),
               dumps({"t": "step", "k": "0" * 32, "status": "exited", "exit_code": 0, "cpu_ms": 2, "rss_kb": 9120}),
               dumps({"t": "done", "k": "0" * 32, "status": "completed"}),
               dumps({"t": "ready", "clean": True, "detail": None})]
    public = {"id": job.id, "status": "completed", "language": "python", "created_at": "2026-12-02T18:00:00.000Z",
              "result": result}

    def run() -> None:
        # gateway: the job and its queued event out, both back from the stream, SSE frames
        body = dumps(job)
        loads(dumps(queued))
        loads(b"[" + b",".join(dumps(e) for e in events) + b"]")
        for data in ({"id": job.id, "status": "queued"}, {"attempt": 1, "started_at": "x"}, public):
            dumps(data)
        # executor: the job in, its events out (counted above), the agent's job out and reports in
        loads(body)
        dumps(agent_job)
        for line in reports:
            loads(line)

    return run


def rounds(work: Callable[[], None], jobs: int, count: int) -> list[float]:
    """Microseconds of CPU per job in each of ``count`` rounds of ``jobs`` jobs."""
    for _ in range(jobs // 10):
        work()
    out = []
    for _ in range(count):
        began = time.process_time()
        for _ in range(jobs):
            work()
        out.append((time.process_time() - began) / jobs * 1e6)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m loadtest.codec")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--jobs", type=int, default=5000)
    args = parser.parse_args()
    # Interleaved, so that a change in the host's speed falls on both alike.
    floor: list[float] = []
    ours: list[float] = []
    for _ in range(args.rounds):
        floor += rounds(one_job(STDLIB), args.jobs, 1)
        ours += rounds(one_job(ORJSON), args.jobs, 1)
    print(f"JSON work of one hello-world job (gateway and executor), {args.rounds} rounds of {args.jobs} jobs")
    print(f"floor: json + dataclasses.asdict  median {statistics.median(floor):7.1f} us  best {min(floor):7.1f} us")
    print(f"app.jsoncodec (orjson)            median {statistics.median(ours):7.1f} us  best {min(ours):7.1f} us")
    print(f"saved per job                     {statistics.median(floor) - statistics.median(ours):7.1f} us"
          f"   (ratio {statistics.median(ours) / statistics.median(floor):.2f})")


if __name__ == "__main__":
    main()
