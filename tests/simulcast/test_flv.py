"""The FLV writer against the FLV parser, and against real encoders' tags byte for byte."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relay.media.flv import parse_audio_tag, parse_video_tag
from relay.media.units import AudioConfig, Codec, MediaFrame, TrackKind, VideoConfig
from relay.rtmp import amf0
from relay.simulcast import flv
from tests.media.helpers.vectors import TAG_AUDIO, TAG_VIDEO, read_flv

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "media"
FILES = sorted(VECTORS.glob("*.flv"))


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_real_tags_round_trip_byte_for_byte(path: Path) -> None:
    """Every config and frame of ffmpeg's (legacy) and the hand-built Enhanced RTMP tags
    parses, and the writer gives back the very same tag body."""
    video_codec: Codec | None = None
    checked = 0
    for tag in read_flv(path.read_bytes()):
        if tag.type == TAG_VIDEO:
            unit = parse_video_tag(tag.body, tag.timestamp)
            if isinstance(unit, VideoConfig):
                video_codec = unit.codec
                assert flv.video_config_tag(unit) == tag.body
            elif isinstance(unit, MediaFrame):
                assert video_codec is not None
                assert flv.video_frame_tag(unit, video_codec) == tag.body
                assert flv.frame_tag(unit, video_codec) == tag.body
            else:
                continue
        elif tag.type == TAG_AUDIO:
            audio = parse_audio_tag(tag.body, tag.timestamp)
            if isinstance(audio, AudioConfig):
                assert flv.audio_config_tag(audio) == tag.body
            elif isinstance(audio, MediaFrame):
                assert flv.audio_frame_tag(audio) == tag.body
                assert flv.frame_tag(audio, None) == tag.body
            else:
                continue
        else:
            continue
        checked += 1
    # (the AVC-Intra vector keeps its headers only: its frames are ~280 KB each)
    assert checked > (0 if "avcintra" in path.stem else 3)


def configs(path: Path) -> tuple[VideoConfig | None, AudioConfig | None]:
    video = audio = None
    for tag in read_flv(path.read_bytes()):
        if tag.type == TAG_VIDEO:
            unit = parse_video_tag(tag.body, 0)
            video = unit if isinstance(unit, VideoConfig) else video
        elif tag.type == TAG_AUDIO:
            unit_a = parse_audio_tag(tag.body, 0)
            audio = unit_a if isinstance(unit_a, AudioConfig) else audio
    return video, audio


def test_metadata_says_what_the_tracks_say() -> None:
    video, audio = configs(VECTORS / "h264_high_1280x720_30fps_aac_48k_stereo.flv")
    values = flv.metadata(video, audio)
    assert values == {"width": 1280.0, "height": 720.0, "framerate": 30.0,
                      "videocodecid": 7.0, "audiocodecid": 10.0, "audiosamplerate": 48000.0,
                      "audiochannels": 2.0, "audiosamplesize": 16.0, "stereo": True,
                      "encoder": "Relay"}
    amf0.encode("@setDataFrame", "onMetaData", values)  # encodable as sent
    hevc, _ = configs(VECTORS / "hevc_main_640x360_30fps_enhanced.flv")
    values = flv.metadata(hevc, None)
    # E-RTMP v1: the FourCC as a number.
    assert values["videocodecid"] == float(int.from_bytes(b"hvc1", "big"))
    assert "audiocodecid" not in values and values["width"] == 640.0


@st.composite
def frames(draw: st.DrawFn) -> tuple[MediaFrame, Codec]:
    codec = draw(st.sampled_from([Codec.H264, Codec.HEVC, Codec.AV1, Codec.VP9]))
    dts = draw(st.integers(0, 2**32))
    offset = draw(st.integers(-(1 << 23), (1 << 23) - 1)) if codec in (
        Codec.H264, Codec.HEVC) else 0
    data = draw(st.binary(min_size=1, max_size=64))
    return MediaFrame(TrackKind.VIDEO, dts, dts + offset, draw(st.booleans()), data), codec


@given(frames())
def test_video_frames_round_trip_through_the_parser(case: tuple[MediaFrame, Codec]) -> None:
    frame, codec = case
    assert parse_video_tag(flv.video_frame_tag(frame, codec), frame.dts) == frame


@given(st.integers(0, 2**40), st.binary(min_size=1, max_size=64))
def test_audio_frames_round_trip_through_the_parser(dts: int, data: bytes) -> None:
    frame = MediaFrame(TrackKind.AUDIO, dts, dts, True, data)
    assert parse_audio_tag(flv.audio_frame_tag(frame), dts) == frame


@pytest.mark.parametrize("offset", [1 << 23, -(1 << 23) - 1])
def test_an_offset_past_si24_is_refused_with_its_value(offset: int) -> None:
    frame = MediaFrame(TrackKind.VIDEO, 0, offset, False, b"x")
    with pytest.raises(ValueError, match=f"offset {offset} ms does not fit"):
        flv.video_frame_tag(frame, Codec.H264)


def test_codecs_without_an_flv_form_are_refused() -> None:
    with pytest.raises(ValueError, match="composition offset of 5 ms"):
        flv.video_frame_tag(MediaFrame(TrackKind.VIDEO, 0, 5, True, b"x"), Codec.AV1)
    with pytest.raises(ValueError, match="only AAC"):
        flv.audio_config_tag(AudioConfig(Codec.H264, b"", 1, 1, ""))
    with pytest.raises(ValueError, match="without a video track"):
        flv.frame_tag(MediaFrame(TrackKind.VIDEO, 0, 0, True, b"x"), None)
