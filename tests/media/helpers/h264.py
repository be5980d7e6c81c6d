"""What test_h264.py shares with other test modules: kept here so no test module imports
another."""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from hypothesis import strategies as st

from tests.media.helpers.bitreader import BitWriter, add_emulation_prevention

HIGH_PROFILES = (100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135)


@dataclass(frozen=True)
class Vui:
    #: (aspect_ratio_idc, sar_width, sar_height); the SAR is written only for idc 255.
    aspect_ratio: tuple[int, int, int] | None = None
    overscan: bool | None = None
    #: (video_format, full_range, (primaries, transfer, matrix) or None)
    video_signal: tuple[int, bool, tuple[int, int, int] | None] | None = None
    chroma_loc: tuple[int, int] | None = None
    #: (num_units_in_tick, time_scale)
    timing: tuple[int, int] | None = (1, 60)


@dataclass(frozen=True)
class AvcSpsSpec:
    """Every field of an SPS up to the VUI, with the VUI fields before the timing info."""

    profile_idc: int = 100
    constraint_flags: int = 0
    level_idc: int = 31
    sps_id: int = 0
    chroma_format_idc: int = 1
    separate_colour_plane: bool = False
    bit_depth_luma_minus8: int = 0
    bit_depth_chroma_minus8: int = 0
    #: None: no seq_scaling_matrix; else one entry per list: None (absent) or its delta_scales.
    scaling_lists: tuple[tuple[int, ...] | None, ...] | None = None
    log2_max_frame_num_minus4: int = 0
    poc_type: int = 0
    log2_max_poc_lsb_minus4: int = 2
    #: POC type 1: offset_for_non_ref_pic, offset_for_top_to_bottom_field, ref frame offsets.
    poc_cycle: tuple[int, int, tuple[int, ...]] = (0, 0, ())
    max_num_ref_frames: int = 4
    width_mbs: int = 80
    height_map_units: int = 45
    frame_mbs_only: bool = True
    crop: tuple[int, int, int, int] | None = None
    vui: Vui | None = Vui()

    @property
    def has_chroma_info(self) -> bool:
        return self.profile_idc in HIGH_PROFILES

    def expected_size(self) -> tuple[int, int]:
        field = 1 if self.frame_mbs_only else 2
        width, height = self.width_mbs * 16, self.height_map_units * 16 * field
        if self.crop:
            chroma = self.chroma_format_idc if self.has_chroma_info else 1
            if chroma == 0 or self.separate_colour_plane:
                unit_x, unit_y = 1, field
            else:
                unit_x = 1 if chroma == 3 else 2
                unit_y = (2 if chroma == 1 else 1) * field
            left, right, top, bottom = self.crop
            width -= unit_x * (left + right)
            height -= unit_y * (top + bottom)
        return width, height

    def expected_rate(self) -> float | None:
        if self.vui is None or self.vui.timing is None or 0 in self.vui.timing:
            return None
        units, scale = self.vui.timing
        return scale / (2 * units)


def scaling_deltas(values: list[int], size: int) -> tuple[int, ...]:
    """delta_scale codes for a `size`-entry list of scale values (7.3.2.1.1.1): a 0 ends the
    list early (the rest repeats the last value; a leading 0 selects the default matrix), a
    short list without one is padded with its last value."""
    deltas = []
    last = 8
    for value in values[:size]:
        deltas.append((value - last + 128) % 256 - 128)
        if value == 0:
            return tuple(deltas)
        last = value
    return tuple(deltas) + (0,) * (size - len(deltas))


def write_avc_sps(spec: AvcSpsSpec, *, extra_vui_bits: bool = True) -> bytes:
    """The SPS NAL unit (header 0x67, emulation prevention applied)."""
    w = BitWriter().u(8, spec.profile_idc).u(8, spec.constraint_flags).u(8, spec.level_idc)
    w.ue(spec.sps_id)
    if spec.has_chroma_info:
        w.ue(spec.chroma_format_idc)
        if spec.chroma_format_idc == 3:
            w.flag(spec.separate_colour_plane)
        w.ue(spec.bit_depth_luma_minus8).ue(spec.bit_depth_chroma_minus8).flag(False)
        w.flag(spec.scaling_lists is not None)
        if spec.scaling_lists is not None:
            for deltas in spec.scaling_lists:
                w.flag(deltas is not None)
                for delta in deltas or ():
                    w.se(delta)
    w.ue(spec.log2_max_frame_num_minus4).ue(spec.poc_type)
    if spec.poc_type == 0:
        w.ue(spec.log2_max_poc_lsb_minus4)
    elif spec.poc_type == 1:
        non_ref, top_bottom, cycle = spec.poc_cycle
        w.flag(False).se(non_ref).se(top_bottom).ue(len(cycle))
        for offset in cycle:
            w.se(offset)
    w.ue(spec.max_num_ref_frames).flag(False)
    w.ue(spec.width_mbs - 1).ue(spec.height_map_units - 1).flag(spec.frame_mbs_only)
    if not spec.frame_mbs_only:
        w.flag(True)  # mb_adaptive_frame_field_flag
    w.flag(True)  # direct_8x8_inference_flag
    w.flag(spec.crop is not None)
    for offset in spec.crop or ():
        w.ue(offset)
    w.flag(spec.vui is not None)
    if spec.vui is not None:
        _write_vui(w, spec.vui, extra_vui_bits)
    w.trailing_bits()
    return b"\x67" + add_emulation_prevention(w.to_bytes())


def _write_vui(w: BitWriter, vui: Vui, extra: bool) -> None:
    w.flag(vui.aspect_ratio is not None)
    if vui.aspect_ratio is not None:
        idc, sar_w, sar_h = vui.aspect_ratio
        w.u(8, idc)
        if idc == 255:
            w.u(16, sar_w).u(16, sar_h)
    w.flag(vui.overscan is not None)
    if vui.overscan is not None:
        w.flag(vui.overscan)
    w.flag(vui.video_signal is not None)
    if vui.video_signal is not None:
        video_format, full_range, colour = vui.video_signal
        w.u(3, video_format).flag(full_range).flag(colour is not None)
        for value in colour or ():
            w.u(8, value)
    w.flag(vui.chroma_loc is not None)
    for value in vui.chroma_loc or ():
        w.ue(value)
    w.flag(vui.timing is not None)
    if vui.timing is not None:
        w.u(32, vui.timing[0]).u(32, vui.timing[1]).flag(True)  # fixed_frame_rate_flag
    if extra:
        # nal/vcl HRD absent, pic_struct_present_flag, bitstream_restriction_flag
        w.flag(False).flag(False).flag(False).flag(False)


def avcc(sps: list[bytes], pps: list[bytes], *, length_size: int = 4, header: bytes | None = None,
         tail: bytes = b"") -> bytes:
    first = sps[0] if sps else b"\x67\x64\x00\x1f"
    record = bytearray(header if header is not None else bytes([1, first[1], first[2], first[3]]))
    record.append(0xFC | (length_size - 1))
    record.append(0xE0 | len(sps))
    for nal in sps:
        record += len(nal).to_bytes(2, "big") + nal
    record.append(len(pps))
    for nal in pps:
        record += len(nal).to_bytes(2, "big") + nal
    return bytes(record + tail)


PPS = b"\x68\xeb\xe3\xcb\x22\xc0"


def scaling_lists(size: int) -> st.SearchStrategy[tuple[int, ...]]:
    values = st.lists(st.integers(0, 255), min_size=1, max_size=size)
    return values.map(lambda drawn: scaling_deltas(drawn, size))


def ffmpeg_trace(annexb: bytes, codec: str, tmp_path: Path) -> list[dict[str, int]]:
    """Field values of each SPS as ffmpeg's trace_headers bitstream filter reads them."""
    path = tmp_path / f"stream.{codec}"
    path.write_bytes(annexb)
    result = subprocess.run(
        ["ffmpeg", "-hide_banner", "-loglevel", "trace", "-f", codec, "-i", str(path),
         "-c", "copy", "-bsf:v", "trace_headers", "-f", "null", "-"],
        capture_output=True, text=True, check=False)
    blocks: list[dict[str, int]] = []
    current: dict[str, int] | None = None
    line_re = re.compile(r"\[trace_headers @ [^\]]+\] (?:\d+\s+(\S+)\s+[01]+ = (-?\d+)|(.+))$")
    for line in result.stderr.splitlines():
        match = line_re.match(line)
        if match is None:
            continue
        if match.group(3) is not None:
            title = match.group(3).strip()
            if title == "Sequence Parameter Set":
                current = {}
                blocks.append(current)
            elif title.endswith("Parameter Set") or title.startswith("Slice"):
                current = None
        elif current is not None:
            current[match.group(1)] = int(match.group(2))
    return blocks
