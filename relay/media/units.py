"""Codec-agnostic media units: what every ingest adapter produces and every consumer reads.

A track starts with a configuration (`VideoConfig` / `AudioConfig`, carrying the decoder
configuration record as received) and continues with `MediaFrame`s. Times are integer
milliseconds on one 64-bit timeline per session (RTMP's 32-bit timestamps already unwrapped).
Video frame data stays length-prefixed (AVCC / HVCC, the ISO 14496-15 sample format) so the
fMP4 packager can use it as-is; audio frame data is one raw AAC access unit.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

#: Largest width or height accepted from a parameter set. Level 6.2 of both H.264 and H.265
#: allows 8192x4320 (and 16888 samples on one side for H.265); anything past this is taken
#: as a corrupt or hostile header rather than a picture size.
MAX_DIMENSION = 16384


class TrackKind(StrEnum):
    VIDEO = "video"
    AUDIO = "audio"


class Codec(StrEnum):
    H264 = "h264"
    HEVC = "hevc"
    AV1 = "av1"  # carried through: record kept, no sequence header parsing
    VP9 = "vp9"  # carried through: record kept, no parsing
    AAC = "aac"


class MediaFormatError(ValueError):
    """A decoder configuration or parameter set that cannot be parsed; the message says why.

    Raised by the codec modules (`h264`, `hevc`, `aac`, `bitreader`); the FLV layer turns it
    into an `FlvError` that also names the tag it came from.
    """


@dataclass(frozen=True, slots=True)
class VideoConfig:
    """A video track's configuration: the decoder configuration record and what it says."""

    codec: Codec
    #: The avcC / hvcC / av1C / vpcC record exactly as received.
    record: bytes
    #: Display size (after SPS cropping / conformance window); 0 when not parsed (AV1, VP9).
    width: int
    height: int
    #: RFC 6381 string for an HLS CODECS attribute, e.g. "avc1.64001f", "hvc1.1.6.L93.B0".
    codecs: str
    #: Frames per second from the SPS VUI timing info, when the encoder wrote it.
    frame_rate: float | None


@dataclass(frozen=True, slots=True)
class AudioConfig:
    """An audio track's configuration: the AudioSpecificConfig and what it says."""

    codec: Codec
    #: ISO 14496-3 AudioSpecificConfig exactly as received.
    record: bytes
    #: Output sampling rate (the SBR rate for HE-AAC).
    sample_rate: int
    #: Output channel count (2 for a parametric-stereo stream coded as mono).
    channels: int
    #: RFC 6381 string, "mp4a.40.<audio object type>".
    codecs: str


@dataclass(frozen=True, slots=True)
class MediaFrame:
    """One access unit with its timing."""

    kind: TrackKind
    #: Decode time, ms, 64-bit, unwrapped.
    dts: int
    #: Presentation time, ms (dts + composition offset; may be below dts only if the encoder
    #: sent a negative offset).
    pts: int
    #: A random access point (the FLV frame type said "key frame"; every AAC frame is one).
    keyframe: bool
    #: Video: length-prefixed NAL units (AVCC / HVCC) or AV1 OBUs exactly as in the FLV tag;
    #: audio: one raw AAC access unit.
    data: bytes


TrackConfig = VideoConfig | AudioConfig
