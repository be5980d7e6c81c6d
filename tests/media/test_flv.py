"""FLV tag bodies, legacy (FLV 10.1 E.4.2, E.4.3) and Enhanced RTMP (v1, v2), to media units."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.media.flv import (
    EndOfSequence,
    FlvError,
    Ignored,
    parse_audio_tag,
    parse_video_tag,
)
from relay.media.units import AudioConfig, Codec, MediaFrame, TrackKind, VideoConfig
from tests.media.helpers.h264 import PPS, AvcSpsSpec, avcc, write_avc_sps
from tests.media.helpers.hevc import HevcSpsSpec, hvcc
from tests.media.helpers.vectors import TAG_AUDIO, TAG_VIDEO, is_header_tag, read_flv

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "media"

AVCC = avcc([write_avc_sps(AvcSpsSpec())], [PPS])  # 1280x720 High 3.1, 30 fps
HVCC = hvcc(HevcSpsSpec())  # 1280x720 Main 3.1, 30 fps
ASC = bytes.fromhex("1190")
NALS = b"\x00\x00\x00\x05\x65\x88\x84\x00\x33"


def si24(value: int) -> bytes:
    return value.to_bytes(3, "big", signed=True)


def ex_video(frame_type: int, packet_type: int, fourcc: bytes = b"hvc1") -> bytes:
    return bytes([0x80 | frame_type << 4 | packet_type]) + fourcc


def ex_audio(packet_type: int, fourcc: bytes = b"mp4a") -> bytes:
    return bytes([0x90 | packet_type]) + fourcc


# -- legacy AVC --

@pytest.mark.parametrize(("first", "cts", "keyframe"), [
    (0x17, 0, True), (0x27, 67, False), (0x37, -33, False), (0x17, 0x7FFFFF, True),
    (0x27, -0x800000, False),
])
def test_avc_frame(first: int, cts: int, keyframe: bool) -> None:
    payload = bytes([first, 1]) + si24(cts) + NALS
    frame = parse_video_tag(payload, 1_000_000)
    assert frame == MediaFrame(TrackKind.VIDEO, 1_000_000, 1_000_000 + cts, keyframe, NALS)
    assert type(frame.data) is bytes


def test_avc_sequence_header() -> None:
    config = parse_video_tag(b"\x17\x00\x00\x00\x00" + AVCC, 0)
    assert config == VideoConfig(codec=Codec.H264, record=AVCC, width=1280, height=720,
                                 codecs="avc1.64001f", frame_rate=30.0)


def test_avc_end_of_sequence() -> None:
    assert parse_video_tag(b"\x17\x02\x00\x00\x00", 5) == EndOfSequence(TrackKind.VIDEO)


@pytest.mark.parametrize(("payload", "reason"), [
    (b"\x57\x00", "video info/command frame"),  # FLV frame type 5 with an AVC codec id
    (b"\x52\x00", "video info/command frame"),
    (b"\x22\x00\x00", "unsupported video codec id 2 (Sorenson H.263)"),
    (b"\x14\x00", "unsupported video codec id 4 (On2 VP6)"),
    (b"\x16", "unsupported video codec id 6 (Screen video v2)"),
    (b"\x1c\x00\x00\x00\x00\x01",
     "unsupported video codec id 12 (non-standard HEVC; publish HEVC with Enhanced RTMP "
     "instead)"),
    (b"\x1f\x00", "unsupported video codec id 15 (reserved)"),
    (b"\x27\x01\x00\x00\x00", "empty AVC frame"),
])
def test_video_ignored(payload: bytes, reason: str) -> None:
    assert parse_video_tag(payload, 0) == Ignored(reason)


@pytest.mark.parametrize(("payload", "message"), [
    (b"", "empty video tag"),
    (b"\x17", "AVC video tag is 1 bytes, shorter than its 5-byte header"),
    (b"\x17\x01\x00\x00", "AVC video tag is 4 bytes"),
    (b"\x17\x03\x00\x00\x00", "reserved AVCPacketType 3"),
    (b"\x17\xff\x00\x00\x00", "reserved AVCPacketType 255"),
    (b"\x07\x01\x00\x00\x00\x00", r"reserved video frame type 0 \(first byte 0x07\)"),
    (b"\x67\x01\x00\x00\x00\x00", "reserved video frame type 6"),
    (b"\x77\x01\x00\x00\x00\x00", "reserved video frame type 7"),
    (b"\x17\x00\x00\x00\x00", "AVC sequence header: avcC is 0 bytes"),
    (b"\x17\x00\x00\x00\x00" + AVCC[:20], r"AVC sequence header: avcC SPS #0 is truncated"),
    (b"\x17\x00\x00\x00\x00" + avcc([write_avc_sps(AvcSpsSpec())[:8]], [PPS]),
     r"AVC sequence header: H\.264 SPS is truncated"),
    (b"\x17\x00\x00\x00\x00" + avcc([write_avc_sps(AvcSpsSpec(width_mbs=2000))], [PPS]),
     "AVC sequence header: H.264 SPS: picture size 32000x720 is over the 16384 limit"),
])
def test_video_errors(payload: bytes, message: str) -> None:
    with pytest.raises(FlvError, match=message):
        parse_video_tag(payload, 0)


# -- Enhanced RTMP video --

def test_hevc_sequence_start() -> None:
    config = parse_video_tag(ex_video(1, 0) + HVCC, 0)
    assert config == VideoConfig(codec=Codec.HEVC, record=HVCC, width=1280, height=720,
                                 codecs="hvc1.1.6.L93.B0", frame_rate=30.0)


@pytest.mark.parametrize(("fourcc", "cts"), [(b"hvc1", 40), (b"hvc1", -40), (b"avc1", 7)])
def test_enhanced_coded_frames_carry_a_composition_time(fourcc: bytes, cts: int) -> None:
    frame = parse_video_tag(ex_video(2, 1, fourcc) + si24(cts) + NALS, 100)
    assert frame == MediaFrame(TrackKind.VIDEO, 100, 100 + cts, False, NALS)


@pytest.mark.parametrize("fourcc", [b"hvc1", b"avc1", b"av01", b"vp09"])
def test_coded_frames_x_have_no_composition_time(fourcc: bytes) -> None:
    frame = parse_video_tag(ex_video(1, 3, fourcc) + NALS, 100)
    assert frame == MediaFrame(TrackKind.VIDEO, 100, 100, True, NALS)


@pytest.mark.parametrize("fourcc", [b"av01", b"vp09"])
def test_av1_and_vp9_coded_frames_have_no_composition_time(fourcc: bytes) -> None:
    obus = b"\x12\x00\x0a\x0b\x00\x00\x00"
    frame = parse_video_tag(ex_video(1, 1, fourcc) + obus, 100)
    assert frame == MediaFrame(TrackKind.VIDEO, 100, 100, True, obus)


def test_enhanced_avc_sequence_start() -> None:
    config = parse_video_tag(ex_video(1, 0, b"avc1") + AVCC, 0)
    assert isinstance(config, VideoConfig)
    assert (config.codec, config.codecs, config.record) == (Codec.H264, "avc1.64001f", AVCC)


@pytest.mark.parametrize(("av1c", "codecs"), [
    (bytes([0x81, 0x04, 0x0C, 0x00]), "av01.0.04M.08"),  # main profile, level 3.0, 8-bit
    (bytes([0x81, 0x2D, 0xC0, 0x00]), "av01.1.13H.10"),  # high profile, 5.1, high tier
    (bytes([0x81, 0x48, 0x60, 0x00]), "av01.2.08M.12"),  # professional, 12-bit
    (bytes([0x81, 0x48, 0x40, 0x00, 0x0A, 0x0B]), "av01.2.08M.10"),  # with configOBUs
])
def test_av1_sequence_start(av1c: bytes, codecs: str) -> None:
    config = parse_video_tag(ex_video(1, 0, b"av01") + av1c, 0)
    assert config == VideoConfig(codec=Codec.AV1, record=av1c, width=0, height=0,
                                 codecs=codecs, frame_rate=None)


def test_vp9_sequence_start_is_carried_through() -> None:
    record = bytes.fromhex("01000000001f800102020000")  # vpcC: version 1, profile 0, ...
    config = parse_video_tag(ex_video(1, 0, b"vp09") + record, 0)
    assert config == VideoConfig(codec=Codec.VP9, record=record, width=0, height=0,
                                 codecs="vp09", frame_rate=None)


def test_enhanced_sequence_end() -> None:
    assert parse_video_tag(ex_video(1, 2), 0) == EndOfSequence(TrackKind.VIDEO)


@pytest.mark.parametrize(("payload", "reason"), [
    (ex_video(5, 1) + b"\x00", "video info/command frame"),
    (ex_video(5, 0) + b"\x01", "video info/command frame"),
    # Metadata ignores the frame type, even a reserved one.
    (ex_video(1, 4) + b"\x02\x00\x09colorInfo\x03\x00\x00\x09", "enhanced video metadata"),
    (ex_video(0, 4) + b"\x02", "enhanced video metadata"),
    (ex_video(1, 5, b"av01") + b"\x80", "av1 MPEG2TSSequenceStart is not supported"),
    (ex_video(1, 6) + b"\x00hvc1\x00", "Enhanced RTMP multitrack video is not supported"),
    (ex_video(1, 0, b"vp08") + b"\x01", "unsupported video FourCC 'vp08'"),
    (ex_video(1, 1, b"vvc1") + b"\x00\x00\x00", "unsupported video FourCC 'vvc1'"),
    (ex_video(1, 1, b"\x00\x01\x02\x03"), "unsupported video FourCC 0x00010203"),
    (ex_video(2, 1) + si24(0), "empty hevc frame"),
    (ex_video(2, 3, b"av01"), "empty av1 frame"),
])
def test_enhanced_video_ignored(payload: bytes, reason: str) -> None:
    result = parse_video_tag(payload, 0)
    assert isinstance(result, Ignored)
    assert result.reason.startswith(reason)


@pytest.mark.parametrize(("payload", "message"), [
    (ex_video(1, 1)[:3], "enhanced video tag is 3 bytes, truncated before its FourCC"),
    (ex_video(1, 1) + b"\x00\x00", "enhanced hevc CodedFrames tag is truncated in its "
                                   "composition time"),
    (ex_video(0, 1) + si24(0) + NALS, "reserved video frame type 0 in an enhanced video tag"),
    (ex_video(6, 3) + NALS, "reserved video frame type 6"),
    (ex_video(1, 8), "reserved enhanced VideoPacketType 8"),
    (ex_video(1, 15), "reserved enhanced VideoPacketType 15"),
    (ex_video(1, 0) + HVCC[:10], "HEVC SequenceStart: hvcC is 10 bytes"),
    (ex_video(1, 0, b"avc1") + b"\x02", "AVC SequenceStart: avcC is 1 bytes"),
    (ex_video(1, 0, b"av01") + b"\x81\x00", "AV1 SequenceStart: av1C is 2 bytes"),
    (ex_video(1, 0, b"av01") + b"\x01\x00\x00\x00", "av1C marker/version byte is 0x01"),
])
def test_enhanced_video_errors(payload: bytes, message: str) -> None:
    with pytest.raises(FlvError, match=message):
        parse_video_tag(payload, 0)


def mod_ex(data: bytes, next_packet_type: int, mod_ex_type: int = 0) -> bytes:
    """One E-RTMP v2 ModEx entry: modExDataSize (UI8 + 1, or 0xff then UI16 + 1), the data,
    then modExType and the next packet type in one byte."""
    if len(data) <= 255:
        size = bytes([len(data) - 1])
    else:
        size = b"\xff" + (len(data) - 1).to_bytes(2, "big")
    return size + data + bytes([mod_ex_type << 4 | next_packet_type])


@pytest.mark.parametrize("entries", [
    [mod_ex(b"\x07\xa1\x20", 1)],  # TimestampOffsetNano of 500000 ns
    [mod_ex(b"\x00" * 3, 7), mod_ex(b"\x01", 1, 3)],  # a chain; an unknown modifier
    [mod_ex(b"\x00" * 300, 1, 9)],  # the 16-bit size escape
    [mod_ex(b"\x00" * 256, 1)],  # 256 bytes needs the escape too
])
def test_mod_ex_is_skipped(entries: list[bytes]) -> None:
    payload = bytes([0x80 | 1 << 4 | 7]) + b"".join(entries) + b"hvc1" + si24(33) + NALS
    assert parse_video_tag(payload, 10) == MediaFrame(TrackKind.VIDEO, 10, 43, True, NALS)


@pytest.mark.parametrize("tail", [b"", b"\x02", b"\x02\x00\x00", b"\xff", b"\xff\x00",
                                  b"\xff\x01\x00" + b"\x00" * 256])
def test_truncated_mod_ex(tail: bytes) -> None:
    with pytest.raises(FlvError, match="enhanced video tag is truncated in a"):
        parse_video_tag(bytes([0x80 | 1 << 4 | 7]) + tail, 0)


# -- audio --

def test_aac_frame() -> None:
    raw = b"\x21\x1a\x8f\xff\xff"
    frame = parse_audio_tag(b"\xaf\x01" + raw, 46)
    assert frame == MediaFrame(TrackKind.AUDIO, 46, 46, True, raw)
    assert type(frame.data) is bytes


def test_aac_sequence_header() -> None:
    assert parse_audio_tag(b"\xaf\x00" + ASC, 0) == AudioConfig(
        codec=Codec.AAC, record=ASC, sample_rate=48000, channels=2, codecs="mp4a.40.2")


def test_aac_ignores_the_rate_size_and_type_bits() -> None:
    # FLV says AAC always signals 44 kHz / 16-bit / stereo there; encoders write other bits.
    assert isinstance(parse_audio_tag(b"\xa0\x00" + ASC, 0), AudioConfig)


@pytest.mark.parametrize(("first", "name"), [
    (0x0, "linear PCM, platform endian"), (0x1, "ADPCM"), (0x2, "MP3"),
    (0x3, "linear PCM, little endian"), (0x4, "Nellymoser 16 kHz mono"),
    (0x5, "Nellymoser 8 kHz mono"), (0x6, "Nellymoser"), (0x7, "G.711 A-law"),
    (0x8, "G.711 mu-law"), (0xB, "Speex"), (0xC, "reserved"), (0xD, "reserved"),
    (0xE, "MP3 8 kHz"), (0xF, "device-specific"),
])
def test_other_audio_formats_are_ignored(first: int, name: str) -> None:
    assert parse_audio_tag(bytes([first << 4 | 0xF, 0xFF, 0xFB]), 0) == Ignored(
        f"unsupported audio format {first} ({name})")


def test_enhanced_aac() -> None:
    config = parse_audio_tag(ex_audio(0) + ASC, 0)
    assert isinstance(config, AudioConfig) and config.sample_rate == 48000
    assert parse_audio_tag(ex_audio(1) + b"\x21\x00", 23) == MediaFrame(
        TrackKind.AUDIO, 23, 23, True, b"\x21\x00")
    with_mod_ex = bytes([0x97]) + mod_ex(b"\x00\x00\x01", 1) + b"mp4a\x21\x00"
    assert parse_audio_tag(with_mod_ex, 23) == MediaFrame(TrackKind.AUDIO, 23, 23, True,
                                                          b"\x21\x00")


@pytest.mark.parametrize(("payload", "reason"), [
    (b"\xaf\x01", "empty AAC frame"),
    (ex_audio(1), "empty AAC frame"),
    (ex_audio(2), "enhanced audio SequenceEnd"),
    (ex_audio(4) + b"\x01\x02\x00\x00\x00\x03", "enhanced audio MultichannelConfig"),
    (ex_audio(5) + b"\x00", "Enhanced RTMP multitrack audio is not supported"),
    (ex_audio(0, b"Opus") + b"OpusHead", "unsupported audio FourCC 'Opus'"),
    (ex_audio(1, b"fLaC"), "unsupported audio FourCC 'fLaC'"),
])
def test_audio_ignored(payload: bytes, reason: str) -> None:
    result = parse_audio_tag(payload, 0)
    assert isinstance(result, Ignored) and result.reason.startswith(reason)


@pytest.mark.parametrize(("payload", "message"), [
    (b"", "empty audio tag"),
    (b"\xaf", "AAC audio tag is 1 byte, shorter than its 2-byte header"),
    (b"\xaf\x02\x00", "reserved AACPacketType 2"),
    (b"\xaf\x00", "AAC sequence header: AudioSpecificConfig is truncated"),
    (b"\xaf\x00\x11\xc0", "AAC sequence header: AudioSpecificConfig: channelConfiguration 8 "
                         "is reserved"),
    (b"\xaf\x00\x17\x10", "samplingFrequencyIndex 14 is reserved"),
    (ex_audio(3), "reserved enhanced AudioPacketType 3"),
    (ex_audio(6), "reserved enhanced AudioPacketType 6"),
    (ex_audio(0)[:4], "enhanced audio tag is 4 bytes, truncated before its FourCC"),
    (ex_audio(0) + b"\x11", "AAC SequenceStart: AudioSpecificConfig is truncated"),
    (bytes([0x97]), "enhanced audio tag is truncated in a ModEx data size"),
])
def test_audio_errors(payload: bytes, message: str) -> None:
    with pytest.raises(FlvError, match=message):
        parse_audio_tag(payload, 0)


# -- any input --

def parse_any(kind: int, payload: bytes) -> object:
    try:
        if kind == TAG_VIDEO:
            return parse_video_tag(payload, 1234)
        return parse_audio_tag(payload, 1234)
    except FlvError as exc:
        message = str(exc)
        assert message and "\n" not in message
        return exc


@settings(max_examples=500)
@given(st.sampled_from([TAG_AUDIO, TAG_VIDEO]), st.binary(max_size=64))
def test_random_bytes_raise_only_flv_error(kind: int, payload: bytes) -> None:
    parse_any(kind, payload)


# Known headers followed by random bytes, to get past the first byte into the records.
PREFIXES = [
    (TAG_VIDEO, b"\x17\x00\x00\x00\x00"), (TAG_VIDEO, b"\x17\x00\x00\x00\x00\x01\x64\x00\x1f"),
    (TAG_VIDEO, ex_video(1, 0)), (TAG_VIDEO, ex_video(1, 0) + HVCC[:23]),
    (TAG_VIDEO, ex_video(1, 0, b"avc1")), (TAG_VIDEO, ex_video(1, 0, b"av01")),
    (TAG_VIDEO, bytes([0x97])), (TAG_AUDIO, b"\xaf\x00"), (TAG_AUDIO, ex_audio(0)),
    (TAG_AUDIO, bytes([0x97])),
]


@settings(max_examples=500)
@given(st.sampled_from(PREFIXES), st.binary(max_size=200))
def test_known_headers_with_random_bodies_raise_only_flv_error(
        prefix: tuple[int, bytes], body: bytes) -> None:
    parse_any(prefix[0], prefix[1] + body)


def _vector_headers() -> list[tuple[int, bytes]]:
    headers = []
    for path in sorted(VECTORS.glob("*.flv")):
        for tag in read_flv(path.read_bytes()):
            if tag.type in (TAG_AUDIO, TAG_VIDEO) and is_header_tag(tag):
                headers.append((tag.type, tag.body))
    return headers


VECTOR_HEADERS = _vector_headers()


@settings(max_examples=500)
@given(st.sampled_from(VECTOR_HEADERS), st.data())
def test_mutated_real_sequence_headers_raise_only_flv_error(
        header: tuple[int, bytes], data: st.DataObject) -> None:
    kind, body = header
    mutated = bytearray(body)
    for _ in range(data.draw(st.integers(1, 4))):
        index = data.draw(st.integers(0, len(mutated) - 1))
        mutated[index] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(mutated)))
    parse_any(kind, bytes(mutated[:cut]))


def test_every_prefix_of_real_sequence_headers_raises_flv_error_or_parses() -> None:
    assert len(VECTOR_HEADERS) >= 10
    for kind, body in VECTOR_HEADERS:
        full = parse_any(kind, body)
        assert isinstance(full, VideoConfig | AudioConfig)
        for end in range(len(body)):
            result = parse_any(kind, body[:end])
            # A prefix may parse only by dropping bytes nobody reads (PPS tails are kept as
            # records, so then the record differs but the facts do not).
            if not isinstance(result, FlvError):
                assert isinstance(result, VideoConfig | AudioConfig)
                assert (type(result), result.codecs) == (type(full), full.codecs)


@given(st.integers(-(2**23), 2**23 - 1), st.integers(0, 2**40))
def test_composition_time_round_trip(cts: int, dts: int) -> None:
    frame = parse_video_tag(b"\x27\x01" + si24(cts) + NALS, dts)
    assert isinstance(frame, MediaFrame) and frame.pts - frame.dts == cts
