"""One sandbox container and its agent, driven through the Docker engine.

Every limit and hardening flag is set in :func:`container_options`, one pure function the
unit tests check. The container's PID 1 is the agent (``sandbox_images/agent``); we talk to
it over the container's attached stdin/stdout, so a job never pays for ``docker exec`` and
the executor never touches a job's files from the host side.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import time
from collections.abc import AsyncIterator
from typing import Any

import docker
import docker.errors
from docker.types import LogConfig, Ulimit

from app.executor.engine import ENGINE_ERRORS
from app.languages import Language, Limits

log = logging.getLogger(__name__)

SANDBOX_UID = 10001
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
STDIN_WAIT_S = 5.0  # input may arrive just before the job it is for is written to the agent
# The longest line the agent ever writes (a 1 MiB output chunk or compile log, JSON-escaped).
MAX_AGENT_LINE = 32 * 1024 * 1024


class SandboxError(RuntimeError):
    """The container or its agent failed; the job did not get a fair run."""


def container_memory_mb(language: Language, limits: Limits) -> int:
    """The container's memory ceiling: the larger of the run and compile budgets, plus the agent."""
    compile_mb = language.compile.memory_mb if language.compile else 0
    return max(limits.memory_mb, compile_mb) + AGENT_MEMORY_MB


def container_options(
    language: Language, limits: Limits, *, runtime: str, executor_id: str, cpus: float
) -> dict[str, Any]:
    """Docker create options for a sandbox: every limit and hardening flag, in one place.

    - no network at all, so no route to the broker, the host or anything else;
    - non-root user, every capability dropped, no-new-privileges (setuid binaries gain nothing);
    - read-only root filesystem; the work dir, /tmp and /dev/shm are size-capped tmpfs;
    - memory equals memory+swap (no swap), a process cap, a CPU quota, open-file ulimit;
    - a private IPC namespace and no Docker log, so a flood of output cannot fill the disk.
    """
    memory = container_memory_mb(language, limits)
    uid = SANDBOX_UID
    return {
        "image": language.image,
        "user": f"{uid}:{uid}",
        "stdin_open": True,
        "tty": False,
        "detach": True,
        "network_mode": "none",
        "read_only": True,
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges:true"],
        "pids_limit": limits.processes + AGENT_PROCESSES + (GVISOR_THREADS if runtime == "runsc" else 0),
        "mem_limit": f"{memory}m",
        "memswap_limit": f"{memory}m",
        "nano_cpus": int(cpus * 1e9),
        "tmpfs": {
            "/work": f"rw,exec,nosuid,nodev,size={language.workdir_mb}m,uid={uid},gid={uid},mode=0700",
            "/tmp": f"rw,exec,nosuid,nodev,size={TMP_MB}m,uid={uid},gid={uid},mode=0700",
        },
        "shm_size": f"{SHM_MB}m",
        "ulimits": [Ulimit(name="nofile", soft=1024, hard=1024), Ulimit(name="core", soft=0, hard=0)],
        "ipc_mode": "private",
        "hostname": "sandbox",
        "oom_score_adj": 500,
        "runtime": runtime,
        "log_config": LogConfig(type=LogConfig.types.NONE),
        "labels": {
            "runbox.role": "sandbox",
            "runbox.executor": executor_id,
            "runbox.language": language.key,
        },
    }


def agent_job(job_id: str, language: Language, limits: Limits, files: list[dict[str, str]],
              stdin: str, args: tuple[str, ...], runtime: str = "runc", *,
              cases: list[str] | None = None, budget_s: float = 0.0,
              interactive: bool = False, idle_s: float = 0.0) -> dict[str, Any]:
    """The message the agent receives: files to write and the steps to run under their limits.

    With ``cases`` (each a stdin) the run step is repeated once per case within ``budget_s``
    and each run's output is returned rather than streamed; with ``interactive`` the run
    step's stdin stays open for :meth:`Sandbox.send_stdin` until eof or ``idle_s`` of silence.
    """
    from app.languages import HARD_OUTPUT_FACTOR

    out_cap = limits.output_kb * 1024
    steps: list[dict[str, Any]] = []
    if language.compile is not None:
        compile_limits = limits.merged(
            {"timeout_s": language.compile.timeout_s, "cpu_time_s": language.compile.timeout_s * 2}
        )
        steps.append({
            "name": "compile",
            "argv": list(language.compile.argv),
            "limits": compile_limits.to_dict(),
            "memory_mb": language.compile.memory_mb,
            "stream": False,
            "output_bytes": max(out_cap, 64 * 1024),
            "hard_output_bytes": 16 * 1024 * 1024,
        })
    steps.append({
        "name": "run",
        "argv": [*language.run, *args],
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
    if runtime == "runsc":
        for step in steps:
            step["nproc"] = limits.processes + 1  # the agent runs as the same user
            # gVisor gives the scrub no way to list System V objects or POSIX message queues:
            # each step gets an IPC namespace of its own, which ends with the step.
            step["ipc_namespace"] = True
    elif container_memory_mb(language, limits) > limits.memory_mb + AGENT_MEMORY_MB:
        # The container is sized for a bigger compile step, so the cgroup alone would let the
        # run step use that much: the agent measures the run step and kills it at its limit.
        # (Not under gVisor, whose resident-set figures count untouched mappings.)
        steps[-1]["watch_memory_kb"] = limits.memory_mb * 1024
    # A fresh secret the agent echoes in every message of this job: a line without it was
    # written by the job itself (gVisor lets it open the agent's stdout via /proc/1/fd).
    return {"id": job_id, "files": files, "env": language.env, "steps": steps, "token": secrets.token_hex(16)}


class Sandbox:
    """A started container whose agent is waiting for a job."""

    def __init__(self, client: docker.DockerClient, language: Language, limits: Limits, options: dict[str, Any]):
        self.client = client
        self.language = language
        self.limits = limits
        self.options = options
        self.container: Any = None
        self.uses = 0
        self.dirty = False  # limits changed or the scrub failed: never reuse
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._sock: Any = None
        self._partial: list[bytes] = []
        self._partial_len = 0
        self._token: str | None = None  # the running job's; None until the first job
        self._tokens = False  # the agent echoes job tokens (said in its first greeting)
        self.tampered = False
        self._lines: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self._pump: asyncio.Task[None] | None = None
        self._job_sent = asyncio.Event()  # set while a job is with the agent: input may follow it
        self._job_id: str | None = None  # ...that job

    @property
    def short_id(self) -> str:
        return str(self.container.id[:12]) if self.container is not None else "-"

    @property
    def alive(self) -> bool:
        return self._pump is not None and not self._pump.done()

    async def start(self) -> None:
        """Create, attach, start, and wait for the agent's first ``ready``."""
        try:
            self.container = await asyncio.to_thread(self.client.containers.create, **self.options)
            self._sock = await asyncio.to_thread(
                self.container.attach_socket, params={"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1}
            )
            raw = getattr(self._sock, "_sock", self._sock)
            raw.setblocking(False)
            self._reader, self._writer = await asyncio.open_connection(sock=raw, limit=1 << 24)
            self._pump = asyncio.create_task(self._demux(), name=f"sandbox-{self.short_id}")
            await asyncio.to_thread(self.container.start)
            greeting = await asyncio.wait_for(self._next(), GREETING_TIMEOUT_S)
        except (TimeoutError, docker.errors.DockerException, OSError) as exc:
            await self.destroy()
            raise SandboxError(f"cannot start a {self.language.key} sandbox: {exc!r}") from exc
        if greeting is None or greeting.get("t") != "ready" or not greeting.get("clean"):
            await self.destroy()
            raise SandboxError(f"sandbox agent did not start cleanly: {greeting!r}")
        self._tokens = bool(greeting.get("tokens"))

    def _tamper(self, why: str) -> None:
        """A line the agent did not write: the job reached the control channel; drop the container."""
        log.warning("control channel tampered with", extra={"container": self.short_id, "detail": why})
        self.tampered = True
        self.dirty = True

    async def _demux(self) -> None:
        """Split Docker's multiplexed attach stream; stdout carries the agent's JSON lines.

        Every line must parse and, once a job was sent, carry that job's token; anything else
        ends the stream (the job fails, the container is removed, never reused).
        """
        assert self._reader is not None
        try:
            while not self.tampered:
                header = await self._reader.readexactly(8)
                size = int.from_bytes(header[4:8], "big")
                payload = await self._reader.readexactly(size)
                if header[0] == 1:
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
                            message = json.loads(line)
                        except ValueError:
                            self._tamper("a garbled line")
                            continue
                        if not isinstance(message, dict) or (
                            self._token is not None and message.get("k") != self._token
                        ):
                            self._tamper("a line without the job's token")
                            continue
                        self._lines.put_nowait(message)
                elif header[0] == 2:
                    log.warning(
                        "agent stderr",
                        extra={"container": self.short_id, "text": payload.decode(errors="replace")[:2000]},
                    )
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            pass
        finally:
            self._lines.put_nowait(None)

    async def _next(self) -> dict[str, Any] | None:
        return await self._lines.get()

    async def run(self, payload: dict[str, Any], deadline_s: float) -> AsyncIterator[dict[str, Any]]:
        """Send one job; yield the agent's messages up to and including ``done``."""
        assert self._writer is not None
        self.uses += 1
        if self._tokens:
            self._token = payload.get("token")
        self._writer.write(json.dumps(payload, separators=(",", ":")).encode() + b"\n")
        self._job_id = payload.get("id")
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
                message = await asyncio.wait_for(self._next(), max(remaining, 0.001))
            except TimeoutError as exc:
                self.dirty = True
                raise SandboxError("the sandbox agent stopped answering") from exc
            if message is None:
                self.dirty = True
                if self.tampered:
                    raise SandboxError("the job wrote into the sandbox agent's control channel")
                raise SandboxError("the sandbox container exited during the job")
            yield message
            if message.get("t") == "done":
                return

    async def send_stdin(self, job_id: str, data: str, eof: bool) -> None:
        """Append to job ``job_id``'s stdin (the agent queues what the program has not read yet).

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
        line = json.dumps({"t": "stdin", "d": data, "eof": eof}, separators=(",", ":"))
        self._writer.write(line.encode() + b"\n")
        try:
            await self._writer.drain()
        except (ConnectionError, OSError) as exc:
            raise SandboxError(f"cannot write to the sandbox: {exc!r}") from exc

    async def wait_ready(self, timeout: float = 10.0) -> bool:
        """After a job: wait for the agent's scrub; True when the container is clean for reuse."""
        try:
            message = await asyncio.wait_for(self._next(), timeout)
        except TimeoutError:
            return False
        if message is None or message.get("t") != "ready":
            return False
        if not message.get("clean"):
            log.warning("scrub left traces", extra={"container": self.short_id, "detail": message.get("detail")})
            return False
        return True

    async def oom_killed(self) -> bool:
        """Whether the engine saw the container's memory cgroup kill it."""
        if self.container is None:
            return False
        try:
            await asyncio.to_thread(self.container.reload)
        except ENGINE_ERRORS:
            return False
        return bool(self.container.attrs.get("State", {}).get("OOMKilled"))

    async def destroy(self) -> None:
        if self._writer is not None:
            with contextlib.suppress(Exception):
                self._writer.close()
        if self.container is not None:
            with contextlib.suppress(*ENGINE_ERRORS):
                await asyncio.to_thread(self.container.remove, force=True)
        if self._pump is not None:
            self._pump.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._pump


def remove_leftovers(client: docker.DockerClient, executor_id: str) -> int:
    """Remove sandbox containers left by an earlier executor of the same name (crashed or killed)."""
    removed = 0
    for container in client.containers.list(
        all=True, filters={"label": ["runbox.role=sandbox", f"runbox.executor={executor_id}"]}
    ):
        with contextlib.suppress(docker.errors.DockerException):
            container.remove(force=True)
            removed += 1
    return removed
