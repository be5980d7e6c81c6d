"""Playback from a node that does not own the stream (issue 19): node B is a real `relay serve`
with a live stream pushed by ffmpeg; node A is a playback node in this process
(`testkit.playback_node`) whose owner lookup names B. ffprobe and ffmpeg play from A, and
reads as hls.js makes them (blocking reloads, the hinted part, delta updates) are answered
by A with B's bytes; many viewers of one part on A cost B one request (B's own metrics);
thumbnails and storyboards come from B through A too."""

from __future__ import annotations

import concurrent.futures
import io
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image

from testkit.playback_node import PlaybackNode, live_stream_id, serving_node
from testkit.relay_process import RelayProcess
from tests.hls.playlist_checker import (
    check_media_playlist,
    check_multivariant,
    parse_media_playlist,
)
from tests.integration.helpers.hls_playback import Live, decode, probe, pushing
from tests.integration.helpers.rtmp_ingest import start_relay

pytestmark = pytest.mark.skipif(shutil.which("ffmpeg") is None or shutil.which("ffprobe")
                                is None, reason="needs ffmpeg and ffprobe")

_HINT = re.compile(r'#EXT-X-PRELOAD-HINT:TYPE=PART,URI="(\d+)\.(\d+)\.m4s"')
_PART_REQUESTS = re.compile(r'relay_hls_requests_total\{kind="part",status="200"\} (\d+)')


@pytest.fixture
def owner(tmp_path: Path) -> Iterator[RelayProcess]:
    process = start_relay(tmp_path / "owner")
    try:
        yield process
    finally:
        assert process.stop() == 0, process.log


def part_requests(owner: RelayProcess) -> int:
    """Parts node B has answered 200, by its metrics."""
    text = httpx.get(owner.urls["metrics"], timeout=10).text
    found = _PART_REQUESTS.search(text)
    return int(found.group(1)) if found else 0


def hint(text: str) -> tuple[int, int]:
    found = _HINT.search(text)
    assert found is not None, text
    return int(found.group(1)), int(found.group(2))


def test_a_node_plays_a_stream_another_node_owns(owner: RelayProcess, tmp_path: Path) -> None:
    with pushing(owner, 90, gop=30, latency_mode="low") as live, serving_node(
            live_stream_id(live.playback_id, live.id), owner.http_url,
            tmp_path / "node") as node:
        check_playlists(live, node)
        hls_js_reads(live, node, owner)
        many_viewers_one_request(live, node, owner)
        images_from_the_owner(live, node, owner)
        played = probe(node.url + live.multivariant)
        assert {s["codec_name"] for s in played["streams"]} == {"h264", "aac"}
        decoded = decode(node.url + live.multivariant, 3)
        assert decoded.returncode == 0 and decoded.seconds >= 2.5, decoded.stderr
    assert node.asked[:1] == [live.playback_id]


def check_playlists(live: Live, node: PlaybackNode) -> None:
    with httpx.Client(base_url=node.url, timeout=20) as client:
        multivariant = client.get(live.multivariant)
        assert multivariant.status_code == 200, multivariant.text
        check_multivariant(multivariant.text)
        media = client.get(live.media, headers={"accept-encoding": "gzip"})
        assert media.status_code == 200 and media.headers["content-encoding"] == "gzip"
        check_media_playlist(media.text)
        assert "CAN-BLOCK-RELOAD=YES" in media.text
        init = client.get(f"/{live.playback_id}/init-0.mp4")
        assert init.status_code == 200 and init.content[4:8] == b"ftyp"
        playlist = parse_media_playlist(media.text)
        first = playlist.segments[0].msn
        segment = client.get(f"/{live.playback_id}/{first}.m4s")
        assert segment.status_code == 200 and segment.headers["content-type"] == "video/mp4"
        assert "immutable" in segment.headers["cache-control"]
        # A delta update: the query goes to the owner as it came.
        delta = client.get(live.media, params={"_HLS_msn": str(first), "_HLS_skip": "YES"})
        assert delta.status_code == 200 and delta.text.startswith("#EXTM3U")
        assert client.get(live.media, params={"_HLS_part": "1"}).status_code == 400


def hls_js_reads(live: Live, node: PlaybackNode, owner: RelayProcess) -> None:
    """As hls.js in low-latency mode: a blocking reload for the hinted part and the part
    itself, together, five parts in a row; each part is the owner's."""
    with httpx.Client(base_url=node.url, timeout=20) as client, \
            httpx.Client(base_url=owner.http_url, timeout=20) as direct, \
            concurrent.futures.ThreadPoolExecutor(2) as pool:
        text = client.get(live.media).text
        for _ in range(5):
            msn, part = hint(text)
            reload = pool.submit(client.get, live.media,
                                 params={"_HLS_msn": str(msn), "_HLS_part": str(part)})
            media = pool.submit(client.get, f"/{live.playback_id}/{msn}.{part}.m4s")
            answer, got = reload.result(), media.result()
            assert answer.status_code == 200 and got.status_code == 200
            assert f'URI="{msn}.{part}.m4s"' in answer.text
            assert got.content[4:8] == b"moof"
            assert got.content == direct.get(f"/{live.playback_id}/{msn}.{part}.m4s").content
            text = answer.text


def many_viewers_one_request(live: Live, node: PlaybackNode, owner: RelayProcess) -> None:
    """60 viewers wait on node A for the hinted part: node B answers it once."""
    with httpx.Client(base_url=node.url, timeout=20,
                      limits=httpx.Limits(max_connections=60)) as client, \
            concurrent.futures.ThreadPoolExecutor(60) as pool:
        msn, part = hint(client.get(live.media).text)
        before = part_requests(owner)
        upstream_before = node.upstream.requests
        answers = list(pool.map(lambda _: client.get(f"/{live.playback_id}/{msn}.{part}.m4s"),
                                range(60)))
        assert {a.status_code for a in answers} == {200}
        assert len({a.content for a in answers}) == 1
        assert part_requests(owner) - before == 1
        assert node.upstream.requests - upstream_before == 1


def images_from_the_owner(live: Live, node: PlaybackNode, owner: RelayProcess) -> None:
    """A thumbnail and a storyboard of the live stream through A: B draws them, A answers
    them with B's headers (a live image is kept a second: nothing immutable)."""
    with httpx.Client(base_url=node.url, timeout=20) as client, \
            httpx.Client(base_url=owner.http_url, timeout=20) as direct:
        upstream_before = node.upstream.requests
        thumbnail = client.get(f"/{live.playback_id}/thumbnail.jpg", params={"width": "64"})
        assert thumbnail.status_code == 200, thumbnail.text
        assert thumbnail.headers["content-type"] == "image/jpeg"
        assert Image.open(io.BytesIO(thumbnail.content)).width == 64
        own = direct.get(f"/{live.playback_id}/thumbnail.jpg", params={"width": "64"})
        assert thumbnail.headers["cache-control"] == own.headers["cache-control"]
        assert "immutable" not in thumbnail.headers["cache-control"]
        vtt = client.get(f"/{live.playback_id}/storyboard.vtt")
        assert vtt.status_code == 200 and vtt.text.startswith("WEBVTT"), vtt.text
        sheet = client.get(f"/{live.playback_id}/storyboard.jpg")
        assert sheet.status_code == 200 and sheet.content[:2] == b"\xff\xd8"
        assert node.upstream.requests - upstream_before == 3
