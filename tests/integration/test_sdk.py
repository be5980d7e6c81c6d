"""Every API endpoint through the official mux-python SDK against `relay serve`.

The server runs as a subprocess on free ports; the SDK only has its host changed. Assets
are made by the ingest path (a later part of Relay), so this test seeds two recordings
through the store, as ingest will, while the server runs.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import mux_python as mux
import pytest
from mux_python.rest import ApiException, NotFoundException, UnauthorizedException

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


def seed_recording(data_dir: Path, live_stream_id: str) -> str:
    async def create() -> str:
        store = await Store.open(sqlite_url(data_dir / "relay.db"))
        try:
            asset = await store.create_asset(
                live_stream_id=live_stream_id, ingest_type="live_rtmp",
                settings={"mp4_support": "none"}, playback_policies=("public",))
            return asset.id
        finally:
            await store.close()
    return asyncio.run(create())


def test_every_endpoint_through_the_sdk_and_restart(relay: RelayProcess,
                                                    data_dir: Path) -> None:
    client = sdk(relay.http_url)
    streams, assets = mux.LiveStreamsApi(client), mux.AssetsApi(client)
    playback = mux.PlaybackIDApi(client)

    # Create, exactly as the SDK's README does it.
    created = streams.create_live_stream(mux.CreateLiveStreamRequest(
        playback_policy=[mux.PlaybackPolicy.PUBLIC],
        new_asset_settings=mux.CreateAssetRequest(playback_policy=[mux.PlaybackPolicy.PUBLIC]),
        passthrough="game-7", latency_mode="low", reconnect_window=30,
        meta=mux.LiveStreamMetadata(title="Finals"))).data
    assert created.status == "idle" and created.latency_mode == "low"
    assert created.reconnect_window == 30 and created.max_continuous_duration == 43200
    assert created.playback_ids[0].policy == "public"
    assert created.new_asset_settings.playback_policies == ["public"]
    assert created.meta.title == "Finals" and created.srt_passphrase
    other = streams.create_live_stream(mux.CreateLiveStreamRequest(
        playback_policy=[mux.PlaybackPolicy.SIGNED], audio_only=True)).data

    # Read, list, filter, page.
    assert streams.get_live_stream(created.id).data.stream_key == created.stream_key
    listed = streams.list_live_streams(limit=1, page=1).data
    assert [s.id for s in listed] == [other.id]
    assert [s.id for s in streams.list_live_streams(limit=1, page=2).data] == [created.id]
    assert streams.list_live_streams(limit=1, page=3).data == []
    by_key = streams.list_live_streams(stream_key=created.stream_key).data
    assert [s.id for s in by_key] == [created.id]

    # Update: the SDK sends its defaults alongside the one field the user changed.
    updated = streams.update_live_stream(
        created.id, mux.UpdateLiveStreamRequest(passthrough="game-8")).data
    assert updated.passthrough == "game-8" and updated.latency_mode == "low"

    # Playback ids of a stream.
    pid = streams.create_live_stream_playback_id(
        created.id, mux.CreatePlaybackIDRequest(policy=mux.PlaybackPolicy.SIGNED)).data
    assert pid.policy == "signed"
    assert streams.get_live_stream_playback_id(created.id, pid.id).data.id == pid.id
    lookup = playback.get_asset_or_livestream_id(pid.id).data
    assert (lookup.object.type, lookup.object.id) == ("live_stream", created.id)
    assert streams.delete_live_stream_playback_id(created.id, pid.id) is None
    with pytest.raises(NotFoundException):
        streams.get_live_stream_playback_id(created.id, pid.id)

    # Simulcast targets (records; pushing comes with the simulcast feature).
    target = streams.create_live_stream_simulcast_target(
        created.id, mux.CreateSimulcastTargetRequest(
            url="rtmp://live.example.com/app", stream_key="abc", passthrough="yt")).data
    assert target.status == "idle" and target.stream_key == "abc"
    assert streams.get_live_stream_simulcast_target(created.id, target.id).data.url == \
        "rtmp://live.example.com/app"
    tls_target = streams.create_live_stream_simulcast_target(
        created.id,
        mux.CreateSimulcastTargetRequest(url="rtmps://ingest.example.com:443/live2")).data
    assert streams.delete_live_stream_simulcast_target(created.id, tls_target.id) is None

    # State actions.
    assert streams.disable_live_stream(created.id).data is not None
    assert streams.get_live_stream(created.id).data.status == "disabled"
    assert [s.id for s in streams.list_live_streams(status="disabled").data] == [created.id]
    streams.enable_live_stream(created.id)
    assert streams.get_live_stream(created.id).data.status == "idle"
    streams.signal_live_stream_complete(created.id)
    new_key = streams.reset_stream_key(other.id).data.stream_key
    assert new_key and new_key != other.stream_key

    # Recordings.
    asset_id = seed_recording(data_dir, created.id)
    kept_asset_id = seed_recording(data_dir, created.id)
    assert streams.get_live_stream(created.id).data.recent_asset_ids == [asset_id,
                                                                         kept_asset_id]
    asset = assets.get_asset(asset_id).data
    assert (asset.status, asset.live_stream_id, asset.is_live) == ("preparing", created.id,
                                                                   True)
    assert [a.id for a in assets.list_assets(live_stream_id=created.id).data] == [
        kept_asset_id, asset_id]
    assert [a.id for a in assets.list_assets(limit=1, page=2).data] == [asset_id]
    asset_pid = assets.create_asset_playback_id(
        asset_id, mux.CreatePlaybackIDRequest(policy=mux.PlaybackPolicy.PUBLIC)).data
    assert assets.get_asset_playback_id(asset_id, asset_pid.id).data.policy == "public"
    assert playback.get_asset_or_livestream_id(asset_pid.id).data.object.type == "asset"
    assert assets.delete_asset_playback_id(asset_id, asset_pid.id) is None
    assert assets.delete_asset(asset_id) is None
    with pytest.raises(NotFoundException):
        assets.get_asset(asset_id)

    # Error paths: 401, 404, 400 naming the field.
    with pytest.raises(UnauthorizedException) as unauthorized:
        mux.LiveStreamsApi(sdk(relay.http_url, (TOKEN[0], "wrong"))).list_live_streams()
    assert json.loads(unauthorized.value.body)["error"]["type"] == "unauthorized"
    with pytest.raises(NotFoundException) as missing:
        streams.get_live_stream("does-not-exist")
    assert json.loads(missing.value.body)["error"]["type"] == "not_found"
    lax = mux.LiveStreamsApi(sdk(relay.http_url, validate=False))
    with pytest.raises(ApiException) as invalid:
        lax.create_live_stream(mux.CreateLiveStreamRequest(
            reconnect_window=5000, latency_mode="low",
            local_vars_configuration=lax.api_client.configuration))
    assert invalid.value.status == 400
    error = json.loads(invalid.value.body)["error"]
    assert error["type"] == "invalid_parameters"
    assert [m.split(":")[0] for m in error["messages"]] == ["reconnect_window"]

    # Delete one stream; its recording stays.
    assert streams.delete_live_stream(other.id) is None
    with pytest.raises(NotFoundException):
        streams.get_live_stream(other.id)

    # Restart on the same data dir: everything persisted.
    assert relay.stop() == 0
    with RelayProcess(data_dir, token=TOKEN) as again:
        client = sdk(again.http_url)
        streams, assets = mux.LiveStreamsApi(client), mux.AssetsApi(client)
        after = streams.get_live_stream(created.id).data
        assert (after.passthrough, after.stream_key, after.meta.title) == (
            "game-8", created.stream_key, "Finals")
        assert [t.id for t in after.simulcast_targets] == [target.id]
        assert after.recent_asset_ids == [kept_asset_id]
        assert [s.id for s in streams.list_live_streams().data] == [created.id]
        assert assets.get_asset(kept_asset_id).data.playback_ids[0].policy == "public"
        assert mux.PlaybackIDApi(client).get_asset_or_livestream_id(
            created.playback_ids[0].id).data.object.id == created.id
