"""What test_hls_playback.py shares with other test modules: kept here so no test module imports
another."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from testkit.encoders import FFMPEG, ffmpeg_publish, finish
from testkit.relay_process import RelayProcess
from tests.hls.playlist_checker import (
    MediaPlaylist,
)
from tests.integration.helpers.rtmp_ingest import (
    create_stream,
    publish_url,
    start_relay,
    wait_status,
    wait_until,
)

FFPROBE = shutil.which("ffprobe")


SIZE = "320x240"


@pytest.fixture
def relay(tmp_path: Path) -> Iterator[RelayProcess]:
    process = start_relay(tmp_path / "data")
    try:
        yield process
    finally:
        assert process.stop() == 0, process.log


def http(relay: RelayProcess) -> httpx.Client:
    """A playback client: no credentials (playback ids are public)."""
    return httpx.Client(base_url=relay.http_url, timeout=30)


@dataclass
class Live:
    """A stream being pushed by ffmpeg."""

    stream: dict[str, Any]
    encoder: subprocess.Popen[str]

    @property
    def id(self) -> str:
        return str(self.stream["id"])

    @property
    def playback_id(self) -> str:
        return str(self.stream["playback_ids"][0]["id"])

    @property
    def multivariant(self) -> str:
        return f"/{self.playback_id}.m3u8"

    @property
    def media(self) -> str:
        return f"/{self.playback_id}/rendition.m3u8"


def wait_playable(relay: RelayProcess, live: Live, timeout: float = 30) -> None:
    """Until the stream is active and its multivariant playlist is served."""
    wait_status(relay, live.id, "active", timeout)
    with http(relay) as client:
        wait_until(lambda: client.get(live.multivariant).status_code == 200, 10,
                   "the multivariant playlist")


@contextmanager
def pushing(relay: RelayProcess, seconds: float, *, gop: int = 30,
            **body: Any) -> Iterator[Live]:
    """Create a stream with `body`, push `seconds` of media at 30 fps with a GOP of `gop`
    frames, wait until it plays; stop the encoder afterwards if it still runs."""
    stream = create_stream(relay, **body)
    encoder = ffmpeg_publish(publish_url(relay, stream["stream_key"]), seconds=seconds,
                             size=SIZE, gop=gop)
    live = Live(stream, encoder)
    try:
        wait_playable(relay, live)
        yield live
    finally:
        stop_encoder(encoder)


def stop_encoder(encoder: subprocess.Popen[str]) -> None:
    if encoder.poll() is None:
        encoder.send_signal(signal.SIGCONT)  # in case a test left it stopped
        encoder.kill()
    finish(encoder)


@dataclass
class Decoded:
    returncode: int
    stderr: str
    seconds: float  # media time decoded (ffmpeg's out_time)


def decode(url: str, seconds: float | None = None, *extra: str) -> Decoded:
    """ffmpeg as an HLS player: decode `url` (at most `seconds` of it), discard the output,
    and report how much media time it decoded."""
    assert FFMPEG is not None
    limit = ["-t", str(seconds)] if seconds is not None else []
    done = subprocess.run([FFMPEG, "-hide_banner", "-nostdin", "-v", "error", "-nostats",
                           "-progress", "pipe:1", *extra, "-i", url, *limit, "-f", "null",
                           "-"], capture_output=True, text=True, timeout=90)
    out_times = [line.partition("=")[2] for line in done.stdout.splitlines()
                 if line.startswith("out_time_us=")]
    decoded = max((int(v) for v in out_times if v.isdigit()), default=0) / 1e6
    return Decoded(done.returncode, done.stderr, decoded)


def probe(url: str) -> dict[str, Any]:
    """ffprobe's view of `url`: streams and format."""
    assert FFPROBE is not None
    done = subprocess.run([FFPROBE, "-v", "error", "-print_format", "json", "-show_streams",
                           "-show_format", url], capture_output=True, text=True, timeout=90)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    return dict(json.loads(done.stdout))


def last_msn(playlist: MediaPlaylist) -> int:
    """The msn of the last segment the playlist lists (complete, or open with parts)."""
    return playlist.segments[-1].msn
