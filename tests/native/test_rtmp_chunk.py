"""ChunkDemuxer and ChunkMuxer: RTMP 5.3 chunk headers both ways, 5.4 control, bounds, splits."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from itertools import pairwise
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relay._native.rtmp_chunk import (
    DEFAULT_MAX_BUFFERED,
    DEFAULT_MAX_MESSAGE_SIZE,
    MAX_CHUNK_STREAMS,
    ChunkDemuxer,
    ChunkError,
    ChunkMuxer,
    MessageTooLong,
    RtmpMessage,
    chunk_tail,
)

# (csid, type_id, timestamp, stream_id, payload): what a test expects a message to be.
Expected = tuple[int, int, int, int, bytes]

# --- chunks built by hand from RTMP 5.3.1, independently of the code under test ----------------


def basic(fmt: int, csid: int) -> bytes:
    """5.3.1.1 basic header, in its shortest form."""
    if csid < 64:
        return bytes([fmt << 6 | csid])
    if csid < 320:
        return bytes([fmt << 6, csid - 64])
    return bytes([fmt << 6 | 1, (csid - 64) % 256, (csid - 64) // 256])


def timestamp_fields(value: int) -> tuple[bytes, bytes]:
    """The 24-bit timestamp field and the 5.3.1.3 extended timestamp (empty when not needed)."""
    if value >= 0xFFFFFF:
        return b"\xff\xff\xff", value.to_bytes(4, "big")
    return value.to_bytes(3, "big"), b""


def chunk0(csid: int, timestamp: int, length: int, type_id: int, stream_id: int,
           body: bytes) -> bytes:
    field, extended = timestamp_fields(timestamp)
    return (basic(0, csid) + field + length.to_bytes(3, "big") + bytes([type_id])
            + stream_id.to_bytes(4, "little") + extended + body)


def chunk1(csid: int, delta: int, length: int, type_id: int, body: bytes) -> bytes:
    field, extended = timestamp_fields(delta)
    return basic(1, csid) + field + length.to_bytes(3, "big") + bytes([type_id]) + extended + body


def chunk2(csid: int, delta: int, body: bytes) -> bytes:
    field, extended = timestamp_fields(delta)
    return basic(2, csid) + field + extended + body


def chunk3(csid: int, body: bytes, extended: int | None = None) -> bytes:
    return basic(3, csid) + (b"" if extended is None else extended.to_bytes(4, "big")) + body


def control(type_id: int, payload: bytes, csid: int = 2, stream_id: int = 0) -> bytes:
    """A one-chunk protocol control message (RTMP 5.4)."""
    return chunk0(csid, 0, len(payload), type_id, stream_id, payload)


def set_chunk_size(size: int, csid: int = 2) -> bytes:
    return control(1, size.to_bytes(4, "big"), csid)


def abort(csid: int) -> bytes:
    return control(2, csid.to_bytes(4, "big"))


AUDIO = bytes(range(256)) + bytes(range(44))  # 300 bytes: three chunks at chunk size 128
VIDEO = bytes(reversed(range(150)))           # 150 bytes: two chunks
BODY = bytes(i * 7 % 251 for i in range(130))  # 130 bytes: 128 + 2

# --- running a demuxer -------------------------------------------------------------------------


def as_tuple(message: RtmpMessage) -> Expected:
    return (message.csid, message.type_id, message.timestamp, message.stream_id,
            message.payload)


def drain(demuxer: ChunkDemuxer) -> list[Expected]:
    messages = []
    while (message := demuxer.next_message()) is not None:
        messages.append(as_tuple(message))
    return messages


def receive(demuxer: ChunkDemuxer, data: bytes) -> None:
    """Deliver data as asyncio.BufferedProtocol does: get_buffer, write, buffer_updated."""
    offset = 0
    while offset < len(data):
        with demuxer.get_buffer(len(data) - offset) as view:
            n = min(len(view), len(data) - offset)
            view[:n] = data[offset : offset + n]
        demuxer.buffer_updated(n)
        offset += n


def demux_whole(data: bytes, **limits: int) -> tuple[ChunkDemuxer, list[Expected]]:
    demuxer = ChunkDemuxer(**limits)
    demuxer.feed(data)
    return demuxer, drain(demuxer)


def demux_bytewise(data: bytes, **limits: int) -> tuple[ChunkDemuxer, list[Expected]]:
    # Alternate the two ways in: one byte through feed(), the next through get_buffer().
    demuxer = ChunkDemuxer(**limits)
    messages = []
    for index in range(len(data)):
        if index % 2:
            receive(demuxer, data[index : index + 1])
        else:
            demuxer.feed(data[index : index + 1])
        messages += drain(demuxer)
    return demuxer, messages


FEEDERS: list[Callable[..., tuple[ChunkDemuxer, list[Expected]]]] = [demux_whole, demux_bytewise]


# --- decoding: hand-built vectors --------------------------------------------------------------

# (id, chunk bytes, expected messages, chunk size after)
DECODE_VECTORS: list[tuple[str, bytes, list[Expected], int]] = [
    (
        "fmt0-literal",
        bytes.fromhex("03" "000000" "000005" "14" "00000000") + b"hello",
        [(3, 20, 0, 0, b"hello")],
        128,
    ),
    (
        "csid64-two-byte-literal",
        bytes.fromhex("0000" "000010" "000001" "09" "01000000" "aa"),
        [(64, 9, 16, 1, b"\xaa")],
        128,
    ),
    (
        "csid320-three-byte-literal",
        bytes.fromhex("010001" "000000" "000001" "08" "00000000" "bb"),
        [(320, 8, 0, 0, b"\xbb")],
        128,
    ),
    (
        "csid64-in-three-byte-form",
        bytes.fromhex("010000" "000000" "000001" "08" "00000000" "cc"),
        [(64, 8, 0, 0, b"\xcc")],
        128,
    ),
    (
        "csid-widths",
        chunk0(63, 1, 1, 8, 1, b"a") + chunk0(319, 2, 1, 8, 1, b"b")
        + chunk0(65599, 3, 1, 8, 1, b"c") + chunk3(65599, b"d"),
        [(63, 8, 1, 1, b"a"), (319, 8, 2, 1, b"b"), (65599, 8, 3, 1, b"c"),
         (65599, 8, 6, 1, b"d")],
        128,
    ),
    (
        "stream-id-little-endian",
        chunk0(5, 0, 1, 18, 0x01020304, b"x"),
        [(5, 18, 0, 0x01020304, b"x")],
        128,
    ),
    (
        "fmt1-new-length-and-type",
        chunk0(4, 100, 3, 8, 1, b"abc") + chunk1(4, 23, 5, 9, b"defgh"),
        [(4, 8, 100, 1, b"abc"), (4, 9, 123, 1, b"defgh")],
        128,
    ),
    (
        "fmt2-new-delta",
        chunk0(4, 1000, 3, 8, 1, b"abc") + chunk2(4, 33, b"def"),
        [(4, 8, 1000, 1, b"abc"), (4, 8, 1033, 1, b"def")],
        128,
    ),
    (
        "fmt3-repeats-delta",
        chunk0(4, 1000, 3, 8, 1, b"abc") + chunk2(4, 33, b"def") + chunk3(4, b"ghi")
        + chunk3(4, b"jkl"),
        [(4, 8, 1000, 1, b"abc"), (4, 8, 1033, 1, b"def"), (4, 8, 1066, 1, b"ghi"),
         (4, 8, 1099, 1, b"jkl")],
        128,
    ),
    (
        # 5.3.1.2.4: after fmt 0, a fmt 3 message's delta is the fmt 0 timestamp itself.
        "fmt3-after-fmt0-delta-is-its-timestamp",
        chunk0(4, 40, 2, 8, 1, b"ab") + chunk3(4, b"cd") + chunk3(4, b"ef"),
        [(4, 8, 40, 1, b"ab"), (4, 8, 80, 1, b"cd"), (4, 8, 120, 1, b"ef")],
        128,
    ),
    (
        "split-message-keeps-its-timestamp",
        chunk0(4, 7, 300, 8, 1, AUDIO[:128]) + chunk3(4, AUDIO[128:256])
        + chunk3(4, AUDIO[256:]),
        [(4, 8, 7, 1, AUDIO)],
        128,
    ),
    (
        "extended-fmt0-literal-with-type3-continuation",
        bytes.fromhex("04" "ffffff" "000082" "09" "01000000" "01000000") + BODY[:128]
        + bytes.fromhex("c4" "01000000") + BODY[128:],
        [(4, 9, 0x1000000, 1, BODY)],
        128,
    ),
    (
        "extended-fmt1-delta-with-continuation-and-repeat",
        chunk0(4, 10, 1, 8, 1, b"a") + chunk1(4, 0x1000000, 130, 9, BODY[:128])
        + chunk3(4, BODY[128:], extended=0x1000000) + chunk3(4, BODY[:128], extended=0x1000000)
        + chunk3(4, BODY[128:], extended=0x1000000),
        [(4, 8, 10, 1, b"a"), (4, 9, 0x100000A, 1, BODY), (4, 9, 0x200000A, 1, BODY)],
        128,
    ),
    (
        # Some senders put the absolute timestamp in a continuation's extended field; it is
        # skipped, and the message keeps the timestamp from its first chunk.
        "type3-extended-value-is-ignored",
        chunk0(4, 10, 1, 8, 1, b"a") + chunk1(4, 0x1000000, 130, 9, BODY[:128])
        + chunk3(4, BODY[128:], extended=0x100000A),
        [(4, 8, 10, 1, b"a"), (4, 9, 0x100000A, 1, BODY)],
        128,
    ),
    (
        "timestamp-0xfffffe-fits-the-field",
        chunk0(4, 0xFFFFFE, 1, 8, 1, b"a"),
        [(4, 8, 0xFFFFFE, 1, b"a")],
        128,
    ),
    (
        "timestamp-0xffffff-is-extended",
        bytes.fromhex("04" "ffffff" "000001" "08" "01000000" "00ffffff" "61"),
        [(4, 8, 0xFFFFFF, 1, b"a")],
        128,
    ),
    (
        "timestamp-0x1000000-is-extended",
        chunk0(4, 0x1000000, 1, 8, 1, b"a"),
        [(4, 8, 0x1000000, 1, b"a")],
        128,
    ),
    (
        # A delta of 0xFFFFFE is not extended, so the fmt 3 chunks after it carry no extra field.
        "delta-0xfffffe-then-fmt3-without-extended-field",
        chunk0(4, 0, 1, 8, 1, b"a") + chunk2(4, 0xFFFFFE, b"b") + chunk3(4, b"c"),
        [(4, 8, 0, 1, b"a"), (4, 8, 0xFFFFFE, 1, b"b"), (4, 8, 0x1FFFFFC, 1, b"c")],
        128,
    ),
    (
        "timestamp-wraps-modulo-2-32",
        chunk0(4, 0xFFFFFFF0, 1, 8, 1, b"a") + chunk2(4, 0x20, b"b") + chunk3(4, b"c"),
        [(4, 8, 0xFFFFFFF0, 1, b"a"), (4, 8, 0x10, 1, b"b"), (4, 8, 0x30, 1, b"c")],
        128,
    ),
    (
        "extended-delta-wraps",
        chunk0(4, 0xFFFFFF00, 1, 8, 1, b"a") + chunk2(4, 0xFFFFFFFF, b"b"),
        [(4, 8, 0xFFFFFF00, 1, b"a"), (4, 8, 0xFFFFFEFF, 1, b"b")],
        128,
    ),
    (
        "zero-length-messages",
        chunk0(5, 50, 0, 18, 1, b"") + chunk3(5, b"") + chunk2(5, 1, b""),
        [(5, 18, 50, 1, b""), (5, 18, 100, 1, b""), (5, 18, 101, 1, b"")],
        128,
    ),
    (
        "interleaved-chunk-streams",
        chunk0(4, 0, 300, 8, 1, AUDIO[:128]) + chunk0(6, 0, 150, 9, 1, VIDEO[:128])
        + chunk3(4, AUDIO[128:256]) + chunk3(6, VIDEO[128:]) + chunk3(4, AUDIO[256:]),
        [(6, 9, 0, 1, VIDEO), (4, 8, 0, 1, AUDIO)],
        128,
    ),
    (
        "set-chunk-size-applies-to-the-next-chunk",
        set_chunk_size(256) + chunk0(3, 0, 300, 20, 0, AUDIO[:256]) + chunk3(3, AUDIO[256:]),
        [(2, 1, 0, 0, b"\x00\x00\x01\x00"), (3, 20, 0, 0, AUDIO)],
        256,
    ),
    (
        # The new size applies to a message already under way on another chunk stream too.
        "set-chunk-size-mid-message-on-another-csid",
        chunk0(4, 0, 300, 8, 1, AUDIO[:128]) + set_chunk_size(172) + chunk3(4, AUDIO[128:]),
        [(2, 1, 0, 0, (172).to_bytes(4, "big")), (4, 8, 0, 1, AUDIO)],
        172,
    ),
    (
        "set-chunk-size-bounds-accepted",
        set_chunk_size(65536) + set_chunk_size(128),
        [(2, 1, 0, 0, (65536).to_bytes(4, "big")), (2, 1, 0, 0, (128).to_bytes(4, "big"))],
        128,
    ),
    (
        # RTMP 5.4 asks for csid 2 and stream 0; encoders that stray are still understood.
        "control-message-on-another-csid-is-accepted",
        chunk0(3, 0, 4, 1, 1, (4096).to_bytes(4, "big")) + chunk0(3, 0, 200, 20, 1, AUDIO[:200]),
        [(3, 1, 0, 1, (4096).to_bytes(4, "big")), (3, 20, 0, 1, AUDIO[:200])],
        4096,
    ),
    (
        "abort-drops-the-partial-message",
        chunk0(4, 0, 300, 8, 1, AUDIO[:128]) + abort(4) + chunk0(4, 5, 3, 8, 1, b"new"),
        [(2, 2, 0, 0, b"\x00\x00\x00\x04"), (4, 8, 5, 1, b"new")],
        128,
    ),
    (
        # After Abort, a fmt 3 chunk starts a new message from the header state of the csid.
        "abort-then-fmt3-starts-a-new-message",
        chunk0(4, 10, 130, 8, 1, BODY[:128]) + abort(4) + chunk3(4, BODY[:128])
        + chunk3(4, BODY[128:]),
        [(2, 2, 0, 0, b"\x00\x00\x00\x04"), (4, 8, 20, 1, BODY)],
        128,
    ),
    (
        "abort-of-an-unknown-or-idle-csid-is-ignored",
        abort(99) + abort(70000) + chunk0(4, 0, 1, 8, 1, b"a") + abort(4),
        [(2, 2, 0, 0, (99).to_bytes(4, "big")), (2, 2, 0, 0, (70000).to_bytes(4, "big")),
         (4, 8, 0, 1, b"a"), (2, 2, 0, 0, b"\x00\x00\x00\x04")],
        128,
    ),
    (
        "acknowledgement-window-and-peer-bandwidth",
        control(3, (1234).to_bytes(4, "big")) + control(5, (2_500_000).to_bytes(4, "big"))
        + control(6, (2_500_000).to_bytes(4, "big") + b"\x02"),
        [(2, 3, 0, 0, (1234).to_bytes(4, "big")), (2, 5, 0, 0, (2_500_000).to_bytes(4, "big")),
         (2, 6, 0, 0, (2_500_000).to_bytes(4, "big") + b"\x02")],
        128,
    ),
]

# Bytes after the last message that must stay held, with the `buffered` they leave: a partial
# chunk header (unread), and a whole header plus part of its payload (its full length reserved).
TRAILERS = [
    (b"\x03\x00\x00\x00", 4),
    (chunk0(9, 0, 50, 8, 1, b"1234567"), 50),
]


@pytest.mark.parametrize("feeder", FEEDERS, ids=["whole", "bytewise"])
@pytest.mark.parametrize(("data", "expected", "chunk_size"),
                         [vector[1:] for vector in DECODE_VECTORS],
                         ids=[vector[0] for vector in DECODE_VECTORS])
def test_decode_vector(feeder: Callable[..., tuple[ChunkDemuxer, list[Expected]]], data: bytes,
                       expected: list[Expected], chunk_size: int) -> None:
    demuxer, messages = feeder(data)
    assert messages == expected
    assert demuxer.chunk_size == chunk_size
    assert demuxer.buffered == 0
    assert demuxer.bytes_received == len(data)
    assert demuxer.next_message() is None


@pytest.mark.parametrize(("trailer", "held"), TRAILERS, ids=["partial-header", "partial-body"])
@pytest.mark.parametrize(("data", "expected", "chunk_size"),
                         [vector[1:] for vector in DECODE_VECTORS],
                         ids=[vector[0] for vector in DECODE_VECTORS])
def test_decode_vector_with_trailing_bytes(data: bytes, expected: list[Expected],
                                           chunk_size: int, trailer: bytes, held: int) -> None:
    demuxer, messages = demux_whole(data + trailer)
    assert messages == expected
    assert demuxer.buffered == held
    assert demuxer.bytes_received == len(data) + len(trailer)
    assert demuxer.next_message() is None
    assert demuxer.buffered == held


def test_partial_payload_is_reserved_at_full_length_when_its_header_arrives() -> None:
    demuxer = ChunkDemuxer()
    demuxer.feed(chunk0(4, 0, 1000, 9, 1, b"")[:-1])
    assert demuxer.next_message() is None
    assert demuxer.buffered == 11  # the header is not complete: all of it stays unread
    demuxer.feed(b"\x01" + bytes(10))
    assert demuxer.next_message() is None
    assert demuxer.buffered == 1000  # the payload is allocated once, at full length
    assert demuxer.allocated >= 1000


# ffmpeg's first bytes when publishing (see tests/vectors/rtmp/README.md): C0, C1, C2, then the
# connect command as a 128-byte chunk and a 0xC3 continuation.
FFMPEG_CONNECT = Path(__file__).parents[1] / "vectors" / "rtmp" / "ffmpeg_handshake_connect.bin"
HANDSHAKE_SIZE = 1 + 1536 + 1536


@pytest.mark.skipif(not FFMPEG_CONNECT.exists(), reason=f"{FFMPEG_CONNECT} is not there")
@pytest.mark.parametrize("feeder", FEEDERS, ids=["whole", "bytewise"])
def test_decode_ffmpeg_connect_capture(
    feeder: Callable[..., tuple[ChunkDemuxer, list[Expected]]]
) -> None:
    data = FFMPEG_CONNECT.read_bytes()[HANDSHAKE_SIZE:]
    demuxer, messages = feeder(data)
    assert [message[:4] for message in messages] == [(3, 20, 0, 0)]
    payload = messages[0][4]
    assert len(payload) == 138
    assert payload.startswith(b"\x02\x00\x07connect\x00\x3f\xf0")  # "connect", txn 1.0
    assert b"FMLE/3.0 (compatible; Lavf59.27.100)" in payload
    assert (demuxer.buffered, demuxer.bytes_received) == (0, len(data))


# --- encoding: the muxer's choice of header ----------------------------------------------------

# (id, chunk size, messages as (csid, type_id, stream_id, timestamp, payload), expected bytes)
Write = tuple[int, int, int, int, bytes]
ENCODE_VECTORS: list[tuple[str, int, list[Write], bytes]] = [
    (
        "first-message-is-fmt0-literal",
        128,
        [(3, 20, 0, 0, b"hello")],
        bytes.fromhex("03" "000000" "000005" "14" "00000000") + b"hello",
    ),
    (
        "same-delta-is-fmt3-after-fmt2",
        128,
        [(4, 8, 1, 1000, b"abc"), (4, 8, 1, 1033, b"def"), (4, 8, 1, 1066, b"ghi")],
        chunk0(4, 1000, 3, 8, 1, b"abc") + chunk2(4, 33, b"def") + chunk3(4, b"ghi"),
    ),
    (
        "fmt3-right-after-fmt0-when-delta-equals-timestamp",
        128,
        [(4, 8, 1, 40, b"ab"), (4, 8, 1, 80, b"cd")],
        chunk0(4, 40, 2, 8, 1, b"ab") + chunk3(4, b"cd"),
    ),
    (
        "new-length-or-type-is-fmt1",
        128,
        [(4, 8, 1, 0, b"abc"), (4, 8, 1, 20, b"abcd"), (4, 9, 1, 40, b"abcd")],
        chunk0(4, 0, 3, 8, 1, b"abc") + chunk1(4, 20, 4, 8, b"abcd")
        + chunk1(4, 20, 4, 9, b"abcd"),
    ),
    (
        "stream-change-or-time-going-back-is-fmt0",
        128,
        [(4, 8, 1, 100, b"a"), (4, 8, 2, 100, b"a"), (4, 8, 2, 50, b"a")],
        chunk0(4, 100, 1, 8, 1, b"a") + chunk0(4, 100, 1, 8, 2, b"a")
        + chunk0(4, 50, 1, 8, 2, b"a"),
    ),
    (
        "split-with-type3-continuations",
        128,
        [(4, 8, 1, 7, AUDIO)],
        chunk0(4, 7, 300, 8, 1, AUDIO[:128]) + chunk3(4, AUDIO[128:256])
        + chunk3(4, AUDIO[256:]),
    ),
    (
        "extended-timestamp-repeated-in-continuations",
        128,
        [(4, 9, 1, 0x1000000, BODY)],
        bytes.fromhex("04" "ffffff" "000082" "09" "01000000" "01000000") + BODY[:128]
        + bytes.fromhex("c4" "01000000") + BODY[128:],
    ),
    (
        "extended-delta-then-repeated-by-fmt3",
        128,
        [(4, 9, 1, 10, b"a"), (4, 9, 1, 0x100000A, BODY), (4, 9, 1, 0x200000A, BODY)],
        chunk0(4, 10, 1, 9, 1, b"a") + chunk1(4, 0x1000000, 130, 9, BODY[:128])
        + chunk3(4, BODY[128:], extended=0x1000000) + chunk3(4, BODY[:128], extended=0x1000000)
        + chunk3(4, BODY[128:], extended=0x1000000),
    ),
    (
        "timestamps-near-2-24",
        128,
        [(4, 8, 1, 0xFFFFFE, b"a"), (5, 8, 1, 0xFFFFFF, b"b"), (6, 8, 1, 0x1000000, b"c")],
        chunk0(4, 0xFFFFFE, 1, 8, 1, b"a") + chunk0(5, 0xFFFFFF, 1, 8, 1, b"b")
        + chunk0(6, 0x1000000, 1, 8, 1, b"c"),
    ),
    (
        "csid-widths",
        128,
        [(63, 8, 0, 0, b"a"), (64, 8, 0, 0, b"b"), (319, 8, 0, 0, b"c"), (320, 8, 0, 0, b"d"),
         (65599, 8, 0, 0, b"e")],
        b"".join(chunk0(csid, 0, 1, 8, 0, payload)
                 for csid, payload in [(63, b"a"), (64, b"b"), (319, b"c"), (320, b"d"),
                                       (65599, b"e")]),
    ),
    (
        "zero-length",
        128,
        [(5, 18, 1, 0, b""), (5, 18, 1, 0, b"")],
        chunk0(5, 0, 0, 18, 1, b"") + chunk3(5, b""),
    ),
    (
        "larger-chunk-size",
        4096,
        [(6, 9, 1, 0, bytes(5000))],
        chunk0(6, 0, 5000, 9, 1, bytes(4096)) + chunk3(6, bytes(904)),
    ),
]


@pytest.mark.parametrize(("chunk_size", "writes", "encoded"),
                         [vector[1:] for vector in ENCODE_VECTORS],
                         ids=[vector[0] for vector in ENCODE_VECTORS])
def test_encode_vector(chunk_size: int, writes: list[Write], encoded: bytes) -> None:
    muxer = ChunkMuxer(chunk_size)
    for write in writes:
        muxer.write_message(*write)
    assert muxer.pending == len(encoded)
    assert muxer.take() == encoded
    assert muxer.pending == 0
    assert muxer.take() == b""

    # And back: the same bytes decode to the same messages, whole and byte by byte.
    expected = [(csid, type_id, timestamp, stream_id, payload)
                for csid, type_id, stream_id, timestamp, payload in writes]
    for feeder in FEEDERS:
        _, messages = feeder(set_chunk_size(chunk_size) + encoded)
        assert messages[1:] == expected


def test_write_set_chunk_size_sends_type1_on_csid2_then_applies_it() -> None:
    muxer = ChunkMuxer()
    muxer.write_message(2, 5, 0, 100, (2_500_000).to_bytes(4, "big"))
    muxer.write_set_chunk_size(4096)
    assert muxer.chunk_size == 4096
    muxer.write_message(3, 20, 0, 0, bytes(300))
    assert muxer.take() == (
        chunk0(2, 100, 4, 5, 0, (2_500_000).to_bytes(4, "big"))
        + chunk0(2, 0, 4, 1, 0, (4096).to_bytes(4, "big"))  # time went back: fmt 0
        + chunk0(3, 0, 300, 20, 0, bytes(300)))  # one chunk at the new size


def test_muxer_chunk_size_setter_does_not_write() -> None:
    muxer = ChunkMuxer()
    muxer.chunk_size = 65536
    assert (muxer.chunk_size, muxer.pending) == (65536, 0)
    muxer.write_message(6, 9, 1, 0, bytes(65537))
    assert muxer.take() == chunk0(6, 0, 65537, 9, 1, bytes(65536)) + chunk3(6, b"\x00")


@pytest.mark.parametrize("size", [127, 65537, 0, -1])
def test_muxer_rejects_chunk_sizes_outside_128_to_65536(size: int) -> None:
    with pytest.raises(ValueError, match=rf"^chunk_size must be 128\.\.65536, got {size}$"):
        ChunkMuxer(size)
    muxer = ChunkMuxer()
    with pytest.raises(ValueError, match=rf"got {size}$"):
        muxer.chunk_size = size
    with pytest.raises(ValueError, match=rf"got {size}$"):
        muxer.write_set_chunk_size(size)
    assert (muxer.chunk_size, muxer.pending) == (128, 0)


@pytest.mark.parametrize(("argument", "value"), [
    ("csid", 1), ("csid", 65600), ("type_id", -1), ("type_id", 256), ("stream_id", -1),
    ("stream_id", 2**32), ("timestamp", -1), ("timestamp", 2**32), ("timestamp", 2**70),
])
def test_muxer_rejects_out_of_range_arguments(argument: str, value: int) -> None:
    arguments = {"csid": 3, "type_id": 20, "stream_id": 0, "timestamp": 0}
    arguments[argument] = value
    muxer = ChunkMuxer()
    with pytest.raises(ValueError, match=rf"^{argument} must be \d+\.\.\d+, got {value}$"):
        muxer.write_message(payload=b"x", **arguments)
    assert muxer.pending == 0


def test_muxer_rejects_non_integers_and_oversized_payloads() -> None:
    muxer = ChunkMuxer()
    with pytest.raises(TypeError, match=r"^timestamp must be an int, got float$"):
        muxer.write_message(3, 20, 0, 1.5, b"x")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"^payload of 16777216 bytes exceeds"):
        muxer.write_message(3, 20, 0, 0, bytes(0x1000000))
    with pytest.raises(TypeError):
        muxer.write_message(3, 20, 0, 0, "text")  # type: ignore[arg-type]
    assert muxer.pending == 0


def test_muxer_accepts_any_contiguous_buffer() -> None:
    muxer = ChunkMuxer()
    muxer.write_message(3, 20, 0, 0, bytearray(b"ab"))
    muxer.write_message(3, 20, 0, 0, memoryview(b"cd"))
    assert muxer.take() == chunk0(3, 0, 2, 20, 0, b"ab") + chunk3(3, b"cd")


# --- errors ------------------------------------------------------------------------------------

# (id, chunk bytes, regex the ChunkError must match, limits)
ERROR_VECTORS: list[tuple[str, bytes, str, dict[str, int]]] = [
    ("set-chunk-size-127", set_chunk_size(127),
     r"^Set Chunk Size 127 is outside the accepted 128\.\.65536$", {}),
    ("set-chunk-size-65537", set_chunk_size(65537),
     r"^Set Chunk Size 65537 is outside the accepted 128\.\.65536$", {}),
    ("set-chunk-size-0", set_chunk_size(0), r"^Set Chunk Size 0 is outside", {}),
    ("set-chunk-size-top-bit", set_chunk_size(0x80001000),
     r"^Set Chunk Size 0x80001000 has its reserved top bit set \(RTMP 5\.4\.1\)$", {}),
    ("set-chunk-size-3-bytes", control(1, b"\x00\x10\x00"),
     r"^Set Chunk Size message \(type 1\) on csid 2 has a 3-byte payload; RTMP 5\.4 "
     r"requires 4$", {}),
    ("abort-5-bytes", control(2, bytes(5)),
     r"^Abort Message message \(type 2\) on csid 2 has a 5-byte payload", {}),
    ("acknowledgement-empty", control(3, b""),
     r"^Acknowledgement message \(type 3\) on csid 2 has a 0-byte payload", {}),
    ("window-ack-size-8-bytes", control(5, bytes(8)),
     r"^Window Acknowledgement Size message \(type 5\) on csid 2 has a 8-byte payload", {}),
    ("set-peer-bandwidth-4-bytes", control(6, bytes(4)),
     r"^Set Peer Bandwidth message \(type 6\) on csid 2 has a 4-byte payload; RTMP 5\.4 "
     r"requires 5$", {}),
    ("message-too-long-fmt0", chunk0(4, 0, 1001, 9, 1, b""),
     r"^message length 1001 on csid 4 exceeds max_message_size=1000$",
     {"max_message_size": 1000}),
    ("message-too-long-fmt1", chunk0(4, 0, 1, 9, 1, b"a") + chunk1(4, 0, 0xFFFFFF, 9, b""),
     r"^message length 16777215 on csid 4 exceeds max_message_size=8388608$", {}),
    ("fmt1-unknown-csid", chunk1(4, 0, 1, 8, b"a"),
     r"^chunk of fmt 1 on csid 4, which has had no fmt 0 chunk to take its message header "
     r"from \(RTMP 5\.3\.1\.2\)$", {}),
    ("fmt2-unknown-csid", chunk0(4, 0, 1, 8, 1, b"a") + chunk2(5, 0, b"a"),
     r"^chunk of fmt 2 on csid 5, which has had no fmt 0", {}),
    ("fmt3-unknown-csid", chunk3(300, b"a"), r"^chunk of fmt 3 on csid 300, which has had", {}),
    ("fmt0-inside-a-message", chunk0(4, 0, 300, 8, 1, AUDIO[:128]) + chunk0(4, 0, 1, 8, 1, b"a"),
     r"^chunk of fmt 0 on csid 4 arrived while its message has 128 of 300 bytes; only fmt 3 "
     r"may continue a message \(RTMP 5\.3\.1\.2\.4\)$", {}),
    ("fmt1-inside-a-message", chunk0(4, 0, 300, 8, 1, AUDIO[:128]) + chunk1(4, 0, 1, 8, b"a"),
     r"^chunk of fmt 1 on csid 4 arrived while its message has 128 of 300 bytes", {}),
    ("fmt2-inside-a-message", chunk0(4, 0, 300, 8, 1, AUDIO[:128]) + chunk2(4, 0, b"a"),
     r"^chunk of fmt 2 on csid 4 arrived while its message has 128 of 300 bytes", {}),
    ("partial-messages-over-max-buffered",
     chunk0(4, 0, 200, 8, 1, AUDIO[:128]) + chunk0(6, 0, 200, 9, 1, b""),
     r"^message of 200 bytes on csid 6 would make 400 bytes buffered, over max_buffered=350$",
     {"max_buffered": 350, "max_message_size": 300}),
    ("too-many-chunk-streams",
     b"".join(chunk0(csid, 0, 0, 8, 1, b"") for csid in range(3, 3 + MAX_CHUNK_STREAMS + 1)),
     rf"^csid {3 + MAX_CHUNK_STREAMS} would be chunk stream number {MAX_CHUNK_STREAMS + 1}; "
     rf"a peer may use at most {MAX_CHUNK_STREAMS}$", {}),
]


@pytest.mark.parametrize("feeder", FEEDERS, ids=["whole", "bytewise"])
@pytest.mark.parametrize(("data", "reason", "limits"), [vector[1:] for vector in ERROR_VECTORS],
                         ids=[vector[0] for vector in ERROR_VECTORS])
def test_protocol_error(feeder: Callable[..., tuple[ChunkDemuxer, list[Expected]]], data: bytes,
                        reason: str, limits: dict[str, int]) -> None:
    with pytest.raises(ChunkError, match=reason):
        feeder(data, **limits)


@pytest.mark.parametrize(("data", "reason", "limits"), [vector[1:] for vector in ERROR_VECTORS],
                         ids=[vector[0] for vector in ERROR_VECTORS])
def test_protocol_error_is_sticky_and_release_recovers(data: bytes, reason: str,
                                                       limits: dict[str, int]) -> None:
    demuxer = ChunkDemuxer(**limits)
    demuxer.feed(data)
    with pytest.raises(ChunkError, match=reason):
        drain(demuxer)
    for call in (demuxer.next_message, lambda: demuxer.feed(b"\x03"),
                 lambda: demuxer.get_buffer(10)):
        with pytest.raises(ChunkError, match=reason):
            call()
    assert isinstance(ChunkError("x"), ValueError)
    demuxer.release()
    assert (demuxer.allocated, demuxer.buffered, demuxer.chunk_size) == (0, 0, 128)
    demuxer.feed(chunk0(3, 0, 1, 20, 0, b"!"))
    assert drain(demuxer) == [(3, 20, 0, 0, b"!")]


def test_input_beyond_max_buffered_is_refused_and_changes_nothing() -> None:
    demuxer = ChunkDemuxer(max_buffered=100, max_message_size=100)
    with pytest.raises(ChunkError, match=r"^101 more bytes would exceed max_buffered=100 "
                                         r"\(0 unread, 0 in partial messages\)$"):
        demuxer.feed(bytes(101))
    assert (demuxer.buffered, demuxer.bytes_received, demuxer.allocated) == (0, 0, 0)

    # A header reserving 90 bytes leaves room for 90 more bytes (10 unread + 90 - 10 payload).
    demuxer.feed(chunk0(4, 0, 90, 8, 1, b""))
    assert demuxer.next_message() is None
    assert demuxer.buffered == 90
    with pytest.raises(ChunkError, match=r"^11 more bytes would exceed max_buffered=100 "
                                         r"\(0 unread, 90 in partial messages\)$"):
        demuxer.feed(bytes(11))
    demuxer.feed(bytes(10))
    assert demuxer.buffered == 100
    with pytest.raises(ChunkError, match=r"^peer filled max_buffered=100 bytes \(10 unread, "
                                         r"90 in partial messages\)$"):
        demuxer.get_buffer(1)
    # Parsing moves the 10 bytes into the payload, which frees room for the rest of it.
    assert demuxer.next_message() is None
    assert demuxer.buffered == 90
    with demuxer.get_buffer(1000) as view:
        assert 1 <= len(view) <= 10
    demuxer.buffer_updated(0)
    messages = []
    for _ in range(8):
        receive(demuxer, bytes(10))
        messages += drain(demuxer)
    assert messages == [(4, 8, 0, 1, bytes(90))]
    assert demuxer.buffered == 0


def test_get_buffer_never_offers_more_than_max_buffered() -> None:
    demuxer = ChunkDemuxer(max_buffered=1000, max_message_size=100)
    with demuxer.get_buffer(1 << 20) as view:
        assert len(view) == 1000
    demuxer.buffer_updated(0)


def test_limits_must_be_positive() -> None:
    with pytest.raises(ValueError, match=r"^max_message_size must be >= 1, got 0$"):
        ChunkDemuxer(max_message_size=0)
    with pytest.raises(ValueError, match=r"^max_buffered must be >= 1, got -5$"):
        ChunkDemuxer(max_buffered=-5)
    assert (DEFAULT_MAX_MESSAGE_SIZE, DEFAULT_MAX_BUFFERED) == (8 << 20, 16 << 20)


@pytest.mark.parametrize("type_id", [1, 4, 15, 17, 18, 20, 127])
def test_a_long_command_is_refused_at_its_first_header(type_id: int) -> None:
    # Only the 12-byte header has arrived: the refusal comes before any payload is buffered
    # or allocated, whatever the type (control, user control, data, commands, unknown).
    demuxer = ChunkDemuxer(max_message_size=1 << 20, max_command_size=1000)
    demuxer.feed(chunk0(3, 0, 1001, type_id, 0, b""))
    with pytest.raises(MessageTooLong, match=rf"^message length 1001 \(type {type_id}\) on csid 3 "
                                             r"exceeds max_command_size=1000; only audio, video "
                                             r"and aggregate messages may be longer$"):
        demuxer.next_message()
    assert demuxer.buffered == 0
    assert isinstance(MessageTooLong("x"), ChunkError)


@pytest.mark.parametrize("type_id", [8, 9, 22])
def test_media_messages_are_bounded_by_max_message_size_only(type_id: int) -> None:
    demuxer = ChunkDemuxer(max_message_size=5000, max_command_size=1000)
    demuxer.feed(chunk0(3, 0, 5000, type_id, 1, b""))
    assert demuxer.next_message() is None
    assert demuxer.buffered == 5000  # reserved: it is being assembled
    demuxer = ChunkDemuxer(max_message_size=5000, max_command_size=1000)
    demuxer.feed(chunk0(4, 0, 5001, type_id, 1, b""))
    with pytest.raises(MessageTooLong, match=r"^message length 5001 on csid 4 exceeds "
                                             r"max_message_size=5000$"):
        demuxer.next_message()


def in_chunks(first: Callable[[bytes], bytes], csid: int, payload: bytes) -> bytes:
    """A message at the default chunk size of 128: its first chunk, then fmt 3 chunks."""
    return first(payload[:128]) + b"".join(
        chunk3(csid, payload[i:i + 128]) for i in range(128, len(payload), 128))


def test_a_command_at_the_limit_passes() -> None:
    demuxer = ChunkDemuxer(max_command_size=1000)
    demuxer.feed(in_chunks(lambda body: chunk0(3, 0, 1000, 20, 0, body), 3, bytes(1000)))
    assert drain(demuxer) == [(3, 20, 0, 0, bytes(1000))]


def test_set_limits_applies_to_the_next_message_header() -> None:
    # A server's limits before a publish is admitted, then after: 128-byte command and
    # media messages, then large media but still small commands.
    demuxer = ChunkDemuxer(max_message_size=1 << 20, max_command_size=1 << 20)
    demuxer.set_limits(max_message_size=128, max_command_size=128, max_buffered=1000)
    assert (demuxer.max_message_size, demuxer.max_command_size, demuxer.max_buffered) == (
        128, 128, 1000)
    with pytest.raises(ChunkError, match=r"^1001 more bytes would exceed max_buffered=1000"):
        demuxer.feed(bytes(1001))
    demuxer.feed(chunk0(6, 0, 128, 9, 1, bytes(128)))
    assert drain(demuxer) == [(6, 9, 0, 1, bytes(128))]
    demuxer.set_limits(max_message_size=4096, max_command_size=128, max_buffered=1 << 20)
    demuxer.feed(in_chunks(lambda body: chunk1(6, 40, 4096, 9, body), 6, bytes(4096)))
    assert [m[4] for m in drain(demuxer)] == [bytes(4096)]
    # A fmt 3 header starting a message inherits its length: checked against today's limits.
    demuxer.set_limits(max_message_size=4000, max_command_size=128, max_buffered=1 << 20)
    demuxer.feed(chunk3(6, b""))
    with pytest.raises(MessageTooLong, match=r"^message length 4096 on csid 6 exceeds "
                                             r"max_message_size=4000$"):
        demuxer.next_message()


def test_set_limits_must_be_positive() -> None:
    demuxer = ChunkDemuxer()
    for name in ("max_message_size", "max_command_size", "max_buffered"):
        limits = {"max_message_size": 1, "max_command_size": 1, "max_buffered": 1, name: 0}
        with pytest.raises(ValueError, match=rf"^{name} must be >= 1, got 0$"):
            demuxer.set_limits(**limits)
    with pytest.raises(ValueError, match=r"^max_command_size must be >= 1, got -1$"):
        ChunkDemuxer(max_command_size=-1)
    assert ChunkDemuxer(max_message_size=99).max_command_size == 99  # no bound of its own


def test_buffer_updated_cannot_commit_more_than_was_offered() -> None:
    demuxer = ChunkDemuxer()
    with pytest.raises(ValueError, match=r"^buffer_updated\(1\) is outside the 0 bytes offered"):
        demuxer.buffer_updated(1)
    with demuxer.get_buffer(8) as view:
        offered = len(view)
    with pytest.raises(ValueError, match=rf"outside the {offered} bytes offered"):
        demuxer.buffer_updated(offered + 1)
    with pytest.raises(ValueError, match=r"^buffer_updated\(-1\)"):
        demuxer.buffer_updated(-1)
    demuxer.buffer_updated(0)
    assert demuxer.bytes_received == 0


def test_a_live_view_pins_the_input_buffer() -> None:
    demuxer = ChunkDemuxer()
    view = demuxer.get_buffer(4)
    message = chunk0(3, 0, 3, 20, 0, b"abc")
    view[:4] = message[:4]
    demuxer.buffer_updated(4)
    with pytest.raises(BufferError, match="release the view first"):
        demuxer.feed(bytes(1 << 20))
    assert demuxer.buffered == 4
    demuxer.release()  # memory under the live view is kept, not freed
    assert demuxer.allocated > 0
    view.release()
    demuxer.release()
    assert demuxer.allocated == 0
    demuxer.feed(message)
    assert drain(demuxer) == [(3, 20, 0, 0, b"abc")]


# --- allocation --------------------------------------------------------------------------------


def test_nothing_is_allocated_before_input_or_after_release() -> None:
    demuxer = ChunkDemuxer()
    assert (demuxer.allocated, demuxer.buffered, demuxer.bytes_received) == (0, 0, 0)
    assert demuxer.next_message() is None
    demuxer.feed(b"")
    assert demuxer.allocated == 0

    # Mid-message: input, a chunk stream record and a reserved payload are all freed.
    demuxer.feed(chunk0(4, 0, 300, 8, 1, AUDIO[:100]))
    assert demuxer.next_message() is None
    assert demuxer.buffered == 300
    assert demuxer.allocated > 300
    demuxer.release()
    assert (demuxer.allocated, demuxer.buffered) == (0, 0)
    assert demuxer.bytes_received == 112  # kept across release(), as the connection's total
    assert demuxer.next_message() is None


def test_idle_connection_after_a_burst_costs_little() -> None:
    # A 4 MiB burst fed at once grows the input buffer; once drained it is given back.
    muxer = ChunkMuxer(4096)
    for index in range(64):
        muxer.write_message(6, 9, 1, index * 33, bytes(65536))
    demuxer = ChunkDemuxer()
    demuxer.feed(set_chunk_size(4096) + muxer.take())
    assert len(drain(demuxer)) == 65
    assert demuxer.allocated <= 32 * 1024


def test_steady_get_buffer_reads_reuse_one_small_allocation() -> None:
    muxer = ChunkMuxer(4096)
    for index in range(200):
        muxer.write_message(6, 9, 1, index * 33, bytes(20_000 + index))
        muxer.write_message(4, 8, 1, index * 33, bytes(300))
    stream = set_chunk_size(4096) + muxer.take()
    demuxer = ChunkDemuxer()
    largest = 0
    for offset in range(0, len(stream), 65536):
        receive(demuxer, stream[offset : offset + 65536])
        drain(demuxer)
        largest = max(largest, demuxer.allocated)
    assert demuxer.buffered == 0
    # One 64 KiB read buffer (not doubled for the partial header a read leaves), the partial
    # video and audio payloads, and the chunk stream records.
    assert largest <= 65536 + 20_200 + 300 + 1024


# --- RtmpMessage -------------------------------------------------------------------------------


def test_message_is_a_read_only_value() -> None:
    message = RtmpMessage(3, 20, 1000, 1, b"payload")
    assert as_tuple(message) == (3, 20, 1000, 1, b"payload")
    assert message == RtmpMessage(csid=3, type_id=20, timestamp=1000, stream_id=1,
                                  payload=b"payload")
    assert message != RtmpMessage(3, 20, 1001, 1, b"payload")
    assert message != (3, 20, 1000, 1, b"payload")
    assert len({message, RtmpMessage(3, 20, 1000, 1, b"payload")}) == 1
    with pytest.raises(AttributeError):
        message.timestamp = 5  # type: ignore[misc]
    assert repr(message) == ("RtmpMessage(csid=3, type_id=20, timestamp=1000, stream_id=1, "
                             "payload=b'payload')")
    assert repr(RtmpMessage(6, 9, 0, 1, bytes(100))).endswith(
        "payload=b'\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00"
        "\\x00\\x00'... (100 bytes))")
    with pytest.raises(ValueError, match=r"^csid must be 2\.\.65599, got 1$"):
        RtmpMessage(1, 20, 0, 0, b"")


# --- round trips under arbitrary splits --------------------------------------------------------

CSIDS = st.sampled_from([2, 3, 4, 6, 63, 64, 319, 320, 65599])
# Message types that are not chunk-layer control (those change the demuxer's state).
TYPE_IDS = st.sampled_from([4, 8, 9, 15, 18, 20, 22, 255])
DELTAS = st.one_of(st.sampled_from([0, 1, 33, 0xFFFFFE, 0xFFFFFF, 0x1000000, 0xFFFFFFFF]),
                   st.integers(0, 2**32 - 1))
LENGTHS = st.one_of(st.sampled_from([0, 1, 127, 128, 129, 256, 300]), st.integers(0, 3000))
CHUNK_SIZES = st.one_of(st.sampled_from([128, 129, 255, 4096, 65536]),
                        st.integers(128, 65536))


@st.composite
def operations(draw: st.DrawFn) -> list[tuple[str, Write | int]]:
    """Messages (with timestamps moving by small, repeated, extended and wrapping deltas) and
    chunk size changes, in send order."""
    clock = draw(st.integers(0, 2**32 - 1))
    result: list[tuple[str, Write | int]] = []
    for _ in range(draw(st.integers(0, 25))):
        if draw(st.integers(0, 9)) == 0:
            result.append(("chunk_size", draw(CHUNK_SIZES)))
            continue
        clock = (clock + draw(DELTAS)) % 2**32
        length = draw(LENGTHS)
        payload = bytes([draw(st.integers(0, 255))]) * length
        result.append(("message", (draw(CSIDS), draw(TYPE_IDS),
                                   draw(st.sampled_from([0, 1, 0xFFFFFFFF])), clock, payload)))
    return result


def expected_messages(ops: Iterable[tuple[str, Write | int]]) -> list[Expected]:
    expected: list[Expected] = []
    for kind, argument in ops:
        if kind == "chunk_size" and isinstance(argument, int):
            expected.append((2, 1, 0, 0, argument.to_bytes(4, "big")))
        elif isinstance(argument, tuple):
            csid, type_id, stream_id, timestamp, payload = argument
            expected.append((csid, type_id, timestamp, stream_id, payload))
    return expected


@settings(max_examples=300, deadline=None)
@given(ops=operations(), data=st.data())
def test_round_trip_through_muxer_and_demuxer_under_any_split(
    ops: list[tuple[str, Write | int]], data: st.DataObject
) -> None:
    muxer = ChunkMuxer()
    for kind, argument in ops:
        if kind == "chunk_size" and isinstance(argument, int):
            muxer.write_set_chunk_size(argument)
        elif isinstance(argument, tuple):
            muxer.write_message(*argument)
    stream = muxer.take()

    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=20), label="cuts"))
    demuxer = ChunkDemuxer()
    messages: list[Expected] = []
    for start, end in pairwise([0, *cuts, len(stream)]):
        piece = stream[start:end]
        if data.draw(st.booleans(), label="via get_buffer"):
            receive(demuxer, piece)
        else:
            demuxer.feed(piece)
        messages += drain(demuxer)
        assert demuxer.buffered <= DEFAULT_MAX_BUFFERED
    assert messages == expected_messages(ops)
    assert demuxer.chunk_size == muxer.chunk_size
    assert demuxer.buffered == 0
    assert demuxer.bytes_received == len(stream)
    demuxer.release()
    assert demuxer.allocated == 0


# -- a message chunked once for many connections (take_with_header + chunk_tail) -----------

@settings(max_examples=200, deadline=None)
@given(st.sampled_from([128, 200, 4096, 65536]), st.lists(st.tuples(
    st.sampled_from([3, 6, 7, 70, 400]), st.sampled_from([8, 9]),
    st.sampled_from([0, 21, 33, -5, 0xFFFFFF]), st.binary(max_size=5),
    st.sampled_from([0, 1, 127, 128, 129, 300, 4096, 5000])), max_size=30))
def test_a_header_and_a_shared_tail_are_the_bytes_write_message_makes(
        chunk_size: int, messages: list[tuple[int, int, int, bytes, int]]) -> None:
    """Per connection header + shared tail == write_message of the joined body, with the
    same header compression state after; None exactly when the timestamp field is extended
    (and then the state is unchanged, so write_message follows)."""
    whole, split = ChunkMuxer(chunk_size), ChunkMuxer(chunk_size)
    timestamp = 1000
    for csid, type_id, step, header, size in messages:
        timestamp = max(0, timestamp + step)
        data = bytes(range(256)) * (size // 256) + bytes(size % 256)
        whole.write_message(csid, type_id, 1, timestamp, header + data)
        want = whole.take()
        head = split.take_with_header(csid, type_id, 1, timestamp, len(header) + len(data))
        if head is None:
            assert timestamp >= 0xFFFFFF or step == 0xFFFFFF
            split.write_message(csid, type_id, 1, timestamp, header + data)
            assert split.take() == want
        else:
            assert head + chunk_tail(csid, chunk_size, header, data) == want


def test_take_with_header_returns_what_was_pending_first() -> None:
    muxer = ChunkMuxer(4096)
    muxer.write_set_chunk_size(4096)
    pending = ChunkMuxer(128)
    pending.write_set_chunk_size(4096)
    head = muxer.take_with_header(6, 8, 1, 0, 3)
    assert head is not None and head.startswith(pending.take()) and muxer.pending == 0
    with pytest.raises(ValueError, match="length"):
        muxer.take_with_header(6, 8, 1, 0, 1 << 24)
    with pytest.raises(ValueError, match="exceeds the RTMP message length"):
        chunk_tail(6, 4096, b"", bytes(1 << 24))
