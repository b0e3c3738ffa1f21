"""Persistence attacks: what one job leaves behind must be gone before the next job starts.

These attacks run on ``reuse_target``, whose languages have one container each,
so job B runs in the very container job A attacked; every attack checks that the container was reused (the same
single container before A and after B: the agent's scrub passed its own check) and that B
finds nothing of A: no process (a daemon that double-forked, called setsid, used nohup or
``&``), no file in /work, /tmp, /dev/shm, /var/tmp, /run/lock, no System V or POSIX IPC
object, no symlink into the host. Every job of this module leaves its container reusable,
so the proofs of one attack do not disturb another's.
"""

from __future__ import annotations

import json
import os
import secrets
import stat
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from tests.security.conftest import Batch, Target, attack_registry, make_batch, reused, warm_processes

ATTACKS, attack = attack_registry()
FIRE_AFTER_S = 1.5  # a leftover acts this long after its job ended ...
LOOK_AFTER_S = 2.5  # ... and job B looks this long after it started

PROCESS_LISTERS = {
    # Job B in each language: wait past the leftovers' moment, then report every process
    # but the agent (PID 1) and itself, every marker file, and what /work holds.
    "python": f"""
import json, os, sys, time
mark = sys.argv[1]
time.sleep({LOOK_AFTER_S})
me = os.getpid()
procs = []
for pid in os.listdir("/proc"):
    if pid.isdigit() and int(pid) not in (1, me):
        try:
            with open(f"/proc/{{pid}}/cmdline", "rb") as f:
                procs.append(pid + " " + f.read().replace(b"\\0", b" ").decode(errors="replace"))
        except OSError:
            procs.append(pid)
markers = [d for d in ("/work", "/tmp", "/dev/shm") if os.path.exists(os.path.join(d, mark))]
print(json.dumps({{"procs": procs, "markers": markers, "work": sorted(os.listdir("/work"))}}))
""",
    "bash": f"""
sleep {LOOK_AFTER_S}
procs=()
for d in /proc/[0-9]*; do
  pid=${{d#/proc/}}
  if [ "$pid" = 1 ] || [ "$pid" = "$$" ]; then continue; fi
  comm=gone; read -r comm < "$d/comm" 2>/dev/null
  procs+=("\\"$pid $comm\\"")
done
markers=()
for d in /work /tmp /dev/shm; do [ -e "$d/$1" ] && markers+=("\\"$d\\""); done
work=()
for f in /work/* /work/.[!.]*; do [ -e "$f" ] || [ -L "$f" ] && work+=("\\"${{f#/work/}}\\""); done
IFS=,
echo "{{\\"procs\\": [${{procs[*]}}], \\"markers\\": [${{markers[*]}}], \\"work\\": [${{work[*]}}]}}"
""",
    "ruby": f"""
require "json"
mark = ARGV[0]
sleep {LOOK_AFTER_S}
procs = Dir.children("/proc").select {{ |p| p =~ /\\A\\d+\\z/ }}.map(&:to_i) - [1, Process.pid]
procs = procs.map {{ |p| (File.read("/proc/#{{p}}/cmdline").tr("\\0", " ") rescue p.to_s) }}
markers = ["/work", "/tmp", "/dev/shm"].select {{ |d| File.exist?(File.join(d, mark)) }}
puts JSON.generate({{"procs" => procs, "markers" => markers, "work" => Dir.children("/work").sort}})
""",
}
MAIN_FILE = {"python": "main.py", "bash": "main.sh", "ruby": "main.rb"}


# One sequence at a time per language: job B must follow job A in A's container.
LOCKS = {language: threading.Lock() for language in MAIN_FILE}


def zygote(t: Target, language: str, container_id: str) -> set[int]:
    """The processes the agent keeps between jobs that the next job's process listing shows.

    Python's zygote and the interpreter it forked for the next job (which will be that job, or
    is discarded before it runs) wait in an idle container (docs/security.md); nothing else may
    be there, nor anything of the kind anywhere else.
    """
    waiting = warm_processes(t, container_id)
    forks = {pid for pid, command in waiting.items() if " --fork" in command}
    if language == "python":
        assert len(forks) == len(waiting) == 2, waiting
    else:
        assert not forks, waiting
    return forks


def others(procs: list[str], kept: set[int]) -> list[str]:
    """A listing's entries ("pid ...") but the agent's own waiting processes."""
    return [p for p in procs if not (p.split()[0].isdigit() and int(p.split()[0]) in kept)]


def leave_and_look(t: Target, language: str, source_a: str, *, expect_a: str = "completed") -> dict[str, Any]:
    """Job A leaves something behind; job B, in the same container, reports what it sees."""
    with LOCKS[language]:
        return _leave_and_look(t, language, source_a, expect_a)


def _leave_and_look(t: Target, language: str, source_a: str, expect_a: str) -> dict[str, Any]:
    mark = f"left-{secrets.token_hex(4)}"
    before = t.settle(language)
    state_a = t.run(language, source_a, args=[mark], limits={"timeout_s": 5})
    assert state_a["status"] == expect_a, t.explain(state_a)
    assert mark not in state_a["result"]["stdout"], t.explain(state_a)  # it never got to act
    reused(t, language, before)
    kept = zygote(t, language, before)
    state_b = t.run(language, PROCESS_LISTERS[language], args=[mark])
    assert state_b["status"] == "completed", t.explain(state_b)
    seen = json.loads(state_b["result"]["stdout"])
    assert others(seen["procs"], kept) == [], (seen, t.explain(state_a))
    assert seen["markers"] == [], (seen, t.explain(state_a))
    assert seen["work"] == [MAIN_FILE[language]], (seen, t.explain(state_a))
    reused(t, language, before)
    t.normal_job_works(language)
    return seen


MARKERS_PY = f"""
import os, sys, time
def act(mark):
    time.sleep({FIRE_AFTER_S})
    for d in ("/work", "/tmp", "/dev/shm"):
        with open(os.path.join(d, mark), "w") as f:
            f.write("left behind")
    print(mark, flush=True)
    time.sleep(60)
"""


@attack("daemon_double_fork_setsid_python")
def daemon_python(t: Target) -> None:
    source = MARKERS_PY + """
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        null = os.open("/dev/null", os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)  # let go of the job's output, as a daemon does
        act(sys.argv[1])
    os._exit(0)
os.wait()
print("daemon started")
"""
    leave_and_look(t, "python", source)


@attack("daemon_nohup_bash")
def daemon_nohup_bash(t: Target) -> None:
    source = f"""
nohup sh -c 'sleep {FIRE_AFTER_S}; for d in /work /tmp /dev/shm; do echo left > "$d/$0"; done; sleep 60' "$1" \\
  > /dev/null 2>&1 < /dev/null &
echo "nohup started"
"""
    leave_and_look(t, "bash", source)


@attack("background_ampersand_disown_bash")
def background_bash(t: Target) -> None:
    source = f"""
( sleep {FIRE_AFTER_S}; for d in /work /tmp /dev/shm; do echo left > "$d/$1"; done; echo "$1"; sleep 60 ) &
disown
echo "background started"
"""
    leave_and_look(t, "bash", source)


@attack("setsid_fork_bash")
def setsid_bash(t: Target) -> None:
    source = f"""
setsid -f sh -c 'sleep {FIRE_AFTER_S}; for d in /work /tmp /dev/shm; do echo left > "$d/$0"; done; sleep 60' "$1" \\
  > /dev/null 2>&1 < /dev/null
echo "setsid started"
"""
    leave_and_look(t, "bash", source)


@attack("process_daemon_ruby")
def daemon_ruby(t: Target) -> None:
    source = f"""
mark = ARGV[0]
puts "daemonizing"
$stdout.flush
Process.daemon(true, false)
sleep {FIRE_AFTER_S}
["/work", "/tmp", "/dev/shm"].each {{ |d| File.write(File.join(d, mark), "left behind") }}
puts mark
sleep 60
"""
    leave_and_look(t, "ruby", source)


LEFTOVERS_A = """
import ctypes, json, os, socket, stat, sys, time
mark = sys.argv[1]
key = int(sys.argv[2])
libc = ctypes.CDLL(None, use_errno=True)
made = {}

def attempt(name, fn):
    try:
        result = fn()
        made[name] = "made" if result is None or result >= 0 else os.strerror(ctypes.get_errno())
    except Exception as exc:
        made[name] = type(exc).__name__

for top in ("/work", "/tmp", "/dev/shm", "/var/tmp", "/run/lock"):
    def files(top=top):
        with open(os.path.join(top, mark), "w") as f:
            f.write("left behind")
        with open(os.path.join(top, "." + mark), "w") as f:
            f.write("hidden")
        deep = os.path.join(top, mark + ".d", "a", "b")
        os.makedirs(deep)
        with open(os.path.join(deep, "f"), "w") as f:
            f.write("deep")
        os.chmod(deep, 0)  # a directory its owner cannot enter, then one it cannot write
        os.chmod(os.path.join(top, mark + ".d"), stat.S_IRUSR | stat.S_IXUSR)
    attempt("files " + top, files)
attempt("fifo", lambda: os.mkfifo(f"/tmp/{mark}.fifo"))
attempt("symlink", lambda: os.symlink("/etc/passwd", f"/tmp/{mark}.link"))
listener = socket.socket(socket.AF_UNIX)
attempt("unix socket", lambda: listener.bind(f"/tmp/{mark}.sock"))
attempt("sysv shm", lambda: libc.shmget(key, 4096, 0o1000 | 0o600))  # IPC_CREAT
attempt("sysv msg", lambda: libc.msgget(key, 0o1000 | 0o600))
attempt("sysv sem", lambda: libc.semget(key, 1, 0o1000 | 0o600))
try:
    rt = ctypes.CDLL("librt.so.1", use_errno=True)
    attempt("posix mqueue", lambda: rt.mq_open(("/" + mark).encode(), os.O_CREAT | os.O_RDWR, 0o600, None))
except OSError as exc:
    made["posix mqueue"] = "no librt: " + str(exc)
def deep_tree():
    os.chdir("/work")
    for _ in range(1500):  # deeper than Python's recursion limit and than PATH_MAX
        os.mkdir("d")
        os.chdir("d")
    os.chdir("/work")
attempt("deep tree", deep_tree)
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        null = os.open("/dev/null", os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        time.sleep(60)
    os._exit(0)
os.wait()
# Last, take our own rights on the writable directories away: the scrub must restore them.
attempt("chmod /tmp", lambda: os.chmod("/tmp", 0o300))
attempt("chmod /work", lambda: os.chmod("/work", 0o100))
print(json.dumps(made))
"""

LEFTOVERS_B = """
import ctypes, json, os, sys
mark = sys.argv[1]
key = int(sys.argv[2])
libc = ctypes.CDLL(None, use_errno=True)
seen = {}
for top in ("/work", "/tmp", "/dev/shm", "/var/tmp", "/run/lock", "/dev/mqueue"):
    try:
        names = sorted(os.listdir(top))
    except OSError as exc:
        names = []
    seen[top] = [n for n in names if not (top == "/work" and n == "main.py")]
seen["sysv shm"] = libc.shmget(key, 0, 0)
seen["sysv msg"] = libc.msgget(key, 0)
seen["sysv sem"] = libc.semget(key, 0, 0)
for kind in ("shm", "msg", "sem"):
    try:
        with open(f"/proc/sysvipc/{kind}") as f:
            seen["/proc/sysvipc/" + kind] = f.read().splitlines()[1:]
    except OSError:
        pass
try:
    rt = ctypes.CDLL("librt.so.1", use_errno=True)
    seen["posix mqueue"] = rt.mq_open(("/" + mark).encode(), os.O_RDONLY, 0, None)
except OSError:
    seen["posix mqueue"] = -1
me = os.getpid()
seen["procs"] = [p for p in os.listdir("/proc") if p.isdigit() and int(p) not in (1, me)]
print(json.dumps(seen))
"""


@attack("leftover_files_ipc_and_sleeper_python")
def leftovers_python(t: Target) -> None:
    with LOCKS["python"]:
        _leftovers_python(t)


def _leftovers_python(t: Target) -> None:
    mark = f"left-{secrets.token_hex(4)}"
    key = 0x5E000000 + secrets.randbelow(1 << 16)
    before = t.settle("python")
    state_a = t.run("python", LEFTOVERS_A, args=[mark, str(key)])
    assert state_a["status"] == "completed", t.explain(state_a)
    made = json.loads(state_a["result"]["stdout"])
    # The writable places are written; the read-only root is not.
    for top in ("/work", "/tmp", "/dev/shm"):
        assert made["files " + top] == "made", (top, made)
    for top in ("/var/tmp", "/run/lock"):
        assert made["files " + top] != "made", (top, made)
    for kind in ("sysv shm", "sysv msg", "sysv sem", "posix mqueue", "deep tree", "chmod /tmp", "chmod /work"):
        assert made[kind] == "made", (kind, made)
    reused(t, "python", before)
    kept = zygote(t, "python", before)
    state_b = t.run("python", LEFTOVERS_B, args=[mark, str(key)])
    assert state_b["status"] == "completed", t.explain(state_b)
    seen = json.loads(state_b["result"]["stdout"])
    for top in ("/work", "/tmp", "/dev/shm", "/var/tmp", "/run/lock", "/dev/mqueue"):
        assert seen[top] == [], (top, seen, made)
    for kind in ("sysv shm", "sysv msg", "sysv sem", "posix mqueue"):
        assert seen[kind] == -1, (kind, seen, made)
    for kind in ("shm", "msg", "sem"):
        assert seen.get("/proc/sysvipc/" + kind, []) == [], (kind, seen, made)
    assert others(seen["procs"], kept) == [], (seen, made)
    reused(t, "python", before)
    t.normal_job_works("python")


@attack("symlinks_to_host_paths_python")
def symlinks_python(t: Target) -> None:
    """Links planted in /work and /tmp under the names the next job's files will have.

    The executor never writes job files from the host: the agent creates them inside the
    container with O_CREAT|O_EXCL|O_NOFOLLOW after its scrub, so a planted link can neither
    redirect a write nor survive; and the container holds no host path to point at.
    """
    with LOCKS["python"]:
        _symlinks_python(t)


def _symlinks_python(t: Target) -> None:
    host_paths = ["/etc/shadow", "/var/run/docker.sock"]
    host_before = {p: os.lstat(p) for p in host_paths if os.path.lexists(p)}
    source_a = """
import json, os
planted = {}
os.unlink("/work/main.py")  # this program's own file, already read
for path, dest in {"/work/main.py": "/var/run/docker.sock", "/work/util.py": "/etc/shadow",
                   "/work/shadow": "/etc/shadow", "/work/docker.sock": "/var/run/docker.sock",
                   "/tmp/util.py": "/etc/shadow", "/work/up": "/"}.items():
    os.symlink(dest, path)
    planted[path] = os.readlink(path)
try:
    os.link("/etc/passwd", "/work/passwd")
    planted["hardlink"] = "made"
except OSError as exc:
    planted["hardlink"] = exc.strerror
try:
    planted["through link"] = open("/work/util.py").read()[:40]
except OSError as exc:
    planted["through link"] = exc.strerror
print(json.dumps(planted))
"""
    before = t.settle("python")
    state_a = t.run("python", source_a)
    assert state_a["status"] == "completed", t.explain(state_a)
    reused(t, "python", before)
    planted = json.loads(state_a["result"]["stdout"])
    assert planted["hardlink"] != "made", planted  # /etc and /work are different filesystems
    assert planted["through link"] in ("Permission denied", "No such file or directory"), planted
    source_b = """
import json, os, stat
import util
entries = {n: stat.filemode(os.lstat(os.path.join("/work", n)).st_mode) for n in sorted(os.listdir("/work"))}
try:
    shadow = open("/etc/shadow").read()
except OSError as exc:
    shadow = exc.strerror
print(json.dumps({"value": util.VALUE, "entries": entries, "tmp": os.listdir("/tmp"), "shadow": shadow}))
"""
    state_b = t.run("python", source_b, files=[{"name": "util.py", "content": "VALUE = 42\n"}])
    assert state_b["status"] == "completed", t.explain(state_b)
    seen = json.loads(state_b["result"]["stdout"])
    assert seen["value"] == 42, seen
    assert sorted(seen["entries"]) == ["main.py", "util.py"], seen
    assert all(mode.startswith("-") for mode in seen["entries"].values()), seen  # regular files, no link
    assert seen["tmp"] == [], seen
    assert seen["shadow"] == "Permission denied", seen
    # Nothing happened to the host's files of the same names.
    for path, before in host_before.items():
        after = os.lstat(path)
        assert (after.st_mode, after.st_size, after.st_mtime_ns, after.st_ino) == (
            before.st_mode, before.st_size, before.st_mtime_ns, before.st_ino), path
    if "/var/run/docker.sock" in host_before:
        assert stat.S_ISSOCK(os.stat("/var/run/docker.sock").st_mode)
    t.normal_job_works("python")


KILL_ALL = {
    "bash": ("""
sleep 30 & sleep 30 &
sleep 0.2
kill -9 -1
echo "kill -9 -1 returned $?"
wait
echo "the job goes on"
""", "the job goes on"),
    "python": ("""
import os, signal, subprocess
children = [subprocess.Popen(["sleep", "30"]) for _ in range(3)]
os.kill(-1, signal.SIGKILL)
print("codes", sorted(c.wait() for c in children))
print("the job goes on")
""", "codes [-9, -9, -9]"),
    "ruby": ("""
pids = 3.times.map { spawn("sleep", "30") }
Process.kill(:KILL, -1)
codes = pids.map { |p| Process.wait2(p)[1].termsig }
puts "codes #{codes.inspect}"
puts "the job goes on"
""", "codes [9, 9, 9]"),
}


def kill_all(language: str):  # type: ignore[no-untyped-def]
    source, expected = KILL_ALL[language]

    def run(t: Target) -> None:
        """``kill -9 -1``: every process of the job but the caller dies; the agent (PID 1) lives on."""
        with LOCKS[language]:
            before = t.settle(language)
            state = t.run(language, source)
            assert state["status"] == "completed", t.explain(state)
            assert expected in state["result"]["stdout"], t.explain(state)
            reused(t, language, before)  # the agent lived through it, scrubbed and said ready
            t.normal_job_works(language)

    return run


for _lang in KILL_ALL:
    attack(f"kill_minus_one_{_lang}")(kill_all(_lang))


@attack("kill_minus_one_from_a_child_bash")
def kill_all_from_child(t: Target) -> None:
    """A subshell's ``kill -9 -1`` also ends the job's own main process: the job just ends."""
    with LOCKS["bash"]:
        before = t.settle("bash")
        state = t.run("bash", "( kill -9 -1 )\necho 'not reached'\n")
        assert state["status"] == "completed", t.explain(state)
        assert state["result"]["signal"] == 9 and "not reached" not in state["result"]["stdout"], t.explain(state)
        reused(t, "bash", before)
        t.normal_job_works("bash")


@attack("handled_signals_to_pid1_bash")
def handled_signals_to_pid1(t: Target) -> None:
    """TERM and INT to the agent: it handles them (a handled signal does reach a PID namespace's
    init from inside), so it must ignore them from a job, or ``kill -INT 1`` ends every job."""
    with LOCKS["bash"]:
        before = t.settle("bash")
        state = t.run("bash", "kill -TERM 1; kill -INT 1; sleep 0.3; echo 'the agent lives'\n")
        assert state["status"] == "completed", t.explain(state)
        assert state["result"]["stdout"] == "the agent lives\n", t.explain(state)
        reused(t, "bash", before)
        t.normal_job_works("bash")


@attack("fatal_signals_to_pid1_bash")
def fatal_signals_to_pid1(t: Target) -> None:
    """SIGKILL, SIGSTOP and default-fatal signals to the agent: an init ignores them from inside its
    PID namespace under runc. gVisor (2022 and 2024 alike) delivers them: the container dies and
    the job ends ``failed`` once, saying so, never retried; the pool replaces the container."""
    source = (
        "for s in HUP QUIT USR1 USR2 ALRM PIPE KILL STOP; do kill -s $s 1; done\n"
        "sleep 0.3\necho 'the agent lives'\n"
    )
    with LOCKS["bash"]:
        before = t.settle("bash")
        state = t.run("bash", source)
        if t.runtime == "runsc":
            assert state["status"] == "failed", t.explain(state)
            assert "killed its sandbox's agent" in state["result"]["error"], t.explain(state)
            assert "not retried" in state["result"]["error"], t.explain(state)
            t.normal_job_works("bash")
            return
        assert state["status"] == "completed", t.explain(state)
        assert state["result"]["stdout"] == "the agent lives\n", t.explain(state)
        reused(t, "bash", before)
        t.normal_job_works("bash")


@pytest.fixture(scope="module")
def batch(reuse_target: Target) -> Iterator[Batch]:
    yield from make_batch(reuse_target, ATTACKS)


@pytest.mark.parametrize("name", list(ATTACKS))
def test_nothing_survives_into_the_next_job(batch: Batch, name: str) -> None:
    batch.result(name)
