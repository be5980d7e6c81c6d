"""pyrtmp's chunk reader on the same bytes as chunk_demux.py, for the comparison row.

Usage (pyrtmp is not a Relay dependency; give it a venv of its own):

    python3 -m venv /tmp/pyrtmp && /tmp/pyrtmp/bin/pip install pyrtmp==0.3.1
    /tmp/pyrtmp/bin/python benchmarks/pyrtmp_chunks.py --input FILE [--with-handshake] [--seconds N]

Each run feeds the whole stream to an `asyncio.StreamReader` and reads it back through
`SessionManager.read_chunks_from_stream()`, applying Set Chunk Size to `reader_chunk_size` as
pyrtmp's own controller does. pyrtmp reports the end of input as an exception, which ends a
run. Prints the median MB/s (10**6 bytes of chunk stream input per second) of the runs and
the message count, to be checked against chunk_demux.py's.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

from pyrtmp.session_manager import SessionManager  # type: ignore[import-not-found]

HANDSHAKE_BYTES = 1 + 1536 + 1536  # C0, C1, C2 (RTMP 5.2)
SET_CHUNK_SIZE = 1


async def read_all(stream: bytes) -> tuple[int, int]:
    reader = asyncio.StreamReader(limit=len(stream) + 1)
    reader.feed_data(stream)
    reader.feed_eof()
    session = SessionManager(reader=reader, writer=None)
    count = payload_bytes = 0
    try:
        async for chunk in session.read_chunks_from_stream():
            count += 1
            payload_bytes += len(chunk.payload)
            if chunk.msg_type_id == SET_CHUNK_SIZE:
                session.reader_chunk_size = int.from_bytes(chunk.payload, "big")
    except Exception:  # pyrtmp signals the end of input this way
        pass
    return count, payload_bytes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--input", type=Path, required=True)
    parser.add_argument("--with-handshake", action="store_true",
                        help="the file starts with C0+C1+C2; skip those 3073 bytes")
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    stream = args.input.read_bytes()
    if args.with_handshake:
        stream = stream[HANDSHAKE_BYTES:]
    rates: list[float] = []
    deadline = time.perf_counter() + args.seconds
    count = payload_bytes = 0
    while len(rates) < 3 or time.perf_counter() < deadline:
        start = time.perf_counter()
        count, payload_bytes = asyncio.run(read_all(stream))
        rates.append(len(stream) / (time.perf_counter() - start) / 1e6)
    print(f"input: {args.input} ({len(stream):,} bytes of chunk stream); {count} messages, "
          f"{payload_bytes:,} payload bytes")
    print(f"pyrtmp demux: median {statistics.median(rates):,.1f} MB/s over {len(rates)} runs "
          f"(min {min(rates):,.1f}, max {max(rates):,.1f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
