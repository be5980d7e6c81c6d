"""relay.media.ts_units: PES payloads from real encoders to media units, checked against
what ffmpeg made of the same coded frames (an MP4 read with PyAV).

The vectors (tests/vectors/elementary/README.md) are elementary streams; this test splits
them into access units (video) or groups of ADTS frames (audio) the way a TS muxer puts them
into PES packets, with PTS / DTS taken from the reference MP4.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relay.media import ts_units
from relay.media.aac import aac_audio_config
from relay.media.h264 import avc_video_config, build_avcc, parse_avcc
from relay.media.hevc import hevc_video_config, parse_hvcc
from relay.media.ts_units import (
    MAX_NAL_UNITS,
    MAX_PARAMETER_SET_SIZE,
    MAX_PARAMETER_SETS,
    MAX_PENDING_AUDIO_BYTES,
    STREAM_TYPE_AAC_ADTS,
    STREAM_TYPE_H264,
    STREAM_TYPE_HEVC,
    TIMELINE_HEADROOM_MS,
    TsIngestError,
    TsMediaAssembler,
)
from relay.media.units import AudioConfig, MediaFrame, TrackConfig, TrackKind, VideoConfig
from tests.media.helpers.vectors import VECTORS as FLV_VECTORS
from tests.media.helpers.vectors import read_flv

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "elementary"
VIDEO_PID, AUDIO_PID = 0x100, 0x101
WRAP = 1 << 33
PROGRAM = [(VIDEO_PID, STREAM_TYPE_H264), (AUDIO_PID, STREAM_TYPE_AAC_ADTS)]
HEVC_PROGRAM = [(VIDEO_PID, STREAM_TYPE_HEVC), (AUDIO_PID, STREAM_TYPE_AAC_ADTS)]

Unit = TrackConfig | MediaFrame


# -- the test's own readers: Annex-B, ADTS, length-prefixed samples, the reference MP4 ----

def annexb_nal_units(stream: bytes) -> list[bytes]:
    """NAL units of an Annex-B byte stream (start codes found with bytes.find)."""
    starts = []
    pos = stream.find(b"\x00\x00\x01")
    while pos >= 0:
        starts.append(pos + 3)
        pos = stream.find(b"\x00\x00\x01", pos + 3)
    ends = [start - 3 for start in starts[1:]] + [len(stream)]
    return [stream[start:end].rstrip(b"\x00") for start, end in zip(starts, ends, strict=True)]


def nal_type(nal: bytes, hevc: bool) -> int:
    return (nal[0] >> 1) & 0x3F if hevc else nal[0] & 0x1F


def is_vcl(nal: bytes, hevc: bool) -> bool:
    return nal_type(nal, hevc) < 32 if hevc else 1 <= nal_type(nal, hevc) <= 5


def starts_picture(nal: bytes, hevc: bool) -> bool:
    """first_slice_segment_in_pic_flag (H.265) / first_mb_in_slice == 0 (H.264): the slice
    header's first bit is 1."""
    return bool(nal[2] & 0x80) if hevc else bool(nal[1] & 0x80)


def access_units(stream: bytes, hevc: bool) -> list[list[bytes]]:
    """Split into access units (H.264 7.4.1.2.3, H.265 7.4.2.4.4): a new one starts at a
    delimiter, parameter set or SEI after a picture's slices, or at a picture's first slice."""
    units: list[list[bytes]] = []
    seen_vcl = False
    prefix_types = {32, 33, 34, 35, 39} if hevc else {6, 7, 8, 9}
    for nal in annexb_nal_units(stream):
        kind = nal_type(nal, hevc)
        if not units or (seen_vcl and (kind in prefix_types
                                       or (is_vcl(nal, hevc) and starts_picture(nal, hevc)))):
            units.append([])
            seen_vcl = False
        units[-1].append(nal)
        seen_vcl |= is_vcl(nal, hevc)
    return units


def hvcc_arrays(record: bytes) -> dict[int, list[bytes]]:
    """Every NAL array of an hvcC (14496-15 8.3.3.1.1), SEI included, by NAL type."""
    arrays: dict[int, list[bytes]] = {}
    pos = 23
    for _ in range(record[22]):
        kind, count = record[pos] & 0x3F, int.from_bytes(record[pos + 1 : pos + 3], "big")
        pos += 3
        for _ in range(count):
            size = int.from_bytes(record[pos : pos + 2], "big")
            arrays.setdefault(kind, []).append(record[pos + 2 : pos + 2 + size])
            pos += 2 + size
    return arrays


def annexb(nals: list[bytes]) -> bytes:
    return b"".join(b"\x00\x00\x00\x01" + nal for nal in nals)


def length_prefixed(sample: bytes) -> list[bytes]:
    nals, pos = [], 0
    while pos < len(sample):
        size = int.from_bytes(sample[pos : pos + 4], "big")
        assert size > 0 and pos + 4 + size <= len(sample), "bad length prefix"
        nals.append(sample[pos + 4 : pos + 4 + size])
        pos += 4 + size
    return nals


def adts_frames(stream: bytes) -> list[bytes]:
    """Whole ADTS frames, by their aac_frame_length (13818-7 6.2)."""
    frames, pos = [], 0
    while pos < len(stream):
        length = ((stream[pos + 3] & 3) << 11) | (stream[pos + 4] << 3) | (stream[pos + 5] >> 5)
        frames.append(stream[pos : pos + length])
        pos += length
    return frames


def with_crc(frame: bytes) -> bytes:
    """The same ADTS frame with protection_absent = 0 and a (dummy) crc_check."""
    length = len(frame) + 2
    header = bytearray(frame[:7])
    header[1] &= 0xFE
    header[3] = (header[3] & 0xFC) | (length >> 11)
    header[4] = (length >> 3) & 0xFF
    header[5] = ((length & 7) << 5) | (header[5] & 0x1F)
    return bytes(header) + b"\xab\xcd" + frame[7:]


@dataclass(frozen=True)
class Packet:
    pts: int  # 90 kHz ticks from the MP4's time base, relative to the first dts
    dts: int
    keyframe: bool
    data: bytes


@dataclass(frozen=True)
class Reference:
    extradata: bytes
    packets: list[Packet]


def mp4_reference(name: str, *, whole_ticks: bool = True) -> Reference:
    with av.open(str(VECTORS / name)) as container:
        stream = container.streams[0]
        base = stream.time_base
        assert base is not None and stream.codec_context.extradata is not None
        packets = []
        for packet in container.demux(stream):
            if packet.size == 0:
                continue
            assert packet.pts is not None and packet.dts is not None
            pts, dts = Fraction(packet.pts) * base * 90000, Fraction(packet.dts) * base * 90000
            assert not whole_ticks or pts.denominator == dts.denominator == 1, \
                "video times are whole 90 kHz ticks"
            packets.append(Packet(int(pts), int(dts), packet.is_keyframe, bytes(packet)))
        first = packets[0].dts
        packets = [Packet(p.pts - first, p.dts - first, p.keyframe, p.data) for p in packets]
        return Reference(bytes(stream.codec_context.extradata), packets)


# -- driving the assembler ------------------------------------------------------------

@dataclass
class Pes:
    pid: int
    stream_type: int
    pts: int
    dts: int
    data: bytes
    discontinuity: bool = False


def video_pes(name: str, stream_type: int, base: int, *, aud: bool = False) -> list[Pes]:
    hevc = stream_type == STREAM_TYPE_HEVC
    reference = mp4_reference(name.rsplit(".", 1)[0] + ".mp4")
    units = access_units((VECTORS / name).read_bytes(), hevc)
    assert len(units) == len(reference.packets)
    delimiter = [b"\x46\x01\x50"] if hevc else [b"\x09\xf0"]  # what TS muxers insert
    return [Pes(VIDEO_PID, stream_type, (base + p.pts) % WRAP, (base + p.dts) % WRAP,
                annexb((delimiter if aud else []) + nals))
            for nals, p in zip(units, reference.packets, strict=True)]


def feed(assembler: TsMediaAssembler, packets: list[Pes]) -> list[Unit]:
    out: list[Unit] = []
    for pes in packets:
        out += assembler.on_pes(pes.pid, pes.stream_type, pes.pts, pes.dts, False,
                                pes.discontinuity, pes.data)
    return out + assembler.flush()


def run(packets: list[Pes], program: list[tuple[int, int]] = PROGRAM,
        ) -> tuple[TsMediaAssembler, list[Unit]]:
    assembler = TsMediaAssembler()
    assert assembler.on_program(program) == []
    return assembler, feed(assembler, packets)


def frames(units: list[Unit], kind: TrackKind | None = None) -> list[MediaFrame]:
    return [u for u in units if isinstance(u, MediaFrame) and (kind is None or u.kind is kind)]


def ms(ticks: int, origin: int) -> int:
    return (ticks - origin) // 90


# -- video against ffmpeg ---------------------------------------------------------------

VIDEO_CASES = [("h264_320x180_30fps.h264", STREAM_TYPE_H264),
               ("hevc_320x180_30fps.hevc", STREAM_TYPE_HEVC)]
PARAMETER_SET_TYPES = {STREAM_TYPE_H264: {7, 8}, STREAM_TYPE_HEVC: {32, 33, 34}}


@pytest.mark.parametrize(("name", "stream_type"), VIDEO_CASES)
def test_video_matches_ffmpeg(name: str, stream_type: int) -> None:
    hevc = stream_type == STREAM_TYPE_HEVC
    reference = mp4_reference(name.rsplit(".", 1)[0] + ".mp4")
    base = 123_456_789
    assembler, units = run(video_pes(name, stream_type, base),
                           HEVC_PROGRAM if hevc else PROGRAM)
    config = units[0]
    assert isinstance(config, VideoConfig)
    assert [u for u in units if isinstance(u, VideoConfig)] == [config]  # repeats are no change
    if hevc:
        expected = hevc_video_config(reference.extradata)
        ours, theirs = parse_hvcc(config.record), parse_hvcc(reference.extradata)
        # Every field of ffmpeg's hvcC but the array completeness bits (ours: hvc1, no
        # parameter sets in the samples) and x265's SEI array, which stays in-band here.
        assert config.record[:22] == reference.extradata[:22]
        assert (ours.vps, ours.sps, ours.pps) == (theirs.vps, theirs.sps, theirs.pps)
        assert (config.width, config.height, config.codecs, config.frame_rate) == \
            (expected.width, expected.height, expected.codecs, expected.frame_rate)
        assert config.codecs == "hvc1.1.6.L60.90"
    else:
        assert config.record == reference.extradata  # byte for byte, extension included
        assert config == avc_video_config(reference.extradata)
        assert config.codecs == "avc1.64000d"
    assert (config.width, config.height, config.frame_rate) == (320, 180, 30.0)
    out = frames(units)
    assert len(out) == len(reference.packets) == assembler.video_frames == 60
    origin = base + min(reference.packets[0].pts, reference.packets[0].dts) \
        - TIMELINE_HEADROOM_MS * 90
    for frame, packet in zip(out, reference.packets, strict=True):
        kept = [nal for nal in length_prefixed(packet.data)
                if nal_type(nal, hevc) not in PARAMETER_SET_TYPES[stream_type]]
        if hevc and packet.keyframe:
            # hevc_mp4toannexb puts all of the hvcC's arrays before each IRAP picture, so the
            # Annex-B stream has x265's SEI from the hvcC there as well.
            kept = [*hvcc_arrays(reference.extradata)[39], *kept]
        assert length_prefixed(frame.data) == kept
        assert frame.keyframe == packet.keyframe
        assert (frame.dts, frame.pts) == (ms(base + packet.dts, origin),
                                          ms(base + packet.pts, origin))
    assert out[0].dts == TIMELINE_HEADROOM_MS  # the first timestamp seen
    assert sum(f.keyframe for f in out) == 2
    assert any(f.pts > f.dts for f in out), "B-frames: presentation after decode"
    assert (assembler.malformed, assembler.skipped_frames, assembler.discontinuities) == (0, 0, 0)


@pytest.mark.parametrize(("name", "stream_type"), VIDEO_CASES)
def test_delimiters_are_dropped_and_wrap_is_unwrapped(name: str, stream_type: int) -> None:
    program = HEVC_PROGRAM if stream_type == STREAM_TYPE_HEVC else PROGRAM
    _, plain = run(video_pes(name, stream_type, 5000), program)
    # Start 0.5 s before the 33-bit wrap, with access unit delimiters as a TS muxer adds them.
    packets = video_pes(name, stream_type, WRAP - 45_000, aud=True)
    assert any(p.pts < 45_000 for p in packets) and packets[0].pts > WRAP - 50_000
    _, wrapped = run(packets, program)
    assert wrapped == plain


@pytest.mark.parametrize("same_pts", [False, True])
def test_access_unit_split_over_several_pes(same_pts: bool) -> None:
    whole = video_pes(*VIDEO_CASES[0], base=0)
    split: list[Pes] = []
    for pes in whole:
        third = len(pes.data) // 3
        pieces = [pes.data[:third], pes.data[third : 2 * third], pes.data[2 * third :]]
        split.append(Pes(pes.pid, pes.stream_type, pes.pts, pes.dts, pieces[0]))
        for piece in pieces[1:]:
            pts, dts = (pes.pts, pes.dts) if same_pts else (-1, -1)
            split.append(Pes(pes.pid, pes.stream_type, pts, dts, piece))
    assert run(split)[1] == run(whole)[1]


def test_frames_before_configuration_and_keyframe_are_dropped() -> None:
    packets = video_pes(*VIDEO_CASES[0], base=0)
    assembler, units = run(packets[5:])
    assert isinstance(units[0], VideoConfig)
    out = frames(units)
    assert len(out) == 30 and out[0].keyframe
    assert assembler.skipped_frames == 25  # access units 5..29: no parameter sets yet


def test_video_discontinuity_drops_until_the_next_keyframe() -> None:
    packets = video_pes(*VIDEO_CASES[0], base=0)
    packets[10].discontinuity = True
    assembler, units = run(packets)
    _, clean = run(video_pes(*VIDEO_CASES[0], base=0))
    out, expected = frames(units), frames(clean)
    # Access unit 10 (data missing) and 9 (its tail may be what was lost) are dropped, then
    # 11..29 wait for the keyframe at 30.
    assert out == expected[:9] + expected[30:]
    assert assembler.discontinuities == 2
    assert assembler.skipped_frames == 19


def test_parameter_set_change_publishes_a_new_config() -> None:
    first = video_pes(*VIDEO_CASES[0], base=0)
    # A second, real H.264 stream (640x360 Baseline) from an FLV vector, in Annex-B form with
    # its SPS and PPS before each keyframe, continuing the timeline.
    tags = read_flv((FLV_VECTORS / "h264_baseline_640x360_25fps_aac_44k_mono.flv").read_bytes())
    video = [t for t in tags if t.type == 9]
    avcc = parse_avcc(video[0].body[5:])
    start = first[-1].dts + 3000
    second = []
    for tag in video[1:]:
        if tag.body[1] != 1:
            continue
        nals = length_prefixed(tag.body[5:])
        if tag.body[0] >> 4 == 1:
            nals = [*avcc.sps, *avcc.pps, *nals]
        composition = int.from_bytes(tag.body[2:5], "big", signed=True)
        dts = start + tag.timestamp * 90
        second.append(Pes(VIDEO_PID, STREAM_TYPE_H264, dts + composition * 90, dts,
                          annexb(nals)))
    assembler, units = run(first + second)
    configs = [u for u in units if isinstance(u, VideoConfig)]
    assert [(c.width, c.height) for c in configs] == [(320, 180), (640, 360)]
    assert assembler.configs == 2 and assembler.malformed == 0
    assert configs[1] == avc_video_config(build_avcc(avcc.sps, avcc.pps))
    assert parse_avcc(configs[1].record).sps == avcc.sps
    position = units.index(configs[1])
    follower = units[position + 1]
    assert isinstance(follower, MediaFrame) and follower.keyframe
    assert len(frames(units)) == 60 + len(second)


# -- audio against ffmpeg ---------------------------------------------------------------

AUDIO_CASES = [("aac_48k_stereo.aac", 48000, 95), ("aac_22k_mono.aac", 22050, 23)]


def audio_pes(name: str, rate: int, group: int, base: int, *, crc: bool = False) -> list[Pes]:
    """`group` ADTS frames per PES (a TS muxer packs several), the PTS of the first one."""
    stream = adts_frames((VECTORS / name).read_bytes())
    if crc:
        stream = [with_crc(frame) for frame in stream]
    return [Pes(AUDIO_PID, STREAM_TYPE_AAC_ADTS,
                (base + index * 1024 * 90000 // rate) % WRAP, -1,
                b"".join(stream[index : index + group]))
            for index in range(0, len(stream), group)]


@pytest.mark.parametrize(("name", "rate", "count"), AUDIO_CASES)
@pytest.mark.parametrize("crc", [False, True])
def test_audio_matches_ffmpeg(name: str, rate: int, count: int, crc: bool) -> None:
    reference = mp4_reference(name.replace(".aac", ".mp4"), whole_ticks=False)
    base = WRAP - 90_000  # one second before the wrap
    assembler, units = run(audio_pes(name, rate, 4, base, crc=crc))
    config = units[0]
    assert isinstance(config, AudioConfig)
    assert config.record == reference.extradata  # the AudioSpecificConfig ffmpeg writes
    assert config == aac_audio_config(reference.extradata)
    assert [u for u in units if isinstance(u, AudioConfig)] == [config]
    out = frames(units)
    assert [f.data for f in out] == [p.data for p in reference.packets]
    assert len(out) == count == assembler.audio_frames
    for index, frame in enumerate(out):
        exact = Fraction(index * 1024 * 1000, rate) + TIMELINE_HEADROOM_MS
        assert frame.keyframe and frame.dts == frame.pts
        assert abs(frame.pts - exact) <= 1


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cuts=st.lists(st.integers(1, 5000), max_size=40), crc=st.booleans(),
       drop_pts=st.lists(st.booleans(), min_size=50, max_size=50))
def test_adts_split_anywhere_gives_the_same_frames(cuts: list[int], crc: bool,
                                                   drop_pts: list[bool]) -> None:
    frames_ = adts_frames((VECTORS / "aac_48k_stereo.aac").read_bytes())[:24]
    if crc:
        frames_ = [with_crc(frame) for frame in frames_]
    stream = b"".join(frames_)
    starts = [sum(map(len, frames_[:i])) for i in range(len(frames_))]
    points = sorted({0, len(stream), *(c % len(stream) for c in cuts)})
    assembler = TsMediaAssembler()
    assembler.on_program(PROGRAM)
    out: list[Unit] = []
    for number, (begin, end) in enumerate(itertools.pairwise(points)):
        first = next((i for i, s in enumerate(starts) if begin <= s < end), None)
        # The PTS is that of the first frame starting in the PES (H.222.0 2.4.3.7); the first
        # PES always has it, later ones may leave it out (the assembler extrapolates).
        pts = -1 if first is None or (number and drop_pts[number % 50]) else 1920 * first
        out += assembler.on_pes(AUDIO_PID, STREAM_TYPE_AAC_ADTS, pts, -1, False, False,
                                stream[begin:end])
        assert assembler.pending_audio_bytes <= MAX_PENDING_AUDIO_BYTES
    result = frames(out)
    raw = [frame[9 if crc else 7 :] for frame in frames_]
    assert [f.data for f in result] == raw
    assert [f.pts for f in result] == [(1920 * i + 90_000) // 90 for i in range(24)]
    assert assembler.audio_skipped_bytes == 0


def test_audio_discontinuity_drops_that_pes() -> None:
    packets = audio_pes("aac_48k_stereo.aac", 48000, 3, 0)
    packets[4].discontinuity = True
    assembler, units = run(packets)
    _, clean = run(audio_pes("aac_48k_stereo.aac", 48000, 3, 0))
    assert frames(units) == frames(clean)[:12] + frames(clean)[15:]
    assert assembler.discontinuities == 1


def test_audio_and_video_share_one_timeline() -> None:
    base = WRAP - 20_000  # the wrap comes 0.2 s in
    video = video_pes(*VIDEO_CASES[0], base=base)
    audio = audio_pes("aac_48k_stereo.aac", 48000, 2, base + 9000)

    def arrival(pes: Pes) -> int:  # unwrapped decode time: the order a muxer sends them
        ticks = pes.dts if pes.dts >= 0 else pes.pts
        return ticks + WRAP if ticks < WRAP // 2 else ticks

    _, units = run(sorted(video + audio, key=arrival))
    video_out, audio_out = frames(units, TrackKind.VIDEO), frames(units, TrackKind.AUDIO)
    assert len(video_out) == 60 and len(audio_out) == 95
    # The first timestamp seen is video's first dts: it sets the origin for both tracks, and
    # audio starting 9000 ticks (100 ms) later is 100 ms later on the timeline.
    assert video_out[0].dts == TIMELINE_HEADROOM_MS
    assert [f.pts for f in audio_out] == [(9000 + 1920 * i + 90_000) // 90 for i in range(95)]


# -- program changes ------------------------------------------------------------------

def test_unsupported_streams_are_ignored_and_counted() -> None:
    assembler = TsMediaAssembler()
    program = [*PROGRAM, (0x102, 0x06), (0x103, STREAM_TYPE_H264), (0x104, 0x03)]
    assert assembler.on_program(program) == []
    assert assembler.ignored_streams == 3  # private data, a second video, MPEG audio
    assert assembler.on_program(program) == []
    assert assembler.ignored_streams == 3  # the same PMT again
    assert assembler.on_pes(0x102, 0x06, 0, 0, False, False, b"\x00\x00\x01\x65") == []
    assert assembler.on_pes(0x999, 0x1B, 0, 0, False, False, b"\x00\x00\x01\x65") == []
    assert assembler.ignored_pes == 2


def test_codec_change_of_a_configured_track_is_refused() -> None:
    assembler = TsMediaAssembler()
    assembler.on_program(PROGRAM)
    feed(assembler, video_pes(*VIDEO_CASES[0], base=0)[:3])
    with pytest.raises(TsIngestError, match=r"from H\.264 \(stream type 0x1b\) to HEVC "
                                            r"\(stream type 0x24\) \(PID 256\)"):
        assembler.on_program(HEVC_PROGRAM)


def test_codec_change_of_configured_audio_is_refused() -> None:
    assembler = TsMediaAssembler()
    assembler.on_program(PROGRAM)
    feed(assembler, audio_pes("aac_48k_stereo.aac", 48000, 2, 0)[:2])
    with pytest.raises(TsIngestError, match="MPEG-1 audio"):
        assembler.on_program([(VIDEO_PID, STREAM_TYPE_H264), (AUDIO_PID, 0x03)])


def test_codec_change_before_configuration_is_followed() -> None:
    assembler = TsMediaAssembler()
    assembler.on_program(PROGRAM)
    assembler.on_program(HEVC_PROGRAM)
    units = feed(assembler, video_pes(*VIDEO_CASES[1], base=0))
    assert len(frames(units)) == 60


def test_video_pid_move_keeps_the_track() -> None:
    packets = video_pes(*VIDEO_CASES[0], base=0)
    assembler = TsMediaAssembler()
    assembler.on_program(PROGRAM)
    units = feed(assembler, packets[:20])
    units += assembler.on_program([(0x200, STREAM_TYPE_H264)])
    for pes in packets[20:]:
        units += assembler.on_pes(0x200, STREAM_TYPE_H264, pes.pts, pes.dts, False, False,
                                  pes.data)
    units += assembler.flush()
    assert len([u for u in units if isinstance(u, VideoConfig)]) == 1
    assert len(frames(units)) == 20 + 30  # 20..29 wait for the keyframe on the new PID


# -- bounds -------------------------------------------------------------------------

def sps_pps() -> list[bytes]:
    units = access_units((VECTORS / VIDEO_CASES[0][0]).read_bytes(), False)
    return [nal for nal in units[0] if nal_type(nal, False) in (7, 8)]


def idr() -> bytes:
    units = access_units((VECTORS / VIDEO_CASES[0][0]).read_bytes(), False)
    return next(nal for nal in units[0] if nal_type(nal, False) == 5)


def test_nal_unit_limit() -> None:
    sei = b"\x06\x05\x01\x00\x80"
    for count, malformed in ((MAX_NAL_UNITS - 3, 0), (MAX_NAL_UNITS - 2, 1)):
        assembler, units = run([Pes(VIDEO_PID, STREAM_TYPE_H264, 0, 0,
                                    annexb([*sps_pps(), *[sei] * count, idr()]))])
        assert assembler.malformed == malformed
        assert len(frames(units)) == 1 - malformed


def test_parameter_set_size_limit() -> None:
    sps, pps = sps_pps()
    big = sps[:-1] + b"\x11" * (MAX_PARAMETER_SET_SIZE - len(sps) + 1) + sps[-1:]
    assembler, units = run([Pes(VIDEO_PID, STREAM_TYPE_H264, 0, 0, annexb([big, pps, idr()]))])
    assert units == [] and assembler.malformed == 1


def pps_with_id(pps_id: int) -> bytes:
    """An H.264 PPS whose pic_parameter_set_id is pps_id (ue(v)), the rest of any valid one."""
    code = bin(pps_id + 1)[2:]
    bits = "0" * (len(code) - 1) + code + "1" + "1"  # ue(pps_id), ue(sps_id = 0), stop bit
    bits += "0" * (-len(bits) % 8)
    return b"\x68" + int(bits, 2).to_bytes(len(bits) // 8, "big")


def test_parameter_set_count_limit() -> None:
    sps, _ = sps_pps()
    many = [pps_with_id(i) for i in range(MAX_PARAMETER_SETS)]  # with the SPS: one too many
    assembler, units = run([Pes(VIDEO_PID, STREAM_TYPE_H264, 0, 0,
                                annexb([sps, *many, idr()]))])
    assert units == [] and assembler.malformed == 1
    # Spread over two access units, the record restarts from the second one's sets.
    half = MAX_PARAMETER_SETS // 2
    assembler, units = run([
        Pes(VIDEO_PID, STREAM_TYPE_H264, 0, 0, annexb([sps, *many[:half], idr()])),
        Pes(VIDEO_PID, STREAM_TYPE_H264, 3000, 3000,
            annexb([sps, *[pps_with_id(100 + i) for i in range(half)], idr()])),
    ])
    configs = [u for u in units if isinstance(u, VideoConfig)]
    assert len(configs) == 2
    assert parse_avcc(configs[1].record).pps == tuple(pps_with_id(100 + i) for i in range(half))


def test_access_unit_size_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ts_units, "MAX_ACCESS_UNIT_SIZE", 4000)
    whole = annexb([*sps_pps(), idr()])
    assert len(whole) <= 4000 < 2 * len(whole)
    assembler, units = run([Pes(VIDEO_PID, STREAM_TYPE_H264, 0, 0, whole),
                            Pes(VIDEO_PID, STREAM_TYPE_H264, 3000, 3000, whole),
                            Pes(VIDEO_PID, STREAM_TYPE_H264, -1, -1, whole)])
    assert len(frames(units)) == 1 and assembler.malformed == 1
    assert assembler.pending_video_bytes == 0


# -- hostile input ----------------------------------------------------------------------

def sample_pes() -> list[Pes]:
    video = video_pes(*VIDEO_CASES[0], base=0)[:8]
    audio = audio_pes("aac_48k_stereo.aac", 48000, 3, 0)[:6]
    return [pes for pair in zip(video, audio, strict=False) for pes in pair]


SAMPLE = sample_pes()


@st.composite
def mutated(draw: st.DrawFn) -> list[Pes]:
    out = []
    for pes in SAMPLE:
        data = bytearray(pes.data)
        for _ in range(draw(st.integers(0, 3))):
            if data:
                data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
        if draw(st.booleans()):
            data = data[: draw(st.integers(0, len(data)))]
        pts = draw(st.sampled_from([pes.pts, -1, draw(st.integers(0, WRAP - 1))]))
        out.append(Pes(pes.pid, pes.stream_type, pts, pes.dts if pts == pes.pts else pts,
                       bytes(data) + draw(st.binary(max_size=8)), draw(st.booleans())))
    return out


def check_units(units: list[Unit], assembler: TsMediaAssembler) -> None:
    for unit in units:
        if isinstance(unit, MediaFrame):
            assert unit.data
            if unit.kind is TrackKind.VIDEO:
                length_prefixed(unit.data)
    assert assembler.pending_audio_bytes <= MAX_PENDING_AUDIO_BYTES


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_corrupt_pes_never_raises(packets: list[Pes]) -> None:
    assembler, units = run(packets)
    check_units(units, assembler)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([VIDEO_PID, AUDIO_PID]), st.binary(max_size=300),
                          st.integers(-1, WRAP - 1), st.booleans()), max_size=12),
       st.booleans())
def test_random_bytes_never_raise(packets: list[tuple[int, bytes, int, bool]], hevc: bool) -> None:
    video_type = STREAM_TYPE_HEVC if hevc else STREAM_TYPE_H264
    stream_types = {VIDEO_PID: video_type, AUDIO_PID: STREAM_TYPE_AAC_ADTS}
    assembler, units = run([Pes(pid, stream_types[pid], pts, pts, data, flag)
                            for pid, data, pts, flag in packets],
                           HEVC_PROGRAM if hevc else PROGRAM)
    check_units(units, assembler)
