"""A job's messages keep their order on a real RabbitMQ when published without waiting.

The gateway and the executor publish a job's events as tasks they do not await one by one
(``JobRun.emit``, the ``queued`` event beside the job), over several confirmed channels. Only
one channel's order is RabbitMQ's promise, so the broker pins each job to one channel: this
reads the stream back and checks that every job's events are there once, in the order they
were published, while many jobs' publishes interleave over all the channels.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections import defaultdict

from app.broker import PUBLISH_CHANNELS, Broker
from app.config import Settings
from app.messages import Event
from app.metrics import Metrics
from app.stream import StreamReader
from tests.runbox_client import CREATED_PREFIXES

JOBS = 4 * PUBLISH_CHANNELS
EVENTS_PER_JOB = 26  # in batches of two


async def test_a_jobs_unawaited_publishes_reach_the_stream_in_order() -> None:
    prefix = f"test-{secrets.token_hex(4)}"
    CREATED_PREFIXES.add(prefix)
    settings = Settings(amqp_prefix=prefix)
    broker = Broker(settings, Metrics(), "gateway")
    began = time.time()
    await broker.connect(attempts=5)
    try:
        jobs = [f"order-{i}-{secrets.token_hex(4)}" for i in range(JOBS)]
        # Round-robin over the jobs, every publish a task started in order and none awaited
        # before the next begins, as under load; batches of two as JobRun's linger makes.
        tasks = []
        for n in range(1, EVENTS_PER_JOB + 1, 2):
            for job in jobs:
                batch = [Event(job=job, name="stdout", data={"data": "x"}, attempt=1, n=n + k) for k in range(2)]
                tasks.append(asyncio.create_task(broker.publish_events(batch)))
        await asyncio.gather(*tasks)
        seen: dict[str, list[int]] = defaultdict(list)
        async with asyncio.timeout(30):
            async for event in StreamReader(settings).until_now(broker, began):
                if event.job in jobs:
                    seen[event.job].append(event.n)
    finally:
        await broker.close()
    expected = list(range(1, EVENTS_PER_JOB + 1))
    disordered = {job: numbers for job, numbers in seen.items() if numbers != expected}
    assert set(seen) == set(jobs), f"{len(set(jobs) - set(seen))} jobs' events missing"
    example = next(iter(disordered.items()), None)
    assert not disordered, f"{len(disordered)} jobs' events out of order or repeated, e.g. {example}"
