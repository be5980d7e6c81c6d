"""The real API app (`relay.api.create_api`) on a real SQLite store, called in process over
ASGI, for the `api_json` and `api_query` harnesses (this module is not a harness itself).

Requests carry a valid access token, so every input reaches routing and validation. The
checks on each answer: no exception out of the app, no 5xx, and every body in the Mux shape
(`{"data": ...}` for a success, `{"error": {"type": str, "messages": [str, ...]}}` for an
error, nothing for 204; a redirect, which Starlette sends for a trailing slash, is not
checked).
"""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import tempfile
from collections.abc import MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from fuzz.common import Finding
from relay.api import create_api
from relay.store import Store

LIVE_STREAMS = "/video/v1/live-streams"


@dataclass
class Answer:
    status: int
    body: Any  # the decoded JSON, or None for an empty body


async def _ready() -> list[str]:
    return []


class ApiUnderTest:
    """One event loop, one store in a temporary directory, one app, one live stream."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.directory = tempfile.mkdtemp(prefix="relay-fuzz-api-")
        try:
            self.store = self.loop.run_until_complete(
                Store.open(f"sqlite+aiosqlite:///{Path(self.directory) / 'relay.db'}"))
        except BaseException:
            self._release()
            raise
        try:
            token_id, secret = self.loop.run_until_complete(self.store.create_access_token())
            credentials = base64.b64encode(f"{token_id}:{secret}".encode()).decode()
            self.authorization = f"Basic {credentials}".encode()
            self.app: FastAPI = create_api(self.store, _ready)
            created = self.request("POST", LIVE_STREAMS, body=b"{}")
            if created.status != 201:
                raise RuntimeError(f"could not create the harness's live stream: {created}")
            self.stream_id: str = created.body["data"]["id"]
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Close the store and the loop, remove the directory. A fuzzing process keeps its
        one instance to the end; pytest, replaying vectors among other tests, closes it
        after each (tests/fuzz/test_vectors.py): a store left open there is garbage
        collected open, an aiosqlite ResourceWarning in some later test."""
        try:
            self.loop.run_until_complete(self.store.close())
        finally:
            self._release()

    def _release(self) -> None:
        self.loop.close()
        shutil.rmtree(self.directory, ignore_errors=True)

    def request(self, method: str, path: str, *, query: bytes = b"",
                body: bytes = b"") -> Answer:
        """Send one request; raise Finding for a 5xx or a body not in the Mux shape."""
        return self.loop.run_until_complete(self._request(method, path, query, body))

    async def _request(self, method: str, path: str, query: bytes, body: bytes) -> Answer:
        scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": path,
            "raw_path": path.encode("utf-8", "surrogateescape"),
            "query_string": query,
            "root_path": "",
            "headers": [
                (b"host", b"relay.test"),
                (b"authorization", self.authorization),
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
            "client": ("127.0.0.1", 40000),
            "server": ("relay.test", 80),
        }
        incoming = [{"type": "http.request", "body": body, "more_body": False}]
        sent: list[MutableMapping[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return incoming.pop(0) if incoming else {"type": "http.disconnect"}

        async def send(message: MutableMapping[str, Any]) -> None:
            sent.append(message)

        await self.app(scope, receive, send)
        start = next(m for m in sent if m["type"] == "http.response.start")
        status = int(start["status"])
        raw = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
        if status >= 500:
            raise Finding(f"{method} {path[:80]!r} answered {status}: {raw[:300]!r}")
        return Answer(status, _checked_body(status, raw))


def _checked_body(status: int, raw: bytes) -> Any:
    if 300 <= status < 400:
        return None  # Starlette's redirect to the path without its trailing slash
    if status == 204:
        if raw:
            raise Finding(f"204 with a body: {raw[:200]!r}")
        return None
    try:
        body = json.loads(raw)
    except ValueError:
        raise Finding(f"{status} body is not JSON: {raw[:200]!r}") from None
    if status < 400:
        if not isinstance(body, dict) or "data" not in body:
            raise Finding(f"{status} body is not {{'data': ...}}: {raw[:200]!r}")
        return body
    error = body.get("error") if isinstance(body, dict) else None
    if (not isinstance(error, dict) or not isinstance(error.get("type"), str)
            or not isinstance(error.get("messages"), list)
            or not all(isinstance(m, str) for m in error["messages"])):
        raise Finding(f"{status} body is not the Mux error envelope: {raw[:200]!r}")
    return body


_API: ApiUnderTest | None = None


def api() -> ApiUnderTest:
    """The process's API under test, made on first use."""
    global _API
    if _API is None:
        _API = ApiUnderTest()
    return _API


def close_api() -> None:
    """Close the process's API under test, if one was made (the next `api()` makes a new
    one)."""
    global _API
    under_test, _API = _API, None
    if under_test is not None:
        under_test.close()
