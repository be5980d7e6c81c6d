"""What test_hevc.py shares with other test modules: kept here so no test module imports
another."""

from __future__ import annotations

from dataclasses import dataclass, field

from relay.media.hevc import (
    ProfileTierLevel,
)
from tests.media.helpers.bitreader import BitWriter, add_emulation_prevention

MAIN = ProfileTierLevel(profile_space=0, tier_flag=False, profile_idc=1,
                        compatibility_flags=0x60000000,
                        constraint_flags=bytes.fromhex("b00000000000"), level_idc=93)


@dataclass(frozen=True)
class ExplicitRps:
    """st_ref_pic_set() with explicit lists: (delta_poc_minus1, used) per picture."""

    negative: tuple[tuple[int, bool], ...] = ()
    positive: tuple[tuple[int, bool], ...] = ()


@dataclass(frozen=True)
class PredictedRps:
    """st_ref_pic_set() predicted from the previous set: delta_rps_sign, abs_delta_rps_minus1,
    then (used_by_curr_pic_flag, use_delta_flag) for each picture of that set plus one."""

    sign: int
    abs_minus1: int
    flags: tuple[tuple[bool, bool], ...]


Rps = ExplicitRps | PredictedRps


def rps_pocs(sets: tuple[Rps, ...]) -> list[tuple[list[int], list[int]]]:
    """Delta POCs (S0 descending, S1 ascending) of each set, as sets of values: a predicted
    set is the previous set's pictures plus the current one, shifted by deltaRps, those with
    use_delta (inferred when used) and not landing on 0 kept. (H.265 7.4.8 builds the same
    lists by walking them in order; this is the order-free restatement.)"""
    out: list[tuple[list[int], list[int]]] = []
    for rps in sets:
        if isinstance(rps, ExplicitRps):
            s0, s1, poc = [], [], 0
            for delta, _ in rps.negative:
                poc -= delta + 1
                s0.append(poc)
            poc = 0
            for delta, _ in rps.positive:
                poc += delta + 1
                s1.append(poc)
        else:
            ref_s0, ref_s1 = out[-1]
            delta_rps = (1 - 2 * rps.sign) * (rps.abs_minus1 + 1)
            candidates = [*ref_s0, *ref_s1, 0]
            assert len(rps.flags) == len(candidates)
            values = [poc + delta_rps for poc, (used, use) in zip(candidates, rps.flags,
                                                                   strict=True) if used or use]
            s0 = sorted((v for v in values if v < 0), reverse=True)
            s1 = sorted(v for v in values if v > 0)
        out.append((s0, s1))
    return out


@dataclass(frozen=True)
class HevcVui:
    aspect_ratio: tuple[int, int, int] | None = None
    overscan: bool | None = None
    video_signal: tuple[int, bool, tuple[int, int, int] | None] | None = None
    chroma_loc: tuple[int, int] | None = None
    #: neutral_chroma_indication_flag, field_seq_flag, frame_field_info_present_flag
    flags3: tuple[bool, bool, bool] = (False, False, False)
    default_display_window: tuple[int, int, int, int] | None = None
    timing: tuple[int, int] | None = (1, 30)
    #: vui_num_ticks_poc_diff_one_minus1 when vui_poc_proportional_to_timing_flag is set
    poc_proportional: int | None = None


@dataclass(frozen=True)
class HevcSpsSpec:
    profile: ProfileTierLevel = MAIN
    max_sub_layers_minus1: int = 0
    #: (sub_layer_profile_present_flag, sub_layer_level_present_flag) per sub-layer
    sub_layers: tuple[tuple[bool, bool], ...] = ()
    sps_id: int = 0
    chroma_format_idc: int = 1
    separate_colour_plane: bool = False
    width: int = 1280
    height: int = 720
    conformance_window: tuple[int, int, int, int] | None = None
    bit_depth_luma_minus8: int = 0
    bit_depth_chroma_minus8: int = 0
    log2_max_poc_lsb_minus4: int = 4
    ordering_info_present: bool = True
    #: log2 min CB - 3, diff max-min CB, log2 min TB - 2, diff max-min TB, depth inter, intra
    block_sizes: tuple[int, int, int, int, int, int] = (0, 3, 0, 3, 1, 1)
    #: None: scaling lists off; (): on, default lists; else one entry per (sizeId, matrixId):
    #: ("pred", delta) or ("coefs", dc_coef_minus8, delta_coef value used for every coef)
    scaling: tuple[tuple[str, int, int], ...] | None = None
    amp_sao: tuple[bool, bool] = (True, True)
    #: (luma bits - 1, chroma bits - 1, log2 min PCM CB - 3, diff max-min PCM CB)
    pcm: tuple[int, int, int, int] | None = None
    rps: tuple[Rps, ...] = ()
    #: (lt_ref_pic_poc_lsb_sps, used_by_curr_pic_lt_sps_flag) per long-term picture
    long_term: tuple[tuple[int, bool], ...] | None = None
    tmvp_intra: tuple[bool, bool] = (True, True)
    vui: HevcVui | None = field(default_factory=HevcVui)
    nuh_layer_id: int = 0

    def expected_size(self) -> tuple[int, int]:
        if self.conformance_window is None:
            return self.width, self.height
        sub_w, sub_h = {0: (1, 1), 1: (2, 2), 2: (2, 1), 3: (1, 1)}[self.chroma_format_idc]
        if self.separate_colour_plane:
            sub_w = sub_h = 1
        left, right, top, bottom = self.conformance_window
        return self.width - sub_w * (left + right), self.height - sub_h * (top + bottom)

    def expected_rate(self) -> float | None:
        if self.vui is None or self.vui.timing is None or 0 in self.vui.timing:
            return None
        return self.vui.timing[1] / self.vui.timing[0]


def write_ptl(w: BitWriter, profile: ProfileTierLevel, max_sub_layers_minus1: int,
              sub_layers: tuple[tuple[bool, bool], ...]) -> None:
    w.u(2, profile.profile_space).flag(profile.tier_flag).u(5, profile.profile_idc)
    w.u(32, profile.compatibility_flags)
    w.u(48, int.from_bytes(profile.constraint_flags, "big")).u(8, profile.level_idc)
    assert len(sub_layers) == max_sub_layers_minus1
    for profile_present, level_present in sub_layers:
        w.flag(profile_present).flag(level_present)
    if max_sub_layers_minus1 > 0:
        w.u(2 * (8 - max_sub_layers_minus1), 0)
    for profile_present, level_present in sub_layers:
        if profile_present:
            w.u(2, profile.profile_space).flag(profile.tier_flag).u(5, profile.profile_idc)
            w.u(32, profile.compatibility_flags)
            w.u(48, int.from_bytes(profile.constraint_flags, "big"))
        if level_present:
            w.u(8, profile.level_idc)


def write_hevc_sps(spec: HevcSpsSpec) -> bytes:
    w = BitWriter().u(4, 0).u(3, spec.max_sub_layers_minus1)
    w.flag(True)  # sps_temporal_id_nesting_flag
    write_ptl(w, spec.profile, spec.max_sub_layers_minus1, spec.sub_layers)
    w.ue(spec.sps_id).ue(spec.chroma_format_idc)
    if spec.chroma_format_idc == 3:
        w.flag(spec.separate_colour_plane)
    w.ue(spec.width).ue(spec.height).flag(spec.conformance_window is not None)
    for offset in spec.conformance_window or ():
        w.ue(offset)
    w.ue(spec.bit_depth_luma_minus8).ue(spec.bit_depth_chroma_minus8)
    w.ue(spec.log2_max_poc_lsb_minus4).flag(spec.ordering_info_present)
    for _ in range(0 if spec.ordering_info_present else spec.max_sub_layers_minus1,
                   spec.max_sub_layers_minus1 + 1):
        w.ue(15).ue(3).ue(0)
    for value in spec.block_sizes:
        w.ue(value)
    w.flag(spec.scaling is not None)
    if spec.scaling is not None:
        w.flag(bool(spec.scaling))
        if spec.scaling:
            entries = iter(spec.scaling)
            for size_id in range(4):
                for _ in range(0, 6, 3 if size_id == 3 else 1):
                    kind, first, second = next(entries)
                    w.flag(kind == "coefs")
                    if kind == "pred":
                        w.ue(first)
                        continue
                    if size_id > 1:
                        w.se(first)
                    for _ in range(min(64, 1 << (4 + (size_id << 1)))):
                        w.se(second)
    w.flag(spec.amp_sao[0]).flag(spec.amp_sao[1]).flag(spec.pcm is not None)
    if spec.pcm is not None:
        w.u(4, spec.pcm[0]).u(4, spec.pcm[1]).ue(spec.pcm[2]).ue(spec.pcm[3]).flag(False)
    w.ue(len(spec.rps))
    pocs = rps_pocs(spec.rps)
    for index, rps in enumerate(spec.rps):
        if index > 0:
            w.flag(isinstance(rps, PredictedRps))
        if isinstance(rps, PredictedRps):
            assert len(rps.flags) == len(pocs[index - 1][0]) + len(pocs[index - 1][1]) + 1
            w.u(1, rps.sign).ue(rps.abs_minus1)
            for used, use in rps.flags:
                w.flag(used)
                if not used:
                    w.flag(use)
        else:
            w.ue(len(rps.negative)).ue(len(rps.positive))
            for delta, used in (*rps.negative, *rps.positive):
                w.ue(delta).flag(used)
    w.flag(spec.long_term is not None)
    if spec.long_term is not None:
        w.ue(len(spec.long_term))
        for lsb, used in spec.long_term:
            w.u(spec.log2_max_poc_lsb_minus4 + 4, lsb).flag(used)
    w.flag(spec.tmvp_intra[0]).flag(spec.tmvp_intra[1]).flag(spec.vui is not None)
    if spec.vui is not None:
        _write_vui(w, spec.vui)
    w.flag(False)  # sps_extension_present_flag
    w.trailing_bits()
    header = bytes([33 << 1 | spec.nuh_layer_id >> 5, (spec.nuh_layer_id & 0x1F) << 3 | 1])
    return header + add_emulation_prevention(w.to_bytes())


def _write_vui(w: BitWriter, vui: HevcVui) -> None:
    w.flag(vui.aspect_ratio is not None)
    if vui.aspect_ratio is not None:
        w.u(8, vui.aspect_ratio[0])
        if vui.aspect_ratio[0] == 255:
            w.u(16, vui.aspect_ratio[1]).u(16, vui.aspect_ratio[2])
    w.flag(vui.overscan is not None)
    if vui.overscan is not None:
        w.flag(vui.overscan)
    w.flag(vui.video_signal is not None)
    if vui.video_signal is not None:
        w.u(3, vui.video_signal[0]).flag(vui.video_signal[1])
        w.flag(vui.video_signal[2] is not None)
        for value in vui.video_signal[2] or ():
            w.u(8, value)
    w.flag(vui.chroma_loc is not None)
    for value in vui.chroma_loc or ():
        w.ue(value)
    for flag in vui.flags3:
        w.flag(flag)
    w.flag(vui.default_display_window is not None)
    for offset in vui.default_display_window or ():
        w.ue(offset)
    w.flag(vui.timing is not None)
    if vui.timing is not None:
        w.u(32, vui.timing[0]).u(32, vui.timing[1]).flag(vui.poc_proportional is not None)
        if vui.poc_proportional is not None:
            w.ue(vui.poc_proportional)
        w.flag(False)  # vui_hrd_parameters_present_flag
    w.flag(False)  # bitstream_restriction_flag


def write_vps(spec: HevcSpsSpec) -> bytes:
    """A VPS matching `spec`, for ffmpeg (which wants the SPS's VPS to exist)."""
    w = BitWriter().u(4, 0).flag(True).flag(True).u(6, 0).u(3, spec.max_sub_layers_minus1)
    w.flag(True).u(16, 0xFFFF)
    write_ptl(w, spec.profile, spec.max_sub_layers_minus1, spec.sub_layers)
    w.flag(True)  # vps_sub_layer_ordering_info_present_flag
    for _ in range(spec.max_sub_layers_minus1 + 1):
        w.ue(15).ue(3).ue(0)
    w.u(6, 0).ue(0).flag(False).flag(False).trailing_bits()
    return bytes([32 << 1, 1]) + add_emulation_prevention(w.to_bytes())


PPS = bytes([34 << 1, 1, 0xC1, 0x72, 0xB4, 0x62, 0x40])


def hvcc(spec: HevcSpsSpec, sps: list[bytes] | None = None, *, version: int = 1,
         length_size: int = 4, extra_arrays: bytes = b"", arrays: int | None = None) -> bytes:
    sps = sps if sps is not None else [write_hevc_sps(spec)]
    profile = spec.profile
    record = bytearray([version, profile.profile_space << 6 | profile.tier_flag << 5
                        | profile.profile_idc])
    record += profile.compatibility_flags.to_bytes(4, "big") + profile.constraint_flags
    record += bytes([profile.level_idc, 0xF0, 0x00, 0xFC, 0xFC | spec.chroma_format_idc,
                     0xF8 | spec.bit_depth_luma_minus8, 0xF8 | spec.bit_depth_chroma_minus8,
                     0, 0, 0x0C | (length_size - 1)])
    groups = [(32, [write_vps(spec)]), (33, sps), (34, [PPS])]
    record.append(arrays if arrays is not None else len(groups) + (1 if extra_arrays else 0))
    for nal_type, nals in groups:
        record += bytes([0x80 | nal_type]) + len(nals).to_bytes(2, "big")
        for nal in nals:
            record += len(nal).to_bytes(2, "big") + nal
    return bytes(record + extra_arrays)
