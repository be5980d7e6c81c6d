"""Codec configurations on their own (relay/media/h264.py, hevc.py, aac.py, bitreader.py),
without the FLV tag around them, so the fuzzer spends no effort on tag headers.

Input: byte 0 picks the parser (mod 5): an avcC record, an H.264 SPS NAL unit, an hvcC
record, an H.265 SPS NAL unit, or an AudioSpecificConfig; the rest is its input.

Allowed: `MediaFormatError` with a bounded one-line reason. Findings: any other exception and
the same checks on the result as the `flv` harness.
"""

from __future__ import annotations

from fuzz.common import Finding, check_reason
from fuzz.harnesses.flv import check_audio_config, check_codecs, check_video_config
from relay.media.aac import aac_audio_config
from relay.media.h264 import avc_codecs, avc_video_config, parse_avc_sps
from relay.media.hevc import hevc_codecs, hevc_video_config, parse_hevc_sps
from relay.media.units import MAX_DIMENSION, MediaFormatError


def _check_size(width: int, height: int) -> None:
    if not (1 <= width <= MAX_DIMENSION and 1 <= height <= MAX_DIMENSION):
        raise Finding(f"picture size {width}x{height}")


def check(data: bytes) -> None:
    if not data:
        return
    target, body = data[0] % 5, data[1:]
    try:
        if target == 0:
            config = avc_video_config(body)
            if config.record != body:
                raise Finding("avcC record not kept as received")
            check_video_config(config)
        elif target == 1:
            avc = parse_avc_sps(body)
            _check_size(avc.width, avc.height)
            check_codecs(avc_codecs(avc))
        elif target == 2:
            config = hevc_video_config(body)
            if config.record != body:
                raise Finding("hvcC record not kept as received")
            check_video_config(config)
        elif target == 3:
            hevc = parse_hevc_sps(body)
            _check_size(hevc.width, hevc.height)
            check_codecs(hevc_codecs(hevc.profile))
        else:
            audio = aac_audio_config(body)
            if audio.record != body:
                raise Finding("AudioSpecificConfig not kept as received")
            check_audio_config(audio)
    except MediaFormatError as exc:
        check_reason(exc)
