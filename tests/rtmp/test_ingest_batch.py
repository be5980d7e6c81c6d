"""The native ingest path (`ServerSession(parse_media=True)`: relay._native.rtmp_ingest) gives
exactly what the per-message path gives (`MediaMessage` events, `TimestampUnwrapper`, then
`relay.media.flv`): every unit (dts, pts, keyframe, data, configuration records), the number
of media messages, of malformed tags and the first error's text, and the same close reason
when the chunk stream breaks. Fed with ffmpeg's captured publish and with a generated stream
of every tag form the fast path takes or leaves (extended timestamps, wraps, aggregates, pings
between frames), whole, a byte at a time and in random splits."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest

from relay._native.rtmp_chunk import ChunkDemuxer, ChunkMuxer
from relay._native.rtmp_ingest import MediaIngest
from relay.media.flv import FlvError, parse_audio_tag, parse_video_tag
from relay.media.timestamps import TimestampUnwrapper
from relay.media.units import AudioConfig, MediaFrame, VideoConfig
from relay.rtmp.client import ClientSession
from relay.rtmp.messages import MessageType, UserControlEvent, user_control_payload
from relay.rtmp.session import (
    MediaBatch,
    MediaMessage,
    PublishRequested,
    RemoteProtocolError,
    ServerSession,
)
from tests.rtmp.helpers.publish_vector import DATA, bytewise, random_splits, whole

Feed = Callable[[bytes], Iterator[bytes]]
Unit = MediaFrame | VideoConfig | AudioConfig


@dataclass
class Outcome:
    units: list[Unit] = field(default_factory=list)
    messages: int = 0
    errors: int = 0
    first_error: str = ""
    closed_by: str = ""  # the RemoteProtocolError that ended the feed, if any


class OldPath:
    """What relay.rtmp.server did with MediaMessage events before the native path."""

    def __init__(self) -> None:
        self.timestamps = TimestampUnwrapper()
        self.outcome = Outcome()

    def take(self, event: object) -> None:
        if isinstance(event, MediaBatch):
            raise AssertionError("a parse_media=False session handed out a MediaBatch")
        if not isinstance(event, MediaMessage):
            return
        out = self.outcome
        out.messages += 1
        dts = self.timestamps.unwrap(event.timestamp)
        try:
            if event.type_id == MessageType.VIDEO:
                unit: object = parse_video_tag(event.payload, dts)
            else:
                unit = parse_audio_tag(event.payload, dts)
        except FlvError as exc:
            out.errors += 1
            out.first_error = out.first_error or str(exc)
            return
        if isinstance(unit, MediaFrame | VideoConfig | AudioConfig):
            out.units.append(unit)


class NewPath:
    def __init__(self) -> None:
        self.outcome = Outcome()

    def take(self, event: object) -> None:
        if isinstance(event, MediaMessage):
            raise AssertionError("a parse_media=True session handed out a MediaMessage")
        if isinstance(event, MediaBatch):
            out = self.outcome
            out.units += event.units
            out.messages += event.messages
            out.errors += event.errors
            out.first_error = out.first_error or event.first_error


def run(data: bytes, feed: Feed, *, parse_media: bool) -> Outcome:
    """Feed a whole connection's bytes (C0 onwards), accepting the publish."""
    server = ServerSession(random_bytes=bytes, parse_media=parse_media)
    path: OldPath | NewPath = NewPath() if parse_media else OldPath()
    try:
        for piece in feed(data):
            server.receive_data(piece)
            while True:
                server.new_turn()
                while (event := server.next_event()) is not None:
                    if isinstance(event, PublishRequested):
                        server.accept_publish()
                    path.take(event)
                if not server.turn_spent:
                    break
    except RemoteProtocolError as exc:
        path.outcome.closed_by = str(exc)
    return path.outcome


def assert_same(data: bytes, feed: Feed) -> Outcome:
    old = run(data, feed, parse_media=False)
    new = run(data, feed, parse_media=True)
    assert new.messages == old.messages
    assert (new.errors, new.first_error, new.closed_by) == (
        old.errors, old.first_error, old.closed_by)
    assert len(new.units) == len(old.units)
    for a, b in zip(old.units, new.units, strict=True):
        assert type(a) is type(b) and a == b  # dataclass equality: every field, data bytes
    return new


FEEDS = [whole, bytewise, random_splits]


@pytest.mark.parametrize("feed", FEEDS)
def test_ffmpeg_publish_gives_the_same_units(feed: Feed) -> None:
    outcome = assert_same(DATA, feed)
    assert outcome.messages == 92 + 132
    assert sum(isinstance(u, MediaFrame) for u in outcome.units) == 90 + 131
    assert outcome.errors == 0 and not outcome.closed_by


# -- a generated publish: every tag form, timestamps across the wrap --------------------------

def _old_units() -> tuple[bytes, bytes]:
    # The vector's AVC and AAC sequence headers, as the tag bodies ffmpeg sent.
    server = ServerSession(random_bytes=bytes)
    server.receive_data(DATA)
    video = audio = b""
    while (event := server.next_event()) is not None:
        if isinstance(event, PublishRequested):
            server.accept_publish()
        if isinstance(event, MediaMessage):
            if event.type_id == MessageType.VIDEO and not video:
                video = event.payload
            elif event.type_id == MessageType.AUDIO and not audio:
                audio = event.payload
    return video, audio


AVC_HEADER, AAC_HEADER = _old_units()
NALS = b"\x00\x00\x00\x05\x65\x88\x84\x00\x10"

VIDEO_TAGS = [
    b"\x17\x01\x00\x00\x21" + NALS,  # key frame, cts 33
    b"\x27\x01\xff\xff\xf0" + NALS,  # inter frame, cts -16
    b"\x37\x01\x00\x00\x00" + NALS,  # disposable inter
    b"\x47\x01\x7f\xff\xff" + NALS,  # generated key frame, largest cts
    b"\x17\x01\x00\x00\x00",  # empty AVC frame (ignored)
    b"\x17\x01\x00\x00",  # truncated header (error)
    b"",  # empty tag (error)
    b"\x07\x01\x00\x00\x00" + NALS,  # reserved frame type 0 (error)
    b"\x67\x01\x00\x00\x00" + NALS,  # reserved frame type 6 (error)
    b"\x57\x00",  # command frame (ignored)
    b"\x22\x01\x00\x00\x00" + NALS,  # Sorenson H.263 (ignored)
    b"\x17\x02\x00\x00\x00",  # end of sequence
    b"\x17\x05\x00\x00\x00" + NALS,  # reserved AVCPacketType (error)
    b"\x17\x00\x00\x00\x00\x01",  # a broken AVC sequence header (error)
    b"\x91hvc1\x00\x00\x28" + NALS,  # E-RTMP HEVC CodedFrames, key, cts 40
    b"\xa3hvc1" + NALS,  # E-RTMP HEVC CodedFramesX, inter
    b"\x91avc1\xff\xff\xfe" + NALS,  # E-RTMP AVC CodedFrames, cts -2
    b"\x91hvc1\x00\x00\x00",  # E-RTMP HEVC with no frame (ignored)
    b"\x91hvc1\x00\x00",  # truncated in its composition time (error)
    b"\x91av01" + NALS,  # AV1 CodedFrames (no cts)
    b"\x93vp09" + NALS,  # VP9 CodedFramesX
    b"\x91av01",  # AV1 with no frame (ignored)
    b"\x91xyz1" + NALS,  # unknown FourCC (ignored)
    b"\x81hvc1\x00\x00\x00" + NALS,  # reserved frame type 0, enhanced (error)
    b"\xd1hvc1\x00\x00\x00" + NALS,  # command frame, enhanced (ignored)
    b"\x97\x00\x00\x11hvc1\x00\x00\x00" + NALS,  # ModEx, then CodedFrames
    b"\x96hvc1",  # multitrack (ignored)
    b"\x9fhvc1" + NALS,  # reserved enhanced packet type (error)
    b"\x94hvc1",  # enhanced metadata (ignored)
    AVC_HEADER,
]
AUDIO_TAGS = [
    b"\xaf\x01\x21\x10\x04\x60\x8c\x1c",  # AAC raw frame
    b"\xae\x01\x21",  # AAC, other rate/size/type bits
    b"\xaf\x01",  # empty AAC frame (ignored)
    b"\xaf",  # truncated (error)
    b"",  # empty (error)
    b"\xaf\x02\x00",  # reserved AACPacketType (error)
    b"\x2f\xff\xfb",  # MP3 (ignored)
    b"\x91mp4a\x21\x10",  # E-RTMP AAC CodedFrames
    b"\x90mp4a" + AAC_HEADER[2:],  # E-RTMP AAC SequenceStart
    AAC_HEADER,
]


def aggregate(tags: list[tuple[int, int, bytes]]) -> bytes:
    """RTMP 7.1.6: FLV tags (11-byte header, body, 4-byte back pointer)."""
    out = bytearray()
    for type_id, ts, body in tags:
        out += bytes([type_id]) + len(body).to_bytes(3, "big") \
            + (ts & 0xFFFFFF).to_bytes(3, "big") + bytes([ts >> 24 & 0xFF]) + bytes(3) + body
        out += (11 + len(body)).to_bytes(4, "big")
    return bytes(out)


def generated_publish(seed: int, messages: int = 1500, tail: bytes = b"") -> bytes:
    client = ClientSession(tc_url="rtmp://127.0.0.1/app", stream_key="key",
                           random_bytes=lambda n: bytes(n))
    server = ServerSession(random_bytes=bytes)
    sent = bytearray(client.initial_bytes())
    server.receive_data(bytes(sent))
    for _ in range(10):
        while (event := server.next_event()) is not None:
            if isinstance(event, PublishRequested):
                server.accept_publish()
        client.receive_data(server.data_to_send())
        more = client.data_to_send()
        if not more:
            break
        sent += more
        server.receive_data(more)
    # Media on csids of our own, cut at the chunk size the client announced.
    muxer = ChunkMuxer(client._chunk_size)  # the size the client announced
    rng = random.Random(seed)
    # Start below the 32-bit wrap and above 0xFFFFFF (extended timestamps), then wrap.
    ts = {MessageType.VIDEO: 0xFFFF0000, MessageType.AUDIO: 0xFFFF0005}
    for n in range(messages):
        kind = rng.random()
        type_id = MessageType.VIDEO if kind < 0.55 else MessageType.AUDIO
        step = rng.choice((0, 1, 21, 33, 40, 1000, 0x10000))
        if rng.random() < 0.02:
            step = -rng.choice((1, 50, 0x10000))  # backward steps stay backward
        if rng.random() < 0.005:
            step = rng.choice((0x80000000, 0x80000001, 0x7FFFFFFF))  # the halfway edge
        ts[type_id] = (ts[type_id] + step) % (1 << 32)
        tags = VIDEO_TAGS if type_id == MessageType.VIDEO else AUDIO_TAGS
        body = tags[0] if rng.random() < 0.6 else rng.choice(tags)
        if rng.random() < 0.1:
            body = body[:-1] + rng.randbytes(1) if body else body
        roll = rng.random()
        if roll < 0.03:
            sub = [(int(rng.choice((8, 9, 18))), rng.randrange(1 << 32), rng.choice(tags))
                   for _ in range(rng.randrange(1, 4))]
            muxer.write_message(8, MessageType.AGGREGATE, 1, ts[type_id], aggregate(sub))
        elif roll < 0.06:
            muxer.write_message(2, MessageType.USER_CONTROL, 0, 0,
                                user_control_payload(UserControlEvent.PING_REQUEST, n))
        else:
            muxer.write_message(6 if type_id == MessageType.VIDEO else 4, type_id, 1,
                                ts[type_id], body)
    return bytes(sent) + muxer.take() + tail


@pytest.mark.parametrize("feed", FEEDS)
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_generated_publish_gives_the_same_units(seed: int, feed: Feed) -> None:
    messages = 600 if feed is bytewise else 1500
    outcome = assert_same(generated_publish(seed, messages), feed)
    assert outcome.errors > 0 and not outcome.closed_by
    frames = [u for u in outcome.units if isinstance(u, MediaFrame)]
    assert len({f.dts >> 32 for f in frames}) > 1  # the timeline crossed a wrap
    assert any(f.pts < f.dts for f in frames)
    assert {type(u) for u in outcome.units} == {MediaFrame, VideoConfig, AudioConfig}


@pytest.mark.parametrize("feed", FEEDS)
def test_a_broken_chunk_stream_closes_after_the_frames_before_it(feed: Feed) -> None:
    # A fmt 1 chunk on a chunk stream that never had a fmt 0 one (RTMP 5.3.1.2).
    broken = generated_publish(4, 200, tail=b"\x45" + bytes(7) + b"more")
    outcome = assert_same(broken, feed)
    assert "csid 5, which has had no fmt 0 chunk" in outcome.closed_by
    assert outcome.messages > 150


def run_into_buffers(data: bytes, feed: Feed) -> tuple[Outcome, int, int]:
    """`run` with parse_media=True through get_buffer/buffer_updated (the server's way), as
    the server acts on buffer_updated's answer: when it is False, nothing is asked for. Checks
    that such a read indeed had nothing to give (no event, nothing to send); returns the
    outcome and the numbers of reads answered False while publishing, and of all reads."""
    server = ServerSession(random_bytes=bytes, parse_media=True)
    path = NewPath()
    skipped = reads = 0
    try:
        for piece in feed(data):
            while piece:  # one read per buffer offered, as asyncio does
                view = server.get_buffer(len(piece))
                n = min(len(view), len(piece))
                view[:n] = piece[:n]
                view.release()
                piece = piece[n:]
                server.new_turn()
                reads += 1
                if not server.buffer_updated(n):
                    skipped += 1
                    assert server.next_event() is None and server.data_to_send() == b""
                    continue
                while True:
                    while (event := server.next_event()) is not None:
                        if isinstance(event, PublishRequested):
                            server.accept_publish()
                        path.take(event)
                    server.data_to_send()  # written, as the server does
                    if not server.turn_spent:
                        break
                    server.new_turn()
    except RemoteProtocolError as exc:
        path.outcome.closed_by = str(exc)
    return path.outcome, skipped, reads


@pytest.mark.parametrize("feed", FEEDS)
def test_a_read_with_no_complete_message_is_answered_false_and_loses_nothing(
        feed: Feed) -> None:
    for data in (DATA, generated_publish(5, 600 if feed is bytewise else 1500),
                 generated_publish(4, 200, tail=b"\x45" + bytes(7) + b"more")):
        want = run(data, feed, parse_media=True)
        got, skipped, reads = run_into_buffers(data, feed)
        assert got == want
        if feed is bytewise:  # the bytes of a publish after its handshake end no message
            assert skipped > reads // 3
        elif feed is whole:  # one read: handshake, commands and media all in it
            assert skipped == 0


def test_a_lone_chunk_header_is_answered_false_its_body_true() -> None:
    # ffmpeg writes each chunk's header and body apart: the header's read completes nothing.
    server = ServerSession(random_bytes=bytes, parse_media=True)
    server.receive_data(generated_publish(6, 20))  # publishing, and still is
    while True:
        server.new_turn()
        while (event := server.next_event()) is not None:
            if isinstance(event, PublishRequested):
                server.accept_publish()
        if not server.turn_spent:
            break
    muxer = ChunkMuxer(128)
    body = VIDEO_TAGS[0]
    muxer.write_message(6, MessageType.VIDEO, 1, 0x7FFF0000, body)
    message = muxer.take()
    header = len(message) - len(body)
    for piece, ready in ((message[:header], False), (message[header:], True)):
        view = server.get_buffer(len(piece))
        view[:len(piece)] = piece
        view.release()
        server.new_turn()
        assert server.buffer_updated(len(piece)) is ready
    event = server.next_event()
    assert isinstance(event, MediaBatch) and event.messages == 1
    [frame] = event.units
    assert isinstance(frame, MediaFrame) and frame.data == NALS and frame.keyframe
    assert server.next_event() is None


def test_unwrap_follows_the_shortest_step_rule() -> None:
    ingest, reference = MediaIngest(), TimestampUnwrapper()
    rng = random.Random(5)
    raw = 0xFFFFFF00
    for _ in range(5000):
        raw = (raw + rng.choice((-1, 1, 1000, 0x7FFFFFFF, 0x80000000, 0x80000001,
                                 rng.randrange(1 << 32)))) % (1 << 32)
        assert ingest.unwrap(raw) == reference.unwrap(raw)
    for bad in (-1, 1 << 32):
        with pytest.raises(ValueError, match="not a 32-bit unsigned value"):
            ingest.unwrap(bad)


@pytest.mark.parametrize(("type_id", "body", "head"), [
    (MessageType.VIDEO, b"\x17\x01\x00\x00\x21" + NALS, 5),
    (MessageType.VIDEO, b"\x91hvc1\x00\x00\x28" + NALS, 8),
    (MessageType.VIDEO, b"\xa3hvc1" + NALS, 5),
    (MessageType.AUDIO, b"\xaf\x01\x21\x10\x04", 2),
    (MessageType.VIDEO, AVC_HEADER, 0),  # left whole for relay.media.flv
    (MessageType.VIDEO, b"\x17\x01\x00\x00\x00", 0),  # an empty frame: flv says Ignored
    (MessageType.AUDIO, b"\xaf\x01", 0),
])
@pytest.mark.parametrize("bytewise_feed", [False, True])
def test_split_media_receives_a_frame_apart_from_its_tag_header(
        type_id: int, body: bytes, head: int, bytewise_feed: bool) -> None:
    # What makes MediaFrame.data the demuxer's own payload, with no copy: the header is kept
    # apart, also when the chunk's header arrives alone (a byte at a time: the message
    # header waits, unconsumed, for the body's first bytes).
    muxer = ChunkMuxer()
    full = body if head == 0 else body + bytes(300)
    muxer.write_message(6, type_id, 1, 40, full)
    data = muxer.take()
    demuxer = ChunkDemuxer()
    demuxer.split_media = True
    message = None
    for piece in (bytewise(data) if bytewise_feed else whole(data)):
        demuxer.feed(piece)
        if (message := demuxer.next_message()) is not None:
            break
    assert message is not None
    assert message.head_len == head
    assert message.payload == full[head:]


def chunk_headers_apart(data: bytes, chunk_size: int) -> Iterator[bytes]:
    """`data` (chunks of ChunkMuxer's stream on one csid, < 64) as ffmpeg writes it
    (rtmppkt.c ff_rtmp_packet_write): each chunk header in a write of its own, then its body."""
    lengths: dict[int, int] = {}
    left = 0  # bytes of the current message still to come
    pos = 0
    while pos < len(data):
        fmt, csid = data[pos] >> 6, data[pos] & 0x3F
        size = (12, 8, 4, 1)[fmt]
        if fmt < 3 and int.from_bytes(data[pos + 1:pos + 4], "big") == 0xFFFFFF:
            size += 4
        if fmt < 2:
            lengths[csid] = int.from_bytes(data[pos + 4:pos + 7], "big")
        yield data[pos:pos + size]
        pos += size
        if left == 0:
            left = lengths[csid]
        body = min(chunk_size, left)
        yield data[pos:pos + body]
        pos += body
        left -= body


def received_with_headers_apart(data: bytes) -> tuple[list[tuple[int, int, bytes]], int]:
    """(timestamp, FLV head length, payload) of each message, the stream fed as ffmpeg's writes
    arrive (each chunk header apart from its body), and the bytes left buffered."""
    demuxer = ChunkDemuxer()
    demuxer.split_media = True
    received = []
    for piece in chunk_headers_apart(data, 128):
        demuxer.feed(piece)
        while (message := demuxer.next_message()) is not None:
            received.append((message.timestamp, message.head_len, message.payload))
    return received, demuxer.buffered


def test_a_chunk_header_alone_waits_for_its_body_and_timestamps_add_up_once() -> None:
    # ffmpeg's writes: every message header (fmt 0, 1, 2 and 3, with and without extended
    # timestamps) arrives before its body. Each is parsed again when the body's first bytes
    # arrive, so its timestamp delta must be applied once, and each frame keeps its tag
    # header apart (no second copy of the frame in rtmp_ingest).
    frames = [(40, b"\x17\x01\x00\x00\x21" + NALS), (80, b"\x27\x01\x00\x00\x21" + NALS),
              (120, b"\x27\x01\x00\x00\x21" + NALS),  # same delta and length: fmt 3
              (160, b"\x27\x01\x00\x00\x21" + NALS + bytes(500)),  # length: fmt 1
              (200, b"\x27\x01\x00\x00\x21" + NALS + bytes(500)),
              (0x1000000, b"\x27\x01\x00\x00\x21" + NALS),  # extended timestamp
              (0x1000010, b"\x27\x01\x00\x00\x21" + NALS),
              (0x1000020, b"\x27\x01\x00\x00\x21" + NALS),
              (0x1000030, b"\x27\x01\x00\x00\x21" + NALS + bytes(300))]  # two chunks
    muxer = ChunkMuxer()
    for timestamp, body in frames:
        muxer.write_message(6, MessageType.VIDEO, 1, timestamp, body)
    received, buffered = received_with_headers_apart(muxer.take())
    assert received == [(timestamp, 5, body[5:]) for timestamp, body in frames]
    assert buffered == 0


def test_a_chunk_header_alone_waits_only_for_the_bytes_of_its_own_message() -> None:
    # A message shorter than FLV_HEAD_PEEK, and one whose tag the fast path leaves whole:
    # neither waits for bytes that are not its own.
    muxer = ChunkMuxer()
    muxer.write_message(4, MessageType.AUDIO, 1, 10, b"\xaf\x01\x21")
    muxer.write_message(4, MessageType.AUDIO, 1, 20, b"\xaf")  # short, left whole
    received, _ = received_with_headers_apart(muxer.take())
    assert received == [(10, 2, b"\x21"), (20, 0, b"\xaf")]
