"""The Piston v2 compatible API against a real gateway, executor, RabbitMQ and Docker."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from websockets.sync.client import connect as ws_connect

from tests.piston_ws import closed_with, output_until, receive, ws_url
from tests.runbox_client import Service

HELLO = "import sys\nname = input()\nprint(f'hello, {name}', sys.argv[1:])\n"


@pytest.fixture()
def http(service: Service) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=service.url, timeout=120) as client:
        yield client


def execute(
    http: httpx.Client, body: dict[str, Any] | None = None, *, content: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    """POST /api/v2/execute (``body`` as JSON, or raw ``content``), waiting out 429s: the session's
    tests share one client identity and its rate, which a fast machine's tests can use up."""
    response = http.post("/api/v2/execute", json=body, content=content, headers=headers)
    for _ in range(30):
        if response.status_code != 429:
            break
        time.sleep(float(response.headers.get("Retry-After", "1")))
        response = http.post("/api/v2/execute", json=body, content=content, headers=headers)
    return response


def ok(http: httpx.Client, body: dict[str, Any]) -> dict[str, Any]:
    response = execute(http, body)
    assert response.status_code == 200, response.text
    return dict(response.json())


def python(source: str, **extra: Any) -> dict[str, Any]:
    return {"language": "python", "version": "*", "files": [{"name": "main.py", "content": source}], **extra}


def test_runtimes_lists_the_registry(http: httpx.Client) -> None:
    response = http.get("/api/v2/runtimes")
    assert response.status_code == 200
    runtimes = response.json()
    assert isinstance(runtimes, list) and runtimes
    for runtime in runtimes:
        assert isinstance(runtime["language"], str) and runtime["language"]
        assert isinstance(runtime["version"], str) and runtime["version"]
        assert isinstance(runtime["aliases"], list)
    by_name = {r["language"]: r for r in runtimes}
    v1 = {lang["name"]: lang for lang in http.get("/api/v1/languages").json()}
    assert by_name["python"]["version"] == v1["python"]["version"]
    assert "py" in by_name["python"]["aliases"]


def test_hello_world_with_stdin_and_args(http: httpx.Client) -> None:
    version = http.get("/api/v1/languages").json()
    python_version = next(lang["version"] for lang in version if lang["name"] == "python")
    # Piston clients usually name the exact version; an alias selects the language too.
    body = python(HELLO, stdin="runbox\n", args=["a", "b c"])
    body.update(language="py", version=python_version)
    answer = ok(http, body)
    assert answer["language"] == "python"
    assert answer["version"] == python_version
    assert "compile" not in answer  # python has no compile stage
    run = answer["run"]
    assert run["stdout"] == "hello, runbox ['a', 'b c']\n"
    assert run["stderr"] == ""
    assert run["output"] == run["stdout"]
    assert run["code"] == 0
    assert run["signal"] is None


def test_output_interleaves_stdout_and_stderr(http: httpx.Client) -> None:
    source = "import sys, time\nprint('one', flush=True)\ntime.sleep(0.3)\nprint('two', file=sys.stderr, flush=True)\n"
    run = ok(http, python(source))["run"]
    assert run["stdout"] == "one\n"
    assert run["stderr"] == "two\n"
    assert run["output"] == "one\ntwo\n"


def test_version_selectors(http: httpx.Client) -> None:
    version = next(r["version"] for r in http.get("/api/v2/runtimes").json() if r["language"] == "python")
    major = version.split(".")[0]
    minor = ".".join(version.split(".")[:2])
    # As Piston's semver.satisfies: exact, prefixes, wildcards and npm ranges.
    selectors = ("*", major, version, f"{minor}.x", f"^{major}.0.0", f">={major}.0.0 <{int(major) + 1}.0.0")
    for selector in selectors:
        answer = ok(http, python("print(1)", version=selector))
        assert (answer["run"]["stdout"], answer["version"]) == ("1\n", version), selector
    for unknown in (f"{major}.{int(version.split('.')[1]) + 40}.0", f"^{int(major) + 1}", "not-a-version"):
        response = execute(http, python("print(1)", version=unknown))
        assert response.status_code == 400 and "runtime is unknown" in response.json()["message"], unknown


def test_extra_files_and_encodings(http: httpx.Client) -> None:
    body = {
        "language": "python",
        "version": "*",
        "files": [
            {"name": "whatever.py",
             "content": "import helper, pkg.mod\nprint(helper.VALUE, pkg.mod.X, open('assets/data.bin', 'rb').read())"},
            {"name": "helper.py", "content": "VALUE = 42\n"},
            {"name": "pkg/mod.py", "content": "X = 'deep'\n"},  # files in folders, as Piston writes them
            {"name": "assets/data.bin", "content": base64.b64encode(b"\x00\xffraw").decode(), "encoding": "base64"},
        ],
    }
    assert ok(http, body)["run"]["stdout"] == "42 deep b'\\x00\\xffraw'\n"


def test_non_zero_exit(http: httpx.Client) -> None:
    run = ok(http, python("import sys\nprint('bye', file=sys.stderr)\nsys.exit(3)"))["run"]
    assert run["code"] == 3
    assert run["signal"] is None
    assert run["stderr"] == "bye\n"
    assert run["status"] == "RE"


def test_timeout_is_reported_as_sigkill(http: httpx.Client) -> None:
    started = time.monotonic()
    run = ok(http, python("import time\nprint('start', flush=True)\ntime.sleep(30)", run_timeout=1000))["run"]
    assert time.monotonic() - started < 20
    assert run["signal"] == "SIGKILL"
    assert run["code"] is None
    assert run["status"] == "TO"
    assert run["stdout"] == "start\n", run


def test_memory_limit_in_bytes(http: httpx.Client) -> None:
    source = "x = bytearray(200 * 1024 * 1024)\nprint('allocated')"
    run = ok(http, python(source, run_memory_limit=64 * 1024 * 1024))["run"]
    assert "allocated" not in run["stdout"]
    assert run["code"] != 0 or run["signal"] is not None
    # -1 means "the default limit", under which the same program runs.
    assert ok(http, python("print('fine')", run_memory_limit=-1))["run"]["stdout"] == "fine\n"


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"language": "cobol-2000", "version": "*", "files": [{"content": "x"}]}, "runtime is unknown"),
        ({"language": "python", "version": "0.0.1", "files": [{"content": "x"}]}, "runtime is unknown"),
        ({"language": "python", "version": "*"}, "files is required as an array"),
        ({"language": "python", "version": "*", "files": "print(1)"}, "files is required as an array"),
        ({"language": "python", "version": "*", "files": [{"name": "a.py"}]}, "files[0].content is required"),
        ({"language": "python", "version": "*", "files": []}, "at least one utf8 encoded file"),
        ({"version": "*", "files": [{"content": "x"}]}, "language is required as a string"),
        ({"language": 7, "version": "*", "files": [{"content": "x"}]}, "language is required as a string"),
        ({"language": "python", "version": 3, "files": [{"content": "x"}]}, "version is required as a string"),
        ({"language": "python", "files": [{"content": "x"}], "run_timeout": 10**9}, "cannot exceed"),
        ({"language": "python", "files": [{"content": "x"}], "run_timeout": "soon"}, "must be a number"),
        ({"language": "python", "files": [{"content": "x"}], "run_memory_limit": -5}, "non-negative"),
        ({"language": "python", "files": [{"content": "x"}], "args": "a b"}, "args"),
        ({"language": "python", "files": [{"content": "x"}], "stdin": 5}, "stdin"),
        ({"language": "python", "files": [{"content": "x"}, {"name": "../x", "content": ""}]}, "not allowed"),
        ({"language": "python", "files": [{"content": "x"}, {"name": "a/../../x", "content": ""}]}, "not allowed"),
        ({"language": "python", "files": [{"content": "x"}, {"name": "/etc/x", "content": ""}]}, "not allowed"),
        ({"language": "python", "files": [{"content": "abc", "encoding": "base64"}, {"content": "y"}]}, "base64"),
    ],
)
def test_bad_input_gets_a_400_message(http: httpx.Client, body: dict[str, Any], fragment: str) -> None:
    response = execute(http, body)
    assert response.status_code == 400, response.text
    payload = response.json()
    assert set(payload) == {"message"}
    assert fragment in payload["message"]


def test_malformed_bodies(http: httpx.Client) -> None:
    for content in (b"{not json", b"", b"[1, 2]"):
        response = execute(http, content=content, headers={"Content-Type": "application/json"})
        assert response.status_code == 400, response.text
        assert isinstance(response.json()["message"], str)


def test_unknown_api_key_is_401_in_piston_shape(http: httpx.Client) -> None:
    response = http.post("/api/v2/execute", json=python("print(1)"), headers={"Authorization": "Bearer not-a-key"})
    assert response.status_code == 401
    assert set(response.json()) == {"message"}


def test_compile_error_for_a_compiled_language(http: httpx.Client) -> None:
    compiled = [lang for lang in http.get("/api/v1/languages").json() if lang["compiled"]]
    if not compiled:
        pytest.skip("no compiled language is registered in this deployment")
    # Our language names are accepted alongside Piston's names and aliases.
    name = compiled[0]["name"]
    answer = ok(http, {"language": name, "version": "*", "files": [{"content": "this is not ( a program"}]})
    compile_stage = answer["compile"]
    assert compile_stage["code"] not in (0, None)
    assert compile_stage["output"]
    # The program never ran; the run stage repeats the compile stage, as Piston does.
    assert answer["run"] == compile_stage


JAVA_SOLUTION = """import java.util.Scanner;

// Not named Main, in a file called Main.java: Piston runs it all the same.
public class Solution {
    public static void main(String[] args) {
        Scanner in = new Scanner(System.in);
        System.out.println("hi " + in.nextLine() + " " + String.join(",", args) + " " + Helper.twice(21));
    }
}
"""


def test_java_public_class_compiles_and_runs_under_its_own_name(http: httpx.Client) -> None:
    files = [
        {"name": "Main.java", "content": JAVA_SOLUTION},
        {"name": "Helper.java", "content": "class Helper { static int twice(int x) { return 2 * x; } }\n"},
    ]
    # A generous run_timeout: a JVM under gVisor on a loaded machine can take Piston's 3 s default.
    body = {"language": "java", "version": "*", "files": files, "stdin": "there", "args": ["a", "b"],
            "run_timeout": 15000, "run_cpu_time": 15000}
    answer = ok(http, body)
    assert answer["compile"]["code"] == 0, answer["compile"]
    assert answer["run"]["stdout"] == "hi there a,b 42\n", answer["run"]


def test_stdin_gets_a_final_newline_as_in_piston(http: httpx.Client) -> None:
    script = 'read -r a; read -r b; echo "[$a][$b]"; read -r c || echo "end"'
    body = {"language": "bash", "version": "*", "files": [{"name": "x.sh", "content": script}], "stdin": "one\ntwo"}
    assert ok(http, body)["run"]["stdout"] == "[one][two]\nend\n"
    # No stdin at all is one empty line, as in Piston.
    count = {"language": "python", "files": [{"content": "import sys; print(repr(sys.stdin.read()))"}]}
    assert ok(http, count)["run"]["stdout"] == "'\\n'\n"


C_HELLO = "#include <stdio.h>\nint main(void) { puts(\"hi\"); return 0; }\n"


def test_compile_limits_apply_to_the_compile_step(http: httpx.Client) -> None:
    fine = ok(http, {"language": "c", "files": [{"name": "a.c", "content": C_HELLO}], "compile_timeout": 10000})
    assert (fine["compile"]["code"], fine["run"]["stdout"]) == (0, "hi\n")
    slow = ok(http, {"language": "c", "files": [{"content": C_HELLO}], "compile_timeout": 1})
    assert slow["compile"]["status"] == "TO" and slow["compile"]["signal"] == "SIGKILL", slow["compile"]
    assert slow["run"] == slow["compile"]  # the program never ran
    small = ok(http, {"language": "c", "files": [{"content": C_HELLO}], "compile_memory_limit": 1024 * 1024})
    assert small["compile"]["status"] == "SG" and small["compile"]["message"] == "Memory limit exceeded", small
    # The compile step's own budget is the ceiling, as Piston's configured limit is.
    refused = execute(http, {"language": "c", "files": [{"content": C_HELLO}], "compile_timeout": 10**7})
    assert refused.status_code == 400 and "compile_timeout cannot exceed" in refused.json()["message"]


def test_default_run_timeout_is_pistons_three_seconds(http: httpx.Client) -> None:
    run = ok(http, python("import time\ntime.sleep(10)\nprint('late')"))["run"]
    assert (run["status"], run["signal"], run["stdout"]) == ("TO", "SIGKILL", ""), run
    assert run["wall_time"] is None or run["wall_time"] < 9000


def test_packages_list_every_runtime_installed(http: httpx.Client) -> None:
    packages = http.get("/api/v2/packages")
    assert packages.status_code == 200
    runtimes = {(r["language"], r["version"]) for r in http.get("/api/v2/runtimes").json()}
    listed = {(p["language"], p["language_version"]) for p in packages.json()}
    assert listed == runtimes
    assert all(p["installed"] is True and set(p) == {"language", "language_version", "installed"}
               for p in packages.json())
    assert http.post("/api/v2/packages", json={"language": "python", "version": "*"}).status_code == 405


# --- /api/v2/connect ---------------------------------------------------------------------------
ECHO = "while True:\n    line = input()\n    if line == 'bye':\n        break\n    print(line.upper())\nprint('done')\n"
C_ECHO = "#include <stdio.h>\nint main(void) { char s[64]; if (fgets(s, 64, stdin)) printf(\"c:%s\", s); return 4; }\n"


def test_interactive_session_line_by_line(service: Service) -> None:
    init = {"type": "init", "language": "python", "version": "3.x", "files": [{"content": ECHO}],
            "run_timeout": 20000}
    with ws_connect(ws_url(service)) as ws:
        ws.send(json.dumps(init))
        runtime = receive(ws)
        assert runtime["type"] == "runtime" and runtime["language"] == "python", runtime
        assert receive(ws) == {"type": "stage", "stage": "run"}
        for line in ("hello", "line by line"):
            ws.send(json.dumps({"type": "data", "stream": "stdin", "data": line + "\n"}))
            output_until(ws, line.upper() + "\n")
        ws.send(json.dumps({"type": "data", "stream": "stdin", "data": "bye\n"}))
        output_until(ws, "done\n")
        code, rest = closed_with(ws)
    assert rest == [{"type": "exit", "stage": "run", "code": 0, "signal": None}]
    assert code == 4999


def test_interactive_compiled_program_reports_both_stages(service: Service) -> None:
    init = {"type": "init", "language": "c", "version": "*", "files": [{"name": "echo.c", "content": C_ECHO}],
            "run_timeout": 20000}
    with ws_connect(ws_url(service)) as ws:
        ws.send(json.dumps(init))
        assert receive(ws)["type"] == "runtime"
        assert receive(ws) == {"type": "stage", "stage": "compile"}
        assert receive(ws) == {"type": "exit", "stage": "compile", "code": 0, "signal": None}
        assert receive(ws) == {"type": "stage", "stage": "run"}
        ws.send(json.dumps({"type": "data", "stream": "stdin", "data": "typed\n"}))
        output_until(ws, "c:typed\n")
        code, rest = closed_with(ws)
    assert (code, rest) == (4999, [{"type": "exit", "stage": "run", "code": 4, "signal": None}])


def test_connect_protocol_errors_close_with_pistons_codes(service: Service) -> None:
    with ws_connect(ws_url(service)) as ws:  # nothing sent: closed after a second
        assert closed_with(ws) == (4001, [])
    with ws_connect(ws_url(service)) as ws:
        ws.send(json.dumps({"type": "data", "stream": "stdin", "data": "early"}))
        assert closed_with(ws) == (4003, [])
    with ws_connect(ws_url(service)) as ws:
        ws.send(json.dumps({"type": "init", "language": "cobol-2000", "version": "*", "files": [{"content": "x"}]}))
        code, seen = closed_with(ws)
        assert code == 4002 and seen[0]["type"] == "error" and "runtime is unknown" in seen[0]["message"]
    init = {"type": "init", "language": "python", "files": [{"content": "input()"}], "run_timeout": 20000}
    for message, expected, said in (
        ({"type": "signal", "signal": "SIGNOPE"}, 4005, '"SIGNOPE" is not a signal; send one of SIGABRT'),
        ({"type": "signal", "signal": 9}, 4005, "9 is not a signal"),
        ({"type": "signal", "signal": "SIGEMT"}, 4002, "SIGEMT is not a signal on Linux"),
        ({"type": "data", "stream": "stdout", "data": "x"}, 4004, None),
        (init, 4000, None),
    ):
        with ws_connect(ws_url(service)) as ws:
            ws.send(json.dumps(init))
            assert receive(ws)["type"] == "runtime"
            ws.send(json.dumps(message))
            code, seen = closed_with(ws)
            assert code == expected, message
            errors = [m["message"] for m in seen if m["type"] == "error"]
            assert (errors[0].startswith(said) if said else errors == []), (message, seen)
