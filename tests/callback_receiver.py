"""A local HTTP server that plays a callback receiver: it records every request it gets.

``/flaky/...`` paths answer 500 to the first two requests of each path, then 200, so a test
sees a delivery retried; every other path answers 200 at once.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Delivery:
    """One request the receiver got, and the status it answered."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    answered: int


@dataclass
class Receiver:
    """The running server and what it has received so far."""

    server: ThreadingHTTPServer
    deliveries: list[Delivery] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def wait(self, path: str, count: int, timeout: float = 30) -> list[Delivery]:
        """The requests to ``path`` once there are ``count`` of them; AssertionError after ``timeout``."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            with self.lock:
                got = [d for d in self.deliveries if d.path == path]
            if len(got) >= count:
                return got
            time.sleep(0.05)
        raise AssertionError(f"{path}: {len(got)} deliveries after {timeout} s, wanted {count}")


@contextlib.contextmanager
def receiving() -> Iterator[Receiver]:
    """A receiver listening on a free loopback port for the duration of the block."""
    state: dict[str, Receiver] = {}

    class Handler(BaseHTTPRequestHandler):
        def handle_any(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            rec = state["r"]
            with rec.lock:
                earlier = [d for d in rec.deliveries if d.path == self.path]
                status = 500 if self.path.startswith("/flaky/") and len(earlier) < 2 else 200
                rec.deliveries.append(Delivery(self.command, self.path, dict(self.headers), body, status))
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_POST = do_PUT = handle_any

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state["r"] = Receiver(server)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state["r"]
    finally:
        server.shutdown()
        server.server_close()
