"""MPEG-TS elementary streams (PES payloads) to media units: what SRT ingest publishes.

Theory of operation: the TS demuxer (`relay._native.mpegts`) hands over the first program's
streams (`on_program`) and each reassembled PES packet (`on_pes`); this assembler turns them
into the `VideoConfig` / `AudioConfig` / `MediaFrame` units RTMP ingest produces, so nothing
downstream knows which protocol fed it. The byte loops are in `relay._native.elementary`.

- Tracks. The first H.264 (stream type 0x1B) or HEVC (0x24) stream of the program is the
  video track, the first AAC ADTS stream (0x0F) the audio track; every other stream is ignored
  and counted. A track that has published a configuration keeps its codec: a PMT that changes
  it raises `TsIngestError` (a live session cannot switch codecs; the encoder must reconnect).
- Video. A PES need not carry a whole access unit (H.222.0 2.4.3.7: a PTS is coded only in a
  PES where an access unit starts), so an access unit is complete when the next one starts: a
  PES with a new PTS, or `flush()`. PES without a PTS, or repeating the PTS and DTS of the held
  one, continue it. This holds each frame for one frame interval. The Annex-B access unit
  becomes 4-byte length-prefixed NAL units (ISO 14496-15, the `MediaFrame.data` form); access
  unit delimiters are dropped (their job, marking access unit boundaries, is done by the
  sample boundaries) and so is filler data (it pads a constant-rate channel, H.264 7.4.2.7,
  and decodes to nothing). Parameter sets also leave the samples: they go into the decoder
  configuration record (avcC from SPS + PPS, hvcC from VPS + SPS + PPS), and a new
  `VideoConfig` is published, before the frame that carried them, whenever they change. The
  packager writes `avc1` / `hvc1` sample entries, which say the parameter sets are in the
  record (for `hvc1`, 14496-15 8.4.1.1.2 makes array_completeness 1 mandatory: none may be in
  the samples), and RTMP encoders send them the same way, in the sequence header only.
  Keyframes are IDR pictures (H.264 nal_unit_type 5) and IRAP pictures (H.265 16..23), read
  from the NAL units: the adaptation field's random_access_indicator is not trusted.
- Audio. A PES carries several ADTS frames, and a frame may continue in the next PES; the
  unfinished tail is held (at most one frame) until the rest comes. Each frame becomes a
  `MediaFrame` of raw AAC; its time is the PES's PTS for the first frame that starts in that
  PES (H.222.0 2.4.3.7) and advances 1024 samples per frame. The AudioSpecificConfig comes
  from the ADTS fixed header and a new `AudioConfig` is published when it changes.
- Time. PTS and DTS are 33-bit 90 kHz counts; one `PtsUnwrapper` and one origin serve every
  track, so audio and video stay in sync. The origin is the first timestamp seen minus
  `TIMELINE_HEADROOM_MS`: H.222.0 2.4.2.3 lets a muxer send data up to a second before it is
  decoded, so another track's first timestamp may be that much earlier than the first one seen
  and must still land at or above 0. Units are integer milliseconds (rounded down).
- Losses. Frames before the track's first configuration and keyframe are dropped and counted.
  A PES flagged `discontinuity` (the demuxer saw packets missing) loses its frames: for video
  the access unit it belongs to and the one held before it (the gap may have cut that one's
  tail), then every frame up to the next keyframe; for audio the frames of that PES. Anything
  malformed is dropped and counted, never raised: only `TsIngestError` ends a session.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from relay._native.elementary import (
    ADTS_MAX_FRAME_SIZE,
    AnnexBError,
    annexb_to_length_prefixed,
    split_adts,
)
from relay.limits import MAX_FRAME_SIZE
from relay.media import h264, hevc
from relay.media.aac import SAMPLING_FREQUENCIES, aac_audio_config
from relay.media.bitreader import BitReader, nal_to_rbsp
from relay.media.timestamps import PtsUnwrapper
from relay.media.units import (
    AudioConfig,
    Codec,
    MediaFormatError,
    MediaFrame,
    TrackConfig,
    TrackKind,
    VideoConfig,
)

#: ISO 13818-1 Table 2-34 stream_type values Relay carries.
STREAM_TYPE_AAC_ADTS = 0x0F
STREAM_TYPE_H264 = 0x1B
STREAM_TYPE_HEVC = 0x24

_STREAM_TYPE_NAMES = {STREAM_TYPE_AAC_ADTS: "AAC (ADTS)", STREAM_TYPE_H264: "H.264",
                      STREAM_TYPE_HEVC: "HEVC", 0x03: "MPEG-1 audio", 0x04: "MPEG-2 audio",
                      0x02: "MPEG-2 video", 0x06: "private data", 0x11: "AAC (LATM)",
                      0x15: "metadata", 0x81: "AC-3", 0x87: "E-AC-3"}

#: The longest access unit held while its PES packets arrive, in bytes (the TS demuxer's
#: default PES bound, so one maximal PES fits); a longer one is dropped and counted.
MAX_ACCESS_UNIT_SIZE = MAX_FRAME_SIZE
#: NAL units in one access unit. H.265 level 6.2 allows 600 slice segments per picture
#: (Table A.8) and H.264 streams use far fewer; SEI and parameter sets add a handful.
MAX_NAL_UNITS = 2048
#: The longest parameter set kept (VPS / SPS / PPS), in bytes. Real ones are tens of bytes,
#: a few hundred with explicit scaling lists (AVC-Intra); this leaves room for any of them.
MAX_PARAMETER_SET_SIZE = 4096
#: Distinct parameter sets (by type, layer and id) kept for one track's record. Encoders use
#: one or two of each; past this the record restarts from the access unit's own sets.
MAX_PARAMETER_SETS = 32
#: Bytes of an unfinished ADTS frame held for the next PES: one whole frame at most, since
#: aac_frame_length is 13 bits (the tail `split_adts` leaves is always shorter).
MAX_PENDING_AUDIO_BYTES = ADTS_MAX_FRAME_SIZE
#: How far before the first timestamp seen the timeline's 0 lies (see the module docstring).
TIMELINE_HEADROOM_MS = 1000

_TICKS_PER_MS = 90  # the 90 kHz system clock of H.222.0 2.4.3.7
_AAC_FRAME_SAMPLES = 1024  # an ADTS raw_data_block decodes to 1024 samples (13818-7 6.2)


class TsIngestError(ValueError):
    """A problem that ends the SRT session; the message says what happened and what to do."""


@dataclass(frozen=True, slots=True)
class _VideoCodec:
    codec: Codec
    hevc: bool
    nal_type_bits: int
    #: NAL unit types left out of samples: access unit delimiter, filler data, parameter sets.
    drop_types: int
    #: The parameter set NAL unit types (copied out of the access unit for the record).
    parameter_set_types: int
    #: The nal_unit_types of random access pictures.
    keyframe_types: int


_H264 = _VideoCodec(
    Codec.H264, hevc=False, nal_type_bits=5,
    drop_types=(1 << 9) | (1 << 12) | (1 << h264.NAL_TYPE_SPS) | (1 << h264.NAL_TYPE_PPS),
    parameter_set_types=(1 << h264.NAL_TYPE_SPS) | (1 << h264.NAL_TYPE_PPS),
    keyframe_types=1 << h264.NAL_TYPE_IDR,
)
_HEVC_PARAMETER_SETS = ((1 << hevc.NAL_TYPE_VPS) | (1 << hevc.NAL_TYPE_SPS)
                        | (1 << hevc.NAL_TYPE_PPS))
_HEVC = _VideoCodec(
    Codec.HEVC, hevc=True, nal_type_bits=6,
    drop_types=(1 << 35) | (1 << 38) | _HEVC_PARAMETER_SETS,
    parameter_set_types=_HEVC_PARAMETER_SETS,
    keyframe_types=0xFF << 16,  # BLA, IDR, CRA and the reserved IRAP types 22, 23
)
_VIDEO_CODECS = {STREAM_TYPE_H264: _H264, STREAM_TYPE_HEVC: _HEVC}


@dataclass(slots=True)
class _VideoTrack:
    pid: int | None
    stream_type: int
    codec: _VideoCodec
    config: VideoConfig | None = None
    #: Parameter sets by (nal_unit_type, nuh_layer_id, id), in the order first seen.
    parameter_sets: dict[tuple[int, int, int], bytes] = field(default_factory=dict)
    waiting_for_keyframe: bool = True
    #: The access unit being received: its PES payloads, times (unwrapped ticks), damage.
    pending: list[bytes] | None = None
    pending_size: int = 0
    pending_pts: int = 0
    pending_dts: int = 0
    pending_damaged: bool = False


@dataclass(slots=True)
class _AudioTrack:
    pid: int | None
    config: AudioConfig | None = None
    #: The unfinished ADTS frame at the end of the previous PES.
    held: bytes = b""
    #: Frame clock: the next frame's time is base + samples * 90000 // rate ticks; base is None
    #: until a PTS is known (and again after a discontinuity), rate 0 until a frame is seen.
    base: int | None = None
    samples: int = 0
    rate: int = 0


#: `TsMediaAssembler`'s counters by attribute name: an SRT connection's are summed into
#: `relay.srt.server.SrtIngestCounters.media` when it ends, and /metrics exports them.
COUNTERS = ("video_frames", "audio_frames", "configs", "ignored_streams", "ignored_pes",
            "skipped_frames", "discontinuities", "malformed", "unsupported_frames",
            "audio_skipped_bytes", "early_frames", "empty_access_units")


class TsMediaAssembler:
    """Turns one SRT session's PES packets into media units (see the module docstring).

    Counters, read at scrape time: `video_frames`, `audio_frames` and `configs` published;
    `ignored_streams` (program streams not carried) and `ignored_pes` (their PES);
    `skipped_frames` (before a track's configuration and keyframe, or waiting for a keyframe
    after a loss, or audio before any PTS); `discontinuities` (frames dropped because the
    demuxer flagged missing data); `malformed` (access units or frames dropped as invalid:
    bad Annex-B, bad parameter sets, over a size bound, a continuation without a start);
    `unsupported_frames` (ADTS frames with several raw data blocks or channel configuration
    0); `audio_skipped_bytes` (bytes skipped to find an ADTS header); `early_frames` (frames
    timed before the timeline's 0); `empty_access_units` (access units with nothing left to
    carry once delimiters and parameter sets are out).
    """

    def __init__(self) -> None:
        self.video_frames = 0
        self.audio_frames = 0
        self.configs = 0
        self.ignored_streams = 0
        self.ignored_pes = 0
        self.skipped_frames = 0
        self.discontinuities = 0
        self.malformed = 0
        self.unsupported_frames = 0
        self.audio_skipped_bytes = 0
        self.early_frames = 0
        self.empty_access_units = 0
        self._video: _VideoTrack | None = None
        self._audio: _AudioTrack | None = None
        self._ignored: frozenset[tuple[int, int]] = frozenset()
        self._timestamps = PtsUnwrapper()
        self._origin: int | None = None

    @property
    def pending_audio_bytes(self) -> int:
        """Bytes of an unfinished ADTS frame held for the next PES."""
        return len(self._audio.held) if self._audio else 0

    @property
    def pending_video_bytes(self) -> int:
        """Bytes of the access unit being received."""
        return self._video.pending_size if self._video and self._video.pending else 0

    # -- program ------------------------------------------------------------------------

    def on_program(self, streams: Sequence[tuple[int, int]]) -> list[TrackConfig | MediaFrame]:
        """Take the program's (pid, stream_type) list (PMT order); returns the access unit
        completed by a video PID leaving. Raises `TsIngestError` when a configured track's
        codec changes."""
        video: tuple[int, int] | None = None
        audio: int | None = None
        ignored = set()
        for pid, stream_type in streams:
            if stream_type in _VIDEO_CODECS and video is None:
                video = (pid, stream_type)
            elif stream_type == STREAM_TYPE_AAC_ADTS and audio is None:
                audio = pid
            else:
                ignored.add((pid, stream_type))
        self._check_codec_kept(streams, video)
        self.ignored_streams += len(ignored - self._ignored)
        self._ignored = frozenset(ignored)
        out: list[TrackConfig | MediaFrame] = []
        track = self._video
        if video is None:
            if track is not None:
                out += self._finish_video(track, damaged_after=False)
                track.pid = None
        elif track is None:
            self._video = _VideoTrack(pid=video[0], stream_type=video[1],
                                      codec=_VIDEO_CODECS[video[1]])
        elif (track.pid, track.stream_type) != video:
            out += self._finish_video(track, damaged_after=False)
            if track.stream_type != video[1]:  # not configured yet, or _check_codec_kept raised
                track.codec = _VIDEO_CODECS[video[1]]
                track.parameter_sets.clear()
            track.pid, track.stream_type = video
            track.waiting_for_keyframe = True
        if audio is None:
            if self._audio is not None:
                self._audio.pid = None
        elif self._audio is None:
            self._audio = _AudioTrack(pid=audio)
        elif self._audio.pid != audio:
            self._audio.pid = audio
            self._audio.held = b""
            self._audio.base = None
        return out

    def _check_codec_kept(self, streams: Sequence[tuple[int, int]],
                          video: tuple[int, int] | None) -> None:
        types = dict(streams)
        track = self._video
        if track is not None and track.config is not None:
            if video is not None and video[1] != track.stream_type:
                raise TsIngestError(self._codec_change("video", track.stream_type, *video))
            if track.pid is not None and types.get(track.pid, track.stream_type) \
                    != track.stream_type:
                raise TsIngestError(
                    self._codec_change("video", track.stream_type, track.pid, types[track.pid]))
        audio = self._audio
        if audio is not None and audio.config is not None and audio.pid is not None:
            new_type = types.get(audio.pid, STREAM_TYPE_AAC_ADTS)
            if new_type != STREAM_TYPE_AAC_ADTS:
                raise TsIngestError(
                    self._codec_change("audio", STREAM_TYPE_AAC_ADTS, audio.pid, new_type))

    @staticmethod
    def _codec_change(kind: str, old: int, pid: int, new: int) -> str:
        return (f"the program's {kind} changed codec mid-stream from {_type_name(old)} to "
                f"{_type_name(new)} (PID {pid}); one session carries one codec per track: "
                "stop the encoder and publish again")

    # -- PES ----------------------------------------------------------------------------

    def on_pes(self, pid: int, stream_type: int, pts: int, dts: int, random_access: bool,
               discontinuity: bool, data: bytes | bytearray | memoryview,
               ) -> list[TrackConfig | MediaFrame]:
        """Take one PES packet: raw 33-bit 90 kHz `pts` / `dts` (-1 when absent), the
        demuxer's flags and the payload. `random_access` is not used: keyframes are read from
        the NAL units. Returns the units completed by this packet, in order."""
        del random_access  # see the docstring
        video = self._video
        if video is not None and pid == video.pid and stream_type == video.stream_type:
            return self._video_pes(video, pts, dts, discontinuity, bytes(data))
        audio = self._audio
        if audio is not None and pid == audio.pid and stream_type == STREAM_TYPE_AAC_ADTS:
            return self._audio_pes(audio, pts, discontinuity, data)
        self.ignored_pes += 1
        return []

    def flush(self) -> list[TrackConfig | MediaFrame]:
        """End of input: complete the held access unit; an unfinished ADTS frame is dropped."""
        out: list[TrackConfig | MediaFrame] = []
        if self._video is not None:
            out += self._finish_video(self._video, damaged_after=False)
        if self._audio is not None and self._audio.held:
            self._audio.held = b""
            self.malformed += 1
        return out

    def _ticks(self, pts: int, dts: int) -> tuple[int, int]:
        """Unwrapped (pts, dts) ticks; the first call fixes the timeline's origin."""
        pts_ticks = self._timestamps.unwrap(pts)
        dts_ticks = self._timestamps.unwrap(dts) if 0 <= dts != pts else pts_ticks
        if self._origin is None:
            self._origin = min(pts_ticks, dts_ticks) - TIMELINE_HEADROOM_MS * _TICKS_PER_MS
        return pts_ticks, dts_ticks

    def _ms(self, ticks: int) -> int:
        assert self._origin is not None  # set with the first timestamp
        return (ticks - self._origin) // _TICKS_PER_MS

    # -- video --------------------------------------------------------------------------

    def _video_pes(self, track: _VideoTrack, pts: int, dts: int, discontinuity: bool,
                   data: bytes) -> list[TrackConfig | MediaFrame]:
        if pts >= 0:
            pts_ticks, dts_ticks = self._ticks(pts, dts)
        continues = track.pending is not None and (
            pts < 0 or (pts_ticks, dts_ticks) == (track.pending_pts, track.pending_dts))
        if continues:
            assert track.pending is not None
            if track.pending_size + len(data) > MAX_ACCESS_UNIT_SIZE:
                track.pending = None
                track.waiting_for_keyframe = True
                self.malformed += 1
                return []
            track.pending.append(data)
            track.pending_size += len(data)
            track.pending_damaged |= discontinuity
            return []
        if pts < 0:  # a continuation whose start was lost
            self.malformed += 1
            track.waiting_for_keyframe = True
            return []
        out = self._finish_video(track, damaged_after=discontinuity)
        if len(data) > MAX_ACCESS_UNIT_SIZE:
            self.malformed += 1
            track.waiting_for_keyframe = True
            return out
        track.pending = [data]
        track.pending_size = len(data)
        track.pending_pts, track.pending_dts = pts_ticks, dts_ticks
        track.pending_damaged = discontinuity
        return out

    def _finish_video(self, track: _VideoTrack, *,
                      damaged_after: bool) -> list[TrackConfig | MediaFrame]:
        """Turn the held access unit into units; `damaged_after`: the next PES lost data, and
        the gap may have cut this one's tail."""
        chunks = track.pending
        if chunks is None:
            return []
        track.pending = None
        if track.pending_damaged or damaged_after:
            self.discontinuities += 1
            track.waiting_for_keyframe = True
            return []
        codec = track.codec
        try:
            sample, nal_types, parameter_sets = annexb_to_length_prefixed(
                chunks[0] if len(chunks) == 1 else b"".join(chunks), codec.hevc,
                codec.drop_types, codec.parameter_set_types, MAX_NAL_UNITS)
        except AnnexBError:
            self.malformed += 1
            track.waiting_for_keyframe = True
            return []
        out: list[TrackConfig | MediaFrame] = []
        if parameter_sets:
            try:
                config = self._video_config(track, parameter_sets)
            except MediaFormatError:
                self.malformed += 1
                track.waiting_for_keyframe = True
                return []
            if config is not None:
                out.append(config)
        if not sample:
            self.empty_access_units += 1
            return out
        keyframe = bool(nal_types & codec.keyframe_types)
        if track.config is None or (track.waiting_for_keyframe and not keyframe):
            self.skipped_frames += 1
            return out
        dts_ms, pts_ms = self._ms(track.pending_dts), self._ms(track.pending_pts)
        if dts_ms < 0 or pts_ms < 0:
            self.early_frames += 1
            track.waiting_for_keyframe = True
            return out
        track.waiting_for_keyframe = False
        self.video_frames += 1
        out.append(MediaFrame(TrackKind.VIDEO, dts_ms, pts_ms, keyframe, sample))
        return out

    def _video_config(self, track: _VideoTrack, nal_units: list[bytes]) -> VideoConfig | None:
        """Merge an access unit's parameter sets; a new `VideoConfig` when they changed and
        make a complete set. Raises `MediaFormatError` (and keeps the old sets) when one is
        invalid."""
        known = track.parameter_sets
        if all(nal in known.values() for nal in nal_units):
            return None  # the usual case: the same sets repeated before each keyframe
        merged = dict(known)
        for nal in nal_units:
            if len(nal) > MAX_PARAMETER_SET_SIZE:
                raise MediaFormatError(f"a parameter set is {len(nal)} bytes, over the "
                                       f"MAX_PARAMETER_SET_SIZE limit of {MAX_PARAMETER_SET_SIZE}")
            merged[_parameter_set_key(nal, track.codec.hevc)] = nal
        if len(merged) > MAX_PARAMETER_SETS:
            merged = {_parameter_set_key(nal, track.codec.hevc): nal for nal in nal_units}
            if len(merged) > MAX_PARAMETER_SETS:
                raise MediaFormatError(f"{len(merged)} parameter sets in one access unit, over "
                                       f"the MAX_PARAMETER_SETS limit of {MAX_PARAMETER_SETS}")
        by_type: dict[int, list[bytes]] = {}
        for (nal_type, _, _), nal in merged.items():
            by_type.setdefault(nal_type, []).append(nal)
        config: VideoConfig | None = None
        if track.codec.hevc:
            vps = by_type.get(hevc.NAL_TYPE_VPS, [])
            sps = by_type.get(hevc.NAL_TYPE_SPS, [])
            pps = by_type.get(hevc.NAL_TYPE_PPS, [])
            if vps and sps and pps:
                config = hevc.hevc_video_config(hevc.build_hvcc(vps, sps, pps))
        else:
            sps = by_type.get(h264.NAL_TYPE_SPS, [])
            pps = by_type.get(h264.NAL_TYPE_PPS, [])
            if sps and pps:
                config = h264.avc_video_config(h264.build_avcc(sps, pps))
        track.parameter_sets = merged
        if config is None or (track.config is not None and config.record == track.config.record):
            return None
        track.config = config
        self.configs += 1
        return config

    # -- audio --------------------------------------------------------------------------

    def _audio_pes(self, track: _AudioTrack, pts: int, discontinuity: bool,
                   data: bytes | bytearray | memoryview) -> list[TrackConfig | MediaFrame]:
        pts_ticks = self._ticks(pts, pts)[0] if pts >= 0 else None
        if discontinuity:
            # Which frame lost bytes is unknown: the PES's frames and the held tail go, and the
            # clock waits for the next PTS (the lost bytes may have been whole frames).
            self.discontinuities += 1
            track.held = b""
            track.base = None
            return []
        boundary = len(track.held)
        buffer = track.held + bytes(data) if boundary else data
        frames, consumed, skipped = split_adts(buffer)
        self.audio_skipped_bytes += skipped
        out: list[TrackConfig | MediaFrame] = []
        rebased = False
        for offset, start, end, header in frames:
            if not rebased and offset >= boundary and pts_ticks is not None:
                # H.222.0 2.4.3.7: the PTS is that of the first access unit starting here.
                track.base, track.samples, rebased = pts_ticks, 0, True
            blocks = (header & 0x03) + 1
            channels = (header >> 2) & 0x07
            rate = SAMPLING_FREQUENCIES[(header >> 5) & 0x0F]
            frame_ticks = self._audio_clock(track, rate)
            track.samples += _AAC_FRAME_SAMPLES * blocks
            if blocks > 1 or channels == 0:
                # Several raw data blocks would need splitting (and, with CRC, their position
                # table); channel configuration 0 needs the PCE from the payload. No streaming
                # encoder writes either.
                self.unsupported_frames += 1
                continue
            config = self._audio_config(track, header)
            if config is not None:
                out.append(config)
            if frame_ticks is None:
                self.skipped_frames += 1
                continue
            ms = self._ms(frame_ticks)
            if ms < 0:
                self.early_frames += 1
                continue
            self.audio_frames += 1
            out.append(MediaFrame(TrackKind.AUDIO, ms, ms, True, bytes(buffer[start:end])))
        if not rebased and pts_ticks is not None and consumed >= boundary \
                and consumed < len(buffer):
            track.base, track.samples = pts_ticks, 0  # the held frame starts in this PES
        track.held = bytes(buffer[consumed:])
        if len(track.held) > MAX_PENDING_AUDIO_BYTES:  # split_adts never leaves this much
            self.audio_skipped_bytes += len(track.held)
            track.held = b""
        return out

    @staticmethod
    def _audio_clock(track: _AudioTrack, rate: int) -> int | None:
        """This frame's time in ticks; the clock is rebased when the sampling rate changes."""
        if track.base is None:
            return None
        if rate != track.rate:
            if track.rate:
                track.base += track.samples * 90_000 // track.rate
            track.samples, track.rate = 0, rate
        return track.base + track.samples * 90_000 // rate

    def _audio_config(self, track: _AudioTrack, header: int) -> AudioConfig | None:
        # ISO 14496-3 1.6.2.1 AudioSpecificConfig from the ADTS fixed header (1.A.2.2.1):
        # audioObjectType = profile + 1, samplingFrequencyIndex, channelConfiguration, then a
        # GASpecificConfig of three zero bits (1024-sample frames, no core coder, no
        # extension), as ffmpeg's aac_adtstoasc writes it.
        profile, sampling_index, channels = header >> 9, (header >> 5) & 0x0F, (header >> 2) & 7
        record = ((profile + 1) << 11 | sampling_index << 7 | channels << 3).to_bytes(2, "big")
        if track.config is not None and track.config.record == record:
            return None
        config = aac_audio_config(record)  # object types 1..4 with a channel config: parses
        track.config = config
        self.configs += 1
        return config


def _parameter_set_key(nal: bytes, is_hevc: bool) -> tuple[int, int, int]:
    """(nal_unit_type, nuh_layer_id, parameter set id): a set replaces the one with its key.

    Raises `MediaFormatError` when the id cannot be read."""
    if is_hevc:
        nal_type = (nal[0] >> 1) & 0x3F
        layer = ((nal[0] & 0x01) << 5) | (nal[1] >> 3)
        if nal_type == hevc.NAL_TYPE_VPS:
            if len(nal) < 3:
                raise MediaFormatError("H.265 VPS is shorter than its id")
            return nal_type, layer, nal[2] >> 4  # vps_video_parameter_set_id, u(4)
        if nal_type == hevc.NAL_TYPE_SPS:
            # Only base-layer SPSs are parsed; an enhancement layer's replaces its layer's.
            sps_id = hevc.parse_hevc_sps(nal).seq_parameter_set_id if layer == 0 else 0
            return nal_type, layer, sps_id
        reader = BitReader(nal_to_rbsp(nal[2:]), "H.265 PPS")
        return nal_type, layer, reader.ue_max(63, "pps_pic_parameter_set_id")
    nal_type = nal[0] & 0x1F
    if nal_type == h264.NAL_TYPE_SPS:
        return nal_type, 0, h264.parse_avc_sps(nal).seq_parameter_set_id
    reader = BitReader(nal_to_rbsp(nal[1:]), "H.264 PPS")
    return nal_type, 0, reader.ue_max(255, "pic_parameter_set_id")


def _type_name(stream_type: int) -> str:
    name = _STREAM_TYPE_NAMES.get(stream_type)
    return f"{name} (stream type 0x{stream_type:02x})" if name else \
        f"stream type 0x{stream_type:02x}"
