"""A real ffmpeg publish, replayed: every byte ffmpeg sent for a 3 s H.264+AAC push
(`tests/vectors/rtmp/ffmpeg_publish_320x240.bin`), fed to the server session and to the native
demuxer whole, one byte at a time, in random splits, cut short, and with trailing bytes."""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Iterator

import pytest

from relay._native.rtmp_chunk import ChunkDemuxer
from relay.media.flv import EndOfSequence, parse_audio_tag, parse_video_tag
from relay.media.units import AudioConfig, Codec, MediaFrame, TrackKind, VideoConfig
from relay.rtmp.handshake import HANDSHAKE_SIZE
from relay.rtmp.messages import MessageType
from relay.rtmp.session import (
    Connected,
    Event,
    MediaMessage,
    Metadata,
    PublishEnded,
    PublishRequested,
    ServerSession,
    State,
)
from tests.rtmp.helpers.publish_vector import DATA, bytewise, random_splits, whole

CHUNKS = DATA[1 + 2 * HANDSHAKE_SIZE:]  # everything after C0, C1, C2


def replay(feed: Iterator[bytes]) -> tuple[ServerSession, list[Event]]:
    """Feed the encoder's bytes, accepting the publish as Relay would."""
    server = ServerSession()
    events: list[Event] = []
    for piece in feed:
        server.receive_data(piece)
        while (event := server.next_event()) is not None:
            if isinstance(event, PublishRequested):
                server.accept_publish()
            events.append(event)
    return server, events


def summary(events: list[Event]) -> list[object]:
    """Control events as they are, media as (type, timestamp, length)."""
    return [(e.type_id, e.timestamp, len(e.payload)) if isinstance(e, MediaMessage) else e
            for e in events]


REFERENCE = replay(whole(DATA))[1]


def test_the_whole_publish_is_understood() -> None:
    server, events = replay(whole(DATA))
    assert isinstance(events[0], Connected)
    assert events[0].flash_ver == "FMLE/3.0 (compatible; Lavf59.27.100)"
    assert isinstance(events[1], PublishRequested)
    assert events[1].stream_key and events[1].publish_type == "live"
    assert isinstance(events[2], Metadata)
    assert events[2].values["width"] == 320 and events[2].values["videocodecid"] == 7
    assert isinstance(events[-1], PublishEnded)
    assert server.state is State.CLOSING
    media = [e for e in events if isinstance(e, MediaMessage)]
    counts = Counter(e.type_id for e in media)
    # 3 s at 30 fps: the AVC sequence header, 90 frames and the end-of-sequence tag;
    # AAC at 44.1 kHz: the AudioSpecificConfig and 131 frames of 1024 samples (3 s plus the
    # encoder's priming and flush).
    assert counts == {MessageType.VIDEO: 92, MessageType.AUDIO: 132}


def test_media_parses_into_units() -> None:
    units: list[object] = []
    for event in REFERENCE:
        if isinstance(event, MediaMessage):
            parse = parse_video_tag if event.type_id == MessageType.VIDEO else parse_audio_tag
            units.append(parse(event.payload, event.timestamp))
    video = [u for u in units if isinstance(u, VideoConfig)]
    audio = [u for u in units if isinstance(u, AudioConfig)]
    assert [(v.codec, v.width, v.height, v.frame_rate) for v in video] == [
        (Codec.H264, 320, 240, 30.0)]
    assert [(a.codec, a.sample_rate, a.channels) for a in audio] == [(Codec.AAC, 44100, 1)]
    frames = [u for u in units if isinstance(u, MediaFrame)]
    video_frames = [f for f in frames if f.kind is TrackKind.VIDEO]
    assert len(video_frames) == 90
    assert video_frames[0].keyframe
    assert all(b.dts >= a.dts for a, b in itertools.pairwise(video_frames))
    assert video_frames[-1].dts - video_frames[0].dts == pytest.approx(89 * 1000 / 30, abs=1)
    assert sum(isinstance(u, EndOfSequence) for u in units) == 1


@pytest.mark.parametrize("feed", [bytewise, random_splits])
def test_any_split_gives_the_same_events(feed: object) -> None:
    assert callable(feed)
    _, events = replay(feed(DATA))
    assert summary(events) == summary(REFERENCE)


@pytest.mark.parametrize("cut", [1, 1537, 3073, 3100, len(DATA) // 2, len(DATA) - 100])
def test_a_truncated_publish_gives_a_prefix_and_waits(cut: int) -> None:
    server, events = replay(whole(DATA[:cut]))
    assert summary(events) == summary(REFERENCE[:len(events)])
    assert len(events) < len(REFERENCE)
    assert server.state is not State.CLOSING


def test_trailing_bytes_after_the_publish_ended_are_ignored() -> None:
    server, events = replay(whole(DATA + b"\xff" * 1000))
    assert summary(events) == summary(REFERENCE)
    assert server.state is State.CLOSING


def test_native_demuxer_on_the_chunk_stream() -> None:
    """The demuxer alone, whole and bytewise: same messages, nothing left, bounded memory."""
    results = []
    for feed in (whole, bytewise, random_splits):
        demuxer = ChunkDemuxer(max_message_size=8 << 20, max_buffered=1 << 20)
        messages = []
        peak = 0
        for piece in feed(CHUNKS):
            demuxer.feed(piece)
            peak = max(peak, demuxer.allocated)
            while (message := demuxer.next_message()) is not None:
                messages.append((message.csid, message.type_id, message.timestamp,
                                 message.stream_id, bytes(message.payload)))
        assert demuxer.buffered == 0
        assert peak < 1 << 20
        results.append(messages)
    assert results[0] == results[1] == results[2]
    types = Counter(m[1] for m in results[0])
    assert types[MessageType.VIDEO] == 92
    assert types[MessageType.SET_CHUNK_SIZE] == 1
