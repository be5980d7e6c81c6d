"""What peers send that one database stores and another refuses: the API answers the same on
SQLite and PostgreSQL (a NUL in text is a 400 for a body, nothing found for a lookup), never
a 500."""

from __future__ import annotations

import json

import httpx
import pytest

from relay.store import Store

pytestmark = pytest.mark.anyio


@pytest.fixture
def store(any_store: Store) -> Store:
    return any_store


def post_json(client: httpx.AsyncClient, path: str, body: object) -> object:
    # json.dumps spells NUL as \u0000, as any JSON client does.
    return client.post(path, content=json.dumps(body),
                       headers={"content-type": "application/json"})


@pytest.mark.parametrize("body", [
    {"passthrough": "a\x00b"},
    {"new_asset_settings": {"passthrough": "\x00"}},
    {"meta": {"title": "t\x00"}},
    {"reconnect_slate_url": "http://x/\x00"},
])
async def test_a_nul_in_a_body_is_a_400(client: httpx.AsyncClient, body: object) -> None:
    answer = await post_json(client, "/video/v1/live-streams", body)
    assert isinstance(answer, httpx.Response)
    assert answer.status_code == 400, answer.text
    assert "NUL" in answer.text


@pytest.mark.parametrize(("path", "body"), [
    ("/video/v1/live-streams", {"unknown\x00key": "v", "other": ["\x00"]}),
    ("/video/v1/playback-restrictions", {"referrer": {"allowed_domains": ["*"]},
                                         "ignored": {"\x00": "\x00"}}),
])
async def test_a_nul_in_an_ignored_key_is_ignored(client: httpx.AsyncClient, path: str,
                                                  body: object) -> None:
    """Unknown keys are ignored, as the OpenAPI document allows; what they hold never
    reaches the store, so a NUL in them is no reason to refuse the body."""
    answer = await post_json(client, path, body)
    assert isinstance(answer, httpx.Response)
    assert answer.status_code == 201, answer.text


async def test_a_nul_in_an_update_is_a_400(client: httpx.AsyncClient) -> None:
    created = await client.post("/video/v1/live-streams", json={})
    stream_id = created.json()["data"]["id"]
    answer = await client.patch(f"/video/v1/live-streams/{stream_id}",
                                content=json.dumps({"passthrough": "\x00"}),
                                headers={"content-type": "application/json"})
    assert answer.status_code == 400, answer.text


@pytest.mark.parametrize("path", [
    "/video/v1/live-streams/a%00b",
    "/video/v1/live-streams/a%00b/simulcast-targets/c%00d",
    "/video/v1/assets/a%00b",
    "/video/v1/playback-ids/a%00b",
    "/system/v1/signing-keys/a%00b",
    "/video/v1/playback-restrictions/a%00b",
])
async def test_a_nul_in_an_id_finds_nothing(client: httpx.AsyncClient, path: str) -> None:
    assert (await client.get(path)).status_code == 404


@pytest.mark.parametrize("query", [
    "/video/v1/live-streams?stream_key=a%00b",
    "/video/v1/assets?live_stream_id=a%00b",
    "/system/v1/webhook-events?object_id=a%00b",
])
async def test_a_nul_in_a_filter_finds_nothing(client: httpx.AsyncClient, query: str) -> None:
    answer = await client.get(query)
    assert answer.status_code in (200, 404), answer.text
    if answer.status_code == 200:
        assert answer.json()["data"] == []


async def test_a_nul_in_the_token_id_is_a_401(client: httpx.AsyncClient) -> None:
    answer = await client.get("/video/v1/live-streams", auth=("a\x00b", "secret"))
    assert answer.status_code == 401
