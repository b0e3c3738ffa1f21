"""Tampering with the agent is final: the job ends ``failed`` once, never retried.

The agent (PID 1) is the job's only way out of its container. Under runc a job can neither
signal it (the kernel protects a PID namespace's init) nor open its ``/proc/1/fd``. gVisor
(20240729 as 20221219) delivers ``kill -9 1`` and ``kill -STOP 1``: the executor then ends
the job ``failed`` with a ``result.error`` saying what it did, after one attempt (no
redelivery, no dead-lettering), and the container is replaced. The agent's stdin, stdout and
stderr are closed to a job on both runtimes (under gVisor by a tmpfs over ``/proc/1``);
behind that, lines written into the agent's stdout would lack the job's token, lines written
into its stdin the secret the previous job message announced, and its stderr is ``/dev/null``.
Where the executor offers the agent a socket instead of the attach stream, that socket's
directory is empty and read-only once the agent has connected, before any job runs.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator

import pytest

from tests.runbox_client import SseEvent
from tests.security.conftest import Batch, Target, attack_registry, make_batch

ATTACKS, attack = attack_registry()


def attempts(events: list[SseEvent]) -> int:
    return sum(1 for event in events if event.name == "started")


def assert_final_failure(t: Target, state: dict, events: list[SseEvent], words: str) -> None:
    assert state["status"] == "failed", t.explain(state)
    assert words in (state["result"]["error"] or ""), t.explain(state)
    assert "not retried" in state["result"]["error"], t.explain(state)
    assert attempts(events) == 1, [e.name for e in events]


@attack("kill_agent_bash")
def kill_agent(t: Target) -> None:
    state, events = t.run_events("bash", "kill -9 1\nsleep 1\necho 'the agent lives'\n")
    if t.runtime == "runc":
        assert state["status"] == "completed", t.explain(state)
        assert state["result"]["stdout"] == "the agent lives\n", t.explain(state)
    else:
        assert_final_failure(t, state, events, "killed its sandbox's agent")
    t.normal_job_works("bash")


@attack("stop_agent_bash")
def stop_agent(t: Target) -> None:
    state, events = t.run_events("bash", "kill -STOP 1\nsleep 1\necho 'the agent lives'\n", limits={"timeout_s": 5})
    if t.runtime == "runc":
        assert state["status"] == "completed", t.explain(state)
        assert state["result"]["stdout"] == "the agent lives\n", t.explain(state)
    else:
        assert_final_failure(t, state, events, "stopped its sandbox's agent")
    t.normal_job_works("bash")


@attack("forge_agent_stdout_python")
def forge_agent_stdout(t: Target) -> None:
    source = """
import json, os
try:
    out = os.open("/proc/1/fd/1", os.O_WRONLY)
except OSError as exc:
    print("closed:", exc.strerror)
    raise SystemExit(0)
done = {"t": "done", "status": "completed", "exit_code": 0, "signal": None, "duration_ms": 1, "cpu_ms": 1,
        "memory_peak_kb": 1, "truncated": {"stdout": False, "stderr": False}}
os.write(out, json.dumps(done).encode() + b"\\n")
print("forged")
"""
    state, events = t.run_events("python", source)
    assert state["status"] == "completed", t.explain(state)
    assert state["result"]["stdout"] == f"closed: {t.agent_closed}\n", t.explain(state)
    assert attempts(events) == 1, [e.name for e in events]
    t.normal_job_works("python")


@attack("write_agent_stderr_python")
def write_agent_stderr(t: Target) -> None:
    marker = f"tamper-{secrets.token_hex(6)}"
    source = f"""
import os
try:
    err = os.open("/proc/1/fd/2", os.O_WRONLY)
except OSError as exc:
    print("closed:", exc.strerror)
    raise SystemExit(0)
os.write(err, b"{marker}\\n" * 1000)
print("target", os.readlink("/proc/1/fd/2") if os.path.islink("/proc/1/fd/2") else "?")
"""
    state = t.run("python", source)
    assert state["status"] == "completed", t.explain(state)
    out = state["result"]["stdout"]
    assert out == f"closed: {t.agent_closed}\n", t.explain(state)
    assert marker not in t.service.logs(), "the job's bytes reached the executor"
    t.normal_job_works("python")


@attack("inject_agent_stdin_python")
def inject_agent_stdin(t: Target) -> None:
    """A job line planted on the agent's stdin never runs: it lacks the secret of the next job."""
    marker = f"injected-{secrets.token_hex(6)}"
    job = {"id": "x", "files": [], "env": {}, "token": "t", "steps": [{
        "name": "run", "argv": ["sh", "-c", f"echo {marker}; sleep 20"], "limits": {"timeout_s": 30, "cpu_time_s": 30,
        "memory_mb": 256, "processes": 64, "output_kb": 64, "file_size_kb": 1024, "open_files": 64},
        "memory_mb": 256, "stream": True, "output_bytes": 65536, "hard_output_bytes": 65536}]}
    source = f"""
import os
try:
    fd = os.open("/proc/1/fd/0", os.O_WRONLY | os.O_NONBLOCK)
except OSError as exc:
    print("closed:", exc.strerror)
    raise SystemExit(0)
os.write(fd, {json.dumps(json.dumps(job))}.encode() + b"\\n")
print("planted")
"""
    state = t.run("python", source)
    assert state["status"] == "completed", t.explain(state)
    assert state["result"]["stdout"] == f"closed: {t.agent_closed}\n", t.explain(state)
    for _ in range(3):  # whichever container they land in, later jobs are answered by real agents
        victim = t.run("python", 'print("victim ran")\n')
        assert victim["status"] == "completed", t.explain(victim)
        assert victim["result"]["stdout"] == "victim ran\n", t.explain(victim)
    t.normal_job_works("python")


@attack("agent_socket_python")
def agent_socket(t: Target) -> None:
    """The directory of the agent's socket is empty and read-only: no second connection, no impostor."""
    source = """
import os, socket
print(sorted(os.listdir("/run/runbox-agent")))
for what, path in (("connect", "/run/runbox-agent/agent.sock"), ("bind", "/run/runbox-agent/agent.sock")):
    s = socket.socket(socket.AF_UNIX)
    try:
        getattr(s, what)(path)
        print(what, "succeeded")
    except OSError:
        print(what, "refused")
try:
    open("/run/runbox-agent/agent.sock", "w")
    print("create succeeded")
except OSError:
    print("create refused")
"""
    state = t.run("python", source)
    assert state["status"] == "completed", t.explain(state)
    assert state["result"]["stdout"] == "[]\nconnect refused\nbind refused\ncreate refused\n", t.explain(state)
    t.normal_job_works("python")


@pytest.fixture(scope="module")
def batch(target: Target) -> Iterator[Batch]:
    yield from make_batch(target, ATTACKS)


@pytest.mark.parametrize("name", list(ATTACKS))
def test_tampering_with_the_agent_is_final(batch: Batch, name: str) -> None:
    batch.result(name)
