"""The project's seccomp profile, applied to every sandbox on both runtimes.

``base.json`` is Docker's default allow-list (engine 20.10, resolved for x86-64 and for a
container without capabilities) minus what no job needs and what has been a rich source of
kernel bugs: ``io_uring_*``, ``clock_adjtime``/``adjtimex``, ``memfd_secret`` and
``modify_ldt``. Everything not allowed fails with ``EPERM``; that already covers
``userfaultfd``, ``keyctl``/``add_key``/``request_key``, ``bpf``, ``perf_event_open``, kernel
modules, ``settimeofday``/``clock_settime``, ``mount``, ``setns`` and ``process_vm_*``. The
rules built here add the argument-checked calls:

- ``ptrace`` for every request but ``PTRACE_ATTACH`` and ``PTRACE_SEIZE``: a job may trace its
  own children (they ask with ``PTRACE_TRACEME``), never attach to a process it did not start.
  (libseccomp keeps one comparison per argument in a rule, hence one rule per request.)
- ``personality`` with Docker's five harmless values only;
- ``clone`` without namespace flags, ``clone3`` answered ``ENOSYS`` so libc falls back to it.

Under gVisor (``runsc --oci-seccomp``) the filter is enforced by gVisor's own kernel, which
also serves namespaces without the host kernel: there the agent's ``unshare`` of a user and
IPC namespace per step is allowed (network namespaces stay refused), and ``clone``/``clone3``
are allowed whole (gVisor ignores ``errnoRet``, so an ``ENOSYS`` answer is not possible).

:func:`profile` returns the JSON text the engine receives in ``SecurityOpt``; the gate
accepts a sandbox only with exactly that text for its runtime.
"""

from __future__ import annotations

import functools
import json
from importlib import resources
from typing import Any

PTRACE_ATTACH = 16
PTRACE_SEIZE = 0x4206
# Every ptrace request Linux knows on x86-64 (0-33, 0x4200-0x420f) except the two that
# attach to a process without its consent.
PTRACE_ALLOWED = [r for r in (*range(34), *range(0x4200, 0x4210)) if r not in (PTRACE_ATTACH, PTRACE_SEIZE)]
PERSONALITIES = (0x0, 0x8, 0x20000, 0x20008, 0xFFFFFFFF)
NAMESPACE_FLAGS = 0x7E020000  # CLONE_NEWNS|NEWCGROUP|NEWUTS|NEWIPC|NEWUSER|NEWPID|NEWNET
CLONE_NEWNET = 0x40000000
ENOSYS = 38


def _arg(value: int, op: str = "SCMP_CMP_EQ", index: int = 0, value_two: int = 0) -> dict[str, Any]:
    return {"index": index, "value": value, "valueTwo": value_two, "op": op}


@functools.cache
def _rules(runtime: str) -> str:
    base: dict[str, Any] = json.loads(resources.files(__package__).joinpath("base.json").read_text())
    rules: list[dict[str, Any]] = list(base["syscalls"])
    rules += [{"names": ["personality"], "action": "SCMP_ACT_ALLOW", "args": [_arg(v)]} for v in PERSONALITIES]
    rules += [{"names": ["ptrace"], "action": "SCMP_ACT_ALLOW", "args": [_arg(r)]} for r in PTRACE_ALLOWED]
    if runtime == "runsc":
        # gVisor applies the filter but not its errnoRet (a refused clone3 would be EPERM, on
        # which glibc does not fall back to clone, and no thread could start): allowed there.
        rules.append({"names": ["clone", "clone3"], "action": "SCMP_ACT_ALLOW"})
        rules.append({
            "names": ["unshare"], "action": "SCMP_ACT_ALLOW",
            "args": [_arg(CLONE_NEWNET, "SCMP_CMP_MASKED_EQ", value_two=0)],
        })
    else:
        rules.append({"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": ENOSYS})
        rules.append({
            "names": ["clone"], "action": "SCMP_ACT_ALLOW",
            "args": [_arg(NAMESPACE_FLAGS, "SCMP_CMP_MASKED_EQ", value_two=0)],
        })
    return json.dumps({**base, "syscalls": rules}, separators=(",", ":"), sort_keys=True)


def profile(runtime: str) -> str:
    """The profile's JSON for a sandbox on ``runtime`` (``runc`` or ``runsc``), as sent to the engine."""
    return _rules("runsc" if runtime == "runsc" else "runc")


def allowed(runtime: str) -> frozenset[str]:
    """Names of the system calls the profile lets through (some only with checked arguments)."""
    rules = json.loads(profile(runtime))["syscalls"]
    return frozenset(n for r in rules if r["action"] == "SCMP_ACT_ALLOW" for n in r["names"])
