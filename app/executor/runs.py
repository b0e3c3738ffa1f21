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
import datetime as dt
import logging
import secrets

from app.broker import Broker
from app.messages import MARKER, Event
from app.stream import StreamReader

log = logging.getLogger(__name__)

# Job ids carry the submitting gateway's clock; the stream's timestamps the broker's.
CLOCK_SLACK_S = 2.0


async def runs_begun(broker: Broker, reader: StreamReader, job_id: str, created: float, timeout: float) -> int:
    """The distinct attempts of ``job_id`` that published ``started``, up to a marker published now.

    A lower bound when the read does not reach the marker within ``timeout`` (a busy or
    failing broker): the job then runs again, which RabbitMQ's own return limit still bounds.
    """
    token = "marker:" + secrets.token_hex(8)
    attempts: set[int] = set()
    start = dt.datetime.fromtimestamp(created - CLOCK_SLACK_S, tz=dt.UTC)
    try:
        async with asyncio.timeout(timeout):
            await broker.publish_event(Event(job=token, name=MARKER, data={}))
            async for _, event in reader.read(start, resume=False):
                if event.job == token:
                    break
                if event.job == job_id and event.name == "started":
                    attempts.add(event.attempt)
    except Exception as exc:  # counted so far is a lower bound (a timeout too): never a reason to fail a job
        log.warning("could not count a job's runs", extra={"job": job_id, "error": repr(exc)[:300]})
    return len(attempts)
