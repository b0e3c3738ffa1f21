"""CPU time per component of a running deployment, read from ``/proc`` while a benchmark runs.

Components are found by what they are, not by name alone:

- ``gateway`` / ``executor`` / ``gate``: the service processes the benchmark started (by pid);
  the gate carries every job's bytes between executor and engine (none with ``--direct``);
- ``rabbitmq``: the ``beam.smp`` that listens on the AMQP port;
- ``dockerd``, ``containerd``: the engine daemons (by executable);
- ``shims+runtime``: the ``containerd-shim-runc-v2`` / ``containerd-shim-runsc-v1`` of *this*
  executor's containers (matched by container id), with the ``runc``/``runsc`` runs they
  waited for (a shim's children's time) and, under gVisor, the sandbox's own ``runsc`` processes;
- ``agent``: PID 1 of each of this executor's containers, its own time only; the time of the
  job processes it waited for is reported apart as ``job`` (the program itself, not overhead);
- ``client``: the benchmark process (the load generator), reported, never counted as overhead.

The engine daemons and RabbitMQ are shared with whatever else runs on the machine, so the
sampler also measures their rate during an idle window before the run and reports the
difference ("net"); on a busy machine that difference is noisy, and the raw figure is printed
beside it.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import threading
import time
import urllib.parse
from dataclasses import dataclass, field

TICKS = os.sysconf("SC_CLK_TCK")
SHARED = ("rabbitmq", "dockerd", "containerd")
OVERHEAD = ("gateway", "executor", "gate", "rabbitmq", "dockerd", "containerd", "shims+runtime", "agent")


@dataclass
class Times:
    """CPU seconds of one process: its own and its reaped children's."""

    own: float
    children: float


def read_times(pid: int) -> tuple[int, Times] | None:
    """(start time in ticks, CPU times) of a process, or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read().decode(errors="replace")
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2:].split()
    utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
    return int(fields[19]), Times((utime + stime) / TICKS, (cutime + cstime) / TICKS)


def cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().decode(errors="replace").split("\0")
    except OSError:
        return []


def descendants(root: int) -> set[int]:
    """``root`` and every process below it (a service and any helper it spawned)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", "rb") as f:
                    raw = f.read().decode(errors="replace")
            except OSError:
                continue
            ppid = int(raw[raw.rindex(")") + 2:].split()[1])
            children.setdefault(ppid, []).append(int(entry))
    found, todo = set(), [root]
    while todo:
        pid = todo.pop()
        found.add(pid)
        todo.extend(children.get(pid, []))
    return found


def listening_pid(port: int) -> int | None:
    """The process holding the listening TCP socket on ``port`` (RabbitMQ's AMQP port)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    parts = line.split()
                    if parts[3] == "0A" and int(parts[1].rsplit(":", 1)[1], 16) == port:
                        inodes.add(parts[9])
        except OSError:
            continue
    wanted = {f"socket:[{inode}]" for inode in inodes}
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or "beam" not in "".join(cmdline(int(entry))[:1]):
            continue
        try:
            for fd in os.listdir(f"/proc/{entry}/fd"):
                if os.readlink(f"/proc/{entry}/fd/{fd}") in wanted:
                    return int(entry)
        except OSError:
            continue
    return None


def our_containers(executor: str) -> set[str]:
    """Full ids of every container (running or not) this executor labelled as its own."""
    query = urllib.parse.urlencode({"all": "1", "filters": json.dumps({"label": [f"runbox.executor={executor}"]})})
    sock = socket.socket(socket.AF_UNIX)
    sock.settimeout(5)
    try:
        sock.connect("/var/run/docker.sock")
        conn = http.client.HTTPConnection("docker")
        conn.sock = sock
        conn.request("GET", f"/containers/json?{query}")
        return {c["Id"] for c in json.loads(conn.getresponse().read())}
    except OSError:
        return set()
    finally:
        sock.close()


@dataclass
class Sampler:
    """Samples every relevant process's CPU times on a background thread until stopped."""

    services: dict[str, int]  # component name -> root pid (gateway, executor, gate)
    executor: str  # RUNBOX_EXECUTOR_NAME: whose containers count
    amqp_port: int = 5672
    interval_s: float = 0.25
    first: dict[tuple[int, int], Times] = field(default_factory=dict)
    last: dict[tuple[int, int], tuple[str, Times]] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    began: float = 0.0
    ended: float = 0.0

    @staticmethod
    def _classify(pid: int, argv: list[str], ids: set[str], service_pids: dict[int, str],
                  rabbit: int | None) -> str | None:
        exe = os.path.basename(argv[0]) if argv and argv[0] else ""
        if pid in service_pids:
            return service_pids[pid]
        if pid == rabbit:
            return "rabbitmq"
        if exe == "dockerd":
            return "dockerd"
        if exe == "containerd":
            return "containerd"
        if exe.startswith("containerd-shim"):
            cid = argv[argv.index("-id") + 1] if "-id" in argv else ""
            return "shims+runtime" if cid in ids else None
        return None

    def sample(self, ids: set[str], rabbit: int | None) -> None:
        service_pids = {p: name for name, root in self.services.items() for p in descendants(root)}
        parents: dict[int, int] = {}
        kinds: dict[int, str] = {}
        argvs: dict[int, list[str]] = {}
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            pid = int(entry)
            try:
                with open(f"/proc/{pid}/stat", "rb") as f:
                    raw = f.read().decode(errors="replace")
            except OSError:
                continue
            parents[pid] = int(raw[raw.rindex(")") + 2:].split()[1])
            argv = cmdline(pid)
            argvs[pid] = argv
            kind = self._classify(pid, argv, ids, service_pids, rabbit)
            if kind is not None:
                kinds[pid] = kind
        shims = {pid for pid, kind in kinds.items() if kind == "shims+runtime"}
        for pid, ppid in parents.items():
            if ppid in shims and pid not in kinds:
                argv = argvs.get(pid, [])
                exe = os.path.basename(argv[0]) if argv and argv[0] else ""
                # Under runc the shim's child is the container's PID 1, the agent; under gVisor
                # it is runsc (the sandbox kernel), which is the runtime's cost.
                kinds[pid] = "shims+runtime" if exe.startswith("runsc") else "agent"
        for pid, kind in kinds.items():
            stat = read_times(pid)
            if stat is None:
                continue
            key = (pid, stat[0])
            self.first.setdefault(key, Times(0.0, 0.0) if self.began and key not in self.last else stat[1])
            self.last[key] = (kind, stat[1])

    def _run(self) -> None:
        rabbit = listening_pid(self.amqp_port)
        ids: set[str] = set()
        refreshed = 0.0
        while not self._stop.is_set():
            if time.monotonic() - refreshed > 1.0:
                ids = our_containers(self.executor) or ids
                refreshed = time.monotonic()
            self.sample(ids, rabbit)
            self._stop.wait(self.interval_s)
        self.sample(our_containers(self.executor) | ids, rabbit)

    def start(self) -> Sampler:
        self.began = 0.0
        # The first pass records every process's starting point; anything that appears later
        # started during the run and counts from zero.
        self.sample(our_containers(self.executor), listening_pid(self.amqp_port))
        self.began = time.monotonic()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> dict[str, float]:
        """CPU seconds per component over the sampled window (plus ``job`` and ``seconds``)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.ended = time.monotonic()
        totals: dict[str, float] = {name: 0.0 for name in (*OVERHEAD, "job")}
        for key, (kind, now) in self.last.items():
            start = self.first.get(key, Times(0.0, 0.0))
            own = now.own - start.own
            children = now.children - start.children
            if kind == "agent":
                totals["agent"] += own
                totals["job"] += children
            else:
                totals[kind] += own + children
        totals["seconds"] = self.ended - self.began
        return totals


def client_cpu() -> float:
    """CPU seconds this (benchmark) process has used so far, threads included."""
    return sum(os.times()[:2])


def background(executor: str, seconds: float, amqp_port: int = 5672) -> dict[str, float]:
    """CPU per second of the shared daemons while this benchmark sends nothing (others' load)."""
    sampler = Sampler({}, executor, amqp_port).start()
    time.sleep(seconds)
    totals = sampler.stop()
    return {name: totals[name] / totals["seconds"] for name in SHARED}


def report(totals: dict[str, float], idle_rate: dict[str, float], jobs: int, client_s: float) -> list[str]:
    """Lines of ms of CPU per job by component, raw and net of the shared daemons' idle rate."""
    lines = [f"{'component':<16} {'raw ms/job':>10} {'net ms/job':>10}"]
    seconds = totals["seconds"]
    net_total = raw_total = 0.0
    for name in OVERHEAD:
        raw = totals[name] * 1000 / max(jobs, 1)
        net = raw
        if name in idle_rate:
            net = max(0.0, totals[name] - idle_rate[name] * seconds) * 1000 / max(jobs, 1)
        raw_total += raw
        net_total += net
        lines.append(f"{name:<16} {raw:10.2f} {net:10.2f}")
    lines.append(f"{'overhead total':<16} {raw_total:10.2f} {net_total:10.2f}   (target <= 6 ms)")
    lines.append(f"{'job (program)':<16} {totals['job'] * 1000 / max(jobs, 1):10.2f}")
    lines.append(f"{'client (loadgen)':<16} {client_s * 1000 / max(jobs, 1):10.2f}")
    return lines
