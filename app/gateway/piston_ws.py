"""Piston's interactive ``/api/v2/connect``: one WebSocket runs one job with live input.

The protocol is Piston's. The client sends ``{"type": "init", ...}`` (the body of
``/api/v2/execute``) within a second, then ``{"type": "data", "stream": "stdin", "data": ...}``
as often as it likes, and ``{"type": "signal", "signal": "SIGTERM"}`` to signal the running
stage's program. The server answers ``runtime`` (the language and version chosen), a
``stage`` message as the compile and run stages start, ``data`` messages with the program's
stdout and stderr as it writes them, and an ``exit`` message per stage; then it closes with
4999 "Job Completed". A refusal is an ``error`` message followed by close 4002; protocol
misuse closes with Piston's codes (4000 already initialised, 4001 no init within a second,
4003 input before init, 4004 input to anything but stdin, 4005 a signal Piston does not know,
after an ``error`` message saying which).

Underneath it is an ordinary interactive job through the one admission path: the input
travels over RabbitMQ to the executor running it, and the messages come from the job's
events, whichever gateway the job's executor reports to. A signal takes the input's way
(after the input sent before it) and the agent in the sandbox sends it to the running step's
process group; a stage it ends has that signal in its ``exit`` message. Known differences
from Piston: the compiler's output is one ``data`` message on stderr once the compile step
ends; Piston signals only its stage's first process, runbox the stage's process group (as a
terminal's Ctrl-C does); the four names on Piston's list that Linux lacks (SIGEMT, SIGINFO,
SIGLOST, SIGUNUSED) are an ``error`` message and close 4002, as Piston's own attempt to send
them fails; and a session that closes before its job ends (the client went away, or broke the
protocol) ends the job with SIGKILL, where Piston lets it run to its time limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import signal
from typing import Any

from quart import Blueprint, current_app, websocket

from app.gateway import gateway
from app.gateway.output import compile_failed
from app.gateway.piston import compile_stage, draft, piston_name, run_stage
from app.gateway.service import Gateway
from app.languages import Language
from app.messages import Job
from app.web.errors import ApiError

bp = Blueprint("compat_piston_ws", __name__, url_prefix="/api/v2")

INIT_TIMEOUT_S = 1.0  # Piston closes a socket that has not sent ``init`` within a second
# The names Piston's ``signal`` message accepts (its own list, from signal(7)); any other is
# closed with 4005. Four of them name no Linux signal.
PISTON_SIGNALS = frozenset((
    "SIGABRT", "SIGALRM", "SIGBUS", "SIGCHLD", "SIGCLD", "SIGCONT", "SIGEMT", "SIGFPE", "SIGHUP",
    "SIGILL", "SIGINFO", "SIGINT", "SIGIO", "SIGIOT", "SIGKILL", "SIGLOST", "SIGPIPE", "SIGPOLL",
    "SIGPROF", "SIGPWR", "SIGQUIT", "SIGSEGV", "SIGSTKFLT", "SIGSTOP", "SIGTSTP", "SIGSYS",
    "SIGTERM", "SIGTRAP", "SIGTTIN", "SIGTTOU", "SIGUNUSED", "SIGURG", "SIGUSR1", "SIGUSR2",
    "SIGVTALRM", "SIGXCPU", "SIGXFSZ", "SIGWINCH",
))


class Close(Exception):
    """End the session with a WebSocket close code and reason (Piston's), after ``message`` if any."""

    def __init__(self, code: int, reason: str, message: str = "") -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason
        self.message = message


def signal_number(message: dict[str, Any]) -> int:
    """The Linux number of a ``signal`` message's signal: the one place its name is checked."""
    name = message.get("signal")
    if not isinstance(name, str) or name not in PISTON_SIGNALS:
        known = ", ".join(sorted(PISTON_SIGNALS))
        raise Close(4005, "Invalid signal", f"{json.dumps(name)[:40]} is not a signal; send one of {known}.")
    number = signal.Signals.__members__.get(name)
    if number is None:
        raise ApiError(400, "invalid_signal", f"{name} is not a signal on Linux, where this runs.")
    return int(number)


async def send(kind: str, **fields: Any) -> None:
    """One Piston message."""
    await websocket.send(json.dumps({"type": kind, **fields}))


def parse(raw: str | bytes) -> dict[str, Any]:
    """A client message: a JSON object, else a refusal (error, then close 4002)."""
    try:
        message = json.loads(raw)
    except ValueError:
        raise ApiError(400, "invalid_json", "The message is not valid JSON.") from None
    if not isinstance(message, dict):
        raise ApiError(400, "invalid_body", "A message must be a JSON object.")
    return message


async def wait_init() -> dict[str, Any]:
    """The ``init`` message; other types before it close the socket as Piston does."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + INIT_TIMEOUT_S
    while True:
        try:
            raw = await asyncio.wait_for(websocket.receive(), max(0.0, deadline - loop.time()))
        except TimeoutError:
            raise Close(4001, "Initialization Timeout") from None
        message = parse(raw)
        kind = message.get("type")
        if kind == "init":
            return message
        if kind in ("data", "signal"):
            raise Close(4003, "Not yet initialized")
        # Piston ignores messages of other types.


async def admit(gw: Gateway, init: dict[str, Any]) -> Job:
    """The session's job: identified, admitted, validated and published like every other one."""
    identity = gw.identities.identify(websocket.headers, websocket.remote_addr)
    with gw.admission.submit(identity) as reservation:
        # The program's input is what the client sends from now on (Piston ignores ``stdin`` here).
        sub = dataclasses.replace(draft(gw.registry, init), stdin="", interactive=True)
        job = await gw.validator.check(sub, identity)
        reservation.bind(job.id)
        await gw.publisher.submit(job, "piston")
    return job


async def relay_output(gw: Gateway, job: Job, language: Language) -> None:
    """The job's events as Piston's ``stage``, ``data`` and ``exit`` messages, to its end."""
    compile_exit_sent = False
    async for batch in gw.events.follow(job.id):
        for _, event, state in batch or ():
            if event.name == "started":
                await send("stage", stage="compile" if language.compiled else "run")
            elif event.name in ("stdout", "stderr"):
                await send("data", stream=event.name, data=str(event.data.get("data", "")))
            elif event.name == "compile":
                output = str(event.data.get("output") or "")
                if output:
                    await send("data", stream="stderr", data=output)
                if event.data.get("exit_code") == 0:
                    await send("exit", stage="compile", code=0, signal=None)
                    await send("stage", stage="run")
                    compile_exit_sent = True
            elif event.name == "result":
                record = await gw.events.record(job.id)
                if language.compiled and compile_failed(record, state):
                    stage_name, outcome = "compile", compile_stage(record, state)
                else:
                    stage_name, outcome = "run", run_stage(record, state)
                if not (stage_name == "compile" and compile_exit_sent):
                    await send("exit", stage=stage_name, code=outcome["code"], signal=outcome["signal"])
                return


async def relay_input(gw: Gateway, job: Job) -> None:
    """Client messages after ``init``: stdin and signals to the job; misuse closes the socket."""
    while True:
        message = parse(await websocket.receive())
        kind = message.get("type")
        if kind == "init":
            raise Close(4000, "Already Initialized")
        if kind == "data":
            if message.get("stream") != "stdin":
                raise Close(4004, "Can only write to stdin")
            data = message.get("data")
            if not isinstance(data, str):
                raise ApiError(400, "invalid_stdin", "data must be a string")
            reply = await gw.send_stdin(await gw.lookup(job.id), data, False)
        elif kind == "signal":
            reply = await gw.send_signal(await gw.lookup(job.id), signal_number(message))
        else:
            continue  # Piston ignores messages of other types
        # Input racing the program's end is dropped: the exit message is on its way.
        if reply.status != 202 and reply.code != "not_running":
            raise ApiError(reply.status, reply.code, reply.message)


async def session(gw: Gateway) -> None:
    """Run one Piston session to its close."""
    init = await wait_init()
    job = await admit(gw, init)
    language = gw.registry.resolve(job.language, job.version)
    if language is None:  # the validator resolved it a moment ago
        raise ApiError(400, "unknown_language", "The runtime is unknown.")
    await send("runtime", language=piston_name(language), version=language.version)
    output = asyncio.ensure_future(relay_output(gw, job, language))
    incoming = asyncio.ensure_future(relay_input(gw, job))
    try:
        done, _ = await asyncio.wait((output, incoming), return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            task.result()  # a Close or ApiError from either side ends the session
    finally:
        ended = output.done() and not output.cancelled() and output.exception() is None
        for task in (output, incoming):
            task.cancel()
        with contextlib.suppress(BaseException):
            await asyncio.gather(output, incoming, return_exceptions=True)
        if not ended:
            # Nobody can feed or read the job once its socket is gone: end it now rather than
            # let it hold a sandbox (and its client's job quota) until its idle or time limit.
            # In the background, so the close is not delayed by a job still waiting to start.
            current_app.add_background_task(kill, gw, job.id)
    raise Close(4999, "Job Completed")


async def kill(gw: Gateway, job_id: str) -> None:
    """SIGKILL for an abandoned session's job; one that already ended is left alone."""
    with contextlib.suppress(Exception):
        await gw.send_signal(await gw.lookup(job_id), int(signal.SIGKILL))


@bp.websocket("/connect")
async def connect() -> None:
    """Piston's WebSocket: one interactive job per connection."""
    gw = gateway()
    await websocket.accept()
    try:
        await session(gw)
    except ApiError as exc:
        if exc.reason:
            gw.metrics.rejections.labels(exc.reason).inc()
        # A close reason is limited to 123 bytes, so the message goes first, as Piston does.
        await send("error", message=exc.message)
        await websocket.close(4002, "Notified Error")
    except Close as close:
        if close.message:
            await send("error", message=close.message)
        await websocket.close(close.code, close.reason)
