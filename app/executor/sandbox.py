"""One sandbox container and its agent, driven through the Docker engine.

Every limit and hardening flag is set in :func:`container_options`, one pure function the
unit tests check. The container's PID 1 is the agent (``sandbox_images/agent``); we talk to
it over a Unix socket the executor offers in a directory mounted read-only into the sandbox
(``RUNBOX_AGENT_SOCKET_DIR``), taken by the agent before any job runs and removed at once,
or, without that directory, over the container's attached stdin/stdout. Either way a job
never pays for ``docker exec`` and the executor never touches a job's files from the host
side; the socket also keeps every job's bytes off the engine, its shim and the gate.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import random
import secrets
import shutil
import socket
import tempfile
import time
from collections.abc import AsyncIterator
from typing import Any

import docker
import docker.errors
from docker.types import LogConfig, Ulimit

from app import jsoncodec, seccomp
from app.executor.engine import ENGINE_ERRORS, engine_problem
from app.languages import Language, Limits

log = logging.getLogger(__name__)

AGENT_MEMORY_MB = 48  # the agent's own share of a container's memory limit
AGENT_PROCESSES = 8  # the agent, the scrub's helpers
# Under gVisor the pids cgroup also counts the sandbox kernel's own threads, so it only
# guards the host; the job's process cap is then RLIMIT_NPROC, which gVisor counts per
# sandbox (under runc the same rlimit would count every sandbox of the uid host-wide).
# A fork bomb held at its RLIMIT_NPROC still makes the sentry (ptrace platform) grow to
# ~1,700 host threads in 30 s, which it keeps; at 512 the sentry could not make a thread
# and the whole sandbox died, so the job was retried until dead-lettered.
GVISOR_THREADS = 4096
TMP_MB = 64
SHM_MB = 16
GREETING_TIMEOUT_S = 30.0
AGENT_MOUNT = "/run/runbox-agent"  # the sandbox's view of its socket directory (the agent knows it too)
AGENT_SOCKET = "agent.sock"
STDIN_WAIT_S = 5.0  # input may arrive just before the job it is for is written to the agent
# The longest line the agent ever writes (a 1 MiB output chunk or compile log, JSON-escaped).
MAX_AGENT_LINE = 32 * 1024 * 1024


EXIT_POLL_S = 2.0  # how long a container whose stream ended may take to show as exited
# A stopping engine first kills every container (exit 137/143, still answering inspections),
# then goes away: a signalled agent is the job's doing only if the engine still answers after this.
ENGINE_SETTLE_S = 3.0
# Docker's own masked paths (engine 20.10), which a container that sets its own list loses.
DOCKER_MASKED_PATHS = (
    "/proc/asound", "/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list",
    "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware",
)
# What a reused container would show a job of the jobs before it: the agent's own accounting
# (its children's CPU time in /proc/1/stat, its peak memory in /proc/1/status) and the
# container's cumulative cgroup figures (peaks, fail and OOM counts, CPU and I/O totals).
# The engine masks each one (a file reads empty, a directory lists nothing) for runc; gVisor
# serves /proc and its cgroups itself and ignores the masks, so there :data:`GVISOR_COVERS` hides
# them instead. The agent keeps what it needs: memory.stat's current figures.
COUNTER_PATHS = (
    *(f"/proc/1/{name}" for name in ("stat", "status", "statm", "sched", "schedstat", "io", "smaps",
                                     "smaps_rollup", "task")),
    *(f"/sys/fs/cgroup/memory/memory.{name}" for name in (
        "max_usage_in_bytes", "failcnt", "memsw.max_usage_in_bytes", "memsw.failcnt", "kmem.max_usage_in_bytes",
        "kmem.failcnt", "kmem.tcp.max_usage_in_bytes", "kmem.tcp.failcnt", "oom_control", "numa_stat")),
    "/sys/fs/cgroup/pids", "/sys/fs/cgroup/cpu", "/sys/fs/cgroup/cpuacct", "/sys/fs/cgroup/cpu,cpuacct",
    "/sys/fs/cgroup/blkio", "/sys/fs/cgroup/cpuset/cpuset.memory_pressure",
    *(f"/sys/fs/cgroup/{name}" for name in (
        "memory.peak", "memory.events", "memory.events.local", "memory.swap.peak", "memory.swap.events",
        "memory.pressure", "pids.peak", "pids.events", "cpu.stat", "cpu.pressure", "io.stat", "io.pressure")),
)
MASKED_PATHS = (*DOCKER_MASKED_PATHS, *COUNTER_PATHS)
# Under gVisor: empty read-only tmpfs mounts over the cgroup counters and over the agent's whole
# /proc/1. gVisor's /proc serves PID 1's environ, fd list and stdio, maps and figures to any
# process of the same uid however non-dumpable the agent is (runsc 20221219 and 20240729 alike);
# a job can neither unmount the cover (no umount, mount or setns in the seccomp profile) nor
# reach the agent by another name (it has no threads, so no /proc/<tid>). runc refuses mounts
# into /proc and needs none: there non-dumpable and the masks close the same entries.
GVISOR_COVERS = ("/sys/fs/cgroup/pids", "/sys/fs/cgroup/cpu", "/sys/fs/cgroup/cpuacct", "/proc/1")
COVER_TMPFS = "ro,nosuid,nodev,noexec,size=4k,mode=0555"


class SandboxError(RuntimeError):
    """The container or its agent failed; the job did not get a fair run."""


class Uids:
    """Host uids for sandboxes, one per live container, so no two jobs share per-user kernel quotas.

    Without user-namespace remapping a container's uid is the host's: inotify instances, POSIX
    message queue bytes, pipe buffers and RLIMIT_NPROC are counted per uid across the host.
    Uids are drawn at random from the range, so executors sharing a host rarely collide; the
    Docker gate refuses a uid another live sandbox holds and the pool simply warms again.
    """

    def __init__(self, base: int, count: int) -> None:
        self.base = base
        self.count = count
        self.used: set[int] = set()

    def take(self) -> int:
        if len(self.used) >= self.count:
            raise SandboxError("no sandbox uid left in RUNBOX_SANDBOX_UID_BASE/_COUNT")
        while True:
            uid = self.base + random.randrange(self.count)
            if uid not in self.used:
                self.used.add(uid)
                return uid

    def give(self, uid: int) -> None:
        self.used.discard(uid)


def container_memory_mb(language: Language, limits: Limits) -> int:
    """The container's memory ceiling: the larger of the run and compile budgets, plus the agent."""
    compile_mb = language.compile.memory_mb if language.compile else 0
    return max(limits.memory_mb, compile_mb) + AGENT_MEMORY_MB


def container_options(
    language: Language,
    limits: Limits,
    *,
    runtime: str,
    executor_id: str,
    cpus: float,
    uid: int,
    engine_runtime: str | None = None,
    agent_root: str = "",
) -> dict[str, Any]:
    """Docker create options for a sandbox: every limit and hardening flag, in one place.

    ``runtime`` is runbox's name (``runc`` or ``runsc``), ``engine_runtime`` the engine's name
    for it (:meth:`Settings.engine_runtime`), ``uid`` the sandbox's own host uid (:class:`Uids`),
    ``agent_root`` where the executor offers agents their sockets (``RUNBOX_AGENT_SOCKET_DIR``;
    empty: the attach stream), the sandbox's own directory of it mounted read-only.

    - no network at all, so no route to the broker, the host or anything else;
    - a host uid of its own, non-root, every capability dropped, no-new-privileges (setuid
      binaries gain nothing), the project's seccomp profile (:mod:`app.seccomp`);
    - read-only root filesystem; the work dir, /tmp and /dev/shm are size-capped tmpfs;
    - memory equals memory+swap (no swap), a process cap, a CPU quota, open-file ulimit;
    - a private IPC namespace and no Docker log, so a flood of output cannot fill the disk;
    - the figures of earlier jobs hidden (:data:`COUNTER_PATHS`), so a reused container shows
      a job nothing of the jobs before it. ``masked_paths`` is not a Docker SDK argument:
      :func:`create_container` adds it to the engine's HostConfig.
    """
    memory = container_memory_mb(language, limits)
    tmpfs = {
        "/work": f"rw,exec,nosuid,nodev,size={language.workdir_mb}m,uid={uid},gid={uid},mode=0700",
        "/tmp": f"rw,exec,nosuid,nodev,size={TMP_MB}m,uid={uid},gid={uid},mode=0700",
    }
    if runtime == "runsc":
        tmpfs.update({path: COVER_TMPFS for path in GVISOR_COVERS})
    options: dict[str, Any] = {
        "image": language.image,
        "user": f"{uid}:{uid}",
        "stdin_open": True,
        "tty": False,
        "detach": True,
        "network_mode": "none",
        "read_only": True,
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges:true", f"seccomp={seccomp.profile(runtime)}"],
        "pids_limit": limits.processes + AGENT_PROCESSES + (GVISOR_THREADS if runtime == "runsc" else 0),
        "mem_limit": f"{memory}m",
        "memswap_limit": f"{memory}m",
        "nano_cpus": int(cpus * 1e9),
        "tmpfs": tmpfs,
        "masked_paths": list(MASKED_PATHS),
        "shm_size": f"{SHM_MB}m",
        "ulimits": [Ulimit(name="nofile", soft=1024, hard=1024), Ulimit(name="core", soft=0, hard=0)],
        "ipc_mode": "private",
        "hostname": "sandbox",
        "oom_score_adj": 500,
        "runtime": engine_runtime or runtime,
        "log_config": LogConfig(type=LogConfig.types.NONE),
        # Nothing in a sandbox deserves a graceful stop, and its agent (PID 1) ignores SIGTERM:
        # an engine shutting down would wait 10 s on every sandbox before killing it anyway.
        "stop_signal": "SIGKILL",
        "labels": {
            "runbox.role": "sandbox",
            "runbox.executor": executor_id,
            "runbox.language": language.key,
            "runbox.uid": str(uid),
        },
    }
    if agent_root:
        options["volumes"] = {agent_directory(agent_root, executor_id, uid): {"bind": AGENT_MOUNT, "mode": "ro"}}
    return options


def agent_directory(root: str, executor_id: str, uid: int) -> str:
    """The host directory holding a sandbox's agent socket: one per executor and sandbox uid.

    Named by a digest of the executor's name (any name is a safe path) and the uid, which the
    gate keeps unique among live sandboxes, so the gate can check a create's bind exactly.
    """
    tag = hashlib.sha256(executor_id.encode()).hexdigest()[:16]
    return os.path.join(root, f"{tag}-{uid}")


def create_container(client: docker.DockerClient, options: dict[str, Any]) -> Any:
    """Create a sandbox from :func:`container_options` (the SDK's arguments plus ``masked_paths``)."""
    from docker.models.containers import _create_container_args  # the SDK's own argument mapping

    options = dict(options)
    masked = options.pop("masked_paths")
    kwargs = _create_container_args({**options, "version": client.api.api_version})
    kwargs["host_config"]["MaskedPaths"] = masked
    return client.containers.get(client.api.create_container(**kwargs)["Id"])


def with_options(argv: tuple[str, ...], options: tuple[str, ...]) -> list[str]:
    """The compile command with ``options`` appended as separate words, never re-parsed by a shell.

    A ``sh -c SCRIPT`` command gets them as the script's positional parameters, appended
    as ``"$@"`` to its last command (the compiler call).
    """
    if not options:
        return list(argv)
    if len(argv) == 3 and argv[:2] == ("sh", "-c"):
        return ["sh", "-c", argv[2] + ' "$@"', "sh", *options]
    return [*argv, *options]


def agent_job(job_id: str, language: Language, limits: Limits, files: list[dict[str, str]],
              stdin: str, args: tuple[str, ...], runtime: str = "runc", *,
              cases: list[str] | None = None, budget_s: float = 0.0,
              interactive: bool = False, idle_s: float = 0.0,
              compile_options: tuple[str, ...] = (), stack_kb: int = 0,
              compile_limits: dict[str, float] | None = None) -> dict[str, Any]:
    """The message the agent receives: files to write and the steps to run under their limits.

    ``files[0]`` is the program; a class-named unit's steps get its name as ``$MAIN_FILE``.
    ``compile_options`` are appended to the compile command; ``compile_limits`` tightens the
    compile step (``timeout_s``, ``cpu_time_s``, ``memory_mb``, already checked against the
    step's own); ``stack_kb`` sets the run step's stack limit (through prlimit(1), which every
    image has for the agent itself).

    With ``cases`` (each a stdin) the run step is repeated once per case within ``budget_s``
    and each run's output is returned rather than streamed; with ``interactive`` the run
    step's stdin stays open for :meth:`Sandbox.send_stdin` until eof or ``idle_s`` of silence,
    and every step takes :meth:`Sandbox.send_signal`.
    """
    from app.languages import HARD_OUTPUT_FACTOR

    out_cap = limits.output_kb * 1024
    steps: list[dict[str, Any]] = []
    if language.compile is not None:
        tighter = compile_limits or {}
        step_limits = limits.merged({
            "timeout_s": tighter.get("timeout_s", language.compile.timeout_s),
            "cpu_time_s": tighter.get("cpu_time_s", language.compile.timeout_s * 2),
        })
        steps.append({
            "name": "compile",
            "argv": with_options(language.compile.argv, compile_options),
            "limits": step_limits.to_dict(),
            "memory_mb": int(tighter.get("memory_mb", language.compile.memory_mb)),
            "stream": False,
            "output_bytes": max(out_cap, 64 * 1024),
            "hard_output_bytes": 16 * 1024 * 1024,
        })
    run_argv = [*language.run, *args]
    if stack_kb > 0:
        stack = stack_kb * 1024
        run_argv = ["/usr/bin/prlimit", f"--stack={stack}:{stack}", "--", *run_argv]
    steps.append({
        "name": "run",
        "argv": run_argv,
        "limits": limits.to_dict(),
        "memory_mb": limits.memory_mb,
        "stream": True,
        "stdin": stdin,
        "output_bytes": out_cap,
        "hard_output_bytes": out_cap * HARD_OUTPUT_FACTOR,
    })
    if cases is not None:
        steps[-1].update(stream=False, separate_stderr=True, cases=[{"stdin": c} for c in cases], budget_s=budget_s)
    elif interactive:
        steps[-1].update(interactive=True, idle_s=idle_s)
        for step in steps[:-1]:
            # A signal sent while the program compiles is for the compiler, as in Piston;
            # the input sent meanwhile waits for the run step.
            step["signals"] = True
    elif language.warm_start and stack_kb <= 0 and (language.compile is None or limits == language.default_limits):
        # The interpreter may already be running, waiting for it. After a compile step only
        # with the default limits: it waits through that step, holding threads and memory the
        # container's limits, sized for one step at a time, leave room for only then.
        steps[-1]["warm"] = list(language.warm_start)
        if language.warm_fork:
            steps[-1]["warm_fork"] = True
    if language.compile is not None and language.compile.warm_start and not compile_limits:
        # The compiler may already be running, waiting for it (a step with tighter limits than
        # it was started with runs exactly as its cold command would).
        steps[0]["warm"] = list(language.compile.warm_start)
    for step in steps:
        # The cgroup bounds job and agent together (and a compile-sized container lets a run
        # step use the compile budget): the agent measures every step, memory held in files
        # and memfds included, and kills it at its own limit.
        step["watch_memory_kb"] = int(step["memory_mb"]) * 1024
    if runtime == "runsc":
        for step in steps:
            # The agent runs as the same user, and so does a warm interpreter's zygote.
            step["nproc"] = limits.processes + (2 if language.warm_fork else 1)
            # gVisor gives the scrub no way to list System V objects or POSIX message queues:
            # each step gets an IPC namespace of its own, which ends with the step.
            step["ipc_namespace"] = True
    # A fresh secret the agent echoes in every message of this job: a line without it was
    # written by the job itself (gVisor lets it open the agent's stdout via /proc/1/fd).
    env = dict(language.env)
    if language.class_named:
        # Only where a command needs it: a job's environment carries nothing of the service's.
        env["MAIN_FILE"] = files[0]["name"] if files else language.source_file
    return {"id": job_id, "files": files, "env": env, "steps": steps, "token": secrets.token_hex(16)}


def tampered(why: str) -> dict[str, Any]:
    """The final message of a job that attacked its agent: ``failed`` once, never retried."""
    return {"t": "done", "status": "failed", "error": f"{why}; the sandbox was discarded and the job not retried"}


class Sandbox:
    """A started container whose agent is waiting for a job."""

    def __init__(self, client: docker.DockerClient, language: Language, limits: Limits, options: dict[str, Any]):
        self.client = client
        self.language = language
        self.limits = limits
        self.options = options
        self.container: Any = None
        self.uid = int(options["labels"]["runbox.uid"])
        self.uses = 0
        self.started_wall = time.time()  # before the container exists: all its engine events are later
        self.dirty = False  # limits changed or the scrub failed: never reuse
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._sock: Any = None
        self._partial: list[bytes] = []
        self._partial_len = 0
        self._token: str | None = None  # the running job's; None until the first job
        self._next_auth: str | None = None  # the secret the next job message must carry (the agent checks)
        self._tokens = False  # the agent echoes job tokens (said in its first greeting)
        self.tampered = False
        self._lines: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self._pump: asyncio.Task[None] | None = None
        self._job_sent = asyncio.Event()  # set while a job is with the agent: input may follow it
        self._job_id: str | None = None  # ...that job
        self.memory_high = False  # the agent said the running job holds over half its memory limit

    @property
    def short_id(self) -> str:
        return str(self.container.id[:12]) if self.container is not None else "-"

    @property
    def alive(self) -> bool:
        return self._pump is not None and not self._pump.done()

    @property
    def agent_dir(self) -> str | None:
        """The host directory of this sandbox's agent socket, if it is offered one."""
        return next(iter(self.options.get("volumes") or {}), None)

    async def start(self) -> None:
        """Create, start, connect (the agent's socket, else an attach), and wait for the first ``ready``."""
        directory = self.agent_dir
        listener: socket.socket | None = None
        try:
            if directory is not None:
                listener = await asyncio.to_thread(listen_for_agent, directory)
            self.container = await asyncio.to_thread(create_container, self.client, self.options)
            if listener is None:
                self._sock = await asyncio.to_thread(
                    self.container.attach_socket, params={"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1}
                )
                raw = getattr(self._sock, "_sock", self._sock)
                raw.setblocking(False)
                self._reader, self._writer = await asyncio.open_connection(sock=raw, limit=1 << 24)
                self._pump = asyncio.create_task(self._demux(), name=f"sandbox-{self.short_id}")
                await asyncio.to_thread(self.container.start)
            else:
                await asyncio.to_thread(self.container.start)
                channel = await self._accept_agent(listener)
                close_listener(listener)
                listener = None
                self._reader, self._writer = await asyncio.open_unix_connection(sock=channel, limit=1 << 24)
                self._pump = asyncio.create_task(self._relay(), name=f"sandbox-{self.short_id}")
            greeting = await asyncio.wait_for(self._next(), GREETING_TIMEOUT_S)
        except (TimeoutError, docker.errors.DockerException, OSError, SandboxError) as exc:
            await self.destroy()
            raise SandboxError(f"cannot start a {self.language.key} sandbox: {exc!r}") from exc
        finally:
            if listener is not None:
                close_listener(listener)
        if greeting is None or greeting.get("t") != "ready" or not greeting.get("clean"):
            await self.destroy()
            raise SandboxError(f"sandbox agent did not start cleanly: {greeting!r}")
        self._tokens = bool(greeting.get("tokens"))

    async def _accept_agent(self, listener: socket.socket) -> socket.socket:
        """The agent's connection; a sandbox that ends first, or never connects, fails at once."""
        loop = asyncio.get_running_loop()
        end = time.monotonic() + GREETING_TIMEOUT_S
        while True:
            try:
                async with asyncio.timeout(1.0):
                    channel, _ = await loop.sock_accept(listener)
                    return channel
            except TimeoutError:
                await asyncio.to_thread(self.container.reload)
                if self.container.status != "running" or time.monotonic() > end:
                    raise SandboxError(
                        f"the sandbox's agent did not connect to its socket in {self.agent_dir}: the directory"
                        " must be the same path on the engine's host (RUNBOX_AGENT_SOCKET_DIR), and gVisor"
                        " must run with --host-uds=open"
                    ) from None

    def _tamper(self, why: str) -> None:
        """A line the agent did not write: the job reached the control channel; drop the container."""
        log.warning("control channel tampered with", extra={"container": self.short_id, "detail": why})
        self.tampered = True
        self.dirty = True

    async def _relay(self) -> None:
        """The agent's JSON lines from its socket, which nothing but the agent can write to."""
        assert self._reader is not None
        try:
            while not self.tampered and (data := await self._reader.read(1 << 16)):
                self._feed(data)
        except (ConnectionError, OSError):
            pass
        finally:
            self._lines.put_nowait(None)

    async def _demux(self) -> None:
        """Split Docker's multiplexed attach stream; stdout carries the agent's JSON lines."""
        assert self._reader is not None
        try:
            while not self.tampered:
                header = await self._reader.readexactly(8)
                size = int.from_bytes(header[4:8], "big")
                payload = await self._reader.readexactly(size)
                if header[0] == 1:
                    self._feed(payload)
                elif header[0] == 2:
                    # The agent's own stderr is /dev/null once it has started; bytes here were
                    # written by the job (gVisor lets it open /proc/1/fd/2), or the agent died.
                    log.warning(
                        "agent stderr",
                        extra={"container": self.short_id, "text": payload.decode(errors="replace")[:2000]},
                    )
                    if self._token is not None:
                        self._tamper("bytes on the agent's stderr")
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            pass
        finally:
            self._lines.put_nowait(None)

    def _feed(self, payload: bytes) -> None:
        """Queue the complete lines in ``payload``; keep the partial one.

        Every line must parse and, once a job was sent, carry that job's token; anything else
        ends the stream (the job fails, the container is removed, never reused).
        """
        *lines, rest = payload.split(b"\n")
        if lines and self._partial:
            lines[0] = b"".join(self._partial) + lines[0]
            self._partial, self._partial_len = [], 0
        if rest:
            self._partial.append(rest)
            self._partial_len += len(rest)
            if self._partial_len > MAX_AGENT_LINE:
                self._tamper("an endless line")
        for line in lines:
            if not line or self.tampered:
                continue
            try:
                message = jsoncodec.loads(line)
            except ValueError:
                self._tamper("a garbled line")
                continue
            if not isinstance(message, dict) or (self._token is not None and message.get("k") != self._token):
                self._tamper("a line without the job's token")
                continue
            self._lines.put_nowait(message)

    async def _next(self) -> dict[str, Any] | None:
        return await self._lines.get()

    async def run(self, payload: dict[str, Any], deadline_s: float) -> AsyncIterator[dict[str, Any]]:
        """Send one job; yield the agent's messages up to and including ``done``."""
        assert self._writer is not None
        self.uses += 1
        if self._tokens:
            self._token = payload.get("token")
        payload = {**payload, "auth": self._next_auth, "next": secrets.token_hex(16)}
        self._next_auth = payload["next"]
        self._writer.write(jsoncodec.dumps(payload) + b"\n")
        self._job_id = payload.get("id")
        self.memory_high = False
        self._job_sent.set()
        try:
            async for message in self._messages(deadline_s):
                yield message
        finally:
            self._job_sent.clear()
            self._job_id = None

    async def _messages(self, deadline_s: float) -> AsyncIterator[dict[str, Any]]:
        assert self._writer is not None
        await self._writer.drain()
        end = time.monotonic() + deadline_s
        while True:
            remaining = end - time.monotonic()
            try:
                # asyncio.timeout, not wait_for: no task per message of every job.
                async with asyncio.timeout(max(remaining, 0.001)):
                    message = await self._next()
            except TimeoutError:
                # The agent keeps its own wall clock and answers long before this deadline;
                # silence past it means the job stopped or starved its agent (gVisor delivers
                # SIGSTOP to init). Retrying would hand the same job another agent to stop.
                self.dirty = True
                yield tampered("the job stopped its sandbox's agent: it did not answer within the job's deadline")
                return
            if message is None:
                self.dirty = True
                if self.tampered:
                    yield tampered("the job wrote into its sandbox agent's control channel")
                    return
                if await self._killed_by_signal():
                    yield tampered("the job killed its sandbox's agent")
                    return
                raise SandboxError("the sandbox container exited during the job")
            if message.get("t") == "mem":
                self.memory_high = True
                continue
            yield message
            if message.get("t") == "done":
                return

    async def send_stdin(self, job_id: str, data: str, eof: bool) -> None:
        """Append to job ``job_id``'s stdin (the agent queues what the program has not read yet)."""
        await self._control(job_id, {"t": "stdin", "d": data, "eof": eof})

    async def send_signal(self, job_id: str, signum: int) -> None:
        """Signal job ``job_id``'s running step: the agent delivers it to that step's process group."""
        await self._control(job_id, {"t": "signal", "n": signum})

    async def _control(self, job_id: str, message: dict[str, Any]) -> None:
        """Write one live-input message for the job to the agent's control channel.

        Input that arrives a moment before the job itself is written waits for it; input for a
        job that has ended is refused, so it can never reach the next job in this container.
        """
        try:
            await asyncio.wait_for(self._job_sent.wait(), STDIN_WAIT_S)
        except TimeoutError as exc:
            raise SandboxError("the job is not running in this sandbox") from exc
        if self._job_id != job_id:
            raise SandboxError("the job is not running in this sandbox")
        if self._writer is None or self._writer.is_closing():
            raise SandboxError("the sandbox is gone")
        self._writer.write(jsoncodec.dumps(message) + b"\n")
        try:
            await self._writer.drain()
        except (ConnectionError, OSError) as exc:
            raise SandboxError(f"cannot write to the sandbox: {exc!r}") from exc

    async def _killed_by_signal(self) -> bool:
        """Whether the container ended by a signal (not the memory cgroup) while the engine is up.

        Only the job (gVisor delivers ``kill -9 1``) or an operator signals a sandbox's init;
        an engine that is stopping signals every container too, so the engine must still answer
        a moment later (or the inspection fails), else the job is left to be retried.
        """
        end = time.monotonic() + EXIT_POLL_S
        while True:
            try:
                await asyncio.to_thread(self.container.reload)
            except ENGINE_ERRORS:
                return False
            state = self.container.attrs.get("State", {})
            if not state.get("Running"):
                if state.get("OOMKilled") or int(state.get("ExitCode", 0)) <= 128:
                    return False
                await asyncio.sleep(ENGINE_SETTLE_S)
                if await asyncio.to_thread(engine_problem, self.client, ()) is not None:
                    return False
                return not await self.oom_killed()
            if time.monotonic() > end:
                return False
            await asyncio.sleep(0.05)

    async def wait_ready(self, timeout: float = 10.0) -> bool:
        """After a job: wait for the agent's scrub; True when the container is clean for reuse."""
        try:
            async with asyncio.timeout(timeout):
                message = await self._next()
        except TimeoutError:
            return False
        if message is None or message.get("t") != "ready":
            return False
        if not message.get("clean"):
            log.warning("scrub left traces", extra={"container": self.short_id, "detail": message.get("detail")})
            return False
        return True

    async def oom_killed(self) -> bool:
        """Whether the container's memory cgroup killed it, as far as the engine or the agent tells.

        The engine keeps ``OOMKilled`` in the state only when the OOM notice reached it before
        the exit; when it came after (seen under gVisor, whose whole sandbox the kernel kills),
        the state says a plain SIGKILL and only the engine's ``oom`` event tells.
        """
        if self.memory_high:
            # The job held over half its limit at the agent's last look and the container then
            # ended: under gVisor the host's OOM killer ends the whole sandbox at the cgroup's
            # limit, and the engine does not always report it (OOMKilled, its oom event).
            return True
        if self.container is None:
            return False
        try:
            await asyncio.to_thread(self.container.reload)
            if self.container.attrs.get("State", {}).get("OOMKilled"):
                return True
            return await asyncio.to_thread(self._oom_event)
        except ENGINE_ERRORS:
            return False

    def _oom_event(self) -> bool:
        """Whether the engine's recent events hold an ``oom`` for this container (since it started)."""
        since = self.started_wall - 1.0
        events = self.client.events(
            since=since, until=time.time(), filters={"container": self.container.id, "event": "oom"}, decode=True
        )
        try:
            return any(True for _ in events)
        finally:
            events.close()

    async def destroy(self) -> None:
        if self._writer is not None:
            with contextlib.suppress(Exception):
                self._writer.close()
        if self.container is not None:
            with contextlib.suppress(*ENGINE_ERRORS):
                await asyncio.to_thread(self.container.remove, force=True)
        if self.agent_dir is not None:
            shutil.rmtree(self.agent_dir, ignore_errors=True)
        if self._pump is not None:
            self._pump.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._pump


def usable_agent_root(root: str) -> str:
    """``root`` when this process can make agent socket directories there, else "" (attach streams).

    An executor that cannot (the host's directory not mounted into its container, another
    user's directory) still runs its sandboxes, through the engine, and says so once.
    """
    if not root:
        return ""
    try:
        os.makedirs(root, mode=0o700, exist_ok=True)
        os.rmdir(tempfile.mkdtemp(dir=root))
    except OSError as exc:
        log.warning(
            "no agent sockets: sandboxes are driven through the engine's attach streams",
            extra={"dir": root, "error": repr(exc)},
        )
        return ""
    return root


def listen_for_agent(directory: str) -> socket.socket:
    """A listening socket in ``directory``, made afresh, for one sandbox's agent to connect to.

    The directory is what the sandbox sees (read-only): readable and the socket connectable
    by its uid; the parent stays the executor's alone, so no other host user reaches it.
    """
    os.makedirs(os.path.dirname(directory), mode=0o700, exist_ok=True)
    shutil.rmtree(directory, ignore_errors=True)
    os.mkdir(directory)
    os.chmod(directory, 0o755)
    path = os.path.join(directory, AGENT_SOCKET)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        listener.bind(path)
        os.chmod(path, 0o666)
        listener.listen(1)
        listener.setblocking(False)
    except OSError:
        listener.close()
        raise
    return listener


def close_listener(listener: socket.socket) -> None:
    """Stop listening and remove the socket: once the agent is connected no one else may connect."""
    path = listener.getsockname()
    listener.close()
    if isinstance(path, str) and path:
        with contextlib.suppress(OSError):
            os.unlink(path)
