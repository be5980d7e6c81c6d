"""RTMP chunk stream: a demuxer (chunks -> messages) and a muxer (messages -> chunks).

Theory of operation (RTMP 5.3 chunking, 5.4 protocol control messages). The demuxer is sans-IO:
input arrives through get_buffer()/buffer_updated() (asyncio.BufferedProtocol) or feed(), into
one bounded InputBuf; next_message() then parses lazily, chunk by chunk, until one message is
complete, and returns it (or None when more bytes are needed). A chunk header is parsed only
once all of it is buffered; a chunk's payload is copied as it arrives straight into the message's
bytes object, which is allocated at full length when the message starts. So each input byte is
copied once, unread input never holds more than one partial chunk header once next_message() has
returned None, and no Python object is created per chunk: only the payload and the RtmpMessage,
once per message.

Each chunk stream id (csid) has a record holding the header fields that later chunks inherit.
Which header may arrive depends on the record's state (RTMP 5.3.1.2):

    record state          | fmt 0 (11 bytes)  | fmt 1 (7) / fmt 2 (3)  | fmt 3 (0)
    ----------------------+-------------------+------------------------+--------------------------
    no record yet         | create, start msg | ChunkError             | ChunkError
    between messages      | start message     | start message, + delta | start message, + old delta
    inside a message      | ChunkError        | ChunkError             | continue the message

Timestamps: fmt 0 carries the absolute timestamp, fmt 1/2 a delta added modulo 2**32; a fmt 3
chunk that starts a message adds the previous delta again, and after a fmt 0 chunk that "delta"
is the fmt 0 timestamp itself (5.3.1.2.4). A fmt 3 chunk that continues a message leaves its
timestamp alone.

Set Chunk Size is applied when next_message() returns it, so the chunks that follow it are cut
at the new size, and Abort drops the named chunk stream's partial message; both are also returned
to the caller. Every peer-controlled quantity is bounded: chunk size (128..65536), message length
(max_message_size), chunk streams (MAX_CHUNK_STREAMS), and buffered bytes (max_buffered, counting
unread input plus the full length of every message being assembled, since that is what is
allocated). A violation raises ChunkError, whose text is the close reason, and the demuxer stays
failed. Message length has two bounds, checked once per message when its first chunk header has
arrived, before its payload is allocated or buffered: max_message_size for every message, and the
smaller max_command_size for every type but audio, video and aggregate (the only messages that
carry media, so the only large ones). A server tightens both, and max_buffered, with set_limits()
until a publish is admitted, so a peer that has not authenticated cannot make it buffer or
decode much; a message over either bound raises MessageTooLong, a ChunkError.

With split_media set (relay._native.rtmp_ingest sets it on a publishing connection), an audio
or video message whose first chunk arrives with enough of its body buffered to show a coded
frame's FLV tag header (flv_head.pxd frame_head_size: AVC NALU, AAC raw, E-RTMP CodedFrames)
keeps that header (2 to 8 bytes) in its record and RtmpMessage.head, and its payload is
allocated at the frame's length: the frame's bytes are still copied once, straight into the
bytes object that becomes MediaFrame.data. Any other message is received whole, as without it.
Such a message's header is not taken until those first body bytes (FLV_HEAD_PEEK, or the whole
body when shorter) are buffered too: ffmpeg writes each chunk's header and its body in two
writes (rtmppkt.c ff_rtmp_packet_write), so most of its headers arrive in a read of their own,
and starting the message there would receive the frame whole and copy it again (rtmp_ingest.pyx
slices it out). The bytes waited for are the message's own, in its first chunk (at least 128
bytes), so this waits for nothing the message could complete without.

The muxer keeps the last header of each csid and writes the most compact header the receiver can
expand back (fmt 0 on first use, when the message stream changes or time goes backwards; fmt 1
when length or type changes; fmt 2 when only the delta changes; fmt 3 when nothing does) into one
WriteBuf, reserved once per message.
"""

cimport cython
from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from cpython.long cimport PyLong_AsLongLongAndOverflow
from cpython.mem cimport PyMem_Free, PyMem_Realloc
from cpython.ref cimport Py_INCREF, Py_XDECREF, PyObject
from libc.stdint cimport uint8_t, uint32_t, uint64_t
from libc.string cimport memcpy

from flv_head cimport FLV_HEAD_PEEK, frame_head_size
from bytesio cimport (
    ib_append,
    ib_commit,
    ib_consume,
    ib_free,
    ib_init,
    ib_len,
    ib_reserve,
    ib_tail,
    ib_tail_size,
    load_u24be,
    load_u32be,
    load_u32le,
    store_u24be,
    store_u32be,
    store_u32le,
    wb_clear,
    wb_free,
    wb_init,
    wb_reserve,
)
from relay._native.buffers cimport _ExportedSpan

__all__ = [
    "DEFAULT_MAX_BUFFERED",
    "DEFAULT_MAX_MESSAGE_SIZE",
    "MAX_CHUNK_SIZE",
    "MAX_CHUNK_STREAMS",
    "MIN_CHUNK_SIZE",
    "ChunkDemuxer",
    "ChunkError",
    "ChunkMuxer",
    "MessageTooLong",
    "RtmpMessage",
    "chunk_tail",
]


cdef enum:
    # RTMP 5.4.1: a connection starts at 128 bytes per chunk. Relay accepts 128..65536 from a
    # peer rather than the spec's 1..2**31 - 1: encoders announce 4096 (ffmpeg, OBS) up to
    # 65536, and a floor of 128 keeps a peer from making us parse a header every few bytes.
    CHUNK_SIZE_DEFAULT = 128
    CHUNK_SIZE_MIN = 128
    CHUNK_SIZE_MAX = 65536
    # A 3-byte basic header, an 11-byte fmt 0 message header and a 4-byte extended timestamp.
    CHUNK_HEADER_MAX = 18
    # 5.3.1.2.1: a 24-bit timestamp field of 0xFFFFFF means "read the extended timestamp".
    TIMESTAMP_EXTENDED = 0xFFFFFF
    # 5.3.1.2: message length is a 24-bit field.
    MESSAGE_LENGTH_MAX = 0xFFFFFF
    # 5.3.1.1: one-byte csids are 2..63, two-byte 64..319, three-byte 64..65599.
    CSID_MIN = 2
    CSID_MAX = 65599
    # Distinct chunk streams one peer may open. Encoders use fewer than ten (2 for control,
    # 3 for commands, a few for audio, video and data); each record costs 64 bytes.
    STREAMS_MAX = 64
    # get_buffer() offers this much when the caller gives no size hint, and reserves at most
    # READ_MAX for one read (libuv's read size, which uvloop passes as the hint), so that a hint
    # cannot make a connection's input buffer large.
    READ_SIZE = 16384
    READ_MAX = 65536
    # An input buffer emptied by next_message() is freed when larger than this, so that a burst
    # fed at once does not stay allocated while the connection idles.
    INPUT_KEEP = 65536
    # append_frames() copies a chunk tail shorter than this in with the headers (an audio
    # frame's), rather than handing it to the writer as one more piece.
    SMALL_TAIL = 2048
    # The muxer frees its output buffer on take() when larger than this (a keyframe's worth
    # stays allocated in each of a load generator's thousands of muxers otherwise).
    OUTPUT_KEEP = 65536
    # Protocol control message types (RTMP 5.4).
    TYPE_SET_CHUNK_SIZE = 1
    TYPE_ABORT = 2
    TYPE_ACKNOWLEDGEMENT = 3
    TYPE_WINDOW_ACK_SIZE = 5
    TYPE_SET_PEER_BANDWIDTH = 6
    # The message types that carry media (RTMP 7.1.4, 7.1.5, 7.1.6): max_command_size does
    # not apply to them.
    TYPE_AUDIO = 8
    TYPE_VIDEO = 9
    TYPE_AGGREGATE = 22

DEFAULT_MAX_MESSAGE_SIZE = 8 * 1024 * 1024
DEFAULT_MAX_BUFFERED = 16 * 1024 * 1024
MIN_CHUNK_SIZE = CHUNK_SIZE_MIN
MAX_CHUNK_SIZE = CHUNK_SIZE_MAX
MAX_CHUNK_STREAMS = STREAMS_MAX

# Type id -> (name, fixed payload length) of the protocol control messages (RTMP 5.4.1-5.4.5).
_CONTROL_MESSAGES = {
    TYPE_SET_CHUNK_SIZE: ("Set Chunk Size", 4),
    TYPE_ABORT: ("Abort Message", 4),
    TYPE_ACKNOWLEDGEMENT: ("Acknowledgement", 4),
    TYPE_WINDOW_ACK_SIZE: ("Window Acknowledgement Size", 4),
    TYPE_SET_PEER_BANDWIDTH: ("Set Peer Bandwidth", 5),
}


class ChunkError(ValueError):
    """The peer broke the chunk stream protocol; str(exc) is a one-line close reason naming the
    offending value."""


class MessageTooLong(ChunkError):
    """A message header declared a length over max_message_size or max_command_size."""


cdef long long checked_int(object value, str name, long long low, long long high) except? -1:
    # Range-check an integer argument (local misuse: ValueError naming the argument and value).
    cdef int overflow = 0
    cdef long long number
    if not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    number = PyLong_AsLongLongAndOverflow(value, &overflow)
    if overflow != 0 or number < low or number > high:
        raise ValueError(f"{name} must be {low}..{high}, got {value}")
    return number


cdef uint32_t checked_chunk_size(object value) except? 0:
    return <uint32_t>checked_int(value, "chunk_size", CHUNK_SIZE_MIN, CHUNK_SIZE_MAX)


cdef inline uint8_t* put_basic_header(uint8_t* p, uint8_t fmt, uint32_t csid) noexcept nogil:
    # RTMP 5.3.1.1: the shortest of the three basic header forms that can carry csid.
    if csid < 64:
        p[0] = <uint8_t>((fmt << 6) | csid)
        return p + 1
    if csid < 320:
        p[0] = <uint8_t>(fmt << 6)
        p[1] = <uint8_t>(csid - 64)
        return p + 2
    p[0] = <uint8_t>((fmt << 6) | 1)
    p[1] = <uint8_t>(csid - 64)
    p[2] = <uint8_t>((csid - 64) >> 8)
    return p + 3


cdef inline Py_ssize_t min_size(Py_ssize_t a, Py_ssize_t b) noexcept nogil:
    return a if a < b else b


cdef inline uint8_t* put_message_header(uint8_t* p, MuxStream* s, uint8_t type_id,
                                        uint32_t stream_id, uint32_t timestamp,
                                        uint32_t length, uint32_t* field) noexcept nogil:
    # The first chunk's basic and message headers (and extended timestamp) for a message on
    # s's csid, the most compact the receiver can decode; records the message in s. field
    # gets the timestamp field's value (>= TIMESTAMP_EXTENDED: every chunk carries it).
    cdef uint8_t fmt
    cdef uint32_t value
    # RTMP 5.3.1.2: the receiver can only inherit what it saw last on this csid.
    if not s.started or stream_id != s.stream_id or timestamp < s.timestamp:
        fmt = 0
        value = timestamp
    else:
        value = timestamp - s.timestamp
        if length != s.length or type_id != s.type_id:
            fmt = 1
        elif value != s.delta:
            fmt = 2
        else:
            fmt = 3
    p = put_basic_header(p, fmt, s.csid)
    if fmt < 3:
        store_u24be(p, TIMESTAMP_EXTENDED if value >= TIMESTAMP_EXTENDED else value)
        if fmt == 0:
            store_u24be(p + 3, length)
            p[6] = type_id
            store_u32le(p + 7, stream_id)
            p += 11
        elif fmt == 1:
            store_u24be(p + 3, length)
            p[6] = type_id
            p += 7
        else:
            p += 3
    if value >= TIMESTAMP_EXTENDED:
        store_u32be(p, value)
        p += 4
    s.started = 1
    s.stream_id = stream_id
    s.length = length
    s.type_id = type_id
    s.timestamp = timestamp
    s.delta = value
    field[0] = value
    return p


@cython.cdivision(True)
def chunk_tail(csid, chunk_size, header, data):
    """The payload `header + data` of one message cut into chunks of `chunk_size`, without
    the first chunk's header: the first chunk's payload, then each continuation chunk (fmt 3,
    RTMP 5.3.1.2.4) with its basic header. What follows the header that
    ChunkMuxer.take_with_header() writes, for any connection on that chunk size and csid."""
    cdef uint32_t c = <uint32_t>checked_int(csid, "csid", CSID_MIN, CSID_MAX)
    cdef Py_ssize_t size = checked_chunk_size(chunk_size)
    cdef Py_buffer head, body
    cdef Py_ssize_t total, chunks, basic, offset, n, taken
    cdef uint8_t* p
    PyObject_GetBuffer(header, &head, PyBUF_SIMPLE)
    try:
        PyObject_GetBuffer(data, &body, PyBUF_SIMPLE)
        try:
            total = head.len + body.len
            if total > MESSAGE_LENGTH_MAX:
                raise ValueError(f"payload of {total} bytes exceeds the RTMP message length "
                                 f"limit of {MESSAGE_LENGTH_MAX} (24 bits)")
            chunks = (total + size - 1) // size if total > 0 else 1
            basic = 1 if c < 64 else 2 if c < 320 else 3
            out = PyBytes_FromStringAndSize(NULL, total + (chunks - 1) * basic)
            p = <uint8_t*>PyBytes_AS_STRING(out)
            offset = 0
            while True:
                # One chunk's payload, from the header's bytes, then the data's.
                n = min_size(size, total - offset)
                taken = 0
                if offset < head.len:
                    taken = min_size(n, head.len - offset)
                    memcpy(p, <const uint8_t*>head.buf + offset, <size_t>taken)
                if n > taken:
                    memcpy(p + taken, <const uint8_t*>body.buf + (offset + taken - head.len),
                           <size_t>(n - taken))
                p += n
                offset += n
                if offset >= total:
                    break
                p = put_basic_header(p, 3, c)
            return out
        finally:
            PyBuffer_Release(&body)
    finally:
        PyBuffer_Release(&head)


cdef class RtmpMessage:
    """One RTMP message (RTMP 5.1) as reassembled from its chunks."""

    def __init__(self, uint32_t csid, uint8_t type_id, uint32_t timestamp, uint32_t stream_id,
                 bytes payload not None):
        if csid < CSID_MIN or csid > CSID_MAX:
            raise ValueError(f"csid must be {CSID_MIN}..{CSID_MAX}, got {csid}")
        self.csid = csid
        self.type_id = type_id
        self.timestamp = timestamp
        self.stream_id = stream_id
        self.payload = payload

    def __repr__(self):
        shown = repr(self.payload) if len(self.payload) <= 32 else (
            f"{self.payload[:16]!r}... ({len(self.payload)} bytes)")
        return (f"RtmpMessage(csid={self.csid}, type_id={self.type_id}, "
                f"timestamp={self.timestamp}, stream_id={self.stream_id}, payload={shown})")

    def __eq__(self, other):
        if not isinstance(other, RtmpMessage):
            return NotImplemented
        cdef RtmpMessage that = <RtmpMessage>other
        return (self.csid == that.csid and self.type_id == that.type_id
                and self.timestamp == that.timestamp and self.stream_id == that.stream_id
                and self.payload == that.payload)

    def __hash__(self):
        return hash((self.csid, self.type_id, self.timestamp, self.stream_id, self.payload))


cdef class ChunkDemuxer:
    """Reassembles RTMP messages from a peer's chunk stream (RTMP 5.3), bounded in memory.

    Hand bytes in with get_buffer()/buffer_updated() or feed(), then call next_message() until
    it returns None. Protocol errors raise ChunkError (its text is the close reason) and every
    later call raises it again. Nothing is allocated before the first input; release() frees
    everything and returns the demuxer to its initial state.
    """

    def __cinit__(self):
        # The defaults hold even if __init__ is bypassed (ChunkDemuxer.__new__).
        self.max_message_size = DEFAULT_MAX_MESSAGE_SIZE
        self.max_command_size = DEFAULT_MAX_MESSAGE_SIZE
        self.max_buffered = DEFAULT_MAX_BUFFERED
        ib_init(&self.input, self.max_buffered)
        self.peer_chunk_size = CHUNK_SIZE_DEFAULT

    def __init__(self, *, Py_ssize_t max_message_size=DEFAULT_MAX_MESSAGE_SIZE,
                 Py_ssize_t max_buffered=DEFAULT_MAX_BUFFERED, max_command_size=None):
        # max_command_size None: no bound beyond max_message_size.
        if self.input.store.capacity != 0 or self.nstreams != 0:
            raise RuntimeError("ChunkDemuxer.__init__ called on a demuxer already in use")
        self.set_limits(
            max_message_size=max_message_size, max_buffered=max_buffered,
            max_command_size=max_message_size if max_command_size is None else max_command_size)

    def __dealloc__(self):
        cdef Py_ssize_t slot
        for slot in range(self.nstreams):
            Py_XDECREF(self.streams[slot].payload)
        PyMem_Free(self.streams)
        ib_free(&self.input)

    # --- Python API ----------------------------------------------------------------------------

    @property
    def chunk_size(self):
        """The peer's current chunk size (128 until it sends Set Chunk Size)."""
        return self.peer_chunk_size

    @property
    def max_message_size(self):
        """Longest message accepted, of any type."""
        return self.max_message_size

    @property
    def max_command_size(self):
        """Longest message accepted of a type other than audio (8), video (9), aggregate (22)."""
        return self.max_command_size

    @property
    def max_buffered(self):
        """Most bytes held at once: unread input plus the full length of each partial message."""
        return self.max_buffered

    def set_limits(self, *, Py_ssize_t max_message_size, Py_ssize_t max_command_size,
                   Py_ssize_t max_buffered):
        """Change the bounds, e.g. when a publish is admitted.

        New bounds apply to messages whose first chunk header is parsed from now on (and to
        bytes buffered from now on); a message already being assembled keeps its allocation."""
        if max_message_size < 1:
            raise ValueError(f"max_message_size must be >= 1, got {max_message_size}")
        if max_command_size < 1:
            raise ValueError(f"max_command_size must be >= 1, got {max_command_size}")
        if max_buffered < 1:
            raise ValueError(f"max_buffered must be >= 1, got {max_buffered}")
        self.max_message_size = max_message_size
        self.max_command_size = max_command_size
        self.max_buffered = max_buffered
        self.input.max_size = max_buffered

    @property
    def bytes_received(self):
        """Total bytes handed in so far, for Acknowledgement (RTMP 5.4.3)."""
        return self.received

    @property
    def buffered(self):
        """Bytes held now: unread input plus the full length of each partial message."""
        return ib_len(&self.input) + self.reserved

    @property
    def allocated(self):
        """Bytes of memory allocated now for input, partial payloads and chunk stream records."""
        return (self.input.store.capacity + self.reserved
                + self.streams_capacity * <Py_ssize_t>sizeof(ChunkStream))

    def get_buffer(self, Py_ssize_t sizehint):
        """A writable memoryview to receive into (asyncio.BufferedProtocol.get_buffer).

        Offers up to sizehint bytes (16 KiB when sizehint <= 0, at most 64 KiB reserved),
        never more than max_buffered allows. Raises ChunkError when max_buffered bytes are
        already held.
        """
        cdef Py_ssize_t headroom = self.max_buffered - ib_len(&self.input) - self.reserved
        cdef Py_ssize_t want = sizehint if sizehint > 0 else READ_SIZE
        cdef _ExportedSpan span
        self.check_failed()
        if headroom <= 0:
            raise ChunkError(
                f"peer filled max_buffered={self.max_buffered} bytes "
                f"({ib_len(&self.input)} unread, {self.reserved} in partial messages)")
        want = min_size(min_size(want, READ_MAX), headroom)
        if self.input.store.capacity - ib_len(&self.input) >= READ_SIZE:
            # The allocation can take a good read once the few unread bytes (a partial chunk
            # header) move to its front: offer that rather than doubling it for want bytes.
            want = min_size(want, self.input.store.capacity - ib_len(&self.input))
        self.offered = 0
        ib_reserve(&self.input, want, self.exports > 0)
        self.offered = min_size(ib_tail_size(&self.input), headroom)
        # The span pins the input allocation while the view lives (see buffers.pyx).
        span = _ExportedSpan.__new__(_ExportedSpan)
        span.owner = self
        span.exports = &self.exports
        span.data = ib_tail(&self.input)
        span.size = self.offered
        span.readonly = False
        return memoryview(span)

    def buffer_updated(self, Py_ssize_t nbytes):
        """Commit nbytes received into the view from the last get_buffer()."""
        if nbytes < 0 or nbytes > self.offered:
            raise ValueError(
                f"buffer_updated({nbytes}) is outside the {self.offered} bytes offered by the "
                "last get_buffer(); call get_buffer() first and write at most that much")
        ib_commit(&self.input, nbytes)
        self.received += <uint64_t>nbytes
        self.offered = 0

    def feed(self, data):
        """Append a copy of the bytes of a bytes-like object, as data_received would."""
        cdef Py_buffer view
        cdef Py_ssize_t headroom
        self.check_failed()
        PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
        try:
            headroom = self.max_buffered - ib_len(&self.input) - self.reserved
            if view.len > headroom:
                raise ChunkError(
                    f"{view.len} more bytes would exceed max_buffered={self.max_buffered} "
                    f"({ib_len(&self.input)} unread, {self.reserved} in partial messages)")
            self.offered = 0
            ib_append(&self.input, view.buf, view.len, self.exports > 0)
            self.received += <uint64_t>view.len
        finally:
            PyBuffer_Release(&view)

    def next_message(self):
        """The next complete message, or None until more bytes arrive; raises ChunkError."""
        cdef Py_ssize_t slot
        self.check_failed()
        slot = self.advance()
        if slot >= 0:
            return self.finish_message(slot)
        if ib_len(&self.input) == 0 and self.exports == 0 \
                and self.input.store.capacity > INPUT_KEEP:
            ib_free(&self.input)
        return None

    def release(self):
        """Free all buffers and forget all state (the connection is closed).

        The demuxer is then as new, except bytes_received. Memory under a live get_buffer()
        view is kept until the view is released and the demuxer is garbage-collected.
        """
        cdef Py_ssize_t slot
        for slot in range(self.nstreams):
            self.drop_partial(slot)
        PyMem_Free(self.streams)
        self.streams = NULL
        self.nstreams = 0
        self.streams_capacity = 0
        if self.exports == 0:
            ib_free(&self.input)
        else:
            ib_consume(&self.input, ib_len(&self.input))
        self.offered = 0
        self.body_left = 0
        self.peer_chunk_size = CHUNK_SIZE_DEFAULT
        self.error = None
        self.split_media = False

    # --- the parser ----------------------------------------------------------------------------

    cdef int fail(self, str reason) except -1:
        self.error = ChunkError(reason)
        raise self.error

    cdef int check_failed(self) except -1:
        if self.error is not None:
            raise ChunkError(str(self.error))
        return 0

    cdef Py_ssize_t find_stream(self, uint32_t csid) noexcept:
        cdef Py_ssize_t slot
        for slot in range(self.nstreams):
            if self.streams[slot].csid == csid:
                return slot
        return -1

    cdef Py_ssize_t add_stream(self, uint32_t csid) except -1:
        cdef Py_ssize_t capacity
        cdef ChunkStream* streams
        cdef ChunkStream* s
        if self.nstreams >= STREAMS_MAX:
            self.fail(f"csid {csid} would be chunk stream number {STREAMS_MAX + 1}; "
                      f"a peer may use at most {STREAMS_MAX}")
        if self.nstreams == self.streams_capacity:
            capacity = 4 if self.streams_capacity == 0 else 2 * self.streams_capacity
            streams = <ChunkStream*>PyMem_Realloc(self.streams, capacity * sizeof(ChunkStream))
            if streams == NULL:
                raise MemoryError()
            self.streams = streams
            self.streams_capacity = capacity
        s = &self.streams[self.nstreams]
        s.csid = csid
        s.stream_id = 0
        s.length = 0
        s.timestamp = 0
        s.delta = 0
        s.type_id = 0
        s.extended = False
        s.payload = NULL
        s.payload_data = NULL
        s.filled = 0
        s.head_len = 0
        self.nstreams += 1
        return self.nstreams - 1

    cdef Py_ssize_t advance(self) except -2:
        # The hot loop: plain C except for start_message()'s one allocation per message and the
        # error paths. Returns the record index of a completed message, or -1 for "need more".
        cdef const uint8_t* p
        cdef Py_ssize_t avail, n, need, slot
        cdef ChunkStream* s
        cdef uint8_t fmt, low
        cdef uint32_t csid, field, value, length
        cdef bint extended
        while True:
            avail = ib_len(&self.input)
            p = self.input.store.data + self.input.start if avail > 0 else NULL
            if self.body_left > 0:
                # Inside a chunk's payload: copy what has arrived into the message.
                n = min_size(self.body_left, avail)
                if n == 0:
                    return -1
                s = &self.streams[self.body_slot]
                memcpy(s.payload_data + (s.filled - s.head_len), p, <size_t>n)
                s.filled += <uint32_t>n
                self.body_left -= n
                ib_consume(&self.input, n)
                if s.filled == s.length:  # body_left is 0 too: a chunk never passes its message
                    return self.body_slot
                continue

            # A chunk header: basic header (5.3.1.1) first, nothing consumed until all is here.
            if avail < 1:
                return -1
            fmt = p[0] >> 6
            low = p[0] & 0x3F
            if low >= 2:
                csid = low
                need = 1
            elif low == 0:
                if avail < 2:
                    return -1
                csid = 64 + <uint32_t>p[1]
                need = 2
            else:
                if avail < 3:
                    return -1
                csid = 64 + <uint32_t>p[1] + (<uint32_t>p[2] << 8)
                need = 3
            slot = self.find_stream(csid)

            if fmt == 0:
                # 5.3.1.2.1: absolute timestamp, length, type id, little-endian stream id.
                if avail < need + 11:
                    return -1
                field = load_u24be(p + need)
                extended = field == TIMESTAMP_EXTENDED
                if extended:
                    if avail < need + 15:
                        return -1
                    value = load_u32be(p + need + 11)
                else:
                    value = field
                length = load_u24be(p + need + 3)
                if slot >= 0 and self.streams[slot].payload != NULL:
                    self.fail_interrupted(fmt, slot)
                if length > <uint32_t>self.max_message_size:
                    self.fail_too_long(csid, length)
                if self.head_pending(p[need + 6], length,
                                     avail - need - (15 if extended else 11)):
                    return -1
                if slot < 0:
                    slot = self.add_stream(csid)
                s = &self.streams[slot]
                s.type_id = p[need + 6]
                s.stream_id = load_u32le(p + need + 7)
                s.length = length
                s.timestamp = value
                s.delta = value  # a fmt 3 chunk that follows repeats this as its delta
                s.extended = extended
                need += 15 if extended else 11
            elif slot < 0:
                self.fail(f"chunk of fmt {fmt} on csid {csid}, which has had no fmt 0 chunk to "
                          f"take its message header from (RTMP 5.3.1.2)")
                return -2
            elif fmt == 3:
                s = &self.streams[slot]
                # 5.3.1.3: the extended timestamp is present in a type 3 chunk whenever the last
                # fmt 0/1/2 header on its csid had timestamp field 0xFFFFFF, whether the chunk
                # continues a message or starts one. ffmpeg (rtmppkt.c) and OBS (librtmp) send
                # it that way, and read it that way, so we always expect and skip those 4 bytes.
                # Their value is redundant and is ignored: a continuation keeps its message's
                # timestamp and a new message repeats the stored delta, since senders are not
                # consistent about whether they repeat the delta or the absolute timestamp there.
                # We do not guess whether a sender omitted the 4 bytes (as some old servers
                # did): a guess could take payload bytes for a timestamp.
                n = need + 4 if s.extended else need
                if avail < n:
                    return -1
                if s.payload != NULL:
                    ib_consume(&self.input, n)
                    self.body_slot = slot
                    self.body_left = min_size(self.peer_chunk_size, s.length - s.filled)
                    continue
                if self.head_pending(s.type_id, s.length, avail - n):
                    return -1
                s.timestamp += s.delta  # uint32_t: wraps modulo 2**32
                need = n
            else:
                # 5.3.1.2.2 (fmt 1: delta, length, type id) and 5.3.1.2.3 (fmt 2: delta).
                n = 7 if fmt == 1 else 3
                if avail < need + n:
                    return -1
                field = load_u24be(p + need)
                extended = field == TIMESTAMP_EXTENDED
                if extended:
                    if avail < need + n + 4:
                        return -1
                    value = load_u32be(p + need + n)
                else:
                    value = field
                s = &self.streams[slot]
                if s.payload != NULL:
                    self.fail_interrupted(fmt, slot)
                if fmt == 1:
                    length = load_u24be(p + need + 3)
                    if length > <uint32_t>self.max_message_size:
                        self.fail_too_long(csid, length)
                    if self.head_pending(p[need + 6], length,
                                         avail - need - n - (4 if extended else 0)):
                        return -1
                    s.length = length
                    s.type_id = p[need + 6]
                elif self.head_pending(s.type_id, s.length,
                                       avail - need - n - (4 if extended else 0)):
                    return -1
                s.delta = value
                s.timestamp += value  # uint32_t: wraps modulo 2**32
                s.extended = extended
                need += n + 4 if extended else n

            # The header starts a new message on this record.
            ib_consume(&self.input, need)
            self.start_message(slot, avail - need)
            s = &self.streams[slot]
            if s.length == 0:
                return slot  # 5.3.1: a zero-length message is a header with no payload
            self.body_slot = slot
            self.body_left = min_size(self.peer_chunk_size, s.length) - s.head_len

    cdef bint head_pending(self, uint8_t type_id, uint32_t length,
                           Py_ssize_t unread_after) noexcept:
        # split_media: an audio or video message's header waits, unconsumed, for the first
        # body bytes that show its FLV tag header (see the module doc). Checked before the
        # header changes its record, so that it is parsed again, whole, with them.
        return self.split_media and (type_id == TYPE_AUDIO or type_id == TYPE_VIDEO) \
            and unread_after < FLV_HEAD_PEEK and unread_after < <Py_ssize_t>length

    cdef int fail_interrupted(self, uint8_t fmt, Py_ssize_t slot) except -1:
        cdef ChunkStream* s = &self.streams[slot]
        return self.fail(
            f"chunk of fmt {fmt} on csid {s.csid} arrived while its message has {s.filled} of "
            f"{s.length} bytes; only fmt 3 may continue a message (RTMP 5.3.1.2.4)")

    cdef int fail_too_long(self, uint32_t csid, uint32_t length) except -1:
        self.error = MessageTooLong(f"message length {length} on csid {csid} exceeds "
                                    f"max_message_size={self.max_message_size}")
        raise self.error

    cdef int start_message(self, Py_ssize_t slot, Py_ssize_t unread_after) except -1:
        cdef ChunkStream* s = &self.streams[slot]
        cdef Py_ssize_t length = s.length
        cdef uint8_t type_id = s.type_id
        cdef object payload
        cdef Py_ssize_t head
        cdef const uint8_t* body = NULL
        # Checked here, once per message and before anything is allocated, so that it also
        # covers fmt 2/3 headers (which inherit a length checked under earlier limits).
        if length > self.max_command_size and type_id != TYPE_AUDIO \
                and type_id != TYPE_VIDEO and type_id != TYPE_AGGREGATE:
            self.error = MessageTooLong(
                f"message length {length} (type {type_id}) on csid {s.csid} exceeds "
                f"max_command_size={self.max_command_size}; only audio, video and aggregate "
                f"messages may be longer")
            raise self.error
        if length > self.max_message_size:
            self.fail_too_long(s.csid, <uint32_t>length)
        if unread_after + self.reserved + length > self.max_buffered:
            self.fail(f"message of {length} bytes on csid {s.csid} would make "
                      f"{unread_after + self.reserved + length} bytes buffered, over "
                      f"max_buffered={self.max_buffered}")
        # split_media: a coded frame's FLV tag header, when this chunk's first bytes (already
        # buffered, and within the chunk since chunks are at least 128 bytes) show one, is
        # kept apart so that the payload allocated below is exactly the frame's data: it
        # becomes MediaFrame.data with no further copy.
        head = 0
        if self.split_media and (type_id == TYPE_AUDIO or type_id == TYPE_VIDEO) \
                and (unread_after >= FLV_HEAD_PEEK or unread_after >= length):
            body = self.input.store.data + self.input.start
            head = frame_head_size(type_id, body, length)
        # Allocated once at full length and filled in place; each byte is copied once.
        payload = PyBytes_FromStringAndSize(NULL, length - head)
        Py_INCREF(payload)
        s = &self.streams[slot]
        s.payload = <PyObject*>payload
        s.payload_data = PyBytes_AS_STRING(payload)
        s.head_len = <uint8_t>head
        if head:
            memcpy(s.head, body, <size_t>head)
            ib_consume(&self.input, head)
        s.filled = <uint32_t>head
        self.reserved += length
        return 0

    cdef RtmpMessage finish_message(self, Py_ssize_t slot):
        cdef ChunkStream* s = &self.streams[slot]
        cdef RtmpMessage message = RtmpMessage.__new__(RtmpMessage)
        cdef uint32_t value
        cdef Py_ssize_t target
        message.csid = s.csid
        message.type_id = s.type_id
        message.timestamp = s.timestamp
        message.stream_id = s.stream_id
        message.payload = <bytes>s.payload
        message.head_len = s.head_len
        if s.head_len:
            memcpy(message.head, s.head, s.head_len)
            s.head_len = 0
        Py_XDECREF(s.payload)
        s.payload = NULL
        s.payload_data = NULL
        s.filled = 0
        self.reserved -= s.length
        if message.type_id > TYPE_SET_PEER_BANDWIDTH or message.type_id == 4 \
                or message.type_id == 0:
            return message
        # RTMP 5.4 says protocol control messages MUST use csid 2 and message stream 0. We
        # accept them on any csid and stream: nothing in the chunk layer depends on where they
        # come from, and refusing would only break lenient encoders. Their payload length is
        # checked, since the chunk size and abort target are read from it.
        name, expected = _CONTROL_MESSAGES[message.type_id]
        if len(message.payload) != expected:
            self.fail(f"{name} message (type {message.type_id}) on csid {message.csid} has a "
                      f"{len(message.payload)}-byte payload; RTMP 5.4 requires {expected}")
        value = load_u32be(<const uint8_t*>PyBytes_AS_STRING(message.payload))
        if message.type_id == TYPE_SET_CHUNK_SIZE:
            # 5.4.1: 31 bits; the top bit MUST be zero.
            if value & 0x80000000:
                self.fail(f"Set Chunk Size 0x{value:08x} has its reserved top bit set "
                          f"(RTMP 5.4.1)")
            if value < CHUNK_SIZE_MIN or value > CHUNK_SIZE_MAX:
                self.fail(f"Set Chunk Size {value} is outside the accepted "
                          f"{CHUNK_SIZE_MIN}..{CHUNK_SIZE_MAX}")
            self.peer_chunk_size = value
        elif message.type_id == TYPE_ABORT:
            # 5.4.2: drop the named chunk stream's partial message; unknown csids are ignored.
            target = self.find_stream(value) if value <= CSID_MAX else -1
            if target >= 0:
                self.drop_partial(target)
        return message

    cdef void drop_partial(self, Py_ssize_t slot) noexcept:
        cdef ChunkStream* s = &self.streams[slot]
        if s.payload == NULL:
            return
        self.reserved -= s.length
        Py_XDECREF(s.payload)
        s.payload = NULL
        s.payload_data = NULL
        s.filled = 0
        s.head_len = 0


cdef class ChunkMuxer:
    """Cuts messages into chunks (RTMP 5.3) with the most compact header for each.

    write_message() appends chunks to an output buffer; take() returns and clears it. To change
    the chunk size, send Set Chunk Size with write_set_chunk_size(), which also applies it.
    """

    def __cinit__(self):
        wb_init(&self.out)
        self.last_slot = -1
        self.out_chunk_size = CHUNK_SIZE_DEFAULT

    def __init__(self, chunk_size=CHUNK_SIZE_DEFAULT):
        self.chunk_size = chunk_size

    def __dealloc__(self):
        wb_free(&self.out)
        PyMem_Free(self.streams)

    @property
    def chunk_size(self):
        """Maximum payload bytes per chunk we send, 128..65536."""
        return self.out_chunk_size

    @chunk_size.setter
    def chunk_size(self, value):
        self.out_chunk_size = checked_chunk_size(value)

    @property
    def pending(self):
        """Bytes of output waiting for take()."""
        return self.out.size

    def write_message(self, csid, type_id, stream_id, timestamp, payload):
        """Append one message as chunks on chunk stream csid."""
        cdef Py_buffer view
        cdef uint32_t c = <uint32_t>checked_int(csid, "csid", CSID_MIN, CSID_MAX)
        cdef uint8_t t = <uint8_t>checked_int(type_id, "type_id", 0, 0xFF)
        cdef uint32_t sid = <uint32_t>checked_int(stream_id, "stream_id", 0, 0xFFFFFFFF)
        cdef uint32_t ts = <uint32_t>checked_int(timestamp, "timestamp", 0, 0xFFFFFFFF)
        PyObject_GetBuffer(payload, &view, PyBUF_SIMPLE)
        try:
            if view.len > MESSAGE_LENGTH_MAX:
                raise ValueError(f"payload of {view.len} bytes exceeds the RTMP message length "
                                 f"limit of {MESSAGE_LENGTH_MAX} (24 bits)")
            self.write(c, t, sid, ts, <const uint8_t*>view.buf, view.len)
        finally:
            PyBuffer_Release(&view)

    def write_set_chunk_size(self, size):
        """Send Set Chunk Size (type 1, csid 2, stream 0, RTMP 5.4.1), then chunk at that size."""
        cdef uint8_t payload[4]
        cdef uint32_t value = checked_chunk_size(size)
        store_u32be(payload, value)
        self.write(2, TYPE_SET_CHUNK_SIZE, 0, 0, payload, 4)
        self.out_chunk_size = value

    def take(self):
        """Return the pending output and clear it."""
        data = PyBytes_FromStringAndSize(<const char*>self.out.data, self.out.size)
        if self.out.capacity > OUTPUT_KEEP:
            wb_free(&self.out)
        else:
            wb_clear(&self.out)
        return data

    cdef MuxStream* stream_for(self, uint32_t csid) except NULL:
        # The csid's record, added (blank: its next header is fmt 0) the first time.
        cdef Py_ssize_t slot = self.last_slot
        cdef Py_ssize_t n, capacity
        cdef MuxStream* streams
        if slot < 0 or self.streams[slot].csid != csid:
            slot = -1
            for n in range(self.nstreams):
                if self.streams[n].csid == csid:
                    slot = n
                    break
            if slot < 0:
                if self.nstreams == self.streams_capacity:
                    capacity = 4 if self.streams_capacity == 0 else 2 * self.streams_capacity
                    streams = <MuxStream*>PyMem_Realloc(self.streams,
                                                        capacity * sizeof(MuxStream))
                    if streams == NULL:
                        raise MemoryError()
                    self.streams = streams
                    self.streams_capacity = capacity
                slot = self.nstreams
                self.nstreams += 1
                self.streams[slot].csid = csid
                self.streams[slot].started = 0
            self.last_slot = slot
        return &self.streams[slot]

    @cython.cdivision(True)  # operands are positive: C division, with no Python-rounding check
    cdef int write(self, uint32_t csid, uint8_t type_id, uint32_t stream_id, uint32_t timestamp,
                   const uint8_t* payload, Py_ssize_t length) except -1:
        cdef Py_ssize_t chunk_size = self.out_chunk_size
        cdef Py_ssize_t chunks, offset, n
        cdef MuxStream* s = self.stream_for(csid)
        cdef uint32_t value
        cdef uint8_t* p
        cdef bint extended

        chunks = (length + chunk_size - 1) // chunk_size if length > 0 else 1
        wb_reserve(&self.out, CHUNK_HEADER_MAX + (chunks - 1) * 7 + length)
        p = put_message_header(self.out.data + self.out.size, s, type_id, stream_id, timestamp,
                               <uint32_t>length, &value)
        extended = value >= TIMESTAMP_EXTENDED
        n = min_size(chunk_size, length)
        memcpy(p, payload, <size_t>n)
        p += n
        offset = n
        while offset < length:
            # 5.3.1.2.4 continuation chunks; 5.3.1.3 repeats the extended timestamp in each.
            p = put_basic_header(p, 3, csid)
            if extended:
                store_u32be(p, value)
                p += 4
            n = min_size(chunk_size, length - offset)
            memcpy(p, payload + offset, <size_t>n)
            p += n
            offset += n
        self.out.size = p - self.out.data
        return 0

    def append_frames(self, stream_id, list frames, Py_ssize_t start, long long offset,
                      long long last_out, unsigned int type_mask, object frame_type,
                      list pieces):
        """Send `frames[start:]` as messages whose chunk tails are already made, as
        take_with_header() + chunk_tail() would, in one call for a run of them.

        Each frame is an instance of exactly `frame_type` with `type_id`, `csid`, `dts`,
        `length` (the message's) and `tail` (its `chunk_tail()` at this muxer's chunk size):
        relay.simulcast.fanout.MuxedFrame. Its timestamp is max(dts + offset, 0). What goes
        out is appended to `pieces` in order: the pending output with the headers (and tails
        shorter than SMALL_TAIL, copied in with them) as one bytes, then each longer tail
        itself, uncopied; the last headers stay pending (take() or the next call). Stops at
        the first frame that is not a `frame_type`, whose type_id is not in `type_mask`
        (bit 1 << type_id), or whose timestamp needs the extended field.

        Returns (the index it stopped at, max(last_out, the timestamps sent), the message
        bytes sent)."""
        cdef uint32_t sid = <uint32_t>checked_int(stream_id, "stream_id", 0, 0xFFFFFFFF)
        cdef Py_ssize_t index = start
        cdef Py_ssize_t end = len(frames)
        cdef long long timestamp, sent = 0
        cdef long long type_id, csid, length
        cdef uint32_t value
        cdef Py_ssize_t size
        cdef MuxStream* s
        cdef uint8_t* p
        cdef bytes tail
        if start < 0:
            raise ValueError(f"start must be >= 0, got {start}")
        while index < end:
            frame = frames[index]
            if type(frame) is not frame_type:
                break
            type_id = frame.type_id
            if type_id < 0 or type_id > 31 or not (type_mask >> type_id) & 1:
                break
            timestamp = <long long>frame.dts + offset
            if timestamp < 0:
                timestamp = 0
            if timestamp >= TIMESTAMP_EXTENDED:
                break
            csid = frame.csid
            length = frame.length
            tail = frame.tail
            if csid < CSID_MIN or csid > CSID_MAX or length < 0 or length > MESSAGE_LENGTH_MAX:
                raise ValueError(f"frame {index}: csid {csid} or length {length} is out of "
                                 f"range")
            s = self.stream_for(<uint32_t>csid)
            size = len(tail)
            if size < SMALL_TAIL:
                wb_reserve(&self.out, CHUNK_HEADER_MAX + size)
            else:
                wb_reserve(&self.out, CHUNK_HEADER_MAX)
            p = put_message_header(self.out.data + self.out.size, s, <uint8_t>type_id, sid,
                                   <uint32_t>timestamp, <uint32_t>length, &value)
            if size < SMALL_TAIL:
                memcpy(p, PyBytes_AS_STRING(tail), <size_t>size)
                p += size
                self.out.size = p - self.out.data
            else:
                self.out.size = p - self.out.data
                pieces.append(self.take())
                pieces.append(tail)
            if timestamp > last_out:
                last_out = timestamp
            sent += length
            index += 1
        return index, last_out, sent

    def take_with_header(self, csid, type_id, stream_id, timestamp, length):
        """Append the first chunk's header of a message of `length` bytes, as write_message()
        would, and return the pending output through it (take()); the caller sends the
        message's `chunk_tail()` at this chunk size right after. None (nothing appended, the
        state unchanged) when the header needs an extended timestamp, which each continuation
        chunk repeats (RTMP 5.3.1.3): write_message() that one.

        With the tail shared, a message sent on many connections is chunked once, and each
        connection adds only its own header (its timestamps and header compression)."""
        cdef uint32_t c = <uint32_t>checked_int(csid, "csid", CSID_MIN, CSID_MAX)
        cdef uint8_t t = <uint8_t>checked_int(type_id, "type_id", 0, 0xFF)
        cdef uint32_t sid = <uint32_t>checked_int(stream_id, "stream_id", 0, 0xFFFFFFFF)
        cdef uint32_t ts = <uint32_t>checked_int(timestamp, "timestamp", 0, 0xFFFFFFFF)
        cdef uint32_t n = <uint32_t>checked_int(length, "length", 0, MESSAGE_LENGTH_MAX)
        cdef MuxStream* s = self.stream_for(c)
        cdef MuxStream saved = s[0]
        cdef uint32_t value
        wb_reserve(&self.out, CHUNK_HEADER_MAX)
        cdef uint8_t* p = put_message_header(self.out.data + self.out.size, s, t, sid, ts, n,
                                             &value)
        if value >= TIMESTAMP_EXTENDED:
            s[0] = saved
            return None
        self.out.size = p - self.out.data
        return self.take()
