"""Hostile UDP against the SRT port of `relay serve`, beside an honest ffmpeg publisher.

What one peer can send to 6001/udp without a key: random datagrams, SRT handshake packets in
bulk (induction requests, each answered statelessly with a cookie by libsrt, and conclusion
requests with made-up cookies), and callers with a valid key that never send media. Each must
leave the honest session playing, `/healthz` answering and the relay's memory bounded.

The handshake packets are built here from the SRT specification (draft-sharabayko-srt-01,
section 3.2.1): a control packet (F=1, type 0 = handshake) followed by the handshake CIF.
"""

from __future__ import annotations

import os
import random
import shutil
import socket
import struct
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from testkit.encoders import ffmpeg_publish, finish, needs_ffmpeg, srt_url
from testkit.relay_process import RelayProcess
from tests.integration.helpers.rtmp_ingest import TOKEN, create_stream, get_stream, wait_status

SRT_LIVE_TRANSMIT = shutil.which("srt-live-transmit")

pytestmark = needs_ffmpeg

#: Handshake types (draft-sharabayko-srt-01, table 4).
INDUCTION = 0x00000001
CONCLUSION = 0xFFFFFFFF


def handshake(version: int, handshake_type: int, socket_id: int, cookie: int = 0,
              extension: int = 2) -> bytes:
    """One SRT handshake control packet, 64 bytes, to destination socket 0 (the listener)."""
    header = struct.pack("!IIII", 0x80000000, 0, 0, 0)  # F=1, type 0, no info, ts, dest 0
    cif = struct.pack("!IHHIIIIII16s", version, 0, extension, random.getrandbits(31), 1500,
                      8192, handshake_type, socket_id, cookie, socket.inet_aton("127.0.0.1"))
    return header + cif


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.fixture
def relay(tmp_path: Path) -> Iterator[RelayProcess]:
    process = RelayProcess(tmp_path / "data", token=TOKEN).start()
    try:
        yield process
    finally:
        assert process.stop() == 0, process.log


def srt_address(relay: RelayProcess) -> tuple[str, int]:
    host, port = relay.urls["srt"].removeprefix("srt://").rsplit(":", 1)
    return host, int(port)


def test_floods_leave_the_honest_publisher_playing(relay: RelayProcess) -> None:
    stream = create_stream(relay)
    encoder = ffmpeg_publish(srt_url(relay.urls["srt"], stream["stream_key"],
                                     stream["srt_passphrase"]), 90, muxer="mpegts")
    try:
        wait_status(relay, stream["id"], "active", timeout=30)
        pid = relay.pid
        before = rss_kib(pid)
        target = srt_address(relay)
        with (socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as attacker,
              httpx.Client(base_url=relay.http_url, timeout=10) as client):
            playback = f"/{stream['playback_ids'][0]['id']}.m3u8"
            media = client.get(playback).text.splitlines()[-1]
            sent = 0
            for round_ in range(20):
                for _ in range(500):
                    attacker.sendto(os.urandom(random.randint(1, 1500)), target)
                    attacker.sendto(handshake(4, INDUCTION, random.getrandbits(31)), target)
                    attacker.sendto(handshake(5, CONCLUSION, random.getrandbits(31),
                                              cookie=random.getrandbits(32), extension=0x4A17),
                                    target)
                    sent += 3
                assert client.get("/healthz").status_code == 200, f"round {round_}"
                time.sleep(0.05)
            assert sent == 30_000
            # The honest session went on: still active, its playlist still moving.
            first = client.get("/" + media.lstrip("/")).text
            time.sleep(3)
            second = client.get("/" + media.lstrip("/")).text
        assert get_stream(relay, stream["id"])["status"] == "active"
        assert first != second, "the live playlist stopped moving during the flood"
        grown = rss_kib(pid) - before
        assert grown < 64 * 1024, f"RSS grew by {grown} KiB during the flood"
    finally:
        encoder.kill()
        finish(encoder)


@pytest.mark.skipif(SRT_LIVE_TRANSMIT is None, reason="srt-live-transmit is not installed")
def test_a_caller_that_never_sends_media_is_closed(relay: RelayProcess) -> None:
    """srt-live-transmit reading an idle UDP port: a connected caller with a valid key and
    passphrase that sends nothing. Relay closes it after its media deadline (10 s)."""
    assert SRT_LIVE_TRANSMIT is not None
    stream = create_stream(relay)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as idle:
        idle.bind(("127.0.0.1", 0))
        idle_port = idle.getsockname()[1]
    host, port = srt_address(relay)
    caller = subprocess.Popen(
        [SRT_LIVE_TRANSMIT, "-a:no", f"udp://127.0.0.1:{idle_port}",
         f"srt://{host}:{port}?streamid={stream['stream_key']}"
         f"&passphrase={stream['srt_passphrase']}"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline:
            if any("no audio or video track" in line for line in relay.lines):
                break
            time.sleep(0.2)
        else:
            raise AssertionError("the idle caller was not closed:\n" + relay.log)
        assert get_stream(relay, stream["id"])["status"] != "active"
    finally:
        caller.kill()
        caller.communicate(timeout=30)
