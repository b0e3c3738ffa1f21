"""The Judge0 CE compatible API against a real gateway, executor, RabbitMQ and Docker.

The last tests drive the official ``judge0`` SDK from PyPI, unchanged, against the service.
"""

from __future__ import annotations

import base64
import io
import json
import shlex
import time
import zipfile
from collections.abc import Iterator
from typing import Any

import httpx
import judge0
import pytest
from judge0.base_types import Config

from app.callbacks import verify
from app.languages import Registry
from tests.callback_receiver import receiving
from tests.conftest import API_KEY, CALLBACK_SECRET
from tests.language_programs import ARGS, ECHOED, STDIN
from tests.language_programs_more import ALL_PROGRAMS as PROGRAMS
from tests.runbox_client import CORE_LANGUAGES, Service

PYTHON_ID = 71
DEFAULT_FIELDS = {"token", "time", "memory", "stdout", "stderr", "compile_output", "message", "status"}


@pytest.fixture()
def http(service: Service) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=service.url, timeout=120) as client:
        yield client


def post(
    http: httpx.Client, path: str, body: Any = None, *, content: bytes | None = None,
    headers: dict[str, str] | None = None, **params: str,
) -> httpx.Response:
    """POST ``body`` as JSON (or raw ``content``), waiting out 429s: the session's tests share one
    client identity and its rate, which a fast machine's tests can use up."""
    response = http.post(path, json=body, content=content, headers=headers, params=params)
    for _ in range(30):
        if response.status_code != 429:
            break
        time.sleep(float(response.headers.get("Retry-After", "1")))
        response = http.post(path, json=body, content=content, headers=headers, params=params)
    return response


def submit_wait(http: httpx.Client, body: dict[str, Any], **params: str) -> dict[str, Any]:
    response = post(http, "/submissions", body, wait="true", **params)
    assert response.status_code == 201, response.text
    return dict(response.json())


def poll(http: httpx.Client, token: str, timeout: float = 60, **params: str) -> dict[str, Any]:
    """GET a submission until it leaves In Queue / Processing."""
    end = time.monotonic() + timeout
    while True:
        response = http.get(f"/submissions/{token}", params=params)
        assert response.status_code == 200, response.text
        data = dict(response.json())
        status = data.get("status") or {"id": data.get("status_id")}
        if status["id"] not in (1, 2) or time.monotonic() > end:
            return data
        time.sleep(0.1)


def b64(text: str | bytes) -> str:
    return base64.b64encode(text.encode() if isinstance(text, str) else text).decode()


def unb64(text: str | None) -> bytes:
    return base64.b64decode(text) if text else b""


# --- discovery -----------------------------------------------------------------------------------
def test_about_statuses_and_config(http: httpx.Client) -> None:
    about = http.get("/about").json()
    assert about["version"] == "1.13.1"
    statuses = http.get("/statuses").json()
    assert [s["id"] for s in statuses] == list(range(1, 15))
    names = {s["id"]: s["description"] for s in statuses}
    assert names[3] == "Accepted" and names[4] == "Wrong Answer" and names[6] == "Compilation Error"
    assert names[11] == "Runtime Error (NZEC)" and names[13] == "Internal Error" and names[14] == "Exec Format Error"
    config = http.get("/config_info").json()
    Config(**config)  # every attribute the SDK requires, with the right types
    assert config["enable_wait_result"] is True
    assert config["enable_batched_submissions"] is True


def test_languages(http: httpx.Client) -> None:
    languages = http.get("/languages").json()
    assert any(lang["id"] == PYTHON_ID for lang in languages)
    assert all(set(lang) == {"id", "name"} for lang in languages)
    python = http.get(f"/languages/{PYTHON_ID}").json()
    assert python["id"] == PYTHON_ID
    assert python["name"].startswith("Python")
    assert python["source_file"] == "main.py"
    assert python["compile_cmd"] is None
    assert "main.py" in python["run_cmd"]
    assert python["is_archived"] is False
    for missing in ("999999", "python"):
        response = http.get(f"/languages/{missing}")
        assert response.status_code == 404
        assert "error" in response.json()


# --- submissions -----------------------------------------------------------------------------------
def test_wait_true_hello_world_with_stdin_and_arguments(http: httpx.Client) -> None:
    body = {
        "language_id": PYTHON_ID,
        "source_code": "import sys\nprint('hello, ' + input(), sys.argv[1:])",
        "stdin": "judge0",
        "command_line_arguments": "one 'two three'",
    }
    result = submit_wait(http, body)
    assert set(result) == DEFAULT_FIELDS
    assert result["status"] == {"id": 3, "description": "Accepted"}
    assert result["stdout"] == "hello, judge0 ['one', 'two three']\n"
    assert result["stderr"] is None
    assert result["compile_output"] is None
    assert result["message"] is None
    assert isinstance(result["time"], str) and float(result["time"]) >= 0
    assert isinstance(result["memory"], int) and result["memory"] > 0


def test_wait_false_then_poll_by_token(http: httpx.Client) -> None:
    response = post(http, "/submissions", {"language_id": PYTHON_ID, "source_code": "print(6 * 7)"})
    assert response.status_code == 201, response.text
    assert set(response.json()) == {"token"}
    token = response.json()["token"]
    result = poll(http, token)
    assert set(result) == DEFAULT_FIELDS
    assert result["token"] == token
    assert result["status"]["id"] == 3
    assert result["stdout"] == "42\n"


def test_base64_round_trip(http: httpx.Client) -> None:
    # Binary stdin reaches the program byte for byte; text comes back Base64 encoded.
    source = "import sys\ndata = sys.stdin.buffer.read()\nprint(list(data[:2]), data[2:].decode()[::-1])"
    stdin = b"\xff\x00h\xc3\xa9llo"
    response = post(
        http,
        "/submissions",
        {"language_id": PYTHON_ID, "source_code": b64(source), "stdin": b64(stdin), "expected_output": b64("x")},
        base64_encoded="true",
    )
    assert response.status_code == 201, response.text
    token = response.json()["token"]
    result = poll(http, token, base64_encoded="true", fields="*")
    assert result["status"]["id"] == 4  # ran, and its output is not the expected "x"
    assert unb64(result["stdout"]).decode() == "[255, 0] olléh\n"
    assert unb64(result["source_code"]).decode() == source
    assert unb64(result["stdin"]) == stdin
    assert unb64(result["expected_output"]) == b"x"
    assert unb64(result["message"]) == b""
    # Without base64_encoded the stdin is not valid UTF-8, which Judge0 refuses to send raw.
    raw = http.get(f"/submissions/{token}", params={"fields": "stdin"})
    assert raw.status_code == 400
    assert "base64_encoded=true" in raw.json()["error"]
    assert http.get(f"/submissions/{token}").json()["stdout"] == "[255, 0] olléh\n"


def test_fields_filtering(http: httpx.Client) -> None:
    result = submit_wait(
        http, {"language_id": PYTHON_ID, "source_code": "print('x')"}, fields="stdout,status_id,language_id"
    )
    assert result == {"stdout": "x\n", "status_id": 3, "language_id": PYTHON_ID}
    token = submit_wait(http, {"language_id": PYTHON_ID, "source_code": "pass"}, fields="token")["token"]
    everything = http.get(f"/submissions/{token}", params={"fields": "*"}).json()
    for name in ("source_code", "language_id", "stdin", "expected_output", "status", "language", "created_at",
                 "finished_at", "wall_time", "exit_code", "exit_signal", "cpu_time_limit", "memory_limit"):
        assert name in everything
    assert everything["language"]["id"] == PYTHON_ID
    assert everything["exit_code"] == 0
    bad = http.get(f"/submissions/{everything['token']}", params={"fields": "stdout,bogus,nope"})
    assert bad.status_code == 400
    assert bad.json() == {"error": "invalid fields: [bogus, nope]"}


def test_expected_output_accepted_and_wrong_answer(http: httpx.Client) -> None:
    source = "print(input().upper())"
    accepted = submit_wait(
        http, {"language_id": PYTHON_ID, "source_code": source, "stdin": "abc", "expected_output": "ABC  \n\n"}
    )
    assert accepted["status"] == {"id": 3, "description": "Accepted"}
    wrong = submit_wait(
        http, {"language_id": PYTHON_ID, "source_code": source, "stdin": "abc", "expected_output": "abc"}
    )
    assert wrong["status"] == {"id": 4, "description": "Wrong Answer"}
    assert wrong["stdout"] == "ABC\n"


def test_non_zero_exit_is_nzec(http: httpx.Client) -> None:
    result = submit_wait(
        http,
        {"language_id": PYTHON_ID, "source_code": "import sys\nprint('oops', file=sys.stderr)\nsys.exit(3)"},
        fields="status,exit_code,exit_signal,stderr,message",
    )
    assert result["status"] == {"id": 11, "description": "Runtime Error (NZEC)"}
    assert result["exit_code"] == 3
    assert result["exit_signal"] is None
    assert result["stderr"] == "oops\n"
    assert result["message"] == "Exited with error status 3"


def test_signal_maps_to_its_runtime_error(http: httpx.Client) -> None:
    result = submit_wait(
        http, {"language_id": PYTHON_ID, "source_code": "import os, signal\nos.kill(os.getpid(), signal.SIGSEGV)"}
    )
    assert result["status"] == {"id": 7, "description": "Runtime Error (SIGSEGV)"}


def test_time_limit_exceeded(http: httpx.Client) -> None:
    started = time.monotonic()
    result = submit_wait(
        http, {"language_id": PYTHON_ID, "source_code": "import time\ntime.sleep(30)", "wall_time_limit": 1}
    )
    assert time.monotonic() - started < 20
    assert result["status"] == {"id": 5, "description": "Time Limit Exceeded"}
    cpu = submit_wait(http, {"language_id": PYTHON_ID, "source_code": "while True: pass", "cpu_time_limit": 1})
    assert cpu["status"]["id"] == 5


def test_limits_are_echoed_in_judge0_units(http: httpx.Client) -> None:
    result = submit_wait(
        http,
        {"language_id": PYTHON_ID, "source_code": "pass", "cpu_time_limit": 2, "memory_limit": 128000,
         "max_file_size": 2048, "max_processes_and_or_threads": 16},
        fields="cpu_time_limit,wall_time_limit,memory_limit,max_file_size,max_processes_and_or_threads,status",
    )
    assert result["status"]["id"] == 3
    assert float(result["cpu_time_limit"]) == 2.0
    assert float(result["wall_time_limit"]) >= 2.0
    assert result["memory_limit"] == 128000
    assert result["max_file_size"] == 2048
    assert result["max_processes_and_or_threads"] == 16


def test_additional_files_zip(http: httpx.Client) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("helper.py", "GREETING = 'from the zip'\n")
    result = submit_wait(
        http,
        {"language_id": PYTHON_ID, "source_code": "import helper\nprint(helper.GREETING)",
         "additional_files": b64(buffer.getvalue())},
    )
    assert result["stdout"] == "from the zip\n"


def zipped(*members: tuple[str | zipfile.ZipInfo, str]) -> str:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, content in members:
            archive.writestr(name, content)
    return b64(buffer.getvalue())


def test_additional_files_zip_with_folders(http: httpx.Client) -> None:
    files = zipped(("data/", ""), ("data/words.txt", "alpha beta\n"), ("./data/deeper/n.txt", "42\n"),
                   ("lib/helper.py", "def shout(s):\n    return s.upper()\n"))
    source = ("import os, sys\nsys.path.insert(0, 'lib')\nfrom helper import shout\n"
              "print(shout(open('data/words.txt').read().strip()), open('data/deeper/n.txt').read().strip())\n"
              "print(sorted(os.listdir('data')))")
    result = submit_wait(http, {"language_id": PYTHON_ID, "source_code": source, "additional_files": files})
    assert result["stdout"] == "ALPHA BETA 42\n['deeper', 'words.txt']\n", result


def test_additional_files_zips_that_would_leave_the_working_directory_are_422(http: httpx.Client) -> None:
    link = zipfile.ZipInfo("data/escape")
    link.external_attr = (0o120777 << 16)  # a symbolic link, as zip -y stores one
    for members, said in (
        ((("../outside.txt", "x"),), "may not hold paths leaving the working directory ('../outside.txt')"),
        ((("data/../../x", "x"),), "may not hold paths leaving the working directory"),
        ((("/etc/evil", "x"),), "may not hold absolute paths ('/etc/evil')"),
        (((link, "/etc/passwd"),), "may not hold symbolic links ('data/escape')"),
        ((("a/b/c/d/e/f/g/h/i/j/deep.txt", "x"),), "in at most 8 folders"),
        ((("data", "x"), ("data/x.txt", "y")), "would put a file inside another file"),
        (tuple((f"d/{i}.txt", "x") for i in range(33)), "may hold at most 32 files, not 33"),
        (tuple((f"d{i}/", "") for i in range(129)), "may hold at most 128 entries, not 129"),
    ):
        response = post(http, "/submissions", py(additional_files=zipped(*members)), wait="true")
        assert response.status_code == 422, response.text
        assert list(response.json()) == ["additional_files"], response.text
        assert said in response.json()["additional_files"][0], response.text


def test_redirect_stderr_to_stdout(http: httpx.Client) -> None:
    source = "import sys, time\nprint('a', flush=True)\ntime.sleep(0.3)\nprint('b', file=sys.stderr, flush=True)"
    result = submit_wait(
        http, {"language_id": PYTHON_ID, "source_code": source, "redirect_stderr_to_stdout": True}
    )
    assert result["stdout"] == "a\nb\n"
    assert result["stderr"] is None


def py(**extra: Any) -> dict[str, Any]:
    return {"source_code": "x", "language_id": PYTHON_ID, **extra}


@pytest.mark.parametrize(
    ("body", "errors"),
    [
        ({"language_id": PYTHON_ID}, {"source_code": ["can't be blank"]}),
        ({"source_code": "print(1)"}, {"language_id": ["can't be blank"]}),
        (py(language_id=150000), {"language_id": ["language with id 150000 doesn't exist"]}),
        (py(language_id=70), {"language_id": ["language with id 70 doesn't exist"]}),  # CE's Python 2.7
        ({}, {"source_code": ["can't be blank"], "language_id": ["can't be blank"]}),
        (py(wall_time_limit=100000), None),
        (py(cpu_time_limit="fast"), {"cpu_time_limit": ["is not a number"]}),
        (py(memory_limit=-1), {"memory_limit": ["must be greater than 0"]}),
        (py(enable_network=True), {"enable_network": ["this option cannot be enabled"]}),
        (py(command_line_arguments="'unclosed"), None),
        (py(additional_files="bm90IGEgemlw"), None),
        (py(callback_url="http://example.com/hook"), None),
        (["not", "an", "object"], {"submission": ["must be a JSON object"]}),
    ],
)
def test_invalid_submissions_get_422(http: httpx.Client, body: Any, errors: dict[str, list[str]] | None) -> None:
    response = post(http, "/submissions", body)
    assert response.status_code == 422, response.text
    payload = response.json()
    if errors is not None:
        assert payload == errors
    else:
        assert payload and all(isinstance(v, list) and v for v in payload.values())


def test_base64_flag_with_invalid_base64_is_422(http: httpx.Client) -> None:
    response = post(http, "/submissions", {"language_id": PYTHON_ID, "source_code": "abc"}, base64_encoded="true")
    assert response.status_code == 422
    assert "source_code" in response.json()


def test_malformed_json_and_unknown_tokens(http: httpx.Client) -> None:
    response = post(http, "/submissions", content=b"{oops", headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    assert "error" in response.json()
    for token in ("nope", "0" * 26, "01a2000000000000000000000z"):
        missing = http.get(f"/submissions/{token}")
        assert missing.status_code == 404, token
        assert "error" in missing.json()


def test_unknown_api_key_is_401_in_judge0_shape(http: httpx.Client) -> None:
    # Judge0 clients authenticate with X-Auth-Token; it is read as an API key.
    for headers in ({"X-Auth-Token": "not-a-key"}, {"Authorization": "Bearer not-a-key"}):
        response = http.post("/submissions", json={"language_id": PYTHON_ID, "source_code": "x"}, headers=headers)
        assert response.status_code == 401
        assert set(response.json()) == {"error"}


def test_compile_error_for_a_compiled_language(http: httpx.Client) -> None:
    compiled = [
        lang for lang in http.get("/languages").json()
        if http.get(f"/languages/{lang['id']}").json()["compile_cmd"] is not None
    ]
    if not compiled:
        pytest.skip("no compiled language is registered in this deployment")
    result = submit_wait(http, {"language_id": compiled[0]["id"], "source_code": "this is not ( a program"})
    assert result["status"] == {"id": 6, "description": "Compilation Error"}
    assert result["compile_output"]
    assert result["stdout"] is None


def test_batch_create_and_get(http: httpx.Client) -> None:
    batch = {
        "submissions": [
            {"language_id": PYTHON_ID, "source_code": b64("print('first')")},
            {"language_id": PYTHON_ID, "source_code": b64("print(input())"), "stdin": b64("second")},
            {"language_id": 150000, "source_code": b64("x")},
        ]
    }
    response = post(http, "/submissions/batch", batch, base64_encoded="true")
    assert response.status_code == 201, response.text
    answers = response.json()
    assert len(answers) == 3
    assert set(answers[0]) == {"token"} and set(answers[1]) == {"token"}
    assert answers[2] == {"language_id": ["language with id 150000 doesn't exist"]}
    tokens = [answers[0]["token"], answers[1]["token"], "0" * 26]
    end = time.monotonic() + 60
    while True:
        params = {"tokens": ",".join(tokens), "base64_encoded": "true", "fields": "token,stdout,status"}
        got = http.get("/submissions/batch", params=params)
        assert got.status_code == 200, got.text
        submissions = got.json()["submissions"]
        if all(s is None or s["status"]["id"] > 2 for s in submissions) or time.monotonic() > end:
            break
        time.sleep(0.1)
    assert submissions[2] is None
    assert [unb64(s["stdout"]) for s in submissions[:2]] == [b"first\n", b"second\n"]
    assert [s["token"] for s in submissions[:2]] == tokens[:2]


def test_batch_errors(http: httpx.Client) -> None:
    assert post(http, "/submissions/batch", {"submissions": []}).status_code == 400
    too_many = {"submissions": [{"language_id": PYTHON_ID, "source_code": "pass"}] * 21}
    response = post(http, "/submissions/batch", too_many)
    assert response.status_code == 400
    assert "less than or equal to 20" in response.json()["error"]
    none_valid = post(http, "/submissions/batch", {"submissions": [{"language_id": PYTHON_ID}]})
    assert none_valid.status_code == 422
    assert none_valid.json() == [{"source_code": ["can't be blank"]}]
    assert http.get("/submissions/batch").status_code == 400


# --- options and limits Judge0 enforces ----------------------------------------------------------------
C_ID = 50
DEEP_RECURSION_C = (
    "#include <stdio.h>\n"
    "static int depth(int n) { volatile char pad[1024]; pad[0] = 1; return n ? depth(n - 1) + pad[0] : 0; }\n"
    "int main(void) { printf(\"%d\\n\", depth(20000)); return 0; }\n"
)  # about 20 MB of stack


def test_compiler_options_reach_the_compiler(http: httpx.Client) -> None:
    source = '#include <stdio.h>\nint main(void) { printf("%s %d\\n", GREETING, ANSWER); return 0; }\n'
    result = submit_wait(
        http, {"language_id": C_ID, "source_code": source,
               "compiler_options": "-DGREETING='\"hi there\"' -DANSWER=42 -O0"},
        fields="status,stdout,compile_output,compiler_options",
    )
    assert result["status"]["id"] == 3, result
    assert result["stdout"] == "hi there 42\n"
    assert result["compiler_options"] == "-DGREETING='\"hi there\"' -DANSWER=42 -O0"
    # Without the options the same source does not compile: they really were used.
    failed = submit_wait(http, {"language_id": C_ID, "source_code": source}, fields="status,compile_output")
    assert failed["status"]["id"] == 6 and "GREETING" in failed["compile_output"]


def test_compiler_options_refused_where_not_honoured(http: httpx.Client) -> None:
    response = post(http, "/submissions", py(compiler_options="-O2"))
    assert response.status_code == 422
    (message,) = response.json()["compiler_options"]
    assert message.startswith("setting compiler options is only allowed for ") and "C (GCC" in message
    config = http.get("/config_info").json()
    assert config["enable_compiler_options"] is True
    assert any(name.startswith("C (GCC") for name in config["allowed_languages_for_compile_options"])


def test_stack_limit_is_enforced(http: httpx.Client) -> None:
    roomy = submit_wait(http, {"language_id": C_ID, "source_code": DEEP_RECURSION_C},
                        fields="status,stdout,stack_limit")
    assert roomy["status"]["id"] == 3, roomy
    assert roomy["stdout"] == "20000\n" and roomy["stack_limit"] == 64000
    tight = submit_wait(http, {"language_id": C_ID, "source_code": DEEP_RECURSION_C, "stack_limit": 4000},
                        fields="status,stdout,exit_code,exit_signal,stack_limit")
    assert tight["status"] == {"id": 7, "description": "Runtime Error (SIGSEGV)"}, tight
    # isolate reports no exit code for a signalled process; Judge0 answers 0 and the signal.
    assert tight["exit_code"] == 0 and tight["exit_signal"] == 11
    assert tight["stack_limit"] == 4000


def test_cpu_extra_time_lets_a_program_finish_but_still_judges_the_limit(http: httpx.Client) -> None:
    # 0.8 s of CPU against a 0.5 s limit: isolate (-x 2) lets it finish and Judge0 says TLE.
    # The wall clock is the maximum, so a loaded machine cannot cut the program short.
    source = "import time\nend = time.process_time() + 0.8\nwhile time.process_time() < end: pass\nprint('done')"
    result = submit_wait(
        http, {"language_id": PYTHON_ID, "source_code": source, "cpu_time_limit": 0.5, "cpu_extra_time": 2,
               "wall_time_limit": 30},
        fields="status,stdout,time,cpu_time_limit,cpu_extra_time",
    )
    assert result["status"] == {"id": 5, "description": "Time Limit Exceeded"}
    assert result["stdout"] == "done\n", result
    assert float(result["time"]) > 0.5
    assert (result["cpu_time_limit"], result["cpu_extra_time"]) == ("0.5", "2.0")


def test_number_of_runs_runs_the_program_that_many_times(http: httpx.Client) -> None:
    source = "print('run', input())"
    result = submit_wait(
        http, {"language_id": PYTHON_ID, "source_code": source, "stdin": "x", "expected_output": "run x",
               "number_of_runs": 3}, fields="token,status,stdout,time,memory,number_of_runs",
    )
    assert result["status"] == {"id": 3, "description": "Accepted"}, result
    assert result["stdout"] == "run x\n" and result["number_of_runs"] == 3
    assert float(result["time"]) >= 0 and result["memory"] > 0
    # The job behind the token ran three times (the native API shows each run).
    native = http.get(f"/api/v1/jobs/{result['token']}").json()
    assert [t["verdict"] for t in native["result"]["tests"]] == ["accepted"] * 3
    # Without expected_output any output is accepted; a failing run is reported as Judge0 does.
    plain = submit_wait(http, {"language_id": PYTHON_ID, "source_code": "print(7)", "number_of_runs": 2})
    assert plain["status"]["id"] == 3 and plain["stdout"] == "7\n"
    failing = submit_wait(
        http, {"language_id": PYTHON_ID, "source_code": "import sys; print('out'); sys.exit(2)", "number_of_runs": 2},
        fields="status,stdout,exit_code,message",
    )
    assert failing == {"status": {"id": 11, "description": "Runtime Error (NZEC)"}, "stdout": "out\n",
                       "exit_code": 2, "message": "Exited with error status 2"}


@pytest.mark.parametrize(
    ("body", "errors"),
    [
        (py(number_of_runs=21), {"number_of_runs": ["must be less than or equal to 20"]}),
        (py(enable_per_process_and_thread_time_limit=True),
         {"enable_per_process_and_thread_time_limit": ["this option cannot be enabled"]}),
        (py(enable_per_process_and_thread_memory_limit="true"),
         {"enable_per_process_and_thread_memory_limit": ["this option cannot be enabled"]}),
        (py(stack_limit=128001), {"stack_limit": ["must be less than or equal to 128000"]}),
    ],
)
def test_options_refused_in_judge0_shape(http: httpx.Client, body: Any, errors: dict[str, list[str]]) -> None:
    response = post(http, "/submissions", body)
    assert response.status_code == 422, response.text
    assert response.json() == errors


# --- listing and information endpoints -------------------------------------------------------------
def test_list_of_own_submissions_paginated_newest_first(http: httpx.Client) -> None:
    keyed = {"X-Auth-Token": API_KEY}
    tokens = []
    for n in range(3):
        response = http.post("/submissions", params={"wait": "true"}, headers=keyed,
                             json={"language_id": PYTHON_ID, "source_code": f"print({n})"})
        assert response.status_code == 201, response.text
        tokens.append(response.json()["token"])
    first = http.get("/submissions", headers=keyed, params={"per_page": "2", "fields": "token,stdout,status_id"})
    assert first.status_code == 200, first.text
    page = first.json()
    assert [s["token"] for s in page["submissions"]] == tokens[:0:-1]  # the two newest, newest first
    assert page["submissions"][0] == {"token": tokens[2], "stdout": "2\n", "status_id": 3}
    meta = page["meta"]
    assert meta["current_page"] == 1 and meta["prev_page"] is None and meta["next_page"] == 2
    assert meta["total_count"] >= 3 and meta["total_pages"] == -(-meta["total_count"] // 2)
    second = http.get("/submissions", headers=keyed, params={"per_page": "2", "page": "2", "fields": "token"}).json()
    assert second["submissions"][0]["token"] == tokens[0]
    assert second["meta"]["prev_page"] == 1
    bad_page = http.get("/submissions", headers=keyed, params={"page": "0"})
    assert bad_page.json() == {"error": "invalid page: 0"}
    bad_size = http.get("/submissions", headers=keyed, params={"per_page": "-1"})
    assert bad_size.json() == {"error": "invalid per_page: -1"}
    # An address proves no authorship: anonymous callers may not list.
    anonymous = http.get("/submissions")
    assert anonymous.status_code == 403 and set(anonymous.json()) == {"error"}


def test_statistics_workers_and_system_info(http: httpx.Client) -> None:
    submit_wait(http, {"language_id": PYTHON_ID, "source_code": "print(1)"})
    stats = http.get("/statistics").json()
    assert stats["submissions"]["total"] >= 1 and stats["submissions"]["today"] >= 1
    assert len(stats["submissions"]["last_30_days"]) == 30
    assert any(row["language"]["id"] == PYTHON_ID and row["count"] >= 1 for row in stats["languages"])
    assert any(row["status"] == {"id": 3, "name": "Accepted"} for row in stats["statuses"])
    workers = {row["queue"]: row for row in http.get("/workers").json()}
    assert workers["python"]["available"] >= 1
    assert workers["python"]["idle"] + workers["python"]["working"] == workers["python"]["available"]
    info = http.get("/system_info").json()
    assert int(info["CPU(s)"]) >= 1 and info["Mem"] and info["Architecture"]


def test_x_auth_token_is_read_from_the_header_or_a_parameter(http: httpx.Client) -> None:
    assert http.post("/authenticate").status_code == 200  # this deployment requires no key
    assert http.post("/authenticate", headers={"X-Auth-Token": "not-a-key"}).status_code == 401
    assert http.post("/authenticate", params={"X-Auth-Token": "not-a-key"}).status_code == 401
    assert http.post("/authenticate", params={"X-Auth-Token": API_KEY}).status_code == 200
    assert http.post("/authenticate", headers={"X-Auth-Token": API_KEY}).status_code == 200
    response = http.post("/submissions", params={"X-Auth-Token": "not-a-key"}, json=py())
    assert response.status_code == 401 and set(response.json()) == {"error"}
    assert http.post("/authorize").status_code == 403


# --- the official SDK ------------------------------------------------------------------------------
def test_official_judge0_client_end_to_end(service: Service) -> None:
    # The SDK's documented way to use a self-hosted Judge0, with its auth token: this file's tests
    # share one anonymous identity and its allowance, and on a 429 the SDK returns None instead
    # of raising (a batch then fails as "'NoneType' object is not iterable").
    client = judge0.Client(service.url, headers={"X-Auth-Token": API_KEY})
    assert client.version == "1.13.1"
    assert client.is_language_supported(judge0.PYTHON)

    result = judge0.run(client=client, source_code="print(input()[::-1])", language=judge0.PYTHON, stdin="abc")
    assert result.status == judge0.Status.ACCEPTED
    assert result.stdout == "cba\n"
    assert result.time is not None and result.memory is not None
    assert result.source_code == "print(input()[::-1])"  # answered back with fields=*

    # Several test cases: created with one batch request, polled with batch GETs.
    results = judge0.run(
        client=client,
        source_code="print(input().upper())",
        language=judge0.PYTHON,
        test_cases=[("a", "A"), ("b", "wrong"), judge0.TestCase(input="c", expected_output="C")],
    )
    assert [r.status for r in results] == [
        judge0.Status.ACCEPTED, judge0.Status.WRONG_ANSWER, judge0.Status.ACCEPTED
    ]
    assert [r.stdout for r in results] == ["A\n", "B\n", "C\n"]

    failing = judge0.run(
        client=client, submissions=judge0.Submission(source_code="import sys; sys.exit(4)", language=PYTHON_ID)
    )
    assert failing.status == judge0.Status.RUNTIME_ERROR_NZEC
    assert failing.exit_code == 4

    pending = judge0.async_run(client=client, source_code="print('later')", language=judge0.PYTHON)
    assert pending.token
    done = judge0.wait(client=client, submissions=pending)
    assert done.stdout == "later\n"


def test_official_client_across_languages_with_options_and_callbacks(service: Service) -> None:
    """The SDK, unchanged, runs every core language id: stdin, arguments, expected_output,
    compiler_options where the compiler takes them, and each submission's callback arrives."""
    units = [unit for unit in Registry.load(CORE_LANGUAGES) if unit.judge0_id]
    assert len(units) >= 10
    # A key, sent as Judge0's X-Auth-Token: eleven jobs at once exceed the anonymous allowance.
    client = judge0.Client(service.url, headers={"X-Auth-Token": API_KEY})
    with receiving() as receiver:
        submissions = []
        for unit in units:
            options = "-O0 -Wall" if unit.name in ("c", "cpp") else None
            submissions.append(judge0.Submission(
                source_code=PROGRAMS[unit.name].echo, language=unit.judge0_id, stdin=STDIN,
                command_line_arguments=" ".join(shlex.quote(arg) for arg in ARGS), expected_output=ECHOED,
                compiler_options=options, callback_url=f"{receiver.url}/sdk/{unit.judge0_id}",
            ))
        results = judge0.run(client=client, submissions=submissions)
        for unit, result in zip(units, results, strict=True):
            assert result.status == judge0.Status.ACCEPTED, (unit.key, result.status, result.compile_output)
            assert result.stdout == ECHOED, unit.key
        for unit, result in zip(units, results, strict=True):
            (delivery,) = receiver.wait(f"/sdk/{unit.judge0_id}", 1, timeout=60)
            body = json.loads(delivery.body)
            assert delivery.method == "PUT" and body["token"] == result.token
            assert body["status"]["id"] == 3 and base64.b64decode(body["stdout"]).decode() == ECHOED
            assert verify(CALLBACK_SECRET, delivery.headers["Runbox-Signature"], delivery.body)
