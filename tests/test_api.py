"""The whole path of a job, gateway to sandbox and back, through real RabbitMQ and Docker."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.runbox_client import Client, Service, free_port

HELLO = {"language": "python", "source": "print('hello, world')"}


def submitted_total(client: Client) -> float:
    text = client.http.get("/metrics").text
    return sum(float(v) for v in re.findall(r'^runbox_jobs_submitted_total\{[^}]*\} (\S+)$', text, re.M))


def test_hello_world_through_sse(client: Client) -> None:
    job_id = client.submit_ok(HELLO)
    events = client.events(job_id)
    names = [e.name for e in events]
    assert names[0] == "queued" and names[1] == "started" and names[-1] == "result"
    assert [e.id for e in events] == list(range(1, len(events) + 1))
    assert "".join(e.data["data"] for e in events if e.name == "stdout") == "hello, world\n"
    final = events[-1].data
    assert final["status"] == "completed"
    assert final["result"]["exit_code"] == 0
    assert final["result"]["stdout"] == "hello, world\n"
    assert final["id"] == job_id and final["language"] == "python"
    for key in ("created_at", "started_at", "finished_at"):
        assert final[key] is not None
    for key in ("exit_code", "signal", "stdout", "stderr", "compile_output", "duration_ms", "cpu_ms",
                "memory_peak_kb", "truncated"):
        assert key in final["result"]
    assert client.state(job_id) == final


def test_submit_answer_shape(client: Client) -> None:
    response = client.submit(HELLO)
    assert response.status_code == 202
    body = response.json()
    assert body["status"] == "queued"
    assert body["result_url"] == f"/api/v1/jobs/{body['id']}"
    assert body["events_url"] == f"/api/v1/jobs/{body['id']}/events"
    assert response.headers["Location"] == body["result_url"]
    client.events(body["id"])


def test_stdin_and_args(client: Client) -> None:
    state = client.run({
        "language": "py",
        "source": "import sys\nprint(sys.argv[1:])\nprint(input().upper())\nprint(sys.stdin.read().strip())",
        "stdin": "first line\nrest of it\n",
        "args": ["a", "b c"],
    })
    assert state["status"] == "completed"
    assert state["result"]["stdout"] == "['a', 'b c']\nFIRST LINE\nrest of it\n"


def test_stderr_and_exit_code(client: Client) -> None:
    state = client.run({"language": "python", "source": "import sys\nprint('oops', file=sys.stderr)\nsys.exit(3)"})
    assert state["status"] == "completed"
    assert state["result"]["exit_code"] == 3
    assert state["result"]["stderr"] == "oops\n"


def test_extra_files(client: Client) -> None:
    state = client.run({
        "language": "python",
        "source": "import util\nprint(util.greet('runbox'))",
        "files": [{"name": "util.py", "content": "def greet(n):\n    return 'hi ' + n\n"}],
    })
    assert state["result"]["stdout"] == "hi runbox\n"


def test_output_streams_while_running(client: Client) -> None:
    job_id = client.submit_ok({
        "language": "python",
        # Three seconds between the chunks: a client that connects, or a gateway whose stream
        # tail catches up, a second late on a busy machine still sees the first one stream.
        "source": "import time\nprint('first', flush=True)\ntime.sleep(3)\nprint('second')",
    })
    arrivals: dict[str, float] = {}
    for event in client.iter_events(job_id):
        if event.name == "stdout" and "first" not in arrivals:
            assert event.data["data"] == "first\n"
            arrivals["first"] = time.monotonic()
        if event.name == "result":
            arrivals["result"] = time.monotonic()
            assert event.data["result"]["stdout"] == "first\nsecond\n"
    assert arrivals["result"] - arrivals["first"] > 1.5, "first chunk must arrive before the program ends"


def test_infinite_loop_times_out_and_next_job_runs(client: Client) -> None:
    began = time.monotonic()
    state = client.run({"language": "python", "source": "while True:\n    pass", "limits": {"timeout_s": 2}})
    took = time.monotonic() - began
    assert state["status"] == "timed_out"
    assert state["result"]["limit"] in ("wall_time", "cpu_time")
    assert 1.5 < took < 6, took
    assert 1800 <= state["result"]["duration_ms"] <= 3500
    assert client.run(HELLO)["result"]["stdout"] == "hello, world\n"


def test_late_client_gets_every_event(client: Client) -> None:
    job_id = client.submit_ok({"language": "python", "source": "for i in range(3):\n    print(i, flush=True)"})
    live = client.events(job_id)
    time.sleep(0.3)
    late = client.events(job_id)
    assert [(e.id, e.name, e.data) for e in late] == [(e.id, e.name, e.data) for e in live]
    assert late[0].name == "queued"


def test_last_event_id_resumes_without_gap(client: Client) -> None:
    job_id = client.submit_ok({
        "language": "python",
        "source": "import time\nfor i in range(4):\n    print(i, flush=True)\n    time.sleep(0.15)",
    })
    everything = client.events(job_id)
    assert len(everything) >= 4
    for cut in range(len(everything)):
        rest = client.events(job_id, last_event_id=cut + 1)
        assert [e.id for e in rest] == [e.id for e in everything[cut + 1:]]
    # A reconnect mid-run: read two events, drop the connection, resume from the second.
    job_id = client.submit_ok({
        "language": "python",
        "source": "import time\nfor i in range(5):\n    print(i, flush=True)\n    time.sleep(0.2)",
    })
    first: list = []
    for event in client.iter_events(job_id):
        first.append(event)
        if len(first) == 3:
            break
    rest = client.events(job_id, last_event_id=first[-1].id)
    ids = [e.id for e in first] + [e.id for e in rest]
    assert ids == list(range(1, len(ids) + 1))
    assert "".join(e.data["data"] for e in first + rest if e.name == "stdout") == "0\n1\n2\n3\n4\n"


def test_unknown_job_is_404(client: Client) -> None:
    for job_id in ("nope", "0" * 26, "019a00000000aaaaaaaaaaaaaa"):
        response = client.http.get(f"/api/v1/jobs/{job_id}")
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "not_found"
        assert client.http.get(f"/api/v1/jobs/{job_id}/events").status_code == 404


def test_languages_listing(client: Client) -> None:
    languages = client.http.get("/api/v1/languages").json()
    python = next(lang for lang in languages if lang["name"] == "python")
    assert python["version"].startswith("3.")
    assert "py" in python["aliases"]
    assert python["compiled"] is False
    assert python["default_limits"]["timeout_s"] == 5
    assert python["default_limits"]["memory_mb"] == 256
    assert python["default_limits"]["processes"] == 64
    assert python["default_limits"]["output_kb"] == 64
    assert python["default_limits"]["file_size_kb"] == 10240
    assert python["max_limits"]["timeout_s"] >= 5


def test_health_and_readiness(client: Client) -> None:
    def probes() -> float:
        lines = [line for line in client.http.get("/metrics").text.splitlines()
                 if line.startswith("runbox_http_requests_total{") and 'route="/healthz"' in line
                 and 'method="GET"' in line and 'code="200"' in line]
        return sum(float(line.rsplit(" ", 1)[1]) for line in lines)

    before = probes()
    health = client.http.get("/healthz")
    assert health.status_code == 200 and health.headers["content-type"] == "application/json"
    assert health.json() == {"status": "ok", "roles": ["gateway", "executor"]}
    head = client.http.head("/healthz")
    assert head.status_code == 200 and head.content == b""
    assert probes() == before + 1  # answered ahead of the application, and counted as it would count it
    assert client.http.post("/healthz").status_code == 405
    ready = client.http.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["executors"] >= 1
    assert "python" in ready.json()["backlog"]
    assert "runbox_jobs_finished_total" in client.http.get("/metrics").text
    assert client.http.get("/").headers["content-type"].startswith("text/html")


BAD_INPUTS = [
    ("malformed json", b"{not json", 400, "invalid_json"),
    ("empty body", b"", 400, "invalid_json"),
    ("not an object", b"[1, 2]", 400, "invalid_body"),
    ("unknown language", b'{"language": "cobol", "source": "x"}', 400, "unknown_language"),
    ("missing language", b'{"source": "x"}', 400, "invalid_language"),
    ("missing source", b'{"language": "python"}', 400, "invalid_source"),
    ("non-string source", b'{"language": "python", "source": 42}', 400, "invalid_source"),
    ("bad stdin", b'{"language": "python", "source": "x", "stdin": 5}', 400, "invalid_stdin"),
    ("bad args", b'{"language": "python", "source": "x", "args": "a b"}', 400, "invalid_args"),
    ("bad files", b'{"language": "python", "source": "x", "files": [{"name": "../x", "content": ""}]}', 400,
     "invalid_files"),
    ("limit above max", b'{"language": "python", "source": "x", "limits": {"timeout_s": 100000}}', 400,
     "invalid_limits"),
    ("unknown limit", b'{"language": "python", "source": "x", "limits": {"gpus": 1}}', 400, "invalid_limits"),
    ("negative limit", b'{"language": "python", "source": "x", "limits": {"memory_mb": -1}}', 400,
     "invalid_limits"),
]


@pytest.mark.parametrize(("what", "body", "status", "code"), BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_bad_input_is_a_clear_4xx_and_nothing_is_queued(
    client: Client, what: str, body: bytes, status: int, code: str
) -> None:
    before = submitted_total(client)
    response = client.http.post("/api/v1/jobs", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code
    assert isinstance(error["message"], str) and len(error["message"]) > 10
    if code == "unknown_language":
        assert "python" in error["message"]
    assert submitted_total(client) == before


def test_oversize_body_is_413(client: Client) -> None:
    before = submitted_total(client)
    response = client.submit({"language": "python", "source": "#" * (3 * 1024 * 1024)})
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "body_too_large"
    assert submitted_total(client) == before


@pytest.fixture(scope="module")
def two_gateways(real_stack: None) -> Iterator[tuple[Service, Service]]:
    """An executor+gateway and a second, gateway-only process sharing the same queues."""
    first = Service(RUNBOX_LANGUAGES="python").start()  # the jobs are python's: one warm pool starts sooner
    second = Service(roles="gateway", prefix=first.prefix, RUNBOX_LANGUAGES="python").start()
    yield first, second
    second.stop()
    first.stop()


def test_job_followed_through_another_gateway(two_gateways: tuple[Service, Service]) -> None:
    first, second = two_gateways
    a, b = first.client(), second.client()
    job_id = a.submit_ok({
        "language": "python",
        "source": "import time\nprint('one', flush=True)\ntime.sleep(0.5)\nprint('two')",
    })
    events = b.events(job_id)
    assert events[0].name == "queued"
    assert events[-1].data["status"] == "completed"
    assert events[-1].data["result"]["stdout"] == "one\ntwo\n"
    # The first gateway's own stream tail may be a moment behind the second's: once it too has
    # streamed the result, both answer the same state.
    assert [(e.id, e.name) for e in a.events(job_id)] == [(e.id, e.name) for e in events]
    assert b.state(job_id) == a.state(job_id)


def test_restarted_gateway_serves_earlier_jobs(two_gateways: tuple[Service, Service]) -> None:
    first, second = two_gateways
    a = first.client()
    job_id = a.submit_ok(HELLO)
    before = a.events(job_id)
    second.stop()
    second.start()
    after = second.client().events(job_id, last_event_id=1)
    assert [(e.id, e.name) for e in after] == [(e.id, e.name) for e in before[1:]]


SHED_KEY = "shed-key-0123456789"
# Each flavour's submission route, a body for it, its success status and its error body's message.
SUBMISSIONS = {
    "v1": ("/api/v1/jobs", {"language": "python", "source": "print(1)"}, 202, lambda b: b["error"]["message"]),
    "piston": ("/api/v2/execute", {"language": "python", "version": "*", "files": [{"content": "print(1)"}]}, 200,
               lambda b: b["message"]),
    "judge0": ("/submissions", {"source_code": "print(1)", "language_id": 71}, 201, lambda b: b["error"]),
}


def test_overloaded_gateway_sheds_submissions_and_loses_none(two_gateways: tuple[Service, Service]) -> None:
    """A gateway with its pending submissions at the bound answers 503 + Retry-After in each
    route's own error shape (v1, Piston, Judge0), and every submission it accepted runs; its
    probe port (RUNBOX_PROBE_PORT) answers liveness meanwhile."""
    first, _ = two_gateways
    probe_port = free_port()
    shedding = Service(
        roles="gateway", prefix=first.prefix, RUNBOX_MAX_PENDING_SUBMITS="1", RUNBOX_PROBE_PORT=str(probe_port),
        RUNBOX_TIERS="shed=100000:100000:100000:100000", RUNBOX_API_KEYS=f"shed:plain:{SHED_KEY}",
    ).start()
    probes: list[httpx.Response] = []
    try:
        with httpx.Client(base_url=shedding.url, timeout=60,
                          headers={"Authorization": f"Bearer {SHED_KEY}"}) as http:
            for flavour, (path, body, ok, message) in SUBMISSIONS.items():
                answers: list[httpx.Response] = []

                def post() -> None:
                    answers.append(http.post(path, json=body))  # noqa: B023 (each burst joins before the next)

                # With one submission allowed in hand, simultaneous ones are shed; bursts repeat
                # (bounded) until one was, since the machine decides how many overlap.
                for _ in range(10):
                    threads = [threading.Thread(target=post) for _ in range(16)]
                    for t in threads:
                        t.start()
                    probes.append(httpx.get(f"http://127.0.0.1:{probe_port}/healthz", timeout=10))
                    for t in threads:
                        t.join(120)
                    if any(a.status_code == 503 for a in answers):
                        break
                shed = [a for a in answers if a.status_code == 503]
                accepted = [a for a in answers if a.status_code == ok]
                assert len(shed) + len(accepted) == len(answers), (flavour, sorted({a.status_code for a in answers}))
                assert shed and accepted, flavour
                for answer in shed:
                    assert answer.headers["Retry-After"] == "2"
                    assert "handling 1 submissions already" in message(answer.json()), flavour
                if flavour == "v1":
                    for answer in accepted:
                        state = http.get(f"/api/v1/jobs/{answer.json()['id']}")
                        while state.json()["status"] in ("queued", "running"):
                            time.sleep(0.1)
                            state = http.get(f"/api/v1/jobs/{answer.json()['id']}")
                        assert state.json()["status"] == "completed"
                elif flavour == "piston":
                    assert all(a.json()["run"]["stdout"] == "1\n" for a in accepted)
                else:
                    assert all(a.json()["token"] for a in accepted)
            metrics = http.get("/metrics").text
            elsewhere = httpx.get(f"http://127.0.0.1:{probe_port}/api/v1/jobs", timeout=10)
    finally:
        shedding.stop()
    assert re.search(r'runbox_rejections_total\{reason="overloaded"\} [1-9]', metrics)
    assert probes and all(p.status_code == 200 and p.json()["roles"] == ["gateway"] for p in probes)
    assert elsewhere.status_code == 404 and elsewhere.json()["error"]["code"] == "not_found"


def test_many_concurrent_clients(client: Client) -> None:
    results: list[dict] = []
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            c = Client(client.base_url)
            results.append(c.run({"language": "python", "source": f"print({i} * 2)"}))
            c.close()
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    # As many clients at once as one anonymous identity may have jobs (the concurrent-jobs cap
    # is reserved atomically, so a ninth simultaneous submission is refused; tests/abuse checks that).
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    assert sorted(int(r["result"]["stdout"]) for r in results) == [i * 2 for i in range(8)]


def test_gateway_without_broker_answers_503(real_stack: None) -> None:
    svc = Service(roles="gateway", RUNBOX_AMQP_URL="amqp://guest:guest@127.0.0.1:1/").start(wait_ready=False)
    try:
        c = svc.client()
        response = c.submit(HELLO)
        assert response.status_code == 503
        assert response.headers["Retry-After"]
        assert response.json()["error"]["code"] == "broker_unavailable"
        assert c.http.get("/readyz").status_code == 503
        assert c.http.get("/healthz").status_code == 200
    finally:
        svc.stop()


def test_sse_needs_no_polling_client() -> None:
    # A guard on the parser the other tests depend on.
    from tests.runbox_client import parse_sse

    lines = iter(["id: 1", "event: stdout", 'data: {"data": "x"}', "", ": keep-alive", "", "id: 2",
                  "event: result", 'data: {"status": "completed"}', ""])
    events = list(parse_sse(lines))
    assert [(e.id, e.name) for e in events] == [(1, "stdout"), (2, "result")]
