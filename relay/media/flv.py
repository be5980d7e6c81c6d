"""FLV tag bodies (the payload of RTMP audio and video messages) to media units.

Theory of operation: each RTMP type-8 / type-9 message body is one FLV AUDIODATA / VIDEODATA
tag body (FLV spec 10.1 E.4.2, E.4.3), or its Enhanced RTMP form (Veovera E-RTMP v1 / v2,
"Enhanced Audio" / "Enhanced Video"). Parsing is stateless, one call per message:

- a sequence header becomes a `VideoConfig` / `AudioConfig` (its record parsed by the codec
  modules, whose `MediaFormatError` is re-raised here as `FlvError` naming the tag);
- a coded frame becomes a `MediaFrame` whose data is the rest of the body, sliced once;
- end of sequence becomes `EndOfSequence`; anything valid that Relay does not carry
  (command frames, metadata, legacy codecs, multitrack) becomes `Ignored` with a reason;
- malformed input raises `FlvError` and nothing else.

The coded-frame paths come first and read header bytes only: they run once per frame.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from relay.logs import peer_text
from relay.media.aac import aac_audio_config
from relay.media.h264 import avc_video_config
from relay.media.hevc import hevc_video_config
from relay.media.units import (
    AudioConfig,
    Codec,
    MediaFormatError,
    MediaFrame,
    TrackKind,
    VideoConfig,
)


class FlvError(ValueError):
    """A malformed audio or video tag body; the message is a one-line reason."""


@dataclass(frozen=True, slots=True)
class Ignored:
    """A well-formed tag that carries nothing Relay forwards."""

    reason: str


@dataclass(frozen=True, slots=True)
class EndOfSequence:
    """The encoder ended the track's coded sequence (AVC end of sequence, E-RTMP SequenceEnd)."""

    kind: TrackKind


#: What `parse_video_tag` / `parse_audio_tag` return.
VideoTagUnit = VideoConfig | MediaFrame | EndOfSequence | Ignored
AudioTagUnit = AudioConfig | MediaFrame | Ignored

# FLV E.4.3.1 VIDEODATA: FrameType (UB[4], top bit reused by E-RTMP as IsExHeader).
FRAME_KEY = 1
FRAME_INTER = 2
FRAME_DISPOSABLE_INTER = 3
FRAME_GENERATED_KEY = 4
FRAME_COMMAND = 5  # "video info/command frame"

# FLV E.4.3.1 CodecID.
CODEC_ID_AVC = 7
_VIDEO_CODEC_NAMES = {1: "JPEG", 2: "Sorenson H.263", 3: "Screen video", 4: "On2 VP6",
                      5: "On2 VP6 with alpha", 6: "Screen video v2",
                      12: "non-standard HEVC; publish HEVC with Enhanced RTMP instead"}

# FLV E.4.3.1 AVCPacketType.
AVC_SEQUENCE_HEADER = 0
AVC_NALU = 1
AVC_END_OF_SEQUENCE = 2

# E-RTMP VideoPacketType (low 4 bits when IsExHeader is set).
EX_SEQUENCE_START = 0
EX_CODED_FRAMES = 1
EX_SEQUENCE_END = 2
EX_CODED_FRAMES_X = 3  # composition time offset implied 0
EX_METADATA = 4
EX_MPEG2TS_SEQUENCE_START = 5
EX_MULTITRACK = 6  # v2
EX_MOD_EX = 7  # v2

_IS_EX_HEADER = 0x80

_VIDEO_FOURCCS = {b"avc1": Codec.H264, b"hvc1": Codec.HEVC, b"av01": Codec.AV1,
                  b"vp09": Codec.VP9}

# FLV E.4.2.1 AUDIODATA SoundFormat.
SOUND_FORMAT_EX_HEADER = 9  # E-RTMP: FourCC audio
SOUND_FORMAT_AAC = 10
_SOUND_FORMAT_NAMES = {0: "linear PCM, platform endian", 1: "ADPCM", 2: "MP3",
                       3: "linear PCM, little endian", 4: "Nellymoser 16 kHz mono",
                       5: "Nellymoser 8 kHz mono", 6: "Nellymoser", 7: "G.711 A-law",
                       8: "G.711 mu-law", 11: "Speex", 12: "reserved", 13: "reserved",
                       14: "MP3 8 kHz", 15: "device-specific"}

# FLV E.4.2.1 AACPacketType.
AAC_SEQUENCE_HEADER = 0
AAC_RAW = 1

# E-RTMP AudioPacketType.
EX_AUDIO_SEQUENCE_START = 0
EX_AUDIO_CODED_FRAMES = 1
EX_AUDIO_SEQUENCE_END = 2
EX_AUDIO_MULTICHANNEL_CONFIG = 4
EX_AUDIO_MULTITRACK = 5
EX_AUDIO_MOD_EX = 7

_AUDIO_FOURCC_AAC = b"mp4a"


def parse_video_tag(payload: bytes, timestamp: int) -> VideoTagUnit:
    """Parse one video tag body; `timestamp` is the message's unwrapped time in ms (the dts).

    Raises `FlvError` for a truncated or malformed body.
    """
    size = len(payload)
    if size == 0:
        raise FlvError("empty video tag")
    first = payload[0]
    frame_type = (first >> 4) & 0x07
    if first & _IS_EX_HEADER:
        return _parse_ex_video(payload, frame_type, timestamp)
    if frame_type == FRAME_COMMAND:
        return Ignored("video info/command frame")
    if frame_type == 0 or frame_type > FRAME_COMMAND:
        raise FlvError(f"reserved video frame type {frame_type} (first byte 0x{first:02x})")
    codec_id = first & 0x0F
    if codec_id != CODEC_ID_AVC:
        name = _VIDEO_CODEC_NAMES.get(codec_id, "reserved")
        return Ignored(f"unsupported video codec id {codec_id} ({name})")
    if size < 5:
        raise FlvError(f"AVC video tag is {size} bytes, shorter than its 5-byte header")
    packet_type = payload[1]
    if packet_type == AVC_NALU:
        if size == 5:
            return Ignored("empty AVC frame")
        pts = timestamp + _si24(payload, 2)
        return MediaFrame(TrackKind.VIDEO, timestamp, pts, frame_type == FRAME_KEY, payload[5:])
    if packet_type == AVC_SEQUENCE_HEADER:
        return _video_config(avc_video_config, payload, 5, "AVC sequence header")
    if packet_type == AVC_END_OF_SEQUENCE:
        return EndOfSequence(TrackKind.VIDEO)
    raise FlvError(f"reserved AVCPacketType {packet_type}")


def parse_audio_tag(payload: bytes, timestamp: int) -> AudioTagUnit:
    """Parse one audio tag body; `timestamp` is the message's unwrapped time in ms.

    Raises `FlvError` for a truncated or malformed body.
    """
    size = len(payload)
    if size == 0:
        raise FlvError("empty audio tag")
    sound_format = payload[0] >> 4
    if sound_format == SOUND_FORMAT_AAC:
        if size < 2:
            raise FlvError("AAC audio tag is 1 byte, shorter than its 2-byte header")
        packet_type = payload[1]
        if packet_type == AAC_RAW:
            if size == 2:
                return Ignored("empty AAC frame")
            return MediaFrame(TrackKind.AUDIO, timestamp, timestamp, True, payload[2:])
        if packet_type == AAC_SEQUENCE_HEADER:
            return _audio_config(payload, 2, "AAC sequence header")
        raise FlvError(f"reserved AACPacketType {packet_type}")
    if sound_format == SOUND_FORMAT_EX_HEADER:
        return _parse_ex_audio(payload, timestamp)
    name = _SOUND_FORMAT_NAMES[sound_format]
    return Ignored(f"unsupported audio format {sound_format} ({name})")


def _parse_ex_video(payload: bytes, frame_type: int, timestamp: int) -> VideoTagUnit:
    """E-RTMP ExVideoTagHeader and ExVideoTagBody for a single track."""
    packet_type = payload[0] & 0x0F
    pos = 1
    while packet_type == EX_MOD_EX:
        pos, packet_type = _skip_mod_ex(payload, pos, "video")
    if packet_type != EX_METADATA:  # the frame type is not meaningful on metadata
        if frame_type == FRAME_COMMAND:
            return Ignored("video info/command frame")
        if frame_type == 0 or frame_type > FRAME_COMMAND:
            raise FlvError(f"reserved video frame type {frame_type} in an enhanced video tag")
    if packet_type == EX_MULTITRACK:
        return Ignored("Enhanced RTMP multitrack video is not supported")
    if packet_type > EX_MOD_EX:
        raise FlvError(f"reserved enhanced VideoPacketType {packet_type}")
    end = pos + 4
    if len(payload) < end:
        raise FlvError(f"enhanced video tag is {len(payload)} bytes, truncated before its FourCC")
    fourcc = payload[pos:end]
    codec = _VIDEO_FOURCCS.get(fourcc)
    if codec is None:
        return Ignored(f"unsupported video FourCC {_fourcc_text(fourcc)}")
    if packet_type in (EX_CODED_FRAMES, EX_CODED_FRAMES_X):
        pts = timestamp
        if packet_type == EX_CODED_FRAMES and (codec is Codec.HEVC or codec is Codec.H264):
            if len(payload) < end + 3:
                raise FlvError(f"enhanced {codec} CodedFrames tag is truncated in its "
                               "composition time")
            pts += _si24(payload, end)
            end += 3
        if len(payload) == end:
            return Ignored(f"empty {codec} frame")
        return MediaFrame(TrackKind.VIDEO, timestamp, pts, frame_type == FRAME_KEY,
                          payload[end:])
    if packet_type == EX_SEQUENCE_START:
        if codec is Codec.HEVC:
            return _video_config(hevc_video_config, payload, end, "HEVC SequenceStart")
        if codec is Codec.H264:
            return _video_config(avc_video_config, payload, end, "AVC SequenceStart")
        if codec is Codec.AV1:
            return _av1_video_config(payload[end:])
        return VideoConfig(codec=Codec.VP9, record=payload[end:], width=0, height=0,
                           codecs="vp09", frame_rate=None)
    if packet_type == EX_SEQUENCE_END:
        return EndOfSequence(TrackKind.VIDEO)
    if packet_type == EX_METADATA:
        return Ignored("enhanced video metadata (AMF colorInfo)")
    return Ignored(f"{codec} MPEG2TSSequenceStart is not supported")


def _parse_ex_audio(payload: bytes, timestamp: int) -> AudioTagUnit:
    """E-RTMP ExAudioTagHeader and ExAudioTagBody for a single track."""
    packet_type = payload[0] & 0x0F
    pos = 1
    while packet_type == EX_AUDIO_MOD_EX:
        pos, packet_type = _skip_mod_ex(payload, pos, "audio")
    if packet_type == EX_AUDIO_MULTITRACK:
        return Ignored("Enhanced RTMP multitrack audio is not supported")
    if packet_type not in (EX_AUDIO_SEQUENCE_START, EX_AUDIO_CODED_FRAMES,
                           EX_AUDIO_SEQUENCE_END, EX_AUDIO_MULTICHANNEL_CONFIG):
        raise FlvError(f"reserved enhanced AudioPacketType {packet_type}")
    end = pos + 4
    if len(payload) < end:
        raise FlvError(f"enhanced audio tag is {len(payload)} bytes, truncated before its FourCC")
    fourcc = payload[pos:end]
    if fourcc != _AUDIO_FOURCC_AAC:
        return Ignored(f"unsupported audio FourCC {_fourcc_text(fourcc)}")
    if packet_type == EX_AUDIO_CODED_FRAMES:
        if len(payload) == end:
            return Ignored("empty AAC frame")
        return MediaFrame(TrackKind.AUDIO, timestamp, timestamp, True, payload[end:])
    if packet_type == EX_AUDIO_SEQUENCE_START:
        return _audio_config(payload, end, "AAC SequenceStart")
    if packet_type == EX_AUDIO_SEQUENCE_END:
        return Ignored("enhanced audio SequenceEnd")
    return Ignored("enhanced audio MultichannelConfig (AAC signals its own channels)")


def _skip_mod_ex(payload: bytes, pos: int, what: str) -> tuple[int, int]:
    """Skip one E-RTMP v2 ModEx entry; return the new position and the next packet type.

    The only modifier defined so far, TimestampOffsetNano, refines the timestamp below a
    millisecond, which Relay's millisecond timeline cannot use; unknown modifiers are skipped
    the same way, their size being explicit.
    """
    size_limit = len(payload)
    if pos >= size_limit:
        raise FlvError(f"enhanced {what} tag is truncated in a ModEx data size")
    data_size = payload[pos] + 1
    pos += 1
    if data_size == 256:  # modExDataSize = UI16 + 1 follows
        if pos + 2 > size_limit:
            raise FlvError(f"enhanced {what} tag is truncated in a 16-bit ModEx data size")
        data_size = int.from_bytes(payload[pos : pos + 2], "big") + 1
        pos += 2
    pos += data_size
    if pos >= size_limit:
        raise FlvError(
            f"enhanced {what} tag is truncated in a ModEx entry ({data_size} data bytes)"
        )
    # High nibble: PacketModExType; low nibble: the next packet type.
    return pos + 1, payload[pos] & 0x0F


def _video_config(
    parse: Callable[[bytes], VideoConfig], payload: bytes, start: int, what: str
) -> VideoConfig:
    try:
        return parse(payload[start:])
    except MediaFormatError as exc:
        raise FlvError(f"{what}: {exc}") from exc


def _audio_config(payload: bytes, start: int, what: str) -> AudioConfig:
    try:
        return aac_audio_config(payload[start:])
    except MediaFormatError as exc:
        raise FlvError(f"{what}: {exc}") from exc


def _av1_video_config(record: bytes) -> VideoConfig:
    """AV1-ISOBMFF 2.3 av1C: only the fixed 4 bytes are read, for the codecs string."""
    if len(record) < 4:
        raise FlvError(f"AV1 SequenceStart: av1C is {len(record)} bytes, shorter than 4")
    if record[0] != 0x81:
        raise FlvError(f"AV1 SequenceStart: av1C marker/version byte is 0x{record[0]:02x}, "
                       "expected 0x81")
    profile = record[1] >> 5
    level = record[1] & 0x1F
    tier = "H" if record[2] & 0x80 else "M"
    high_bitdepth = record[2] & 0x40
    twelve_bit = record[2] & 0x20
    if profile == 2 and high_bitdepth:
        bit_depth = 12 if twelve_bit else 10
    else:
        bit_depth = 10 if high_bitdepth else 8
    # AV1-ISOBMFF "Codecs Parameter String": av01.P.LLT.DD
    return VideoConfig(codec=Codec.AV1, record=record, width=0, height=0,
                       codecs=f"av01.{profile}.{level:02d}{tier}.{bit_depth:02d}",
                       frame_rate=None)


def _si24(payload: bytes, pos: int) -> int:
    """A big-endian signed 24-bit integer (the composition time offset, ms)."""
    value = (payload[pos] << 16) | (payload[pos + 1] << 8) | payload[pos + 2]
    return value - 0x1000000 if value & 0x800000 else value


def _fourcc_text(fourcc: bytes) -> str:
    # Four bytes the encoder chose: as text when printable (escaped like every peer value),
    # else in hex.
    if all(0x20 <= byte < 0x7F for byte in fourcc):
        return f"'{peer_text(fourcc.decode('ascii'))}'"
    return f"0x{fourcc.hex()}"

