"""What the several-node tests share (issue 19): `relay serve` nodes on one PostgreSQL
database and one data dir, and small API and store reads of them. Kept here so no test
module imports another."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path
from typing import Any

import httpx

from relay.store import Store
from testkit.relay_process import RelayProcess

TOKEN = ("nodes-test-token", "nodes-test-secret-0123456789-abcdefghijk")


def node(url: str, data_dir: Path, name: str, node_timeout: float) -> RelayProcess:
    """A node (not started) on the database `url` with its data in `data_dir`."""
    return RelayProcess(data_dir, token=TOKEN, extra_args=[
        "--database-url", url, "--node-id", name, "--node-timeout", str(node_timeout)])


def api(relay: RelayProcess) -> httpx.Client:
    return httpx.Client(base_url=relay.http_url, auth=TOKEN, timeout=10)


def stream_of(relay: RelayProcess, stream_id: str) -> dict[str, Any]:
    with api(relay) as client:
        response = client.get(f"/video/v1/live-streams/{stream_id}")
        assert response.status_code == 200, response.text
        return dict(response.json()["data"])


def in_store(url: str, call: str, *args: str) -> Any:
    async def run() -> Any:
        store = await Store.open(url)
        try:
            return await getattr(store, call)(*args)
        finally:
            await store.close()
    return asyncio.run(run())


def stop_encoder(encoder: subprocess.Popen[str]) -> None:
    if encoder.poll() is None:
        encoder.kill()
    encoder.communicate()
