"""Memory held in any form counts, and a reused container shows nothing of earlier jobs.

- Memory a job holds outside its processes' anonymous pages (a memfd, files on the tmpfs
  work dirs, /dev/shm, a System V segment) counts against its limit like any other: the
  agent measures the container's anonymous and shared pages, so each attack ends
  ``memory_exceeded`` although no process is ever that big.
- The figures a container keeps across jobs (cgroup peaks, fail and OOM counts, CPU and I/O
  totals; the agent's own /proc entries) are masked (under gVisor covered by empty tmpfs
  mounts): the job after a memory hog in the same container reads none of them.
- A job with limits of its own gets a fresh container through the executor's memory budget.
"""

from __future__ import annotations

import concurrent.futures
import json
import time
from collections.abc import Iterator

import pytest

from app.config import Settings
from app.executor.sandbox import container_memory_mb
from app.languages import Registry
from tests.security.conftest import Batch, Target, attack_registry, make_batch, start_target, stop_target

ATTACKS, attack = attack_registry()

HOARDS = {
    "memfd": """
import os
chunk = b"m" * (8 << 20)  # each memfd under the file size cap, 40 of them: 320 MB
fds = [os.memfd_create(f"hoard{i}") for i in range(40)]
for fd in fds:  # in no process's resident set
    os.write(fd, chunk)
print("held 320 MB in memfds")
""",
    "tmpfs": """
chunk = b"t" * (6 << 20)  # files under the file size cap
for path, count in (("/work/a", 10), ("/tmp/b", 10), ("/dev/shm/c", 2)):
    for i in range(count):
        with open(f"{path}{i}", "wb") as f:
            f.write(chunk)
hoard = bytearray(160 << 20)
hoard[::4096] = b"x" * len(hoard[::4096])
print("held 132 MB in files and 160 MB in memory")
""",
    "sysv_shm": """
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
libc.shmat.restype = ctypes.c_void_p
size = 300 << 20
shmid = libc.shmget(0, ctypes.c_size_t(size), 0o1600)
assert shmid >= 0, ctypes.get_errno()
addr = libc.shmat(shmid, None, 0)
libc.shmctl(shmid, 0, None)  # IPC_RMID: it lives while attached
ctypes.memset(addr, 1, size)
print("held 300 MB in a System V segment")
""",
}


def hoard(kind: str):  # type: ignore[no-untyped-def]
    def run(t: Target) -> None:
        state = t.run("python", HOARDS[kind], limits={"timeout_s": 20})
        assert state["status"] == "memory_exceeded", t.explain(state)
        assert state["result"]["limit"] == "memory", t.explain(state)
        assert "held" not in state["result"]["stdout"], t.explain(state)
        t.normal_job_works("python")

    return run


for _kind in HOARDS:
    attack(f"hoard_{_kind}_python")(hoard(_kind))


@pytest.fixture(scope="module")
def batch(target: Target) -> Iterator[Batch]:
    yield from make_batch(target, ATTACKS, workers=2)


@pytest.mark.parametrize("name", list(ATTACKS))
def test_memory_in_any_form_counts(batch: Batch, name: str) -> None:
    batch.result(name)


READ_COUNTERS = """
import json, os
report = {}
paths = ["/proc/1/status", "/proc/1/stat", "/proc/1/statm", "/proc/1/sched", "/proc/1/io", "/proc/1/smaps_rollup",
         "/proc/meminfo"]
for root, dirs, files in os.walk("/sys/fs/cgroup"):
    paths += [os.path.join(root, f) for f in files]
for path in paths:
    try:
        with open(path) as f:
            text = f.read(4096)
    except OSError as exc:
        text = ""
    if text.strip():
        report[path] = text
print(json.dumps(report))
"""
# What the job before may have left a trace in: peaks, counts of limits hit, CPU and I/O
# totals, the agent's accounting of its children.
LEAKY = ("max_usage", "peak", "failcnt", "oom_control", "events", "cpuacct", "cpu.stat", "blkio", "io.stat",
         "pressure", "/proc/1/")


def test_a_reused_container_shows_nothing_of_the_last_job(reuse_target: Target) -> None:
    t = reuse_target
    before = t.settle("python")
    hog = t.run("python", "h = bytearray(200 << 20)\nh[::4096] = b'x' * len(h[::4096])\nimport os\nos.fork()\n",
                limits={"timeout_s": 20})
    assert hog["status"] == "completed", t.explain(hog)
    assert t.settle("python") == before  # the same container serves the next job
    state = t.run("python", READ_COUNTERS)
    assert state["status"] == "completed", t.explain(state)
    shown = json.loads(state["result"]["stdout"])
    leaks = {
        path: text[:200] for path, text in shown.items()
        if any(word in path for word in LEAKY) and not path.endswith("pressure_level")  # a control file
    }
    assert not leaks, leaks
    # What the agent's memory watch reads stays: the current figures, not the history (the
    # cgroup's memory.stat; under gVisor the sandbox kernel's own /proc/meminfo).
    needed = "memory.stat" if t.runtime == "runc" else "/proc/meminfo"
    assert any(path.endswith(needed) for path in shown), sorted(shown)
    t.normal_job_works("python")


def test_jobs_with_their_own_limits_stay_within_the_memory_budget(real_stack: None, runtime: str,
                                                                   docker_client) -> None:
    """With a budget of exactly one warm container, a 128 MB job must first free it."""
    settings = Settings.from_env()
    python = Registry.load(("python",), image_tag=settings.image_tag).get("python")
    assert python is not None
    budget = container_memory_mb(python, python.default_limits)
    t = start_target(runtime, docker_client, RUNBOX_LANGUAGES="python", RUNBOX_POOL_MIN="1", RUNBOX_POOL_SIZE="1",
                     RUNBOX_POOL_MAX="1", RUNBOX_MEMORY_BUDGET_MB=str(budget))
    try:
        t.settle("python")
        most = 0
        with concurrent.futures.ThreadPoolExecutor(3) as pool:
            jobs = [pool.submit(t.run, "python", "import time\ntime.sleep(1)\nprint('own limits')\n",
                                limits={"memory_mb": 128 + 16 * i}) for i in range(3)]
            while not all(job.done() for job in jobs):
                reserved = 0
                for container in t.containers():
                    try:
                        reserved += t.docker.api.inspect_container(container.id)["HostConfig"]["Memory"]
                    except Exception:  # removed meanwhile
                        continue
                most = max(most, reserved)
                time.sleep(0.05)
            states = [job.result() for job in jobs]
        for state in states:
            assert state["status"] == "completed" and state["result"]["stdout"] == "own limits\n", t.explain(state)
        assert 0 < most <= budget * 1024 * 1024, (most, budget)
        t.normal_job_works("python")
    finally:
        stop_target(t)
