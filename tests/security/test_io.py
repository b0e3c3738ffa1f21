"""Input and output attacks: bytes that are not text, the largest bodies, stdin floods."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from tests.security.conftest import Batch, Target, attack_registry, make_batch

ATTACKS, attack = attack_registry()
BODY_CAP = 2048 * 1024  # RUNBOX_MAX_BODY_KB's default


def raw_state(t: Target, job_id: str) -> str:
    """The job's state as the bytes the gateway sends: it must be valid JSON (UTF-8)."""
    response = t.client.http.get(f"/api/v1/jobs/{job_id}")
    assert response.status_code == 200, response.text
    response.content.decode("utf-8")  # strict: no invalid UTF-8 ever leaves the gateway
    return response.text


@attack("invalid_utf8_and_nul_python")
def invalid_utf8_python(t: Target) -> None:
    source = r"""
import sys, time
out = sys.stdout.buffer
out.write(b"valid \xff\xfe bytes \x00 nul \xc3\x28 end\n")
out.flush()
out.write(b"split \xc3")  # a two-byte character cut between two writes (and two reads)
out.flush()
time.sleep(0.3)
out.write(b"\xa9 done\n")
out.flush()
sys.stderr.buffer.write(b"err \x80\x00 \xf0\x9f\x98\x80 ok\n")
"""
    state, events = t.run_events("python", source)
    assert state["status"] == "completed", t.explain(state)
    stdout = "valid \ufffd\ufffd bytes \x00 nul \ufffd( end\nsplit \u00e9 done\n"
    assert state["result"]["stdout"] == stdout, t.explain(state)
    assert state["result"]["stderr"] == "err \ufffd\x00 \U0001f600 ok\n", t.explain(state)
    assert "".join(e.data["data"] for e in events if e.name == "stdout") == stdout
    raw = raw_state(t, state["id"])
    assert "\\u0000" in raw and json.loads(raw)["result"]["stdout"] == stdout
    t.normal_job_works("python")


@attack("every_byte_value_c")
def every_byte_c(t: Target) -> None:
    source = "#include <stdio.h>\nint main(void) { for (int i = 0; i < 256; i++) putchar(i); return 0; }\n"
    state = t.run("c", source)
    assert state["status"] == "completed", t.explain(state)
    assert state["result"]["stdout"] == bytes(range(256)).decode("utf-8", "replace"), t.explain(state)
    assert json.loads(raw_state(t, state["id"]))["result"]["stdout"].startswith("\x00\x01\x02")
    t.normal_job_works("c")


def body_of_size(size: int) -> bytes:
    """A python job whose JSON body is exactly ``size`` bytes."""
    head, tail = '{"language":"python","source":"# ', '\\nprint(\\"big source ran\\")\\n"}'
    filler = size - len(head) - len(tail)
    body = (head + "x" * filler + tail).encode()
    assert len(body) == size
    json.loads(body)
    return body


@attack("largest_source_python")
def largest_source(t: Target) -> None:
    headers = {"Content-Type": "application/json"}
    over = t.client.http.post("/api/v1/jobs", content=body_of_size(BODY_CAP + 1), headers=headers)
    assert over.status_code == 413, over.text
    assert over.json()["error"]["code"] == "body_too_large", over.text
    t.healthy()
    under = t.client.http.post("/api/v1/jobs", content=body_of_size(BODY_CAP - 64), headers=headers)
    assert under.status_code == 202, under.text
    state = t.client.events(under.json()["id"], timeout=120)[-1].data
    assert state["status"] == "completed", t.explain(state)
    assert state["result"]["stdout"] == "big source ran\n", t.explain(state)
    t.normal_job_works("python")


@attack("stdin_100mb_rejected_python")
def stdin_100mb(t: Target) -> None:
    body = json.dumps({"language": "python", "source": "import sys\nprint(len(sys.stdin.read()))\n",
                       "stdin": "i" * (100 << 20)}).encode()
    try:
        response = t.client.http.post("/api/v1/jobs", content=body,
                                      headers={"Content-Type": "application/json"}, timeout=60)
        assert response.status_code == 413, response.text[:500]
    except (httpx.WriteError, httpx.RemoteProtocolError, httpx.ReadError):
        pass  # the gateway answered 413 on the Content-Length and closed before taking it all
    t.healthy()
    # A large stdin under the cap arrives whole.
    state = t.run("python", "import sys\nprint(len(sys.stdin.buffer.read()))\n", stdin="i" * (1 << 20))
    assert state["status"] == "completed" and state["result"]["stdout"] == f"{1 << 20}\n", t.explain(state)
    t.normal_job_works("python")


@attack("stdin_self_fed_100mb_python")
def stdin_self_fed(t: Target) -> None:
    """The program pumps 100 MB into its own stdin pipe while reading it back."""
    source = """
import os, threading
total = 100 << 20
try:
    w = os.open("/proc/self/fd/0", os.O_WRONLY)  # the read end's pipe, reopened for writing
    how = "stdin reopened"
except OSError as exc:
    r, w = os.pipe()
    os.dup2(r, 0)
    how = "own pipe"
def pump():
    chunk, left = b"s" * 65536, total
    while left:
        left -= os.write(w, chunk[: min(left, len(chunk))])
threading.Thread(target=pump, daemon=True).start()
got = 0
while got < total:
    data = os.read(0, 1 << 20)
    if not data:
        break
    got += len(data)
print(how, got)
"""
    state = t.run("python", source, limits={"timeout_s": 20})
    assert state["status"] in ("completed", "timed_out"), t.explain(state)
    if state["status"] == "completed":
        assert state["result"]["stdout"].split()[-1] == str(100 << 20), t.explain(state)
    assert state["result"]["memory_peak_kb"] < 256 * 1024, t.explain(state)
    t.normal_job_works("python")


@pytest.fixture(scope="module")
def batch(target: Target) -> Iterator[Batch]:
    yield from make_batch(target, ATTACKS)


@pytest.mark.parametrize("name", list(ATTACKS))
def test_io_attack_is_contained(batch: Batch, name: str) -> None:
    batch.result(name)
