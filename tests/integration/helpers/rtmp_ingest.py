"""What test_rtmp_ingest.py shares with other test modules: kept here so no test module imports
another."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from relay.store import Store
from testkit.relay_process import RelayProcess
from tests.conftest import sqlite_url

TOKEN = ("ingest-test", "ingest-test-secret-0123456789-abcdefghij")


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


def start_relay(data_dir: Path, *extra: str) -> RelayProcess:
    return RelayProcess(data_dir, token=TOKEN, extra_args=list(extra)).start()


@pytest.fixture
def relay(data_dir: Path) -> Iterator[RelayProcess]:
    process = start_relay(data_dir)
    try:
        yield process
    finally:
        assert process.stop() == 0, process.log


def api(relay: RelayProcess) -> httpx.Client:
    return httpx.Client(base_url=relay.http_url, auth=TOKEN, timeout=10)


def create_stream(relay: RelayProcess, **body: Any) -> dict[str, Any]:
    """A stream with 2 s segments (`reduced`) unless `body` says otherwise: a stream becomes
    active with its first playable segment, so short pushes still get there."""
    with api(relay) as client:
        response = client.post("/video/v1/live-streams",
                               json={"playback_policies": ["public"],
                                     "new_asset_settings": {"playback_policies": ["public"]},
                                     "latency_mode": "reduced", **body})
        assert response.status_code == 201, response.text
        return dict(response.json()["data"])


def get_stream(relay: RelayProcess, stream_id: str) -> dict[str, Any]:
    with api(relay) as client:
        response = client.get(f"/video/v1/live-streams/{stream_id}")
        assert response.status_code == 200, (response.status_code, response.text)
        return dict(response.json()["data"])


def wait_until(check: Callable[[], bool], timeout: float = 20, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what or check}")


def wait_status(relay: RelayProcess, stream_id: str, status: str, timeout: float = 20) -> None:
    wait_until(lambda: get_stream(relay, stream_id)["status"] == status, timeout,
               f"status {status}")


def events(data_dir: Path, stream_id: str) -> list[str]:
    async def read() -> list[str]:
        store = await Store.open(sqlite_url(data_dir / "relay.db"))
        try:
            found = await store.list_events(limit=1000)
        finally:
            await store.close()
        return [e.type for e in found
                if e.object_id == stream_id or e.data.get("live_stream_id") == stream_id]
    return asyncio.run(read())


def publish_url(relay: RelayProcess, key: str, scheme: str = "rtmp") -> str:
    return f"{relay.urls[scheme]}/{key}"
