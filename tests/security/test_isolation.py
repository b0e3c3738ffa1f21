"""Isolation attacks: the network, the host, the service's secrets, the agent, privileges.

Every probe that touches the network targets only two addresses of this machine: 127.0.0.1
(inside the sandbox that is the sandbox's own loopback) and the Docker bridge gateway, read
on the host with ``docker network inspect bridge`` and handed to the program as an argument.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Iterator
from typing import Any

import pytest

from tests.security.conftest import SECRET, Batch, Target, attack_registry, make_batch, sandbox_uid

ATTACKS, attack = attack_registry()
BROKER_PORT = 5672


def no_secret(t: Target, state: dict[str, Any]) -> None:
    """Nothing of the service's configuration in a job's output."""
    text = state["result"]["stdout"] + state["result"]["stderr"]
    assert SECRET not in text, t.explain(state)
    assert "RUNBOX_" not in text, t.explain(state)  # no variable of the service
    assert "amqp" not in text.lower(), t.explain(state)


# --- the network ---------------------------------------------------------------------------------
@attack("network_python")
def network_python(t: Target) -> None:
    source = """
import errno, json, socket, sys
gateway = sys.argv[1]
report = {}
with open("/proc/net/dev") as f:
    report["interfaces"] = sorted(line.split(":")[0].strip() for line in f.readlines()[2:])
with open("/proc/net/route") as f:
    report["routes"] = f.read().splitlines()[1:]
report["if_nameindex"] = sorted(name for _, name in socket.if_nameindex())
report["tcp"] = {}
for host in ("127.0.0.1", gateway):
    s = socket.socket()
    s.settimeout(3)
    try:
        s.connect((host, PORT))
        report["tcp"][host] = "connected"
    except socket.timeout:
        report["tcp"][host] = "timeout"
    except OSError as exc:
        report["tcp"][host] = errno.errorcode.get(exc.errno, str(exc))
    finally:
        s.close()
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
try:
    u.sendto(b"probe", (gateway, PORT))
    report["udp"] = "sent"
except OSError as exc:
    report["udp"] = errno.errorcode.get(exc.errno, str(exc))
print(json.dumps(report))
""".replace("PORT", str(BROKER_PORT))
    state = t.run("python", source, args=[t.gateway_ip], limits={"timeout_s": 10})
    assert state["status"] == "completed", t.explain(state)
    report = json.loads(state["result"]["stdout"])
    assert report["interfaces"] == ["lo"], report
    assert report["if_nameindex"] == ["lo"], report
    assert report["routes"] == [], report
    # Nothing listens on the sandbox's own loopback, and there is no route to the host.
    assert report["tcp"]["127.0.0.1"] == "ECONNREFUSED", report
    assert report["tcp"][t.gateway_ip] in ("ENETUNREACH", "EHOSTUNREACH", "timeout"), report
    assert report["udp"] in ("ENETUNREACH", "EHOSTUNREACH", "EPERM"), report
    t.normal_job_works("python")


@attack("network_bash")
def network_bash(t: Target) -> None:
    source = f"""
gateway=$1
echo "routes $(tail -n +2 /proc/net/route | wc -l)"
echo "interfaces $(tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' | tr '\\n' ' ')"
for host in 127.0.0.1 "$gateway"; do
  if timeout 3 bash -c "exec 3<>/dev/tcp/$host/{BROKER_PORT}" 2>/dev/null; then
    echo "tcp $host connected"
  else
    echo "tcp $host failed"
  fi
done
"""
    state = t.run("bash", source, args=[t.gateway_ip], limits={"timeout_s": 10})
    assert state["status"] == "completed", t.explain(state)
    out = state["result"]["stdout"]
    assert "routes 0\n" in out and "interfaces lo \n" in out, t.explain(state)
    assert "tcp 127.0.0.1 failed" in out and f"tcp {t.gateway_ip} failed" in out, t.explain(state)
    assert "connected" not in out, t.explain(state)
    t.normal_job_works("bash")


@attack("network_javascript")
def network_javascript(t: Target) -> None:
    source = f"""
const net = require("net");
const os = require("os");
console.log("interfaces " + Object.keys(os.networkInterfaces()).sort().join(","));
const targets = ["127.0.0.1", process.argv[2]];
let pending = targets.length;
for (const host of targets) {{
  const socket = net.connect({{host, port: {BROKER_PORT}, timeout: 3000}});
  const done = (what) => {{
    console.log("tcp " + host + " " + what);
    socket.destroy();
    if (--pending === 0) process.exit(0);
  }};
  socket.on("connect", () => done("connected"));
  socket.on("timeout", () => done("timeout"));
  socket.on("error", (e) => done(e.code));
}}
"""
    state = t.run("javascript", source, args=[t.gateway_ip], limits={"timeout_s": 10})
    assert state["status"] == "completed", t.explain(state)
    out = state["result"]["stdout"]
    assert "interfaces lo\n" in out, t.explain(state)
    assert "tcp 127.0.0.1 ECONNREFUSED" in out, t.explain(state)
    assert f"tcp {t.gateway_ip} " in out and "connected" not in out, t.explain(state)
    t.normal_job_works("javascript")


# --- the service's secrets, the agent's process -----------------------------------------------------
@attack("secrets_python")
def secrets_python(t: Target) -> None:
    source = """
import json, os
blobs = {}
for pid in os.listdir("/proc"):
    if pid.isdigit():
        for name in ("environ", "cmdline"):
            try:
                with open(f"/proc/{pid}/{name}", "rb") as f:
                    blobs[f"/proc/{pid}/{name}"] = f.read().decode(errors="replace")
            except OSError as exc:
                blobs[f"/proc/{pid}/{name}"] = exc.strerror
for path in ("/run/secrets", "/var/run/secrets", "/etc/hostname", "/etc/hosts", "/etc/resolv.conf", "/.dockerenv"):
    try:
        blobs[path] = sorted(os.listdir(path)) if os.path.isdir(path) else open(path).read()
    except OSError as exc:
        blobs[path] = exc.strerror
print(json.dumps({"env": dict(os.environ), "blobs": blobs}))
"""
    state = t.run("python", source)
    assert state["status"] == "completed", t.explain(state)
    no_secret(t, state)
    env = json.loads(state["result"]["stdout"])["env"]
    # The job's environment is built from scratch by the agent: nothing of the executor's.
    allowed = {"PATH", "HOME", "TMPDIR", "LANG", "LC_ALL", "PWD", "PYTHONDONTWRITEBYTECODE", "PYTHONUNBUFFERED"}
    assert set(env) <= allowed, env
    t.normal_job_works("python")


@attack("secrets_bash")
def secrets_bash(t: Target) -> None:
    source = "env\ncat /proc/1/environ /proc/1/cmdline 2>&1\nfor f in /proc/[0-9]*/environ; do cat \"$f\"; done 2>&1\n"
    state = t.run("bash", source)
    assert state["status"] == "completed", t.explain(state)
    no_secret(t, state)
    t.normal_job_works("bash")


@attack("agent_proc_entries_python")
def agent_proc_entries(t: Target) -> None:
    """The agent's (PID 1's) environ, fds, memory and maps are closed to the job.

    Under runc because the agent is non-dumpable; gVisor ignores that in its /proc, so there
    an empty read-only tmpfs covers /proc/1 (``GVISOR_COVERS``).
    """
    source = """
import json, os
report = {}
for name in ("environ", "fd", "mem", "maps", "cwd", "root", "stack", "auxv", "task/1/fd", "task/1/environ"):
    path = "/proc/1/" + name
    try:
        if name in ("fd", "task/1/fd"):
            report[name] = "listed " + ",".join(sorted(os.listdir(path)))
        elif name in ("cwd", "root"):
            report[name] = "listed " + ",".join(sorted(os.listdir(path + "/")))
        else:
            with open(path, "rb") as f:
                report[name] = "read " + f.read(200).decode(errors="replace")
    except OSError as exc:
        report[name] = exc.strerror
for fd in range(3):
    try:
        os.close(os.open(f"/proc/1/fd/{fd}", os.O_RDONLY | os.O_NONBLOCK))
        report[f"fd/{fd}"] = "opened"
    except OSError as exc:
        report[f"fd/{fd}"] = exc.strerror
# Another name for the agent: a thread of PID 1 has /proc/<tid> of its own (unlisted, but open).
for tid in range(2, 1024):
    try:
        with open(f"/proc/{tid}/status") as f:
            if "\\nTgid:\\t1\\n" in f.read():
                report[f"thread {tid}"] = "listed an agent thread"
    except OSError:
        pass
print(json.dumps(report))
"""
    state = t.run("python", source)
    assert state["status"] == "completed", t.explain(state)
    no_secret(t, state)
    report = json.loads(state["result"]["stdout"])
    assert report["mem"] in ("Permission denied", "No such file or directory"), report
    opened = {k: v for k, v in report.items() if v.startswith(("read", "listed", "opened"))}
    t.normal_job_works("python")
    assert not opened, report


@attack("control_channel_forgery_python")
def control_channel_forgery(t: Target) -> None:
    """Forge the agent's messages, then wait for the next job on the agent's stdin to steal it.

    /proc/1/fd is closed to the job on both runtimes. Behind that, should a job ever open the
    agent's stdout or stdin: the executor drops any line without the job's token (the job ends
    ``failed``), so nothing is forged, and no next job is sent to a container until its real
    agent says it is scrubbed.
    """
    source_a = """
import json, os, time
try:
    out = os.open("/proc/1/fd/1", os.O_WRONLY)
except OSError as exc:
    print("control channel closed:", exc.strerror)
    raise SystemExit(0)
done = {"t": "done", "status": "completed", "exit_code": 0, "signal": None, "duration_ms": 1,
        "cpu_ms": 1, "memory_peak_kb": 1, "truncated": {"stdout": False, "stderr": False}}
for message in ({"t": "out", "s": "stdout", "d": "FORGED\\n"}, done, {"t": "ready", "clean": True, "detail": None}):
    os.write(out, json.dumps(message).encode() + b"\\n")
stolen = b""
try:
    inp = os.open("/proc/1/fd/0", os.O_RDONLY | os.O_NONBLOCK)
    end = time.time() + 4
    while time.time() < end and b"\\n" not in stolen:
        try:
            stolen += os.read(inp, 65536)
        except BlockingIOError:
            time.sleep(0.01)
except OSError:
    pass
if stolen:
    message = {"t": "out", "s": "stdout", "d": "STOLEN " + stolen.decode(errors="replace")}
    os.write(out, json.dumps(message).encode() + b"\\n")
    os.write(out, json.dumps(done).encode() + b"\\n")
print("forged")
"""
    victim_secret = f"victim-{secrets.token_hex(6)}"
    victim = f'# {victim_secret}\nprint("victim ran")\n'
    state_a = t.run("python", source_a)
    state_b = t.run("python", victim)
    assert state_b["status"] == "completed", t.explain(state_b)
    assert state_b["result"]["stdout"] == "victim ran\n", t.explain(state_b)
    out_a = state_a["result"]["stdout"]
    assert "FORGED" not in out_a and "STOLEN" not in out_a and victim_secret not in out_a, t.explain(state_a)
    assert state_a["status"] == "completed", t.explain(state_a)
    assert out_a == f"control channel closed: {t.agent_closed}\n", t.explain(state_a)
    t.normal_job_works("python")


@attack("docker_socket_python")
def docker_socket(t: Target) -> None:
    source = """
import json, os, socket
report = {}
for path in ("/var/run/docker.sock", "/run/docker.sock", "/var/run/docker", "/run/containerd", "/var/lib/docker",
             "/run/runc", "/var/run/runsc", "/host", "/hostfs"):
    report[path] = os.path.lexists(path)
s = socket.socket(socket.AF_UNIX)
try:
    s.connect("/var/run/docker.sock")
    report["connect"] = "connected"
except OSError as exc:
    report["connect"] = exc.strerror
try:
    with open("/proc/net/unix") as f:
        report["unix sockets"] = [line.split()[-1] for line in f.read().splitlines()[1:] if len(line.split()) > 7]
except OSError as exc:
    report["unix sockets"] = [exc.strerror]
print(json.dumps(report))
"""
    state = t.run("python", source)
    assert state["status"] == "completed", t.explain(state)
    report = json.loads(state["result"]["stdout"])
    assert not any(v for k, v in report.items() if k.startswith("/")), report
    assert report["connect"] != "connected", report
    assert not [s for s in report["unix sockets"] if "docker" in s or "containerd" in s], report
    t.normal_job_works("python")


# --- the filesystem, privileges ---------------------------------------------------------------------
@attack("write_outside_work_bash")
def write_outside_work(t: Target) -> None:
    source = """
for p in /etc/passwd /etc/runbox-x /usr/bin/runbox-x /runbox-x /home/runbox-x /root/runbox-x /var/tmp/runbox-x \\
         /run/lock/runbox-x /opt/runbox/agent.py /bin/sh /usr/lib/python3.11/os.py /proc/sys/kernel/hostname \\
         /sys/kernel/runbox-x; do
  if ( echo pwned >> "$p" ) 2>/dev/null; then echo "WROTE $p"; else echo "denied $p"; fi
done
mkdir /runbox-dir 2>/dev/null && echo "WROTE /runbox-dir" || echo "denied /runbox-dir"
for p in /work/ok /tmp/ok /dev/shm/ok; do echo ok > "$p" && echo "wrote $p"; done
"""
    state = t.run("bash", source)
    assert state["status"] == "completed", t.explain(state)
    lines = state["result"]["stdout"].splitlines()
    assert not [line for line in lines if line.startswith("WROTE")], t.explain(state)
    assert {"wrote /work/ok", "wrote /tmp/ok", "wrote /dev/shm/ok"} <= set(lines), t.explain(state)
    t.normal_job_works("bash")


@attack("mount_python")
def mount_python(t: Target) -> None:
    source = """
import ctypes, json, os
libc = ctypes.CDLL(None, use_errno=True)
os.makedirs("/work/m", exist_ok=True)
report = {}
def call(name, fn):
    rc = fn()
    report[name] = "ok" if rc == 0 else os.strerror(ctypes.get_errno())
MS_BIND, MS_REMOUNT, MNT_DETACH = 4096, 32, 2
call("mount tmpfs", lambda: libc.mount(b"none", b"/work/m", b"tmpfs", 0, None))
call("mount proc", lambda: libc.mount(b"proc", b"/work/m", b"proc", 0, None))
call("bind /", lambda: libc.mount(b"/", b"/work/m", None, MS_BIND, None))
call("remount / rw", lambda: libc.mount(None, b"/", None, MS_REMOUNT, None))
call("umount /work", lambda: libc.umount2(b"/work", MNT_DETACH))
call("umount /proc", lambda: libc.umount2(b"/proc", MNT_DETACH))
call("chroot", lambda: libc.chroot(b"/work"))
print(json.dumps(report))
"""
    state = t.run("python", source)
    assert state["status"] == "completed", t.explain(state)
    report = json.loads(state["result"]["stdout"])
    assert "ok" not in report.values(), report
    mount_8 = "mkdir -p /work/m\nmount -t tmpfs none /work/m && echo MOUNTED\numount /work && echo UNMOUNTED\n"
    bash = t.run("bash", mount_8)
    assert bash["status"] == "completed", t.explain(bash)
    assert "MOUNTED" not in bash["result"]["stdout"], t.explain(bash)  # the setuid mount(8) gains nothing
    t.normal_job_works("python")


@attack("unshare_bash")
def unshare_bash(t: Target) -> None:
    """New namespaces: refused under runc (seccomp, no CAP_SYS_ADMIN). gVisor lets a job make a
    user namespace of its own, which grants nothing outside it: no mount, no root file."""
    source = """
attempt() { out=$("$@" 2>&1); echo "rc=$? :: ${*:1:2} :: ${out//$'\\n'/ | }"; }
attempt unshare -m true
attempt unshare -n true
attempt unshare -p -f true
attempt unshare -i true
attempt unshare -u true
attempt unshare -U true
attempt unshare -r sh -c 'mount -t tmpfs none /tmp && echo MOUNTED; cat /etc/shadow && echo SHADOW; \\
  echo x > /etc/runbox-x && echo ETC; id -u'
attempt unshare -r -m sh -c 'mount -t tmpfs none /tmp && echo MOUNTED; mount --bind / /work && echo BOUND; id -u'
"""
    state = t.run("bash", source)
    assert state["status"] == "completed", t.explain(state)
    out = state["result"]["stdout"]
    for marker in ("MOUNTED", "SHADOW", "ETC", "BOUND"):
        assert marker not in out, t.explain(state)
    for line in out.splitlines():
        user_namespace = " -U " in line or " -r " in line
        # runc: every unshare is refused. runsc: a user namespace may be made, nothing else.
        if t.runtime == "runc" or not user_namespace:
            assert not line.startswith("rc=0"), t.explain(state)
    t.normal_job_works("bash")


@attack("ptrace_pid1_python")
def ptrace_pid1(t: Target) -> None:
    source = """
import ctypes, json, os
libc = ctypes.CDLL(None, use_errno=True)
report = {}
for name, request in (("attach", 16), ("seize", 0x4206)):
    rc = libc.ptrace(request, 1, None, None)
    report[name] = "ok" if rc == 0 else os.strerror(ctypes.get_errno())
class IoVec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]
buf = ctypes.create_string_buffer(64)
local, remote = IoVec(ctypes.addressof(buf), 64), IoVec(0x400000, 64)
for name, fn in (("process_vm_readv", libc.process_vm_readv), ("process_vm_writev", libc.process_vm_writev)):
    rc = fn(1, ctypes.byref(local), 1, ctypes.byref(remote), 1, 0)
    report[name] = "ok" if rc >= 0 else os.strerror(ctypes.get_errno())
try:
    with open("/proc/1/mem", "r+b") as f:
        report["mem"] = "opened"
except OSError as exc:
    report["mem"] = exc.strerror
print(json.dumps(report))
"""
    state = t.run("python", source)
    assert state["status"] == "completed", t.explain(state)
    report = json.loads(state["result"]["stdout"])
    assert report["attach"] == report["seize"] == "Operation not permitted", report
    assert report["process_vm_readv"] != "ok" and report["process_vm_writev"] != "ok", report
    assert report["mem"] != "opened", report
    t.normal_job_works("python")


@attack("setuid_c")
def setuid_c(t: Target) -> None:
    source = r"""
#include <grp.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
int main(void) {
    gid_t root = 0;
    printf("setuid %d\n", setuid(0));
    printf("setgid %d\n", setgid(0));
    printf("setresuid %d\n", setresuid(0, 0, 0));
    printf("setgroups %d\n", setgroups(1, &root));
    printf("ids %d %d %d %d\n", getuid(), geteuid(), getgid(), getegid());
    fflush(stdout);
    system("cp /bin/bash /work/rootsh && chmod 6755 /work/rootsh && /work/rootsh -p -c 'echo work-suid euid=$(id -u)'");
    system("cp /bin/bash /tmp/rootsh && chmod u+s /tmp/rootsh && /tmp/rootsh -p -c 'echo tmp-suid euid=$(id -u)'");
    system("su -c 'echo SU-WORKED' root < /dev/null > /dev/null 2>&1; echo su-rc=$?");
    system("for b in $(find / -xdev -perm -4000 -type f 2>/dev/null); do echo suid-binary $b; done");
    return 0;
}
"""
    state = t.run("c", source, limits={"timeout_s": 10})
    assert state["status"] == "completed", t.explain(state)
    out = state["result"]["stdout"]
    for call in ("setuid", "setgid", "setresuid", "setgroups"):
        assert f"{call} -1\n" in out, t.explain(state)
    ids = re.search(r"^ids (\d+) (\d+) (\d+) (\d+)$", out, re.M)
    assert ids and len(set(ids.groups())) == 1 and sandbox_uid(ids[1]), t.explain(state)
    assert f"work-suid euid={ids[1]}\n" in out and f"tmp-suid euid={ids[1]}\n" in out, t.explain(state)
    assert "SU-WORKED" not in out and "su-rc=0" not in out, t.explain(state)
    t.normal_job_works("c")


@attack("chmod_setuid_bash")
def chmod_setuid_bash(t: Target) -> None:
    source = """
cp /bin/sh /dev/shm/x && chmod 6755 /dev/shm/x && echo "mode $(stat -c %a /dev/shm/x)"
/dev/shm/x -c 'echo shm-suid euid=$(id -u)' 2>&1 || echo "shm exec refused"
cp /bin/bash /work/y && chmod u+s,g+s /work/y && /work/y -p -c 'echo work-suid euid=$(id -u) egid=$(id -g)'
for b in /usr/bin/passwd /usr/bin/chsh /usr/bin/newgrp /usr/bin/gpasswd; do
  [ -x "$b" ] && { "$b" < /dev/null > /dev/null 2>&1; echo "$b rc=$?"; }
done
"""
    state = t.run("bash", source)
    assert state["status"] == "completed", t.explain(state)
    out = state["result"]["stdout"]
    assert "euid=0" not in out and "egid=0" not in out, t.explain(state)
    suid = re.search(r"work-suid euid=(\d+) egid=(\d+)", out)
    assert suid and suid[1] == suid[2] and sandbox_uid(suid[1]), t.explain(state)
    t.normal_job_works("bash")


@attack("capabilities_bash")
def capabilities_bash(t: Target) -> None:
    state = t.run("bash", "grep -E '^(Cap(Inh|Prm|Eff|Bnd|Amb)|NoNewPrivs):' /proc/self/status\n")
    assert state["status"] == "completed", t.explain(state)
    fields = dict(line.split(":\t") for line in state["result"]["stdout"].splitlines())
    assert fields["CapEff"] == "0000000000000000", fields
    for name in ("CapInh", "CapPrm", "CapAmb"):
        assert fields.get(name, "0000000000000000") == "0000000000000000", fields
    if t.runtime == "runc":
        assert fields["CapBnd"] == "0000000000000000", fields
    # Under gVisor a job runs in a user namespace of its own (for its own IPC namespace), whose
    # bounding set is full: nothing can raise a capability into it (no_new_privs, and no uid 0
    # mapped for a setuid binary), and a job could make such a namespace itself anyway.
    assert fields.get("NoNewPrivs", "1") == "1", fields  # gVisor does not show the line
    t.normal_job_works("bash")


@attack("capabilities_python")
def capabilities_python(t: Target) -> None:
    """Every operation a capability would allow is refused."""
    source = """
import ctypes, json, os, socket
libc = ctypes.CDLL(None, use_errno=True)
report = {}
def attempt(name, fn):
    try:
        rc = fn()
        report[name] = "ok" if rc in (None, 0) or (isinstance(rc, int) and rc > 0) else os.strerror(ctypes.get_errno())
    except OSError as exc:
        report[name] = exc.strerror or str(exc)
attempt("setuid 0 (CAP_SETUID)", lambda: os.setuid(0))
attempt("chown to root (CAP_CHOWN)", lambda: os.chown("/work/main.py", 0, 0))
attempt("nice -5 (CAP_SYS_NICE)", lambda: os.nice(-5) and None)
attempt("sethostname (CAP_SYS_ADMIN)", lambda: libc.sethostname(b"owned", 5))
attempt("mknod /dev/mem (CAP_MKNOD)", lambda: os.mknod("/work/mem", 0o20600, os.makedev(1, 1)))
attempt("raw socket (CAP_NET_RAW)", lambda: socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP).close())
attempt("chroot (CAP_SYS_CHROOT)", lambda: os.chroot("/work"))
def read_device():
    with open("/work/mem", "rb") as f:
        f.read(16)
attempt("read the device node", read_device)
report["no_new_privs"] = libc.prctl(39, 0, 0, 0, 0)
print(json.dumps(report))
"""
    state = t.run("python", source)
    assert state["status"] == "completed", t.explain(state)
    report = json.loads(state["result"]["stdout"])
    assert report.pop("no_new_privs") == 1, report
    granted = {name for name, outcome in report.items() if outcome == "ok"}
    if t.runtime == "runsc":
        # gVisor's own kernel lets a job renice itself and make a device node on its tmpfs:
        # the sentry schedules its tasks itself and backs only its few virtual devices, so
        # the node opens nothing (checked: reading it fails).
        granted -= {"nice -5 (CAP_SYS_NICE)", "mknod /dev/mem (CAP_MKNOD)"}
    assert granted == set(), report
    t.normal_job_works("python")


@pytest.fixture(scope="module")
def batch(target: Target) -> Iterator[Batch]:
    yield from make_batch(target, ATTACKS)


@pytest.mark.parametrize("name", list(ATTACKS))
def test_isolation_attack_is_contained(batch: Batch, name: str) -> None:
    batch.result(name)
