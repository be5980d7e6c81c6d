"""The CMAF / fMP4 writer: init segments and media fragments, byte by byte and through real
demuxers and decoders.

The byte-level tests read the output back with a box walker written here from ISO/IEC 14496-12
(4.2 boxes, 8.8 movie fragments) and 14496-1 (8.3.3 descriptor sizes), independently of the
code under test. The real-parser tests package real encoder output (ffmpeg's libx264 + aac,
run here, and the libx265 vectors in tests/vectors/media/) and check what ffprobe and PyAV's
libavcodec make of it: codecs, sizes, packet timing and flags, and that every frame decodes.
"""

from __future__ import annotations

import json
import mmap
import shutil
import struct
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

import av
import av.logging
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.hls.fmp4 import (
    MAX_FRAGMENT_SIZE,
    VIDEO_TIMESCALE,
    Sample,
    TrackRun,
    init_segment,
    media_fragment,
    timescale_of,
)
from relay.media.flv import parse_audio_tag, parse_video_tag
from relay.media.units import AudioConfig, Codec, MediaFrame, TrackKind, VideoConfig
from tests.media.helpers.vectors import TAG_AUDIO, TAG_VIDEO, VECTORS, read_flv

# --- a box walker (14496-12 4.2), written from the spec, not from the writer ----------------

#: Boxes that hold only boxes.
CONTAINERS = {b"moov", b"trak", b"mdia", b"minf", b"dinf", b"stbl", b"mvex", b"moof", b"traf"}
#: Boxes with fixed fields before their child boxes: how many bytes of them.
PREFIXED = {
    b"stsd": 8,  # 8.5.2 version/flags, entry_count
    b"dref": 8,  # 8.7.2 version/flags, entry_count
    b"avc1": 78,  # 12.1.3 VisualSampleEntry fields
    b"hvc1": 78,
    b"mp4a": 28,  # 12.2.3 AudioSampleEntry fields
}


@dataclass
class Box:
    type: bytes
    start: int  # offset of the size field
    end: int  # offset just past the box
    header: int  # 8, or 16 with a 64-bit largesize
    children: list[Box]

    @property
    def payload(self) -> int:
        return self.start + self.header

    def child(self, kind: bytes) -> Box:
        found = [box for box in self.children if box.type == kind]
        assert len(found) == 1, f"{self.type!r} has {len(found)} {kind!r} boxes"
        return found[0]

    def all(self, kind: bytes) -> list[Box]:
        return [box for box in self.children if box.type == kind]

    def path(self, *kinds: bytes) -> Box:
        box = self
        for kind in kinds:
            box = box.child(kind)
        return box


def walk(data: bytes, start: int = 0, end: int | None = None) -> list[Box]:
    """The boxes in data[start:end]; their sizes must tile the range exactly."""
    end = len(data) if end is None else end
    boxes = []
    pos = start
    while pos < end:
        assert end - pos >= 8, f"{end - pos} stray bytes at {pos}"
        size, kind = struct.unpack_from(">I4s", data, pos)
        header = 8
        if size == 1:
            (size,) = struct.unpack_from(">Q", data, pos + 8)
            header = 16
        assert size >= header, f"box {kind!r} at {pos} has size {size}"
        assert pos + size <= end, f"box {kind!r} at {pos} (size {size}) overruns its parent"
        children: list[Box] = []
        if kind in CONTAINERS:
            children = walk(data, pos + header, pos + size)
        elif kind in PREFIXED:
            children = walk(data, pos + header + PREFIXED[kind], pos + size)
        boxes.append(Box(kind, pos, pos + size, header, children))
        pos += size
    assert pos == end
    return boxes


def top(data: bytes) -> Box:
    """The whole input as the children of one pseudo-box."""
    return Box(b"", 0, len(data), 0, walk(data))


def full_box(data: bytes, box: Box) -> tuple[int, int, int]:
    """(version, flags, offset of the fields after them)."""
    word = struct.unpack_from(">I", data, box.payload)[0]
    return word >> 24, word & 0xFFFFFF, box.payload + 4


# --- movie fragments (14496-12 8.8) ---------------------------------------------------------


@dataclass
class ParsedRun:
    track_id: int
    base_media_decode_time: int
    data_offset: int
    samples: list[tuple[int, int, int, int]]  # duration, size, flags, composition offset


def parse_fragment(data: bytes) -> tuple[int, list[ParsedRun], Box, Box]:
    """Sequence number, runs, moof and mdat of one moof + mdat, with every fixed field checked."""
    root = top(data)
    assert [box.type for box in root.children] == [b"moof", b"mdat"]
    moof, mdat = root.children
    assert moof.children[0].type == b"mfhd"
    mfhd = moof.child(b"mfhd")
    version, flags, pos = full_box(data, mfhd)
    assert (version, flags, mfhd.end - pos) == (0, 0, 4)
    (sequence_number,) = struct.unpack_from(">I", data, pos)
    runs = []
    for traf in moof.all(b"traf"):
        assert [box.type for box in traf.children] == [b"tfhd", b"tfdt", b"trun"]
        version, flags, pos = full_box(data, traf.child(b"tfhd"))
        # 8.8.7.1: default-base-is-moof and no optional fields.
        assert (version, flags, traf.child(b"tfhd").end - pos) == (0, 0x020000, 4)
        (track_id,) = struct.unpack_from(">I", data, pos)
        version, flags, pos = full_box(data, traf.child(b"tfdt"))
        assert (version, flags, traf.child(b"tfdt").end - pos) == (1, 0, 8)
        (decode_time,) = struct.unpack_from(">Q", data, pos)
        trun = traf.child(b"trun")
        version, flags, pos = full_box(data, trun)
        # 8.8.8.1: data offset, duration, size, flags and composition offset present.
        assert (version, flags) == (1, 0x000F01)
        count, data_offset = struct.unpack_from(">Ii", data, pos)
        assert trun.end - (pos + 8) == 16 * count
        samples = [struct.unpack_from(">IIIi", data, pos + 8 + 16 * i) for i in range(count)]
        runs.append(ParsedRun(track_id, decode_time, data_offset, samples))
    return sequence_number, runs, moof, mdat


def sample_payloads(data: bytes, run: ParsedRun) -> list[bytes]:
    """Each sample's bytes, found the way a reader finds them: from the moof's first byte."""
    out = []
    pos = run.data_offset  # the moof starts at 0 in `data`
    for _duration, size, _flags, _offset in run.samples:
        out.append(data[pos : pos + size])
        pos += size
    return out


SYNC = 0x02000000  # 8.8.3.1 sample_depends_on = 2 (no other), is_non_sync 0
NON_SYNC = 0x01010000  # sample_depends_on = 1, is_non_sync 1


def test_fragment_fields_and_offsets() -> None:
    video = [Sample(3000, True, 6000, b"\x00\x00\x00\x02\x65\x88"),
             Sample(3000, False, -3000, b"\x00\x00\x00\x03\x41\x9a\x01"),
             Sample(2970, False, 0, b"\x00\x00\x00\x01\x01")]
    audio = [Sample(1024, True, 0, b"\x21\x10\x04"), Sample(1024, True, 0, b"\xde\xad")]
    data = media_fragment(7, [TrackRun(1, 2**40 + 5, video), TrackRun(2, 44100, audio)])
    sequence_number, runs, moof, mdat = parse_fragment(data)

    assert sequence_number == 7
    assert [(run.track_id, run.base_media_decode_time) for run in runs] == [
        (1, 2**40 + 5), (2, 44100)]
    assert runs[0].samples == [(3000, 6, SYNC, 6000), (3000, 7, NON_SYNC, -3000),
                               (2970, 5, NON_SYNC, 0)]
    assert runs[1].samples == [(1024, 3, SYNC, 0), (1024, 2, SYNC, 0)]
    # The mdat holds the runs' data in order, and each data_offset points at its run's first
    # byte: 8 bytes into the mdat for the first run, after the first run's 18 bytes for the next.
    assert mdat.header == 8
    assert runs[0].data_offset == moof.end + 8
    assert runs[1].data_offset == moof.end + 8 + 18
    assert data[mdat.payload :] == b"".join(s.data for s in video + audio)
    assert sample_payloads(data, runs[0]) == [s.data for s in video]
    assert sample_payloads(data, runs[1]) == [s.data for s in audio]
    assert len(data) == 8 + 16 + (8 + 16 + 20 + 20 + 16 * 3) + (8 + 16 + 20 + 20 + 16 * 2) + 8 + 23


def test_fragment_extremes_of_every_field() -> None:
    samples = [Sample(0xFFFFFFFF, False, -(2**31), b""), Sample(0, True, 2**31 - 1, b"x")]
    data = media_fragment(0xFFFFFFFF, [TrackRun(0xFFFFFFFF, 2**64 - 1, samples)])
    sequence_number, runs, _moof, _mdat = parse_fragment(data)
    assert sequence_number == 0xFFFFFFFF
    assert (runs[0].track_id, runs[0].base_media_decode_time) == (0xFFFFFFFF, 2**64 - 1)
    assert runs[0].samples == [(0xFFFFFFFF, 0, NON_SYNC, -(2**31)), (0, 1, SYNC, 2**31 - 1)]


def test_fragment_takes_any_bytes_like_data_and_sequence() -> None:
    samples = (Sample(1, True, 0, memoryview(b"abcdef")[2:4]),  # type: ignore[arg-type]
               Sample(1, False, 0, bytearray(b"xy")))  # type: ignore[arg-type]
    data = media_fragment(1, (TrackRun(3, 0, samples),))
    _, runs, _, _ = parse_fragment(data)
    assert sample_payloads(data, runs[0]) == [b"cd", b"xy"]


def one(sample: Sample, track_id: int = 1, decode_time: int = 0) -> list[TrackRun]:
    return [TrackRun(track_id, decode_time, [Sample(1, True, 0, b"ok"), sample])]


@pytest.mark.parametrize(("runs", "message"), [
    ([], "at least one TrackRun, got none"),
    ([TrackRun(1, 0, [])], r"runs\[0\] \(track 1\) has no samples"),
    ([TrackRun(0, 0, [Sample(1, True, 0, b"")])], r"runs\[0\]\.track_id .* got 0"),
    ([TrackRun(2**32, 0, [Sample(1, True, 0, b"")])], r"track_id .* got 4294967296"),
    ([TrackRun(1, 0, [Sample(1, True, 0, b"")]), TrackRun(1, 5, [Sample(1, True, 0, b"")])],
     r"runs\[0\] and runs\[1\] are both for track 1"),
    ([TrackRun(1, -1, [Sample(1, True, 0, b"")])], r"base_media_decode_time .* got -1"),
    ([TrackRun(1, 2**64, [Sample(1, True, 0, b"")])], r"base_media_decode_time .* got 1844"),
    (one(Sample(-1, True, 0, b"")), "sample 1 of the run for track 1: duration .* got -1"),
    (one(Sample(2**32, True, 0, b"")), "duration must be 0..4294967295, got 4294967296"),
    (one(Sample(1, True, 2**31, b"")), "composition_offset .* got 2147483648"),
    (one(Sample(1, True, -(2**31) - 1, b""), track_id=9),
     "sample 1 of the run for track 9: composition_offset .* got -2147483649"),
])
def test_fragment_rejects_what_would_corrupt_it(runs: list[TrackRun], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        media_fragment(1, runs)


@pytest.mark.parametrize("sequence_number", [-1, 2**32])
def test_fragment_rejects_a_sequence_number_out_of_range(sequence_number: int) -> None:
    with pytest.raises(ValueError, match=f"sequence_number .* got {sequence_number}"):
        media_fragment(sequence_number, one(Sample(1, True, 0, b"")))


def test_fragment_rejects_wrong_types_with_the_field_named() -> None:
    with pytest.raises(TypeError, match=r"duration must be an int, got float 1\.5"):
        media_fragment(1, one(Sample(1.5, True, 0, b"")))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"base_media_decode_time must be an int, got float"):
        media_fragment(1, [TrackRun(1, 0.0, [Sample(1, True, 0, b"")])])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="bytes-like"):
        media_fragment(1, one(Sample(1, True, 0, "text")))  # type: ignore[arg-type]


def test_fragment_releases_every_buffer_when_a_check_fails() -> None:
    held = bytearray(b"payload")
    first = Sample(1, True, 0, held)  # type: ignore[arg-type]
    runs = [TrackRun(1, 0, [first, Sample(-1, True, 0, b"")])]
    with pytest.raises(ValueError, match="duration"):
        media_fragment(1, runs)
    held.extend(b" grown")  # BufferError if the writer still held a view of it


def test_fragment_survives_a_caller_mutating_its_lists_while_read() -> None:
    samples: list[Sample] = []
    runs = [TrackRun(1, 0, samples)]

    class Meddling:
        def __bool__(self) -> bool:  # runs while the writer reads `keyframe`
            samples.clear()
            runs.clear()
            return True

    samples += [Sample(1, Meddling(), 0, b"a"), Sample(2, False, 0, b"bc")]  # type: ignore[arg-type]
    data = media_fragment(1, runs)
    _, parsed, _, _ = parse_fragment(data)
    assert parsed[0].samples == [(1, 1, SYNC, 0), (2, 2, NON_SYNC, 0)]


def test_fragment_rejects_a_sample_too_large_for_its_size_field() -> None:
    # An anonymous mapping reserves address space only: nothing of it is touched.
    with (mmap.mmap(-1, 2**32) as huge,
          pytest.raises(ValueError, match="sample 1 of the run for track 1 is 4294967296 bytes")):
        media_fragment(1, one(Sample(1, True, 0, huge)))  # type: ignore[arg-type]


def test_fragment_rejects_a_fragment_past_the_reach_of_data_offset() -> None:
    with (mmap.mmap(-1, MAX_FRAGMENT_SIZE - 100) as big,
          pytest.raises(ValueError, match="over MAX_FRAGMENT_SIZE")):
        media_fragment(1, one(Sample(1, True, 0, big)))  # type: ignore[arg-type]


@st.composite
def fragments(draw: st.DrawFn) -> tuple[int, list[TrackRun]]:
    track_ids = draw(st.lists(st.integers(1, 2**32 - 1), min_size=1, max_size=4, unique=True))
    runs = []
    for track_id in track_ids:
        samples = draw(st.lists(st.builds(
            Sample,
            duration=st.integers(0, 2**32 - 1),
            keyframe=st.booleans(),
            composition_offset=st.integers(-(2**31), 2**31 - 1),
            data=st.binary(max_size=40),
        ), min_size=1, max_size=12))
        runs.append(TrackRun(track_id, draw(st.integers(0, 2**64 - 1)), samples))
    return draw(st.integers(0, 2**32 - 1)), runs


@settings(max_examples=300, deadline=None)
@given(fragments())
def test_arbitrary_fragments_round_trip(fragment: tuple[int, list[TrackRun]]) -> None:
    sequence_number, runs = fragment
    data = media_fragment(sequence_number, runs)
    parsed_sequence, parsed, _moof, mdat = parse_fragment(data)
    assert parsed_sequence == sequence_number
    assert len(parsed) == len(runs)
    for run, back in zip(runs, parsed, strict=True):
        assert (back.track_id, back.base_media_decode_time) == (
            run.track_id, run.base_media_decode_time)
        assert back.samples == [
            (s.duration, len(s.data), SYNC if s.keyframe else NON_SYNC, s.composition_offset)
            for s in run.samples]
        assert sample_payloads(data, back) == [s.data for s in run.samples]
    assert data[mdat.payload :] == b"".join(s.data for run in runs for s in run.samples)


# --- init segments -----------------------------------------------------------------------------

AVC = VideoConfig(Codec.H264, b"\x01\x64\x00\x1favcC-record", 1280, 720, "avc1.64001f", 30.0)
HEVC = VideoConfig(Codec.HEVC, b"\x01hvcC-record", 640, 360, "hvc1.1.6.L93.90", 30.0)
AAC = AudioConfig(Codec.AAC, b"\x12\x10", 48000, 2, "mp4a.40.2")


def read_descriptor(data: bytes, pos: int) -> tuple[int, int, int]:
    """(tag, payload start, payload end) of a 14496-1 8.3.3 expandable descriptor: the size
    follows the tag in up to four 7-bit groups, each but the last with its top bit set."""
    tag = data[pos]
    size = 0
    pos += 1
    for _ in range(4):
        byte = data[pos]
        pos += 1
        size = size << 7 | byte & 0x7F
        if not byte & 0x80:
            break
    return tag, pos, pos + size


def parse_esds(data: bytes, esds: Box) -> dict[str, Any]:
    """The fields of an esds (14496-14 ESDBox; 14496-1 7.2.6.5-7.2.6.7, 7.3.2.3)."""
    version, flags, pos = full_box(data, esds)
    assert (version, flags) == (0, 0)
    tag, pos, es_end = read_descriptor(data, pos)
    assert tag == 0x03 and es_end == esds.end
    es_id, es_flags = struct.unpack_from(">HB", data, pos)
    tag, pos, dc_end = read_descriptor(data, pos + 3)
    assert tag == 0x04
    oti, stream_byte = data[pos], data[pos + 1]
    buffer_size = int.from_bytes(data[pos + 2 : pos + 5], "big")
    max_bitrate, avg_bitrate = struct.unpack_from(">II", data, pos + 5)
    tag, dsi_start, dsi_end = read_descriptor(data, pos + 13)
    assert tag == 0x05 and dsi_end == dc_end
    tag, sl_start, sl_end = read_descriptor(data, dc_end)
    assert tag == 0x06 and sl_end == es_end
    return {"dsi_size_bytes": dsi_start - (pos + 13) - 1,
            "es_id": es_id, "es_flags": es_flags, "object_type": oti,
            "stream_type": stream_byte >> 2, "upstream": stream_byte >> 1 & 1,
            "reserved": stream_byte & 1, "buffer_size": buffer_size,
            "max_bitrate": max_bitrate, "avg_bitrate": avg_bitrate,
            "asc": data[dsi_start:dsi_end], "sl": data[sl_start:sl_end]}


def test_init_segment_structure_and_fields() -> None:
    data = init_segment([AVC, AAC])
    root = top(data)
    assert [box.type for box in root.children] == [b"ftyp", b"moov"]
    ftyp = root.child(b"ftyp")
    assert data[ftyp.payload : ftyp.end] == b"iso6" + bytes(4) + b"iso6cmfcmp41"

    moov = root.child(b"moov")
    assert [box.type for box in moov.children] == [b"mvhd", b"trak", b"trak", b"mvex"]
    version, _, pos = full_box(data, moov.child(b"mvhd"))
    assert version == 0
    assert struct.unpack_from(">I", data, moov.child(b"mvhd").end - 4)[0] == 3  # next_track_ID

    for track_id, (trak, config) in enumerate(zip(moov.all(b"trak"), [AVC, AAC],
                                                  strict=True), 1):
        tkhd = trak.child(b"tkhd")
        version, flags, pos = full_box(data, tkhd)
        assert (version, flags) == (0, 3)
        assert struct.unpack_from(">I", data, pos + 8)[0] == track_id
        width, height = struct.unpack_from(">II", data, tkhd.end - 8)
        video = isinstance(config, VideoConfig)
        assert (width >> 16, height >> 16) == ((1280, 720) if video else (0, 0))
        volume = struct.unpack_from(">H", data, pos + 32)[0]
        assert volume == (0 if video else 0x0100)

        mdia = trak.child(b"mdia")
        assert [box.type for box in mdia.children] == [b"mdhd", b"hdlr", b"minf"]
        _, _, pos = full_box(data, mdia.child(b"mdhd"))
        timescale, _duration, language = struct.unpack_from(">IIH", data, pos + 8)
        assert timescale == (90000 if video else 48000) == timescale_of(config)
        assert language == 0x55C4  # 'und'
        _, _, pos = full_box(data, mdia.child(b"hdlr"))
        assert data[pos + 4 : pos + 8] == (b"vide" if video else b"soun")
        assert data[mdia.child(b"hdlr").end - 1] == 0  # name is null-terminated

        minf = mdia.child(b"minf")
        assert [box.type for box in minf.children] == [
            b"vmhd" if video else b"smhd", b"dinf", b"stbl"]
        url = minf.path(b"dinf", b"dref", b"url ")
        assert full_box(data, url)[:2] == (0, 1) and url.end - url.start == 12
        stbl = minf.child(b"stbl")
        assert [box.type for box in stbl.children] == [
            b"stsd", b"stts", b"stsc", b"stsz", b"stco"]
        for kind in (b"stts", b"stsc", b"stco"):  # all empty: the samples are in fragments
            assert data[stbl.child(kind).payload : stbl.child(kind).end] == bytes(8)
        assert data[stbl.child(b"stsz").payload : stbl.child(b"stsz").end] == bytes(12)
        stsd = stbl.child(b"stsd")
        assert struct.unpack_from(">I", data, stsd.payload + 4)[0] == 1
        (entry,) = stsd.children
        assert struct.unpack_from(">H", data, entry.payload + 6)[0] == 1  # data_reference_index
        if isinstance(config, VideoConfig):
            assert entry.type == b"avc1"
            assert struct.unpack_from(">HH", data, entry.payload + 24) == (1280, 720)
            assert struct.unpack_from(">Hh", data, entry.payload + 74) == (0x18, -1)
            (avcc,) = entry.children
            assert avcc.type == b"avcC" and data[avcc.payload : avcc.end] == config.record
        else:
            assert entry.type == b"mp4a"
            channels, sample_size = struct.unpack_from(">HH", data, entry.payload + 16)
            assert (channels, sample_size) == (2, 16)
            assert struct.unpack_from(">I", data, entry.payload + 24)[0] == 48000 << 16
            (esds,) = entry.children
            assert parse_esds(data, esds) == {
                "dsi_size_bytes": 1, "es_id": 0, "es_flags": 0, "object_type": 0x40,
                "stream_type": 5, "upstream": 0, "reserved": 1, "buffer_size": 0, "max_bitrate": 0,
                "avg_bitrate": 0, "asc": AAC.record, "sl": b"\x02"}

    trexs = moov.child(b"mvex").all(b"trex")
    assert [struct.unpack_from(">5I", data, full_box(data, trex)[2]) for trex in trexs] == [
        (1, 1, 0, 0, 0), (2, 1, 0, 0, 0)]


def test_init_segment_hevc_and_track_order() -> None:
    data = init_segment([AAC, HEVC])
    moov = top(data).child(b"moov")
    entries = [trak.path(b"mdia", b"minf", b"stbl", b"stsd").children[0]
               for trak in moov.all(b"trak")]
    assert [entry.type for entry in entries] == [b"mp4a", b"hvc1"]
    (hvcc,) = entries[1].children
    assert hvcc.type == b"hvcC" and data[hvcc.payload : hvcc.end] == HEVC.record
    assert struct.unpack_from(">HH", data, entries[1].payload + 24) == (640, 360)


@pytest.mark.parametrize(("record_size", "size_bytes"), [(127, 1), (128, 2), (20000, 3)])
def test_esds_descriptor_sizes_use_the_expandable_form(record_size: int, size_bytes: int) -> None:
    config = AudioConfig(Codec.AAC, bytes(range(256)) * (record_size // 256)
                         + bytes(record_size % 256), 44100, 1, "mp4a.40.2")
    data = init_segment([config])
    esds = top(data).child(b"moov").path(
        b"trak", b"mdia", b"minf", b"stbl", b"stsd").children[0].child(b"esds")
    fields = parse_esds(data, esds)
    assert (fields["asc"], fields["dsi_size_bytes"]) == (config.record, size_bytes)


def test_high_sample_rates_keep_the_timescale_and_zero_the_16_bit_field() -> None:
    config = AudioConfig(Codec.AAC, b"\x10\x08", 96000, 2, "mp4a.40.2")
    data = init_segment([config])
    trak = top(data).child(b"moov").child(b"trak")
    _, _, pos = full_box(data, trak.path(b"mdia", b"mdhd"))
    assert struct.unpack_from(">I", data, pos + 8)[0] == 96000
    entry = trak.path(b"mdia", b"minf", b"stbl", b"stsd").children[0]
    assert struct.unpack_from(">I", data, entry.payload + 24)[0] == 0


@pytest.mark.parametrize(("tracks", "message"), [
    ([], "at least one track configuration"),
    ([VideoConfig(Codec.AV1, b"\x81\x00\x0c\x00", 0, 0, "av01.0.00M.08", None)],
     "cannot package av1 video"),
    ([VideoConfig(Codec.VP9, b"\x01\x00\x00\x00", 0, 0, "vp09", None)],
     "cannot package vp9 video"),
    ([VideoConfig(Codec.AAC, b"", 10, 10, "x", None)], "aac is not a video codec"),
    ([VideoConfig(Codec.H264, b"", 0, 720, "avc1", None)], "width must be 1..65535, got 0"),
    ([VideoConfig(Codec.H264, b"", 1280, 70000, "avc1", None)], "height .* got 70000"),
    ([AudioConfig(Codec.H264, b"", 48000, 2, "x")], "cannot package h264 audio"),
    ([AudioConfig(Codec.AAC, b"", 48000, 0, "x")], "channel count must be 1..65535, got 0"),
    ([AudioConfig(Codec.AAC, b"", 0, 2, "x")], "sample rate must be positive, got 0"),
])
def test_init_segment_rejects_what_it_cannot_package(
        tracks: list[VideoConfig | AudioConfig], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        init_segment(tracks)


# --- real encoder output through ffprobe and libavcodec ---------------------------------------

needs_ffprobe = pytest.mark.skipif(shutil.which("ffprobe") is None, reason="ffprobe not on PATH")
needs_ffmpeg = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg not on PATH")

#: AAC-LC frames carry 1024 samples each (14496-3 4.5.2.1: frameLengthFlag 0).
AAC_FRAME = 1024


@dataclass
class Track:
    config: VideoConfig | AudioConfig
    frames: list[MediaFrame]


def read_tracks(path: Path) -> list[Track]:
    """The video then the audio track of an FLV file, as the FLV tag parser reads them."""
    video: Track | None = None
    audio: Track | None = None
    for tag in read_flv(path.read_bytes()):
        if tag.type == TAG_VIDEO:
            unit: object = parse_video_tag(tag.body, tag.timestamp)
        elif tag.type == TAG_AUDIO:
            unit = parse_audio_tag(tag.body, tag.timestamp)
        else:
            continue
        if isinstance(unit, VideoConfig):
            video = Track(unit, [])
        elif isinstance(unit, AudioConfig):
            audio = Track(unit, [])
        elif isinstance(unit, MediaFrame):
            track = video if unit.kind is TrackKind.VIDEO else audio
            assert track is not None, "a frame before its sequence header"
            track.frames.append(unit)
    return [track for track in (video, audio) if track is not None]


@dataclass
class Packaged:
    """What went into the file, per track: (dts, pts, keyframe) in the track's timescale."""

    config: VideoConfig | AudioConfig
    timing: list[tuple[int, int, bool]]


def to_samples(track: Track, cto_shift: int = 0) -> tuple[int, list[Sample]]:
    """The track's first decode time and its samples, in its timescale. Video: millisecond
    times x 90, the last frame as long as the one before; audio: 1024 samples a frame, from the
    first frame's time. `cto_shift` is taken off every video composition offset."""
    frames = track.frames
    if isinstance(track.config, AudioConfig):
        start = frames[0].dts * track.config.sample_rate // 1000
        return start, [Sample(AAC_FRAME, True, 0, frame.data) for frame in frames]
    scale = VIDEO_TIMESCALE // 1000
    samples: list[Sample] = []
    for i, frame in enumerate(frames):
        duration = ((frames[i + 1].dts - frame.dts) * scale if i + 1 < len(frames)
                    else samples[-1].duration)
        samples.append(Sample(duration, frame.keyframe,
                              (frame.pts - frame.dts) * scale - cto_shift, frame.data))
    return frames[0].dts * scale, samples


def split_at(samples: list[Sample], starts: Sequence[int]) -> list[list[Sample]]:
    return [samples[a:b] for a, b in pairwise([*starts, len(samples)]) if b > a]


def package(tracks: list[Track], path: Path, every: int = 8, cto_shift: int = 0
            ) -> list[Packaged]:
    """Write init + fragments, cutting every `every` frames of the first track (other tracks at
    the same times), as LL-HLS parts are cut: most fragments start between keyframes."""
    timelines = [to_samples(track, cto_shift) for track in tracks]
    cuts_ms = [frame.dts for frame in tracks[0].frames[::every]]
    per_track: list[list[list[Sample]]] = []
    for track in tracks:
        starts = [next((i for i, f in enumerate(track.frames) if f.dts >= cut),
                       len(track.frames)) for cut in cuts_ms]
        starts[0] = 0
        per_track.append(split_at(timelines[len(per_track)][1], starts))
    count = min(len(chunks) for chunks in per_track)
    assert count >= 2, "the test wants several fragments"
    out = [init_segment([track.config for track in tracks])]
    clocks = [start for start, _ in timelines]
    packaged = [Packaged(track.config, []) for track in tracks]
    for number in range(count):
        runs = []
        for index, chunks in enumerate(per_track):
            # The last fragment takes whatever is left of every track.
            chunk = chunks[number] if number + 1 < count else [
                s for c in chunks[number:] for s in c]
            runs.append(TrackRun(index + 1, clocks[index], chunk))
            for sample in chunk:
                packaged[index].timing.append(
                    (clocks[index], clocks[index] + sample.composition_offset, sample.keyframe))
                clocks[index] += sample.duration
        out.append(media_fragment(number + 1, runs))
    path.write_bytes(b"".join(out))
    return packaged


def ffprobe(path: Path) -> dict[str, Any]:
    result = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries",
         "stream=index,codec_type,codec_name,width,height,sample_rate,channels,time_base",
         "-show_entries", "packet=stream_index,pts,dts,flags", "-of", "json", str(path)],
        capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    parsed: dict[str, Any] = json.loads(result.stdout)
    return parsed


@dataclass
class Decoded:
    frames: int
    pts: list[int]
    errors: list[tuple[int, str, str]]


def decode(path: Path, kind: str) -> Decoded:
    """Decode every frame of the first stream of a kind with PyAV, capturing libav's errors."""
    previous = av.logging.get_level()
    av.logging.set_level(av.logging.ERROR)
    try:
        with av.logging.Capture() as logs, av.open(str(path)) as container:
            stream = container.streams.video[0] if kind == "video" else container.streams.audio[0]
            pts = [frame.pts for frame in container.decode(stream)]
    finally:
        av.logging.set_level(previous)
    return Decoded(len(pts), pts, list(logs))


CODEC_NAMES = {Codec.H264: "h264", Codec.HEVC: "hevc", Codec.AAC: "aac"}


def check_with_real_parsers(path: Path, packaged: list[Packaged], pts_shift: int = 0) -> None:
    """ffprobe sees the codecs, sizes and rates, and each packet's dts, pts and keyframe flag
    as packaged (video pts moved up by `pts_shift`, as ffmpeg's demuxer does when composition
    offsets are negative); libavcodec decodes every frame without logging an error."""
    probe = ffprobe(path)
    streams = probe["streams"]
    assert len(streams) == len(packaged)
    for index, (stream, track) in enumerate(zip(streams, packaged, strict=True)):
        config = track.config
        assert stream["codec_name"] == CODEC_NAMES[config.codec]
        assert stream["time_base"] == f"1/{timescale_of(config)}"
        if isinstance(config, VideoConfig):
            assert (stream["width"], stream["height"]) == (config.width, config.height)
            shift = pts_shift
        else:
            assert (int(stream["sample_rate"]), stream["channels"]) == (
                config.sample_rate, config.channels)
            shift = 0
        packets = [p for p in probe["packets"] if p["stream_index"] == index]
        assert [(p["dts"], p["pts"], p["flags"].startswith("K")) for p in packets] == [
            (dts, pts + shift, key) for dts, pts, key in track.timing]

        decoded = decode(path, "video" if isinstance(config, VideoConfig) else "audio")
        assert decoded.errors == []
        assert decoded.frames == len(track.timing)
        if isinstance(config, VideoConfig):  # frames come out in presentation order
            assert decoded.pts == sorted(pts + shift for _dts, pts, _key in track.timing)


@pytest.fixture(scope="module")
def h264_aac_flv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2 s of 320x240 H.264 with 2 B-frames (so composition offsets vary) + 44.1 kHz AAC."""
    path = tmp_path_factory.mktemp("ffmpeg") / "h264_aac.flv"
    subprocess.run(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y",
         "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=30",
         "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100", "-t", "2",
         "-c:v", "libx264", "-g", "30", "-bf", "2", "-c:a", "aac", "-f", "flv", str(path)],
        check=True, timeout=120)
    return path


@needs_ffmpeg
@needs_ffprobe
def test_h264_aac_from_ffmpeg(h264_aac_flv: Path, tmp_path: Path) -> None:
    tracks = read_tracks(h264_aac_flv)
    assert [track.config.codec for track in tracks] == [Codec.H264, Codec.AAC]
    offsets = {frame.pts - frame.dts for frame in tracks[0].frames}
    assert len(offsets) > 2, "expected B-frames: several composition offsets"
    packaged = package(tracks, tmp_path / "out.mp4")
    assert len(packaged[0].timing) == 60 and len(packaged[1].timing) > 80
    check_with_real_parsers(tmp_path / "out.mp4", packaged)


@needs_ffmpeg
@needs_ffprobe
def test_h264_with_negative_composition_offsets(h264_aac_flv: Path, tmp_path: Path) -> None:
    """The first frame presented at its decode time: B-frames then get negative offsets."""
    tracks = read_tracks(h264_aac_flv)
    first_offset = (tracks[0].frames[0].pts - tracks[0].frames[0].dts) * 90
    packaged = package(tracks, tmp_path / "out.mp4", every=30, cto_shift=first_offset)
    offsets = [pts - dts for dts, pts, _ in packaged[0].timing]
    assert offsets[0] == 0 and min(offsets) < 0
    # ffmpeg's mov demuxer moves pts up by the most negative offset so that pts >= dts.
    check_with_real_parsers(tmp_path / "out.mp4", packaged, pts_shift=-min(offsets))


@needs_ffprobe
@pytest.mark.parametrize("name", ["hevc_main_640x360_30fps_enhanced.flv",
                                  "hevc_main10_854x480_29.97fps_enhanced.flv"])
def test_hevc_from_the_vectors(name: str, tmp_path: Path) -> None:
    tracks = read_tracks(VECTORS / name)
    assert [track.config.codec for track in tracks] == [Codec.HEVC]
    assert any(frame.pts != frame.dts for frame in tracks[0].frames)
    packaged = package(tracks, tmp_path / "out.mp4")
    check_with_real_parsers(tmp_path / "out.mp4", packaged)


@needs_ffprobe
@pytest.mark.parametrize(("name", "rate", "channels", "every"), [
    ("h264_baseline_640x360_25fps_aac_44k_mono.flv", 44100, 1, 8),
    ("h264_high_1280x720_30fps_aac_48k_stereo.flv", 48000, 2, 1),  # 3 frames: one a fragment
])
def test_audio_only_aac_from_the_vectors(name: str, rate: int, channels: int, every: int,
                                          tmp_path: Path) -> None:
    tracks = read_tracks(VECTORS / name)
    audio = [track for track in tracks if isinstance(track.config, AudioConfig)]
    assert (audio[0].config.sample_rate, audio[0].config.channels) == (rate, channels)
    packaged = package(audio, tmp_path / "out.mp4", every=every)
    check_with_real_parsers(tmp_path / "out.mp4", packaged)


@needs_ffmpeg
@needs_ffprobe
def test_audio_only_aac_from_ffmpeg(h264_aac_flv: Path, tmp_path: Path) -> None:
    audio = read_tracks(h264_aac_flv)[1:]
    packaged = package(audio, tmp_path / "out.mp4", every=20)
    assert len(packaged[0].timing) > 80
    check_with_real_parsers(tmp_path / "out.mp4", packaged)


@needs_ffprobe
def test_a_part_alone_after_the_init_segment_is_playable(tmp_path: Path) -> None:
    """What an LL-HLS player fetches: EXT-X-MAP, then one part starting at a keyframe."""
    tracks = read_tracks(VECTORS / "hevc_main_640x360_30fps_enhanced.flv")
    start, samples = to_samples(tracks[0])
    keyframes = [i for i, s in enumerate(samples) if s.keyframe]
    part = samples[keyframes[-1]:]
    decode_time = start + sum(s.duration for s in samples[: keyframes[-1]])
    data = init_segment([tracks[0].config]) + media_fragment(42, [TrackRun(1, decode_time, part)])
    assert [box.type for box in walk(data)] == [b"ftyp", b"moov", b"moof", b"mdat"]
    path = tmp_path / "part.mp4"
    path.write_bytes(data)
    probe = ffprobe(path)
    assert probe["packets"][0]["dts"] == decode_time
    decoded = decode(path, "video")
    assert decoded.errors == [] and decoded.frames == len(part)
