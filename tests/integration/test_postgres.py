"""`relay serve --database-url postgresql+asyncpg://...` end to end, on a throwaway PostgreSQL
(testkit/postgres.py): the migrations run on an empty database, the official Mux Python SDK
creates, reads and lists live streams, an ffmpeg push makes the stream `active` and records an
asset, each event reaches a webhook receiver signed, and a restart on the same database keeps
it all.
"""

from __future__ import annotations

from pathlib import Path

import mux_python as mux

from testkit.encoders import ffmpeg_publish, finish, needs_ffmpeg
from testkit.postgres import PostgresCluster
from testkit.relay_process import RelayProcess
from tests.integration.helpers.sdk import sdk
from tests.integration.helpers.webhooks import SECRET, Receiver, receiver, wait_until

TOKEN = ("pg-test-token", "pg-test-secret-0123456789-abcdefghijklm")

__all__ = ["receiver"]  # fixture


def relay_on(url: str, data_dir: Path, hook: str) -> RelayProcess:
    return RelayProcess(data_dir, token=TOKEN,
                        extra_args=["--database-url", url, "--webhook-url", hook],
                        env={"RELAY_WEBHOOK_SECRET": SECRET})


@needs_ffmpeg
def test_relay_serves_from_postgresql(postgres: PostgresCluster, tmp_path: Path,
                                      receiver: Receiver) -> None:
    url = postgres.create_database()
    with relay_on(url, tmp_path / "data", receiver.url) as relay:
        assert not (tmp_path / "data" / "relay.db").exists()  # nothing went to SQLite
        streams = mux.LiveStreamsApi(sdk(relay.http_url, TOKEN))
        created = streams.create_live_stream(mux.CreateLiveStreamRequest(
            playback_policy=[mux.PlaybackPolicy.PUBLIC], passthrough="pg",
            new_asset_settings=mux.CreateAssetRequest(
                playback_policy=[mux.PlaybackPolicy.PUBLIC]),
            latency_mode="low", reconnect_window=1,
            meta=mux.LiveStreamMetadata(title="on PostgreSQL"))).data
        other = streams.create_live_stream(mux.CreateLiveStreamRequest(
            playback_policy=[mux.PlaybackPolicy.SIGNED], audio_only=True)).data
        assert [s.id for s in streams.list_live_streams(limit=10, page=1).data] == \
            [other.id, created.id]
        assert streams.get_live_stream(created.id).data.meta.title == "on PostgreSQL"
        assert [s.id for s in streams.list_live_streams(
            stream_key=created.stream_key).data] == [created.id]

        encoder = ffmpeg_publish(f"{relay.urls['rtmp']}/{created.stream_key}", seconds=10)
        try:
            wait_until(lambda: streams.get_live_stream(created.id).data.status == "active",
                       60, "the pushed stream to be active")
        finally:
            code, err = finish(encoder)
        assert code == 0, err + relay.log
        wait_until(lambda: streams.get_live_stream(created.id).data.status == "idle", 60,
                   "the stream to go idle after its reconnect window")
        assets = mux.AssetsApi(sdk(relay.http_url, TOKEN))
        recorded = assets.list_assets(live_stream_id=created.id).data
        assert len(recorded) == 1

        def types_of(object_id: str) -> list[str]:
            return [e["type"] for e in receiver.events if e["object"]["id"] == object_id]

        wait_until(lambda: "video.live_stream.idle" in types_of(created.id), 60,
                   "the idle event to be delivered")
        seen = types_of(created.id)
        for expected in ("video.live_stream.created", "video.live_stream.connected",
                         "video.live_stream.recording", "video.live_stream.active",
                         "video.live_stream.disconnected", "video.live_stream.idle"):
            assert expected in seen, (expected, seen)
        assert seen.index("video.live_stream.created") < seen.index("video.live_stream.active")
        assert receiver.bad_signatures == 0

    # A restart finds the schema migrated and everything it wrote.
    with relay_on(url, tmp_path / "data", receiver.url) as again:
        streams = mux.LiveStreamsApi(sdk(again.http_url, TOKEN))
        assert streams.get_live_stream(created.id).data.passthrough == "pg"
        assets = mux.AssetsApi(sdk(again.http_url, TOKEN))
        assert [a.id for a in assets.list_assets(live_stream_id=created.id).data] == \
            [a.id for a in recorded]
