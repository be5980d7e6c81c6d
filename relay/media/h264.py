"""H.264 decoder configuration: the avcC record (ISO 14496-15 5.3.3.1) and the SPS it carries.

Only what a packager and a playlist need is kept: display size (after cropping), the frame rate
from VUI timing, and the RFC 6381 codecs string. The SPS is read up to the VUI timing info and
no further.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from relay.media.bitreader import BitReader, nal_to_rbsp
from relay.media.units import MAX_DIMENSION, Codec, MediaFormatError, VideoConfig

NAL_TYPE_IDR = 5
NAL_TYPE_SPS = 7
NAL_TYPE_PPS = 8

#: avcC counts: numOfSequenceParameterSets is 5 bits, numOfPictureParameterSets 8 bits, and
#: every parameter set length is 16 bits (ISO 14496-15 5.3.3.1.1).
MAX_AVCC_SPS = 31
MAX_AVCC_PPS = 255
MAX_AVCC_NAL_SIZE = 0xFFFF

#: 14496-15 5.3.3.1.1: the chroma format and bit depth fields follow the PPS array for every
#: profile but Baseline (66), Main (77) and Extended (88); ffmpeg writes them the same way.
_PROFILES_WITHOUT_AVCC_EXTENSION = frozenset({66, 77, 88})

#: H.264 7.3.2.1.1: the profiles whose SPS carries chroma_format_idc, bit depths and the
#: sequence scaling matrix.
_PROFILES_WITH_CHROMA_INFO = frozenset({100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139,
                                        134, 135})

#: H.264 Table 6-1: (SubWidthC, SubHeightC) by chroma_format_idc (1 = 4:2:0, 2 = 4:2:2,
#: 3 = 4:4:4); monochrome and separate colour planes crop in luma samples.
_CHROMA_SUBSAMPLING = {1: (2, 2), 2: (2, 1), 3: (1, 1)}

#: H.264 E.2.1: aspect_ratio_idc value announcing explicit sar_width / sar_height.
_EXTENDED_SAR = 255


@dataclass(frozen=True, slots=True)
class AvcSps:
    """The fields of an H.264 sequence parameter set that Relay uses."""

    profile_idc: int
    #: The byte of constraint_set0..5 flags and reserved_zero_2bits.
    constraint_flags: int
    level_idc: int
    seq_parameter_set_id: int
    chroma_format_idc: int
    bit_depth_luma: int
    bit_depth_chroma: int
    frame_mbs_only: bool
    #: Display size: coded size minus the frame cropping rectangle.
    width: int
    height: int
    #: time_scale / (2 * num_units_in_tick) (E.2.1: a tick is one field), None without timing.
    frame_rate: float | None


@dataclass(frozen=True, slots=True)
class AvcDecoderConfigurationRecord:
    """ISO 14496-15 5.3.3.1.2 (avcC), parameter sets kept as NAL units with their headers."""

    profile_indication: int
    profile_compatibility: int
    level_indication: int
    #: Bytes in each NAL unit's length prefix in the samples: 1, 2 or 4.
    nal_length_size: int
    sps: tuple[bytes, ...]
    pps: tuple[bytes, ...]


def parse_avcc(record: bytes) -> AvcDecoderConfigurationRecord:
    """Parse an avcC record; the optional high-profile extension after the PPSs is ignored."""
    size = len(record)
    if size < 7:
        raise MediaFormatError(f"avcC is {size} bytes, shorter than the 7-byte minimum")
    if record[0] != 1:
        raise MediaFormatError(f"avcC configurationVersion is {record[0]}, expected 1")
    length_size = (record[4] & 0x03) + 1
    if length_size == 3:
        # 5.3.3.1.2: lengthSizeMinusOne "shall be one of 0, 1, or 3".
        raise MediaFormatError("avcC lengthSizeMinusOne is 2 (3-byte NAL lengths are not allowed)")
    sps, pos = _parameter_sets(record, 5, record[5] & 0x1F, "SPS")
    if not sps:
        raise MediaFormatError("avcC carries no SPS")
    if pos >= size:
        raise MediaFormatError("avcC is truncated before numOfPictureParameterSets")
    pps, _ = _parameter_sets(record, pos, record[pos], "PPS")
    return AvcDecoderConfigurationRecord(
        profile_indication=record[1],
        profile_compatibility=record[2],
        level_indication=record[3],
        nal_length_size=length_size,
        sps=tuple(sps),
        pps=tuple(pps),
    )


def build_avcc(sps: Sequence[bytes], pps: Sequence[bytes]) -> bytes:
    """An avcC record (ISO 14496-15 5.3.3.1) for parameter sets taken from the stream.

    `sps` and `pps` are NAL units with their header byte and emulation prevention bytes, as
    they appear in the byte stream. The profile, compatibility and level bytes are the first
    SPS's (5.3.3.1.2: they "shall" match the SPSs), NAL lengths are 4 bytes (the form
    `relay._native.elementary` writes), and the high-profile extension carries the first SPS's
    chroma format and bit depths with no SPS extensions. Raises `MediaFormatError` when the
    first SPS does not parse or a count or size does not fit the record's fields.
    """
    if not 1 <= len(sps) <= MAX_AVCC_SPS:
        raise MediaFormatError(f"avcC needs 1..{MAX_AVCC_SPS} SPS, got {len(sps)}")
    if len(pps) > MAX_AVCC_PPS:
        raise MediaFormatError(f"avcC holds at most {MAX_AVCC_PPS} PPS, got {len(pps)}")
    first = parse_avc_sps(sps[0])
    out = bytearray((1, first.profile_idc, first.constraint_flags, first.level_idc,
                     0xFC | 3, 0xE0 | len(sps)))  # reserved bits, lengthSizeMinusOne = 3
    _put_parameter_sets(out, sps, "SPS")
    out.append(len(pps))
    _put_parameter_sets(out, pps, "PPS")
    if first.profile_idc not in _PROFILES_WITHOUT_AVCC_EXTENSION:
        out += bytes((0xFC | first.chroma_format_idc, 0xF8 | (first.bit_depth_luma - 8),
                      0xF8 | (first.bit_depth_chroma - 8), 0))  # numOfSequenceParameterSetExt
    return bytes(out)


def _put_parameter_sets(out: bytearray, nal_units: Sequence[bytes], name: str) -> None:
    for index, nal in enumerate(nal_units):
        if not 0 < len(nal) <= MAX_AVCC_NAL_SIZE:
            raise MediaFormatError(f"{name} #{index} is {len(nal)} bytes; an avcC entry holds "
                                   f"1..{MAX_AVCC_NAL_SIZE}")
        out += len(nal).to_bytes(2, "big")
        out += nal


def _parameter_sets(record: bytes, pos: int, count: int, name: str) -> tuple[list[bytes], int]:
    """Read `count` (UI16 length, NAL unit) pairs that start after the count byte at `pos`."""
    pos += 1
    out = []
    for index in range(count):
        if pos + 2 > len(record):
            raise MediaFormatError(f"avcC is truncated at the length of {name} #{index}")
        length = int.from_bytes(record[pos : pos + 2], "big")
        pos += 2
        if pos + length > len(record):
            raise MediaFormatError(
                f"avcC {name} #{index} is truncated: {length} bytes announced, "
                f"{len(record) - pos} present"
            )
        if length == 0:
            raise MediaFormatError(f"avcC {name} #{index} is empty")
        out.append(record[pos : pos + length])
        pos += length
    return out, pos


def avc_codecs(sps: AvcSps) -> str:
    """RFC 6381 3.3: "avc1." + profile_idc, constraint flags byte, level_idc in hex."""
    return f"avc1.{sps.profile_idc:02x}{sps.constraint_flags:02x}{sps.level_idc:02x}"


def avc_video_config(record: bytes) -> VideoConfig:
    """Parse an avcC and its first SPS into a `VideoConfig`."""
    avcc = parse_avcc(record)
    sps = parse_avc_sps(avcc.sps[0])
    return VideoConfig(codec=Codec.H264, record=record, width=sps.width, height=sps.height,
                       codecs=avc_codecs(sps), frame_rate=sps.frame_rate)


def parse_avc_sps(nal: bytes) -> AvcSps:
    """Parse an SPS NAL unit (with its one-byte header), H.264 7.3.2.1.1."""
    if not nal:
        raise MediaFormatError("H.264 SPS is empty")
    header = nal[0]
    if header & 0x80:
        raise MediaFormatError("H.264 SPS: forbidden_zero_bit is set")
    if header & 0x1F != NAL_TYPE_SPS:
        raise MediaFormatError(f"H.264 SPS has nal_unit_type {header & 0x1F}, expected 7")
    r = BitReader(nal_to_rbsp(nal[1:]), "H.264 SPS")
    profile_idc = r.u(8)
    constraint_flags = r.u(8)
    level_idc = r.u(8)
    sps_id = r.ue_max(31, "seq_parameter_set_id")
    chroma_format_idc = 1  # 7.4.2.1.1: inferred 4:2:0 when absent
    separate_colour_plane = False
    bit_depth_luma = bit_depth_chroma = 8
    if profile_idc in _PROFILES_WITH_CHROMA_INFO:
        chroma_format_idc = r.ue_max(3, "chroma_format_idc")
        if chroma_format_idc == 3:
            separate_colour_plane = r.flag()
        bit_depth_luma = 8 + r.ue_max(6, "bit_depth_luma_minus8")
        bit_depth_chroma = 8 + r.ue_max(6, "bit_depth_chroma_minus8")
        r.skip(1)  # qpprime_y_zero_transform_bypass_flag
        if r.flag():  # seq_scaling_matrix_present_flag
            for index in range(8 if chroma_format_idc != 3 else 12):
                if r.flag():  # seq_scaling_list_present_flag[index]
                    _skip_scaling_list(r, 16 if index < 6 else 64)
    r.ue_max(12, "log2_max_frame_num_minus4")
    poc_type = r.ue_max(2, "pic_order_cnt_type")
    if poc_type == 0:
        r.ue_max(12, "log2_max_pic_order_cnt_lsb_minus4")
    elif poc_type == 1:
        r.skip(1)  # delta_pic_order_always_zero_flag
        r.se()  # offset_for_non_ref_pic
        r.se()  # offset_for_top_to_bottom_field
        for _ in range(r.ue_max(255, "num_ref_frames_in_pic_order_cnt_cycle")):
            r.se()  # offset_for_ref_frame[i]
    r.ue_max(16, "max_num_ref_frames")
    r.skip(1)  # gaps_in_frame_num_value_allowed_flag
    width_mbs = r.ue() + 1
    height_map_units = r.ue() + 1
    frame_mbs_only = r.flag()
    if not frame_mbs_only:
        r.skip(1)  # mb_adaptive_frame_field_flag
    r.skip(1)  # direct_8x8_inference_flag
    # 7.4.2.1.1: a field-coded frame stacks two fields of map units.
    field_factor = 1 if frame_mbs_only else 2
    coded_width = width_mbs * 16
    coded_height = height_map_units * 16 * field_factor
    width, height = coded_width, coded_height
    if r.flag():  # frame_cropping_flag
        left, right, top, bottom = r.ue(), r.ue(), r.ue(), r.ue()
        # Equations 7-19..7-22: the offsets count chroma samples (luma when ChromaArrayType 0).
        if separate_colour_plane or chroma_format_idc == 0:
            crop_x, crop_y = 1, field_factor
        else:
            sub_width, sub_height = _CHROMA_SUBSAMPLING[chroma_format_idc]
            crop_x, crop_y = sub_width, sub_height * field_factor
        width = coded_width - crop_x * (left + right)
        height = coded_height - crop_y * (top + bottom)
        if width < 1 or height < 1:
            raise MediaFormatError(
                f"H.264 SPS: cropping (left {left}, right {right}, top {top}, bottom {bottom}) "
                f"leaves nothing of the {coded_width}x{coded_height} coded picture"
            )
    if width > MAX_DIMENSION or height > MAX_DIMENSION:
        raise MediaFormatError(
            f"H.264 SPS: picture size {width}x{height} is over the {MAX_DIMENSION} limit"
        )
    frame_rate = _vui_frame_rate(r) if r.flag() else None  # vui_parameters_present_flag
    return AvcSps(
        profile_idc=profile_idc,
        constraint_flags=constraint_flags,
        level_idc=level_idc,
        seq_parameter_set_id=sps_id,
        chroma_format_idc=chroma_format_idc,
        bit_depth_luma=bit_depth_luma,
        bit_depth_chroma=bit_depth_chroma,
        frame_mbs_only=frame_mbs_only,
        width=width,
        height=height,
        frame_rate=frame_rate,
    )


def _skip_scaling_list(r: BitReader, size: int) -> None:
    """H.264 7.3.2.1.1.1 scaling_list(): delta_scale codes until nextScale becomes 0."""
    last_scale = next_scale = 8
    for _ in range(size):
        if next_scale != 0:
            delta_scale = r.se_range(-128, 127, "delta_scale")
            next_scale = (last_scale + delta_scale + 256) % 256
        last_scale = last_scale if next_scale == 0 else next_scale


def _vui_frame_rate(r: BitReader) -> float | None:
    """Read H.264 E.1.1 vui_parameters() up to the timing info."""
    if r.flag() and r.u(8) == _EXTENDED_SAR:  # aspect_ratio_info_present_flag, _idc
        r.skip(32)  # sar_width, sar_height
    if r.flag():  # overscan_info_present_flag
        r.skip(1)  # overscan_appropriate_flag
    if r.flag():  # video_signal_type_present_flag
        r.skip(4)  # video_format, video_full_range_flag
        if r.flag():  # colour_description_present_flag
            r.skip(24)  # colour_primaries, transfer_characteristics, matrix_coefficients
    if r.flag():  # chroma_loc_info_present_flag
        r.ue_max(5, "chroma_sample_loc_type_top_field")
        r.ue_max(5, "chroma_sample_loc_type_bottom_field")
    if not r.flag():  # timing_info_present_flag
        return None
    num_units_in_tick = r.u(32)
    time_scale = r.u(32)
    # E.2.1: both "shall be greater than 0"; a zero is taken as "no timing" rather than
    # rejecting a stream that decodes fine.
    if num_units_in_tick == 0 or time_scale == 0:
        return None
    return time_scale / (2 * num_units_in_tick)
