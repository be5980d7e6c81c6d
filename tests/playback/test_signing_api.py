"""Signing keys and playback restrictions through the API in process (httpx on the ASGI app),
and the tokens signed with the private keys it returns, checked by the PlaybackAccess the API
keeps in step: the SDK drives the same routes over a socket in
tests/integration/test_signing_sdk.py."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from relay.api import AuthLimits, create_api, signing
from relay.api.responses import (
    NewSigningKeyResponse,
    PlaybackRestrictionListResponse,
    PlaybackRestrictionResponse,
    SigningKeyListResponse,
    SigningKeyResponse,
)
from relay.api.signing import MAX_SIGNING_KEYS
from relay.playback.access import PlaybackAccess
from relay.playback.restrictions import MAX_ALLOWED_DOMAINS
from relay.playback.tokens import RefusalReason, TokenRefused
from relay.store import Store

pytestmark = pytest.mark.anyio


@pytest.fixture
def store(any_store: Store) -> Store:
    """Every test here runs on SQLite and on PostgreSQL."""
    return any_store

NOW = 1_800_000_000


async def ready() -> list[str]:
    return []


@pytest.fixture
def access() -> PlaybackAccess:
    return PlaybackAccess()


@pytest.fixture
async def client(store: Store, access: PlaybackAccess) -> AsyncIterator[httpx.AsyncClient]:
    token_id, secret = await store.create_access_token()
    app = create_api(store, ready, auth_limits=AuthLimits(failure_delay=0),
                     playback_access=access)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://relay", auth=(token_id, secret)) as http:
        yield http


def error_of(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"type", "messages"}, body
    error: dict[str, Any] = body["error"]
    return error


async def new_key(client: httpx.AsyncClient, prefix: str = "/system/v1") -> dict[str, Any]:
    answer = await client.post(f"{prefix}/signing-keys")
    assert answer.status_code == 201, answer.text
    NewSigningKeyResponse.model_validate(answer.json())
    data: dict[str, Any] = answer.json()["data"]
    return data


def sign(key: dict[str, Any], *, kid_in: str = "header", **claims: Any) -> str:
    pem = base64.b64decode(key["private_key"])
    payload = {"sub": "PID", "aud": "v", "exp": NOW + 600, **claims}
    headers = {}
    if kid_in == "header":
        headers["kid"] = key["id"]
    else:
        payload["kid"] = key["id"]
    return jwt.encode(payload, pem, algorithm="RS256", headers=headers)


async def test_create_returns_a_2048_bit_private_key_once(client: httpx.AsyncClient,
                                                          store: Store) -> None:
    key = await new_key(client)
    assert set(key) == {"id", "created_at", "private_key"} and key["created_at"].isdigit()
    pem = base64.b64decode(key["private_key"], validate=True)
    assert pem.startswith(b"-----BEGIN RSA PRIVATE KEY-----")
    private = load_pem_private_key(pem, password=None)
    assert private.key_size == 2048  # type: ignore[union-attr]

    for path in (f"/system/v1/signing-keys/{key['id']}", f"/video/v1/signing-keys/{key['id']}"):
        got = await client.get(path)
        assert got.status_code == 200
        SigningKeyResponse.model_validate(got.json())
        assert got.json()["data"] == {"id": key["id"], "created_at": key["created_at"]}
    listed = (await client.get("/video/v1/signing-keys")).json()
    SigningKeyListResponse.model_validate(listed)
    assert listed["data"] == [{"id": key["id"], "created_at": key["created_at"]}]
    # Only the public half was kept.
    stored = await store.get_signing_key(key["id"])
    assert stored is not None and "PRIVATE" not in stored.public_key
    assert stored.public_key.startswith("-----BEGIN PUBLIC KEY-----")


async def test_both_paths_share_keys_and_page_newest_first(client: httpx.AsyncClient) -> None:
    first = await new_key(client, "/video/v1")
    second = await new_key(client, "/system/v1")
    page1 = (await client.get("/system/v1/signing-keys", params={"limit": 1})).json()["data"]
    page2 = (await client.get("/video/v1/signing-keys",
                              params={"limit": 1, "page": 2})).json()["data"]
    page3 = (await client.get("/video/v1/signing-keys",
                              params={"limit": 1, "page": 3})).json()["data"]
    assert [k["id"] for k in page1 + page2] == [second["id"], first["id"]] and page3 == []
    bad = await client.get("/system/v1/signing-keys", params={"limit": 0})
    assert bad.status_code == 400 and error_of(bad)["messages"][0].startswith("limit")


async def test_delete_and_not_found(client: httpx.AsyncClient, access: PlaybackAccess) -> None:
    key = await new_key(client)
    token = sign(key)
    assert access.authorize(token, playback_id="PID", audience="v", now=NOW).key_id == key["id"]
    assert (await client.delete(f"/video/v1/signing-keys/{key['id']}")).status_code == 204
    for method in ("GET", "DELETE"):
        answer = await client.request(method, f"/system/v1/signing-keys/{key['id']}")
        assert answer.status_code == 404
        assert error_of(answer) == {"type": "not_found", "messages": ["signing key not found"]}
    # The cached grant does not outlive its key.
    with pytest.raises(TokenRefused) as refused:
        access.authorize(token, playback_id="PID", audience="v", now=NOW)
    assert refused.value.reason is RefusalReason.UNKNOWN_KEY


async def test_the_number_of_keys_is_bounded(client: httpx.AsyncClient, store: Store,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    # Filled through the store with one real key's PEM (making 100 RSA keys takes seconds).
    key = await new_key(client)
    public = (await store.get_signing_key(key["id"])).public_key  # type: ignore[union-attr]
    for _ in range(MAX_SIGNING_KEYS - 1):
        assert await store.create_signing_key(public, max_keys=MAX_SIGNING_KEYS)
    refused = await client.post("/system/v1/signing-keys")
    assert refused.status_code == 400
    assert "MAX_SIGNING_KEYS" in error_of(refused)["messages"][0]
    assert (await client.delete(f"/system/v1/signing-keys/{key['id']}")).status_code == 204
    await new_key(client)


async def test_access_loads_keys_and_restrictions_from_the_store(
        client: httpx.AsyncClient, store: Store) -> None:
    key = await new_key(client)
    made = await client.post("/video/v1/playback-restrictions", json={
        "referrer": {"allowed_domains": ["*.example.com"]}})
    restriction = made.json()["data"]
    token = sign(key, kid_in="payload", playback_restriction_id=restriction["id"])
    fresh = PlaybackAccess()  # as at a restart
    await fresh.load(store)
    grant = fresh.authorize(token, playback_id="PID", audience="v", now=NOW,
                            referer="https://a.example.com/watch")
    assert grant.restriction_id == restriction["id"]
    with pytest.raises(TokenRefused) as refused:
        fresh.authorize(token, playback_id="PID", audience="v", now=NOW,
                        referer="https://evil.test/")
    assert refused.value.reason is RefusalReason.REFERRER_NOT_ALLOWED


async def test_playback_restriction_lifecycle(client: httpx.AsyncClient,
                                              access: PlaybackAccess) -> None:
    made = await client.post("/video/v1/playback-restrictions", json={
        "referrer": {"allowed_domains": ["*.Example.com", "foo.com"],
                     "allow_no_referrer": True}})
    assert made.status_code == 201, made.text
    PlaybackRestrictionResponse.model_validate(made.json())
    data = made.json()["data"]
    assert data["referrer"] == {"allowed_domains": ["*.example.com", "foo.com"],
                                "allow_no_referrer": True}
    assert data["user_agent"] == {"allow_no_user_agent": True,
                                  "allow_high_risk_user_agent": True}
    rid = data["id"]
    assert access.restrictions[rid].allowed_domains == ("*.example.com", "foo.com")

    changed = await client.put(f"/video/v1/playback-restrictions/{rid}/referrer",
                               json={"allowed_domains": ["bar.org"]})
    assert changed.status_code == 200
    assert changed.json()["data"]["referrer"] == {"allowed_domains": ["bar.org"],
                                                  "allow_no_referrer": False}
    changed = await client.put(f"/video/v1/playback-restrictions/{rid}/user_agent",
                               json={"allow_no_user_agent": False,
                                     "allow_high_risk_user_agent": False})
    assert changed.status_code == 200
    after = changed.json()["data"]
    assert after["user_agent"] == {"allow_no_user_agent": False,
                                   "allow_high_risk_user_agent": False}
    assert after["referrer"]["allowed_domains"] == ["bar.org"]
    assert access.restrictions[rid].allow_no_user_agent is False
    assert access.restrictions[rid].allowed_domains == ("bar.org",)

    got = await client.get(f"/video/v1/playback-restrictions/{rid}")
    assert got.json()["data"] == after
    listed = (await client.get("/video/v1/playback-restrictions")).json()
    PlaybackRestrictionListResponse.model_validate(listed)
    assert [r["id"] for r in listed["data"]] == [rid]

    assert (await client.delete(f"/video/v1/playback-restrictions/{rid}")).status_code == 204
    assert rid not in access.restrictions
    for answer in (await client.get(f"/video/v1/playback-restrictions/{rid}"),
                   await client.put(f"/video/v1/playback-restrictions/{rid}/referrer",
                                    json={"allowed_domains": []})):
        assert answer.status_code == 404
        assert error_of(answer)["type"] == "not_found"


@pytest.mark.parametrize("domains", [
    ["a.*.example.com"], ["*example.com"], ["example.*"], ["*.*.example.com"],
    ["-bad.example.com"], ["exa mple.com"], ["a" * 64 + ".com"], ["https://example.com"],
    ["example.com/path"], [""], ["x" * 63 + "." + ("y" * 63 + ".") * 3 + "com"],
    [f"d{n}.example.com" for n in range(MAX_ALLOWED_DOMAINS + 1)],
])
async def test_bad_allowed_domains_are_400_naming_the_field(
        client: httpx.AsyncClient, domains: list[str]) -> None:
    answer = await client.post("/video/v1/playback-restrictions",
                               json={"referrer": {"allowed_domains": domains}})
    assert answer.status_code == 400, answer.text
    error = error_of(answer)
    assert error["type"] == "invalid_parameters"
    assert error["messages"][0].startswith("referrer.allowed_domains"), error


async def test_restriction_bodies_are_validated(client: httpx.AsyncClient) -> None:
    missing = await client.post("/video/v1/playback-restrictions", json={})
    assert missing.status_code == 400
    assert error_of(missing)["messages"][0].startswith("referrer")
    wrong = await client.post("/video/v1/playback-restrictions", json={
        "referrer": {"allowed_domains": ["*"]}, "user_agent": {"allow_no_user_agent": "no"}})
    assert wrong.status_code == 400
    assert error_of(wrong)["messages"][0].startswith("user_agent.allow_no_user_agent")


async def test_the_number_of_restrictions_is_bounded(client: httpx.AsyncClient,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(signing, "MAX_PLAYBACK_RESTRICTIONS", 2)
    body = {"referrer": {"allowed_domains": ["*"]}}
    made = [await client.post("/video/v1/playback-restrictions", json=body)
            for _ in range(3)]
    assert [m.status_code for m in made] == [201, 201, 400]
    assert "MAX_PLAYBACK_RESTRICTIONS" in error_of(made[2])["messages"][0]
    rid = made[0].json()["data"]["id"]
    assert (await client.delete(f"/video/v1/playback-restrictions/{rid}")).status_code == 204
    assert (await client.post("/video/v1/playback-restrictions", json=body)).status_code == 201


async def test_concurrent_creates_never_pass_the_bound(store: Store) -> None:
    # Each create counts and inserts in its own transaction at once: on PostgreSQL two of
    # them could each count bound - 1 without the table lock (store._lock_for_bound).
    bound = 3
    made = await asyncio.gather(*(store.create_signing_key("PEM", max_keys=bound)
                                  for _ in range(12)))
    assert sum(key is not None for key in made) == bound
    assert len(await store.all_signing_keys()) == bound
    restrictions = await asyncio.gather(*(store.create_playback_restriction(
        allowed_domains=(), allow_no_referrer=True, allow_no_user_agent=True,
        allow_high_risk_user_agent=True, max_restrictions=bound) for _ in range(12)))
    assert sum(r is not None for r in restrictions) == bound
