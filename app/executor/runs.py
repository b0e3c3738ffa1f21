"""How many runs of a job really began, read back from the event stream.

RabbitMQ counts every time it hands a job out, also when it only put the job back because a
consumer's channel closed: each node of a cluster restarting in turn closes its connections,
and a job can be handed out five times in a minute without any executor running it. The
delivery limit that ends a job ``failed`` counts runs instead: a run begins with a
``started`` event in the stream, so the runs of a job are the distinct attempts that
published one. Only a job handed out more often than the limit allows is counted, so the
read is rare.
"""

from __future__ import annotations

import asyncio
import logging

from app.broker import Broker
from app.stream import StreamReader

log = logging.getLogger(__name__)


async def runs_begun(broker: Broker, reader: StreamReader, job_id: str, created: float, timeout: float) -> int:
    """The distinct attempts of ``job_id`` that published ``started``, up to a marker published now.

    A lower bound when the read does not reach the marker within ``timeout`` (a busy or
    failing broker): the job then runs again, which RabbitMQ's own return limit still bounds.
    """
    attempts: set[int] = set()
    try:
        async with asyncio.timeout(timeout):
            async for event in reader.until_now(broker, created):
                if event.job == job_id and event.name == "started":
                    attempts.add(event.attempt)
    except Exception as exc:  # counted so far is a lower bound (a timeout too): never a reason to fail a job
        log.warning("could not count a job's runs", extra={"job": job_id, "error": repr(exc)[:300]})
    return len(attempts)
