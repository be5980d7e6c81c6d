"""CMAF / fragmented MP4 writing (ISO/IEC 14496-12, ISO/IEC 23000-19): init segments and
media fragments for the HLS packager.

Interface agreed with the segmenter and the packager; the implementation fills it in.
Track ids are 1-based in the order the configurations are given to `init_segment`.
Video uses a 90 kHz timescale, audio its sample rate.

Theory of operation: the init segment (ftyp + moov), written once per stream and whenever the
tracks change, is built here from nested boxes; every sample table in it is empty, since all
samples arrive in movie fragments (14496-12 8.8.1, mvex). Media fragments (moof + mdat) run for
every part, so they are written by the native module `relay._native.fmp4`, which reads the
`TrackRun`s below directly. No edit list is written: a sample's presentation time is its decode
time plus its composition offset, so a segmenter that wants the first frame presented at its
decode time gives the fragments negative offsets (trun version 1 allows them).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, NamedTuple

from relay._native import fmp4 as _native
from relay.media.units import AudioConfig, Codec, VideoConfig

VIDEO_TIMESCALE: Final = 90_000

#: Largest fragment `media_fragment` writes (trun's data_offset is a signed 32-bit offset).
MAX_FRAGMENT_SIZE: Final = _native.MAX_FRAGMENT_SIZE

#: ftyp (14496-12 4.3). Major brand `iso6`: the fragments use tfdt, default-base-is-moof in
#: tfhd (brought in with the iso5 brand) and trun version 1 with signed composition offsets,
#: which ffmpeg's muxer also marks with an iso6 major brand (14496-12 Annex E lists the brands).
#: Compatible: `iso6` again, for readers that only scan the list; `cmfc`, the CMAF structural
#: brand of a CMAF header (23000-19 7.2); `mp41`, the MP4 file format of the mp4a + esds sample
#: entry (14496-14). `isom` is left out on purpose: it would promise that a reader of the
#: first edition's features can play these fragments.
MAJOR_BRAND: Final = b"iso6"
MINOR_VERSION: Final = 0
COMPATIBLE_BRANDS: Final = (b"iso6", b"cmfc", b"mp41")

#: mvhd timescale: the movie has no duration (it is all fragments), so this only has to be valid.
MOVIE_TIMESCALE: Final = 1000

#: 14496-12 8.4.2 mdhd language: ISO 639-2/T "und", three 5-bit letters (each minus 0x60).
_LANGUAGE_UND: Final = (ord("u") - 0x60) << 10 | (ord("n") - 0x60) << 5 | (ord("d") - 0x60)
#: 14496-12 8.2.2 / 8.3.2 unity matrix, 16.16 and 2.30 fixed point.
_UNITY_MATRIX: Final = struct.pack(">9i", 0x10000, 0, 0, 0, 0x10000, 0, 0, 0, 0x40000000)
#: 14496-12 8.3.2 tkhd flags: track_enabled | track_in_movie.
_TKHD_FLAGS: Final = 0x000003
#: 14496-12 12.1.3 VisualSampleEntry: 72 dpi, 16.16.
_RESOLUTION_72_DPI: Final = 0x00480000
#: 14496-12 12.1.3 depth 0x0018: colour, no alpha.
_DEPTH_COLOUR: Final = 0x0018
#: Sample entry fields are 16 bits wide (12.1.3 width/height, 12.2.3 channelcount).
_U16_MAX: Final = 0xFFFF

# 14496-1 7.2.2.1 descriptor tags and 7.2.6.6 DecoderConfigDescriptor values.
_ES_DESCR_TAG: Final = 0x03
_DECODER_CONFIG_DESCR_TAG: Final = 0x04
_DEC_SPECIFIC_INFO_TAG: Final = 0x05
_SL_CONFIG_DESCR_TAG: Final = 0x06
#: objectTypeIndication 0x40: Audio ISO/IEC 14496-3 (the AAC family; 7.2.6.6.2 Table 5).
_OBJECT_TYPE_AUDIO_14496_3: Final = 0x40
#: streamType 0x05: AudioStream (7.2.6.6.2 Table 6).
_STREAM_TYPE_AUDIO: Final = 0x05
#: SLConfigDescriptor predefined = 2: "reserved for use in MP4 files" (14496-1 7.3.2.3.2,
#: required by 14496-14 4.1.2).
_SL_PREDEFINED_MP4: Final = 0x02


def timescale_of(config: VideoConfig | AudioConfig) -> int:
    """The media timescale a track is written with."""
    return VIDEO_TIMESCALE if isinstance(config, VideoConfig) else config.sample_rate


class Sample(NamedTuple):
    """One access unit as it goes into a `trun` and the `mdat`.

    A named tuple rather than a frozen dataclass: the segmenter makes one per frame, and a
    tuple is made in a third of the time or less (the timing and its command are in
    benchmarks/README.md, with the f5d43a7 run).
    """

    duration: int  # in the track's timescale
    keyframe: bool  # sync sample (every AAC frame is one)
    composition_offset: int  # pts - dts in the track's timescale (may be negative)
    data: bytes  # AVCC/HVCC length-prefixed NAL units, or one raw AAC frame


@dataclass(frozen=True, slots=True)
class TrackRun:
    """One track's samples in one fragment."""

    track_id: int
    base_media_decode_time: int  # tfdt, in the track's timescale
    samples: Sequence[Sample]


def init_segment(tracks: Sequence[VideoConfig | AudioConfig]) -> bytes:
    """ftyp + moov (mvhd, one trak per track, mvex with a trex per track).

    Raises ValueError for no tracks, for a codec that cannot be packaged (AV1 and VP9, whose
    configurations carry no picture size), or for a size, channel count or sample rate that does
    not fit its field.
    """
    if not tracks:
        raise ValueError("init_segment needs at least one track configuration, got none")
    sample_entries = [_sample_entry(config) for config in tracks]  # validates before writing
    ftyp = _box(b"ftyp", MAJOR_BRAND, _u32(MINOR_VERSION), *COMPATIBLE_BRANDS)
    traks = [
        _trak(track_id, config, entry)
        for track_id, (config, entry) in enumerate(zip(tracks, sample_entries, strict=True), 1)
    ]
    trexs = [_trex(track_id) for track_id in range(1, len(tracks) + 1)]
    moov = _box(b"moov", _mvhd(next_track_id=len(tracks) + 1), *traks, _box(b"mvex", *trexs))
    return ftyp + moov


def media_fragment(sequence_number: int, runs: Sequence[TrackRun]) -> bytes:
    """moof (mfhd, a traf per run: tfhd, tfdt version 1, trun) + one mdat.

    Each traf has default-base-is-moof set and a trun version 1 with every sample's duration,
    size, flags (sync or not, from `keyframe`) and signed composition offset; the mdat holds the
    runs' sample data in run order. Raises ValueError, naming the value, for no runs, a run
    without samples, two runs for one track, a track id of 0, a field out of its range (a
    negative duration, a sample of 4 GiB or more) or a fragment over MAX_FRAGMENT_SIZE.
    """
    return _native.media_fragment(sequence_number, runs)


# --- boxes (ISO/IEC 14496-12 4.2) ------------------------------------------------------------


def _u8(value: int) -> bytes:
    return struct.pack(">B", value)


def _u16(value: int) -> bytes:
    return struct.pack(">H", value)


def _u32(value: int) -> bytes:
    return struct.pack(">I", value)


def _box(fourcc: bytes, *payload: bytes) -> bytes:
    """4.2 Box: 32-bit size (header included), type, payload."""
    body = b"".join(payload)
    return _u32(8 + len(body)) + fourcc + body


def _full_box(fourcc: bytes, version: int, flags: int, *payload: bytes) -> bytes:
    """4.2 FullBox: a Box whose payload starts with version (8 bits) and flags (24 bits)."""
    return _box(fourcc, _u32(version << 24 | flags), *payload)


def _mvhd(next_track_id: int) -> bytes:
    """8.2.2 Movie Header, version 0: no times, no duration (fragments carry the media)."""
    return _full_box(
        b"mvhd", 0, 0,
        _u32(0), _u32(0),  # creation_time, modification_time
        _u32(MOVIE_TIMESCALE), _u32(0),  # timescale, duration (unknown: live)
        _u32(0x00010000), _u16(0x0100), bytes(10),  # rate 1.0, volume 1.0, reserved
        _UNITY_MATRIX, bytes(24),  # matrix, pre_defined
        _u32(next_track_id),
    )


def _trak(track_id: int, config: VideoConfig | AudioConfig, sample_entry: bytes) -> bytes:
    """8.3.1 Track: tkhd and mdia (mdhd, hdlr, minf with the empty sample table)."""
    video = isinstance(config, VideoConfig)
    # 8.3.2 tkhd version 0: volume 1.0 for audio, 0 for video; width/height 16.16 for video.
    width, height = (config.width, config.height) if isinstance(config, VideoConfig) else (0, 0)
    tkhd = _full_box(
        b"tkhd", 0, _TKHD_FLAGS,
        _u32(0), _u32(0), _u32(track_id), _u32(0), _u32(0),  # times, track_ID, reserved, duration
        bytes(8), _u16(0), _u16(0),  # reserved, layer, alternate_group
        _u16(0 if video else 0x0100), _u16(0),  # volume, reserved
        _UNITY_MATRIX, _u32(width << 16), _u32(height << 16),
    )
    # 8.4.2 mdhd version 0: the media timescale; duration unknown (0).
    mdhd = _full_box(b"mdhd", 0, 0, _u32(0), _u32(0), _u32(timescale_of(config)), _u32(0),
                     _u16(_LANGUAGE_UND), _u16(0))
    # 8.4.3 hdlr: 'vide' / 'soun', with a null-terminated UTF-8 name.
    handler, name = (b"vide", b"VideoHandler") if video else (b"soun", b"SoundHandler")
    hdlr = _full_box(b"hdlr", 0, 0, _u32(0), handler, bytes(12), name + b"\0")
    # 12.1.2 vmhd (flags 1, graphicsmode copy, opcolor 0) / 12.2.2 smhd (balance 0).
    media_header = (_full_box(b"vmhd", 0, 1, _u16(0), bytes(6)) if video
                    else _full_box(b"smhd", 0, 0, _u16(0), _u16(0)))
    # 8.7.1 dinf / 8.7.2 dref with one 'url ' entry, flags 1: the media is in this file.
    dinf = _box(b"dinf", _full_box(b"dref", 0, 0, _u32(1), _full_box(b"url ", 0, 1)))
    # 8.5.1 stbl: stsd with the one sample entry; stts, stsc, stsz, stco with no entries.
    stbl = _box(
        b"stbl",
        _full_box(b"stsd", 0, 0, _u32(1), sample_entry),
        _full_box(b"stts", 0, 0, _u32(0)),
        _full_box(b"stsc", 0, 0, _u32(0)),
        _full_box(b"stsz", 0, 0, _u32(0), _u32(0)),  # sample_size, sample_count
        _full_box(b"stco", 0, 0, _u32(0)),
    )
    minf = _box(b"minf", media_header, dinf, stbl)
    return _box(b"trak", tkhd, _box(b"mdia", mdhd, hdlr, minf))


def _trex(track_id: int) -> bytes:
    """8.8.3 Track Extends: sample description 1; the other defaults are never used, since
    every trun carries each sample's duration, size and flags."""
    return _full_box(b"trex", 0, 0, _u32(track_id), _u32(1), _u32(0), _u32(0), _u32(0))


# --- sample entries (14496-12 8.5.2, 12.1.3, 12.2.3) -----------------------------------------


def _sample_entry(config: VideoConfig | AudioConfig) -> bytes:
    if isinstance(config, VideoConfig):
        return _visual_sample_entry(config)
    return _audio_sample_entry(config)


def _visual_sample_entry(config: VideoConfig) -> bytes:
    """12.1.3 VisualSampleEntry with its decoder configuration box.

    `avc1` + `avcC` (14496-15 5.4.2.1, 5.3.3.1) and `hvc1` + `hvcC` (14496-15 8.4.1.1,
    8.3.3.1): the record is the box payload exactly as the encoder sent it. The `avc1` / `hvc1`
    names (not `avc3` / `hev1`) say the parameter sets are in the record, which is what the
    sequence header gives us and what Apple's HLS authoring rules require.
    """
    if config.codec is Codec.H264:
        name, config_box = b"avc1", _box(b"avcC", config.record)
    elif config.codec is Codec.HEVC:
        name, config_box = b"hvc1", _box(b"hvcC", config.record)
    elif config.codec in (Codec.AV1, Codec.VP9):
        raise ValueError(
            f"cannot package {config.codec} video into fMP4 yet: its VideoConfig has no picture "
            "size (the sequence header is not parsed), which the sample entry and tkhd need; "
            "publish H.264 or HEVC")
    else:
        raise ValueError(f"{config.codec} is not a video codec; a VideoConfig needs h264 or hevc")
    for what, value in (("width", config.width), ("height", config.height)):
        if not 0 < value <= _U16_MAX:
            raise ValueError(f"{config.codec} video {what} must be 1..{_U16_MAX}, got {value}")
    fields = b"".join((
        bytes(6), _u16(1),  # 8.5.2.2 SampleEntry: reserved, data_reference_index
        _u16(0), _u16(0), bytes(12),  # pre_defined, reserved, pre_defined
        _u16(config.width), _u16(config.height),
        _u32(_RESOLUTION_72_DPI), _u32(_RESOLUTION_72_DPI), _u32(0),  # resolutions, reserved
        _u16(1), bytes(32),  # frame_count, compressorname (empty Pascal string)
        _u16(_DEPTH_COLOUR), struct.pack(">h", -1),  # depth, pre_defined
    ))
    return _box(name, fields, config_box)


def _audio_sample_entry(config: AudioConfig) -> bytes:
    """12.2.3 AudioSampleEntry `mp4a` with an `esds` (14496-14 MP4AudioSampleEntry)."""
    if config.codec is not Codec.AAC:
        raise ValueError(f"cannot package {config.codec} audio into fMP4; only aac is supported")
    if not 0 < config.channels <= _U16_MAX:
        raise ValueError(f"AAC channel count must be 1..{_U16_MAX}, got {config.channels}")
    if config.sample_rate <= 0:
        raise ValueError(f"AAC sample rate must be positive, got {config.sample_rate}")
    # samplerate is 16.16 fixed point, so rates above 65535 Hz (88.2 and 96 kHz) cannot be
    # written; 0 is written then, as ffmpeg does: MP4 decoders configure from the
    # AudioSpecificConfig in the esds, and the media timescale (mdhd) holds the true rate.
    rate_field = config.sample_rate << 16 if config.sample_rate <= _U16_MAX else 0
    fields = b"".join((
        bytes(6), _u16(1),  # 8.5.2.2 SampleEntry: reserved, data_reference_index
        bytes(8),  # reserved
        _u16(config.channels), _u16(16),  # channelcount, samplesize
        _u16(0), _u16(0), _u32(rate_field),  # pre_defined, reserved, samplerate
    ))
    return _box(b"mp4a", fields, _esds(config.record))


def _esds(audio_specific_config: bytes) -> bytes:
    """14496-14 ESDBox: an ES_Descriptor (14496-1 7.2.6.5) holding a
    DecoderConfigDescriptor (7.2.6.6) with the AudioSpecificConfig as its DecoderSpecificInfo
    (7.2.6.7), and the SLConfigDescriptor (7.3.2.3) that MP4 files use."""
    decoder_specific_info = _descriptor(_DEC_SPECIFIC_INFO_TAG, audio_specific_config)
    decoder_config = _descriptor(
        _DECODER_CONFIG_DESCR_TAG,
        _u8(_OBJECT_TYPE_AUDIO_14496_3),
        _u8(_STREAM_TYPE_AUDIO << 2 | 0 << 1 | 1),  # streamType, upStream 0, reserved 1
        bytes(3),  # bufferSizeDB: unknown, 0
        _u32(0), _u32(0),  # maxBitrate, avgBitrate: 0 = variable / not known (7.2.6.6.2)
        decoder_specific_info,
    )
    sl_config = _descriptor(_SL_CONFIG_DESCR_TAG, _u8(_SL_PREDEFINED_MP4))
    es_descriptor = _descriptor(
        _ES_DESCR_TAG,
        _u16(0),  # ES_ID: 0 in an MP4 file, where the track id identifies it (14496-14 4.1.2)
        _u8(0),  # streamDependenceFlag, URL_Flag, OCRstreamFlag 0; streamPriority 0
        decoder_config,
        sl_config,
    )
    return _full_box(b"esds", 0, 0, es_descriptor)


def _descriptor(tag: int, *payload: bytes) -> bytes:
    """14496-1 8.3.3 expandable class: tag, then sizeOfInstance in 7-bit groups, most
    significant first, each but the last with the top bit set (the shortest form).

    sizeOfInstance allows four groups (28 bits); an AudioSpecificConfig arrives in one RTMP
    message, whose length field has 24 bits, so the payloads here always fit."""
    body = b"".join(payload)
    size = len(body)
    groups = [size & 0x7F]
    size >>= 7
    while size:
        groups.append(0x80 | size & 0x7F)
        size >>= 7
    return bytes([tag, *reversed(groups)]) + body
