"""Real encoders for end-to-end tests: ffmpeg publishing a synthetic H.264 + AAC stream."""

from __future__ import annotations

import shutil
import subprocess

import pytest

FFMPEG = shutil.which("ffmpeg")

needs_ffmpeg = pytest.mark.skipif(
    FFMPEG is None, reason="ffmpeg is not installed (make test installs it)")


def ffmpeg_publish(url: str, seconds: float, *, size: str = "320x240", rate: int = 30,
                   gop: int = 30, extra: tuple[str, ...] = (),
                   muxer: str = "flv") -> subprocess.Popen[str]:
    """Start ffmpeg pushing `seconds` of testsrc2 + a sine tone, in real time, to `url`.

    libx264 with zerolatency and a GOP of `gop` frames, AAC audio: what a streaming
    encoder sends; FLV for RTMP(S), `muxer="mpegts"` for SRT. stderr is captured for
    assertions on ffmpeg's own error messages."""
    assert FFMPEG is not None
    args = [FFMPEG, "-hide_banner", "-nostdin", "-loglevel", "error", "-re",
            "-f", "lavfi", "-i", f"testsrc2=size={size}:rate={rate}",
            "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100",
            "-t", str(seconds),
            "-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency",
            "-g", str(gop), "-pix_fmt", "yuv420p",
            "-c:a", "aac", "-b:a", "64k", *extra, "-f", muxer, url]
    return subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


def finish(process: subprocess.Popen[str], timeout: float = 60) -> tuple[int, str]:
    """Wait for ffmpeg; return (exit status, stderr)."""
    try:
        _, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        _, err = process.communicate()
        raise AssertionError(f"ffmpeg did not finish in {timeout}s:\n{err}") from None
    return process.returncode, err


def srt_url(base: str, stream_key: str, passphrase: str | None, *,
            access_control: bool = False) -> str:
    """The URL an SRT encoder pushes to, as Mux documents it: `srt://HOST:PORT?streamid=KEY&
    passphrase=PASS` (ffmpeg's srt protocol; `latency` would be in microseconds there).
    `access_control` spells the streamid in SRT's access-control form instead of plainly.
    Not percent-encoded: ffmpeg passes the streamid to libsrt as written (keys and
    passphrases are URL-safe tokens)."""
    streamid = f"#!::r={stream_key},m=publish" if access_control else stream_key
    url = f"{base}?streamid={streamid}&pkt_size=1316"
    return url if passphrase is None else f"{url}&passphrase={passphrase}"
