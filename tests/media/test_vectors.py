"""Real encoder output through the FLV tag parser.

The vectors in tests/vectors/media/ are short FLV files: the first tags of ffmpeg's output
(libx264 + aac), and, for HEVC, Enhanced RTMP tags built here around libx265 output taken from
an MP4 (Debian 12's ffmpeg 5.1 cannot write Enhanced RTMP). tests/vectors/media/README.md says
how each was made; `python -m tests.media.test_vectors` (from the repository root, with ffmpeg
on PATH) makes them again.

The committed vectors are checked against hard-coded values (what ffprobe reported when they
were made) and, when ffprobe is on PATH, against ffprobe run on them. With ffmpeg on PATH the
vectors are also made afresh and checked against ffprobe on the full ffmpeg output.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest

from relay.media.units import Codec, TrackKind
from tests.media.helpers.vectors import (
    TAG_AUDIO,
    TAG_VIDEO,
    VECTOR_BUDGET,
    VECTOR_LIST,
    FlvTag,
    Parsed,
    Vector,
    is_header_tag,
    parse_all,
    read_flv,
)

# -- a test-only FLV file reader and writer (FLV spec 10.1 E.2 header, E.3 body, E.4.1 tag) --


def write_flv(tags: list[FlvTag]) -> bytes:
    has_audio = any(tag.type == TAG_AUDIO for tag in tags)
    has_video = any(tag.type == TAG_VIDEO for tag in tags)
    out = bytearray(b"FLV\x01" + bytes([has_audio << 2 | has_video]) + (9).to_bytes(4, "big"))
    out += bytes(4)
    for tag in tags:
        out += bytes([tag.type]) + len(tag.body).to_bytes(3, "big")
        out += (tag.timestamp & 0xFFFFFF).to_bytes(3, "big") + bytes([tag.timestamp >> 24 & 0xFF])
        out += bytes(3) + tag.body + (11 + len(tag.body)).to_bytes(4, "big")
    return bytes(out)


def is_end_tag(tag: FlvTag) -> bool:
    if tag.type != TAG_VIDEO:
        return False
    if tag.body[0] & 0x80:
        return tag.body[0] & 0x0F == 2
    return len(tag.body) > 1 and tag.body[1] == 2


def shorten(tags: list[FlvTag], budget: int = VECTOR_BUDGET) -> list[FlvTag]:
    """The header tags, then media tags in order while the file stays within `budget`, then
    the end-of-sequence tag if the stream had one."""
    kept = [tag for tag in tags if is_header_tag(tag)]
    ends = [tag for tag in tags if is_end_tag(tag)]
    size = len(write_flv(kept + ends))
    for tag in tags:
        if is_header_tag(tag) or is_end_tag(tag):
            continue
        size += 15 + len(tag.body)
        if size > budget:
            break
        kept.append(tag)
    return kept + ends


# -- MP4 (ISO 14496-12) sample extraction, for the HEVC vectors --

def _boxes(data: bytes, start: int, end: int) -> Iterator[tuple[bytes, int, int]]:
    """(type, payload start, payload end) of the boxes in data[start:end]."""
    pos = start
    while pos + 8 <= end:
        size = int.from_bytes(data[pos : pos + 4], "big")
        kind = data[pos + 4 : pos + 8]
        header = 8
        if size == 1:
            size = int.from_bytes(data[pos + 8 : pos + 16], "big")
            header = 16
        elif size == 0:
            size = end - pos
        yield kind, pos + header, pos + size
        pos += size


def _child(data: bytes, start: int, end: int, path: str) -> tuple[int, int]:
    for name in path.split("/"):
        for kind, start_, end_ in _boxes(data, start, end):
            if kind == name.encode():
                start, end = start_, end_
                break
        else:
            raise AssertionError(f"no {name} box")
    return start, end


def _u32s(data: bytes, start: int, count: int) -> list[int]:
    return [int.from_bytes(data[start + 4 * i : start + 4 * i + 4], "big") for i in range(count)]


@dataclass(frozen=True)
class Mp4Sample:
    dts_ms: int
    cts_ms: int
    keyframe: bool
    data: bytes


def mp4_video_track(data: bytes) -> tuple[bytes, bytes, list[Mp4Sample]]:
    """(sample entry type, decoder configuration record, samples) of the first video track."""
    moov = _child(data, 0, len(data), "moov")
    for kind, start, end in _boxes(data, *moov):
        if kind != b"trak":
            continue
        hdlr = _child(data, start, end, "mdia/hdlr")
        if data[hdlr[0] + 8 : hdlr[0] + 12] == b"vide":
            break
    else:
        raise AssertionError("no video track")
    mdhd = _child(data, start, end, "mdia/mdhd")
    version = data[mdhd[0]]
    timescale_at = mdhd[0] + (20 if version == 1 else 12)
    timescale = int.from_bytes(data[timescale_at : timescale_at + 4], "big")
    stbl = _child(data, start, end, "mdia/minf/stbl")

    stsd = _child(data, *stbl, "stsd")
    entry = next(_boxes(data, stsd[0] + 8, stsd[1]))
    entry_type = entry[0]
    # VisualSampleEntry: 8 bytes of SampleEntry, 70 of visual fields, then child boxes.
    config = next(
        data[s:e] for kind, s, e in _boxes(data, entry[1] + 78, entry[2])
        if kind in (b"hvcC", b"avcC")
    )

    def table(name: str, columns: int) -> list[list[int]]:
        s, _ = _child(data, *stbl, name)
        count = int.from_bytes(data[s + 4 : s + 8], "big")
        flat = _u32s(data, s + 8, count * columns)
        return [flat[i : i + columns] for i in range(0, len(flat), columns)]

    deltas = [delta for count, delta in table("stts", 2) for _ in range(count)]
    names = {kind for kind, _, _ in _boxes(data, *stbl)}
    offsets = [0] * len(deltas)
    if b"ctts" in names:
        offsets = [off for count, off in table("ctts", 2) for _ in range(count)]
        offsets = [off - (1 << 32) if off & 0x80000000 else off for off in offsets]
    sync = {n - 1 for (n,) in table("stss", 1)} if b"stss" in names else set(range(len(deltas)))
    stsz_start, _ = _child(data, *stbl, "stsz")
    fixed = int.from_bytes(data[stsz_start + 4 : stsz_start + 8], "big")
    sample_count = int.from_bytes(data[stsz_start + 8 : stsz_start + 12], "big")
    sizes = [fixed] * sample_count if fixed else _u32s(data, stsz_start + 12, sample_count)
    chunk_offsets = [c for (c,) in table("stco", 1)]
    runs = table("stsc", 3)

    samples: list[Mp4Sample] = []
    dts = 0
    index = 0
    for chunk, offset in enumerate(chunk_offsets, start=1):
        per_chunk = [run[1] for run in runs if run[0] <= chunk][-1]
        for _ in range(per_chunk):
            size = sizes[index]
            dts_ms = dts * 1000 // timescale
            pts_ms = (dts + offsets[index]) * 1000 // timescale
            samples.append(Mp4Sample(dts_ms, pts_ms - dts_ms, index in sync,
                                     data[offset : offset + size]))
            offset += size
            dts += deltas[index]
            index += 1
    assert index == sample_count
    return entry_type, config, samples


def enhanced_hevc_tags(config: bytes, samples: list[Mp4Sample]) -> list[FlvTag]:
    """E-RTMP v1 HEVC tags: SequenceStart, CodedFrames (CodedFramesX when the composition
    offset is 0), SequenceEnd."""
    tags = [FlvTag(TAG_VIDEO, 0, bytes([0x80 | 1 << 4 | 0]) + b"hvc1" + config)]
    for sample in samples:
        frame_type = 1 if sample.keyframe else 2
        if sample.cts_ms:
            body = (bytes([0x80 | frame_type << 4 | 1]) + b"hvc1"
                    + sample.cts_ms.to_bytes(3, "big", signed=True) + sample.data)
        else:
            body = bytes([0x80 | frame_type << 4 | 3]) + b"hvc1" + sample.data
        tags.append(FlvTag(TAG_VIDEO, sample.dts_ms, body))
    last = samples[-1].dts_ms if samples else 0
    tags.append(FlvTag(TAG_VIDEO, last, bytes([0x80 | 1 << 4 | 2]) + b"hvc1"))
    return tags


# -- the vectors --


def make_vector(vector: Vector, workdir: Path) -> tuple[Path, bytes]:
    """Run ffmpeg for `vector` in `workdir`; return the full source file and the vector."""
    if vector.source == "flv":
        source = workdir / f"{vector.name}.full.flv"
        subprocess.run(vector.command(str(source)), check=True)
        tags = read_flv(source.read_bytes())
    elif vector.source == "h264-remux":
        raw = workdir / f"{vector.name}.h264"
        subprocess.run(vector.command(str(raw)), check=True)
        source = workdir / f"{vector.name}.full.flv"
        rate = str(vector.video.frame_rate)
        subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-r", rate,
                        "-i", str(raw), "-c", "copy", "-f", "flv", str(source)], check=True)
        tags = read_flv(source.read_bytes())
    else:
        source = workdir / f"{vector.name}.mp4"
        subprocess.run(vector.command(str(source)), check=True)
        entry_type, config, samples = mp4_video_track(source.read_bytes())
        assert entry_type == b"hvc1", entry_type
        tags = enhanced_hevc_tags(config, samples)
    return source, write_flv(shorten(tags, vector.budget))


def ffprobe_streams(path: Path) -> list[dict[str, Any]]:
    result = subprocess.run(["ffprobe", "-v", "error", "-show_streams", "-of", "json",
                             str(path)], check=True, capture_output=True, text=True)
    streams: list[dict[str, Any]] = json.loads(result.stdout)["streams"]
    return streams


# ffprobe's profile names for the profile_idc values of the vectors.
_H264_PROFILES = {"Constrained Baseline": 66, "Baseline": 66, "Main": 77, "High": 100,
                  "High 4:4:4 Predictive": 244, "High 4:2:2 Intra": 122}
_HEVC_PROFILES = {"Main": 1, "Main 10": 2}


# -- checks --


def check_against_expected(vector: Vector, parsed: Parsed) -> None:
    assert len(parsed.video) == 1
    video = parsed.video[0]
    expected = vector.video
    assert (video.codec, video.width, video.height, video.codecs) == (
        expected.codec, expected.width, expected.height, expected.codecs)
    assert video.frame_rate == pytest.approx(expected.frame_rate, rel=1e-9)
    if vector.audio is None:
        assert parsed.audio == []
    else:
        assert len(parsed.audio) == 1
        audio = parsed.audio[0]
        assert (audio.codec, audio.sample_rate, audio.channels, audio.codecs) == (
            vector.audio.codec, vector.audio.sample_rate, vector.audio.channels,
            vector.audio.codecs)
    assert parsed.ends == 1
    assert parsed.ignored == []


def check_frames(vector: Vector, parsed: Parsed) -> None:
    """Each frame is the tag body after its header, timed by the tag and its header."""
    video_frames = [(tag, frame) for tag, frame in parsed.frames
                    if frame.kind is TrackKind.VIDEO]
    if not vector.has_frames:
        assert parsed.frames == []
        return
    assert len(video_frames) >= 3, "too few video frames kept"
    assert video_frames[0][1].keyframe, "the first video frame is not a keyframe"
    assert any(frame.pts != frame.dts for _, frame in video_frames) == (
        "baseline" not in vector.name), "composition offsets where B-frames are (not) used"
    for tag, frame in parsed.frames:
        assert frame.dts == tag.timestamp
        assert tag.body.endswith(frame.data)
        if frame.kind is TrackKind.AUDIO:
            assert frame.pts == frame.dts and frame.keyframe
            assert len(tag.body) == len(frame.data) + 2
            continue
        first = tag.body[0]
        assert frame.keyframe == ((first >> 4) & 0x07 == 1)
        header = len(tag.body) - len(frame.data)
        if first & 0x80:
            assert header == (8 if first & 0x0F == 1 else 5)
        else:
            assert header == 5
        if header > 5 or not first & 0x80:
            cts = int.from_bytes(tag.body[header - 3 : header], "big", signed=True)
            assert frame.pts == frame.dts + cts
        else:
            assert frame.pts == frame.dts
        # The AVCC / HVCC length prefixes (4 bytes in every vector) tile the frame exactly.
        pos = 0
        while pos < len(frame.data):
            pos += 4 + int.from_bytes(frame.data[pos : pos + 4], "big")
        assert pos == len(frame.data)


def check_against_ffprobe(parsed: Parsed, streams: list[dict[str, Any]], *, full: bool) \
        -> None:
    """Compare with ffprobe's view of the same stream. ffprobe guesses an FLV's frame rate
    from its millisecond timestamps, which takes more frames than a vector keeps, so the
    rate is compared on `full` sources only."""
    video = parsed.video[0]
    (probe,) = [s for s in streams if s["codec_type"] == "video"]
    assert (video.width, video.height) == (probe["width"], probe["height"])
    if full:
        rate = Fraction(video.frame_rate or 0).limit_denominator(1001)
        assert Fraction(probe["r_frame_rate"]) == rate
    codec_string = video.codecs.split(".")
    if video.codec is Codec.H264:
        assert probe["codec_name"] == "h264"
        assert int(codec_string[1][:2], 16) == _H264_PROFILES[probe["profile"]]
        assert int(codec_string[1][4:], 16) == probe["level"]
    else:
        assert probe["codec_name"] == "hevc"
        assert int(codec_string[1]) == _HEVC_PROFILES[probe["profile"]]
        assert codec_string[3] == f"L{probe['level']}"
    audio_streams = [s for s in streams if s["codec_type"] == "audio"]
    assert len(audio_streams) == len(parsed.audio)
    for audio, probe in zip(parsed.audio, audio_streams, strict=True):
        assert probe["codec_name"] == "aac" and probe["profile"] == "LC"
        assert audio.sample_rate == int(probe["sample_rate"])
        assert audio.channels == probe["channels"]


@pytest.mark.parametrize("vector", VECTOR_LIST, ids=lambda v: v.name)
def test_committed_vector(vector: Vector) -> None:
    data = vector.path.read_bytes()
    assert len(data) <= max(vector.budget, 4096)
    parsed = parse_all(data)
    check_against_expected(vector, parsed)
    check_frames(vector, parsed)
    # The record is the sequence header's body after its 5-byte header (legacy: frame type
    # and codec id, AVCPacketType, composition time; enhanced: first byte and FourCC).
    (header,) = [tag for tag in read_flv(data) if tag.type == TAG_VIDEO and is_header_tag(tag)]
    assert parsed.video[0].record == header.body[5:]


@pytest.mark.skipif(shutil.which("ffprobe") is None, reason="ffprobe is not on PATH")
@pytest.mark.parametrize(
    "vector",
    # ffprobe 5.1 cannot read Enhanced RTMP FLV, nor size a stream from headers alone.
    [v for v in VECTOR_LIST if v.source != "hevc-mp4" and v.has_frames],
    ids=lambda v: v.name)
def test_committed_vector_matches_ffprobe(vector: Vector) -> None:
    check_against_ffprobe(parse_all(vector.path.read_bytes()), ffprobe_streams(vector.path),
                          full=False)


@pytest.mark.skipif(shutil.which("ffmpeg") is None or shutil.which("ffprobe") is None,
                    reason="ffmpeg / ffprobe are not on PATH")
@pytest.mark.parametrize("vector", VECTOR_LIST, ids=lambda v: v.name)
def test_fresh_encode_matches_ffprobe(vector: Vector, tmp_path: Path) -> None:
    source, data = make_vector(vector, tmp_path)
    parsed = parse_all(data)
    check_against_expected(vector, parsed)
    check_frames(vector, parsed)
    check_against_ffprobe(parsed, ffprobe_streams(source), full=True)


def main() -> None:
    """Write the vectors into tests/vectors/media/ (needs ffmpeg on PATH)."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        for vector in VECTOR_LIST:
            _, data = make_vector(vector, Path(tmp))
            vector.path.write_bytes(data)
            print(f"{vector.path.name}: {len(data)} bytes", file=sys.stderr)


if __name__ == "__main__":
    main()
