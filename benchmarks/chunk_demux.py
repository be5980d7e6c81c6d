"""Throughput of the RTMP chunk demuxer and muxer (relay._native.rtmp_chunk).

Usage: .venv/bin/python benchmarks/chunk_demux.py [--seconds N] [--input FILE [--with-handshake]]

Without --input it builds, with ChunkMuxer, what an encoder like ffmpeg sends after connect and
publish: Set Chunk Size 4096, then 30 fps H.264-sized video messages (csid 6, tens of KB, a large
keyframe every 2 s) interleaved message by message with AAC-sized audio messages (csid 4, a few
hundred bytes, ~47 per second), timestamps in milliseconds. With --input it reads the raw
client-to-server bytes after the RTMP handshake from FILE instead.

The demuxer is driven as asyncio drives a BufferedProtocol under uvloop: get_buffer(65536) (libuv's
read size), a copy into the view standing in for recv_into(), buffer_updated(), then
next_message() until it returns None. Each run demuxes the whole stream (several times over if it
is small) and the median run is reported, in MB/s of chunk stream input (1 MB = 10**6 bytes).
The muxer figure is the rate of chunked output when writing the same messages.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

from relay._native.rtmp_chunk import ChunkDemuxer, ChunkError, ChunkMuxer, RtmpMessage

READ_SIZE = 65536  # what libuv suggests per read, and so what uvloop asks get_buffer() for
CHUNK_SIZE = 4096  # what ffmpeg and OBS announce with Set Chunk Size when publishing
AUDIO_CSID, VIDEO_CSID = 4, 6
AUDIO, VIDEO = 8, 9  # RTMP 7.1 message type ids
MEDIA_STREAM_ID = 1
HANDSHAKE_BYTES = 1 + 1536 + 1536  # C0, C1, C2 (RTMP 5.2)
MIN_RUN_SECONDS = 0.2  # a run repeats the stream until it has lasted this long

Message = tuple[int, int, int, int, bytes]  # csid, type_id, stream_id, timestamp, payload


def synthetic_messages(media_seconds: int, seed: int = 1) -> list[Message]:
    """Messages of an ~6 Mbit/s 30 fps video + 128 kbit/s AAC publish, in send order."""
    rng = random.Random(seed)
    video_period_ms, audio_period_ms = 1000 / 30, 1024_000 / 48_000  # AAC: 1024 samples/frame
    events: list[tuple[float, int]] = []
    events += [(i * video_period_ms, VIDEO) for i in range(int(media_seconds * 30))]
    events += [(i * audio_period_ms, AUDIO) for i in range(int(media_seconds * 48_000 / 1024))]
    events.sort()
    messages: list[Message] = []
    video_frames = 0
    for at, kind in events:
        if kind == VIDEO:
            keyframe = video_frames % 60 == 0
            size = rng.randint(120_000, 180_000) if keyframe else rng.randint(12_000, 36_000)
            video_frames += 1
            messages.append((VIDEO_CSID, VIDEO, MEDIA_STREAM_ID, int(at), rng.randbytes(size)))
        else:
            size = rng.randint(330, 380)
            messages.append((AUDIO_CSID, AUDIO, MEDIA_STREAM_ID, int(at), rng.randbytes(size)))
    return messages


def chunk_stream(messages: list[Message]) -> bytes:
    """The chunked bytes a client sends for messages, after Set Chunk Size."""
    muxer = ChunkMuxer()
    muxer.write_set_chunk_size(CHUNK_SIZE)
    for csid, type_id, stream_id, timestamp, payload in messages:
        muxer.write_message(csid, type_id, stream_id, timestamp, payload)
    return muxer.take()


def demux_all(stream: bytes, sink: list[RtmpMessage] | None = None) -> tuple[int, int]:
    """Demux stream as a BufferedProtocol would; return (messages, payload bytes)."""
    demuxer = ChunkDemuxer()
    source = memoryview(stream)
    count = payload_bytes = 0
    offset, end = 0, len(stream)
    get_buffer, buffer_updated = demuxer.get_buffer, demuxer.buffer_updated
    next_message = demuxer.next_message
    while offset < end:
        with get_buffer(READ_SIZE) as view:
            n = min(len(view), end - offset)
            view[:n] = source[offset : offset + n]  # stands in for sock.recv_into(view)
        buffer_updated(n)
        offset += n
        while (message := next_message()) is not None:
            count += 1
            payload_bytes += len(message.payload)
            if sink is not None:
                sink.append(message)
    demuxer.release()
    return count, payload_bytes


def timed_runs(work: Callable[[], object], nbytes: int, seconds: float) -> list[float]:
    """MB/s of each run of work (repeated within a run to last MIN_RUN_SECONDS)."""
    rates: list[float] = []
    deadline = time.perf_counter() + seconds
    while len(rates) < 5 or time.perf_counter() < deadline:
        repeats = 0
        start = time.perf_counter()
        while True:
            work()
            repeats += 1
            elapsed = time.perf_counter() - start
            if elapsed >= MIN_RUN_SECONDS:
                break
        rates.append(repeats * nbytes / elapsed / 1e6)
    return rates


def describe(rates: list[float]) -> str:
    return (f"median {statistics.median(rates):,.0f} MB/s over {len(rates)} runs "
            f"(min {min(rates):,.0f}, max {max(rates):,.0f})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0,
                        help="measuring time for each of demux and mux (default 5)")
    parser.add_argument("--input", type=Path,
                        help="raw client->server chunk stream bytes, after the handshake")
    parser.add_argument("--with-handshake", action="store_true",
                        help="--input starts with C0+C1+C2 (as tests/vectors/rtmp/"
                        "ffmpeg_publish_320x240.bin does); skip those 3073 bytes")
    args = parser.parse_args(argv)

    if args.input is not None:
        stream = args.input.read_bytes()
        if args.with_handshake:
            stream = stream[HANDSHAKE_BYTES:]
        source = f"{args.input} ({len(stream):,} bytes of chunk stream)"
    else:
        messages = synthetic_messages(media_seconds=10)
        stream = chunk_stream(messages)
        source = (f"synthetic publish: {len(messages)} messages, 10 s of 30 fps video + AAC, "
                  f"chunk size {CHUNK_SIZE}, {len(stream):,} bytes")
    found: list[RtmpMessage] = []
    try:
        count, payload_bytes = demux_all(stream, found)
    except ChunkError as exc:
        print(f"{source}: not a valid chunk stream: {exc}", file=sys.stderr)
        return 1
    print(f"input: {source}; {count} messages, {payload_bytes:,} payload bytes")

    demux_rates = timed_runs(lambda: demux_all(stream), len(stream), args.seconds)
    print(f"demux: {describe(demux_rates)}")

    # The muxer rewrites what the demuxer found (less Set Chunk Size: chunk_stream sends its own),
    # so --input files are measured the same way.
    as_tuples = [(m.csid, m.type_id, m.stream_id, m.timestamp, m.payload) for m in found
                 if m.type_id != 1]
    muxed = len(chunk_stream(as_tuples))
    mux_rates = timed_runs(lambda: chunk_stream(as_tuples), muxed, args.seconds)
    print(f"mux:   {describe(mux_rates)} (output bytes, chunk size {CHUNK_SIZE})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
