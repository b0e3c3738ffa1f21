"""Every language of the registry, end to end through one real service (RabbitMQ + Docker).

For each language: hello world, stdin and command-line arguments, a program of several files,
a runtime error, and for compiled languages a syntax error that ends ``compile_error``.
A language's jobs are submitted together the first time one of its tests asks for a result,
so its programs run side by side while the tests read the results one after the other.
A last check runs each image's ``version_command`` and compares it with the declared version.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from app.config import Settings
from app.executor.sandbox import container_memory_mb
from app.images import build
from app.languages import Language, Registry
from tests.runbox_client import Client, Service, SseEvent

REGISTRY = Registry.load(image_tag=Settings.from_env().image_tag)
LANGUAGES = REGISTRY.names()
COMPILED = [lang.name for lang in REGISTRY if lang.compiled]

HELLO = "hello, world\n"
STDIN = "first line\nsecond line\n"
ARGS = ["a", "b c"]
ECHOED = "args=a|b c\nline=first line\n"
GREETED = "hello, runbox\n"


@dataclass
class Programs:
    """One language's test programs. ``files`` are the extra files of the multi-file program."""

    hello: str
    echo: str  # prints "args=" + the arguments joined by "|", then "line=" + the first line of stdin
    multi: str  # prints greet("runbox") with greet defined in ``files``
    files: dict[str, str]
    crash: str  # fails at run time
    crash_exit: int | None  # the expected exit code, or None when a signal ends it
    crash_signal: int | None = None
    crash_stderr: str = ""
    syntax_error: str = ""  # compiled languages only


PROGRAMS: dict[str, Programs] = {
    "python": Programs(
        hello='print("hello, world")\n',
        echo='import sys\nprint("args=" + "|".join(sys.argv[1:]))\nprint("line=" + input())\n',
        multi='from util import greet\n\nprint(greet("runbox"))\n',
        files={"util.py": 'def greet(name):\n    return "hello, " + name\n'},
        crash='raise ValueError("boom")\n',
        crash_exit=1,
        crash_stderr="ValueError: boom",
    ),
    "javascript": Programs(
        hello='console.log("hello, world");\n',
        echo=(
            'const lines = require("fs").readFileSync(0, "utf8").split("\\n");\n'
            'console.log("args=" + process.argv.slice(2).join("|"));\n'
            'console.log("line=" + lines[0]);\n'
        ),
        multi='const { greet } = require("./util");\n\nconsole.log(greet("runbox"));\n',
        files={"util.js": 'exports.greet = (name) => "hello, " + name;\n'},
        crash='null.boom();\n',
        crash_exit=1,
        crash_stderr="TypeError",
    ),
    "c": Programs(
        hello='#include <stdio.h>\n\nint main(void) {\n    printf("hello, world\\n");\n    return 0;\n}\n',
        echo=(
            "#include <stdio.h>\n#include <string.h>\n\n"
            "int main(int argc, char **argv) {\n"
            '    char line[256] = "";\n'
            '    printf("args=");\n'
            '    for (int i = 1; i < argc; i++) printf("%s%s", i > 1 ? "|" : "", argv[i]);\n'
            "    if (fgets(line, sizeof line, stdin)) line[strcspn(line, \"\\n\")] = 0;\n"
            '    printf("\\nline=%s\\n", line);\n'
            "    return 0;\n}\n"
        ),
        multi=(
            '#include <stdio.h>\n#include "util.h"\n\n'
            'int main(void) {\n    char buf[64];\n    greet(buf, sizeof buf, "runbox");\n'
            "    puts(buf);\n    return 0;\n}\n"
        ),
        files={
            "util.h": "#include <stddef.h>\nvoid greet(char *out, size_t size, const char *name);\n",
            # sqrt of a run-time value: the program needs libm (-lm) to link.
            "util.c": (
                '#include <math.h>\n#include <stdio.h>\n#include <string.h>\n#include "util.h"\n\n'
                "void greet(char *out, size_t size, const char *name) {\n"
                "    double n = (double)strlen(name);\n"
                '    snprintf(out, size, "hello, %.*s", (int)sqrt(n * n), name);\n}\n'
            ),
        },
        crash='#include <stdio.h>\n#include <stdlib.h>\n\nint main(void) {\n    fputs("boom\\n", stderr);\n'
              "    exit(3);\n}\n",
        crash_exit=3,
        crash_stderr="boom",
        syntax_error="int main(void) {\n    return 0\n}\n",
    ),
    "cpp": Programs(
        hello='#include <iostream>\n\nint main() {\n    std::cout << "hello, world" << std::endl;\n}\n',
        echo=(
            "#include <iostream>\n#include <string>\n\n"
            "int main(int argc, char **argv) {\n"
            "    std::string line;\n    std::getline(std::cin, line);\n"
            '    std::cout << "args=";\n'
            '    for (int i = 1; i < argc; ++i) std::cout << (i > 1 ? "|" : "") << argv[i];\n'
            '    std::cout << "\\nline=" << line << "\\n";\n}\n'
        ),
        multi=(
            '#include <iostream>\n#include "util.hpp"\n\n'
            'int main() {\n    std::cout << greet("runbox") << "\\n";\n}\n'
        ),
        files={
            "util.hpp": "#include <string>\nstd::string greet(const std::string &name);\n",
            "util.cpp": (
                '#include "util.hpp"\n\n'
                'std::string greet(const std::string &name) {\n    return "hello, " + name;\n}\n'
            ),
        },
        # An uncaught exception: std::terminate aborts the process.
        crash=(
            "#include <vector>\n\n"
            "int main(int argc, char **) {\n    std::vector<int> v;\n    return v.at(argc + 2);\n}\n"
        ),
        crash_exit=None,
        crash_signal=6,
        crash_stderr="std::out_of_range",
        syntax_error="int main() {\n    return 0\n}\n",
    ),
    "go": Programs(
        hello='package main\n\nimport "fmt"\n\nfunc main() {\n\tfmt.Println("hello, world")\n}\n',
        echo=(
            'package main\n\nimport (\n\t"bufio"\n\t"fmt"\n\t"os"\n\t"strings"\n)\n\n'
            "func main() {\n"
            "\tline, _ := bufio.NewReader(os.Stdin).ReadString('\\n')\n"
            '\tfmt.Println("args=" + strings.Join(os.Args[1:], "|"))\n'
            '\tfmt.Println("line=" + strings.TrimRight(line, "\\n"))\n}\n'
        ),
        multi='package main\n\nimport "fmt"\n\nfunc main() {\n\tfmt.Println(greet("runbox"))\n}\n',
        files={"util.go": 'package main\n\nfunc greet(name string) string {\n\treturn "hello, " + name\n}\n'},
        crash='package main\n\nfunc main() {\n\tpanic("boom")\n}\n',
        crash_exit=2,
        crash_stderr="panic: boom",
        syntax_error='package main\n\nimport "fmt"\n\nfunc main() {\n\tfmt.Println("x"\n}\n',
    ),
    "java": Programs(
        hello=(
            "public class Main {\n    public static void main(String[] args) {\n"
            '        System.out.println("hello, world");\n    }\n}\n'
        ),
        echo=(
            "import java.io.BufferedReader;\nimport java.io.InputStreamReader;\n\n"
            "public class Main {\n    public static void main(String[] args) throws Exception {\n"
            "        BufferedReader in = new BufferedReader(new InputStreamReader(System.in));\n"
            "        String line = in.readLine();\n"
            '        System.out.println("args=" + String.join("|", args));\n'
            '        System.out.println("line=" + line);\n    }\n}\n'
        ),
        multi=(
            "public class Main {\n    public static void main(String[] args) {\n"
            '        System.out.println(Util.greet("runbox"));\n    }\n}\n'
        ),
        files={
            "Util.java": (
                "public class Util {\n    static String greet(String name) {\n"
                '        return "hello, " + name;\n    }\n}\n'
            )
        },
        crash=(
            "public class Main {\n    public static void main(String[] args) {\n"
            '        System.out.println(Integer.parseInt("boom"));\n    }\n}\n'
        ),
        crash_exit=1,
        crash_stderr="NumberFormatException",
        syntax_error="public class Main {\n    public static void main(String[] args) {\n        int x = ;\n    }\n}\n",
    ),
    "rust": Programs(
        hello='fn main() {\n    println!("hello, world");\n}\n',
        echo=(
            "use std::io::BufRead;\n\nfn main() {\n"
            "    let args: Vec<String> = std::env::args().skip(1).collect();\n"
            "    let mut line = String::new();\n"
            "    std::io::stdin().lock().read_line(&mut line).unwrap();\n"
            '    println!("args={}", args.join("|"));\n'
            "    println!(\"line={}\", line.trim_end_matches('\\n'));\n}\n"
        ),
        multi='mod util;\n\nfn main() {\n    println!("{}", util::greet("runbox"));\n}\n',
        files={"util.rs": 'pub fn greet(name: &str) -> String {\n    format!("hello, {}", name)\n}\n'},
        crash=(
            "fn main() {\n    let v: Vec<u8> = Vec::new();\n"
            '    println!("{}", v[std::env::args().count() + 2]);\n}\n'
        ),
        crash_exit=101,
        crash_stderr="index out of bounds",
        syntax_error="fn main() {\n    let x = ;\n}\n",
    ),
    "ruby": Programs(
        hello='puts "hello, world"\n',
        echo='line = $stdin.gets.to_s.chomp\nputs "args=#{ARGV.join("|")}"\nputs "line=#{line}"\n',
        multi='require_relative "util"\n\nputs greet("runbox")\n',
        files={"util.rb": 'def greet(name)\n  "hello, #{name}"\nend\n'},
        crash='raise "boom"\n',
        crash_exit=1,
        crash_stderr="boom (RuntimeError)",
    ),
    "bash": Programs(
        hello='echo "hello, world"\n',
        echo='IFS= read -r line\n(IFS="|"; echo "args=$*")\necho "line=$line"\n',
        multi='source ./util.sh\n\ngreet runbox\n',
        files={"util.sh": 'greet() {\n    echo "hello, $1"\n}\n'},
        crash="set -e\nno_such_command_here\necho unreachable\n",
        crash_exit=127,
        crash_stderr="command not found",
    ),
    "php": Programs(
        hello='<?php\necho "hello, world\\n";\n',
        echo=(
            '<?php\n$line = rtrim((string) fgets(STDIN), "\\n");\n'
            'echo "args=" . implode("|", array_slice($argv, 1)) . "\\n";\n'
            'echo "line=$line\\n";\n'
        ),
        multi='<?php\ninclude "util.php";\n\necho greet("runbox"), "\\n";\n',
        files={"util.php": '<?php\nfunction greet(string $name): string {\n    return "hello, $name";\n}\n'},
        crash='<?php\nthrow new RuntimeException("boom");\n',
        crash_exit=255,
        crash_stderr="Uncaught RuntimeException: boom",
    ),
    "typescript": Programs(
        hello='const greeting: string = "hello, world";\nconsole.log(greeting);\n',
        echo=(
            'import { readFileSync } from "fs";\n\n'
            'const lines: string[] = readFileSync(0, "utf8").split("\\n");\n'
            'console.log("args=" + process.argv.slice(2).join("|"));\n'
            'console.log("line=" + lines[0]);\n'
        ),
        multi='import { greet } from "./util";\n\nconsole.log(greet("runbox"));\n',
        files={"util.ts": 'export function greet(name: string): string {\n    return "hello, " + name;\n}\n'},
        crash='const n: number = JSON.parse("null");\nconsole.log(n.toFixed(2));\n',
        crash_exit=1,
        crash_stderr="TypeError",
        syntax_error='const x: number = "not a number";\nconsole.log(x);\n',
    ),
}

KINDS = ("hello", "echo", "multi", "crash", "syntax_error")


def job_body(language: str, kind: str) -> dict[str, Any]:
    programs = PROGRAMS[language]
    body: dict[str, Any] = {"language": language, "source": getattr(programs, kind)}
    if kind == "echo":
        body.update(stdin=STDIN, args=ARGS)
    if kind == "multi":
        body["files"] = [{"name": name, "content": content} for name, content in programs.files.items()]
    return body


def language_of(name: str) -> Language:
    language = REGISTRY.get(name)
    assert language is not None, name
    return language


class Jobs:
    """Submits a language's jobs together on first use; hands out each job's events."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.ids: dict[tuple[str, str], str] = {}
        self.events: dict[tuple[str, str], list[SseEvent]] = {}

    def _submit_all(self, language: str) -> None:
        kinds = [k for k in KINDS if k != "syntax_error" or language_of(language).compiled]
        for kind in kinds:
            self.ids[language, kind] = self.client.submit_ok(job_body(language, kind))

    def get(self, language: str, kind: str) -> tuple[dict[str, Any], list[SseEvent]]:
        """The final state of one job and its SSE events."""
        if (language, kind) not in self.ids:
            self._submit_all(language)
        if (language, kind) not in self.events:
            self.events[language, kind] = self.client.events(self.ids[language, kind], timeout=120)
        events = self.events[language, kind]
        assert events[-1].name == "result", events
        return events[-1].data, events


@pytest.fixture(scope="module")
def images(real_stack: None) -> None:
    """Build the images that are missing (scripts/setup.sh normally built them all)."""
    missing = []
    for lang in REGISTRY:
        probe = subprocess.run(["docker", "image", "inspect", lang.image], capture_output=True, check=False)
        if probe.returncode:
            missing.append(lang.name)
    if missing:
        assert build(missing) == 0, f"cannot build the images of {', '.join(missing)}"


@pytest.fixture(scope="module")
def lang_service(images: None) -> Iterator[Service]:
    """One service for the whole module, with small pools: at most two containers per language.

    The tests submit every program of a language at once, more than an anonymous client may
    have in flight by default, so the per-client allowances are raised for this service. The
    memory budget fits every pool at its maximum: with many languages the default budget is
    full of idle containers of languages already tested, and the next language would wait
    until those pools shrink.
    """
    pool_max = 2
    budget = sum(pool_max * container_memory_mb(lang, lang.default_limits) for lang in REGISTRY)
    svc = Service(
        RUNBOX_POOL_MIN="0",
        RUNBOX_POOL_SIZE="1",
        RUNBOX_POOL_MAX=str(pool_max),
        RUNBOX_MEMORY_BUDGET_MB=str(max(8192, budget)),
        RUNBOX_ANONYMOUS_MAX_CONCURRENT="100",
        RUNBOX_ANONYMOUS_RATE_PER_S="100",
        RUNBOX_ANONYMOUS_BURST="100",
    ).start()
    yield svc
    svc.stop()


@pytest.fixture(scope="module")
def jobs(lang_service: Service) -> Iterator[Jobs]:
    client = lang_service.client()
    yield Jobs(client)
    client.close()


def stdout_events(events: list[SseEvent]) -> str:
    return "".join(e.data["data"] for e in events if e.name == "stdout")


def describe(state: dict[str, Any]) -> str:
    return f"status={state['status']} result={state['result']}"


def test_every_language_is_tested() -> None:
    assert set(LANGUAGES) <= set(PROGRAMS), f"no test programs for {set(LANGUAGES) - set(PROGRAMS)}"


@pytest.mark.parametrize("lang", LANGUAGES)
def test_definition(lang: str) -> None:
    """The data is consistent: image name, Judge0 and Piston names, limits within the maximums."""
    language = language_of(lang)
    assert language.image == f"runbox/sandbox-{lang}:{Settings.from_env().image_tag}"
    assert language.version and language.version in language.judge0_name
    assert language.judge0_id > 0 and language.piston_name
    assert language.version_command
    for name, value in language.default_limits.to_dict().items():
        assert value <= getattr(language.max_limits, name), name
    if language.compile is not None:
        assert language.compile.timeout_s <= 30 and language.compile.memory_mb <= language.max_limits.memory_mb


def test_judge0_ids_are_unique() -> None:
    ids = [lang.judge0_id for lang in REGISTRY]
    assert len(ids) == len(set(ids))


def test_service_lists_every_language(lang_service: Service) -> None:
    client = lang_service.client()
    try:
        listed = {entry["name"]: entry for entry in client.http.get("/api/v1/languages").json()}
    finally:
        client.close()
    for lang in REGISTRY:
        assert lang.name in listed, f"{lang.name} is not served (is its image built?)"
        assert listed[lang.name]["version"] == lang.version
        assert listed[lang.name]["compiled"] == lang.compiled


@pytest.mark.parametrize("lang", LANGUAGES)
def test_hello_world(jobs: Jobs, lang: str) -> None:
    state, events = jobs.get(lang, "hello")
    assert state["status"] == "completed", describe(state)
    assert state["result"]["exit_code"] == 0, describe(state)
    assert state["result"]["stdout"] == HELLO
    assert stdout_events(events) == HELLO
    assert state["language"] == lang
    compiles = [e for e in events if e.name == "compile"]
    assert len(compiles) == (1 if language_of(lang).compiled else 0)


@pytest.mark.parametrize("lang", LANGUAGES)
def test_stdin_and_args(jobs: Jobs, lang: str) -> None:
    state, _ = jobs.get(lang, "echo")
    assert state["status"] == "completed", describe(state)
    assert state["result"]["exit_code"] == 0, describe(state)
    assert state["result"]["stdout"] == ECHOED


@pytest.mark.parametrize("lang", LANGUAGES)
def test_multiple_files(jobs: Jobs, lang: str) -> None:
    state, _ = jobs.get(lang, "multi")
    assert state["status"] == "completed", describe(state)
    assert state["result"]["exit_code"] == 0, describe(state)
    assert state["result"]["stdout"] == GREETED


@pytest.mark.parametrize("lang", LANGUAGES)
def test_runtime_error(jobs: Jobs, lang: str) -> None:
    programs = PROGRAMS[lang]
    state, _ = jobs.get(lang, "crash")
    result = state["result"]
    assert state["status"] == "completed", describe(state)
    assert result["exit_code"] == programs.crash_exit, describe(state)
    assert result["signal"] == programs.crash_signal, describe(state)
    assert programs.crash_stderr in result["stderr"], describe(state)


@pytest.mark.parametrize("lang", COMPILED)
def test_compile_error(jobs: Jobs, lang: str) -> None:
    state, events = jobs.get(lang, "syntax_error")
    result = state["result"]
    assert state["status"] == "compile_error", describe(state)
    assert "error" in result["compile_output"].lower(), describe(state)
    assert "main" in result["compile_output"].lower(), "the message should name the file"
    compiles = [e for e in events if e.name == "compile"]
    assert len(compiles) == 1
    assert compiles[0].data["output"] == result["compile_output"]
    assert compiles[0].data["exit_code"] not in (0, None)
    assert not any(e.name == "stdout" for e in events)
    assert result["stdout"] == ""


@pytest.mark.parametrize("lang", LANGUAGES)
def test_image_version(images: None, lang: str) -> None:
    """The version a language declares is the one its image really runs."""
    language = language_of(lang)
    entry, *rest = language.version_command
    proc = subprocess.run(
        ["docker", "run", "--rm", "--network", "none", "--entrypoint", entry, language.image, *rest],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == language.version
