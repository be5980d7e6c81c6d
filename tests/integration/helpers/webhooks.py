"""What test_webhooks.py shares with other test modules: kept here so no test module imports
another."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

SECRET = "receiver-secret-0123"


class Receiver:
    """A webhook endpoint: `status()` decides each answer; `events` keeps valid ones,
    `deliveries` every request as it came (`body`: the raw body as text, and `headers`)."""

    def __init__(self) -> None:
        self.status: Callable[[], int] = lambda: 200
        #: Seconds each answer takes (the server answers requests in parallel threads).
        self.delay = 0.0
        self.events: list[dict[str, Any]] = []
        self.deliveries: list[dict[str, Any]] = []
        self.bad_signatures = 0
        self.requests = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.deliveries.append({"body": body.decode(),
                                            "headers": dict(self.headers.items())})
                receiver.receive(self.headers.get("Mux-Signature", ""), body)
                time.sleep(receiver.delay)
                code = receiver.status()
                self.send_response(code)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def receive(self, header: str, body: bytes) -> None:
        self.requests += 1
        fields = dict(part.split("=", 1) for part in header.split(",") if "=" in part)
        expected = hmac.new(SECRET.encode(), fields.get("t", "").encode() + b"." + body,
                            hashlib.sha256).hexdigest()
        fresh = abs(time.time() - int(fields.get("t", "0"))) < 300
        if not (hmac.compare_digest(fields.get("v1", ""), expected) and fresh):
            self.bad_signatures += 1
            return
        self.events.append(json.loads(body))

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    made = Receiver()
    try:
        yield made
    finally:
        made.close()


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)
