"""Hostile bodies: numbers that are not numbers, bodies past the cap however framed, text that
is not text, arguments no program can receive, zip bombs. Each is refused before it costs a job."""

from __future__ import annotations

import base64
import io
import socket
import time
import zipfile
from collections.abc import Iterator

import httpx
import pytest

from tests.abuse.conftest import Target

PY = {"language": "python", "source": "import time; time.sleep(30)"}
JSON = {"Content-Type": "application/json"}
NOT_NUMBERS = ("NaN", "Infinity", "-Infinity", "1e999", "-1e999", "1" * 5000)


@pytest.mark.parametrize("number", NOT_NUMBERS)
def test_numbers_that_are_not_finite_are_400_in_every_api(target: Target, number: str) -> None:
    sleep = "import time; time.sleep(30)"
    v1 = f'{{"language":"python","source":"{sleep}","limits":{{"timeout_s":{number}}}}}'
    piston = f'{{"language":"python","files":[{{"content":"{sleep}"}}],"run_timeout":{number}}}'
    judge0 = f'{{"language_id":71,"source_code":"{sleep}","cpu_time_limit":{number}}}'
    with target.http() as http:
        target.refused(lambda: [http.post("/api/v1/jobs", content=v1, headers=JSON)], "bad_request", "v1", 400)
        target.refused(lambda: [http.post("/api/v2/execute", content=piston, headers=JSON)], "bad_request", "piston",
                       400)
        target.refused(lambda: [http.post("/submissions", content=judge0, headers=JSON)], "bad_request", "judge0", 400)


def test_huge_but_finite_numbers_are_limits_above_the_maximum(target: Target) -> None:
    body = '{"language":"python","source":"x","limits":{"timeout_s":1e308,"memory_mb":' + "9" * 300 + "}}"
    with target.http() as http:
        (answer,) = target.refused(lambda: [http.post("/api/v1/jobs", content=body, headers=JSON)], "bad_request")
    assert answer.json()["error"]["code"] == "invalid_limits"


def test_deep_nesting_is_refused_before_parsing(target: Target) -> None:
    deep = '{"language":"python","source":"x","limits":' + "[" * 100_000 + "]" * 100_000 + "}"
    with target.http() as http:
        (answer,) = target.refused(lambda: [http.post("/api/v1/jobs", content=deep, headers=JSON)], "bad_request")
    assert "nests deeper" in answer.json()["error"]["message"]


def chunks(total: int, size: int = 64 * 1024) -> Iterator[bytes]:
    yield b'{"language":"python","source":"'
    sent = 0
    while sent < total:
        yield b"#" * size
        sent += size
    yield b'"}'


def test_chunked_body_over_the_cap_is_413(target: Target) -> None:
    # No Content-Length: the cap holds on the bytes actually received (3 MiB against 256 KiB).
    with target.http() as http:

        def attack() -> list[httpx.Response]:
            try:
                return [http.post("/api/v1/jobs", content=chunks(3 * 1024 * 1024), headers=JSON)]
            except httpx.HTTPError:
                pytest.fail("the client must read the 413, not a broken connection")

        (answer,) = target.refused(attack, "body_too_large", status=413)
    assert answer.json()["error"]["code"] == "body_too_large"


def test_declared_body_over_the_cap_is_413_without_reading_it(target: Target) -> None:
    with target.http() as http:
        target.refused(lambda: [http.post("/api/v1/jobs", json={**PY, "source": "#" * 300_000})], "body_too_large",
                       status=413)
        target.refused(lambda: [http.post("/api/v2/execute", json={"language": "python",
                                                                   "files": [{"content": "#" * 300_000}]})],
                       "body_too_large", "piston", 413)


def test_slow_body_times_out(target: Target) -> None:
    host, port = target.url.removeprefix("http://").split(":")

    def attack() -> list[httpx.Response]:
        with socket.create_connection((host, int(port)), timeout=30) as sock:
            sock.sendall(b"POST /api/v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Content-Length: 1000\r\n\r\n{\"language\":")
            time.sleep(3)  # the service allows 2 s for a body
            raw = sock.recv(65536)
        head, _, payload = raw.partition(b"\r\n\r\n")
        status = int(head.split()[1])
        return [httpx.Response(status, content=payload, headers={"Content-Type": "application/json"})]

    target.refused(attack, "slow_body", status=408)


def test_huge_headers_are_a_counted_431_in_the_error_shape(target: Target) -> None:
    # Past RUNBOX_MAX_HEADER_KB the HTTP server refuses a head before the application sees it
    # (one huge field), or the application does (a head read at once); either way the refusal
    # is the contract's: shaped, counted, cheap, nothing queued.
    def attack() -> list[httpx.Response]:
        answers = []
        with target.http() as http:
            for headers in ({"X-Junk": "j" * 200_000}, {f"X-Many-{i}": "m" * 100 for i in range(400)}):
                answers.append(http.post("/api/v1/jobs", json={"language": "python", "source": "1"}, headers=headers))
                answers.append(http.get("/api/v1/languages", headers=headers))
        return answers

    for answer in target.refused(attack, "headers_too_large", status=431):
        assert answer.json()["error"]["code"] == "headers_too_large"
    with target.http() as http:  # headers within the bound are still served
        assert http.get("/api/v1/languages", headers={"X-Fine": "f" * 8000}).status_code == 200


def test_a_request_that_is_not_http_is_a_counted_400(target: Target) -> None:
    host, port = target.url.removeprefix("http://").split(":")

    def attack() -> list[httpx.Response]:
        with socket.create_connection((host, int(port)), timeout=30) as sock:
            sock.sendall(b"NOT HTTP AT ALL\r\n\r\n")
            raw = b""
            while chunk := sock.recv(65536):
                raw += chunk
        head, _, payload = raw.partition(b"\r\n\r\n")
        return [httpx.Response(int(head.split()[1]), content=payload, headers={"Content-Type": "application/json"})]

    target.refused(attack, "bad_request", status=400)


@pytest.mark.parametrize(
    ("field", "value", "code"),
    [
        ("source", "print('\\ud800')", "invalid_json"),
        ("stdin", "\\udfff", "invalid_json"),
        ("args", ["a\u0000b"], "invalid_args"),
        ("args", ["x" * 200_000], "invalid_args"),
        ("args", ["a"] * 65, "invalid_args"),
        ("args", ["y" * 30_000] * 5, "invalid_args"),
        ("files", [{"name": "a\u0000b.py", "content": ""}], "invalid_files"),
        ("files", [{"name": "../etc/passwd", "content": ""}], "invalid_files"),
        ("files", [{"name": "x.py\n", "content": ""}], "invalid_files"),
        ("files", [{"name": f"f{i}.py", "content": ""} for i in range(33)], "invalid_files"),
        ("tests", [{"stdin": "", "expected_stdout": ""}] * 65, "invalid_tests"),
        ("callback_url", "ftp://example.org/hook", "invalid_callback_url"),
        ("callback_url", "http://127.0.0.1:5672/", "invalid_callback_url"),
        ("callback_url", "http://169.254.169.254/latest/meta-data", "invalid_callback_url"),
        ("callback_url", "http://[::1]/", "invalid_callback_url"),
        ("callback_url", "http://10.0.0.1/", "invalid_callback_url"),
        ("version", "0.0.1", "unknown_version"),
        ("interactive", "yes", "invalid_interactive"),
    ],
)
def test_text_args_files_and_new_fields_are_checked_once(target: Target, field: str, value: object, code: str) -> None:
    import json

    raw = json.dumps({**PY, field: value})
    if isinstance(value, str) and "\\u" in value:
        raw = raw.replace("\\\\u", "\\u")  # a lone surrogate escape, as a hostile client sends it
    with target.http() as http:
        (answer,) = target.refused(lambda: [http.post("/api/v1/jobs", content=raw, headers=JSON)], "bad_request")
    assert answer.json()["error"]["code"] == code, answer.text


def zip_of(members: dict[str, bytes]) -> str:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return base64.b64encode(buffer.getvalue()).decode()


@pytest.mark.parametrize(
    ("members", "fragment"),
    [
        ({f"f{i}.txt": b"x" for i in range(1000)}, "at most 128 entries"),  # folders count too
        ({"bomb.txt": b"\0" * (20 * 1024 * 1024)}, "KB"),
        ({"ratio.txt": b"\0" * (5 * 1024 * 1024)}, "expands too much"),
    ],
    ids=["by-count", "by-size", "by-ratio"],
)
def test_zip_bombs_are_refused_from_the_directory(target: Target, members: dict[str, bytes], fragment: str) -> None:
    body = {"language_id": 71, "source_code": "print(1)", "additional_files": zip_of(members)}
    with target.http() as http:
        (answer,) = target.refused(lambda: [http.post("/submissions", json=body)], "bad_request", "judge0", 422)
    assert fragment in " ".join(answer.json()["additional_files"]), answer.text
