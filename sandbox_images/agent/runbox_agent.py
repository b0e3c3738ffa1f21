"""runbox's agent: PID 1 of every sandbox container.

It waits for a job as one JSON line on its standard input (the container's attached
stream), writes the job's files into the work directory, runs the steps (compile, run)
under their limits, streams the program's output back as JSON lines on its standard output,
reports the outcome, then scrubs the container (kills every process, empties every
writable directory and IPC namespace) and checks the scrub before saying it is ready again.

Why PID 1: the kernel does not deliver SIGKILL from inside a PID namespace to its init, so
``kill -9 -1`` by a job cannot take the agent down, and everything a job starts is reparented
to the agent, which reaps it and kills it at the end of the job. Why non-dumpable: the job
runs as the same user, and a dumpable agent's /proc entries (its fds, its memory) would be
open to it, letting it forge protocol lines.
"""

from __future__ import annotations

import codecs
import ctypes
import json
import os
import selectors
import shutil
import signal
import stat
import subprocess
import sys
import time

WORK = "/work"
SCRUB_DIRS = ("/work", "/tmp", "/dev/shm", "/dev/mqueue", "/var/tmp", "/run/lock")
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
FLUSH_DELAY_S = 0.01  # coalesce output for this long so tiny writes do not become tiny events
CHUNK = 65536
PR_SET_DUMPABLE = 4

OUT = sys.stdout.buffer


def send(msg: dict) -> None:
    OUT.write(json.dumps(msg, separators=(",", ":")).encode() + b"\n")
    OUT.flush()


def make_undumpable() -> None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
    except OSError:
        pass


def cgroup_oom_kills() -> int:
    """How many times the container's memory cgroup OOM-killed a process, or -1 if unknown."""
    for path, key in (
        ("/sys/fs/cgroup/memory.events", "oom_kill"),
        ("/sys/fs/cgroup/memory/memory.oom_control", "oom_kill"),
    ):
        try:
            with open(path) as f:
                for line in f:
                    name, _, value = line.partition(" ")
                    if name == key:
                        return int(value)
        except OSError:
            continue
    return -1


def kill_everything() -> None:
    """SIGKILL every process in the container but this one, then reap them all."""
    try:
        os.kill(-1, signal.SIGKILL)
    except ProcessLookupError:
        pass


def reap(usage: dict, block_until: float = 0.0) -> None:
    """Reap every exited child; accumulate their CPU and peak memory into ``usage``."""
    while True:
        try:
            flags = 0 if time.monotonic() < block_until else os.WNOHANG
            pid, status, ru = os.wait4(-1, flags)
        except ChildProcessError:
            return
        except InterruptedError:
            continue
        if pid == 0:
            return
        usage["cpu"] += ru.ru_utime + ru.ru_stime
        usage["rss"] = max(usage["rss"], ru.ru_maxrss)
        if pid == usage.get("main"):
            usage["status"] = status


def other_processes() -> list[int]:
    me = os.getpid()
    return [int(p) for p in os.listdir("/proc") if p.isdigit() and int(p) != me]


class Capture:
    """One output stream: the first ``cap`` bytes are kept and streamed, the rest counted."""

    def __init__(self, name: str, cap: int, stream: bool) -> None:
        self.name = name
        self.cap = cap
        self.stream = stream
        self.total = 0
        self.kept = 0
        self.decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self.pending: list[str] = []
        self.pending_since = 0.0
        self.text: list[str] = []

    def feed(self, data: bytes) -> None:
        self.total += len(data)
        room = self.cap - self.kept
        if room <= 0:
            return
        part = data[:room]
        self.kept += len(part)
        text = self.decoder.decode(part, final=self.kept >= self.cap)
        if not text:
            return
        if self.stream:
            if not self.pending:
                self.pending_since = time.monotonic()
            self.pending.append(text)
        else:
            self.text.append(text)

    @property
    def truncated(self) -> bool:
        return self.total > self.cap

    def flush(self, force: bool = False) -> None:
        if force:
            tail = self.decoder.decode(b"", final=True)
            if tail:
                (self.pending if self.stream else self.text).append(tail)
        if self.pending and (force or time.monotonic() - self.pending_since >= FLUSH_DELAY_S):
            send({"t": "out", "s": self.name, "d": "".join(self.pending)})
            self.pending = []


def limited_argv(argv: list, limits: dict, nproc: int | None) -> list:
    """Prefix the command with prlimit(1): a preexec_fn would make every spawn about 5 ms slower."""
    cpu = max(1, int(limits.get("cpu_time_s", 5) + 0.999))
    fsize = int(limits.get("file_size_kb", 10240)) * 1024
    nofile = int(limits.get("open_files", 256))
    extra = [f"--nproc={nproc}:{nproc}"] if nproc else []
    return [
        "/usr/bin/prlimit",
        *extra,
        f"--cpu={cpu}:{cpu + 1}",
        f"--fsize={fsize}:{fsize}",
        f"--nofile={nofile}:{nofile}",
        "--core=0:0",
        "--",
        *argv,
    ]


def first_in_line_for_oom(pid: int) -> None:
    """Make the job, not the agent, what the memory cgroup's OOM killer picks."""
    try:
        with open(f"/proc/{pid}/oom_score_adj", "w") as f:
            f.write("1000")
    except OSError:
        pass


def run_step(step: dict, env: dict) -> dict:
    """Run one command to its end or its limit; return its outcome."""
    limits = step["limits"]
    stream = bool(step.get("stream"))
    out_cap = int(step["output_bytes"])
    hard_cap = int(step["hard_output_bytes"])
    outs = {
        "stdout": Capture("stdout", out_cap, stream),
        "stderr": Capture("stderr", out_cap, stream) if stream else None,
    }
    stdin_data = step.get("stdin", "").encode("utf-8", "surrogateescape")
    oom_before = cgroup_oom_kills()
    usage = {"cpu": 0.0, "rss": 0, "status": None}
    started = time.monotonic()
    try:
        proc = subprocess.Popen(
            limited_argv(step["argv"], limits, step.get("nproc")),
            cwd=WORK,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE if stream else subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
            restore_signals=True,
        )
    except OSError as exc:
        return {"status": "failed", "error": f"cannot start {step['argv'][0]}: {exc.strerror}"}
    first_in_line_for_oom(proc.pid)
    usage["main"] = proc.pid
    deadline = started + float(limits["timeout_s"])
    sel = selectors.DefaultSelector()
    assert proc.stdout is not None and proc.stdin is not None
    sel.register(proc.stdout, selectors.EVENT_READ, outs["stdout"])
    if proc.stderr is not None:
        sel.register(proc.stderr, selectors.EVENT_READ, outs["stderr"])
    if stdin_data:
        os.set_blocking(proc.stdin.fileno(), False)
        sel.register(proc.stdin, selectors.EVENT_WRITE, None)
    else:
        proc.stdin.close()
    stdin_pos = 0
    killed_by = None
    open_readers = 1 + (proc.stderr is not None)
    while True:
        now = time.monotonic()
        if usage["status"] is None and now >= deadline:
            killed_by = "wall_time"
            kill_everything()
        if open_readers == 0:
            # Output closed: the exit is due any moment, and select() on no descriptors
            # would sleep its whole timeout, so poll the child briefly instead.
            wait = 0.001
        elif usage["status"] is None:
            wait = max(0.0, min(deadline - now, 0.5))
        else:
            wait = 0.2
        if any(c is not None and c.pending for c in outs.values()):
            wait = min(wait, FLUSH_DELAY_S)
        ready = sel.select(wait) if sel.get_map() else time.sleep(wait) or []
        for key, _ in ready:
            if key.data is None:
                try:
                    stdin_pos += os.write(key.fileobj.fileno(), stdin_data[stdin_pos : stdin_pos + CHUNK])
                except (BrokenPipeError, BlockingIOError, OSError):
                    stdin_pos = len(stdin_data)
                if stdin_pos >= len(stdin_data):
                    sel.unregister(key.fileobj)
                    key.fileobj.close()
                continue
            data = os.read(key.fileobj.fileno(), CHUNK)
            if not data:
                sel.unregister(key.fileobj)
                open_readers -= 1
                continue
            key.data.feed(data)
            if sum(c.total for c in outs.values() if c is not None) > hard_cap and killed_by is None:
                killed_by = "output"
                kill_everything()
        for c in outs.values():
            if c is not None:
                c.flush()
        reap(usage)
        if usage["status"] is not None and open_readers == 0:
            break
        if usage["status"] is not None and killed_by is None:
            # The program ended but something it started still holds its output open:
            # nothing may outlive its job, so end it now and drain what is left.
            kill_everything()
            killed_by = killed_by or "leftover"
    duration = time.monotonic() - started
    kill_everything()
    reap(usage, block_until=time.monotonic() + 1.0)
    sel.close()
    for c in outs.values():
        if c is not None:
            c.flush(force=True)
    status = usage["status"]
    exit_code = os.waitstatus_to_exitcode(status) if status is not None else None
    sig = -exit_code if exit_code is not None and exit_code < 0 else None
    if sig is not None:
        exit_code = None
    oom_after = cgroup_oom_kills()
    memory_limit_kb = int(step.get("memory_mb", limits["memory_mb"])) * 1024
    limit = None
    outcome = "completed"
    if killed_by == "wall_time":
        outcome, limit = "timed_out", "wall_time"
    elif killed_by == "output":
        outcome, limit = "output_exceeded", "output"
    elif sig == signal.SIGXCPU or (sig == signal.SIGKILL and usage["cpu"] >= float(limits["cpu_time_s"])):
        outcome, limit = "timed_out", "cpu_time"
    elif (oom_after > oom_before >= 0) or (
        sig == signal.SIGKILL and usage["rss"] >= 0.9 * memory_limit_kb
    ) or usage["rss"] > memory_limit_kb:
        outcome, limit = "memory_exceeded", "memory"
    elif sig == signal.SIGXFSZ:
        limit = "file_size"
    result = {
        "status": outcome,
        "limit": limit,
        "exit_code": exit_code,
        "signal": sig,
        "duration_ms": int(duration * 1000),
        "cpu_ms": int(usage["cpu"] * 1000),
        "memory_peak_kb": int(usage["rss"]),
        "truncated": {k: bool(c and c.truncated) for k, c in outs.items()},
    }
    if not stream:
        result["output"] = "".join(outs["stdout"].text)
    return result


def safe_name(name: str) -> bool:
    return bool(name) and "/" not in name and "\0" not in name and name not in (".", "..") and len(name) <= 255


def write_files(files: list) -> str | None:
    """Create the job's files in the (freshly scrubbed) work directory, never following links."""
    dirfd = os.open(WORK, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        for f in files:
            if not safe_name(f["name"]):
                return f"invalid file name {f['name']!r}"
            fd = os.open(
                f["name"], os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644, dir_fd=dirfd
            )
            with os.fdopen(fd, "wb") as out:
                out.write(f["content"].encode("utf-8", "surrogateescape"))
    except OSError as exc:
        return f"cannot write job files: {exc.strerror}"
    finally:
        os.close(dirfd)
    return None


def run_job(job: dict) -> None:
    env = {"PATH": PATH, "HOME": WORK, "TMPDIR": "/tmp", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}
    env.update(job.get("env", {}))
    error = write_files(job["files"])
    if error:
        send({"t": "done", "status": "failed", "error": error})
        return
    for step in job["steps"]:
        result = run_step(step, env)
        if step["name"] == "compile":
            send({"t": "compile", **result})
            if result["status"] == "failed":
                send({"t": "done", **result})
                return
            if result["status"] != "completed" or result["exit_code"] != 0:
                status = "compile_error" if result["status"] == "completed" else result["status"]
                send({"t": "done", **result, "status": status})
                return
        else:
            send({"t": "done", **result})
            return


def scrub() -> str | None:
    """Leave nothing of the last job behind; return a description of what survived, if anything."""
    kill_everything()
    usage = {"cpu": 0.0, "rss": 0, "status": None}
    deadline = time.monotonic() + 2
    while other_processes() and time.monotonic() < deadline:
        kill_everything()
        reap(usage)
        time.sleep(0.005)
    reap(usage)

    def unlock(func, path, _exc):
        parent = os.path.dirname(path)
        try:
            os.chmod(parent, stat.S_IRWXU)
            if os.path.isdir(path) and not os.path.islink(path):
                os.chmod(path, stat.S_IRWXU)
            func(path)
        except OSError:
            pass

    for top in SCRUB_DIRS:
        if not os.path.isdir(top) or not os.access(top, os.W_OK):
            try:
                os.chmod(top, stat.S_IRWXU)
            except OSError:
                continue
        try:
            entries = os.listdir(top)
        except OSError:
            continue
        for name in entries:
            path = os.path.join(top, name)
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path, onerror=unlock)
            else:
                try:
                    os.unlink(path)
                except OSError:
                    pass
    if shutil.which("ipcrm"):
        subprocess.run(["ipcrm", "--all"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    left = []
    if other_processes():
        left.append(f"processes {other_processes()}")
    for top in SCRUB_DIRS:
        try:
            if os.listdir(top):
                left.append(f"files in {top}")
        except OSError:
            pass
    for kind in ("shm", "msg", "sem"):
        try:
            with open(f"/proc/sysvipc/{kind}") as f:
                if len(f.readlines()) > 1:
                    left.append(f"System V {kind}")
        except OSError:
            pass
    return "; ".join(left) or None


def main() -> None:
    make_undumpable()
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    os.umask(0o077)
    # As PID 1 only handled signals arrive; TERM from the engine ends the container at once.
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    os.chdir(WORK)
    leftover = scrub()
    send({"t": "ready", "clean": leftover is None, "detail": leftover})
    for line in sys.stdin.buffer:
        if not line.strip():
            continue
        try:
            job = json.loads(line)
        except ValueError:
            send({"t": "done", "status": "failed", "error": "agent received an undecodable job"})
            continue
        try:
            run_job(job)
        except Exception as exc:  # the agent must answer whatever went wrong
            send({"t": "done", "status": "failed", "error": f"agent error: {exc!r}"})
        leftover = scrub()
        send({"t": "ready", "clean": leftover is None, "detail": leftover})


if __name__ == "__main__":
    main()
