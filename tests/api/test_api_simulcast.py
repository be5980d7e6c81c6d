"""The simulcast-target rules of the API (issue 14): targets change only while the stream is
idle, and a target is an rtmp:// or rtmps:// URL with a host, checked at creation."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from relay.store import Store

pytestmark = pytest.mark.anyio

STREAMS = "/video/v1/live-streams"


def invalid(response: httpx.Response) -> list[str]:
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_parameters"
    messages: list[str] = error["messages"]
    return messages


async def create(client: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    response = await client.post(STREAMS, json=body)
    assert response.status_code == 201, response.text
    data: dict[str, Any] = response.json()["data"]
    return data


@pytest.mark.parametrize("url", [
    "rtmp://a.example/app", "rtmps://a.example:443/live2", "rtmp://127.0.0.1:1935/app",
    "rtmp://[::1]:1935/app", "rtmps://live-api-s.facebook.com:443/rtmp/",
])
async def test_rtmp_and_rtmps_urls_with_a_host_are_accepted(
        client: httpx.AsyncClient, url: str) -> None:
    stream = await create(client)
    response = await client.post(f"{STREAMS}/{stream['id']}/simulcast-targets",
                                 json={"url": url, "stream_key": "k"})
    assert response.status_code == 201, response.text
    target = response.json()["data"]
    assert (target["url"], target["status"]) == (url, "idle")
    assert "error_severity" not in target


@pytest.mark.parametrize("url", [
    "srt://ingest.example.com:6001",  # Relay pushes RTMP(S) only (issue 14)
    "http://a.example/app", "rtmp:///app", "rtmp://", "a.example/app", "rtmp:/a.example/app",
    "RTMP-ish://a.example/app", "rtmp://a b/app",
])
async def test_other_urls_are_400_naming_the_field(
        client: httpx.AsyncClient, url: str) -> None:
    stream = await create(client)
    messages = invalid(await client.post(f"{STREAMS}/{stream['id']}/simulcast-targets",
                                         json={"url": url}))
    assert len(messages) == 1 and messages[0].startswith("url:"), messages
    assert "rtmp:// or rtmps://" in messages[0]
    # The same rule inside a create-live-stream body, naming the nested field.
    messages = invalid(await client.post(STREAMS, json={"simulcast_targets": [
        {"url": "rtmp://fine.example/app"}, {"url": url}]}))
    assert len(messages) == 1 and messages[0].startswith("simulcast_targets[1].url:"), messages
    assert len((await client.get(STREAMS)).json()["data"]) == 1  # nothing was created


async def test_targets_are_added_and_deleted_only_while_idle(
        client: httpx.AsyncClient, store: Store) -> None:
    stream = await create(client, simulcast_targets=[{"url": "rtmp://a.example/app"}])
    stream_id, target = stream["id"], stream["simulcast_targets"][0]["id"]
    targets = f"{STREAMS}/{stream_id}/simulcast-targets"
    await store.session_connected(stream_id)
    # Connected, no media yet: the store cannot tell this from idle, so the add is taken
    # (the live session keeps the targets it started with; see the report of issue 14).
    added = await client.post(targets, json={"url": "rtmp://b.example/app"})
    assert added.status_code == 201, added.text
    asset = await store.session_recording(stream_id, "rtmp", None)
    assert asset is not None
    for step in ("recording", "active", "disconnected (reconnect window)"):
        if step == "active":
            await store.session_active(stream_id)
        elif step.startswith("disconnected"):
            await store.session_disconnected(stream_id, asset.id, None)
        [message] = invalid(await client.post(targets, json={"url": "rtmp://c.example/a"}))
        assert message.startswith("simulcast targets can only be added while the live "
                                  "stream is idle"), (step, message)
        [message] = invalid(await client.delete(f"{targets}/{target}"))
        assert message.startswith("simulcast targets can only be deleted while the live "
                                  "stream is idle"), (step, message)
    got = (await client.get(f"{STREAMS}/{stream_id}")).json()["data"]
    assert len(got["simulcast_targets"]) == 2
    await store.session_ended(stream_id, asset.id)
    assert (await client.delete(f"{targets}/{target}")).status_code == 204
    added = await client.post(targets, json={"url": "rtmps://c.example/app"})
    assert added.status_code == 201, added.text
    urls = [t["url"] for t in
            (await client.get(f"{STREAMS}/{stream_id}")).json()["data"]["simulcast_targets"]]
    assert urls == ["rtmp://b.example/app", "rtmps://c.example/app"]


async def test_deleting_a_target_of_a_missing_stream_is_404(client: httpx.AsyncClient) -> None:
    response = await client.delete(f"{STREAMS}/missing/simulcast-targets/missing")
    assert response.status_code == 404
    assert response.json()["error"]["type"] == "not_found"
