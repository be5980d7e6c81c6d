"""H.264: avcC records and SPSs built bit by bit from H.264 7.3.2.1.1, parsed back.

Synthetic SPSs reach what encoders rarely write (4:2:2 / 4:4:4 / monochrome cropping, field
coding, scaling lists, POC type 1, every VUI field before the timing info). With ffmpeg on PATH
they are also read by ffmpeg's own parser (the trace_headers bitstream filter), and its field
values must agree with ours.
"""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relay.media.h264 import (
    avc_codecs,
    avc_video_config,
    parse_avc_sps,
    parse_avcc,
)
from relay.media.units import MAX_DIMENSION, Codec, MediaFormatError
from tests.media.helpers.h264 import (
    HIGH_PROFILES,
    PPS,
    AvcSpsSpec,
    Vui,
    avcc,
    ffmpeg_trace,
    scaling_deltas,
    scaling_lists,
    write_avc_sps,
)

# -- fields and sizes --

# (name, spec, width, height): cropping in every chroma format, field coding, no cropping.
SIZE_CASES = [
    ("1080p 4:2:0 crops 4 chroma rows", AvcSpsSpec(width_mbs=120, height_map_units=68,
                                                   crop=(0, 0, 0, 4)), 1920, 1080),
    ("1080i field pairs crop 4 units of 2x2",
     AvcSpsSpec(width_mbs=120, height_map_units=34, frame_mbs_only=False, crop=(0, 0, 0, 2)),
     1920, 1080),
    ("4:2:2 crops odd rows", AvcSpsSpec(profile_idc=122, chroma_format_idc=2, width_mbs=40,
                                        height_map_units=30, crop=(1, 2, 0, 3)), 634, 477),
    ("4:4:4 crops single samples", AvcSpsSpec(profile_idc=244, chroma_format_idc=3,
                                              width_mbs=54, height_map_units=30,
                                              crop=(0, 11, 1, 1)), 853, 478),
    ("4:4:4 separate planes crop luma", AvcSpsSpec(profile_idc=244, chroma_format_idc=3,
                                                   separate_colour_plane=True, width_mbs=4,
                                                   height_map_units=4, crop=(1, 1, 1, 1)),
     62, 62),
    ("monochrome crops luma", AvcSpsSpec(profile_idc=100, chroma_format_idc=0, width_mbs=4,
                                         height_map_units=4, frame_mbs_only=False,
                                         crop=(0, 3, 0, 5)), 61, 118),
    ("baseline has no chroma info", AvcSpsSpec(profile_idc=66, constraint_flags=0xC0,
                                               level_idc=30, width_mbs=40, height_map_units=23,
                                               crop=(0, 0, 0, 4)), 640, 360),
    ("no cropping", AvcSpsSpec(width_mbs=1, height_map_units=1), 16, 16),
    ("largest", AvcSpsSpec(width_mbs=MAX_DIMENSION // 16, height_map_units=MAX_DIMENSION // 16),
     MAX_DIMENSION, MAX_DIMENSION),
]


@pytest.mark.parametrize(("spec", "width", "height"), [c[1:] for c in SIZE_CASES],
                         ids=[c[0] for c in SIZE_CASES])
def test_size_after_cropping(spec: AvcSpsSpec, width: int, height: int) -> None:
    assert spec.expected_size() == (width, height)  # the test's own formula agrees
    sps = parse_avc_sps(write_avc_sps(spec))
    assert (sps.width, sps.height) == (width, height)
    assert sps.frame_rate == 30.0


def test_fields() -> None:
    spec = AvcSpsSpec(profile_idc=110, constraint_flags=0x10, level_idc=41, sps_id=31,
                      bit_depth_luma_minus8=2, bit_depth_chroma_minus8=2, frame_mbs_only=False)
    sps = parse_avc_sps(write_avc_sps(spec))
    assert (sps.profile_idc, sps.constraint_flags, sps.level_idc) == (110, 0x10, 41)
    assert sps.seq_parameter_set_id == 31
    assert (sps.chroma_format_idc, sps.bit_depth_luma, sps.bit_depth_chroma) == (1, 10, 10)
    assert sps.frame_mbs_only is False
    assert avc_codecs(sps) == "avc1.6e1029"


@pytest.mark.parametrize(("vui", "rate"), [
    (Vui(timing=(1001, 60000)), 30000 / 1001),
    (Vui(timing=(1, 50)), 25.0),
    (Vui(timing=(1, 120)), 60.0),
    (Vui(timing=None), None),
    (None, None),
    # E.2.1 requires both > 0; a zero means "unknown" rather than a broken stream.
    (Vui(timing=(0, 60)), None),
    (Vui(timing=(1, 0)), None),
    # Every optional VUI field before the timing info, SAR written explicitly.
    (Vui(aspect_ratio=(255, 4, 3), overscan=True, video_signal=(5, True, (1, 1, 1)),
         chroma_loc=(5, 5), timing=(1, 48)), 24.0),
    (Vui(aspect_ratio=(1, 0, 0), overscan=False, video_signal=(5, False, None),
         chroma_loc=(0, 1), timing=(1, 60)), 30.0),
])
def test_vui_frame_rate(vui: Vui | None, rate: float | None) -> None:
    assert parse_avc_sps(write_avc_sps(AvcSpsSpec(vui=vui))).frame_rate == rate


def test_poc_type_1_cycle_is_skipped() -> None:
    spec = AvcSpsSpec(poc_type=1, poc_cycle=(-3, 7, tuple(range(-20, 20))))
    assert parse_avc_sps(write_avc_sps(spec)).frame_rate == 30.0


def test_poc_type_2() -> None:
    assert parse_avc_sps(write_avc_sps(AvcSpsSpec(poc_type=2))).width == 1280


DEFAULT = scaling_deltas([0], 16)  # "use the default matrix"
FLAT_16 = scaling_deltas([16], 16)
FLAT_64 = scaling_deltas([16], 64)
RAMP_64 = scaling_deltas([(4 + 3 * j) % 255 + 1 for j in range(64)], 64)
SHORT = scaling_deltas([9, 30, 200, 0], 64)  # ends after 4 codes, the rest repeats 200


@pytest.mark.parametrize(("chroma", "lists"), [
    (1, (FLAT_16, None, DEFAULT, SHORT, FLAT_16, FLAT_16, RAMP_64, DEFAULT)),
    (1, (None,) * 8),
    (3, (FLAT_16,) * 6 + (RAMP_64, DEFAULT, RAMP_64, SHORT, None, RAMP_64)),
])
def test_scaling_lists_are_skipped(chroma: int, lists: tuple[tuple[int, ...] | None, ...]) \
        -> None:
    spec = AvcSpsSpec(profile_idc=244 if chroma == 3 else 100, chroma_format_idc=chroma,
                      scaling_lists=lists, vui=Vui(timing=(1, 100)))
    sps = parse_avc_sps(write_avc_sps(spec))
    assert (sps.width, sps.height, sps.frame_rate) == (1280, 720, 50.0)


def test_scaling_delta_out_of_range() -> None:
    spec = AvcSpsSpec(scaling_lists=((-129,),) + (None,) * 7)
    with pytest.raises(MediaFormatError, match=r"delta_scale = -129 is out of range -128\.\.127"):
        parse_avc_sps(write_avc_sps(spec))


# -- bad SPSs --

@pytest.mark.parametrize(("spec", "message"), [
    (AvcSpsSpec(sps_id=32), r"seq_parameter_set_id = 32 is out of range 0\.\.31"),
    (AvcSpsSpec(chroma_format_idc=4), r"chroma_format_idc = 4 is out of range 0\.\.3"),
    (AvcSpsSpec(bit_depth_luma_minus8=7), r"bit_depth_luma_minus8 = 7 is out of range"),
    (AvcSpsSpec(log2_max_frame_num_minus4=13), "log2_max_frame_num_minus4 = 13"),
    (AvcSpsSpec(poc_type=3), r"pic_order_cnt_type = 3 is out of range 0\.\.2"),
    (AvcSpsSpec(log2_max_poc_lsb_minus4=13), "log2_max_pic_order_cnt_lsb_minus4 = 13"),
    (AvcSpsSpec(poc_type=1, poc_cycle=(0, 0, (1,) * 256)),
     "num_ref_frames_in_pic_order_cnt_cycle = 256"),
    (AvcSpsSpec(max_num_ref_frames=17), "max_num_ref_frames = 17"),
    (AvcSpsSpec(width_mbs=1025), r"picture size 16400x720 is over the 16384 limit"),
    (AvcSpsSpec(height_map_units=520, frame_mbs_only=False),
     r"picture size 1280x16640 is over the 16384 limit"),
    (AvcSpsSpec(width_mbs=2, crop=(8, 8, 0, 0)), r"cropping \(left 8, right 8, top 0, "
                                                  r"bottom 0\) leaves nothing of the 32x720"),
    (AvcSpsSpec(height_map_units=1, crop=(0, 0, 4, 4)), "leaves nothing"),
    (AvcSpsSpec(vui=Vui(chroma_loc=(6, 0))), "chroma_sample_loc_type_top_field = 6"),
])
def test_out_of_range_values(spec: AvcSpsSpec, message: str) -> None:
    with pytest.raises(MediaFormatError, match=message):
        parse_avc_sps(write_avc_sps(spec))


@pytest.mark.parametrize(("nal", "message"), [
    (b"", "H.264 SPS is empty"),
    (b"\xe7\x64\x00\x1f\xac", "forbidden_zero_bit is set"),
    (b"\x68\x64\x00\x1f\xac", "nal_unit_type 8, expected 7"),
    (b"\x67\x64\x00", r"truncated: needed 8 more bits at bit 16 of 16"),
])
def test_bad_nal(nal: bytes, message: str) -> None:
    with pytest.raises(MediaFormatError, match=message):
        parse_avc_sps(nal)


def test_every_truncation_fails_cleanly_or_parses_the_same() -> None:
    spec = AvcSpsSpec(profile_idc=244, chroma_format_idc=3,
                      scaling_lists=(FLAT_16,) * 6 + (FLAT_64,) * 6,
                      crop=(0, 1, 0, 1), vui=Vui(aspect_ratio=(255, 1, 1), timing=(1, 50)))
    nal = write_avc_sps(spec)
    full = parse_avc_sps(nal)
    outcomes = []
    for end in range(len(nal)):
        try:
            outcomes.append(parse_avc_sps(nal[:end]) == full)
        except MediaFormatError:
            outcomes.append(False)
    # Only the last bytes (trailing VUI fields never read) may go without changing anything.
    assert outcomes[: len(nal) - 2] == [False] * (len(nal) - 2)


def test_emulation_prevention_is_removed_before_reading() -> None:
    # A crop of 0 with sizes whose codes are runs of zeros makes 00 00 0x sequences.
    spec = AvcSpsSpec(profile_idc=66, width_mbs=1, height_map_units=1, sps_id=0,
                      crop=(0, 0, 0, 0), vui=Vui(timing=(1, 2 * 256)))
    nal = write_avc_sps(spec)
    assert b"\x00\x00\x03" in nal
    assert parse_avc_sps(nal).frame_rate == 256.0


@st.composite
def sps_specs(draw: st.DrawFn) -> AvcSpsSpec:
    profile = draw(st.sampled_from((66, 77, 88, *HIGH_PROFILES)))
    high = profile in HIGH_PROFILES
    chroma = draw(st.integers(0, 3)) if high else 1
    frame_mbs_only = draw(st.booleans())
    width_mbs = draw(st.integers(1, 1024))
    height_units = draw(st.integers(1, 1024 if frame_mbs_only else 512))
    spec = AvcSpsSpec(
        profile_idc=profile, constraint_flags=draw(st.integers(0, 255)),
        level_idc=draw(st.integers(0, 255)), sps_id=draw(st.integers(0, 31)),
        chroma_format_idc=chroma,
        separate_colour_plane=chroma == 3 and draw(st.booleans()),
        bit_depth_luma_minus8=draw(st.integers(0, 6)),
        bit_depth_chroma_minus8=draw(st.integers(0, 6)),
        scaling_lists=draw(st.none() | st.tuples(*[
            st.none() | scaling_lists(16 if i < 6 else 64)
            for i in range(12 if chroma == 3 else 8)])) if high else None,
        log2_max_frame_num_minus4=draw(st.integers(0, 12)),
        poc_type=draw(st.integers(0, 2)),
        log2_max_poc_lsb_minus4=draw(st.integers(0, 12)),
        poc_cycle=(draw(st.integers(-1000, 1000)), draw(st.integers(-1000, 1000)),
                   tuple(draw(st.lists(st.integers(-(2**31) + 1, 2**31 - 1), max_size=8)))),
        max_num_ref_frames=draw(st.integers(0, 16)),
        width_mbs=width_mbs, height_map_units=height_units, frame_mbs_only=frame_mbs_only,
        vui=draw(st.none() | st.builds(
            Vui,
            aspect_ratio=st.none() | st.tuples(st.sampled_from([1, 2, 16, 255]),
                                               st.integers(0, 65535), st.integers(0, 65535)),
            overscan=st.none() | st.booleans(),
            video_signal=st.none() | st.tuples(
                st.integers(0, 7), st.booleans(),
                st.none() | st.tuples(*[st.integers(0, 255)] * 3)),
            chroma_loc=st.none() | st.tuples(st.integers(0, 5), st.integers(0, 5)),
            timing=st.none() | st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1)),
        )),
    )
    full_width, full_height = replace(spec, crop=None).expected_size()
    unit_x = 1 if chroma in (0, 3) else 2
    unit_y = (2 if chroma == 1 else 1) * (1 if frame_mbs_only else 2)
    crop_x = draw(st.integers(0, (full_width - 1) // unit_x))
    crop_y = draw(st.integers(0, (full_height - 1) // unit_y))
    left = draw(st.integers(0, crop_x))
    top = draw(st.integers(0, crop_y))
    crop = draw(st.none() | st.just((left, crop_x - left, top, crop_y - top)))
    return replace(spec, crop=crop)


@given(sps_specs())
def test_written_sps_round_trips(spec: AvcSpsSpec) -> None:
    sps = parse_avc_sps(write_avc_sps(spec))
    assert (sps.width, sps.height) == spec.expected_size()
    assert sps.frame_rate == spec.expected_rate()
    assert (sps.profile_idc, sps.constraint_flags, sps.level_idc, sps.seq_parameter_set_id) == (
        spec.profile_idc, spec.constraint_flags, spec.level_idc, spec.sps_id)
    assert sps.chroma_format_idc == (spec.chroma_format_idc if spec.has_chroma_info else 1)


# -- avcC --

def test_avcc_fields_and_config() -> None:
    sps = write_avc_sps(AvcSpsSpec(profile_idc=100, level_idc=31, crop=(0, 0, 0, 0)))
    record = avcc([sps], [PPS])
    parsed = parse_avcc(record)
    assert (parsed.profile_indication, parsed.profile_compatibility,
            parsed.level_indication) == (100, 0, 31)
    assert parsed.nal_length_size == 4
    assert parsed.sps == (sps,) and parsed.pps == (PPS,)
    config = avc_video_config(record)
    assert config.codec is Codec.H264 and config.record == record
    assert (config.width, config.height, config.codecs, config.frame_rate) == (
        1280, 720, "avc1.64001f", 30.0)


def test_avcc_several_parameter_sets_and_high_profile_tail() -> None:
    first = write_avc_sps(AvcSpsSpec(sps_id=0))
    second = write_avc_sps(AvcSpsSpec(sps_id=1, width_mbs=40))
    # ISO 14496-15 5.3.3.1.2: chroma_format, bit depths, numOfSequenceParameterSetExt.
    record = avcc([first, second], [PPS, PPS], length_size=2, tail=b"\xfd\xf8\xf8\x00")
    parsed = parse_avcc(record)
    assert len(parsed.sps) == 2 and len(parsed.pps) == 2 and parsed.nal_length_size == 2
    assert avc_video_config(record).width == 1280  # from the first SPS


def test_avcc_reserved_one_bits_are_not_checked() -> None:
    # Writers disagree on the reserved '111111' / '111' bits; nothing depends on them.
    record = bytearray(avcc([write_avc_sps(AvcSpsSpec())], [PPS]))
    record[4] &= 0x03
    record[5] &= 0x1F
    assert avc_video_config(bytes(record)).width == 1280


def test_avcc_without_pps_is_accepted() -> None:
    assert parse_avcc(avcc([write_avc_sps(AvcSpsSpec())], [])).pps == ()


@pytest.mark.parametrize(("record", "message"), [
    (b"", "avcC is 0 bytes, shorter than the 7-byte minimum"),
    (b"\x01\x64\x00\x1f\xff\xe1", "shorter than the 7-byte minimum"),
    (b"\x00\x64\x00\x1f\xff\xe1\x00\x00\x00", "configurationVersion is 0, expected 1"),
    (b"\x01\x64\x00\x1f\xfe\xe1\x00\x04\x67\x64\x00\x1f\x00", "lengthSizeMinusOne is 2"),
    (b"\x01\x64\x00\x1f\xff\xe0\x00", "avcC carries no SPS"),
    (b"\x01\x64\x00\x1f\xff\xe1\x00", "truncated at the length of SPS #0"),
    (b"\x01\x64\x00\x1f\xff\xe1\x00\x10\x67\x64\x00",
     r"SPS #0 is truncated: 16 bytes announced, 3 present"),
    (b"\x01\x64\x00\x1f\xff\xe1\x00\x00\x00", "avcC SPS #0 is empty"),
    (b"\x01\x64\x00\x1f\xff\xe1\x00\x02\x67\x64", "truncated before numOfPictureParameterSets"),
    (b"\x01\x64\x00\x1f\xff\xe1\x00\x02\x67\x64\x01\x00\x05\x68",
     r"PPS #0 is truncated: 5 bytes announced, 1 present"),
])
def test_bad_avcc(record: bytes, message: str) -> None:
    with pytest.raises(MediaFormatError, match=message):
        parse_avcc(record)


def test_avcc_with_a_truncated_sps() -> None:
    sps = write_avc_sps(AvcSpsSpec())
    record = avcc([sps[:6]], [PPS])
    with pytest.raises(MediaFormatError, match=r"H\.264 SPS is truncated"):
        avc_video_config(record)


# -- ffmpeg's parser as a second reader --


needs_ffmpeg = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg not on PATH")

CROSS_CHECK = [case[1] for case in SIZE_CASES] + [
    AvcSpsSpec(profile_idc=244, chroma_format_idc=3,
               scaling_lists=(FLAT_16, DEFAULT, SHORT) * 2 + (RAMP_64, None) * 3,
               vui=Vui(aspect_ratio=(255, 16, 11), overscan=True,
                       video_signal=(5, True, (9, 16, 9)), chroma_loc=(2, 3),
                       timing=(1001, 48000))),
    AvcSpsSpec(poc_type=1, poc_cycle=(-5, 9, (3, -4, 100000)), vui=Vui(timing=(7, 3000))),
]


@needs_ffmpeg
def test_ffmpeg_reads_the_same_fields(tmp_path: Path) -> None:
    nals = [write_avc_sps(replace(spec, sps_id=0)) for spec in CROSS_CHECK]
    stream = b"".join(b"\x00\x00\x00\x01" + nal for nal in nals)
    blocks = ffmpeg_trace(stream, "h264", tmp_path)
    assert len(blocks) == len(nals)
    for spec, nal, fields in zip(CROSS_CHECK, nals, blocks, strict=True):
        # ffmpeg reads what the writer wrote ...
        assert fields["pic_width_in_mbs_minus1"] == spec.width_mbs - 1
        assert fields["pic_height_in_map_units_minus1"] == spec.height_map_units - 1
        assert fields["frame_mbs_only_flag"] == spec.frame_mbs_only
        crop = tuple(fields.get(f"frame_crop_{side}_offset", 0)
                     for side in ("left", "right", "top", "bottom"))
        assert crop == (spec.crop or (0, 0, 0, 0))
        # ... and the parser reads the same, down to the timing info at the end.
        sps = parse_avc_sps(nal)
        assert (sps.width, sps.height) == spec.expected_size()
        assert fields["profile_idc"] == sps.profile_idc
        assert fields["level_idc"] == sps.level_idc
        assert fields.get("chroma_format_idc", 1) == sps.chroma_format_idc
        if sps.frame_rate is None:
            assert "time_scale" not in fields
        else:
            assert fields["time_scale"] / (2 * fields["num_units_in_tick"]) == sps.frame_rate
