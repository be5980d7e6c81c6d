"""CPU of a publishing RTMP connection's Python path per read, before the hub: the session
(handshake done), the chunk demuxer, timestamp unwrapping and FLV tag parsing, old and new.

Usage: .venv/bin/python benchmarks/ingest_path.py [--input FILE.flv] [--runs N]
    [--reads chunk|ffmpeg]

FILE is an FLV file (default: the suite's 6 Mbit/s clip, benchmarks/media/6mbps-20s.flv,
which `suite.py` or `ingest_probe.py` makes). Its audio and video tags are muxed as RTMP
messages with ChunkMuxer at chunk size 4096, as ffmpeg publishes them, and the chunk stream
is cut into one read per chunk (`--reads chunk`, the default), or as ffmpeg's writes arrive
(`--reads ffmpeg`: rtmppkt.c ff_rtmp_packet_write writes each chunk's header and its body apart,
and under Nagle the header of a message goes alone; strace of a push shows about half of the
reads are such headers). Both paths take the same reads after the same connect and publish:

- per-message: `ServerSession()`, one `MediaMessage` event per message, then what
  `relay.rtmp.server` did with each: `TimestampUnwrapper.unwrap`, `parse_video_tag` /
  `parse_audio_tag`, and a call per unit standing in for the hub;
- batch: `ServerSession(parse_media=True)`: one native call per read
  (relay._native.rtmp_ingest), one `MediaBatch` event, and a call per unit likewise.

Prints the median over runs (alternating between the paths) of CPU microseconds per read
and per media message.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from relay._native.rtmp_chunk import ChunkMuxer  # noqa: E402
from relay.media.flv import FlvError, parse_audio_tag, parse_video_tag  # noqa: E402
from relay.media.timestamps import TimestampUnwrapper  # noqa: E402
from relay.media.units import AudioConfig, MediaFrame, VideoConfig  # noqa: E402
from relay.rtmp.client import ClientSession  # noqa: E402
from relay.rtmp.session import (  # noqa: E402
    MediaBatch,
    MediaMessage,
    PublishRequested,
    ServerSession,
)

#: The suite's 6 Mbit/s clip (made by `suite.py` or `ingest_probe.py`).
DEFAULT_CLIP = ROOT / "benchmarks/media/6mbps-20s.flv"
CHUNK_SIZE = 4096
CHUNK_READ = CHUNK_SIZE + 12  # a chunk's payload and a typical header: one read per chunk


def flv_tags(data: bytes) -> list[tuple[int, int, bytes]]:
    """(type_id, timestamp, body) of each audio and video tag of an FLV file (FLV E.3)."""
    pos = int.from_bytes(data[5:9], "big") + 4
    tags = []
    while pos + 11 <= len(data):
        type_id = data[pos] & 0x1F
        size = int.from_bytes(data[pos + 1:pos + 4], "big")
        ts = int.from_bytes(data[pos + 4:pos + 7], "big") | data[pos + 7] << 24
        body = data[pos + 11:pos + 11 + size]
        if type_id in (8, 9):
            tags.append((type_id, ts, body))
        pos += 11 + size + 4
    return tags


def clip_tags(path: Path) -> list[tuple[int, int, bytes]] | None:
    """`flv_tags` of the clip at `path`; None, said on stderr, when it is missing."""
    if not path.is_file():
        print(f"{path} is missing: run benchmarks/ingest_probe.py once to make the suite's "
              "clips, or pass --input", file=sys.stderr)
        return None
    return flv_tags(path.read_bytes())


def ffmpeg_reads(message: bytes) -> list[bytes]:
    """One message's chunks (ChunkMuxer's, csid < 64) as reads: its first chunk header
    alone, then the rest (Nagle holds the following writes until that header is acked)."""
    fmt = message[0] >> 6
    size = (12, 8, 4, 1)[fmt]
    if fmt < 3 and int.from_bytes(message[1:4], "big") == 0xFFFFFF:
        size += 4
    return [message[:size], message[size:]]


def connection_bytes(tags: list[tuple[int, int, bytes]], reads_as: str = "chunk", *,
                     stream_key: str = "key") -> tuple[bytes, list[bytes]]:
    """The client's bytes up to an accepted publish, then the media as reads."""
    client = ClientSession(tc_url="rtmp://127.0.0.1/app", stream_key=stream_key,
                           random_bytes=lambda n: bytes(n), chunk_size=CHUNK_SIZE)
    server = ServerSession(random_bytes=bytes)
    preamble = bytearray(client.initial_bytes())
    server.receive_data(bytes(preamble))
    for _ in range(10):
        while (event := server.next_event()) is not None:
            if isinstance(event, PublishRequested):
                server.accept_publish()
        client.receive_data(server.data_to_send())
        more = client.data_to_send()
        if not more:
            break
        preamble += more
        server.receive_data(more)
    muxer = ChunkMuxer(CHUNK_SIZE)
    reads = []
    for type_id, ts, body in tags:
        muxer.write_message(6 if type_id == 9 else 4, type_id, 1, ts, body)
        message = muxer.take()
        if reads_as == "ffmpeg":
            reads += ffmpeg_reads(message)
        else:
            reads += [message[i:i + CHUNK_READ] for i in range(0, len(message), CHUNK_READ)]
    return bytes(preamble), reads


def publish(server: ServerSession, preamble: bytes) -> None:
    server.receive_data(preamble)
    while (event := server.next_event()) is not None:
        if isinstance(event, PublishRequested):
            server.accept_publish()
    server.data_to_send()


def per_message(preamble: bytes, reads: list[bytes]) -> tuple[float, int]:
    server = ServerSession(random_bytes=bytes)
    publish(server, preamble)
    timestamps = TimestampUnwrapper()
    sink: list[object] = []
    hub = sink.append
    units = 0
    start = time.process_time()
    for read in reads:
        server.receive_data(read)
        server.new_turn()
        while (event := server.next_event()) is not None:
            if isinstance(event, MediaMessage):
                dts = timestamps.unwrap(event.timestamp)
                try:
                    if event.type_id == 9:
                        unit: object = parse_video_tag(event.payload, dts)
                    else:
                        unit = parse_audio_tag(event.payload, dts)
                except FlvError:
                    continue
                if isinstance(unit, MediaFrame | VideoConfig | AudioConfig):
                    hub(unit)
        sink.clear()
        units += 1
    return time.process_time() - start, units


def batch(preamble: bytes, reads: list[bytes]) -> tuple[float, int]:
    server = ServerSession(random_bytes=bytes, parse_media=True)
    publish(server, preamble)
    sink: list[object] = []
    hub = sink.append
    start = time.process_time()
    for read in reads:
        server.receive_data(read)
        server.new_turn()
        while (event := server.next_event()) is not None:
            if isinstance(event, MediaBatch):
                for unit in event.units:
                    hub(unit)
        sink.clear()
    return time.process_time() - start, len(reads)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--input", type=Path, default=DEFAULT_CLIP)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--reads", choices=("chunk", "ffmpeg"), default="chunk",
                        help="cut the stream into one read per chunk, or as ffmpeg writes it")
    args = parser.parse_args()
    tags = clip_tags(args.input)
    if tags is None:
        return 2
    preamble, reads = connection_bytes(tags, args.reads)
    print(f"{args.input.name}: {len(tags)} media messages in {len(reads)} reads")
    # The runs alternate between the paths, so that load from elsewhere on the machine
    # weighs on both alike.
    times: dict[str, list[float]] = {"per-message": [], "batch": []}
    for _ in range(args.runs):
        times["per-message"].append(per_message(preamble, reads)[0])
        times["batch"].append(batch(preamble, reads)[0])
    for name, runs in times.items():
        seconds = statistics.median(runs)
        print(f"  {name:12} {seconds * 1e6 / len(reads):6.2f} us per read, "
              f"{seconds * 1e6 / len(tags):6.2f} us per message "
              f"(median of {args.runs} runs, CPU time)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
