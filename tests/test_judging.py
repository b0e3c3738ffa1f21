"""Judged jobs and interactive jobs through the real stack, in the production shape.

One executor process and two gateway processes share a queue prefix: jobs are submitted to one
gateway, followed and fed input through the other, so nothing depends on one process's memory.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Iterator

import httpx
import pytest
from websockets.sync.client import connect as ws_connect

from tests.piston_ws import closed_with, output_until, receive, ws_url
from tests.runbox_client import Client, Service, SseEvent

LANGUAGES = "python,c,bash"


@pytest.fixture(scope="module")
def stack(real_stack: None) -> Iterator[tuple[Service, Service]]:
    """An executor and two gateways; a judged job may run 15 s in all, idle input ends after 8 s."""
    executor = Service(
        roles="executor", RUNBOX_LANGUAGES=LANGUAGES, RUNBOX_JUDGE_MAX_TOTAL_S="15", RUNBOX_INTERACTIVE_IDLE_S="8"
    ).start(wait_ready=False)
    first = Service(roles="gateway", prefix=executor.prefix, RUNBOX_LANGUAGES=LANGUAGES).start()
    second = Service(roles="gateway", prefix=executor.prefix, RUNBOX_LANGUAGES=LANGUAGES).start()
    yield first, second
    second.stop()
    first.stop()
    executor.stop()


@pytest.fixture()
def clients(stack: tuple[Service, Service]) -> Iterator[tuple[Client, Client]]:
    a, b = stack[0].client(), stack[1].client()
    yield a, b
    a.close()
    b.close()


ADD = {
    "python": "a, b = map(int, input().split())\nprint(a + b)",
    "bash": "read a b\necho $((a + b))",
    "c": "#include <stdio.h>\nint main(void) { long a, b; scanf(\"%ld %ld\", &a, &b); printf(\"%ld\\n\", a + b); }",
}
CASES = [
    {"stdin": "1 2\n", "expected_stdout": "3\n"},
    {"stdin": "20 22\n", "expected_stdout": "41\n"},  # wrong on purpose: the program prints 42
    {"stdin": "-5 5\n", "expected_stdout": "0   \n\n\n"},  # trailing spaces and empty lines do not count
]


@pytest.mark.parametrize("language", ["python", "bash", "c"])
def test_judged_job_with_passing_and_failing_cases(clients: tuple[Client, Client], language: str) -> None:
    a, b = clients
    job_id = a.submit_ok({"language": language, "source": ADD[language], "tests": CASES})
    events = b.events(job_id)
    tests = [e for e in events if e.name == "test"]
    assert [(e.data["index"], e.data["verdict"]) for e in tests] == [
        (0, "accepted"), (1, "wrong_answer"), (2, "accepted")
    ]
    assert all(isinstance(e.data["duration_ms"], int) for e in tests)
    assert not [e for e in events if e.name in ("stdout", "stderr")]
    final = events[-1].data
    assert final["status"] == "completed"
    result = final["result"]
    assert result["verdict"] == "wrong_answer"
    assert [t["stdout"] for t in result["tests"]] == ["3\n", "42\n", "0\n"]
    for case in result["tests"]:
        assert set(case) >= {"index", "verdict", "stdout", "stderr", "exit_code", "duration_ms", "cpu_ms",
                             "memory_peak_kb"}
        assert case["exit_code"] == 0
    if language == "c":
        assert [e for e in events if e.name == "compile"]
    assert a.state(job_id) == final


def test_all_cases_accepted(clients: tuple[Client, Client]) -> None:
    a, _ = clients
    cases = [{"stdin": f"{i} {i}\n", "expected_stdout": f"{2 * i}\n"} for i in range(12)]
    final = a.run({"language": "bash", "source": ADD["bash"], "tests": cases})
    assert final["status"] == "completed"
    assert final["result"]["verdict"] == "accepted"
    assert [t["index"] for t in final["result"]["tests"]] == list(range(12))


def test_verdicts_for_crashes_limits_and_their_order(clients: tuple[Client, Client]) -> None:
    a, _ = clients
    source = (
        "import sys, time\n"
        "n = int(input())\n"
        "if n == 1: sys.exit(3)\n"
        "if n == 2: x = bytearray(400 * 1024 * 1024)\n"
        "if n == 3: print('y' * 200000)\n"
        "print(n)\n"
    )
    cases = [{"stdin": f"{n}\n", "expected_stdout": f"{n}\n"} for n in range(4)]
    # A wall time with room for a loaded machine, where the memory cgroup can take seconds to
    # kill a program that outgrew it.
    final = a.run({"language": "python", "source": source, "tests": cases,
                   "limits": {"timeout_s": 15, "memory_mb": 128}})
    verdicts = [t["verdict"] for t in final["result"]["tests"]]
    assert verdicts == ["accepted", "runtime_error", "memory_exceeded", "output_exceeded"]
    assert final["result"]["tests"][1]["exit_code"] == 3
    assert final["result"]["verdict"] == "runtime_error"
    assert final["status"] == "completed"


def test_a_case_past_its_time_limit_is_timed_out_and_the_next_still_runs(clients: tuple[Client, Client]) -> None:
    a, _ = clients
    source = "n = int(input())\nwhile n == 0: pass\nprint(n)"
    final = a.run({"language": "python", "source": source, "limits": {"timeout_s": 2},
                   "tests": [{"stdin": "0\n", "expected_stdout": "0"}, {"stdin": "1\n", "expected_stdout": "1"}]})
    assert [t["verdict"] for t in final["result"]["tests"]] == ["timed_out", "accepted"]
    assert final["result"]["verdict"] == "timed_out"
    assert final["status"] == "completed"


def test_cases_do_not_see_each_others_files(clients: tuple[Client, Client]) -> None:
    a, _ = clients
    source = "import os\nprint(os.path.exists('/tmp/seen') or os.path.exists('seen'))\n" \
             "open('/tmp/seen', 'w').close()\nopen('seen', 'w').close()"
    final = a.run({"language": "python", "source": source,
                   "tests": [{"stdin": "", "expected_stdout": "False"}] * 3})
    assert [t["verdict"] for t in final["result"]["tests"]] == ["accepted"] * 3


def test_compile_error_in_a_judged_job(clients: tuple[Client, Client]) -> None:
    a, _ = clients
    final = a.run({"language": "c", "source": "int main(void) { return nope; }", "tests": CASES})
    assert final["status"] == "compile_error"
    assert not final["result"].get("tests")
    assert "nope" in final["result"]["compile_output"]


def test_total_time_ceiling_stops_a_judged_job(clients: tuple[Client, Client]) -> None:
    a, _ = clients
    cases = [{"stdin": "", "expected_stdout": "ok\n"}] * 16  # 16 x 2 s of run time, past the 15 s ceiling
    final = a.run({"language": "python", "source": "import time\ntime.sleep(2)\nprint('ok')",
                   "tests": cases, "limits": {"timeout_s": 3}})
    assert final["status"] == "timed_out"
    assert final["result"]["limit"] == "total_time"
    assert 0 < len(final["result"]["tests"]) < 16
    assert final["result"]["verdict"] == "timed_out"


def test_too_many_cases_is_400(clients: tuple[Client, Client]) -> None:
    a, _ = clients
    response = a.submit({"language": "python", "source": "", "tests": [{"stdin": ""}] * 65})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_tests"


# --- interactive --------------------------------------------------------------------------------
def send(client: Client, job_id: str, data: str = "", eof: bool = False) -> httpx.Response:
    return client.http.post(f"/api/v1/jobs/{job_id}/stdin", json={"data": data, "eof": eof})


def converse(reader: Client, writers: list[Client], job_id: str,
             lines: list[str]) -> tuple[list[str], list[SseEvent]]:
    """Send the first line once the job started and the next after each line it answers
    (the last with eof), alternating gateways; the answered lines, and every event."""
    answers: list[str] = []
    events: list[SseEvent] = []
    buffer = ""
    turn = 0

    def next_line() -> None:
        nonlocal turn
        if turn < len(lines):
            response = send(writers[turn % len(writers)], job_id, lines[turn], eof=turn == len(lines) - 1)
            assert response.status_code == 202, response.text
            turn += 1

    for event in reader.iter_events(job_id):
        events.append(event)
        if event.name == "started":
            next_line()
        elif event.name == "stdout":
            buffer += event.data["data"]
            while "\n" in buffer:
                line, buffer = buffer.split("\n", 1)
                answers.append(line)
                next_line()
    return answers, events


def test_interactive_python_line_by_line_through_two_gateways(clients: tuple[Client, Client]) -> None:
    a, b = clients
    source = "while True:\n    try:\n        line = input()\n    except EOFError:\n        break\n" \
             "    print(line[::-1], flush=True)\nprint('bye')"
    job_id = a.submit_ok({"language": "python", "source": source, "interactive": True, "stdin": "first\n"})
    answers, events = converse(b, [a, b], job_id, ["hello\n", "runbox\n", "abc\n"])
    assert answers[:4] == ["tsrif", "olleh", "xobnur", "cba"], events[-1].data
    final = events[-1].data
    assert final["status"] == "completed"
    assert final["result"]["stdout"] == "tsrif\nolleh\nxobnur\ncba\nbye\n"
    # Ended: more input is refused, whichever gateway it goes to.
    for client in (a, b):
        response = send(client, job_id, "late\n")
        assert response.status_code == 409
        assert response.json()["error"]["code"] == "not_running"


def test_interactive_c_program(clients: tuple[Client, Client]) -> None:
    a, b = clients
    source = (
        "#include <stdio.h>\n"
        "int main(void) { long n; while (scanf(\"%ld\", &n) == 1) { printf(\"%ld\\n\", n * n); fflush(stdout); }\n"
        "  puts(\"done\"); return 0; }\n"
    )
    job_id = a.submit_ok({"language": "c", "source": source, "interactive": True})
    answers, events = converse(a, [b, a], job_id, ["3\n", "12\n", "-7\n"])
    assert answers[:3] == ["9", "144", "49"], events[-1].data
    assert events[-1].data["status"] == "completed"
    assert events[-1].data["result"]["stdout"] == "9\n144\n49\ndone\n"


def test_interactive_job_waiting_for_input_times_out_when_idle(clients: tuple[Client, Client]) -> None:
    a, _ = clients
    final = a.run({"language": "python", "source": "print('ready', flush=True)\ninput()",
                   "interactive": True, "limits": {"timeout_s": 20}})
    assert final["status"] == "timed_out"
    assert final["result"]["limit"] == "idle"
    assert final["result"]["stdout"] == "ready\n"


def test_stdin_refused_for_other_jobs_and_bad_bodies(clients: tuple[Client, Client]) -> None:
    a, b = clients
    job_id = a.submit_ok({"language": "python", "source": "import time\ntime.sleep(1)"})
    response = send(b, job_id, "x")
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "not_interactive"
    assert b.http.post("/api/v1/jobs/0000000000000000000000000a/stdin", json={"data": "x"}).status_code == 404
    for body in ({"data": 5}, {"eof": "yes"}, [1]):
        response = b.http.post(f"/api/v1/jobs/{job_id}/stdin", json=body)
        assert response.status_code == 400, body
    response = b.http.post(f"/api/v1/jobs/{job_id}/stdin", content=b"{nope")
    assert response.status_code == 400


def test_interactive_input_is_bounded(clients: tuple[Client, Client]) -> None:
    a, b = clients
    # Reads its input to the end: the eof sent last ends it, so no job outlives the test.
    job_id = a.submit_ok({"language": "python", "source": "import sys\nprint(len(sys.stdin.read()))",
                          "interactive": True, "limits": {"timeout_s": 10}})
    for event in a.iter_events(job_id):
        if event.name == "started":
            break
    # 64 KiB per second per job by default: one piece larger than that is refused outright,
    # and pieces that together pass the rate are told to wait, whichever gateway they came through.
    assert send(b, job_id, "x" * (65 * 1024)).status_code == 413
    responses: list[httpx.Response] = []

    def piece(i: int) -> None:
        responses.append(send(a if i % 2 else b, job_id, "y" * (30 * 1024)))

    threads = [threading.Thread(target=piece, args=(i,)) for i in range(8)]  # 240 KiB at once
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    codes = sorted(r.status_code for r in responses)
    assert codes[0] == 202 and codes[-1] == 429, codes
    assert all(int(r.headers["Retry-After"]) >= 1 for r in responses if r.status_code == 429)
    assert all(r.json()["error"]["code"] == "stdin_rate_limited" for r in responses if r.status_code == 429)
    assert send(a, job_id, eof=True).status_code == 202
    final = a.events(job_id)[-1].data
    assert final["status"] == "completed", final
    assert final["result"]["stdout"] == f"{30 * 1024 * codes.count(202)}\n"  # what was let in, and only that


def test_parallel_interactive_jobs_get_their_own_input(clients: tuple[Client, Client]) -> None:
    a, b = clients
    source = "print(input() * 2, flush=True)"
    results: dict[str, str] = {}

    def one(word: str) -> None:
        job_id = a.submit_ok({"language": "python", "source": source, "interactive": True})
        answers, events = converse(b, [a], job_id, [word + "\n"])
        results[word] = answers[0] if answers else repr(events[-1].data)

    threads = [threading.Thread(target=one, args=(w,)) for w in ("ab", "cd", "ef", "gh")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert results == {"ab": "abab", "cd": "cdcd", "ef": "efef", "gh": "ghgh"}


# A program that handles SIGUSR1, echoes its input, and ends only when something signals it.
TRAPS = """import signal, sys
signal.signal(signal.SIGUSR1, lambda *_: print("got SIGUSR1", flush=True))
print("ready", flush=True)
for line in sys.stdin:
    print("echo:" + line, end="", flush=True)
print("stdin closed", flush=True)
signal.pause()
"""


def test_piston_signals_reach_the_running_program(stack: tuple[Service, Service]) -> None:
    """Piston's ``signal`` message travels gateway -> RabbitMQ -> executor -> agent to the program."""
    init = {"type": "init", "language": "python", "version": "*", "files": [{"content": TRAPS}]}
    with ws_connect(ws_url(stack[1])) as ws:
        ws.send(json.dumps(init))
        assert receive(ws)["type"] == "runtime"
        assert receive(ws) == {"type": "stage", "stage": "run"}
        output_until(ws, "ready\n")
        ws.send(json.dumps({"type": "signal", "signal": "SIGUSR1"}))  # handled: the program goes on
        output_until(ws, "got SIGUSR1\n")
        ws.send(json.dumps({"type": "data", "stream": "stdin", "data": "after\n"}))
        output_until(ws, "echo:after\n")
        ws.send(json.dumps({"type": "signal", "signal": "SIGTERM"}))  # not handled: it ends the program
        code, rest = closed_with(ws)
    assert (code, rest) == (4999, [{"type": "exit", "stage": "run", "code": None, "signal": "SIGTERM"}])


def test_piston_sigkill_ends_a_compiled_program_blocked_in_pause(stack: tuple[Service, Service]) -> None:
    source = "#include <stdio.h>\n#include <unistd.h>\n" \
        "int main(void) { puts(\"up\"); fflush(stdout); for (;;) pause(); }\n"
    init = {"type": "init", "language": "c", "version": "*", "files": [{"content": source}]}
    with ws_connect(ws_url(stack[0])) as ws:
        ws.send(json.dumps(init))
        assert receive(ws)["type"] == "runtime"
        assert [receive(ws)["type"] for _ in range(3)] == ["stage", "exit", "stage"]  # compile, then run
        output_until(ws, "up\n")
        ws.send(json.dumps({"type": "signal", "signal": "SIGKILL"}))
        code, rest = closed_with(ws)
    assert (code, rest) == (4999, [{"type": "exit", "stage": "run", "code": None, "signal": "SIGKILL"}])


# How the job below can end: killed when its session closes, or by the idle limit if it is not.
KILLED, IDLE = "Runtime Error (Other)", "Time Limit Exceeded"


def endings(gateway: Service) -> tuple[int, int]:
    """How many jobs (of every API) the gateway has seen end killed, and by a time limit (its /statistics)."""
    stats = httpx.get(gateway.url + "/statistics", timeout=30).json()
    counts = Counter({row["status"]["name"]: row["count"] for row in stats["statuses"]})
    return counts[KILLED], counts[IDLE]


def test_a_piston_session_closed_before_its_job_ends_kills_the_job(stack: tuple[Service, Service]) -> None:
    """A client that leaves mid-run does not leave its job holding a sandbox until its limits:
    the job ends killed by SIGKILL (Judge0's Runtime Error (Other)), not by the idle limit."""
    before = endings(stack[0])
    init = {"type": "init", "language": "python", "version": "*", "files": [{"content": TRAPS}]}
    with ws_connect(ws_url(stack[1])) as ws:
        ws.send(json.dumps(init))
        assert [receive(ws)["type"] for _ in range(2)] == ["runtime", "stage"]
        output_until(ws, "ready\n")
    end = time.monotonic() + 60
    after = before
    while after == before and time.monotonic() < end:
        time.sleep(0.2)
        after = endings(stack[0])
    assert (after[0] - before[0], after[1] - before[1]) == (1, 0), (before, after)
