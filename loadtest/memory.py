"""Gateway memory under many large outputs, printed beside the configured bound (never pass/fail).

    python -m loadtest.memory [--jobs 10000] [--kib 64] [--cache-mb 64] [--concurrency 24]

Starts an executor and a separate gateway (the production shape, own queues, 127.0.0.1 only),
submits ``--jobs`` jobs that each print ``--kib`` KiB, waits for every one to end, reads each
result once through the gateway (so the gateway folds and serves all of them), and prints
the gateway's resident memory before and after beside ``RUNBOX_EVENTS_CACHE_MB``.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path

import httpx

from tests.runbox_client import Service

KEY = "memory-bench-key"
ENV = {
    "RUNBOX_LOG_LEVEL": "WARNING",
    "RUNBOX_LANGUAGES": "python",
    "RUNBOX_API_KEYS": f"bench:plain:{KEY}",
    "RUNBOX_TIERS": "bench=100000:100000:100000:1000",
    "RUNBOX_QUEUE_MAX_LENGTH": "100000",
}


def rss_mib(pid: int) -> float:
    """Resident memory of a process, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def run(url: str, jobs: int, kib: int, concurrency: int, pid: int) -> tuple[int, float]:
    """Submit ``jobs`` jobs (``concurrency`` at a time, each awaited to its end); (completed, seconds)."""
    source = f"import sys\nsys.stdout.write('x' * {kib * 1024})"
    body = {"language": "python", "source": source, "limits": {"output_kb": max(64, kib)}}
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(jobs):
        queue.put_nowait(i)
    done = 0
    began = time.monotonic()

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal done
        while not queue.empty():
            queue.get_nowait()
            answer = await client.post("/api/v1/jobs", json=body)
            if answer.status_code != 202:
                await asyncio.sleep(0.5)
                queue.put_nowait(0)
                continue
            job = answer.json()["id"]
            while True:
                state = (await client.get(f"/api/v1/jobs/{job}")).json()
                if state.get("status") not in ("queued", "running"):
                    break
                await asyncio.sleep(0.2)
            done += state.get("status") == "completed"
            if done and done % 1000 == 0:
                print(f"  {done} jobs done, {time.monotonic() - began:.0f} s, gateway RSS {rss_mib(pid):.1f} MiB",
                      flush=True)

    headers = {"Authorization": f"Bearer {KEY}"}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=120) as client:
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
    return done, time.monotonic() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--kib", type=int, default=64)
    parser.add_argument("--cache-mb", type=int, default=64)
    parser.add_argument("--concurrency", type=int, default=24)
    args = parser.parse_args()
    env = {**ENV, "RUNBOX_EVENTS_CACHE_MB": str(args.cache_mb)}
    executor = Service(roles="executor", RUNBOX_POOL_SIZE="6", RUNBOX_POOL_MAX="8", **env).start()
    gateway = Service(roles="gateway", prefix=executor.prefix, **env).start()
    try:
        assert gateway.proc is not None
        before = rss_mib(gateway.proc.pid)
        completed, seconds = asyncio.run(run(gateway.url, args.jobs, args.kib, args.concurrency, gateway.proc.pid))
        after = rss_mib(gateway.proc.pid)
        output_mib = args.jobs * args.kib / 1024
        print(f"jobs: {args.jobs} x {args.kib} KiB of stdout ({output_mib:.0f} MiB of output), "
              f"{completed} completed in {seconds:.0f} s")
        print(f"gateway RSS: {before:.1f} MiB at start, {after:.1f} MiB after; "
              f"configured history bound RUNBOX_EVENTS_CACHE_MB={args.cache_mb} MiB "
              f"(growth {after - before:.1f} MiB)")
    finally:
        gateway.stop()
        executor.stop()


if __name__ == "__main__":
    main()
