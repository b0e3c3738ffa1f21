"""Every runnable unit (a version of a language), end to end through one real service (RabbitMQ + Docker).

For each unit: hello world, stdin and command-line arguments, a program of several files,
a runtime error, and for compiled languages a syntax error that ends ``compile_error``; each
job names the unit's language and version, as a client would. A unit's jobs are submitted
together the first time one of its tests asks for a result, so its programs run side by side
while the tests read the results one after the other. A last check runs each image's
``version_command`` and compares it with the declared version.

``RUNBOX_TEST_LANGUAGES`` (unit keys, comma separated) selects the units exercised end to end,
e.g. when CI builds only some images; the units left out are named in pytest's header, never
skipped silently. The data checks cover every unit whatever the selection.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from app.config import Settings
from app.executor.sandbox import container_memory_mb
from app.images import BASES, build, unit_build
from app.languages import Language, Registry
from tests.language_programs import ARGS, ECHOED, GREETED, HELLO, STDIN, Programs
from tests.language_programs_more import ALL_PROGRAMS as PROGRAMS
from tests.language_selection import selected_units
from tests.runbox_client import Client, Service, SseEvent

REGISTRY = Registry.load(image_tag=Settings.from_env().image_tag)
ALL_UNITS = REGISTRY.unit_keys()
UNITS = selected_units(ALL_UNITS)
COMPILED = [key for key in UNITS if REGISTRY.unit(key).compiled]  # type: ignore[union-attr]
MULTI = [key for key in UNITS if PROGRAMS[REGISTRY.unit(key).name].multi]  # type: ignore[union-attr]

KINDS = ("hello", "echo", "multi", "crash", "syntax_error")


def unit_of(key: str) -> Language:
    unit = REGISTRY.unit(key)
    assert unit is not None, key
    return unit


def programs_of(key: str) -> Programs:
    return PROGRAMS[unit_of(key).name]


def job_body(key: str, kind: str) -> dict[str, Any]:
    """A job of one kind for one unit, named as a client names it: language and version."""
    unit = unit_of(key)
    programs = programs_of(key)
    body: dict[str, Any] = {"language": unit.name, "version": unit.version, "source": getattr(programs, kind)}
    if kind == "echo":
        body.update(stdin=STDIN, args=ARGS)
    if kind == "multi":
        body["files"] = [{"name": name, "content": content} for name, content in programs.files.items()]
    return body


class Jobs:
    """Submits a unit's jobs together on first use; hands out each job's events."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.ids: dict[tuple[str, str], str] = {}
        self.events: dict[tuple[str, str], list[SseEvent]] = {}

    def _submit_all(self, key: str) -> None:
        programs = programs_of(key)
        for kind in KINDS:
            if getattr(programs, kind):
                self.ids[key, kind] = self.client.submit_ok(job_body(key, kind))

    def get(self, key: str, kind: str) -> tuple[dict[str, Any], list[SseEvent]]:
        """The final state of one job and its SSE events."""
        if (key, kind) not in self.ids:
            self._submit_all(key)
        if (key, kind) not in self.events:
            self.events[key, kind] = self.client.events(self.ids[key, kind], timeout=180)
        events = self.events[key, kind]
        assert events[-1].name == "result", events
        return events[-1].data, events


@pytest.fixture(scope="module")
def images(real_stack: None) -> None:
    """Build the selected units' images that are missing (scripts/setup.sh normally built them)."""
    missing = []
    for key in UNITS:
        probe = subprocess.run(["docker", "image", "inspect", unit_of(key).image], capture_output=True, check=False)
        if probe.returncode:
            missing.append(key)
    if missing:
        assert build(missing) == 0, f"cannot build the images of {', '.join(missing)}"


@pytest.fixture(scope="module")
def lang_service(images: None) -> Iterator[Service]:
    """One service for the whole module serving the selected units, with small pools.

    No container is kept warm ahead of demand (so forty-odd idle toolchains do not wait for
    readiness) and at most two run per unit. The tests submit every program of a unit at once,
    more than an anonymous client may have in flight by default, so the per-client allowances
    are raised. The memory budget fits every pool at its maximum: with many units the default
    budget is full of idle containers of units already tested, and the next would wait until
    those pools shrink.
    """
    pool_max = 2
    budget = sum(pool_max * container_memory_mb(unit_of(key), unit_of(key).default_limits) for key in UNITS)
    svc = Service(
        RUNBOX_LANGUAGES=",".join(UNITS),
        RUNBOX_POOL_MIN="0",
        RUNBOX_POOL_SIZE="1",
        RUNBOX_POOL_MAX=str(pool_max),
        RUNBOX_MEMORY_BUDGET_MB=str(max(8192, budget)),
        RUNBOX_ANONYMOUS_MAX_CONCURRENT="100",
        RUNBOX_ANONYMOUS_RATE_PER_S="100",
        RUNBOX_ANONYMOUS_BURST="100",
    ).start(timeout=300)
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
    names = {unit_of(key).name for key in ALL_UNITS}
    assert names <= set(PROGRAMS), f"no test programs for {names - set(PROGRAMS)}"


@pytest.mark.parametrize("key", ALL_UNITS)
def test_definition(key: str) -> None:
    """The data is consistent: image name, Judge0 and Piston names, limits within the maximums."""
    unit = unit_of(key)
    assert unit.image == f"runbox/sandbox-{key}:{Settings.from_env().image_tag}"
    assert unit_build(unit).base in BASES  # its Dockerfile exists and starts FROM a shared base
    assert unit.version and unit.piston_name and unit.version_command
    assert unit.judge0_id >= 0
    if unit.judge0_id:
        assert unit.version in unit.judge0_name
    for name, value in unit.default_limits.to_dict().items():
        assert value <= getattr(unit.max_limits, name), name
    if unit.compile is not None:
        assert unit.compile.timeout_s <= 30 and unit.compile.memory_mb <= unit.max_limits.memory_mb
    if unit.warm_start and unit.warm_start[0] == "java":
        # A warm JVM for the run step is booted with the run command's own options, its stub on
        # the boot class path (JavaRun.java stands in for exactly that command, and reads it so).
        *jvm, boot, dash_cp, path, main = unit.warm_start[1:]
        assert (boot, dash_cp, path, main) == (
            "-Xbootclasspath/a:/opt/runbox/warm/javarun.jar", "-cp", ".", "runbox.JavaRun"), unit.warm_start
        assert unit.run[2].startswith("exec java " + " ".join(jvm) + ' -cp . "${MAIN_FILE%.java}"'), unit.run
        copy = "COPY agent/warm/JavaRun.java /opt/runbox/warm/src/JavaRun.java"
        assert copy in unit_build(unit).dockerfile.read_text().splitlines(), copy
    elif unit.warm_start:
        # A warm start runs the run command's interpreter on a stub its image holds, and only
        # for a program run as ``[interpreter, file]`` (what every stub expects).
        interpreter, stub = unit.warm_start
        assert interpreter == unit.run[0] and len(unit.run) == 2, (unit.warm_start, unit.run)
        copy = f"COPY agent/warm/{stub.rpartition('/')[2]} {stub}"
        assert copy in unit_build(unit).dockerfile.read_text().splitlines(), copy
    if unit.compile is not None and unit.compile.warm_start and unit.compile.warm_start[0] == "java":
        # A warm javac is a JVM started with the compile command's own -J options (its class-data
        # archive aside), and its archive is made by serving exactly that command.
        *jvm, dash_cp, jar, main = unit.compile.warm_start[1:]
        assert (dash_cp, jar, main) == ("-cp", "/opt/runbox/warm/javac.jar", "Javac"), unit.compile.warm_start
        script = unit.compile.argv[2]
        launcher = [word[2:] for word in script.split() if word.startswith("-J")]
        archive = "-XX:SharedArchiveFile="
        assert [o for o in jvm if not o.startswith(archive)] == [o for o in launcher if not o.startswith(archive)]
        text = unit_build(unit).dockerfile.read_text()
        assert "COPY agent/warm/Javac.java /opt/runbox/warm/src/Javac.java" in text.splitlines()
        (own,) = [o for o in jvm if o.startswith(archive)]
        assert f"printf '%s\\0' -c '{script}'" in text
        assert f"-XX:ArchiveClassesAtExit={own.removeprefix(archive)}" in text
    elif unit.compile is not None and unit.compile.warm_start:
        # A warm compiler is a snapshot its image builds for exactly the language's compile command.
        assert unit.compile.warm_start[:2] == ("node", "--snapshot-blob"), unit.compile.warm_start
        blob = unit.compile.warm_start[2]
        stub = blob.removesuffix(".blob") + ".js"
        lines = unit_build(unit).dockerfile.read_text().splitlines()
        assert f"COPY agent/warm/{stub.rpartition('/')[2]} {stub}" in lines, stub
        build = ["node", "--snapshot-blob", blob, "--build-snapshot", stub, *unit.compile.argv]
        assert f"RUN {json.dumps(build)}" in lines, build


def test_judge0_ids_are_unique() -> None:
    ids = [unit.judge0_id for unit in REGISTRY if unit.judge0_id]
    assert len(ids) == len(set(ids))


def test_versions_of_a_language_are_distinct() -> None:
    for name in REGISTRY.names():
        versions = REGISTRY.versions(name)
        assert len(versions) == len(set(versions)), name


def test_service_lists_every_language(lang_service: Service) -> None:
    """``GET /api/v1/languages``: one entry per served language, its versions default first."""
    client = lang_service.client()
    try:
        listed = {entry["name"]: entry for entry in client.http.get("/api/v1/languages").json()}
    finally:
        client.close()
    served = Registry.load(tuple(UNITS))
    for name in served.names():
        assert name in listed, f"{name} is not served (is its image built?)"
        default = served.get(name)
        assert default is not None
        assert listed[name]["version"] == default.version
        assert listed[name]["versions"] == list(served.versions(name))
        assert listed[name]["versions"][0] == listed[name]["version"]
        assert listed[name]["compiled"] == default.compiled


@pytest.mark.parametrize("key", UNITS)
def test_hello_world(jobs: Jobs, key: str) -> None:
    state, events = jobs.get(key, "hello")
    assert state["status"] == "completed", describe(state)
    assert state["result"]["exit_code"] == 0, describe(state)
    assert state["result"]["stdout"] == HELLO
    assert stdout_events(events) == HELLO
    assert state["language"] == unit_of(key).name
    compiles = [e for e in events if e.name == "compile"]
    assert len(compiles) == (1 if unit_of(key).compiled else 0)


@pytest.mark.parametrize("key", UNITS)
def test_stdin_and_args(jobs: Jobs, key: str) -> None:
    state, _ = jobs.get(key, "echo")
    assert state["status"] == "completed", describe(state)
    assert state["result"]["exit_code"] == 0, describe(state)
    assert state["result"]["stdout"] == ECHOED


@pytest.mark.parametrize("key", MULTI)
def test_multiple_files(jobs: Jobs, key: str) -> None:
    state, _ = jobs.get(key, "multi")
    assert state["status"] == "completed", describe(state)
    assert state["result"]["exit_code"] == 0, describe(state)
    assert state["result"]["stdout"] == GREETED


@pytest.mark.parametrize("key", UNITS)
def test_runtime_error(jobs: Jobs, key: str) -> None:
    programs = programs_of(key)
    state, _ = jobs.get(key, "crash")
    result = state["result"]
    assert state["status"] == "completed", describe(state)
    assert result["exit_code"] == programs.crash_exit, describe(state)
    assert result["signal"] == programs.crash_signal, describe(state)
    assert programs.crash_stderr in result["stderr"], describe(state)


@pytest.mark.parametrize("key", COMPILED)
def test_compile_error(jobs: Jobs, key: str) -> None:
    state, events = jobs.get(key, "syntax_error")
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


# C and C++ build first with gold and (C++) precompiled headers, and again as written when that
# prints anything (sandbox_images/agent/fast-build): a job reads the compiler's own words. The
# C and C++ programs here are worded differently by the fast build: gold does not say why a
# stack is executable; a precompiled header loses the include chain back to main.cpp.
FAST_BUILD_PROGRAMS = {
    "c": ("#include <stdio.h>\n\nint apply(int (*f)(int), int x) { return f(x); }\n\n"
          "int main(void) {\n    int k = 3;\n    int add(int x) { return x + k; }\n"
          "    printf(\"%d\\n\", apply(add, 4));\n    return 0;\n}\n",
          "completed", "requires executable stack (because the .note.GNU-stack section is executable)"),
    "cpp": ("#include <iostream>\n#include <vector>\n\nint main() {\n    std::vector<int> v;\n"
            "    std::cout << v << std::endl;\n}\n",
            "compile_error", "from main.cpp:1:"),
    # rustc's words on success are the same with the fast options, so they are passed on.
    "rust": ("fn main() {\n    let unused = 5;\n    println!(\"7\");\n}\n",
             "completed", "warning: unused variable: `unused`"),
}
FAST_BUILD_UNITS = [key for key in UNITS if unit_of(key).name in FAST_BUILD_PROGRAMS]


def _fast_build_keeps_the_compilers_words(jobs: Jobs, key: str) -> None:
    unit = unit_of(key)
    source, status, words = FAST_BUILD_PROGRAMS[unit.name]
    state = jobs.client.run({"language": unit.name, "version": unit.version, "source": source}, timeout=120)
    assert state["status"] == status, describe(state)
    assert words in state["result"]["compile_output"], describe(state)
    assert "gold" not in state["result"]["compile_output"] and ".gch" not in state["result"]["compile_output"]
    if status == "completed":
        assert state["result"]["stdout"] == "7\n", describe(state)


if FAST_BUILD_UNITS:
    test_fast_build_keeps_the_compilers_words = pytest.mark.parametrize("key", FAST_BUILD_UNITS)(
        _fast_build_keeps_the_compilers_words
    )


# A Go program that tells how it was built: the settings `go build` embeds, and whether its
# build ID is fast-go-build's placeholder (sandbox_images/go), which only the fast path leaves.
GO_BUILD_REPORT = """package main

import (
	"bytes"
	"fmt"
	"os"
	"runtime/debug"
	"strings"
)

func main() {
	info, _ := debug.ReadBuildInfo()
	fmt.Println("path", info.Path)
	for _, s := range info.Settings {
		fmt.Println("setting", s.Key, s.Value)
	}
	exe, _ := os.ReadFile("/proc/self/exe")
	zeros := strings.Repeat("0", 20)
	placeholder := strings.Join([]string{zeros, zeros, zeros, zeros}, "/")
	fmt.Println("placeholder", bytes.Contains(exe, []byte(placeholder)))
}
"""
GO_UNITS = [key for key in UNITS if unit_of(key).name == "go"]


def _go_builds_without_the_go_command_as_go_build_would(jobs: Jobs, key: str) -> None:
    unit = unit_of(key)
    base = {"language": unit.name, "version": unit.version}
    alone = jobs.client.run({**base, "source": GO_BUILD_REPORT}, timeout=120)
    util = {"name": "util.go", "content": "package main\n\nconst unused = 1\n"}
    beside = jobs.client.run({**base, "source": GO_BUILD_REPORT, "files": [util]}, timeout=120)
    for state in (alone, beside):
        assert state["status"] == "completed", describe(state)
        assert state["result"]["compile_output"] == "", describe(state)
    lines = alone["result"]["stdout"].splitlines()
    assert "path _/work" in lines and "setting CGO_ENABLED 0" in lines and 'setting -ldflags -s -w' in lines, lines
    # main.go alone took the fast path; beside another file the go command built it, and the
    # program saw the same build settings either way.
    assert lines[-1] == "placeholder true"
    assert beside["result"]["stdout"].splitlines() == [*lines[:-1], "placeholder false"]
    # A failing fast build, and a main.go the plan does not cover, get the go command's own words.
    broken = jobs.client.run({**base, "source": "package main\n\nfunc main() { x }\n"}, timeout=120)
    assert broken["status"] == "compile_error", describe(broken)
    assert broken["result"]["compile_output"].startswith("# _/work\n./main.go:3:15: undefined: x"), describe(broken)
    ignored = jobs.client.run({**base, "source": "//go:build ignore\n\n" + GO_BUILD_REPORT}, timeout=120)
    assert ignored["status"] == "compile_error", describe(ignored)
    assert "build constraints exclude all Go files" in ignored["result"]["compile_output"], describe(ignored)


if GO_UNITS:
    test_go_builds_without_the_go_command_as_go_build_would = pytest.mark.parametrize("key", GO_UNITS)(
        _go_builds_without_the_go_command_as_go_build_would
    )


@pytest.mark.parametrize("key", UNITS)
def test_image_version(images: None, key: str) -> None:
    """The version a unit declares is the one its image really runs, and the image runs as the runner user."""
    unit = unit_of(key)
    entry, *rest = unit.version_command
    proc = subprocess.run(
        ["docker", "run", "--rm", "--network", "none", "--entrypoint", entry, unit.image, *rest],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == unit.version
    user = subprocess.run(
        ["docker", "image", "inspect", "-f", "{{.Config.User}}", unit.image], capture_output=True, text=True, check=True
    )
    assert user.stdout.strip() == "10001:10001"


@pytest.mark.parametrize(
    ("version", "expected"),
    [
        (None, "3.11.2"),  # no version: the default, the language's first
        ("", "3.11.2"),
        ("3.11.2", "3.11.2"),  # exact
        ("3.13", "3.13.5"),  # prefix
        ("3.11.x", "3.11.2"),  # prefix with a wildcard
        ("3", "3.13.5"),  # several match: the highest, as Piston picks
        ("*", "3.13.5"),
        ("^3.11", "3.13.5"),  # SemVer ranges, npm syntax as Piston's
        ("~3.11", "3.11.2"),
        (">=3.12 <3.14", "3.13.5"),
        ("3.11.0 - 3.12", "3.11.2"),
    ],
)
def test_resolve_versions(version: str | None, expected: str) -> None:
    registry = Registry.load(("python", "python-trixie"))
    unit = registry.resolve("PY", version)
    assert unit is not None and unit.name == "python" and unit.version == expected
    assert registry.queue_key("python", expected) == unit.key


def test_resolve_refuses_unknown_versions() -> None:
    registry = Registry.load(("python", "python-trixie"))
    assert registry.resolve("cobra", "1") is None
    for version in ("2", "3.12", ">=4", "not a version"):
        assert registry.resolve("python", version) is None, version
    assert registry.versions("py") == ("3.11.2", "3.13.5")


VERSION_PROGRAMS = {
    "python": "import platform\nprint(platform.python_version())\n",
    "javascript": "console.log(process.versions.node);\n",
}


# Generated only for the selected units that have a version program (an empty parameter set
# would be reported as skipped); the units left out are named in pytest's summary.
VERSION_UNITS = [key for key in UNITS if unit_of(key).name in VERSION_PROGRAMS]


def _the_requested_version_runs(jobs: Jobs, key: str) -> None:
    """A job naming a version runs in that version's image, however the version is spelled."""
    unit = unit_of(key)
    series = ".".join(unit.version.split(".")[:2])
    for version in (unit.version, series, f"~{series}"):
        body = {"language": unit.name, "version": version, "source": VERSION_PROGRAMS[unit.name]}
        state = jobs.client.run(body, timeout=120)
        assert state["status"] == "completed", describe(state)
        assert state["result"]["stdout"] == unit.version + "\n", version


if VERSION_UNITS:
    test_the_requested_version_runs = pytest.mark.parametrize("key", VERSION_UNITS)(_the_requested_version_runs)


def test_unknown_version_is_refused(lang_service: Service) -> None:
    unit = unit_of(UNITS[0])
    client = lang_service.client()
    try:
        response = client.submit({"language": unit.name, "version": "0.0.1-nonexistent", "source": "x"})
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert error["code"] == "unknown_version" and unit.version in error["message"]
        response = client.submit({"language": unit.name, "version": 3, "source": "x"})
        assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_version"
    finally:
        client.close()


# Class-named units run a program under its entry's name, as Piston runs them: Java's public
# class, Scala's entry object (each after a helper, so "the first one" would be wrong).
CLASS_NAMED_PROGRAMS = {
    "java": "class Helper { static int twice(int x) { return 2 * x; } }\n"
            "public class Solution {\n"
            "  public static void main(String[] a) {\n"
            "    System.out.println(\"entry \" + a[0] + \" \" + Helper.twice(21));\n"
            "  }\n"
            "}\n",
    "scala": "object Helper { def twice(x: Int) = 2 * x }\n"
             "object Solution {\n"
             "  def main(args: Array[String]): Unit = println(\"entry \" + args(0) + \" \" + Helper.twice(21))\n"
             "}\n",
}
# Generated only for the selected class-named units (the others are named in pytest's summary).
CLASS_NAMED_UNITS = [key for key in UNITS if unit_of(key).class_named]


def test_every_class_named_language_has_a_program() -> None:
    names = {unit_of(key).name for key in ALL_UNITS if unit_of(key).class_named}
    assert names == set(CLASS_NAMED_PROGRAMS), names


def _prints_entry_x_42_through_piston(jobs: Jobs, key: str, files: list[dict[str, str]]) -> None:
    unit = unit_of(key)
    body = {"language": unit.name, "version": unit.version, "args": ["x"], "run_timeout": 15000, "files": files}
    response = jobs.client.http.post("/api/v2/execute", json=body, timeout=180)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["compile"]["code"] == 0, answer["compile"]
    assert answer["run"]["stdout"] == "entry x 42\n", answer["run"]


def _runs_under_its_entrys_name_through_piston(jobs: Jobs, key: str) -> None:
    unit = unit_of(key)
    _prints_entry_x_42_through_piston(jobs, key, [{"name": "whatever." + unit.source_file.rsplit(".", 1)[1],
                                                   "content": CLASS_NAMED_PROGRAMS[unit.name]}])


if CLASS_NAMED_UNITS:
    test_runs_under_its_entrys_name_through_piston = pytest.mark.parametrize("key", CLASS_NAMED_UNITS)(
        _runs_under_its_entrys_name_through_piston
    )

# Kotlin runs the file that declares a top-level main (its facade class, file name + "Kt"), as
# Piston's jar does, whichever of the files it is; here the second, named with a dash.
KOTLIN_UNITS = [key for key in UNITS if unit_of(key).name == "kotlin"]


def _kotlin_runs_the_file_with_main(jobs: Jobs, key: str) -> None:
    _prints_entry_x_42_through_piston(jobs, key, [
        {"name": "util.kt", "content": "fun twice(x: Int) = 2 * x\n"},
        {"name": "my-app.kt",
         "content": "fun main(args: Array<String>) {\n  println(\"entry \" + args[0] + \" \" + twice(21))\n}\n"},
    ])


if KOTLIN_UNITS:
    test_kotlin_runs_the_file_with_main = pytest.mark.parametrize("key", KOTLIN_UNITS)(_kotlin_runs_the_file_with_main)
