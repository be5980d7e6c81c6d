"""Capture what a real encoder sends to Relay: ffmpeg -> recording TCP proxy -> relay serve.

    .venv/bin/python -m tests.integration.capture_rtmp OUT.bin [--seconds 3] [--size 320x240]
        [--bitrate 400k]

writes every byte ffmpeg sent (C0, C1, C2, then the chunk stream) to OUT.bin. The parser
tests and the chunk demuxer benchmark replay such files; tests/vectors/rtmp/README.md lists
the committed ones with the command that made each.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path

import httpx

from testkit.encoders import ffmpeg_publish, finish
from testkit.relay_process import RelayProcess

TOKEN = ("capture", "capture-secret-0123456789-abcdefghijklm")


async def _proxy(upstream_port: int, captured: bytearray) -> tuple[asyncio.Server, int]:
    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                   record: bool) -> None:
        try:
            while data := await reader.read(65536):
                if record:
                    captured.extend(data)
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def handle(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        server_r, server_w = await asyncio.open_connection("127.0.0.1", upstream_port)
        await asyncio.gather(pipe(client_r, server_w, True), pipe(server_r, client_w, False))

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def capture(out: Path, seconds: float, size: str, bitrate: str) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        relay = RelayProcess(Path(tmp), token=TOKEN).start()
        try:
            async with httpx.AsyncClient(base_url=relay.http_url, auth=TOKEN) as client:
                response = await client.post("/video/v1/live-streams",
                                             json={"playback_policies": ["public"]})
                key = response.json()["data"]["stream_key"]
            rtmp_port = int(relay.urls["rtmp"].rsplit(":", 1)[1].split("/")[0])
            captured = bytearray()
            proxy, port = await _proxy(rtmp_port, captured)
            encoder = ffmpeg_publish(f"rtmp://127.0.0.1:{port}/app/{key}", seconds,
                                     size=size, extra=("-b:v", bitrate))
            code, err = await asyncio.to_thread(finish, encoder)
            proxy.close()
            await proxy.wait_closed()
            if code != 0:
                print(err, file=sys.stderr)
                return 1
        finally:
            relay.stop()
    await asyncio.to_thread(out.write_bytes, bytes(captured))
    print(f"{out}: {len(captured)} bytes from ffmpeg ({seconds:g}s of {size} at {bitrate})")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--size", default="320x240")
    parser.add_argument("--bitrate", default="400k")
    args = parser.parse_args()
    return asyncio.run(capture(args.out, args.seconds, args.size, args.bitrate))


if __name__ == "__main__":
    sys.exit(main())
