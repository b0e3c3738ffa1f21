"""Kernel surface attacks: the system calls the project's seccomp profile refuses, and the
per-user kernel quotas one job could exhaust for every other job of the same host uid.

Each attack runs on runc (the profile filters the host kernel's calls) and on gVisor (where
``runsc --oci-seccomp`` applies the same profile inside gVisor's own kernel).
"""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Iterator

import pytest

from tests.security.conftest import Batch, Target, attack_registry, make_batch, sandbox_uid

ATTACKS, attack = attack_registry()

FORBIDDEN = """
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static void try(const char *name, long nr, long a, long b, long c, long d) {
    errno = 0;
    long r = syscall(nr, a, b, c, d, 0, 0);
    printf("%s %s\\n", name, r == -1 && (errno == EPERM || errno == ENOSYS) ? "refused" : "ALLOWED");
}

int main(void) {
    static char buf[4096];
    try("io_uring_setup", 425, 8, (long)buf, 0, 0);
    try("io_uring_enter", 426, 0, 0, 0, 0);
    try("io_uring_register", 427, 0, 0, 0, 0);
    try("userfaultfd", SYS_userfaultfd, 0, 0, 0, 0);
    try("keyctl", SYS_keyctl, 0, 0, 0, 0);
    try("add_key", SYS_add_key, (long)"user", (long)"k", (long)"v", 1);
    try("request_key", SYS_request_key, (long)"user", (long)"k", 0, 0);
    try("bpf", SYS_bpf, 0, (long)buf, 48, 0);
    try("perf_event_open", SYS_perf_event_open, (long)buf, 0, -1, -1);
    try("init_module", SYS_init_module, (long)buf, 16, (long)"", 0);
    try("finit_module", SYS_finit_module, 0, (long)"", 0, 0);
    try("delete_module", SYS_delete_module, (long)"ext4", 0, 0, 0);
    try("clock_settime", SYS_clock_settime, 0, (long)buf, 0, 0);
    try("clock_adjtime", SYS_clock_adjtime, 0, (long)buf, 0, 0);
    try("adjtimex", SYS_adjtimex, (long)buf, 0, 0, 0);
    try("settimeofday", SYS_settimeofday, (long)buf, 0, 0, 0);
    try("kexec_load", SYS_kexec_load, 0, 0, 0, 0);
    try("process_vm_readv", SYS_process_vm_readv, 1, (long)buf, 1, (long)buf);
    try("mount", SYS_mount, (long)"none", (long)"/tmp", (long)"tmpfs", 0);
    fflush(stdout);

    /* ptrace: attaching to a process that did not ask for it is refused... */
    pid_t victim = fork();
    if (victim == 0) { pause(); _exit(0); }
    try("ptrace_attach", SYS_ptrace, PTRACE_ATTACH, victim, 0, 0);
    try("ptrace_seize", SYS_ptrace, PTRACE_SEIZE, victim, 0, 0);
    try("ptrace_attach_init", SYS_ptrace, PTRACE_ATTACH, 1, 0, 0);
    kill(victim, SIGKILL);
    waitpid(victim, NULL, 0);
    /* ...while a child that asks its parent to trace it (what a debugger does) still can. */
    pid_t tracee = fork();
    if (tracee == 0) {
        if (ptrace(PTRACE_TRACEME, 0, 0, 0) != 0) _exit(3);
        raise(SIGSTOP);
        _exit(0);
    }
    int status = 0;
    waitpid(tracee, &status, 0);
    int stopped = WIFSTOPPED(status);
    long cont = ptrace(PTRACE_CONT, tracee, 0, 0);
    waitpid(tracee, &status, 0);
    printf("traceme %s\\n", stopped && cont == 0 && WIFEXITED(status) && WEXITSTATUS(status) == 0 ? "works" : "BROKEN");
    return 0;
}
"""
CALLS = ("io_uring_setup", "io_uring_enter", "io_uring_register", "userfaultfd", "keyctl", "add_key", "request_key",
         "bpf", "perf_event_open", "init_module", "finit_module", "delete_module", "clock_settime", "clock_adjtime",
         "adjtimex", "settimeofday", "kexec_load", "process_vm_readv", "mount", "ptrace_attach", "ptrace_seize",
         "ptrace_attach_init")


@attack("forbidden_syscalls_c")
def forbidden_syscalls(t: Target) -> None:
    state = t.run("c", FORBIDDEN, limits={"timeout_s": 20})
    assert state["status"] == "completed", t.explain(state)
    lines = state["result"]["stdout"].splitlines()
    assert lines == [f"{call} refused" for call in CALLS] + ["traceme works"], t.explain(state)
    t.normal_job_works("c")


@attack("forbidden_syscalls_python")
def forbidden_syscalls_python(t: Target) -> None:
    """The same from an interpreter through ctypes, and a user namespace (runc: refused)."""
    source = """
import ctypes, errno, os
libc = ctypes.CDLL(None, use_errno=True)
for name, nr in (("io_uring_setup", 425), ("userfaultfd", 323), ("keyctl", 250), ("bpf", 321),
                 ("perf_event_open", 298)):
    r = libc.syscall(nr, 0, 0, 0, 0, 0)
    print(name, "refused" if r == -1 and ctypes.get_errno() in (errno.EPERM, errno.ENOSYS) else "ALLOWED")
r = libc.unshare(0x10000000)
print("unshare_user", "refused" if r == -1 else "allowed")
"""
    state = t.run("python", source)
    assert state["status"] == "completed", t.explain(state)
    out = state["result"]["stdout"]
    assert "ALLOWED" not in out and out.count("refused") >= 5, t.explain(state)
    # A user namespace is host-kernel attack surface under runc; gVisor serves it itself (the
    # agent runs every step in one of its own there).
    assert ("unshare_user refused" in out) == (t.runtime == "runc"), t.explain(state)
    t.normal_job_works("python")


INOTIFY_HOG = """
import ctypes, sys, time
libc = ctypes.CDLL(None, use_errno=True)
held = []
while len(held) < 4096:
    fd = libc.inotify_init1(0)
    if fd < 0:
        break
    held.append(fd)
print("held", len(held), "stopped by errno", ctypes.get_errno(), flush=True)
time.sleep(8)
"""
INOTIFY_ONE = """
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
fd = libc.inotify_init1(0)
print("uid", os.getuid(), "inotify", "ok" if fd >= 0 else "REFUSED errno %d" % ctypes.get_errno())
"""


@attack("per_user_quota_python")
def per_user_quota(t: Target) -> None:
    """A job holding every inotify instance its uid may have leaves other jobs theirs: each
    sandbox is a host uid of its own (under runc the quota is counted per host uid)."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        hog = pool.submit(t.run, "python", INOTIFY_HOG, limits={"timeout_s": 15, "open_files": 1024})
        time.sleep(3)  # let the hog take the quota first
        other = t.run("python", INOTIFY_ONE)
        state = hog.result()
    assert state["status"] == "completed", t.explain(state)
    assert int(state["result"]["stdout"].split()[1]) >= 64, t.explain(state)
    assert other["status"] == "completed", t.explain(other)
    words = other["result"]["stdout"].split()
    assert words[2:] == ["inotify", "ok"] and sandbox_uid(words[1]), t.explain(other)
    t.normal_job_works("python")


@pytest.fixture(scope="module")
def batch(target: Target) -> Iterator[Batch]:
    yield from make_batch(target, ATTACKS)


@pytest.mark.parametrize("name", list(ATTACKS))
def test_kernel_attack_is_contained(batch: Batch, name: str) -> None:
    batch.result(name)
