"""runbox's warm start for ``python3 main.py ARGS`` (the agent's prepare_warm starts it as
``python3 /opt/runbox/warm/python.py FD`` before the job arrives).

It reads the program's name and arguments from pipe FD, closes it, and runs the program as
``python3 main.py ARGS`` would: the same ``__main__`` names, ``sys.argv``, ``sys.orig_argv``,
``sys.path[0]``, and tracebacks without this file's frame.
"""


def _runbox_start() -> None:
    import os
    import sys

    # An interpreter's first compile() sets up its parser, 2 ms of a hello world's
    # latency: done now, before the job arrives (it leaves nothing the program can see).
    compile("", "<runbox-warm>", "exec")
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
    names = sys.modules["__main__"].__dict__
    names.clear()
    names.update(__name__="__main__", __doc__=None, __package__=None, __spec__=None, __annotations__={},
                 __builtins__=sys.modules["builtins"], __file__=path, __cached__=None,
                 __loader__=sys.modules["_frozen_importlib_external"].SourceFileLoader("__main__", path))
    with open(path, "rb") as source:
        code = compile(source.read(), path, "exec")
    # What exists now is the interpreter's start-up, which lives until the exit: frozen, the
    # exit's last collection does not walk it (about 2 ms of a hello world's 3 ms shutdown).
    # A cold start has not imported gc, so neither has the program's sys.modules.
    import gc

    gc.freeze()
    del sys.modules["gc"], gc
    try:
        exec(code, names)
    except SystemExit:
        raise
    except BaseException as error:
        error = error.with_traceback(error.__traceback__.tb_next)
        sys.excepthook(type(error), error, error.__traceback__)
        sys.exit(1)


_runbox_start()
