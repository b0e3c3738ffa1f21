"""JSON on the per-job paths: orjson, with the standard library for what orjson refuses.

Every job's messages are encoded and decoded several times between the processes (the job,
its events, the agent's reports, the SSE frames). orjson takes a dataclass as it is, where
the standard library needed ``dataclasses.asdict`` first: that deep copy was most of the cost
of encoding an event. orjson refuses some of what the standard library takes: lone surrogates
(a Judge0 or Piston file's undecodable bytes travel as surrogate escapes), integers beyond 64
bits and non-string keys when encoding, surrogate escapes and NaN when decoding. Such values take the
standard library's path, so what decodes is what was encoded, whichever path it took. (orjson
reads an integer beyond 64 bits as a float; no message carries one: the gateway bounds every
number a client sends before it reaches a message.)
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import orjson


def _plain(value: Any) -> Any:
    return dataclasses.asdict(value) if dataclasses.is_dataclass(value) and not isinstance(value, type) else value


def dumps(value: Any) -> bytes:
    """``value`` (JSON data or a dataclass) as compact UTF-8 JSON."""
    try:
        return orjson.dumps(value)
    except orjson.JSONEncodeError:
        # ASCII with escapes: a lone surrogate as ``\udcXX``, which ``loads`` reads back.
        return json.dumps(_plain(value), separators=(",", ":")).encode()


def loads(data: bytes | str) -> Any:
    """The value JSON ``data`` holds; raises ``ValueError`` when it is not JSON."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return json.loads(data)
