"""A real disk fills up under `relay serve` while ffmpeg publishes: the recording ends with a
logged reason, live playback goes on over HTTP, and the asset keeps what was recorded and is
finalized playable (ffmpeg decodes it through the relay). The media directory is a small
tmpfs, mounted by the test (root with CAP_SYS_ADMIN, as in the CI container; skipped
otherwise); the database lives elsewhere, as it would on a separate volume."""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx
import pytest

from testkit.encoders import ffmpeg_publish, finish, needs_ffmpeg
from testkit.relay_process import RelayProcess
from tests.conftest import sqlite_url
from tests.hls.full_disk import fill, small_tmpfs
from tests.hls.playlist_checker import check_media_playlist, parse_media_playlist
from tests.integration.helpers.hls_playback import (
    FFPROBE,
    SIZE,
    Live,
    decode,
    http,
    last_msn,
    stop_encoder,
    wait_playable,
)
from tests.integration.helpers.rtmp_ingest import (
    TOKEN,
    api,
    create_stream,
    get_stream,
    publish_url,
    wait_status,
    wait_until,
)

pytestmark = [needs_ffmpeg,
              pytest.mark.skipif(FFPROBE is None, reason="ffprobe is not installed")]

#: Room left for the recording once the stream plays: a few segments of 320x240.
ROOM = 400_000


def test_a_full_disk_ends_the_recording_while_live_playback_goes_on(tmp_path: Path) -> None:
    with small_tmpfs(tmp_path / "media", 8 * 1024 * 1024) as media:
        relay = RelayProcess(media, token=TOKEN, extra_args=[
            "--database-url", sqlite_url(tmp_path / "relay.db")]).start()
        try:
            run(relay, media)
        finally:
            assert relay.stop() == 0, relay.log


def run(relay: RelayProcess, media: Path) -> None:
    stream = create_stream(relay, reconnect_window=1)
    encoder = ffmpeg_publish(publish_url(relay, stream["stream_key"]), seconds=120, size=SIZE)
    live = Live(stream, encoder)
    try:
        wait_playable(relay, live)
        asset_id = get_stream(relay, live.id)["active_asset_id"]
        recording = media / "assets" / asset_id
        with (media / "other").open("wb") as other:  # other data takes the disk
            other.write(bytes(max(0, shutil.disk_usage(media).free - ROOM)))
        wait_until(lambda: "the recording stops: the disk is full" in relay.log, 60,
                   "the recording to stop on the full disk")
        [line] = [line for line in relay.lines if "the recording stops" in line]
        assert f"stream {live.id}" in line and "ENOSPC" in line and "live playback goes on" in line
        # What the recording holds: no torn line, every listed segment whole.
        text = (recording / "rendition.m3u8").read_text()
        assert text.endswith(".m4s\n"), text[-300:]
        recorded = [s.uri for s in parse_media_playlist(text).segments]
        assert recorded and not list(recording.glob("*.tmp"))

        # Live playback goes on: new segments are listed and served after the failure.
        with http(relay) as client:
            playlist = check_media_playlist(client.get(live.media).text)
            failed_at = last_msn(playlist)
            wait_until(lambda: last_msn(parse_media_playlist(
                client.get(live.media).text)) >= failed_at + 2, 30, "two more live segments")
            newest = parse_media_playlist(client.get(live.media).text).segments[-2]
            served = client.get(f"/{live.playback_id}/{newest.uri}")
            assert served.status_code == 200 and len(served.content) > 0
            assert newest.uri not in recorded
            played = decode(f"{relay.http_url}{live.multivariant}", 2)
            assert played.returncode == 0 and played.seconds >= 1.5, played
        metrics = httpx.get(relay.urls["metrics"], timeout=30).text
        assert "relay_hls_recordings_failed_total 1.0" in metrics
        assert get_stream(relay, live.id)["status"] == "active"
        # Other writers take every byte the recording gave back: finalizing must still work.
        fill(media)
    finally:
        stop_encoder(encoder)
    finish(encoder)

    # The session ends; the asset keeps what was recorded, finalized and playable.
    wait_status(relay, live.id, "idle", 60)
    with api(relay) as client:
        asset = client.get(f"/video/v1/assets/{asset_id}").json()["data"]
    assert asset["status"] == "ready" and asset["is_live"] is False, asset
    asset_pid = asset["playback_ids"][0]["id"]
    with http(relay) as client:
        vod = client.get(f"/{asset_pid}/rendition.m3u8")
        assert vod.status_code == 200
        finished = check_media_playlist(vod.text, require_independent_segments=False)
    assert finished.playlist_type == "VOD" and finished.endlist, vod.text
    assert "no room for a new playlist" in relay.log  # it was finalized in place
    assert [s.uri for s in finished.segments] == recorded  # nothing lost, nothing more
    for segment in finished.segments:
        assert (recording / segment.uri).stat().st_size > 0
    assert abs(asset["duration"] - finished.duration()) < 0.01, (asset, vod.text)
    played = decode(f"{relay.http_url}/{asset_pid}.m3u8")
    assert played.returncode == 0 and played.stderr == "", played.stderr
    assert abs(played.seconds - finished.duration()) <= 1, played
