"""The gate's server: Docker Engine API in, the allowed subset out to the real engine.

Every downstream connection (the executor's Docker SDK) gets its own upstream connection to
the engine, opened on its first allowed request and kept alive with it, so a request costs
one parse and one copy on top of the direct path. An attach is answered ``101`` by the
engine; from then on the two sockets are spliced and bytes flow both ways untouched (the
agent's job messages on stdin, its JSON lines back). Refusals are ``403`` with Docker's own
error shape (``{"message": ...}``), which the SDK raises as ``APIError`` with that message.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import h11

from app.config import Settings
from app.gate import policy
from app.languages import Registry
from app.metrics import Metrics

log = logging.getLogger(__name__)

MAX_BODY = 1 << 20  # a create body with the seccomp profile is about 8 KiB
CHUNK = 1 << 16
HOP_BY_HOP = {b"connection", b"keep-alive", b"transfer-encoding", b"upgrade", b"host", b"content-length"}


class NoSuchContainer(Exception):
    """A path names a container the engine does not know: answered 404, like the engine."""


class Upstream:
    """One HTTP/1.1 connection to the engine, used for one downstream connection's requests."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.conn = h11.Connection(h11.CLIENT)

    async def next_event(self) -> Any:
        return await _next_event(self.conn, self.reader)

    def close(self) -> None:
        self.writer.close()


async def _next_event(conn: h11.Connection, reader: asyncio.StreamReader) -> Any:
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(await reader.read(CHUNK))
            continue
        return event


def runtime_versions(engine_runtimes: dict[str, Any], wanted: dict[str, str]) -> dict[str, dict[str, str]]:
    """Each allowed runtime's engine name and version (``<binary> --version``), ``unknown`` if unreadable."""
    versions: dict[str, dict[str, str]] = {}
    for engine_name, name in wanted.items():
        path = str((engine_runtimes.get(engine_name) or {}).get("path") or engine_name)
        binary = shutil.which(path)
        version = "unknown"
        if binary:
            try:
                out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10).stdout
                match = re.search(r"version\s+(\S+)", out)
                version = match[1] if match else version
            except (OSError, subprocess.SubprocessError):
                pass
        versions[name] = {"engine_runtime": engine_name, "version": version}
    return versions


class Gate:
    """Serves the allowed subset of the Docker Engine API on its own socket(s)."""

    def __init__(self, settings: Settings, registry: Registry, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.images = {language.image: language for language in registry}
        self.runtimes = {"runc": "runc", settings.gvisor_runtime: "runsc"}
        self.uids = range(settings.sandbox_uid_base, settings.sandbox_uid_base + settings.sandbox_uid_count)
        self.sandboxes: dict[str, int] = {}  # full container id -> uid, for the sandboxes alive now
        self.versions: dict[str, dict[str, str]] = {}
        self.servers: list[asyncio.Server] = []
        self.serving = False
        self._connections: set[asyncio.Task[None]] = set()

    # --- lifecycle ------------------------------------------------------------------------------
    async def start(self) -> None:
        """Learn the live sandboxes and the runtimes' versions, then listen."""
        info = await self.engine_json("GET", "/info")
        self.versions = await asyncio.to_thread(runtime_versions, info.get("Runtimes") or {}, self.runtimes)
        for name, runtime in self.versions.items():
            self.metrics.sandbox_runtime.labels(name, runtime["engine_runtime"], runtime["version"]).set(1)
        filters = quote(json.dumps({"label": ["=".join(policy.SANDBOX_LABEL)]}))
        for container in await self.engine_json("GET", f"/containers/json?all=1&filters={filters}"):
            uid = str((container.get("Labels") or {}).get("runbox.uid", ""))
            if uid.isdigit():
                self.sandboxes[container["Id"]] = int(uid)
        if self.settings.gate_socket:
            path = self.settings.gate_socket
            os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            self.servers.append(await asyncio.start_unix_server(self._accept, path=path))
            os.chmod(path, 0o660)
            if self.settings.gate_socket_gid >= 0:
                os.chown(path, -1, self.settings.gate_socket_gid)
        if self.settings.gate_tcp:
            host, _, port = self.settings.gate_tcp.rpartition(":")
            self.servers.append(await asyncio.start_server(self._accept, host or "127.0.0.1", int(port)))
        self.serving = True
        log.info("docker gate serving", extra={"socket": self.settings.gate_socket, "tcp": self.settings.gate_tcp,
                                               "runtimes": self.versions, "sandboxes": len(self.sandboxes)})

    async def close(self) -> None:
        self.serving = False
        for server in self.servers:
            server.close()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        if self.settings.gate_socket:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.settings.gate_socket)

    async def info(self) -> dict[str, Any]:
        """The engine's ``/info`` reduced to what an executor checks: the sandbox runtimes it has."""
        info = await self.engine_json("GET", "/info") or {}
        runtimes = {name: spec for name, spec in (info.get("Runtimes") or {}).items() if name in self.runtimes}
        return {key: info.get(key) for key in ("ServerVersion", "OSType", "Architecture")} | {"Runtimes": runtimes}

    async def open_engine(self) -> Upstream:
        url = self.settings.engine_url
        if url.startswith("unix://"):
            reader, writer = await asyncio.open_unix_connection(url.removeprefix("unix://"))
        else:
            host, _, port = url.split("://", 1)[-1].rpartition(":")
            reader, writer = await asyncio.open_connection(host, int(port))
        return Upstream(reader, writer)

    async def engine_json(self, method: str, target: str) -> Any:
        """One request of the gate's own to the engine; the decoded JSON answer (or None)."""
        upstream = await self.open_engine()
        try:
            status, body = await self._exchange(upstream, method, target, b"", [])
        finally:
            upstream.close()
        if status >= 400:
            return None
        return json.loads(body) if body else None

    async def _exchange(
        self, upstream: Upstream, method: str, target: str, body: bytes, headers: list[tuple[bytes, bytes]]
    ) -> tuple[int, bytes]:
        """Send a request and read its whole (small) answer."""
        self._send_request(upstream, method, target, body, headers)
        await upstream.writer.drain()
        response = await upstream.next_event()
        if not isinstance(response, h11.Response):
            raise ConnectionError(f"the engine answered {response!r}")
        chunks = []
        while True:
            event = await upstream.next_event()
            if isinstance(event, h11.Data):
                chunks.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                break
            else:
                raise ConnectionError(f"the engine answered {event!r}")
        if upstream.conn.our_state is h11.DONE and upstream.conn.their_state is h11.DONE:
            upstream.conn.start_next_cycle()
        return response.status_code, b"".join(chunks)

    @staticmethod
    def _send_request(
        upstream: Upstream, method: str, target: str, body: bytes, headers: list[tuple[bytes, bytes]]
    ) -> None:
        conn = upstream.conn
        out = [(b"Host", b"docker"), *headers, (b"Content-Length", str(len(body)).encode())]
        data = conn.send(h11.Request(method=method, target=target, headers=out))
        data += conn.send(h11.Data(data=body)) if body else b""
        data += conn.send(h11.EndOfMessage())
        upstream.writer.write(data)

    # --- one downstream connection --------------------------------------------------------------
    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._connections.add(task)
            task.add_done_callback(self._connections.discard)
        await self._serve(reader, writer)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_BODY)
        upstream: Upstream | None = None
        try:
            while True:
                event = await _next_event(conn, reader)
                if not isinstance(event, h11.Request):
                    return  # the client closed (or sent garbage): nothing to answer
                body = await self._read_body(conn, reader)
                if body is None:
                    self._refuse(conn, writer, policy.Refused("bad_request", "request body over 1 MiB"))
                    return
                try:
                    request = policy.classify(event.method.decode(), event.target.decode(), time.time())
                    self.metrics.gate_requests.labels(request.endpoint).inc()
                    if request.endpoint == "runtimes":
                        self._answer(conn, writer, 200, self.versions)
                    elif request.endpoint == "info":
                        self._answer(conn, writer, 200, await self.info())
                    else:
                        if upstream is None:
                            upstream = await self.open_engine()
                        upgraded = await self._forward(conn, reader, writer, upstream, event, request, body)
                        if upgraded:
                            return
                except policy.Refused as refused:
                    self._refuse(conn, writer, refused)
                except NoSuchContainer as missing:
                    self._answer(conn, writer, 404, {"message": str(missing)})
                await writer.drain()
                if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
                    return
                conn.start_next_cycle()
        except (ConnectionError, h11.ProtocolError, OSError) as exc:
            log.debug("gate connection ended", extra={"error": repr(exc)})
        finally:
            if upstream is not None:
                upstream.close()
            writer.close()

    async def _read_body(self, conn: h11.Connection, reader: asyncio.StreamReader) -> bytes | None:
        chunks: list[bytes] = []
        size = 0
        while True:
            event = await _next_event(conn, reader)
            if isinstance(event, h11.Data):
                size += len(event.data)
                if size > MAX_BODY:
                    return None
                chunks.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                return b"".join(chunks)
            else:
                raise ConnectionError(f"unexpected {event!r}")

    def _answer(self, conn: h11.Connection, writer: asyncio.StreamWriter, status: int, payload: Any) -> None:
        body = json.dumps(payload).encode()
        headers = [(b"Content-Type", b"application/json"), (b"Content-Length", str(len(body)).encode())]
        writer.write(conn.send(h11.Response(status_code=status, headers=headers)))
        writer.write(conn.send(h11.Data(data=body)) + conn.send(h11.EndOfMessage()))

    def _refuse(self, conn: h11.Connection, writer: asyncio.StreamWriter, refused: policy.Refused) -> None:
        self.metrics.gate_refusals.labels(refused.reason).inc()
        log.warning("docker gate refused a request", extra={"reason": refused.reason, "detail": refused.message})
        status = 400 if refused.reason == "bad_request" else 403
        self._answer(conn, writer, status, {"message": f"runbox gate: {refused.message}", "reason": refused.reason})

    async def _resolve(self, upstream: Upstream, reference: str) -> str:
        """The full id of the sandbox a path names (id, prefix or name), or refuse."""
        if reference in self.sandboxes:
            return reference
        status, body = await self._exchange(upstream, "GET", f"/containers/{quote(reference)}/json", b"", [])
        if status == 404:
            raise NoSuchContainer(f"No such container: {reference}")
        attrs = json.loads(body) if status == 200 else {}
        labels = (attrs.get("Config") or {}).get("Labels") or {}
        if not policy.is_sandbox(labels):
            raise policy.Refused("not_a_sandbox", f"container {reference} is not a runbox sandbox")
        uid = str(labels.get("runbox.uid", ""))
        self.sandboxes[attrs["Id"]] = int(uid) if uid.isdigit() else -1
        return str(attrs["Id"])

    async def _forward(
        self,
        conn: h11.Connection,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        upstream: Upstream,
        event: h11.Request,
        request: policy.Request,
        body: bytes,
    ) -> bool:
        """Pass an allowed request to the engine and its answer back; True once a stream is spliced."""
        target = event.target.decode()
        on_success: Callable[[bytes], None] | None = None
        if request.endpoint == "create":
            try:
                sandbox = policy.check_create(
                    json.loads(body or b"null"), self.images, self.runtimes, self.uids, self.settings.agent_socket_dir
                )
            except ValueError as exc:
                raise policy.Refused("bad_request", "the create body is not JSON") from exc
            if sandbox.uid in self.sandboxes.values():
                raise policy.Refused("uid_in_use", f"uid {sandbox.uid} belongs to another live sandbox")
            self.sandboxes["creating:" + str(sandbox.uid)] = sandbox.uid

            def created(answer: bytes, uid: int = sandbox.uid) -> None:
                self.sandboxes[json.loads(answer)["Id"]] = uid

            on_success = created
        elif request.endpoint == "events":
            assert request.container is not None
            full = await self._resolve(upstream, request.container)
            target = policy.events_target(target.partition("/events")[0], request.query, full)
        elif request.container is not None:
            full = await self._resolve(upstream, request.container)
            prefix, _, rest = target.partition("/containers/" + request.container)
            target = f"{prefix}/containers/{full}{rest}"
            if request.endpoint == "remove":
                def removed(_answer: bytes, container: str = full) -> None:
                    self.sandboxes.pop(container, None)

                on_success = removed
        headers = [(k, v) for k, v in event.headers if k.lower() not in HOP_BY_HOP]
        if request.endpoint == "attach":
            headers += [(b"Connection", b"Upgrade"), (b"Upgrade", b"tcp")]
        try:
            self._send_request(upstream, event.method.decode(), target, body, headers)
            await upstream.writer.drain()
            return await self._relay(conn, reader, writer, upstream, on_success)
        finally:
            if request.endpoint == "create":
                self.sandboxes.pop("creating:" + str(sandbox.uid), None)

    async def _relay(
        self,
        conn: h11.Connection,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        upstream: Upstream,
        on_success: Callable[[bytes], None] | None,
    ) -> bool:
        response = await upstream.next_event()
        if isinstance(response, h11.InformationalResponse) and response.status_code == 101:
            writer.write(conn.send(h11.InformationalResponse(status_code=101, headers=response.headers)))
            await writer.drain()
            await self._splice(conn, reader, writer, upstream)
            return True
        if not isinstance(response, h11.Response):
            raise ConnectionError(f"the engine answered {response!r}")
        headers = [(k, v) for k, v in response.headers if k.lower() not in HOP_BY_HOP]
        length = dict(response.headers).get(b"content-length")
        if length is not None:
            headers.append((b"Content-Length", length))
        writer.write(conn.send(h11.Response(status_code=response.status_code, headers=headers)))
        kept: list[bytes] = []
        while True:
            event = await upstream.next_event()
            if isinstance(event, h11.Data):
                if on_success is not None:
                    kept.append(bytes(event.data))
                writer.write(conn.send(h11.Data(data=event.data)))
                await writer.drain()
            elif isinstance(event, h11.EndOfMessage):
                writer.write(conn.send(h11.EndOfMessage()))
                break
            else:
                raise ConnectionError(f"the engine answered {event!r}")
        if on_success is not None and 200 <= response.status_code < 300:
            on_success(b"".join(kept))
        if upstream.conn.our_state is h11.DONE and upstream.conn.their_state is h11.DONE:
            upstream.conn.start_next_cycle()
        return False

    async def _splice(
        self, conn: h11.Connection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, upstream: Upstream
    ) -> None:
        """Copy bytes both ways until the engine's side ends (the container's stream closed)."""
        early, _ = conn.trailing_data
        if early:
            upstream.writer.write(early)
        late, _ = upstream.conn.trailing_data
        if late:
            writer.write(late)

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(CHUNK):
                    dst.write(data)
                    await dst.drain()
                if dst.can_write_eof():
                    dst.write_eof()
            except (ConnectionError, OSError):
                pass

        down = asyncio.create_task(pump(reader, upstream.writer))
        try:
            await pump(upstream.reader, writer)
        finally:
            down.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await down
