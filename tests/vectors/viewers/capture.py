"""Captures the responses in this folder from a real `relay serve`: run from the checkout's root,
    PYTHONPATH=. .venv/bin/python tests/vectors/viewers/capture.py [CLIP]

(CLIP: by default the suite's 600 kbit/s clip, benchmarks/media/600kbps-10s.flv, which
`benchmarks/suite.py --quick` makes.) It starts Relay, creates a `low` stream, publishes the
looped clip in real time with
the viewer simulator's paced publisher, and records, byte for byte as the socket gave them,
on one keep-alive connection with `Accept-Encoding: gzip` as the simulator sends it: the
media playlist, a blocking reload for the part after its newest, and that part."""

from __future__ import annotations

import asyncio
import socket
import sys
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any

import httpx

from benchmarks import loadgen
from benchmarks.viewers import Feed, listed_parts, wait_playlist
from testkit.relay_process import RelayProcess

HERE = Path(__file__).resolve().parent
CLIP = HERE.parents[2] / "benchmarks" / "media" / "600kbps-10s.flv"
TOKEN = ("capture", "capture-secret-0123456789-abcdefghijklmn")


def exchange(sock: socket.socket, host: str, path: str) -> bytes:
    """One request; the raw response (head and Content-Length body) as received."""
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nAccept-Encoding: gzip\r\n\r\n"
                 .encode("ascii"))
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head = data[:data.index(b"\r\n\r\n") + 4]
    length = next(int(line.split(b":", 1)[1]) for line in head.lower().split(b"\r\n")
                  if line.startswith(b"content-length:"))
    while len(data) < len(head) + length:
        data += sock.recv(65536)
    assert len(data) == len(head) + length, "a pipelined byte after the response"
    return data


async def capture(relay: RelayProcess, stream: dict[str, Any], clip: Path) -> None:
    playback_id = stream["playback_ids"][0]["id"]
    host, port = relay.urls["rtmp"].removeprefix("rtmp://").split("/")[0].rsplit(":", 1)
    feed = Feed(loadgen.read_flv(clip))
    await feed.start(host, int(port), stream["stream_key"])
    try:
        http_host, http_port = relay.http_url.removeprefix("http://").rsplit(":", 1)
        await wait_playlist(http_host, int(http_port), playback_id)
        await asyncio.sleep(5)  # a few segments, so that the playlist has a window

        def record() -> None:
            with socket.create_connection((http_host, int(http_port))) as sock:
                playlist = f"/{playback_id}/rendition.m3u8"
                first = exchange(sock, relay.http_url, playlist)
                (HERE / "playlist.http").write_bytes(first)
                body = first[first.index(b"\r\n\r\n") + 4:]
                parts, _ = listed_parts(zlib.decompress(body, 31).decode("ascii"))
                last = parts[-1]
                started = time.monotonic()
                reload = exchange(sock, relay.http_url, f"{playlist}?_HLS_msn={last.msn}"
                                  f"&_HLS_part={last.index + 1}")
                print(f"reload held {time.monotonic() - started:.3f} s")
                (HERE / "reload.http").write_bytes(reload)
                body = reload[reload.index(b"\r\n\r\n") + 4:]
                new = [p for p in listed_parts(zlib.decompress(body, 31).decode("ascii"))[0]
                       if (p.msn, p.index) > (last.msn, last.index)]
                (HERE / "part.http").write_bytes(
                    exchange(sock, relay.http_url, f"/{playback_id}/{new[0].uri}"))

        await asyncio.to_thread(record)
    finally:
        await feed.stop()


def main() -> None:
    with tempfile.TemporaryDirectory() as work:
        relay = RelayProcess(Path(work), token=TOKEN).start()
        try:
            with httpx.Client(base_url=relay.http_url, auth=TOKEN, timeout=15) as api:
                stream = api.post("/video/v1/live-streams", json={
                    "playback_policies": ["public"], "latency_mode": "low"}).json()["data"]
            asyncio.run(capture(relay, stream, Path(sys.argv[1]) if sys.argv[1:] else CLIP))
        finally:
            relay.stop()


if __name__ == "__main__":
    main()
