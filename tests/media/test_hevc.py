"""H.265: hvcC records and SPSs built bit by bit from H.265 7.3, parsed back; codecs strings.

x265 writes no short-term reference picture sets in its SPS, so the synthetic SPSs are where
those (and inter-RPS prediction) get exercised; with ffmpeg on PATH, ffmpeg's own parser reads
the same SPSs and must agree on every field the test looks at.
"""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relay.media.hevc import (
    ProfileTierLevel,
    hevc_codecs,
    hevc_video_config,
    parse_hevc_sps,
    parse_hvcc,
)
from relay.media.units import Codec, MediaFormatError
from tests.media.helpers.h264 import ffmpeg_trace
from tests.media.helpers.hevc import (
    MAIN,
    ExplicitRps,
    HevcSpsSpec,
    HevcVui,
    PredictedRps,
    Rps,
    hvcc,
    rps_pocs,
    write_hevc_sps,
    write_vps,
)

# -- codecs strings (ISO 14496-15 E.3) --

@pytest.mark.parametrize(("profile", "codecs"), [
    # The example of E.3 itself: Main, level 3.1, progressive, non-packed, frame-only.
    (MAIN, "hvc1.1.6.L93.B0"),
    # What x265 writes: general_non_packed_constraint_flag clear.
    (replace(MAIN, constraint_flags=bytes.fromhex("900000000000")), "hvc1.1.6.L93.90"),
    # Main 10, high tier, level 4 (120): compatibility flag 2 only, reversed -> 0x4.
    (replace(MAIN, profile_idc=2, tier_flag=True, compatibility_flags=0x20000000,
             level_idc=120), "hvc1.2.4.H120.B0"),
    # Main 4:4:4 (RExt): flag 4 -> 0x10; constraint bytes past the first, one digit when < 0x10.
    (replace(MAIN, profile_idc=4, compatibility_flags=0x08000000,
             constraint_flags=bytes.fromhex("9e0800000000"), level_idc=150),
     "hvc1.4.10.L150.9E.8"),
    # Zero bytes inside are kept, trailing ones dropped; all zero drops them all.
    (replace(MAIN, constraint_flags=bytes.fromhex("900001000000")), "hvc1.1.6.L93.90.0.1"),
    (replace(MAIN, constraint_flags=bytes(6)), "hvc1.1.6.L93"),
    # general_profile_space 1..3 -> "A".."C"; flag 0 -> top bit of the reversed value.
    (replace(MAIN, profile_space=1, compatibility_flags=0x80000001), "hvc1.A1.80000001.L93.B0"),
    (replace(MAIN, profile_space=3, compatibility_flags=0x40000000), "hvc1.C1.2.L93.B0"),
])
def test_codecs_string(profile: ProfileTierLevel, codecs: str) -> None:
    assert hevc_codecs(profile) == codecs


# -- a test-side SPS writer --


# -- parsing --

def test_hvcc_and_config() -> None:
    spec = HevcSpsSpec(conformance_window=(0, 0, 0, 4), height=728)
    record = hvcc(spec, extra_arrays=b"\x27\x00\x01\x00\x03\x4e\x01\x05")  # a prefix SEI
    parsed = parse_hvcc(record)
    assert parsed.profile == MAIN
    assert (parsed.chroma_format_idc, parsed.bit_depth_luma, parsed.bit_depth_chroma) == (1, 8, 8)
    assert parsed.nal_length_size == 4
    assert len(parsed.vps) == len(parsed.sps) == len(parsed.pps) == 1
    config = hevc_video_config(record)
    assert config.codec is Codec.HEVC and config.record == record
    assert (config.width, config.height, config.codecs, config.frame_rate) == (
        1280, 720, "hvc1.1.6.L93.B0", 30.0)


def test_codecs_come_from_the_sps() -> None:
    sps = write_hevc_sps(HevcSpsSpec(profile=replace(MAIN, level_idc=120)))
    assert hevc_video_config(hvcc(HevcSpsSpec(), [sps])).codecs == "hvc1.1.6.L120.B0"


def test_first_base_layer_sps_is_used() -> None:
    layer1 = write_hevc_sps(HevcSpsSpec(width=64, nuh_layer_id=1))
    base = write_hevc_sps(HevcSpsSpec(width=640, height=360))
    assert hevc_video_config(hvcc(HevcSpsSpec(), [layer1, base])).width == 640
    with pytest.raises(MediaFormatError, match="no SPS for the base layer"):
        hevc_video_config(hvcc(HevcSpsSpec(), [layer1]))
    with pytest.raises(MediaFormatError, match="SPS is for layer 1"):
        parse_hevc_sps(layer1)


# (name, spec): the conformance window in every chroma format, sub-layers, the optional
# syntax before the VUI timing, and reference picture sets explicit and predicted.
SPS_CASES = [
    ("4:2:0 window", HevcSpsSpec(width=1920, height=1088, conformance_window=(0, 0, 0, 4))),
    ("4:2:0 odd sizes", HevcSpsSpec(width=856, height=480, conformance_window=(1, 0, 0, 0))),
    ("4:2:2 window", HevcSpsSpec(chroma_format_idc=2, width=640, height=368,
                                 conformance_window=(1, 2, 3, 4))),
    ("4:4:4 window", HevcSpsSpec(chroma_format_idc=3, width=64, height=64,
                                 conformance_window=(1, 2, 3, 4))),
    ("4:4:4 separate planes", HevcSpsSpec(chroma_format_idc=3, separate_colour_plane=True,
                                          width=64, height=64, conformance_window=(1, 1, 1, 1))),
    ("monochrome", HevcSpsSpec(chroma_format_idc=0, width=64, height=64,
                               conformance_window=(3, 0, 0, 5))),
    ("sub-layers", HevcSpsSpec(max_sub_layers_minus1=3,
                               sub_layers=((True, True), (False, True), (True, False)))),
    ("sub-layers, ordering info for the highest only",
     HevcSpsSpec(max_sub_layers_minus1=6, sub_layers=((False, False),) * 6,
                 ordering_info_present=False)),
    ("Main 10", HevcSpsSpec(bit_depth_luma_minus8=2, bit_depth_chroma_minus8=2)),
    ("default scaling lists", HevcSpsSpec(scaling=())),
    ("explicit scaling lists", HevcSpsSpec(scaling=(
        ("coefs", 0, 3), ("pred", 0, 0), ("pred", 1, 0), ("coefs", 0, -2), ("pred", 4, 0),
        ("pred", 5, 0),
        ("coefs", 0, 1), ("coefs", 0, -1), ("pred", 1, 0), ("pred", 3, 0), ("coefs", 0, 0),
        ("pred", 0, 0),
        ("coefs", 8, 1), ("pred", 1, 0), ("coefs", -7, 2), ("pred", 2, 0), ("coefs", 247, 0),
        ("pred", 5, 0),
        ("coefs", 16, 1), ("pred", 1, 0)))),
    ("PCM", HevcSpsSpec(pcm=(7, 7, 0, 2))),
    ("explicit RPSs", HevcSpsSpec(rps=(
        ExplicitRps(((0, True), (1, True), (3, False))), ExplicitRps((), ((0, True),)),
        ExplicitRps(((0, True),), ((1, False), (0, True)))))),
    ("predicted RPSs", HevcSpsSpec(rps=(
        ExplicitRps(((0, True), (0, True)), ((0, True),)),                # -1 -2 | 1
        PredictedRps(0, 0, ((True, True), (False, True), (True, True), (True, True))),
        #  d=+1: -1+1=0 dropped, -2+1=-1, 1+1=2, 0+1=1 -> -1 | 1 2
        PredictedRps(1, 1, ((True, True), (False, False), (True, True), (True, True))),
        #  d=-2: -1-2=-3, (1 skipped), 2-2=0 dropped, 0-2=-2 -> -2 -3 | (none)
        PredictedRps(0, 3, ((False, True), (True, True), (True, True))),
        #  d=+4: -2+4=2, -3+4=1, 0+4=4 -> | 1 2 4
    ))),
    ("long-term pictures", HevcSpsSpec(long_term=((0, True), (255, False), (17, True)))),
    ("every VUI field", HevcSpsSpec(vui=HevcVui(
        aspect_ratio=(255, 64, 45), overscan=True, video_signal=(5, True, (9, 16, 9)),
        chroma_loc=(1, 2), flags3=(True, False, True), default_display_window=(1, 2, 3, 4),
        timing=(1001, 60000), poc_proportional=0))),
    ("SAR index, no timing", HevcSpsSpec(vui=HevcVui(aspect_ratio=(1, 0, 0), timing=None))),
    ("no VUI", HevcSpsSpec(vui=None)),
    ("zero timing", HevcSpsSpec(vui=HevcVui(timing=(0, 30)))),
]


@pytest.mark.parametrize("spec", [c[1] for c in SPS_CASES], ids=[c[0] for c in SPS_CASES])
def test_sps(spec: HevcSpsSpec) -> None:
    sps = parse_hevc_sps(write_hevc_sps(spec))
    assert (sps.width, sps.height) == spec.expected_size()
    assert sps.frame_rate == spec.expected_rate()
    assert sps.profile == spec.profile
    assert (sps.chroma_format_idc, sps.bit_depth_luma, sps.bit_depth_chroma) == (
        spec.chroma_format_idc, 8 + spec.bit_depth_luma_minus8, 8 + spec.bit_depth_chroma_minus8)


def test_predicted_rps_worked_example() -> None:
    # The comments in SPS_CASES, checked against the test's own restatement.
    (spec,) = [case[1] for case in SPS_CASES if case[0] == "predicted RPSs"]
    assert rps_pocs(spec.rps) == [([-1, -2], [1]), ([-1], [1, 2]), ([-2, -3], []),
                                  ([], [1, 2, 4])]


# -- bad SPSs and records --

BAD_SPS = [
    (HevcSpsSpec(sps_id=16), r"sps_seq_parameter_set_id = 16 is out of range 0\.\.15"),
    (HevcSpsSpec(chroma_format_idc=4), r"chroma_format_idc = 4 is out of range 0\.\.3"),
    (HevcSpsSpec(width=0), "picture size 0x720 is empty"),
    (HevcSpsSpec(width=16392), "picture size 16392x720 is over the 16384 limit"),
    (HevcSpsSpec(width=16392, conformance_window=(4, 0, 0, 0)), None),  # 16384 is allowed
    (HevcSpsSpec(width=64, conformance_window=(16, 16, 0, 0)),
     r"conformance window \(left 16, right 16, top 0, bottom 0\) leaves nothing of the "
     r"64x720 picture"),
    (HevcSpsSpec(bit_depth_luma_minus8=9), "bit_depth_luma_minus8 = 9"),
    (HevcSpsSpec(log2_max_poc_lsb_minus4=13), "log2_max_pic_order_cnt_lsb_minus4 = 13"),
    (HevcSpsSpec(block_sizes=(4, 3, 0, 3, 1, 1)), "log2_min_luma_coding_block_size_minus3 = 4"),
    (HevcSpsSpec(scaling=(("pred", 1, 0),) + (("pred", 0, 0),) * 19),
     r"scaling_list_pred_matrix_id_delta = 1 is out of range 0\.\.0"),
    (HevcSpsSpec(scaling=(("coefs", 0, 128),) + (("pred", 0, 0),) * 19),
     "scaling_list_delta_coef = 128"),
    (HevcSpsSpec(scaling=(("pred", 0, 0),) * 12 + (("coefs", 248, 0),) + (("pred", 0, 0),) * 7),
     "scaling_list_dc_coef_minus8 = 248"),
    (HevcSpsSpec(rps=(ExplicitRps(((0, True),) * 17),),), "num_negative_pics = 17"),
    (HevcSpsSpec(rps=(ExplicitRps(((0, True),) * 10, ((0, True),) * 7),),),
     r"num_positive_pics = 7 is out of range 0\.\.6"),
    (HevcSpsSpec(rps=(ExplicitRps(((0, True),) * 8, ((0, True),) * 8),
                      PredictedRps(1, 19, ((True, True),) * 17))),
     "short-term RPS #1 has 17 pictures, more than 16"),
    (HevcSpsSpec(rps=(ExplicitRps(),) * 65), "num_short_term_ref_pic_sets = 65"),
    (HevcSpsSpec(long_term=((0, True),) * 33), "num_long_term_ref_pics_sps = 33"),
]


@pytest.mark.parametrize(("spec", "message"), BAD_SPS)
def test_out_of_range_values(spec: HevcSpsSpec, message: str | None) -> None:
    if message is None:
        assert parse_hevc_sps(write_hevc_sps(spec)).width == 16384
        return
    with pytest.raises(MediaFormatError, match=message):
        parse_hevc_sps(write_hevc_sps(spec))


def test_max_sub_layers_7_is_reserved() -> None:
    nal = bytearray(write_hevc_sps(HevcSpsSpec()))
    nal[2] |= 0x0E  # sps_max_sub_layers_minus1, after the 4-bit VPS id
    with pytest.raises(MediaFormatError, match="sps_max_sub_layers_minus1 = 7"):
        parse_hevc_sps(bytes(nal))


@pytest.mark.parametrize(("nal", "message"), [
    (b"\x42", "1 bytes, shorter than its NAL header"),
    (b"\xc2\x01\x01", "forbidden_zero_bit is set"),
    (b"\x40\x01\x01", "nal_unit_type 32, expected 33"),
    (b"\x42\x01\x01\x01\x60", r"H\.265 SPS is truncated"),
])
def test_bad_sps_nal(nal: bytes, message: str) -> None:
    with pytest.raises(MediaFormatError, match=message):
        parse_hevc_sps(nal)


def test_every_truncation_fails_cleanly_or_parses_the_same() -> None:
    (spec,) = [case[1] for case in SPS_CASES if case[0] == "predicted RPSs"]
    nal = write_hevc_sps(spec)
    full = parse_hevc_sps(nal)
    same = []
    for end in range(len(nal)):
        try:
            same.append(parse_hevc_sps(nal[:end]) == full)
        except MediaFormatError:
            same.append(False)
    # After the timing info come 3 flags and the trailing bits: at most the last byte.
    assert same[: len(nal) - 2] == [False] * (len(nal) - 2)


def test_hvcc_reserved_bits_are_not_checked() -> None:
    record = bytearray(hvcc(HevcSpsSpec()))
    for index in (13, 15, 16, 17, 18):
        record[index] &= 0x0F if index == 13 else 0x03 if index < 17 else 0x07
    assert hevc_video_config(bytes(record)).width == 1280


@pytest.mark.parametrize(("record", "message"), [
    (b"", "hvcC is 0 bytes, shorter than the 23-byte header"),
    (hvcc(HevcSpsSpec(), version=0), "configurationVersion is 0, expected 1"),
    (hvcc(HevcSpsSpec(), length_size=3), "lengthSizeMinusOne is 2"),
    (hvcc(HevcSpsSpec(), arrays=4), "truncated at the header of NAL array #3"),
    (hvcc(HevcSpsSpec(), sps=[]), "hvcC carries no SPS"),
    (hvcc(HevcSpsSpec(), sps=[b"\x42"]), r"NAL #0 of array #1 is 1 bytes"),
    (hvcc(HevcSpsSpec())[:-3], r"NAL #0 of array #2 \(type 34\) is truncated: 7 bytes "
                               r"announced, 4 present"),
    (hvcc(HevcSpsSpec(), extra_arrays=b"\x27\x00\x02\x00\x02\x4e\x01"),
     "truncated at the length of NAL #1 of array #3"),
])
def test_bad_hvcc(record: bytes, message: str) -> None:
    with pytest.raises(MediaFormatError, match=message):
        parse_hvcc(record)


def test_hvcc_with_a_truncated_sps() -> None:
    sps = write_hevc_sps(HevcSpsSpec())
    with pytest.raises(MediaFormatError, match=r"H\.265 SPS is truncated"):
        hevc_video_config(hvcc(HevcSpsSpec(), [sps[:20]]))


# -- random SPSs --

@st.composite
def rps_lists(draw: st.DrawFn) -> tuple[Rps, ...]:
    sets: list[Rps] = []
    for index in range(draw(st.integers(0, 12))):
        if index and draw(st.booleans()):
            s0, s1 = rps_pocs((*sets,))[-1]
            flags = tuple(draw(st.lists(st.tuples(st.booleans(), st.booleans()),
                                        min_size=len(s0) + len(s1) + 1,
                                        max_size=len(s0) + len(s1) + 1)))
            candidate = PredictedRps(draw(st.integers(0, 1)), draw(st.integers(0, 40)), flags)
            new_s0, new_s1 = rps_pocs((*sets, candidate))[-1]
            if len(new_s0) + len(new_s1) > 12:
                flags = ((False, False),) * (len(flags) - 1) + ((True, True),)
                candidate = replace(candidate, flags=flags)
            sets.append(candidate)
        else:
            pics = st.tuples(st.integers(0, 30), st.booleans())
            negative = draw(st.lists(pics, max_size=6))
            positive = draw(st.lists(pics, max_size=6))
            sets.append(ExplicitRps(tuple(negative), tuple(positive)))
    return tuple(sets)


@st.composite
def hevc_specs(draw: st.DrawFn) -> HevcSpsSpec:
    chroma = draw(st.integers(0, 3))
    separate = chroma == 3 and draw(st.booleans())
    sub_w, sub_h = (1, 1) if separate or chroma in (0, 3) else (2, 2 if chroma == 1 else 1)
    width = draw(st.integers(1, 16384 // sub_w)) * sub_w
    height = draw(st.integers(1, 16384 // sub_h)) * sub_h
    crop_x = draw(st.integers(0, width // sub_w - 1))
    crop_y = draw(st.integers(0, height // sub_h - 1))
    left = draw(st.integers(0, crop_x))
    top = draw(st.integers(0, crop_y))
    max_sub = draw(st.integers(0, 6))
    return HevcSpsSpec(
        profile=ProfileTierLevel(
            draw(st.integers(0, 3)), draw(st.booleans()), draw(st.integers(0, 31)),
            draw(st.integers(0, 2**32 - 1)), draw(st.binary(min_size=6, max_size=6)),
            draw(st.integers(0, 255))),
        max_sub_layers_minus1=max_sub,
        sub_layers=tuple(draw(st.lists(st.tuples(st.booleans(), st.booleans()),
                                       min_size=max_sub, max_size=max_sub))),
        sps_id=draw(st.integers(0, 15)), chroma_format_idc=chroma,
        separate_colour_plane=separate, width=width, height=height,
        conformance_window=draw(st.none() | st.just((left, crop_x - left, top, crop_y - top))),
        bit_depth_luma_minus8=draw(st.integers(0, 8)),
        bit_depth_chroma_minus8=draw(st.integers(0, 8)),
        log2_max_poc_lsb_minus4=draw(st.integers(0, 12)),
        ordering_info_present=draw(st.booleans()),
        scaling=draw(st.none() | st.just(()) | st.lists(
            st.tuples(st.just("coefs"), st.integers(-7, 247), st.integers(-128, 127)),
            min_size=20, max_size=20).map(tuple)),
        pcm=draw(st.none() | st.tuples(st.integers(0, 15), st.integers(0, 15),
                                       st.integers(0, 2), st.integers(0, 2))),
        rps=draw(rps_lists()),
        long_term=draw(st.none() | st.lists(st.tuples(st.integers(0, 15), st.booleans()),
                                            max_size=32).map(tuple)),
        vui=draw(st.none() | st.builds(
            HevcVui,
            aspect_ratio=st.none() | st.tuples(st.sampled_from([1, 255]),
                                               st.integers(0, 65535), st.integers(0, 65535)),
            overscan=st.none() | st.booleans(),
            video_signal=st.none() | st.tuples(
                st.integers(0, 7), st.booleans(),
                st.none() | st.tuples(*[st.integers(0, 255)] * 3)),
            chroma_loc=st.none() | st.tuples(st.integers(0, 5), st.integers(0, 5)),
            flags3=st.tuples(st.booleans(), st.booleans(), st.booleans()),
            default_display_window=st.none() | st.tuples(*[st.integers(0, 100)] * 4),
            timing=st.none() | st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1)),
            poc_proportional=st.none() | st.integers(0, 1000))),
    )


@given(hevc_specs())
def test_written_sps_round_trips(spec: HevcSpsSpec) -> None:
    sps = parse_hevc_sps(write_hevc_sps(spec))
    assert (sps.width, sps.height) == spec.expected_size()
    assert sps.frame_rate == spec.expected_rate()
    assert sps.profile == spec.profile
    assert sps.seq_parameter_set_id == spec.sps_id


# -- ffmpeg's parser as a second reader --

CROSS_CHECK = [case[1] for case in SPS_CASES if case[0] not in ("zero timing",)] + [
    HevcSpsSpec(
        rps=(ExplicitRps(((0, True), (1, True), (1, False)), ((0, True), (2, True))),
             PredictedRps(1, 0, ((True, True), (False, True), (False, False), (True, True),
                                 (True, False), (True, True))),
             PredictedRps(0, 2, ((False, True),) * 5),
             ExplicitRps(((3, True),)),
             PredictedRps(0, 3, ((True, True), (True, True)))),
        long_term=((5, True),), scaling=(), pcm=(7, 7, 0, 2),
        vui=HevcVui(timing=(1001, 24000), default_display_window=(0, 0, 2, 2))),
]


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg not on PATH")
@pytest.mark.parametrize("spec", CROSS_CHECK)
def test_ffmpeg_reads_the_same_fields(spec: HevcSpsSpec, tmp_path: Path) -> None:
    nal = write_hevc_sps(spec)
    stream = b"".join(b"\x00\x00\x00\x01" + unit for unit in (write_vps(spec), nal))
    (fields,) = ffmpeg_trace(stream, "hevc", tmp_path)
    assert fields["pic_width_in_luma_samples"] == spec.width
    assert fields["pic_height_in_luma_samples"] == spec.height
    assert fields["num_short_term_ref_pic_sets"] == len(spec.rps)
    window = tuple(fields.get(f"conf_win_{side}_offset", 0)
                   for side in ("left", "right", "top", "bottom"))
    assert window == (spec.conformance_window or (0, 0, 0, 0))
    sps = parse_hevc_sps(nal)
    assert (sps.width, sps.height) == spec.expected_size()
    if sps.frame_rate is None:
        assert "vui_time_scale" not in fields
    else:
        assert fields["vui_time_scale"] / fields["vui_num_units_in_tick"] == sps.frame_rate
