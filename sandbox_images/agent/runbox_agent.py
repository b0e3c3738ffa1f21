"""runbox's agent: PID 1 of every sandbox container.

It waits for a job as one JSON line on its standard input (the container's attached
stream), writes the job's files into the work directory, runs the steps (compile, run)
under their limits, streams the program's output back as JSON lines on its standard output,
reports the outcome, then scrubs the container (kills every process, empties every
writable directory and IPC namespace) and checks the scrub before saying it is ready again.

Why PID 1: the kernel does not deliver SIGKILL from inside a PID namespace to its init, so
``kill -9 -1`` by a job cannot take the agent down, and everything a job starts is reparented
to the agent, which reaps it and kills it at the end of the job. (gVisor excludes init from
``kill(-1)`` but does deliver a direct ``kill -9 1``; the container then dies and the executor
ends the job ``failed``, not retried; see docs/security.md.) Why non-dumpable: the job runs as
the same user, and a dumpable agent's /proc entries (its fds, its memory) would be open to it,
letting it forge protocol lines. gVisor ignores that in its /proc, so there the sandbox has an
empty tmpfs over /proc/1 instead; this process must stay single-threaded, or a thread's
/proc/<tid> would show its fds again.
"""

from __future__ import annotations

import codecs
import ctypes
import json
import os
import selectors
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time

WORK = "/work"
SCRUB_DIRS = ("/work", "/tmp", "/dev/shm", "/dev/mqueue", "/var/tmp", "/run/lock")
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
WATCH_INTERVAL_S = 0.02  # how often a watched step's memory is measured
# ... and once it holds half its limit: a program allocating a few GB/s would otherwise pass
# the container's headroom for the agent between two looks, and under gVisor the host's OOM
# killer would end the whole sandbox, a job no longer told apart from one killing its agent.
WATCH_CLOSE_S = 0.005
KILL_GRACE_S = 2.0  # past its deadline, whatever still holds the output open no longer delays the answer
FLUSH_DELAY_S = 0.01  # coalesce output for this long so tiny writes do not become tiny events
CHUNK = 65536
PR_SET_DUMPABLE = 4

OUT = sys.stdout.buffer
EXECUTOR_SOCKET = "/run/runbox-agent/agent.sock"  # app/executor/sandbox.py: AGENT_MOUNT, AGENT_SOCKET
# The current job's token, echoed in every message. Should a job ever open this process's
# stdout (gVisor's /proc allowed it through /proc/1/fd before the tmpfs covered it) and write
# lines of its own into the control channel,
# the executor drops the container on any line without the token, which the job never sees
# (it arrives on stdin, read to its end before the job starts, and lives only in this
# process's memory).
TOKEN: str | None = None
# True from a job's arrival until its scrub is done: the only time a process of the job exists.
BUSY = False

# A step marked ``warm`` (the command its language's JSON names as ``warm_start``: an
# interpreter and its stub under /opt/runbox/warm, or a compiler's snapshot) may be served by
# a process started once the scrub after a job is done, before the next job arrives, as
# ``WARM... FD``: the stub waits for the step's arguments (the command's after its first word)
# on pipe FD, closes it, and runs them as the cold command would (see each stub and
# docs/security.md). It is a new process started after every process of the job before was
# killed, so it holds nothing of that job; the step's limits, environment and session are the
# ones a cold start gets. A later step's warm process waits through the earlier steps: each
# ends by killing every process but those (see end_step).


class Warm:
    """A process started ahead of a job, for a step like ``key`` (see prepare_warm)."""

    def __init__(self, key: str, proc: subprocess.Popen, control: int, held_before: int) -> None:
        self.key = key
        self.proc = proc
        self.control = control
        self.held_before = held_before  # memory held before it started: its own counts for the job
        self.cpu_before = 0.0  # CPU it used before the job was handed to it: not the job's

    def discard(self) -> None:
        """Kill it, reap it (so its CPU and memory never count toward the job that discarded it)
        and let go of its pipes."""
        os.close(self.control)
        try:
            self.proc.kill()
            self.proc.wait(timeout=2)
        except (OSError, subprocess.TimeoutExpired):
            pass  # the scrub kills and reaps whatever is left
        for pipe in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                try:
                    pipe.close()
                except OSError:
                    pass


# The warm processes started for the coming job, by the name of the step each may serve.
WARM: dict[str, Warm] = {}

ZYGOTE_REPLY_S = 2.0  # a zygote slower than this to fork is replaced (a job may have stopped it)


class Forked:
    """A warm process a zygote forked (twice, so that it is this process's child), driven as a Popen."""

    def __init__(self, pid: int, stdin, stdout, stderr) -> None:
        self.pid = pid
        self.stdin = stdin
        self.stdout = stdout
        self.stderr = stderr
        self.returncode = None

    def poll(self):
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:
                self.returncode = -1  # reaped with the step's other processes
            else:
                if pid:
                    self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def kill(self) -> None:
        if self.poll() is None:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def wait(self, timeout: float):
        end = time.monotonic() + timeout
        while self.poll() is None:
            if time.monotonic() >= end:
                raise subprocess.TimeoutExpired(str(self.pid), timeout)
            time.sleep(0.001)
        return self.returncode


class Zygote:
    """A warm stub started once per container that forks each job's warm process (a step whose
    language data says ``warm_fork``). It was started like a warm process of ``key``
    (same limits, environment, session) and never runs a program itself; see its stub and
    docs/security.md for what a job can and cannot do to it."""

    def __init__(self, key: str, proc: subprocess.Popen, channel: socket.socket) -> None:
        self.key = key
        self.proc = proc
        self.channel = channel

    def usable(self) -> bool:
        """Alive and waiting: not stopped (a job may SIGSTOP it), not gone."""
        if self.proc.poll() is not None:
            return False
        try:
            with open(f"/proc/{self.proc.pid}/stat") as f:
                state = f.read().rpartition(")")[2].split()[0]
        except (OSError, IndexError):
            return False
        return state in ("S", "R")

    def fork(self, stdin: int, stdout: int, stderr: int, control: int) -> int:
        """The pid of a new warm process on these descriptors (0 when the zygote could not make one)."""
        fds = b"".join(fd.to_bytes(4, sys.byteorder) for fd in (stdin, stdout, stderr, control))
        self.channel.sendmsg([b"f"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds)])
        reply = self.channel.recv(4)
        return int.from_bytes(reply, sys.byteorder) if len(reply) == 4 else 0

    def discard(self) -> None:
        self.channel.close()
        try:
            self.proc.kill()
            self.proc.wait(timeout=2)
        except (OSError, subprocess.TimeoutExpired):
            pass


ZYGOTE: Zygote | None = None


def zygote_for(step: dict, env: dict) -> Zygote | None:
    """The container's zygote for a step like ``step``, started (or replaced) as needed."""
    global ZYGOTE
    key = warm_key(step, env)
    if ZYGOTE is not None and (ZYGOTE.key != key or not ZYGOTE.usable()):
        discard_zygote()
    if ZYGOTE is None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            # Under gVisor each forked process makes its own IPC namespace, as unshare(1) makes
            # a cold start's (limited_argv), so the zygote, which runs no program, needs none:
            # the process's namespaces then hang where a cold start's do.
            ipc = ["--ipc"] if step.get("ipc_namespace") else []
            argv = [*step["warm"], "--fork", *ipc, str(theirs.fileno())]
            proc = spawn(argv, {**step, "ipc_namespace": False}, env, False, (theirs.fileno(),))
        except OSError:
            ours.close()
            return None
        finally:
            theirs.close()
        for pipe in (proc.stdin, proc.stdout):
            pipe.close()
        first_in_line_for_oom(proc.pid)
        ours.settimeout(ZYGOTE_REPLY_S)
        ZYGOTE = Zygote(key, proc, ours)
    return ZYGOTE


def discard_zygote() -> None:
    global ZYGOTE
    if ZYGOTE is not None:
        ZYGOTE.discard()
        ZYGOTE = None


def fork_warm(zygote: Zygote, step: dict, control: int):
    """A warm process for ``step`` forked by ``zygote``, or None (then it is started cold)."""
    stdin_r, stdin_w = os.pipe()
    stdout_r, stdout_w = os.pipe()
    stderr_r, stderr_w = os.pipe() if separated(step) else (None, stdout_w)
    try:
        pid = zygote.fork(stdin_r, stdout_w, stderr_w, control)
    except OSError:  # timed out, or the zygote is gone
        pid = 0
    for fd in {stdin_r, stdout_w, stderr_w}:
        os.close(fd)
    if not pid:
        discard_zygote()
        for fd in (stdin_w, stdout_r, stderr_r):
            if fd is not None:
                os.close(fd)
        return None
    return Forked(pid, open(stdin_w, "wb", buffering=0), open(stdout_r, "rb", buffering=0),
                  open(stderr_r, "rb", buffering=0) if stderr_r is not None else None)


def on_term(_sig: int, _frame: object) -> None:
    """TERM from the engine ends an idle container at once; from a job (same user, so it may
    signal PID 1, and a handled signal reaches init) it is ignored: a job must not end its agent."""
    if not BUSY:
        os._exit(0)


def send(msg: dict) -> None:
    if TOKEN is not None:
        msg["k"] = TOKEN
    OUT.write(json.dumps(msg, separators=(",", ":")).encode() + b"\n")
    OUT.flush()


def connect_executor() -> None:
    """Talk to the executor over the socket it offers in the sandbox's mount, where it does.

    fd 0 and fd 1 become that connection (not inherited by anything the agent starts), so the
    job messages and everything the agent reports go straight between executor and agent,
    not through the engine, the shim and the gate. The executor takes one connection and
    removes the socket at once: this one, made before any job runs.
    """
    if not os.path.exists(EXECUTOR_SOCKET):
        return  # the container's attached stdin and stdout
    channel = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        channel.connect(EXECUTOR_SOCKET)
    except OSError:
        os._exit(4)  # the executor listens for this sandbox's agent alone: nothing else would answer
    os.dup2(channel.fileno(), 0, inheritable=False)
    os.dup2(channel.fileno(), 1, inheritable=False)
    channel.close()


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


def sysv_counts() -> dict:
    """System V objects in this IPC namespace, from the *_INFO calls (no /proc/sysvipc needed).

    Linux reports the objects in use; gVisor's SHM_INFO reports the highest segment id ever
    used, which is as good here: nonzero once any segment was made in this namespace.
    """
    counts = {}
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        buf = ctypes.create_string_buffer(256)
        if libc.shmctl(0, 14, buf) >= 0:  # SHM_INFO: struct shm_info.used_ids
            counts["shm"] = int.from_bytes(buf.raw[:4], sys.byteorder, signed=True)
        if libc.msgctl(0, 12, buf) >= 0:  # MSG_INFO: struct msginfo.msgpool, the queues in use
            counts["msg"] = int.from_bytes(buf.raw[:4], sys.byteorder, signed=True)
        if libc.semctl(0, 0, 19, buf) >= 0:  # SEM_INFO: struct seminfo.semusz, the sets in use
            counts["sem"] = int.from_bytes(buf.raw[28:32], sys.byteorder, signed=True)
    except (OSError, AttributeError):
        pass
    return counts


def kill_everything(spare: frozenset[int] = frozenset()) -> None:
    """SIGKILL every process in the container but this one (and ``spare``, one by one)."""
    if spare:
        for pid in other_processes():
            if pid not in spare:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
        return
    try:
        os.kill(-1, signal.SIGKILL)
    except ProcessLookupError:
        pass


def waiting() -> frozenset[int]:
    """The warm processes still waiting for a later step of this job, and the zygote: a step must spare them."""
    return frozenset(warm.proc.pid for warm in WARM.values()) | zygote_pids()


def zygote_pids() -> frozenset[int]:
    return frozenset((ZYGOTE.proc.pid,)) if ZYGOTE is not None else frozenset()


def outlast(spare: frozenset[int], usage: dict) -> bool:
    """Kill every process but ``spare`` one by one for up to a second; True once only those are left."""
    deadline = time.monotonic() + 1.0
    while True:
        kill_everything(spare)
        reap(usage)
        if not set(other_processes()) - spare:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.002)


def end_step(usage: dict) -> None:
    """Kill and reap every process of the step that ends. Warm processes waiting for a later
    step are spared only while every other process can be seen gone: a step whose processes
    outlast a second of killing them one by one takes those warm processes down too (the
    later steps start cold), by the kill(-1) no fork can outrun."""
    spare = waiting()
    if spare and outlast(spare, usage):
        return
    discard_warm()
    discard_zygote()
    kill_everything()
    reap(usage, block_until=time.monotonic() + 1.0)


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


# Where the memory a job holds is counted, whatever holds it: anonymous pages, files on the
# tmpfs mounts, /dev/shm, memfds and System V segments are all "anon" or "shmem" pages of the
# container's memory cgroup (v2, v1); gVisor counts all of them in its own AnonPages.
MEMORY_SOURCES = (
    ("/sys/fs/cgroup/memory.stat", (b"anon", b"shmem"), 1024),
    ("/sys/fs/cgroup/memory/memory.stat", (b"total_rss", b"total_shmem"), 1024),
    ("/proc/meminfo", (b"AnonPages:",), 1),
)


def held_memory_kb() -> int:
    """Memory held in the container right now, in kB (-1 when no source can be read)."""
    for path, keys, divisor in MEMORY_SOURCES:
        try:
            with open(path, "rb") as f:
                total = 0
                for line in f:
                    name, _, value = line.partition(b" ")
                    if name in keys:
                        total += int(value.split()[0])
            return total // divisor
        except (OSError, ValueError, IndexError):
            continue
    return -1


class Control:
    """The control channel (fd 0, the container's attached stdin), read line by line.

    Read with ``os.read`` rather than ``sys.stdin``'s buffer, so the run loop can also wait on
    it with the selector: an interactive job's input arrives here while the job runs.
    """

    def __init__(self) -> None:
        self.buf = bytearray()
        self.closed = False
        # Messages taken out of order and put back: input sent while the compile step ran
        # (which takes only signals) waits here for the run step.
        self.held: list = []

    def fill(self) -> None:
        """Read what is available (the caller knows fd 0 is readable, or wants to block)."""
        data = os.read(0, CHUNK)
        if not data:
            self.closed = True
        self.buf += data

    def pop(self):
        """The next complete message (a dict, or {} when undecodable), or None if none is whole yet."""
        if self.held:
            return self.held.pop(0)
        while True:
            end = self.buf.find(b"\n")
            if end < 0:
                return None
            line = bytes(self.buf[:end])
            del self.buf[: end + 1]
            if not line.strip():
                continue
            try:
                message = json.loads(line)
            except ValueError:
                return {}
            return message if isinstance(message, dict) else {}

    def hold(self, messages: list) -> None:
        """Put messages back, to be popped again first and in the same order."""
        self.held = messages + self.held

    def wait(self):
        """Block until a whole message arrives; None when the channel has ended."""
        while True:
            message = self.pop()
            if message is not None:
                return message
            if self.closed:
                return None
            self.fill()


CONTROL = Control()
STDIN_KEY = "stdin"
CONTROL_KEY = "control"
EXIT_KEY = "exit"


def exit_watch(pid: int) -> int | None:
    """A descriptor that becomes readable when ``pid`` exits; None where the kernel has none (polled instead)."""
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):  # an older kernel, or a runtime (gVisor) without pidfd_open
        return None


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


def limited_argv(argv: list, limits: dict, nproc: int | None, ipc_namespace: bool = False) -> list:
    """Prefix the command with prlimit(1): a preexec_fn would make every spawn about 5 ms slower.

    With ``ipc_namespace`` (gVisor) the command also gets an IPC namespace of its own, made
    through a user namespace (which gVisor lets an unprivileged process create): gVisor has
    no /proc/sysvipc and no /dev/mqueue, so the scrub could neither find nor remove a job's
    System V objects or POSIX message queues; in a namespace of their own they end with it.
    """
    cpu = max(1, int(limits.get("cpu_time_s", 5) + 0.999))
    fsize = int(limits.get("file_size_kb", 10240)) * 1024
    nofile = int(limits.get("open_files", 256))
    extra = [f"--nproc={nproc}:{nproc}"] if nproc else []
    if ipc_namespace:
        uid, gid = os.getuid(), os.getgid()
        argv = ["/usr/bin/unshare", "--user", f"--map-user={uid}", f"--map-group={gid}", "--ipc", "--", *argv]
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


def spawn(argv: list, step: dict, env: dict, separate: bool, pass_fds: tuple = ()) -> subprocess.Popen:
    """Start a step's command under its limits, in a session of its own, with piped stdio."""
    return subprocess.Popen(
        limited_argv(argv, step["limits"], step.get("nproc"), bool(step.get("ipc_namespace"))),
        cwd=WORK,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE if separate else subprocess.STDOUT,
        start_new_session=True,
        close_fds=True,
        restore_signals=True,
        pass_fds=pass_fds,
    )


def separated(step: dict) -> bool:
    """Whether the step's stderr is captured apart from its stdout."""
    return bool(step.get("stream") or step.get("separate_stderr"))


def warm_key(step: dict, env: dict) -> str:
    """What a warm process must have been started with to serve ``step``."""
    return json.dumps([step["warm"], step["argv"][0], step["limits"], step.get("nproc"), separated(step),
                       bool(step.get("ipc_namespace")), env, bool(step.get("watch_memory_kb"))], sort_keys=True)


def prepare_warm(step: dict, env: dict) -> None:
    """After a clean scrub: start the process the next job's step like ``step`` will run in."""
    # The zygote first: its own memory is not the job's.
    zygote = zygote_for(step, env) if step.get("warm_fork") else None
    held = held_memory_kb() if step.get("watch_memory_kb") else -1
    read, write = os.pipe()
    try:
        proc = fork_warm(zygote, step, read) if zygote is not None else None
        if proc is None:
            # A fresh pipe: a zygote that answered too late may still have forked a process
            # holding the first one, which must never be the one told the program.
            os.close(read)
            os.close(write)
            read, write = os.pipe()
            proc = spawn([*step["warm"], str(read)], step, env, separated(step), (read,))
    except OSError:
        os.close(write)
        return
    finally:
        os.close(read)
    first_in_line_for_oom(proc.pid)
    WARM[step["name"]] = Warm(warm_key(step, env), proc, write, held)


def discard_warm() -> None:
    """Kill every warm process still waiting."""
    while WARM:
        WARM.popitem()[1].discard()


def process_cpu_s(pid: int) -> float:
    """The CPU time a running process has used so far (0 if unknown)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime
    except (OSError, ValueError, IndexError):
        return 0.0


def take_warm(step: dict, env: dict) -> Warm | None:
    """The warm process, now running ``step``'s command, if it was started for a step like it."""
    warm = WARM.pop(step["name"], None)
    if warm is None:
        return None
    if not step.get("warm") or warm.key != warm_key(step, env) or warm.proc.poll() is not None:
        warm.discard()
        return None
    try:
        os.kill(warm.proc.pid, signal.SIGCONT)  # an earlier step of the job may have stopped it
    except OSError:
        pass
    warm.cpu_before = process_cpu_s(warm.proc.pid)
    payload = b"\0".join(os.fsencode(a) for a in step["argv"][1:])
    try:
        while payload:
            payload = payload[os.write(warm.control, payload):]
    except OSError:
        warm.discard()
        return None
    os.close(warm.control)
    return warm


def run_step(step: dict, env: dict) -> dict:
    """Run one command to its end or its limit; return its outcome.

    ``stream`` sends output as it comes; otherwise it is returned (``output``, and ``errors``
    when ``separate_stderr`` keeps stderr apart, as a judged case does). ``interactive`` keeps
    the program's stdin open for ``stdin`` messages on the control channel until one says
    ``eof``; with no input and no output for ``idle_s`` the step ends ``timed_out``. An
    interactive step, and a step marked ``signals`` (an interactive job's compile step), take
    ``signal`` messages too: the signal goes to the step's process group, as a terminal's
    Ctrl-C does, and a step it ends is ``completed`` with that signal (never read as a limit).
    """
    limits = step["limits"]
    stream = bool(step.get("stream"))
    separate = separated(step)
    interactive = bool(step.get("interactive"))
    listens = interactive or bool(step.get("signals"))
    idle_s = float(step.get("idle_s") or 0)
    out_cap = int(step["output_bytes"])
    hard_cap = int(step["hard_output_bytes"])
    outs = {
        "stdout": Capture("stdout", out_cap, stream),
        "stderr": Capture("stderr", out_cap, stream) if separate else None,
    }
    pending = bytearray(step.get("stdin", "").encode("utf-8", "surrogateescape"))
    eof = not interactive  # no more input will come once ``pending`` is written
    oom_before = cgroup_oom_kills()
    usage = {"cpu": 0.0, "rss": 0, "status": None}
    delivered = set()  # signals sent to this step's processes on the client's behalf
    started = time.monotonic()
    warm = take_warm(step, env)
    if warm is not None:
        proc = warm.proc
        # Its warm-up (a JVM's compiling a sample program, say) is not the job's CPU time.
        usage["cpu"] = -warm.cpu_before
    else:
        try:
            proc = spawn(step["argv"], step, env, separate)
        except OSError as exc:
            return {"status": "failed", "error": f"cannot start {step['argv'][0]}: {exc.strerror}"}
        first_in_line_for_oom(proc.pid)
    usage["main"] = proc.pid
    deadline = started + float(limits["timeout_s"])
    sel = selectors.DefaultSelector()
    # The program's exit wakes the loop at once: its output closes a moment before it can be
    # reaped, and polling for that moment cost up to a millisecond on every job.
    exited = exit_watch(proc.pid)
    if exited is not None:
        sel.register(exited, selectors.EVENT_READ, EXIT_KEY)
    assert proc.stdout is not None and proc.stdin is not None
    sel.register(proc.stdout, selectors.EVENT_READ, outs["stdout"])
    if proc.stderr is not None:
        sel.register(proc.stderr, selectors.EVENT_READ, outs["stderr"])
    stdin = proc.stdin
    os.set_blocking(stdin.fileno(), False)
    writing = False  # stdin is registered for writing

    def pump_stdin() -> None:
        """Keep stdin registered while there is input to write; close it after the last byte."""
        nonlocal stdin, writing
        if stdin is None:
            return
        if pending and not writing:
            sel.register(stdin, selectors.EVENT_WRITE, STDIN_KEY)
            writing = True
        elif not pending:
            if writing:
                sel.unregister(stdin)
                writing = False
            if eof:
                stdin.close()
                stdin = None

    def deliver_signal(number: object) -> None:
        """Signal the step's process group, never anything once its main process is reaped."""
        if not isinstance(number, int) or not 0 < number < signal.SIGRTMIN or usage["status"] is not None:
            return
        try:
            os.killpg(proc.pid, number)
            delivered.add(number)
        except OSError:
            pass

    def take_input() -> None:
        """Act on the messages the control channel holds (some may have come with the job)."""
        nonlocal eof, last_activity
        later = []
        while (message := CONTROL.pop()) is not None:
            kind = message.get("t")
            if kind == "signal":
                deliver_signal(message.get("n"))
            elif kind == "stdin" and not interactive:
                later.append(message)  # for the run step, which has not started yet
            elif kind == "stdin" and not eof:
                pending.extend(str(message.get("d", "")).encode("utf-8", "surrogateescape"))
                eof = bool(message.get("eof"))
                last_activity = time.monotonic()
        CONTROL.hold(later)
        pump_stdin()

    last_activity = started
    pump_stdin()
    if listens:
        take_input()
        sel.register(0, selectors.EVENT_READ, CONTROL_KEY)
    killed_by = None
    # Every step is measured and killed at its own limit: the container's cgroup stops only
    # the sum of job and agent (and a compile-sized container far later), and memory held in
    # files (tmpfs, /dev/shm, memfds) belongs to no process a per-process count would see.
    watch_kb = int(step.get("watch_memory_kb") or 0)
    held_before = (warm.held_before if warm is not None else held_memory_kb()) if watch_kb else -1
    watch_kb = watch_kb if held_before >= 0 else 0
    # The cgroup's figures are the host's and exact: they are the step's peak too. gVisor's
    # AnonPages also counts memory it has committed but not yet backed, so there they only
    # decide the kill (the peak stays the processes' own resident maximum).
    exact = any(os.path.exists(path) for path, _, _ in MEMORY_SOURCES[:2])
    held_peak = 0  # the most the step was seen holding, exact or not
    told_high = False  # the executor was told the step holds over half its limit
    next_watch = 0.0
    open_readers = 1 + (proc.stderr is not None)
    while True:
        now = time.monotonic()
        if usage["status"] is None and now >= deadline and killed_by is None:
            killed_by = "wall_time"
        if (
            idle_s
            and killed_by is None
            and usage["status"] is None
            and stdin is not None
            and not pending
            and now - last_activity >= idle_s
        ):
            # Waiting for input that does not come: end it now rather than at the wall time.
            killed_by = "idle"
            deadline = now
        if watch_kb and killed_by is None and now >= next_watch:
            seen = max(0, held_memory_kb() - held_before)
            high = 2 * seen > watch_kb
            next_watch = now + (WATCH_CLOSE_S if high else WATCH_INTERVAL_S)
            if high and not told_high:
                # Should the container's cgroup end the sandbox before the next look (gVisor:
                # the host's OOM killer takes the whole sandbox, and the engine may not say so),
                # the executor knows the job was on its way there.
                told_high = True
                send({"t": "mem", "kb": seen})
            held_peak = max(held_peak, seen)
            if exact:
                usage["rss"] = max(usage["rss"], seen)
            if seen > watch_kb:
                killed_by = "memory"
        if killed_by is not None:
            # Once the job is being killed, kill again on every turn: a fork can race a
            # kill(-1) (under gVisor it is not atomic), and a fork bomb's survivors would
            # otherwise hold the output open forever.
            kill_everything(waiting())
            if now >= deadline + KILL_GRACE_S:
                for key in list(sel.get_map().values()):
                    if isinstance(key.data, Capture):
                        sel.unregister(key.fileobj)
                        open_readers -= 1
                if usage["status"] is None:
                    break
        if open_readers == 0 and exited is None:
            # Output closed: the exit is due any moment, and select() on no descriptors
            # would sleep its whole timeout, so poll the child briefly instead.
            wait = 0.001
        elif usage["status"] is None:
            wait = max(0.0, min(deadline - now, 0.5))
        else:
            wait = 0.2
        if any(c is not None and c.pending for c in outs.values()) or killed_by is not None:
            wait = min(wait, FLUSH_DELAY_S)
        if watch_kb and killed_by is None:
            # The watch stops once a kill is under way; its last deadline would spin select().
            wait = min(wait, max(0.0, next_watch - now))
        if idle_s and killed_by is None and stdin is not None and not pending:
            wait = max(0.0, min(wait, last_activity + idle_s - now))
        ready = sel.select(wait) if sel.get_map() else time.sleep(wait) or []
        for key, _ in ready:
            if key.data == STDIN_KEY:
                try:
                    del pending[: os.write(stdin.fileno(), pending[:CHUNK])]
                except BlockingIOError:
                    pass
                except OSError:  # the program closed its stdin: what is left has no reader
                    pending.clear()
                    eof = True
                pump_stdin()
                continue
            if key.data == EXIT_KEY:
                sel.unregister(key.fileobj)  # reaped below; level-triggered, it would wake every turn
                continue
            if key.data == CONTROL_KEY:
                CONTROL.fill()
                if CONTROL.closed:
                    sel.unregister(0)
                take_input()
                continue
            data = os.read(key.fileobj.fileno(), CHUNK)
            if not data:
                sel.unregister(key.fileobj)
                open_readers -= 1
                continue
            last_activity = time.monotonic()
            key.data.feed(data)
            if sum(c.total for c in outs.values() if c is not None) > hard_cap and killed_by is None:
                killed_by = "output"
                kill_everything(waiting())
        for c in outs.values():
            if c is not None:
                c.flush()
        reap(usage)
        if usage["status"] is not None and open_readers == 0:
            break
        if usage["status"] is not None and killed_by is None:
            # The program ended but something it started still holds its output open:
            # nothing may outlive its job, so end it now and drain what is left.
            kill_everything(waiting())
            killed_by = "leftover"
    duration = time.monotonic() - started
    end_step(usage)
    sel.close()
    if exited is not None:
        os.close(exited)
    if stdin is not None:
        try:
            stdin.close()
        except OSError:
            pass
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
    if killed_by in ("wall_time", "idle"):
        outcome, limit = "timed_out", killed_by
    elif killed_by == "output":
        outcome, limit = "output_exceeded", "output"
    elif killed_by == "memory":
        outcome, limit = "memory_exceeded", "memory"
    elif sig is not None and sig in delivered:
        pass  # the client's signal ended it, whatever the signal is and however much it used
    elif sig == signal.SIGXCPU or (sig == signal.SIGKILL and usage["cpu"] >= float(limits["cpu_time_s"])):
        outcome, limit = "timed_out", "cpu_time"
    elif (oom_after > oom_before >= 0) or (
        # A program that fails at its ceiling failed for want of memory, however it ends:
        # killed, or (under gVisor, whose allocations fail before any OOM kill) exiting on a
        # failed allocation, often too short of memory to say so on stderr.
        (sig is not None or exit_code not in (None, 0))
        and max(usage["rss"], held_peak) >= 0.9 * memory_limit_kb
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
        if outs["stderr"] is not None:
            result["errors"] = "".join(outs["stderr"].text)
    return result


def safe_name(name: str) -> bool:
    return bool(name) and "/" not in name and "\0" not in name and name not in (".", "..") and len(name) <= 255


def write_files(files: list) -> str | None:
    """Create the job's files in the (freshly scrubbed) work directory, never following links.

    A name may be a relative path ("data/in.txt", Judge0's zips): its folders are made one at
    a time under the work directory, each opened without following links, so no part of a
    path can lead outside it.
    """
    dirfd = os.open(WORK, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        for f in files:
            *folders, name = f["name"].split("/")
            if not all(safe_name(part) for part in (*folders, name)):
                return f"invalid file name {f['name']!r}"
            parent = dirfd
            try:
                for folder in folders:
                    try:
                        os.mkdir(folder, 0o755, dir_fd=parent)
                    except FileExistsError:
                        pass
                    opened = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=parent)
                    if parent != dirfd:
                        os.close(parent)
                    parent = opened
                fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644, dir_fd=parent)
            finally:
                if parent != dirfd:
                    os.close(parent)
            with os.fdopen(fd, "wb") as out:
                out.write(f["content"].encode("utf-8", "surrogateescape"))
    except OSError as exc:
        return f"cannot write job files: {exc.strerror}"
    finally:
        os.close(dirfd)
    return None


def remove_entry(path: str, onerror=None) -> None:
    """Remove a file, link or directory tree; failures are left for the caller's check."""
    try:
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=onerror is None, onerror=onerror)
        else:
            os.unlink(path)
    except Exception:  # OSError, or RecursionError on a very deep tree
        pass


def clear_new_entries(top: str, keep: set) -> None:
    """Remove what a judged case left in ``top`` (except ``keep``), so the next case starts alike."""
    try:
        entries = os.listdir(top)
    except OSError:
        return
    for name in entries:
        if name not in keep:
            remove_entry(os.path.join(top, name))


def run_cases(step: dict, env: dict) -> None:
    """Run the built program once per test case, each under the step's limits, within ``budget_s``.

    Each case is reported as it ends; between cases every process is gone (``run_step`` kills
    them) and files the case created are removed. Cases stop when the job's total budget is
    spent: the job then ends ``timed_out`` with ``limit: total_time``.
    """
    cases = step["cases"]
    end = time.monotonic() + float(step["budget_s"])
    timeout = float(step["limits"]["timeout_s"])
    keep = set(os.listdir(WORK))
    ran = 0
    cut = False
    for index, case in enumerate(cases):
        remaining = end - time.monotonic()
        if remaining <= 0:
            cut = True
            break
        limits = dict(step["limits"], timeout_s=min(timeout, remaining))
        result = run_step(dict(step, stdin=case.get("stdin", ""), limits=limits), env)
        if result["status"] == "failed":
            send({"t": "done", **result})
            return
        send({"t": "case", "i": index, **result})
        ran += 1
        for top in (WORK, "/tmp", "/dev/shm"):
            clear_new_entries(top, keep if top == WORK else set())
        if result.get("limit") == "wall_time" and limits["timeout_s"] < timeout:
            cut = True
            break
    if cut or ran < len(cases):
        send({"t": "done", "status": "timed_out", "limit": "total_time", "cases": ran})
    else:
        send({"t": "done", "status": "completed", "cases": ran})


def job_env(job: dict) -> dict:
    """The environment every step of ``job`` runs in."""
    env = {"PATH": PATH, "HOME": WORK, "TMPDIR": "/tmp", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}
    env.update(job.get("env", {}))
    return env


def run_job(job: dict, env: dict) -> None:
    """Write a job's files and run its steps in ``env``, sending each outcome."""
    error = write_files(job["files"])
    if error:
        send({"t": "done", "status": "failed", "error": error})
        return
    for step in job["steps"]:
        if step.get("cases") is not None:
            run_cases(step, env)
            return
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
    usage = {"cpu": 0.0, "rss": 0, "status": None}
    spare = zygote_pids()
    if spare and not (outlast(spare, usage) and ZYGOTE is not None and ZYGOTE.usable()):
        discard_zygote()
        spare = frozenset()
    if not spare:
        kill_everything()
        deadline = time.monotonic() + 2
        while other_processes() and time.monotonic() < deadline:
            kill_everything()
            reap(usage)
            time.sleep(0.005)
    reap(usage)

    def unlock(_func, path, _exc):
        """A job may leave a directory its owner can neither enter nor write: open it up, retry."""
        try:
            os.chmod(os.path.dirname(path), stat.S_IRWXU)
            if os.path.isdir(path) and not os.path.islink(path):
                os.chmod(path, stat.S_IRWXU)
                shutil.rmtree(path, onerror=unlock)
            else:
                os.unlink(path)
        except Exception:  # OSError, or RecursionError on a very deep tree: rm(1) below
            pass

    left: list[str] = []
    quiet = {"stdin": subprocess.DEVNULL, "stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "check": False}
    for top in SCRUB_DIRS:
        if not os.path.isdir(top):
            continue
        try:
            os.chmod(top, stat.S_IRWXU)  # a job may have taken its own rights on /work or /tmp away
        except OSError:
            pass  # root's (/dev/shm, /dev/mqueue: sticky, world-writable) or on the read-only root
        try:
            entries = os.listdir(top)
        except OSError:
            continue  # reported by the check below
        for name in entries:
            path = os.path.join(top, name)
            remove_entry(path, unlock)
            if os.path.isdir(path) and not os.path.islink(path):
                subprocess.run(["chmod", "-R", "u+rwx", "--", path], **quiet)
                subprocess.run(["rm", "-rf", "--", path], **quiet)
    # ipcrm only when there is something to remove: a process started after every job was
    # a good share of the agent's own CPU per job, for the few jobs that leave an object.
    sysv = sysv_counts()
    if any(sysv.values()) and shutil.which("ipcrm"):
        subprocess.run(["ipcrm", "--all"], **quiet)
        sysv = sysv_counts()
    if any(sysv.values()):
        left.append(f"System V objects {sysv}")
    if survivors := set(other_processes()) - spare:
        left.append(f"processes {sorted(survivors)}")
    for top in SCRUB_DIRS:
        if not os.path.isdir(top):
            continue
        try:
            if os.listdir(top):
                left.append(f"files in {top}")
        except OSError:
            left.append(f"cannot list {top}")
    for kind in ("shm", "msg", "sem"):
        try:
            with open(f"/proc/sysvipc/{kind}") as f:
                if len(f.readlines()) > 1:
                    left.append(f"System V {kind}")
        except OSError:
            pass
    return "; ".join(left) or None


def checked_scrub() -> str | None:
    """The scrub never takes the agent down: whatever goes wrong, the container is not reused."""
    try:
        return scrub()
    except Exception as exc:
        return f"scrub failed: {exc!r}"


def close_stderr() -> None:
    """Point fd 2 at /dev/null: should a job ever open /proc/1/fd/2, whatever it wrote
    there would reach the executor; the agent reports every error in its own messages."""
    null = os.open("/dev/null", os.O_WRONLY)
    os.dup2(null, 2)
    os.close(null)


def main() -> None:
    global TOKEN, BUSY
    make_undumpable()
    connect_executor()
    close_stderr()
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    os.umask(0o077)
    # As PID 1 only handled signals arrive; TERM from the engine ends the container at once.
    signal.signal(signal.SIGTERM, on_term)
    # Python's default SIGINT handler would raise KeyboardInterrupt out of the agent on a job's
    # ``kill -INT 1``; a handler (not SIG_IGN, which a job would inherit) swallows it.
    signal.signal(signal.SIGINT, lambda *_: None)
    os.chdir(WORK)
    leftover = checked_scrub()
    send({"t": "ready", "clean": leftover is None, "detail": leftover, "tokens": True})
    # Each job names a secret the next job's message must carry: a job message without it was
    # written by a job (were /proc/1/fd/0 open to it for writing), and the container ends
    # here, before the line can run as a job or answer for the next one.
    expected = None
    while (job := CONTROL.wait()) is not None:
        if job.get("t") in ("stdin", "signal"):
            continue  # live input for an interactive job that has just ended
        if "steps" not in job or (expected is not None and job.get("auth") != expected):
            os._exit(3)
        expected = job.get("next")
        TOKEN = job.get("token")
        BUSY = True
        warm_for: list = []
        try:
            env = job_env(job)
            # The last step's first: a warm process's memory counts for its own step, and an
            # earlier step's baseline then holds the later ones' waiting processes.
            warm_for = [(step, env) for step in reversed(job["steps"]) if step.get("warm")]
            run_job(job, env)
        except Exception as exc:  # the agent must answer whatever went wrong
            send({"t": "done", "status": "failed", "error": f"agent error: {exc!r}"})
        discard_warm()  # started for this job, which did not use them
        leftover = checked_scrub()
        if leftover is None:
            try:
                for step, env in warm_for:
                    prepare_warm(step, env)
            except Exception:  # only a head start: the next job starts cold
                discard_warm()
        BUSY = False
        send({"t": "ready", "clean": leftover is None, "detail": leftover})


if __name__ == "__main__":
    main()
