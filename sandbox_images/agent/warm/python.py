"""runbox's warm start for ``python3 main.py ARGS``.

Started per job (``python3 /opt/runbox/warm/python.py FD``, by the agent's prepare_warm before
the job arrives), it reads the program's name and arguments from pipe FD, closes it, and runs
the program as ``python3 main.py ARGS`` would: the same ``__main__`` names, ``sys.argv``,
``sys.orig_argv``, ``sys.path[0]``, and tracebacks without this file's frame.

Started once per container (``python3 /opt/runbox/warm/python.py --fork [--ipc] SOCKET``), it
is a zygote: for each job the agent sends it the new process's stdio and control pipe over
SOCKET, and it forks twice, so that the process (reparented to the agent, PID 1) starts from
an interpreter that never ran a program, for about a millisecond of CPU instead of a whole
interpreter's start. The zygote runs as the job's user, so whatever such a user can change in
another process from outside is kept out or checked (docs/security.md). With ``--ipc`` (gVisor)
each forked process enters an IPC namespace of its own, as unshare(1) makes a cold start's.
"""


def _runbox_zygote(channel: int, ipc: bool) -> int:
    """Serve forks on ``channel`` until the agent closes it; return in each forked process only,
    with the number of the pipe its program arrives on."""
    import os
    import sys

    before = set(sys.modules)
    import _socket
    import ctypes
    import resource
    import signal

    libc = ctypes.CDLL(None, use_errno=True)
    # Not dumpable: the job (same user) can neither trace it nor open its /proc memory or fds.
    libc.prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE
    ioprio_get = {"x86_64": 252, "aarch64": 31}.get(os.uname().machine)
    rlimits = [getattr(resource, name) for name in dir(resource) if name.startswith("RLIMIT_")]

    def outside() -> tuple:
        """What a process of the same user may change in this one from outside (inherited by a fork)."""
        return (
            os.getpriority(os.PRIO_PROCESS, 0), os.sched_getscheduler(0), os.sched_getparam(0).sched_priority,
            os.sched_getaffinity(0), [resource.getrlimit(r) for r in rlimits],
            libc.syscall(ioprio_get, 1, 0) if ioprio_get else 0,
        )

    baseline = outside()
    zygote = os.getpid()
    # Only SIGKILL and SIGSTOP reach it (the agent replaces a zygote that is gone or stopped).
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
    server = _socket.socket(_socket.AF_UNIX, _socket.SOCK_SEQPACKET, 0, channel)
    while True:
        message, ancillary, _, _ = server.recvmsg(1, _socket.CMSG_SPACE(4 * 4))
        if not message:
            os._exit(0)
        fds = [int.from_bytes(data[i:i + 4], sys.byteorder) for _, _, data in ancillary
               for i in range(0, len(data) - len(data) % 4, 4)]
        if len(fds) != 4:
            os._exit(1)
        read, write = os.pipe()
        first = os.fork()
        if first == 0:
            try:
                second = os.fork()
                if second:
                    os.write(write, second.to_bytes(4, sys.byteorder))
            except BaseException:
                os._exit(1)
            if second:
                os._exit(0)
            break  # the job's process
        os.close(write)
        os.waitpid(first, 0)
        # The pid from the first child, then one byte from the process once it has passed its
        # check (end of file if it failed): the agent hands a job only to a process that is ready.
        said = b""
        while len(said) < 5 and (chunk := os.read(read, 5 - len(said))):
            said += chunk
        pid = int.from_bytes(said[:4], sys.byteorder) if len(said) == 5 else 0
        os.close(read)
        for fd in set(fds):
            os.close(fd)
        server.send(pid.to_bytes(4, sys.byteorder))
    try:
        return _runbox_forked(server, read, write, fds, zygote, outside, baseline, libc, mask, before, ipc)
    except BaseException:
        os._exit(1)  # never a traceback of ours on the program's stderr: the agent starts it cold


def _runbox_forked(server, read, write, fds, zygote, outside, baseline, libc, mask, before, ipc) -> int:
    """Make the forked process what the agent's spawn makes of a cold one; return its control pipe."""
    import os
    import signal
    import sys

    # In a session of its own, on its own pipes.
    server.close()
    os.close(read)
    stdin, stdout, stderr, control = fds
    os.setsid()
    os.dup2(stdin, 0)
    os.dup2(stdout, 1)
    os.dup2(stderr, 2)
    for fd in {stdin, stdout, stderr} - {0, 1, 2}:
        os.close(fd)
    if outside() != baseline:
        # A job changed the zygote (its priority, scheduling, CPUs, I/O priority or limits):
        # it must not make any more processes.
        os.kill(zygote, signal.SIGKILL)
        os._exit(1)
    libc.prctl(4, 1, 0, 0, 0)  # dumpable again, as a cold start (and its /proc files its own)
    if ipc:
        _runbox_unshare_ipc(libc)  # after the check, which compares what the zygote's namespace shows
    os.write(write, b"1")
    os.close(write)
    signal.pthread_sigmask(signal.SIG_SETMASK, mask)
    for name in set(sys.modules) - before:
        del sys.modules[name]
    return control


def _runbox_unshare_ipc(libc) -> None:
    """What ``unshare --user --map-user=UID --map-group=GID --ipc`` and its exec make of a cold
    start: an IPC namespace of the process's own, through a user namespace where it is itself,
    and no capabilities there (the exec of a process that is not root in it drops them)."""
    import os

    uid, gid = os.getuid(), os.getgid()  # until its maps are written the namespace shows 65534
    if libc.unshare(0x10000000 | 0x08000000) != 0:  # CLONE_NEWUSER | CLONE_NEWIPC
        raise OSError("unshare")
    try:
        with open("/proc/self/setgroups", "w") as f:
            f.write("deny")
    except OSError:
        pass  # gVisor refuses it (EACCES), and unshare(1) goes on without it too
    for path, line in (("/proc/self/uid_map", f"{uid} {uid} 1"), ("/proc/self/gid_map", f"{gid} {gid} 1")):
        with open(path, "w") as f:
            f.write(line)
    # capset(2): version 3 header for this process, then effective, permitted and inheritable
    # sets of two words each, all empty.
    header = (0x20080522).to_bytes(4, "little") + bytes(4)
    if libc.capset(header, bytes(24)) != 0:
        raise OSError("capset")


def _runbox_start() -> None:
    import os
    import sys

    # An interpreter's first compile() sets up its parser, 2 ms of a hello world's
    # latency: done now, before the job arrives (it leaves nothing the program can see).
    compile("", "<runbox-warm>", "exec")
    if sys.argv[1] == "--fork":
        control = _runbox_zygote(int(sys.argv[-1]), sys.argv[2:-1] == ["--ipc"])
    else:
        control = int(sys.argv[1])
    data = b""
    while chunk := os.read(control, 65536):
        data += chunk
    os.close(control)
    if not data:
        os._exit(0)
    argv = [os.fsdecode(a) for a in data.split(b"\0")]
    path = os.path.join(os.getcwd(), argv[0])
    sys.argv = argv
    sys.orig_argv = [sys.orig_argv[0], *argv]
    sys.path[0] = os.path.dirname(path)
    freeze, end = _runbox_end()  # before the names go: this stub's globals are __main__'s
    names = sys.modules["__main__"].__dict__
    names.clear()
    names.update(__name__="__main__", __doc__=None, __package__=None, __spec__=None, __annotations__={},
                 __builtins__=sys.modules["builtins"], __file__=path, __cached__=None,
                 __loader__=sys.modules["_frozen_importlib_external"].SourceFileLoader("__main__", path))
    with open(path, "rb") as source:
        code = compile(source.read(), path, "exec")
    freeze()
    try:
        exec(code, names)
    except SystemExit as stop:
        end(stop.code)
        raise
    except BaseException as error:
        error = error.with_traceback(error.__traceback__.tb_next)
        sys.excepthook(type(error), error, error.__traceback__)
        end(1)
        sys.exit(1)
    end(None)


def _runbox_end():
    """Two functions: one that freezes the interpreter's start-up objects just before the
    program runs, and one that ends the process at once with the program's exit status,
    skipping the interpreter's teardown, whenever that teardown would show nothing (it returns
    otherwise, and the interpreter exits as it would).

    What exists just before the program runs is the interpreter's start-up, which lives until
    the exit: frozen (``gc.freeze()``), the exit's last collection does not walk it (about 2 ms
    of a hello world's 3 ms shutdown), and what the program made is told apart from it. The
    rest of the teardown (every object freed, in a forked process each page written again)
    took 2 to 4 ms after a hello world's last write. It shows something only through threads
    still to join, ``atexit`` callbacks, finalizers (``__del__``, an unfinished generator's
    ``finally``, a weak reference's callback) and output not yet flushed: with any of those the
    program exits as ``python3 main.py`` does, its start-up unfrozen again. Everything used is
    taken before the program runs, which could replace any of it; gc and atexit are not left
    imported, as in a cold start.
    """
    import _weakref
    import os
    import sys

    fresh = {"atexit", "gc"} - set(sys.modules)
    import atexit
    import gc

    for name in fresh:
        del sys.modules[name]
    objects, freezes, unfreeze = gc.get_objects, gc.get_freeze_count, gc.unfreeze
    frozen = 0  # objects our freeze froze: a different count means the program froze or unfroze
    system = sys
    streams = (sys.stdout, sys.stderr)
    callbacks = atexit._ncallbacks
    exit_now = os._exit
    reference = _weakref.ref
    has, of, kind, number = hasattr, type, isinstance, int

    def freeze() -> None:
        nonlocal frozen
        gc.freeze()
        frozen = freezes()

    def end(code: object) -> None:
        code = 0 if code is None else code
        if kind(code, number) and -2**31 <= code < 2**31 and quiet():
            exit_now(code)
        if freezes() == frozen:
            # The teardown as a cold start's: frozen, __main__'s cycles would outlive the
            # collection that frees them while sys.stdout still works, and a module-level
            # object's __del__ would print into nothing.
            unfreeze()

    def quiet() -> bool:
        try:
            if "threading" in system.modules or callbacks() or freezes() != frozen:
                return False
            for generation in (0, 1, 2):
                for thing in objects(generation):
                    if has(of(thing), "__del__") or (kind(thing, reference) and thing.__callback__ is not None):
                        return False
            for stream in (*streams, system.stdout, system.stderr):
                stream.flush()
        except BaseException:
            return False  # a failed flush is reported as the interpreter reports it, with its exit status
        return True

    return freeze, end


_runbox_start()
