"""MPEG-TS elementary streams to media units (relay/media/ts_units.py), and through it the
Annex-B and ADTS scanners of native/elementary.pyx and the avcC / hvcC builders.

Input: byte 0 bit 0 picks HEVC (1) or H.264 (0) for the video stream; then records, each a
header byte and a big-endian 16-bit length followed by that many payload bytes. Header byte
bits 0..1: 0 a video PES, 1 an audio PES, 2 a program change (the payload's bytes, in threes,
are (PID high byte, PID low byte, stream type)), 3 the scanners called directly on the
payload. Bit 2: the PES has a PTS, given by the payload's first 5 bytes: the PTS's upper 32
bits, then a byte whose top bit is the PTS's lowest and whose other 7 bits put the DTS 0..127
ticks before it. Bit 3: the PES is flagged discontinuous.

Allowed: `TsIngestError` from a program change, with a bounded one-line reason. Findings: any
other exception (a PES, whatever it holds, never raises); a video frame whose data is not
well-formed 4-byte length-prefixed NAL units, or empty; an empty audio frame; a configuration
whose record does not parse again to the same configuration, or with a size outside
1..MAX_DIMENSION; more held audio bytes than MAX_PENDING_AUDIO_BYTES or held video bytes than
MAX_ACCESS_UNIT_SIZE; ADTS frames that overlap or lie outside the input.
"""

from __future__ import annotations

from fuzz.common import Finding, check_reason
from fuzz.harnesses.flv import check_audio_config, check_video_config
from relay._native.elementary import AnnexBError, annexb_to_length_prefixed, split_adts
from relay.media.aac import aac_audio_config
from relay.media.h264 import avc_video_config
from relay.media.hevc import hevc_video_config
from relay.media.ts_units import (
    MAX_ACCESS_UNIT_SIZE,
    MAX_PENDING_AUDIO_BYTES,
    STREAM_TYPE_AAC_ADTS,
    STREAM_TYPE_H264,
    STREAM_TYPE_HEVC,
    TsIngestError,
    TsMediaAssembler,
)
from relay.media.units import AudioConfig, Codec, MediaFrame, TrackKind, VideoConfig

VIDEO_PID, AUDIO_PID = 0x100, 0x101


def _records(data: bytes) -> list[tuple[int, bytes]]:
    records, pos = [], 1
    while pos + 3 <= len(data):
        size = int.from_bytes(data[pos + 1 : pos + 3], "big")
        records.append((data[pos], data[pos + 3 : pos + 3 + size]))
        pos += 3 + size
    return records


def _check_sample(sample: bytes) -> None:
    if not sample:
        raise Finding("empty video frame")
    pos = 0
    while pos < len(sample):
        if pos + 4 > len(sample):
            raise Finding(f"video frame ends inside a length prefix at byte {pos}")
        size = int.from_bytes(sample[pos : pos + 4], "big")
        if size == 0 or pos + 4 + size > len(sample):
            raise Finding(f"video frame has a bad NAL length {size} at byte {pos}")
        pos += 4 + size


def _check_unit(unit: object) -> None:
    if isinstance(unit, MediaFrame):
        if unit.kind is TrackKind.VIDEO:
            _check_sample(unit.data)
        elif not unit.data:
            raise Finding("empty audio frame")
    elif isinstance(unit, VideoConfig):
        check_video_config(unit)
        parse = avc_video_config if unit.codec is Codec.H264 else hevc_video_config
        if parse(unit.record) != unit:
            raise Finding("video record does not parse back to its configuration")
    elif isinstance(unit, AudioConfig):
        check_audio_config(unit)
        if aac_audio_config(unit.record) != unit:
            raise Finding("AudioSpecificConfig does not parse back to its configuration")


def _check_scanners(payload: bytes, hevc: bool) -> None:
    try:
        annexb_to_length_prefixed(payload, hevc, 0, 0xFFFF, 64)
    except AnnexBError as exc:
        check_reason(exc)
    frames, consumed, skipped = split_adts(payload)
    end = 0
    for offset, start, stop, _ in frames:
        if not end <= offset < start < stop <= consumed:
            raise Finding(f"ADTS frame ({offset}, {start}, {stop}) after byte {end}, "
                          f"consumed {consumed}")
        end = stop
    if not 0 <= skipped <= consumed <= len(payload):
        raise Finding(f"split_adts: skipped {skipped}, consumed {consumed} of {len(payload)}")


def check(data: bytes) -> None:
    if not data:
        return
    hevc = bool(data[0] & 1)
    video_type = STREAM_TYPE_HEVC if hevc else STREAM_TYPE_H264
    assembler = TsMediaAssembler()
    units = assembler.on_program([(VIDEO_PID, video_type), (AUDIO_PID, STREAM_TYPE_AAC_ADTS)])
    types = {VIDEO_PID: video_type, AUDIO_PID: STREAM_TYPE_AAC_ADTS}
    for header, payload in _records(data):
        kind = header & 0x03
        if kind == 3:
            _check_scanners(payload, hevc)
            continue
        if kind == 2:
            streams = [(int.from_bytes(payload[i : i + 2], "big") & 0x1FFF, payload[i + 2])
                       for i in range(0, len(payload) - 2, 3)]
            try:
                units += assembler.on_program(streams)
            except TsIngestError as exc:
                check_reason(exc)
                return
            types = dict(streams)
            continue
        pid = VIDEO_PID if kind == 0 else AUDIO_PID
        pts = dts = -1
        if header & 0x04 and len(payload) >= 5:
            pts = int.from_bytes(payload[:4], "big") << 1 | payload[4] >> 7
            dts = max(pts - (payload[4] & 0x7F), 0)
            payload = payload[5:]
        units += assembler.on_pes(pid, types.get(pid, video_type), pts, dts, False,
                                  bool(header & 0x08), payload)
        if assembler.pending_audio_bytes > MAX_PENDING_AUDIO_BYTES:
            raise Finding(f"{assembler.pending_audio_bytes} audio bytes held")
        if assembler.pending_video_bytes > MAX_ACCESS_UNIT_SIZE:
            raise Finding(f"{assembler.pending_video_bytes} video bytes held")
    units += assembler.flush()
    for unit in units:
        _check_unit(unit)
