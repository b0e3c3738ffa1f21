"""The executor's view of its Docker engine: is it reachable, does it have the runtimes we need.

An executor whose engine is down, or lacks the configured runtime (``runsc`` when gVisor is
asked for), must not look ready: :class:`EngineWatch` checks every ``engine_check_s`` and
keeps a one-line reason for readiness. When the engine comes back it tells its listeners
(the pools), which then warm again at once instead of waiting out their backoff.

Also here: removing sandboxes nobody owns any more (:func:`remove_orphans`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import socket
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import docker
import docker.errors
import requests.exceptions

log = logging.getLogger(__name__)

# Everything the Docker SDK raises when the engine fails: its own errors, and requests'
# (whose ConnectionError is not the built-in one) and the OSErrors under them.
ENGINE_ERRORS: tuple[type[BaseException], ...] = (
    docker.errors.DockerException,
    requests.exceptions.RequestException,
    OSError,
)
OWNER_LABEL = "runbox.owner"


def _process_space() -> str | None:
    """Where this process's pid means something: its host name and its pid namespace.

    A container with host networking has the host's name but pids of its own; without the
    namespace its executor would take every host process's pid for a dead one and remove the
    sandboxes of every other executor on the host. None without procfs: the namespace cannot
    be told, so this process's sandboxes carry no owner and it judges no other owner's.
    """
    try:
        namespace = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return None
    return f"{socket.gethostname()}/{namespace}"


def owner_label() -> str | None:
    """This process as a sandbox owner: host, pid namespace and pid, so a successor can tell it is gone."""
    space = _process_space()
    return None if space is None else f"{space}/{os.getpid()}"


def _owner_gone(owner: str, space: str | None) -> bool:
    owner_space, _, pid = owner.rpartition("/")
    if space is None or owner_space != space or not pid.isdigit():
        # another host's or pid namespace's (or an unlabelled) sandbox: not ours to judge
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, under another user
        return False
    return False


def remove_orphans(client: docker.DockerClient, executor_id: str, agent_root: str = "") -> int:
    """Remove sandboxes left by an earlier executor of this name, or by a dead process beside this one.

    Executor names are unique per process by default, so a killed executor's successor has
    another name; the owner label (host, pid namespace and pid) still lets it clean up after it.
    Their agent socket directories (under ``agent_root``) go with them.
    """
    space = _process_space()
    removed = 0
    # sparse: no inspect per container, which would race with other executors' removals.
    for container in client.containers.list(all=True, sparse=True, filters={"label": ["runbox.role=sandbox"]}):
        labels = container.attrs.get("Labels") or {}
        mine = labels.get("runbox.executor") == executor_id
        if mine or _owner_gone(labels.get(OWNER_LABEL, ""), space):
            with contextlib.suppress(*ENGINE_ERRORS):
                container.remove(force=True)
                removed += 1
                for mount in container.attrs.get("Mounts") or []:  # only once the sandbox is gone
                    source = str(mount.get("Source") or "")
                    if agent_root and os.path.dirname(source) == agent_root.rstrip("/"):
                        shutil.rmtree(source, ignore_errors=True)
    return removed


def engine_problem(client: docker.DockerClient, runtimes: Iterable[str]) -> str | None:
    """None when the engine answers and has every runtime; else why not, in one sentence."""
    try:
        client.ping()
        info: dict[str, Any] = client.info()
    except ENGINE_ERRORS as exc:
        return f"the Docker engine is unreachable: {type(exc).__name__}: {exc}"[:300]
    have = set((info.get("Runtimes") or {}).keys())
    missing = sorted(set(runtimes) - have)
    if missing:
        return (
            f"the Docker engine has no runtime {', '.join(missing)} (configured by RUNBOX_RUNTIME"
            f" / RUNBOX_RUNTIME_OVERRIDES); it has {', '.join(sorted(have)) or 'none'}"
        )
    return None


class EngineWatch:
    """Checks the engine periodically on a thread of its own, so busy pools cannot delay it."""

    def __init__(self, client: docker.DockerClient, runtimes: Iterable[str], interval_s: float) -> None:
        self.client = client
        self.runtimes = tuple(sorted(set(runtimes)))
        self.interval_s = interval_s
        self.problem: str | None = "the Docker engine was not checked yet"
        self._listeners: list[Callable[[], None]] = []
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="engine-watch")
        self._task: asyncio.Task[None] | None = None

    def on_recovery(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` each time the engine becomes usable again."""
        self._listeners.append(listener)

    async def check(self) -> str | None:
        """Check now; update :attr:`problem` and tell listeners about a recovery."""
        loop = asyncio.get_running_loop()
        try:
            problem = await asyncio.wait_for(
                loop.run_in_executor(self._thread, engine_problem, self.client, self.runtimes),
                timeout=max(5.0, self.interval_s * 2),
            )
        except TimeoutError:
            problem = "the Docker engine did not answer within the check's time limit"
        was, self.problem = self.problem, problem
        if problem != was:
            if problem is None:
                log.info("Docker engine usable", extra={"runtimes": list(self.runtimes)})
                for listener in self._listeners:
                    listener()
            else:
                log.error("Docker engine not usable", extra={"reason": problem})
        return problem

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="engine-watch")

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(Exception):
                await self.check()
            await asyncio.sleep(self.interval_s)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._thread.shutdown(wait=False, cancel_futures=True)
