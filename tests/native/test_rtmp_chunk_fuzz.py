"""Mutation fuzz of ChunkDemuxer: whatever a peer sends, only ChunkError, and memory stays bounded.

Valid chunk streams made by ChunkMuxer are mutated (bit flips, interesting bytes, inserts,
deletes, duplicated ranges, truncation, splices, runs of new chunk streams) and demuxed under
small limits, both whole and cut at random points. Checked on every case:
  * the only exception is ChunkError (no crash, no other exception);
  * `buffered` never exceeds max_buffered, `allocated` stays within its bound, and memory traced
    by tracemalloc (every few cases, as it is slow) stays within max_buffered-derived bounds;
  * messages respect max_message_size and the chunk size stays within 128..65536;
  * the split does not matter: the same messages and the same error come out whole and in pieces
    (unless the error is the max_buffered bound, which depends on how much arrives at once);
  * release() frees everything.

Runs for RELAY_FUZZ_SECONDS (default 3). RELAY_FUZZ_SEED replays a run; a failure names its
seed, case number and input.
"""

from __future__ import annotations

import os
import random
import time
import tracemalloc
from dataclasses import dataclass

from relay._native.rtmp_chunk import (
    MAX_CHUNK_STREAMS,
    ChunkDemuxer,
    ChunkError,
    ChunkMuxer,
)

FUZZ_SECONDS = float(os.environ.get("RELAY_FUZZ_SECONDS", "3"))
SEED = int(os.environ.get("RELAY_FUZZ_SEED", str(random.SystemRandom().randrange(2**32))))

CSIDS = [2, 3, 4, 5, 6, 8, 63, 64, 65, 319, 320, 1000, 65599]
INTERESTING_BYTES = [0x00, 0x01, 0x02, 0x3F, 0x40, 0x41, 0x7F, 0x80, 0xBF, 0xC0, 0xC3, 0xFF]
INTERESTING_FIELDS = [
    b"\xff\xff\xff", b"\x00\x00\x00", b"\x7f\xff\xff\xff", b"\x80\x00\x00\x00",
    b"\x00\x00\x00\x7f", b"\x00\x01\x00\x00", b"\x00\x01\x00\x01", b"\x00\x00\x00\x04",
]
# The most memory the tracemalloc check allows beyond the demuxer's own bounds: the test's own
# slices and message objects, tracemalloc's bookkeeping, and the chunk stream records.
SLACK = 64 * 1024
RECORD_TABLE = MAX_CHUNK_STREAMS * 64


@dataclass
class Outcome:
    messages: list[tuple[int, int, int, int, bytes]]
    error: str | None


def valid_stream(rng: random.Random) -> bytes:
    """A muxer-made stream: media and control messages, chunk size changes, extended times."""
    muxer = ChunkMuxer()
    if rng.random() < 0.5:
        muxer.write_set_chunk_size(rng.choice([256, 4096]))
    csids = rng.sample(CSIDS, rng.randint(1, 4))
    clock = rng.choice([0, 1000, 0xFFFFF0, 0xFFFFFFF0, rng.randrange(2**32)])
    for _ in range(rng.randint(1, 12)):
        roll = rng.random()
        if roll < 0.1:
            muxer.write_set_chunk_size(rng.choice([128, 129, 200, 4096, 65536]))
        elif roll < 0.15:
            muxer.write_message(2, 2, 0, 0, rng.choice(csids).to_bytes(4, "big"))  # Abort
        elif roll < 0.2:
            muxer.write_message(2, rng.choice([3, 5]), 0, 0, rng.randbytes(4))
        elif roll < 0.25:
            muxer.write_message(2, 6, 0, 0, rng.randbytes(4) + bytes([rng.randrange(3)]))
        else:
            clock = (clock + rng.choice([0, 0, 20, 23, 0xFFFFFF, 0x1000000,
                                         rng.randrange(2**32)])) % 2**32
            length = rng.choice([0, 1, 127, 128, 129, 300, rng.randrange(700)])
            muxer.write_message(rng.choice(csids), rng.choice([8, 9, 18, 20]),
                                rng.choice([0, 1, 1, 7]), clock, rng.randbytes(length))
    return muxer.take()


def basic_fmt0(csid: int) -> bytes:
    """RTMP 5.3.1.1 basic header of a fmt 0 chunk, in its shortest form."""
    if csid < 64:
        return bytes([csid])
    if csid < 320:
        return bytes([0, csid - 64])
    return bytes([1, (csid - 64) % 256, (csid - 64) // 256])


def mutate(rng: random.Random, data: bytes, corpus: list[bytes]) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        kind = rng.randrange(11)
        at = rng.randrange(len(buf) + 1)
        if kind == 0 and buf:
            buf[at % len(buf)] ^= 1 << rng.randrange(8)
        elif kind == 1 and buf:
            buf[at % len(buf)] = rng.randrange(256)
        elif kind == 2 and buf:
            buf[at % len(buf)] = rng.choice(INTERESTING_BYTES)
        elif kind == 3:
            buf[at:at] = rng.randbytes(rng.randint(1, 16))
        elif kind == 4:
            del buf[at : at + rng.randint(1, 32)]
        elif kind == 5 and buf:
            start = rng.randrange(len(buf))
            buf[at:at] = buf[start : start + rng.randint(1, 200)]
        elif kind == 6:
            del buf[at:]
        elif kind == 7:
            field = rng.choice(INTERESTING_FIELDS)
            buf[at : at + len(field)] = field
        elif kind == 8:
            other = rng.choice(corpus)
            start = rng.randrange(len(other) + 1)
            buf[at:] = other[start:]
        elif kind == 9:
            # Many chunk streams at once: zero-length fmt 0 messages on random csids.
            buf[at:at] = b"".join(
                basic_fmt0(rng.choice([rng.randrange(2, 64), rng.randrange(2, 65600)]))
                + bytes(10) for _ in range(rng.randint(1, 2 * MAX_CHUNK_STREAMS)))
        else:
            buf = bytearray(rng.randbytes(rng.randint(0, 64)))
    return bytes(buf)


def demux(data: bytes, cuts: list[int], via_get_buffer: list[bool], max_message_size: int,
          max_buffered: int) -> Outcome:
    demuxer = ChunkDemuxer(max_message_size=max_message_size, max_buffered=max_buffered)
    outcome = Outcome([], None)
    try:
        for index, (start, end) in enumerate(zip([0, *cuts], [*cuts, len(data)], strict=True)):
            piece = data[start:end]
            if via_get_buffer[index % len(via_get_buffer)] and piece:
                offset = 0
                while offset < len(piece):
                    with demuxer.get_buffer(len(piece) - offset) as view:
                        n = min(len(view), len(piece) - offset)
                        view[:n] = piece[offset : offset + n]
                    demuxer.buffer_updated(n)
                    offset += n
            else:
                demuxer.feed(piece)
            check_bounds(demuxer, max_buffered)
            while (message := demuxer.next_message()) is not None:
                assert len(message.payload) <= max_message_size
                assert 128 <= demuxer.chunk_size <= 65536
                outcome.messages.append((message.csid, message.type_id, message.timestamp,
                                         message.stream_id, message.payload))
                check_bounds(demuxer, max_buffered)
            check_bounds(demuxer, max_buffered)
    except ChunkError as exc:
        outcome.error = str(exc)
        assert outcome.error and "\n" not in outcome.error
        check_bounds(demuxer, max_buffered)
    assert demuxer.bytes_received <= len(data)
    demuxer.release()
    assert (demuxer.allocated, demuxer.buffered) == (0, 0)
    return outcome


def check_bounds(demuxer: ChunkDemuxer, max_buffered: int) -> None:
    assert 0 <= demuxer.buffered <= max_buffered
    # Input allocation (<= max_buffered) + reserved payloads (<= max_buffered) + records.
    assert demuxer.allocated <= 2 * max_buffered + RECORD_TABLE


def test_mutated_chunk_streams_raise_only_chunk_error_within_bounds() -> None:
    rng = random.Random(SEED)
    corpus = [valid_stream(rng) for _ in range(64)]
    deadline = time.monotonic() + FUZZ_SECONDS
    tracemalloc.start()
    cases = errors = 0
    try:
        while cases < 50 or time.monotonic() < deadline:
            cases += 1
            original = rng.choice(corpus) if rng.random() < 0.7 else valid_stream(rng)
            data = original if rng.random() < 0.05 else mutate(rng, original, corpus)
            max_message_size = rng.choice([64, 700, 8192])
            max_buffered = rng.choice([256, 2048, 65536])
            cuts = sorted(rng.sample(range(len(data) + 1), min(len(data) + 1,
                                                                rng.randint(0, 40))))
            ways = [rng.random() < 0.5 for _ in range(4)]
            context = (f"seed={SEED} case={cases} max_message_size={max_message_size} "
                       f"max_buffered={max_buffered} input={data.hex()}")
            measure = cases % 8 == 0
            if measure:
                tracemalloc.reset_peak()
                before = tracemalloc.get_traced_memory()[0]
            try:
                whole = demux(data, [], [False], max_message_size, max_buffered)
                pieces = demux(data, cuts, ways, max_message_size, max_buffered)
            except AssertionError as exc:
                raise AssertionError(f"{exc}: {context}") from exc
            if measure:
                peak = tracemalloc.get_traced_memory()[1] - before
                assert peak <= 2 * max_buffered + max_message_size + RECORD_TABLE + SLACK, (
                    f"{peak} bytes traced: {context}")
            if whole.error is not None:
                errors += 1
            split_dependent = any("max_buffered" in (outcome.error or "")
                                  for outcome in (whole, pieces))
            if not split_dependent:
                assert (pieces.messages, pieces.error) == (whole.messages, whole.error), context
            if data == original and max_message_size >= 700 and max_buffered == 65536:
                assert whole.error is None, context  # an unmutated stream is valid
    finally:
        tracemalloc.stop()
    # The fuzz must reach both outcomes, or it is not exploring.
    assert 0 < errors < cases, f"{errors} errors in {cases} cases (seed={SEED})"
