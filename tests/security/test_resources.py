"""Resource attacks: fork and thread bombs, memory bombs, disk fill, output floods, endless loops.

Each attack is a real program run through the real service on both runtimes. Each asserts
(a) the attack was contained: the right terminal status, the limit reported, nothing grew
past its cap; and (b) a normal job of the same language right after it runs correctly and
``/readyz`` answers 200. The module's attacks run side by side (see ``conftest.Batch``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.security.conftest import (
    CONTAINER_MEMORY_KB,
    DEFAULT_MEMORY_KB,
    Batch,
    Target,
    attack_registry,
    make_batch,
)

ATTACKS, attack = attack_registry()
OUT_CAP = 64 * 1024  # the default per-stream output cap
HARD_CAP = 16 * OUT_CAP  # past this the job is killed (HARD_OUTPUT_FACTOR)
SHORT = {"timeout_s": 2}
KILL_SLACK_MS = 2500  # a wall-time kill, the fork bomb's reaping, the agent's grace


def assert_within_wall_time(t: Target, state: dict[str, Any], timeout_s: float) -> None:
    duration = state["result"]["duration_ms"]
    assert duration <= timeout_s * 1000 + KILL_SLACK_MS, t.explain(state)


# --- fork and thread bombs ---------------------------------------------------------------------
FORK_BOMBS = {
    "c": """
#include <stdio.h>
#include <unistd.h>
int main(void) {
    unsigned long failures = 0;
    for (;;) {
        pid_t pid = fork();
        if (pid == 0) for (;;) pause();
        if (pid < 0 && failures++ == 0) fprintf(stderr, "fork refused\\n");
    }
}
""",
    "bash": """
bomb() { bomb | bomb & }
bomb
sleep 30
""",
    "python": """
import os
while True:
    try:
        os.fork()
    except OSError:
        pass
""",
    "ruby": """
loop do
  begin
    fork { sleep }
  rescue StandardError
  end
end
""",
    "go": """
package main

import (
	"fmt"
	"os"
	"os/exec"
)

// Every copy starts more copies of itself: a process bomb the Go runtime's threads join.
func main() {
	failures := 0
	for {
		if err := exec.Command("/proc/self/exe").Start(); err != nil {
			if failures == 0 {
				fmt.Fprintln(os.Stderr, "spawn refused:", err)
			}
			failures++
		}
	}
}
""",
}


def fork_bomb(language: str):  # type: ignore[no-untyped-def]
    def run(t: Target) -> None:
        state = t.run(language, FORK_BOMBS[language], limits=SHORT)
        # Held at the process cap, a bomb spins until its wall time; its children may also
        # add up past the memory limit, or the bash one may end on its own once refused.
        assert state["status"] in ("timed_out", "memory_exceeded", "completed"), t.explain(state)
        if state["status"] == "timed_out":
            assert state["result"]["limit"] == "wall_time", t.explain(state)
        assert_within_wall_time(t, state, SHORT["timeout_s"])
        t.normal_job_works(language)

    return run


for _lang in FORK_BOMBS:
    attack(f"fork_bomb_{_lang}")(fork_bomb(_lang))


@attack("thread_bomb_java")
def thread_bomb_java(t: Target) -> None:
    source = """
public class Main {
    public static void main(String[] args) {
        int started = 0;
        try {
            while (true) {
                Thread thread = new Thread(() -> {
                    try { Thread.sleep(600000); } catch (InterruptedException e) { }
                });
                thread.setDaemon(true);
                thread.start();
                started++;
            }
        } catch (Throwable e) {
            System.out.println("threads=" + started + " refused: " + e);
            System.out.flush();
            Runtime.getRuntime().halt(0);
        }
    }
}
"""
    state = t.run("java", source, limits={"timeout_s": 5})
    # The thread cap holds (pids cgroup under runc, RLIMIT_NPROC in gVisor). gVisor counts a
    # mapped thread stack as resident, so runsc may also flag the peak as memory_exceeded.
    assert state["status"] in ("completed", "memory_exceeded", "timed_out"), t.explain(state)
    out = state["result"]["stdout"]
    if state["status"] == "completed":
        assert "threads=" in out and "unable to create native thread" in out, t.explain(state)
        started = int(out.split("threads=")[1].split()[0])
        assert started < 64, t.explain(state)  # the JVM's own threads share the 64-process cap
    t.normal_job_works("java")


# --- memory bombs ----------------------------------------------------------------------------
MEMORY_BOMBS = {
    "c": """
#include <stdlib.h>
#include <string.h>
int main(void) {
    for (;;) {
        char *p = malloc(1 << 20);
        if (!p) return 3;
        memset(p, 1, 1 << 20);
    }
}
""",
    "python": """
hoard = []
while True:
    hoard.append(bytearray(8 << 20))
""",
    "javascript": """
const hoard = [];
for (;;) hoard.push(Buffer.alloc(8 << 20, 1));
""",
    "rust": """
fn main() {
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    loop {
        hoard.push(vec![1u8; 8 << 20]);
    }
}
""",
}


def memory_bomb(language: str):  # type: ignore[no-untyped-def]
    def run(t: Target) -> None:
        state = t.run(language, MEMORY_BOMBS[language])
        assert state["status"] == "memory_exceeded", t.explain(state)
        assert state["result"]["limit"] == "memory", t.explain(state)
        peak = state["result"]["memory_peak_kb"]
        t.normal_job_works(language)
        bound = CONTAINER_MEMORY_KB + 48 * 1024
        if t.runtime == "runsc" and peak == 0:
            # Under gVisor the memory cgroup holds the whole sandbox kernel: at the limit the
            # host's OOM killer ends the sandbox, and the executor learns it from the engine's
            # OOMKilled, with no peak to report. The container is replaced; nothing else is hit.
            return
        if t.runtime == "runsc" and peak > bound:
            # A known defect of the reported figure only (containment held above): gVisor's
            # AnonPages counts memory not yet backed, so the peak of a job killed at its limit
            # can read above the container's ceiling (seen: 374040 KB for a JavaScript bomb).
            pytest.xfail(f"gVisor over-reports the peak of a job killed at its limit: {peak} KB > {bound} KB")
        # The job's share is its limit; the container's ceiling adds the agent's 48 MB; the
        # peak RSS also counts file-backed pages (a runtime's binary, its libraries) that the
        # page cache may have charged to another container first.
        assert 0.8 * DEFAULT_MEMORY_KB <= peak <= bound, t.explain(state)

    return run


for _lang in MEMORY_BOMBS:
    attack(f"memory_bomb_{_lang}")(memory_bomb(_lang))


HOLD_THEN_FAIL = """
import sys, time
hoard = b"\\x01" * (int(sys.argv[1]) << 10)
time.sleep(0.3)
sys.exit(1)
"""
ROOMY = {"timeout_s": 20}  # the verdict is about memory; a loaded machine must not turn it into time


@attack("failure_at_memory_ceiling_python")
def failure_at_memory_ceiling(t: Target) -> None:
    # A runtime whose allocation fails at the ceiling dies with an exit code, often silently
    # (under gVisor allocations fail before any OOM kill): that is a memory verdict, and the
    # same failure far below the ceiling is the program's own.
    at_ceiling = t.run("python", HOLD_THEN_FAIL, args=[str(int(0.94 * DEFAULT_MEMORY_KB))], limits=ROOMY)
    assert at_ceiling["status"] == "memory_exceeded", t.explain(at_ceiling)
    assert at_ceiling["result"]["limit"] == "memory", t.explain(at_ceiling)
    far_below = t.run("python", HOLD_THEN_FAIL, args=[str(DEFAULT_MEMORY_KB // 4)], limits=ROOMY)
    assert far_below["status"] == "completed", t.explain(far_below)
    assert far_below["result"]["exit_code"] == 1 and far_below["result"]["limit"] is None, t.explain(far_below)
    t.normal_job_works("python")


# --- disk fill -----------------------------------------------------------------------------------
@attack("disk_fill_python")
def disk_fill_python(t: Target) -> None:
    """Write 8 MB files (under the 10 MB file-size cap) into every writable place until refused."""
    source = """
import errno, json, os
chunk = b"x" * (1 << 20)
report = {}
for top in ("/work", "/tmp", "/dev/shm", "/var/tmp", "/run/lock", "/"):
    written, error, n = 0, None, 0
    try:
        while written < 1 << 30:
            with open(os.path.join(top, f"fill{n}"), "wb") as f:
                for _ in range(8):
                    f.write(chunk)
                    f.flush()
                    written += len(chunk)
            n += 1
    except OSError as exc:
        error = errno.errorcode.get(exc.errno, str(exc.errno))
    report[top] = {"mb": written >> 20, "error": error}
print(json.dumps(report))
"""
    before = t.writable_layer_bytes()
    state = t.run("python", source, limits={"timeout_s": 10})
    assert state["status"] == "completed", t.explain(state)
    report = json.loads(state["result"]["stdout"])
    # Refused at each tmpfs's size (writes land in memory, not on the host's disk) ...
    for top, size_mb in (("/work", 64), ("/tmp", 64), ("/dev/shm", 16)):
        assert report[top]["error"] == "ENOSPC", (top, t.explain(state))
        assert report[top]["mb"] <= size_mb, (top, t.explain(state))
    # ... and nothing at all on the read-only root.
    for top in ("/var/tmp", "/run/lock", "/"):
        assert report[top]["mb"] == 0, (top, t.explain(state))
        assert report[top]["error"] in ("EROFS", "EACCES", "ENOENT"), (top, t.explain(state))
    # The containers' writable layers (the only place a write could reach the host's disk) stay empty.
    for container_id, size_rw in t.writable_layer_bytes().items():
        assert size_rw <= max(before.get(container_id, 0), 64 * 1024), (container_id, size_rw)
    t.normal_job_works("python")


@attack("file_size_c")
def file_size_c(t: Target) -> None:
    """One file grown past the 10 MB file-size cap: the kernel's SIGXFSZ ends the program."""
    source = """
#include <stdio.h>
#include <string.h>
int main(void) {
    static char chunk[1 << 16];
    memset(chunk, 'x', sizeof chunk);
    FILE *f = fopen("big", "wb");
    if (!f) return 2;
    for (;;) fwrite(chunk, 1, sizeof chunk, f);
}
"""
    state = t.run("c", source, limits={"timeout_s": 5})
    assert state["status"] == "completed", t.explain(state)
    assert state["result"]["signal"] == 25 and state["result"]["limit"] == "file_size", t.explain(state)  # SIGXFSZ
    t.normal_job_works("c")


# --- output floods -------------------------------------------------------------------------------
def stdout_events(events: list[Any], stream: str = "stdout") -> str:
    return "".join(e.data["data"] for e in events if e.name == stream)


@attack("flood_lines_below_hard_cap_python")
def flood_lines_python(t: Target) -> None:
    """512 KiB of lines: past the 64 KiB cap (kept, streamed, then dropped), under the hard cap."""
    source = 'import sys\nfor i in range(8192):\n    sys.stdout.write(("%07d" % i) + "x" * 56 + "\\n")\n'
    state, events = t.run_events("python", source)
    result = state["result"]
    assert state["status"] == "completed" and result["exit_code"] == 0, t.explain(state)
    assert result["truncated"] == {"stdout": True, "stderr": False}, t.explain(state)
    assert len(result["stdout"]) == OUT_CAP, t.explain(state)
    assert result["stdout"].startswith("0000000x") and result["stdout"].endswith("x" * 56 + "\n"), t.explain(state)
    assert stdout_events(events) == result["stdout"]  # the stream stopped at the cap too
    t.normal_job_works("python")


@attack("flood_no_newline_python")
def flood_no_newline_python(t: Target) -> None:
    state, events = t.run_events("python", 'import sys\nwhile True:\n    sys.stdout.write("y" * 65536)\n')
    result = state["result"]
    assert state["status"] == "output_exceeded" and result["limit"] == "output", t.explain(state)
    assert result["truncated"]["stdout"] is True, t.explain(state)
    assert result["stdout"] == "y" * OUT_CAP, t.explain(state)
    assert stdout_events(events) == result["stdout"]
    t.normal_job_works("python")


@attack("flood_lines_c")
def flood_lines_c(t: Target) -> None:
    state, events = t.run_events("c", '#include <stdio.h>\nint main(void) { for (;;) puts("flood"); }\n')
    result = state["result"]
    assert state["status"] == "output_exceeded" and result["limit"] == "output", t.explain(state)
    assert result["truncated"]["stdout"] is True and len(result["stdout"]) == OUT_CAP, t.explain(state)
    assert set(result["stdout"].split("\n")[:-1]) == {"flood"}, t.explain(state)
    assert stdout_events(events) == result["stdout"]
    t.normal_job_works("c")


@attack("flood_stderr_bash")
def flood_stderr_bash(t: Target) -> None:
    state, events = t.run_events("bash", "yes 'to stderr' >&2\n")
    result = state["result"]
    assert state["status"] == "output_exceeded" and result["limit"] == "output", t.explain(state)
    assert result["truncated"] == {"stdout": False, "stderr": True}, t.explain(state)
    assert len(result["stderr"]) == OUT_CAP and result["stdout"] == "", t.explain(state)
    assert stdout_events(events, "stderr") == result["stderr"]
    t.normal_job_works("bash")


@attack("flood_no_newline_javascript")
def flood_no_newline_javascript(t: Target) -> None:
    # fs.writeSync blocks on a full pipe (process.stdout.write would queue in the process's memory).
    source = 'const fs = require("fs");\nconst s = "z".repeat(65536);\nfor (;;) fs.writeSync(1, s);\n'
    state = t.run("javascript", source)
    result = state["result"]
    assert state["status"] == "output_exceeded" and result["limit"] == "output", t.explain(state)
    assert result["stdout"] == "z" * OUT_CAP and result["truncated"]["stdout"] is True, t.explain(state)
    t.normal_job_works("javascript")


# --- endless loops, sleeping forever ----------------------------------------------------------------
@attack("infinite_loop_python")
def infinite_loop_python(t: Target) -> None:
    state = t.run("python", "while True:\n    pass\n", limits=SHORT)
    assert state["status"] == "timed_out" and state["result"]["limit"] == "wall_time", t.explain(state)
    assert 1900 <= state["result"]["duration_ms"] <= 2000 + KILL_SLACK_MS, t.explain(state)
    t.normal_job_works("python")


@attack("busy_goroutines_go")
def busy_goroutines_go(t: Target) -> None:
    source = """
package main

func main() {
	for i := 0; i < 16; i++ {
		go func() {
			for {
			}
		}()
	}
	select {}
}
"""
    state = t.run("go", source, limits=SHORT)
    assert state["status"] == "timed_out" and state["result"]["limit"] == "wall_time", t.explain(state)
    assert 1900 <= state["result"]["duration_ms"] <= 2000 + KILL_SLACK_MS, t.explain(state)
    t.normal_job_works("go")


@attack("cpu_time_c")
def cpu_time_c(t: Target) -> None:
    """A CPU-time limit below the wall time: SIGXCPU ends the loop after about 1 s of CPU."""
    state = t.run("c", "int main(void) { volatile unsigned long n = 0; for (;;) n++; }\n",
                  limits={"cpu_time_s": 1, "timeout_s": 10})
    assert state["status"] == "timed_out" and state["result"]["limit"] == "cpu_time", t.explain(state)
    assert state["result"]["duration_ms"] < 9000, t.explain(state)  # 1 s of CPU, on a busy host
    t.normal_job_works("c")


@attack("sleep_forever_bash")
def sleep_forever_bash(t: Target) -> None:
    state = t.run("bash", "sleep infinity\n", limits=SHORT)
    assert state["status"] == "timed_out" and state["result"]["limit"] == "wall_time", t.explain(state)
    assert 1900 <= state["result"]["duration_ms"] <= 2000 + KILL_SLACK_MS, t.explain(state)
    t.normal_job_works("bash")


@attack("sleep_forever_ruby")
def sleep_forever_ruby(t: Target) -> None:
    state = t.run("ruby", "sleep\n", limits=SHORT)
    assert state["status"] == "timed_out" and state["result"]["limit"] == "wall_time", t.explain(state)
    assert 1900 <= state["result"]["duration_ms"] <= 2000 + KILL_SLACK_MS, t.explain(state)
    t.normal_job_works("ruby")


@pytest.fixture(scope="module")
def batch(target: Target) -> Iterator[Batch]:
    yield from make_batch(target, ATTACKS)


@pytest.mark.parametrize("name", list(ATTACKS))
def test_resource_attack_is_contained(batch: Batch, name: str) -> None:
    batch.result(name)
