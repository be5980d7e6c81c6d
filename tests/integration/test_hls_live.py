"""HLS playback end to end: ffmpeg publishes to `relay serve`, real players read the output.

Real peers only: the relay runs as a subprocess on free ports, ffmpeg (Debian's package) is
the encoder, ffmpeg/ffprobe are the HLS players that must decode what Relay serves, httpx
plays the application and a player's playlist requests. The LL-HLS rules are asserted on
every playlist sampled during a push by `tests.hls.playlist_checker`.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.hls.playlist_checker import check_media_playlist, check_multivariant
from tests.integration.encoders import FFMPEG, ffmpeg_publish, finish, needs_ffmpeg
from tests.integration.relay_process import RelayProcess
from tests.integration.test_rtmp_ingest import (
    TOKEN,
    api,
    create_stream,
    get_stream,
    publish_url,
    start_relay,
    wait_status,
    wait_until,
)

pytestmark = needs_ffmpeg

FFPROBE = shutil.which("ffprobe")


@pytest.fixture
def relay(tmp_path: Path) -> Iterator[RelayProcess]:
    process = start_relay(tmp_path / "data")
    try:
        yield process
    finally:
        assert process.stop() == 0, process.log


def playback_id(stream: dict[str, Any]) -> str:
    return str(stream["playback_ids"][0]["id"])


def http(relay: RelayProcess) -> httpx.Client:
    return httpx.Client(base_url=relay.http_url, timeout=20)


def wait_playable(relay: RelayProcess, stream: dict[str, Any], timeout: float = 30) -> None:
    """Until the stream is active and its multivariant playlist is served."""
    wait_status(relay, stream["id"], "active", timeout)
    with http(relay) as client:
        wait_until(lambda: client.get(f"/{playback_id(stream)}.m3u8").status_code == 200,
                   10, "the multivariant playlist")


def next_part(playlist: str) -> tuple[str, str]:
    """(msn, part) of the part the playlist's preload hint names."""
    hint = re.search(r'PRELOAD-HINT:TYPE=PART,URI="(\d+)\.(\d+)\.m4s"', playlist)
    assert hint is not None, playlist
    return hint[1], hint[2]


def last_segment(playlist: str) -> int:
    return max(int(msn) for msn in re.findall(r"^(\d+)\.m4s$", playlist, re.M))


@contextmanager
def live_push(relay: RelayProcess, seconds: float, *, gop: int = 30,
              **body: Any) -> Iterator[tuple[dict[str, Any], str, subprocess.Popen[str]]]:
    """Create a stream with `body`, push `seconds` of media with ffmpeg, wait until it plays;
    yield (stream, playback id, encoder); stop the encoder afterwards if it still runs."""
    stream = create_stream(relay, **body)
    encoder = ffmpeg_publish(publish_url(relay, stream["stream_key"]), seconds=seconds,
                             gop=gop)
    try:
        wait_playable(relay, stream)
        yield stream, playback_id(stream), encoder
    finally:
        if encoder.poll() is None:
            encoder.kill()
        if encoder.stderr is not None and not encoder.stderr.closed:
            finish(encoder)  # reaps it and closes its pipe


def decode(url: str, seconds: float = 3, *extra: str) -> subprocess.CompletedProcess[str]:
    """ffmpeg as an HLS player: decode `seconds` of `url`, discard the pictures."""
    assert FFMPEG is not None
    return subprocess.run([FFMPEG, "-hide_banner", "-nostdin", "-v", "error", *extra,
                           "-i", url, "-t", str(seconds), "-f", "null", "-"],
                          capture_output=True, text=True, timeout=60)


def probe(url: str) -> dict[str, Any]:
    assert FFPROBE is not None
    done = subprocess.run([FFPROBE, "-v", "error", "-print_format", "json", "-show_streams",
                           "-show_format", url], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout))


@pytest.mark.parametrize("mode", ["low", "reduced", "standard"])
def test_each_latency_mode_decodes(relay: RelayProcess, mode: str) -> None:
    with live_push(relay, 16, gop=60, latency_mode=mode) as (_, pid, _):
        url = f"{relay.http_url}/{pid}.m3u8"
        done = decode(url, 3, "-live_start_index", "0")
        assert done.returncode == 0 and done.stderr == "", done.stderr
        with http(relay) as client:
            media = client.get(f"/{pid}/rendition.m3u8").text
        check_media_playlist(media)
        assert ("#EXT-X-PART:" in media) is (mode == "low")
        assert f"#EXT-X-TARGETDURATION:{6 if mode == 'standard' else 2}\n" in media
        streams = probe(url)["streams"]
        assert sorted(s["codec_type"] for s in streams) == ["audio", "video"]


def test_audio_only_streams_play_audio(relay: RelayProcess) -> None:
    with live_push(relay, 12, audio_only=True) as (_, pid, _):
        url = f"{relay.http_url}/{pid}.m3u8"
        with http(relay) as client:
            multivariant = client.get(url).text
        check_multivariant(multivariant)
        assert 'CODECS="mp4a.40.2"' in multivariant and "RESOLUTION" not in multivariant
        assert [s["codec_type"] for s in probe(url)["streams"]] == ["audio"]
        done = decode(url, 2, "-live_start_index", "0")
        assert done.returncode == 0 and done.stderr == "", done.stderr


def test_live_playlists_keep_the_rules_while_sampled(relay: RelayProcess) -> None:
    with live_push(relay, 20, latency_mode="low") as (_, pid, _), http(relay) as client:
        multivariant = client.get(f"/{pid}.m3u8")
        check_multivariant(multivariant.text)
        inf = multivariant.text.splitlines()[2]
        for attribute in ("BANDWIDTH=", "AVERAGE-BANDWIDTH=", 'CODECS="avc1.', 'mp4a.40.2"',
                          "RESOLUTION=320x240", "FRAME-RATE=30.000"):
            assert attribute in inf, inf
        previous: str | None = None
        samples = 0
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline:
            text = client.get(f"/{pid}/rendition.m3u8").text
            check_media_playlist(text, previous=previous)
            previous, samples = text, samples + 1
            # Then as hls.js does: block for the part the preload hint names.
            msn, part = next_part(text)
            blocked = client.get(f"/{pid}/rendition.m3u8",
                                 params={"_HLS_msn": msn, "_HLS_part": part})
            assert blocked.status_code == 200
            check_media_playlist(blocked.text, previous=previous)
            assert f'URI="{msn}.{part}.m4s"' in blocked.text
            previous = blocked.text
        assert samples >= 5


def test_blocking_reload_hinted_parts_and_refusals(relay: RelayProcess) -> None:
    with (live_push(relay, 60, latency_mode="low") as (_, pid, encoder),
          http(relay) as client):
        path = f"/{pid}/rendition.m3u8"
        delays = []
        for _ in range(10):
            msn, part = next_part(client.get(path).text)
            started = time.monotonic()
            response = client.get(path, params={"_HLS_msn": msn, "_HLS_part": part})
            delays.append(time.monotonic() - started)
            assert response.status_code == 200
            assert f'URI="{msn}.{part}.m4s"' in response.text
        print(f"blocking reload delays (s): {[round(d, 3) for d in delays]}")
        assert max(delays) < 6  # never the 503 timeout (3 x TARGETDURATION)

        # The hinted part itself is held until complete, then served.
        text = client.get(path).text
        msn, part = next_part(text)
        response = client.get(f"/{pid}/{msn}.{part}.m4s")
        assert response.status_code == 200 and response.content[4:8] == b"moof"
        assert response.headers["cache-control"] == "public, max-age=31536000, immutable"

        # A part index past the end of a completed segment: part 0 of the next one.
        last = last_segment(text)
        response = client.get(path, params={"_HLS_msn": str(last), "_HLS_part": "99"})
        assert response.status_code == 200 and f'URI="{last + 1}.0.m4s"' in response.text

        assert client.get(path, params={"_HLS_part": "1"}).status_code == 400
        too_far = client.get(path, params={"_HLS_msn": str(last + 4)})
        assert too_far.status_code == 400 and "past the last segment" in too_far.text

        # Delta update, once the playlist is longer than CAN-SKIP-UNTIL (12 s).
        wait_until(lambda: client.get(path, params={"_HLS_skip": "YES"}).text.count(
            "#EXT-X-SKIP:") == 1, 30, "a delta update")
        check_media_playlist(client.get(path, params={"_HLS_skip": "YES"}).text)

        # A stalled encoder: a request for a segment that does not come is 503 after
        # 3 x TARGETDURATION.
        encoder.send_signal(signal.SIGSTOP)
        try:
            ahead = last_segment(client.get(path).text) + 2
            started = time.monotonic()
            stalled = client.get(path, params={"_HLS_msn": str(ahead)})
            waited = time.monotonic() - started
        finally:
            encoder.send_signal(signal.SIGCONT)
        assert stalled.status_code == 503 and 5 <= waited < 10, (stalled, waited)


def test_headers_gzip_cors_and_uniform_404s(relay: RelayProcess) -> None:
    with (live_push(relay, 12, latency_mode="low") as (stream, pid, _),
          http(relay) as client):
        media = client.get(f"/{pid}/rendition.m3u8", headers={"Accept-Encoding": "gzip"})
        assert media.headers["content-encoding"] == "gzip"
        assert media.headers["content-type"] == "application/vnd.apple.mpegurl"
        assert media.headers["access-control-allow-origin"] == "*"
        assert media.headers["cache-control"] == "public, max-age=1"
        unknown = client.get("/NoSuchPlaybackId.m3u8")
        for path in ("/bad!id.m3u8", f"/{pid}/999.m4s", f"/{pid}/nothing.ts",
                     f"/{stream['id']}.m3u8"):
            response = client.get(path)
            assert (response.status_code, response.text) == (404, unknown.text), path
        assert unknown.status_code == 404


def test_recording_becomes_a_vod_asset(relay: RelayProcess, tmp_path: Path) -> None:
    stream = create_stream(relay, reconnect_window=1)
    pushed = 10
    encoder = ffmpeg_publish(publish_url(relay, stream["stream_key"]), seconds=pushed)
    wait_playable(relay, stream)
    asset_id = get_stream(relay, stream["id"])["active_asset_id"]
    with api(relay) as client:
        asset = client.get(f"/video/v1/assets/{asset_id}").json()["data"]
    asset_pid = asset["playback_ids"][0]["id"]
    with http(relay) as client:
        # While live, the asset plays as an EVENT playlist.
        wait_until(lambda: client.get(f"/{asset_pid}.m3u8").status_code == 200, 10,
                   "the asset's multivariant playlist")
        event = client.get(f"/{asset_pid}/rendition.m3u8").text
        assert "#EXT-X-PLAYLIST-TYPE:EVENT" in event and "#EXT-X-ENDLIST" not in event
        check_media_playlist(event)
    code, err = finish(encoder)
    assert code == 0, err
    wait_status(relay, stream["id"], "idle")
    with api(relay) as client:
        asset = client.get(f"/video/v1/assets/{asset_id}").json()["data"]
    assert asset["status"] == "ready" and asset["is_live"] is False
    assert abs(asset["duration"] - pushed) <= 2, asset  # within one segment
    kinds = sorted(track["type"] for track in asset["tracks"])
    assert kinds == ["audio", "video"], asset["tracks"]
    url = f"{relay.http_url}/{asset_pid}.m3u8"
    with http(relay) as client:
        vod = client.get(f"/{asset_pid}/rendition.m3u8")
        assert "#EXT-X-PLAYLIST-TYPE:VOD" in vod.text and vod.text.endswith("#EXT-X-ENDLIST\n")
        check_media_playlist(vod.text)
    assert abs(float(probe(url)["format"]["duration"]) - pushed) <= 2
    done = decode(url, 20)
    assert done.returncode == 0 and done.stderr == "", done.stderr

    directory = relay.data_dir / "assets" / asset_id
    assert (directory / "rendition.m3u8").is_file()
    with api(relay) as client:
        assert client.delete(f"/video/v1/assets/{asset_id}").status_code == 204
    wait_until(lambda: not directory.exists(), 10, "the asset's files to go")
    with http(relay) as client:
        assert client.get(f"/{asset_pid}.m3u8").status_code == 404


def test_reconnect_continues_with_a_discontinuity(relay: RelayProcess) -> None:
    stream = create_stream(relay, latency_mode="low", reconnect_window=30)
    url = publish_url(relay, stream["stream_key"])
    code, err = finish(ffmpeg_publish(url, seconds=5))
    assert code == 0, err
    asset_id = get_stream(relay, stream["id"])["active_asset_id"]
    second = ffmpeg_publish(url, seconds=8)
    try:
        pid = playback_id(stream)
        with http(relay) as client:
            wait_until(lambda: "#EXT-X-DISCONTINUITY\n" in client.get(
                f"/{pid}/rendition.m3u8").text, 20, "a discontinuity in the live playlist")
            check_media_playlist(client.get(f"/{pid}/rendition.m3u8").text)
    finally:
        code, err = finish(second)
    assert code == 0, err
    with api(relay) as client:
        assert client.put(f"/video/v1/live-streams/{stream['id']}/complete").status_code == 200
    wait_status(relay, stream["id"], "idle")
    assert get_stream(relay, stream["id"])["recent_asset_ids"] == [asset_id]
    recording = (relay.data_dir / "assets" / asset_id / "rendition.m3u8").read_text()
    assert recording.count("#EXT-X-DISCONTINUITY\n") == 1 and "#EXT-X-ENDLIST" in recording
    check_media_playlist(recording)


def test_kill_9_mid_stream_then_restart_completes_the_recording(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    relay = start_relay(data_dir)
    stream = create_stream(relay, latency_mode="reduced")
    encoder = ffmpeg_publish(publish_url(relay, stream["stream_key"]), seconds=60)
    try:
        wait_playable(relay, stream)
        asset_id = get_stream(relay, stream["id"])["active_asset_id"]
        playlist = data_dir / "assets" / asset_id / "rendition.m3u8"
        wait_until(lambda: playlist.is_file() and playlist.read_text().count(".m4s") >= 3,
                   20, "three recorded segments")
        relay.stop(signal.SIGKILL)
    finally:
        encoder.kill()
        finish(encoder)
    assert "#EXT-X-ENDLIST" not in playlist.read_text()

    restarted = RelayProcess(data_dir, token=TOKEN).start()
    try:
        assert f"completed the recording of asset {asset_id}" in restarted.log
        assert get_stream(restarted, stream["id"])["status"] == "idle"
        with api(restarted) as client:
            asset = client.get(f"/video/v1/assets/{asset_id}").json()["data"]
        assert asset["status"] == "ready" and asset["duration"] >= 5.9, asset
        text = playlist.read_text()
        assert text.endswith("#EXT-X-ENDLIST\n") and "#EXT-X-PLAYLIST-TYPE:VOD" in text
        check_media_playlist(text)
        url = f"{restarted.http_url}/{asset['playback_ids'][0]['id']}.m3u8"
        done = decode(url, 30)
        assert done.returncode == 0 and done.stderr == "", done.stderr
    finally:
        assert restarted.stop() == 0, restarted.log


def test_many_blocked_requests_wait_without_spinning(relay: RelayProcess) -> None:
    """Fifty playlist requests held for the same future segment are all answered with it."""
    with live_push(relay, 30, latency_mode="low") as (_, pid, _):
        with http(relay) as client:
            msn = last_segment(client.get(f"/{pid}/rendition.m3u8").text) + 2
        results: list[int] = []

        def held() -> None:
            with http(relay) as client:
                results.append(client.get(f"/{pid}/rendition.m3u8",
                                          params={"_HLS_msn": str(msn)}).status_code)

        threads = [threading.Thread(target=held) for _ in range(50)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(20)
        assert results == [200] * 50
