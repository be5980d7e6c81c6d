"""Signing keys and playback restrictions through the official mux-python SDK against a real
`relay serve`: `SigningKeysApi` (/system/v1), `URLSigningKeysApi` (/video/v1) and
`PlaybackRestrictionsApi`, with the SDK's own response validation on; the keys and
restrictions outlive a restart, and a token signed with a returned private key verifies
against what the store kept."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Iterator
from pathlib import Path

import jwt
import mux_python as mux
import pytest
from mux_python.rest import ApiException, NotFoundException

from relay.playback.access import PlaybackAccess
from relay.playback.sessions import SESSION_SECRET_FILE
from relay.playback.tokens import RefusalReason, TokenRefused
from relay.store import Store
from testkit.relay_process import RelayProcess
from tests.conftest import sqlite_url
from tests.integration.helpers.sdk import TOKEN, sdk


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def relay(data_dir: Path) -> Iterator[RelayProcess]:
    with RelayProcess(data_dir, token=TOKEN) as process:
        yield process


def stored_access(data_dir: Path) -> PlaybackAccess:
    """What a restarted Relay would check tokens with: loaded from the store."""
    async def load() -> PlaybackAccess:
        store = await Store.open(sqlite_url(data_dir / "relay.db"))
        try:
            access = PlaybackAccess()
            await access.load(store)
            return access
        finally:
            await store.close()
    return asyncio.run(load())


def test_signing_keys_through_both_sdk_apis(relay: RelayProcess, data_dir: Path) -> None:
    client = sdk(relay.http_url)
    system, video = mux.SigningKeysApi(client), mux.URLSigningKeysApi(client)

    first = system.create_signing_key().data
    second = video.create_url_signing_key().data
    for key in (first, second):
        assert key.id and key.created_at.isdigit() and key.private_key
        assert base64.b64decode(key.private_key).startswith(b"-----BEGIN RSA PRIVATE KEY")

    # Get and list on either path; never a private key.
    for getter in (system.get_signing_key, video.get_url_signing_key):
        got = getter(first.id).data
        assert (got.id, got.created_at, got.private_key) == (first.id, first.created_at, None)
    listed = system.list_signing_keys().data
    assert [k.id for k in listed] == [second.id, first.id]
    assert all(k.private_key is None for k in listed)
    assert [k.id for k in video.list_url_signing_keys(limit=1, page=2).data] == [first.id]
    assert video.list_url_signing_keys(limit=1, page=3).data == []

    # A token signed with the returned private key verifies against the kept public key.
    token = jwt.encode({"sub": "PID", "aud": "v", "exp": int(time.time()) + 600},
                       base64.b64decode(first.private_key), algorithm="RS256",
                       headers={"kid": first.id})
    assert stored_access(data_dir).authorize(
        token, playback_id="PID", audience="v", now=time.time()).key_id == first.id

    # Delete on one path, gone on both.
    assert system.delete_signing_key(first.id) is None
    for getter in (system.get_signing_key, video.get_url_signing_key):
        with pytest.raises(NotFoundException):
            getter(first.id)
    with pytest.raises(NotFoundException):
        video.delete_url_signing_key(first.id)
    with pytest.raises(TokenRefused) as refused:
        stored_access(data_dir).authorize(token, playback_id="PID", audience="v",
                                          now=time.time())
    assert refused.value.reason is RefusalReason.UNKNOWN_KEY
    assert (data_dir / SESSION_SECRET_FILE).stat().st_size == 32

    # Keys outlive a restart.
    relay.stop()
    with RelayProcess(data_dir, token=TOKEN) as again:
        kept = mux.SigningKeysApi(sdk(again.http_url)).list_signing_keys().data
        assert [k.id for k in kept] == [second.id]


def test_playback_restrictions_through_the_sdk(relay: RelayProcess) -> None:
    restrictions = mux.PlaybackRestrictionsApi(sdk(relay.http_url))
    created = restrictions.create_playback_restriction(mux.CreatePlaybackRestrictionRequest(
        referrer=mux.ReferrerDomainRestriction(allowed_domains=["*.example.com"],
                                               allow_no_referrer=False),
        user_agent=mux.UserAgentRestrictionRequest(allow_no_user_agent=True,
                                                   allow_high_risk_user_agent=False))).data
    assert created.referrer.allowed_domains == ["*.example.com"]
    assert created.referrer.allow_no_referrer is False
    assert created.user_agent.allow_high_risk_user_agent is False
    assert created.created_at == created.updated_at

    changed = restrictions.update_referrer_domain_restriction(
        created.id, mux.UpdateReferrerDomainRestrictionRequest(
            allowed_domains=["*.example.com", "example.com"], allow_no_referrer=True)).data
    assert changed.referrer.allowed_domains == ["*.example.com", "example.com"]
    assert changed.referrer.allow_no_referrer is True
    changed = restrictions.update_user_agent_restriction(
        created.id, mux.UpdateUserAgentRestrictionRequest(
            allow_no_user_agent=False, allow_high_risk_user_agent=True)).data
    assert changed.user_agent.allow_no_user_agent is False
    assert changed.referrer.allow_no_referrer is True

    got = restrictions.get_playback_restriction(created.id).data
    assert got.to_dict() == changed.to_dict()
    assert [r.id for r in restrictions.list_playback_restrictions().data] == [created.id]

    with pytest.raises(ApiException) as bad:
        restrictions.update_referrer_domain_restriction(
            created.id, mux.UpdateReferrerDomainRestrictionRequest(
                allowed_domains=["a.*.example.com"]))
    assert bad.value.status == 400 and "allowed_domains" in bad.value.body

    assert restrictions.delete_playback_restriction(created.id) is None
    with pytest.raises(NotFoundException):
        restrictions.get_playback_restriction(created.id)
