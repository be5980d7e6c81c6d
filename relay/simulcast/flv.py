"""Media units back to FLV tag bodies, the payloads of RTMP audio and video messages.

The inverse of `relay.media.flv` for what Relay carries: H.264 and AAC as legacy FLV tags
(FLV spec 10.1 E.4.2 AUDIODATA, E.4.3 VIDEODATA), which every RTMP service accepts; HEVC, AV1
and VP9 as Enhanced RTMP v1 tags (veovera "Enhanced Video": ExVideoTagHeader with a FourCC),
the only way those reach an RTMP server. `parse_video_tag(video_frame_tag(f, c), f.dts) == f`
for every frame the parser can produce, and the tests hold the writer to that.

A frame's data is the tail of its tag body as received, so the body is a small header plus
that data: `video_frame_header` / `audio_frame_header` give the header alone, for a caller
that can hand both pieces to the chunk muxer without joining them first.
"""

from __future__ import annotations

from relay.media.flv import (
    AAC_RAW,
    AAC_SEQUENCE_HEADER,
    AVC_NALU,
    AVC_SEQUENCE_HEADER,
    CODEC_ID_AVC,
    EX_CODED_FRAMES,
    EX_CODED_FRAMES_X,
    EX_SEQUENCE_START,
    FRAME_INTER,
    FRAME_KEY,
    SOUND_FORMAT_AAC,
)
from relay.media.units import AudioConfig, Codec, MediaFrame, TrackKind, VideoConfig
from relay.rtmp.amf0 import AmfValue

_IS_EX_HEADER = 0x80
_FOURCCS = {Codec.HEVC: b"hvc1", Codec.AV1: b"av01", Codec.VP9: b"vp09"}

# FLV E.4.2.1: for AAC, SoundRate 3 (44 kHz), SoundSize 1 (16-bit) and SoundType 1 (stereo)
# always; the decoder reads the real values from the AudioSpecificConfig. Hence 0xAF.
_AAC_FIRST_BYTE = SOUND_FORMAT_AAC << 4 | 3 << 2 | 1 << 1 | 1

#: onMetaData's audiocodecid for AAC (FLV E.4.2.1 SoundFormat).
AUDIO_CODEC_ID_AAC = SOUND_FORMAT_AAC

_SI24_MIN = -(1 << 23)
_SI24_MAX = (1 << 23) - 1


def video_config_tag(config: VideoConfig) -> bytes:
    """The sequence header carrying `config`'s decoder configuration record."""
    if config.codec is Codec.H264:
        # E.4.3.1: KeyFrame | AVC, AVCPacketType 0, CompositionTime 0, then the avcC.
        return bytes((FRAME_KEY << 4 | CODEC_ID_AVC, AVC_SEQUENCE_HEADER, 0, 0, 0)) + \
            config.record
    # E-RTMP: IsExHeader | KeyFrame | SequenceStart, FourCC, then the hvcC / av1C / vpcC.
    return bytes((_IS_EX_HEADER | FRAME_KEY << 4 | EX_SEQUENCE_START,)) + \
        _fourcc(config.codec) + config.record


def video_frame_header(frame: MediaFrame, codec: Codec) -> bytes:
    """The bytes that precede `frame.data` in its video tag body.

    Raises ValueError when the composition time offset (pts - dts) does not fit the SI24 of
    the tag (more than 2.3 hours either way: a broken source).
    """
    frame_type = FRAME_KEY if frame.keyframe else FRAME_INTER
    offset = frame.pts - frame.dts
    if codec is Codec.H264:
        # E.4.3.1: AVCPacketType 1 (NALU) and the SI24 CompositionTime, in ms.
        return bytes((frame_type << 4 | CODEC_ID_AVC, AVC_NALU)) + _si24(offset)
    if codec is Codec.HEVC and offset:
        # E-RTMP CodedFrames: for HEVC (and AVC) an SI24 composition time follows the FourCC.
        return bytes((_IS_EX_HEADER | frame_type << 4 | EX_CODED_FRAMES,)) + \
            _fourcc(codec) + _si24(offset)
    if codec is not Codec.HEVC and offset:
        raise ValueError(f"a {codec} frame has a composition offset of {offset} ms; Enhanced "
                         f"RTMP carries none for {codec}")
    # CodedFramesX: the composition time is implied 0 (and AV1 / VP9 never carry one).
    return bytes((_IS_EX_HEADER | frame_type << 4 | EX_CODED_FRAMES_X,)) + _fourcc(codec)


def video_frame_tag(frame: MediaFrame, codec: Codec) -> bytes:
    """The whole video tag body of `frame` (one copy of its data)."""
    return video_frame_header(frame, codec) + frame.data


def audio_config_tag(config: AudioConfig) -> bytes:
    """The AAC sequence header (E.4.2.1 AACPacketType 0) carrying the AudioSpecificConfig."""
    if config.codec is not Codec.AAC:
        raise ValueError(f"audio codec {config.codec} has no FLV form; only AAC is carried")
    return bytes((_AAC_FIRST_BYTE, AAC_SEQUENCE_HEADER)) + config.record


#: The header of every raw AAC frame's tag body (AACPacketType 1).
AUDIO_FRAME_HEADER = bytes((_AAC_FIRST_BYTE, AAC_RAW))


def audio_frame_tag(frame: MediaFrame) -> bytes:
    """The whole audio tag body of a raw AAC frame (one copy of its data)."""
    return AUDIO_FRAME_HEADER + frame.data


def frame_tag(frame: MediaFrame, video_codec: Codec | None) -> bytes:
    """The tag body of any frame; `video_codec` is the video track's (needed for video)."""
    if frame.kind is TrackKind.AUDIO:
        return audio_frame_tag(frame)
    if video_codec is None:
        raise ValueError("a video frame without a video track configuration")
    return video_frame_tag(frame, video_codec)


def video_codec_id(codec: Codec) -> int:
    """onMetaData's videocodecid: 7 for AVC (E.4.3.1 CodecID); for the Enhanced RTMP codecs
    the FourCC read as a big-endian number, as E-RTMP v1 says for metadata."""
    if codec is Codec.H264:
        return CODEC_ID_AVC
    return int.from_bytes(_fourcc(codec), "big")


def metadata(video: VideoConfig | None, audio: AudioConfig | None) -> dict[str, AmfValue]:
    """The `onMetaData` object (FLV E.5) for `@setDataFrame`: what the tracks say."""
    values: dict[str, AmfValue] = {}
    if video is not None:
        if video.width and video.height:
            values["width"] = float(video.width)
            values["height"] = float(video.height)
        if video.frame_rate:
            values["framerate"] = float(video.frame_rate)
        values["videocodecid"] = float(video_codec_id(video.codec))
    if audio is not None:
        values["audiocodecid"] = float(AUDIO_CODEC_ID_AAC)
        values["audiosamplerate"] = float(audio.sample_rate)
        values["audiochannels"] = float(audio.channels)
        values["audiosamplesize"] = 16.0
        values["stereo"] = audio.channels >= 2
    values["encoder"] = "Relay"
    return values


def _fourcc(codec: Codec) -> bytes:
    fourcc = _FOURCCS.get(codec)
    if fourcc is None:
        raise ValueError(f"video codec {codec} has no Enhanced RTMP FourCC")
    return fourcc


def _si24(value: int) -> bytes:
    if not _SI24_MIN <= value <= _SI24_MAX:
        raise ValueError(f"composition time offset {value} ms does not fit FLV's signed "
                         f"24 bits ({_SI24_MIN}..{_SI24_MAX})")
    return (value & 0xFFFFFF).to_bytes(3, "big")
