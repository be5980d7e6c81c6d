# The FLV tag headers of the coded frames Relay's ingest fast path parses natively: shared by
# the chunk demuxer (rtmp_chunk.pyx, which keeps such a header apart so that the frame's bytes
# are received straight into the bytes object that becomes MediaFrame.data) and by the parser
# (rtmp_ingest.pyx). Like bytesio.pxd it has no .pyx: inline C only, no import at run time.
#
# frame_head_size() accepts exactly the tags that relay.media.flv turns into a MediaFrame by
# its coded-frame paths (FLV E.4.3.1 AVC NALU, E.4.2.1 AAC raw, Enhanced RTMP CodedFrames /
# CodedFramesX for avc1, hvc1, av01, vp09, single track, no ModEx) and returns the header's
# length; 0 for every other tag (left to relay.media.flv).

from libc.stdint cimport uint8_t

cdef enum:
    # The longest header frame_head_size() returns (E-RTMP: byte, FourCC, SI24 cts), and the
    # bytes it must see to decide (one more: the frame must not be empty).
    FLV_HEAD_MAX = 8
    FLV_HEAD_PEEK = 9


cdef inline bint is_fourcc(const uint8_t* p, char a, char b, char c, char d) noexcept nogil:
    return p[0] == <uint8_t>a and p[1] == <uint8_t>b and p[2] == <uint8_t>c \
        and p[3] == <uint8_t>d


cdef inline int video_fourcc(const uint8_t* p) noexcept nogil:
    # 1 avc1, 2 hvc1, 3 av01, 4 vp09 (flv._VIDEO_FOURCCS), 0 for any other.
    if is_fourcc(p, b'a', b'v', b'c', b'1'):
        return 1
    if is_fourcc(p, b'h', b'v', b'c', b'1'):
        return 2
    if is_fourcc(p, b'a', b'v', b'0', b'1'):
        return 3
    if is_fourcc(p, b'v', b'p', b'0', b'9'):
        return 4
    return 0


cdef inline Py_ssize_t frame_head_size(uint8_t type_id, const uint8_t* p, Py_ssize_t size) \
        noexcept nogil:
    # p holds min(size, FLV_HEAD_PEEK) bytes of a tag body of `size` bytes.
    cdef uint8_t frame_type, packet_type
    cdef int codec
    if type_id == 8:
        # SoundFormat 10 (AAC) | rate | size | type, AACPacketType 1, a non-empty frame.
        if size < 3 or (p[0] >> 4) != 10 or p[1] != 1:
            return 0
        return 2
    if type_id != 9 or size < 6:
        return 0
    frame_type = (p[0] >> 4) & 0x07
    if frame_type == 0 or frame_type >= 5:  # reserved, or a command frame
        return 0
    if p[0] & 0x80:
        # E-RTMP IsExHeader: VideoPacketType CodedFrames (1) or CodedFramesX (3), FourCC.
        packet_type = p[0] & 0x0F
        if packet_type != 1 and packet_type != 3:
            return 0
        codec = video_fourcc(p + 1)
        if codec == 0:
            return 0
        if packet_type == 1 and codec <= 2:  # AVC and HEVC CodedFrames carry an SI24 cts
            return 8 if size >= 9 else 0
        return 5
    # CodecID 7 (AVC), AVCPacketType 1 (NALU), SI24 cts, a non-empty frame.
    if (p[0] & 0x0F) != 7 or p[1] != 1:
        return 0
    return 5
