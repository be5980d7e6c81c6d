"""H.265 decoder configuration: the hvcC record (ISO 14496-15 8.3.3.1) and its SPS.

The SPS is read up to the VUI timing info, which sits after the short-term reference picture
sets, so those are walked in full (H.265 7.3.7, with the inter-RPS derivation of 7.4.8 to know
how many entries each set has).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from relay.media.bitreader import BitReader, nal_to_rbsp
from relay.media.units import MAX_DIMENSION, Codec, MediaFormatError, VideoConfig

NAL_TYPE_VPS = 32
NAL_TYPE_SPS = 33
NAL_TYPE_PPS = 34

#: hvcC: each array's numNalus and each nalUnitLength are 16 bits (ISO 14496-15 8.3.3.1.1).
MAX_HVCC_NALS_PER_ARRAY = 0xFFFF
MAX_HVCC_NAL_SIZE = 0xFFFF

#: hvcC fixed part: 22 bytes of profile/format fields and numOfArrays.
_HVCC_HEADER_SIZE = 23

#: H.265 Table 6-1: (SubWidthC, SubHeightC) by chroma_format_idc.
_CHROMA_SUBSAMPLING = {0: (1, 1), 1: (2, 2), 2: (2, 1), 3: (1, 1)}

#: A.4.2: MaxDpbSize is at most 16, so no reference picture set lists more than 16 pictures.
_MAX_DPB_SIZE = 16

_EXTENDED_SAR = 255

#: ISO 14496-15 E.3: general_profile_space 0..3 is written as nothing, "A", "B", "C".
_PROFILE_SPACE_PREFIX = ("", "A", "B", "C")


@dataclass(frozen=True, slots=True)
class ProfileTierLevel:
    """The general part of H.265 7.3.3 profile_tier_level()."""

    profile_space: int
    tier_flag: bool
    profile_idc: int
    #: general_profile_compatibility_flag[0..31], flag 0 in the most significant bit.
    compatibility_flags: int
    #: 48 bits from general_progressive_source_flag on, as 6 bytes.
    constraint_flags: bytes
    level_idc: int


@dataclass(frozen=True, slots=True)
class HevcSps:
    """The fields of an H.265 sequence parameter set that Relay uses."""

    profile: ProfileTierLevel
    seq_parameter_set_id: int
    chroma_format_idc: int
    bit_depth_luma: int
    bit_depth_chroma: int
    #: Display size: pic_width/height_in_luma_samples minus the conformance window.
    width: int
    height: int
    #: vui_time_scale / vui_num_units_in_tick (E.3.1: a tick is one picture), None without.
    frame_rate: float | None


@dataclass(frozen=True, slots=True)
class HevcDecoderConfigurationRecord:
    """ISO 14496-15 8.3.3.1.2 (hvcC), parameter sets kept as NAL units with their headers."""

    profile: ProfileTierLevel
    chroma_format_idc: int
    bit_depth_luma: int
    bit_depth_chroma: int
    #: Bytes in each NAL unit's length prefix in the samples: 1, 2 or 4.
    nal_length_size: int
    vps: tuple[bytes, ...]
    sps: tuple[bytes, ...]
    pps: tuple[bytes, ...]


def parse_hvcc(record: bytes) -> HevcDecoderConfigurationRecord:
    """Parse an hvcC record; arrays of other NAL types (SEI) are skipped."""
    size = len(record)
    if size < _HVCC_HEADER_SIZE:
        raise MediaFormatError(
            f"hvcC is {size} bytes, shorter than the {_HVCC_HEADER_SIZE}-byte header"
        )
    if record[0] != 1:
        raise MediaFormatError(f"hvcC configurationVersion is {record[0]}, expected 1")
    length_size = (record[21] & 0x03) + 1
    if length_size == 3:
        raise MediaFormatError("hvcC lengthSizeMinusOne is 2 (3-byte NAL lengths are not allowed)")
    arrays: dict[int, list[bytes]] = {NAL_TYPE_VPS: [], NAL_TYPE_SPS: [], NAL_TYPE_PPS: []}
    pos = _HVCC_HEADER_SIZE
    for array in range(record[22]):  # numOfArrays
        if pos + 3 > size:
            raise MediaFormatError(f"hvcC is truncated at the header of NAL array #{array}")
        nal_type = record[pos] & 0x3F
        count = int.from_bytes(record[pos + 1 : pos + 3], "big")
        pos += 3
        for index in range(count):
            if pos + 2 > size:
                raise MediaFormatError(
                    f"hvcC is truncated at the length of NAL #{index} of array #{array}"
                )
            length = int.from_bytes(record[pos : pos + 2], "big")
            pos += 2
            if pos + length > size:
                raise MediaFormatError(
                    f"hvcC NAL #{index} of array #{array} (type {nal_type}) is truncated: "
                    f"{length} bytes announced, {size - pos} present"
                )
            if length < 2:
                raise MediaFormatError(
                    f"hvcC NAL #{index} of array #{array} is {length} bytes, shorter than a "
                    "NAL unit header"
                )
            if nal_type in arrays:
                arrays[nal_type].append(record[pos : pos + length])
            pos += length
    if not arrays[NAL_TYPE_SPS]:
        raise MediaFormatError("hvcC carries no SPS")
    return HevcDecoderConfigurationRecord(
        profile=_read_profile_tier_level(BitReader(record[1:13], "hvcC")),
        chroma_format_idc=record[16] & 0x03,
        bit_depth_luma=8 + (record[17] & 0x07),
        bit_depth_chroma=8 + (record[18] & 0x07),
        nal_length_size=length_size,
        vps=tuple(arrays[NAL_TYPE_VPS]),
        sps=tuple(arrays[NAL_TYPE_SPS]),
        pps=tuple(arrays[NAL_TYPE_PPS]),
    )


def build_hvcc(vps: Sequence[bytes], sps: Sequence[bytes], pps: Sequence[bytes]) -> bytes:
    """An hvcC record (ISO 14496-15 8.3.3.1) for parameter sets taken from the stream.

    The NAL units keep their two-byte headers and emulation prevention bytes. The fields are
    filled the way ffmpeg's hvcC writer fills them, from the first base-layer SPS: its
    profile_tier_level (the VPS's is the same in every stream seen; ffmpeg merges the two),
    chroma format and bit depths, and numTemporalLayers as the larger of the VPS's and that
    SPS's max_sub_layers. min_spatial_segmentation_idc and parallelismType are written 0
    ("unknown", always allowed): finding them would mean walking the VUI's HRD parameters and
    the PPS, for a hint no player Relay serves reads. avgFrameRate and constantFrameRate are 0
    (unspecified), as ffmpeg writes them; NAL lengths are 4 bytes. Each parameter set array has
    array_completeness 1: Relay keeps parameter sets out of the samples (see
    relay/media/ts_units.py), which is what an `hvc1` sample entry requires (8.4.1.1.2).
    Raises `MediaFormatError` when that SPS does not parse or a count or size does not fit.
    """
    base_layer = [nal for nal in sps if len(nal) >= 2 and _nuh_layer_id(nal) == 0]
    if not base_layer:
        raise MediaFormatError("hvcC needs an SPS for the base layer (nuh_layer_id 0)")
    first = parse_hevc_sps(base_layer[0])
    # 7.3.2.2.1: sps_video_parameter_set_id (4), sps_max_sub_layers_minus1 (3),
    # sps_temporal_id_nesting_flag (1) fill the byte after the NAL header; no emulation
    # prevention byte can precede it.
    sub_layers = ((base_layer[0][2] >> 1) & 0x07) + 1
    temporal_id_nested = base_layer[0][2] & 0x01
    for nal in vps:
        # 7.3.2.1: vps_video_parameter_set_id (4), base layer flags (2), max_layers (6), then
        # vps_max_sub_layers_minus1 (3): bits 4..2 of the NAL's fourth byte.
        if len(nal) >= 4:
            sub_layers = max(sub_layers, ((nal[3] >> 1) & 0x07) + 1)
    ptl = first.profile
    out = bytearray((1, ptl.profile_space << 6 | ptl.tier_flag << 5 | ptl.profile_idc))
    out += ptl.compatibility_flags.to_bytes(4, "big")
    out += ptl.constraint_flags
    out += bytes((
        ptl.level_idc,
        0xF0, 0x00,  # reserved, min_spatial_segmentation_idc = 0
        0xFC,  # reserved, parallelismType = 0
        0xFC | first.chroma_format_idc,
        0xF8 | (first.bit_depth_luma - 8),
        0xF8 | (first.bit_depth_chroma - 8),
        0, 0,  # avgFrameRate
        # constantFrameRate 0, numTemporalLayers, temporalIdNested, lengthSizeMinusOne 3
        min(sub_layers, 7) << 3 | temporal_id_nested << 2 | 3,
    ))
    arrays = [(NAL_TYPE_VPS, vps), (NAL_TYPE_SPS, sps), (NAL_TYPE_PPS, pps)]
    present = [(nal_type, nals) for nal_type, nals in arrays if nals]
    out.append(len(present))  # numOfArrays
    for nal_type, nals in present:
        if len(nals) > MAX_HVCC_NALS_PER_ARRAY:
            raise MediaFormatError(f"hvcC holds at most {MAX_HVCC_NALS_PER_ARRAY} NAL units "
                                   f"of type {nal_type}, got {len(nals)}")
        out.append(0x80 | nal_type)  # array_completeness 1, reserved 0
        out += len(nals).to_bytes(2, "big")
        for index, nal in enumerate(nals):
            if not 2 <= len(nal) <= MAX_HVCC_NAL_SIZE:
                raise MediaFormatError(f"NAL #{index} of type {nal_type} is {len(nal)} bytes; "
                                       f"an hvcC entry holds 2..{MAX_HVCC_NAL_SIZE}")
            out += len(nal).to_bytes(2, "big")
            out += nal
    return bytes(out)


def hevc_codecs(profile: ProfileTierLevel) -> str:
    """ISO 14496-15 E.3 codecs string, e.g. "hvc1.1.6.L93.B0" for Main, level 3.1.

    Profile space letter and profile_idc; the 32 compatibility flags in reverse bit order, in
    hex without leading zeros; L/H tier and level_idc; the six constraint bytes in hex, each
    after a dot, trailing zero bytes left out.
    """
    reversed_flags = int(f"{profile.compatibility_flags:032b}"[::-1], 2)
    parts = [
        "hvc1",
        f"{_PROFILE_SPACE_PREFIX[profile.profile_space]}{profile.profile_idc}",
        f"{reversed_flags:X}",
        f"{'H' if profile.tier_flag else 'L'}{profile.level_idc}",
    ]
    constraint = profile.constraint_flags.rstrip(b"\x00")
    parts.extend(f"{byte:X}" for byte in constraint)
    return ".".join(parts)


def hevc_video_config(record: bytes) -> VideoConfig:
    """Parse an hvcC and its first base-layer SPS into a `VideoConfig`."""
    hvcc = parse_hvcc(record)
    base_layer = [nal for nal in hvcc.sps if _nuh_layer_id(nal) == 0]
    if not base_layer:
        raise MediaFormatError("hvcC carries no SPS for the base layer (nuh_layer_id 0)")
    sps = parse_hevc_sps(base_layer[0])
    return VideoConfig(codec=Codec.HEVC, record=record, width=sps.width, height=sps.height,
                       codecs=hevc_codecs(sps.profile), frame_rate=sps.frame_rate)


def _nuh_layer_id(nal: bytes) -> int:
    return ((nal[0] & 0x01) << 5) | (nal[1] >> 3)


def parse_hevc_sps(nal: bytes) -> HevcSps:
    """Parse a base-layer SPS NAL unit (with its two-byte header), H.265 7.3.2.2.1."""
    if len(nal) < 2:
        raise MediaFormatError(f"H.265 SPS is {len(nal)} bytes, shorter than its NAL header")
    if nal[0] & 0x80:
        raise MediaFormatError("H.265 SPS: forbidden_zero_bit is set")
    nal_type = (nal[0] >> 1) & 0x3F
    if nal_type != NAL_TYPE_SPS:
        raise MediaFormatError(f"H.265 SPS has nal_unit_type {nal_type}, expected 33")
    if _nuh_layer_id(nal) != 0:
        raise MediaFormatError(f"H.265 SPS is for layer {_nuh_layer_id(nal)}, not the base layer")
    r = BitReader(nal_to_rbsp(nal[2:]), "H.265 SPS")
    r.skip(4)  # sps_video_parameter_set_id
    max_sub_layers_minus1 = r.u(3)
    if max_sub_layers_minus1 > 6:
        raise MediaFormatError("H.265 SPS: sps_max_sub_layers_minus1 = 7 is out of range 0..6")
    r.skip(1)  # sps_temporal_id_nesting_flag
    profile = _read_profile_tier_level(r)
    _skip_sub_layer_profile_tier_level(r, max_sub_layers_minus1)
    sps_id = r.ue_max(15, "sps_seq_parameter_set_id")
    chroma_format_idc = r.ue_max(3, "chroma_format_idc")
    separate_colour_plane = chroma_format_idc == 3 and r.flag()
    coded_width = r.ue()
    coded_height = r.ue()
    if coded_width == 0 or coded_height == 0:
        raise MediaFormatError(f"H.265 SPS: picture size {coded_width}x{coded_height} is empty")
    width, height = coded_width, coded_height
    if r.flag():  # conformance_window_flag
        left, right, top, bottom = r.ue(), r.ue(), r.ue(), r.ue()
        # 7.4.3.2.1: offsets are in chroma sample units (SubWidthC = SubHeightC = 1 when the
        # colour planes are coded separately).
        sub_width, sub_height = (1, 1) if separate_colour_plane else _CHROMA_SUBSAMPLING[
            chroma_format_idc]
        width = coded_width - sub_width * (left + right)
        height = coded_height - sub_height * (top + bottom)
        if width < 1 or height < 1:
            raise MediaFormatError(
                f"H.265 SPS: conformance window (left {left}, right {right}, top {top}, "
                f"bottom {bottom}) leaves nothing of the {coded_width}x{coded_height} picture"
            )
    if width > MAX_DIMENSION or height > MAX_DIMENSION:
        raise MediaFormatError(
            f"H.265 SPS: picture size {width}x{height} is over the {MAX_DIMENSION} limit"
        )
    bit_depth_luma = 8 + r.ue_max(8, "bit_depth_luma_minus8")
    bit_depth_chroma = 8 + r.ue_max(8, "bit_depth_chroma_minus8")
    log2_max_poc_lsb = 4 + r.ue_max(12, "log2_max_pic_order_cnt_lsb_minus4")
    ordering_info_present = r.flag()  # sps_sub_layer_ordering_info_present_flag
    for _ in range(0 if ordering_info_present else max_sub_layers_minus1,
                   max_sub_layers_minus1 + 1):
        r.ue_max(_MAX_DPB_SIZE - 1, "sps_max_dec_pic_buffering_minus1")
        r.ue_max(_MAX_DPB_SIZE - 1, "sps_max_num_reorder_pics")
        r.ue()  # sps_max_latency_increase_plus1
    r.ue_max(3, "log2_min_luma_coding_block_size_minus3")
    r.ue_max(3, "log2_diff_max_min_luma_coding_block_size")
    r.ue_max(3, "log2_min_luma_transform_block_size_minus2")
    r.ue_max(3, "log2_diff_max_min_luma_transform_block_size")
    r.ue_max(4, "max_transform_hierarchy_depth_inter")
    r.ue_max(4, "max_transform_hierarchy_depth_intra")
    if r.flag() and r.flag():  # scaling_list_enabled_flag, sps_scaling_list_data_present_flag
        _skip_scaling_list_data(r)
    r.skip(2)  # amp_enabled_flag, sample_adaptive_offset_enabled_flag
    if r.flag():  # pcm_enabled_flag
        r.skip(8)  # pcm_sample_bit_depth_luma_minus1, pcm_sample_bit_depth_chroma_minus1
        r.ue_max(2, "log2_min_pcm_luma_coding_block_size_minus3")
        r.ue_max(2, "log2_diff_max_min_pcm_luma_coding_block_size")
        r.skip(1)  # pcm_loop_filter_disabled_flag
    _skip_short_term_ref_pic_sets(r, r.ue_max(64, "num_short_term_ref_pic_sets"))
    if r.flag():  # long_term_ref_pics_present_flag
        for _ in range(r.ue_max(32, "num_long_term_ref_pics_sps")):
            r.skip(log2_max_poc_lsb + 1)  # lt_ref_pic_poc_lsb_sps, used_by_curr_pic_lt_sps_flag
    r.skip(2)  # sps_temporal_mvp_enabled_flag, strong_intra_smoothing_enabled_flag
    frame_rate = _vui_frame_rate(r) if r.flag() else None  # vui_parameters_present_flag
    return HevcSps(
        profile=profile,
        seq_parameter_set_id=sps_id,
        chroma_format_idc=chroma_format_idc,
        bit_depth_luma=bit_depth_luma,
        bit_depth_chroma=bit_depth_chroma,
        width=width,
        height=height,
        frame_rate=frame_rate,
    )


def _read_profile_tier_level(r: BitReader) -> ProfileTierLevel:
    """The general part of 7.3.3 profile_tier_level(1, ...): 96 bits, same layout in hvcC."""
    profile_space = r.u(2)
    tier_flag = r.flag()
    profile_idc = r.u(5)
    compatibility_flags = r.u(32)
    constraint_flags = r.u(48).to_bytes(6, "big")
    level_idc = r.u(8)
    return ProfileTierLevel(profile_space, tier_flag, profile_idc, compatibility_flags,
                            constraint_flags, level_idc)


def _skip_sub_layer_profile_tier_level(r: BitReader, max_sub_layers_minus1: int) -> None:
    """The rest of 7.3.3 after general_level_idc."""
    present = [(r.flag(), r.flag()) for _ in range(max_sub_layers_minus1)]
    if max_sub_layers_minus1 > 0:
        r.skip(2 * (8 - max_sub_layers_minus1))  # reserved_zero_2bits
    for profile_present, level_present in present:
        if profile_present:
            r.skip(88)  # sub_layer profile space .. constraint flags
        if level_present:
            r.skip(8)  # sub_layer_level_idc


def _skip_scaling_list_data(r: BitReader) -> None:
    """H.265 7.3.4 scaling_list_data()."""
    for size_id in range(4):
        step = 3 if size_id == 3 else 1
        for matrix_id in range(0, 6, step):
            if not r.flag():  # scaling_list_pred_mode_flag
                r.ue_max(matrix_id // step, "scaling_list_pred_matrix_id_delta")
                continue
            if size_id > 1:
                r.se_range(-7, 247, "scaling_list_dc_coef_minus8")
            for _ in range(min(64, 1 << (4 + (size_id << 1)))):
                r.se_range(-128, 127, "scaling_list_delta_coef")


def _skip_short_term_ref_pic_sets(r: BitReader, count: int) -> None:
    """H.265 7.3.7 st_ref_pic_set(i) for i in 0..count-1, as they appear in an SPS.

    A set predicted from the previous one (inter_ref_pic_set_prediction_flag) has one flag
    pair per picture of that set plus one, and its own size follows from 7.4.8 equations
    7-61 and 7-62, so the delta POCs of every set are tracked.
    """
    # Delta POCs (negative list S0, positive list S1) of each set read so far.
    sets: list[tuple[list[int], list[int]]] = []
    for index in range(count):
        if index > 0 and r.flag():  # inter_ref_pic_set_prediction_flag
            # In an SPS, delta_idx_minus1 is absent and inferred 0: predict from index - 1.
            ref_s0, ref_s1 = sets[index - 1]
            sign = r.u(1)
            delta_rps = (1 - 2 * sign) * (r.ue_max(2**15 - 1, "abs_delta_rps_minus1") + 1)
            ref_count = len(ref_s0) + len(ref_s1)
            use_delta = []
            for _ in range(ref_count + 1):
                used_by_curr_pic = r.flag()
                use_delta.append(used_by_curr_pic or r.flag())  # use_delta_flag, inferred 1
            s0: list[int] = []
            s1: list[int] = []
            # 7-61: the new negative list.
            for j in range(len(ref_s1) - 1, -1, -1):
                d_poc = ref_s1[j] + delta_rps
                if d_poc < 0 and use_delta[len(ref_s0) + j]:
                    s0.append(d_poc)
            if delta_rps < 0 and use_delta[ref_count]:
                s0.append(delta_rps)
            for j in range(len(ref_s0)):
                d_poc = ref_s0[j] + delta_rps
                if d_poc < 0 and use_delta[j]:
                    s0.append(d_poc)
            # 7-62: the new positive list.
            for j in range(len(ref_s0) - 1, -1, -1):
                d_poc = ref_s0[j] + delta_rps
                if d_poc > 0 and use_delta[j]:
                    s1.append(d_poc)
            if delta_rps > 0 and use_delta[ref_count]:
                s1.append(delta_rps)
            for j in range(len(ref_s1)):
                d_poc = ref_s1[j] + delta_rps
                if d_poc > 0 and use_delta[len(ref_s0) + j]:
                    s1.append(d_poc)
            if len(s0) + len(s1) > _MAX_DPB_SIZE:
                raise MediaFormatError(
                    f"H.265 SPS: short-term RPS #{index} has {len(s0) + len(s1)} pictures, "
                    f"more than {_MAX_DPB_SIZE}"
                )
        else:
            num_negative = r.ue_max(_MAX_DPB_SIZE, "num_negative_pics")
            num_positive = r.ue_max(_MAX_DPB_SIZE - num_negative, "num_positive_pics")
            s0, s1 = [], []
            poc = 0
            for _ in range(num_negative):
                poc -= r.ue_max(2**15 - 1, "delta_poc_s0_minus1") + 1
                r.skip(1)  # used_by_curr_pic_s0_flag
                s0.append(poc)
            poc = 0
            for _ in range(num_positive):
                poc += r.ue_max(2**15 - 1, "delta_poc_s1_minus1") + 1
                r.skip(1)  # used_by_curr_pic_s1_flag
                s1.append(poc)
        sets.append((s0, s1))


def _vui_frame_rate(r: BitReader) -> float | None:
    """Read H.265 E.2.1 vui_parameters() up to the timing info."""
    if r.flag() and r.u(8) == _EXTENDED_SAR:  # aspect_ratio_info_present_flag, _idc
        r.skip(32)  # sar_width, sar_height
    if r.flag():  # overscan_info_present_flag
        r.skip(1)  # overscan_appropriate_flag
    if r.flag():  # video_signal_type_present_flag
        r.skip(4)  # video_format, video_full_range_flag
        if r.flag():  # colour_description_present_flag
            r.skip(24)
    if r.flag():  # chroma_loc_info_present_flag
        r.ue_max(5, "chroma_sample_loc_type_top_field")
        r.ue_max(5, "chroma_sample_loc_type_bottom_field")
    r.skip(3)  # neutral_chroma_indication_flag, field_seq_flag, frame_field_info_present_flag
    if r.flag():  # default_display_window_flag
        for _ in range(4):
            r.ue()  # def_disp_win_{left,right,top,bottom}_offset
    if not r.flag():  # vui_timing_info_present_flag
        return None
    num_units_in_tick = r.u(32)
    time_scale = r.u(32)
    if num_units_in_tick == 0 or time_scale == 0:
        return None
    return time_scale / num_units_in_tick
