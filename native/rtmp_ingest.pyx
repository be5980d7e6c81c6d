"""A publishing RTMP connection's hot path: chunks to media frames in one call per read.

Theory of operation. Once a publish is admitted, nearly every message an encoder sends is an
audio or video message carrying one coded frame (ffmpeg: about 77 a second for a 30 fps
stream with 44.1 kHz AAC), and ffmpeg writes each chunk as it muxes it, so a read holds one
or two messages. Doing the per-message work in Python (an event, a timestamp unwrap, a tag
parse, a frame) cost more than the chunk demuxing itself. `MediaIngest.drain()` does all of it
natively, per read: it takes complete messages from a `ChunkDemuxer` until the input runs
out, a bound is reached or a message that is not audio or video arrives, and for each audio
or video message

- extends its 32-bit timestamp to the session's 64-bit timeline (the shortest-step rule of
  `relay.media.timestamps`; the state lives here, and `unwrap()` serves the aggregate
  messages that the Python session splits), and
- parses the FLV tag header of the common coded-frame forms (FLV E.4.3.1 AVC NALU, E.4.2.1
  AAC raw, Enhanced RTMP CodedFrames / CodedFramesX) into a `MediaFrame`: codec, frame type,
  composition time offset, and the frame's bytes.

No copy is made of a frame's bytes: the demuxer (split_media, set here) receives them into a
bytes object of their own, apart from the tag header, and that object is the frame's data.
When the header was not buffered as the message started (a read that ended inside it), the
frame's bytes are sliced out of the whole payload instead, with the same result.

Every other tag (sequence headers, end of sequence, command frames, unsupported codecs,
malformed or truncated headers) is handed back as `(type_id, dts, payload)` for
`relay.media.flv` to parse, so the decoder configuration parsers and every error text stay
in one place. The fast path accepts exactly what `flv.parse_video_tag` / `parse_audio_tag`
would turn into a `MediaFrame`, with the same fields (tests/rtmp/test_ingest_batch.py feeds
the same streams through both and compares every unit).

A chunk stream error (ChunkError) raised after some messages were taken is held back until
the next call (the demuxer stays failed and raises it again), so the frames that arrived
before the error are still delivered, as they were when messages were taken one at a time.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.object cimport PyObject_GenericSetAttr
from libc.stdint cimport int64_t, uint8_t, uint32_t

from relay._native.rtmp_chunk cimport ChunkDemuxer, RtmpMessage

from relay._native.rtmp_chunk import ChunkError
from relay.media.units import Codec, MediaFrame, TrackKind

__all__ = ["MediaIngest"]

cdef enum:
    TYPE_AUDIO = 8
    TYPE_VIDEO = 9
    # FLV E.4.3.1 VIDEODATA.
    FRAME_KEY = 1
    FRAME_COMMAND = 5
    CODEC_ID_AVC = 7
    AVC_NALU = 1
    IS_EX_HEADER = 0x80
    # E-RTMP VideoPacketType.
    EX_CODED_FRAMES = 1
    EX_CODED_FRAMES_X = 3
    # FLV E.4.2.1 AUDIODATA.
    SOUND_FORMAT_AAC = 10
    AAC_RAW = 1

cdef object VIDEO = TrackKind.VIDEO
cdef object AUDIO = TrackKind.AUDIO
cdef object H264 = Codec.H264
cdef object HEVC = Codec.HEVC
cdef object AV1 = Codec.AV1
cdef object VP9 = Codec.VP9
cdef object FRAME = MediaFrame
cdef object FRAME_NEW = MediaFrame.__new__
cdef str KIND = "kind"
cdef str DTS = "dts"
cdef str PTS = "pts"
cdef str KEYFRAME = "keyframe"
cdef str DATA = "data"


cdef object new_frame(object kind, int64_t dts, int64_t pts, bint keyframe, bytes data):
    # MediaFrame(kind, dts, pts, keyframe, data) without its frozen dataclass __init__, which
    # sets each field through object.__setattr__ (half a microsecond a frame): the generic
    # setter stores into the same slots and skips the class's refusing __setattr__.
    cdef object frame = FRAME_NEW(FRAME)
    PyObject_GenericSetAttr(frame, KIND, kind)
    PyObject_GenericSetAttr(frame, DTS, dts)
    PyObject_GenericSetAttr(frame, PTS, pts)
    PyObject_GenericSetAttr(frame, KEYFRAME, True if keyframe else False)
    PyObject_GenericSetAttr(frame, DATA, data)
    return frame


cdef inline int64_t si24(const uint8_t* p) noexcept nogil:
    # A big-endian signed 24-bit integer (the composition time offset, ms).
    cdef int64_t value = (<int64_t>p[0] << 16) | (<int64_t>p[1] << 8) | <int64_t>p[2]
    return value - 0x1000000 if value & 0x800000 else value


cdef inline object fourcc_codec(const uint8_t* p):
    # The E-RTMP video FourCCs Relay carries (flv._VIDEO_FOURCCS); None for any other.
    if p[0] == b'a' and p[1] == b'v' and p[2] == b'c' and p[3] == b'1':
        return H264
    if p[0] == b'h' and p[1] == b'v' and p[2] == b'c' and p[3] == b'1':
        return HEVC
    if p[0] == b'a' and p[1] == b'v' and p[2] == b'0' and p[3] == b'1':
        return AV1
    if p[0] == b'v' and p[1] == b'p' and p[2] == b'0' and p[3] == b'9':
        return VP9
    return None


cdef class MediaIngest:
    """One publishing connection's timestamp timeline and tag fast path (see the module doc)."""

    cdef int64_t last        # the last extended timestamp
    cdef uint32_t last_raw   # the 32-bit timestamp it came from
    cdef bint started        # a timestamp has been seen

    cdef inline int64_t extend(self, uint32_t raw) noexcept:
        # timestamps._Unwrapper.unwrap with BITS = 32: the first value unchanged, then the
        # shortest signed step modulo 2**32.
        cdef int64_t step
        if not self.started:
            self.started = True
            self.last = raw
        else:
            step = <int64_t>raw - <int64_t>self.last_raw
            if step < -0x80000000:
                step += 0x100000000
            elif step > 0x80000000:
                step -= 0x100000000
            self.last += step
        self.last_raw = raw
        return self.last

    def unwrap(self, raw):
        """The 64-bit extension of a 32-bit RTMP timestamp, on this connection's timeline."""
        if not isinstance(raw, int) or not 0 <= raw < 0x100000000:
            raise ValueError(f"RTMP timestamp {raw} is not a 32-bit unsigned value")
        return self.extend(<uint32_t>raw)

    def drain(self, ChunkDemuxer demuxer not None, Py_ssize_t limit):
        """Take up to `limit` complete messages from `demuxer`.

        Returns (units, stop, taken, dry): `units` lists, in arrival order, a `MediaFrame` for each
        audio or video message the fast path parsed and `(type_id, dts, payload)` for each it
        left to `relay.media.flv`; `stop` is the message that ended the run because it is
        neither audio nor video (None when the input ran out or `limit` was reached); `taken`
        counts the messages taken, `stop` included; `dry` is True when the buffered input
        holds no further complete message (no need to call again before more arrives). Raises
        ChunkError only when nothing was taken.
        """
        cdef list units = []
        cdef Py_ssize_t taken = 0
        cdef Py_ssize_t slot
        cdef RtmpMessage message
        cdef object unit
        # From now on the demuxer receives coded frames' data apart from their FLV headers
        # (flv_head.pxd), so that the payload it allocates is the frame's data.
        demuxer.split_media = True
        while taken < limit:
            try:
                if demuxer.error is not None:
                    demuxer.check_failed()
                slot = demuxer.advance()
                if slot < 0:
                    demuxer.next_message()  # None again; frees an emptied large input buffer
                    return units, None, taken, True
                # Raises for a malformed protocol control message (RTMP 5.4).
                message = demuxer.finish_message(slot)
            except ChunkError:
                if taken == 0:
                    raise
                break  # delivered first; the failed demuxer raises it again next time
            taken += 1
            if message.type_id == TYPE_VIDEO:
                unit = self.video(message)
            elif message.type_id == TYPE_AUDIO:
                unit = self.audio(message)
            else:
                return units, message, taken, False
            units.append(unit)
        return units, None, taken, False

    cdef object video(self, RtmpMessage message):
        cdef bytes payload = message.payload
        cdef const uint8_t* p = <const uint8_t*>PyBytes_AS_STRING(payload)
        cdef Py_ssize_t size = PyBytes_GET_SIZE(payload)
        cdef int64_t dts = self.extend(message.timestamp)
        cdef int64_t pts = dts
        cdef uint8_t frame_type, packet_type
        cdef Py_ssize_t end
        cdef object codec
        if message.head_len:
            # The demuxer kept the header apart (frame_head_size() accepted it): the payload
            # is the frame's data as it is.
            p = message.head
            if message.head_len == 8:
                pts = dts + si24(p + 5)
            elif not p[0] & IS_EX_HEADER:
                pts = dts + si24(p + 2)
            return new_frame(VIDEO, dts, pts, ((p[0] >> 4) & 0x07) == FRAME_KEY, payload)
        if size < 6:
            return (TYPE_VIDEO, dts, payload)
        frame_type = (p[0] >> 4) & 0x07
        if frame_type == 0 or frame_type >= FRAME_COMMAND:
            return (TYPE_VIDEO, dts, payload)
        if p[0] & IS_EX_HEADER:
            # E-RTMP ExVideoTagHeader, single track, no ModEx: type, FourCC, [cts], frames.
            packet_type = p[0] & 0x0F
            if packet_type != EX_CODED_FRAMES and packet_type != EX_CODED_FRAMES_X:
                return (TYPE_VIDEO, dts, payload)
            codec = fourcc_codec(p + 1)
            if codec is None:
                return (TYPE_VIDEO, dts, payload)
            end = 5
            if packet_type == EX_CODED_FRAMES and (codec is HEVC or codec is H264):
                if size < 9:
                    return (TYPE_VIDEO, dts, payload)
                pts = dts + si24(p + 5)
                end = 8
            return new_frame(VIDEO, dts, pts, frame_type == FRAME_KEY,
                             PyBytes_FromStringAndSize(<const char*>p + end, size - end))
        # FLV E.4.3.1: FrameType | CodecID, AVCPacketType, CompositionTime SI24, NAL units.
        if (p[0] & 0x0F) != CODEC_ID_AVC or p[1] != AVC_NALU:
            return (TYPE_VIDEO, dts, payload)
        pts = dts + si24(p + 2)
        return new_frame(VIDEO, dts, pts, frame_type == FRAME_KEY,
                         PyBytes_FromStringAndSize(<const char*>p + 5, size - 5))

    cdef object audio(self, RtmpMessage message):
        cdef bytes payload = message.payload
        cdef const uint8_t* p = <const uint8_t*>PyBytes_AS_STRING(payload)
        cdef Py_ssize_t size = PyBytes_GET_SIZE(payload)
        cdef int64_t dts = self.extend(message.timestamp)
        if message.head_len:
            return new_frame(AUDIO, dts, dts, True, payload)
        # FLV E.4.2.1: SoundFormat | rate | size | type, AACPacketType, one raw AAC frame.
        if size < 3 or (p[0] >> 4) != SOUND_FORMAT_AAC or p[1] != AAC_RAW:
            return (TYPE_AUDIO, dts, payload)
        return new_frame(AUDIO, dts, dts, True,
                         PyBytes_FromStringAndSize(<const char*>p + 2, size - 2))
