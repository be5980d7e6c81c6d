# Declarations for rtmp_chunk.pyx: the RTMP chunk stream demuxer and muxer (RTMP 5.3, 5.4).
#
# This file sits at native/relay/_native/ for the reason given at the top of buffers.pxd: Cython
# finds a module's own .pxd under its full dotted name. Other native modules may cimport the
# classes below as `from relay._native.rtmp_chunk cimport ChunkDemuxer`.

cimport cython
from cpython.ref cimport PyObject
from libc.stdint cimport uint8_t, uint32_t, uint64_t

from bytesio cimport InputBuf, WriteBuf


# What the demuxer knows about one chunk stream (RTMP 5.3.1.2): the header fields that later
# chunks of fmt 1/2/3 inherit, and the message being assembled. One record per csid, created by
# the first fmt 0 chunk on that csid and kept until release().
ctypedef struct ChunkStream:
    uint32_t csid            # chunk stream id, 2..65599
    uint32_t stream_id       # message stream id of the last fmt 0 header
    uint32_t length          # message length of the last fmt 0/1 header
    uint32_t timestamp       # timestamp of the current (or last) message, modulo 2**32
    uint32_t delta           # last timestamp delta; after fmt 0 its absolute timestamp (5.3.1.2.4)
    uint8_t type_id          # message type id of the last fmt 0/1 header
    bint extended            # last fmt 0/1/2 header had timestamp field 0xFFFFFF (5.3.1.3)
    PyObject* payload        # bytes object being filled (owned reference), NULL between messages
    char* payload_data       # first byte of payload's buffer
    uint32_t filled          # bytes of the message received so far (head_len included)
    uint8_t head_len         # split_media: FLV tag header bytes kept in head, not in payload
    uint8_t head[8]          # that header (flv_head.pxd FLV_HEAD_MAX)


# What the muxer remembers about one chunk stream, to choose the most compact header.
ctypedef struct MuxStream:
    uint32_t csid            # chunk stream id, 2..65599
    uint32_t stream_id       # message stream id of the last message
    uint32_t length          # payload length of the last message
    uint32_t timestamp       # timestamp of the last message
    uint32_t delta           # timestamp field of the last fmt 0/1/2 header (fmt 0: absolute)
    uint8_t type_id          # message type id of the last message
    uint8_t started          # a message was sent on this csid (else the next header is fmt 0)


@cython.final
cdef class RtmpMessage:
    cdef readonly uint32_t csid          # chunk stream id it arrived on
    cdef readonly uint8_t type_id        # message type id (RTMP 5.4, 7.1)
    cdef readonly uint32_t timestamp     # message timestamp after delta accumulation, mod 2**32
    cdef readonly uint32_t stream_id     # message stream id
    cdef readonly bytes payload          # the message payload (less head_len leading bytes)
    cdef readonly uint8_t head_len       # split_media: how many leading bytes are in head
    cdef uint8_t head[8]                 # those bytes, the FLV tag header of a coded frame


@cython.final
cdef class ChunkDemuxer:
    cdef InputBuf input              # unread input; its max_size is max_buffered
    cdef Py_ssize_t exports          # live get_buffer() views: the input may not move while > 0
    cdef Py_ssize_t offered          # bytes offered by the last get_buffer(), not yet committed
    cdef Py_ssize_t max_message_size # longest message length accepted from a header
    cdef Py_ssize_t max_command_size # longest message of a type other than audio, video, aggregate
    cdef Py_ssize_t max_buffered     # bound on unread input + reserved partial payloads
    cdef Py_ssize_t reserved         # sum of the full lengths of partially received messages
    cdef uint64_t received           # bytes handed in since construction (RTMP 5.4.3)
    cdef uint32_t peer_chunk_size    # maximum chunk payload the peer sends (RTMP 5.4.1)
    cdef ChunkStream* streams        # per-csid records (PyMem), NULL until the first header
    cdef Py_ssize_t nstreams         # records in use
    cdef Py_ssize_t streams_capacity # records allocated
    cdef Py_ssize_t body_slot        # record whose chunk payload is being read
    cdef Py_ssize_t body_left        # payload bytes of the current chunk still to read (0: at a header)
    cdef object error                # the ChunkError already raised: a failed demuxer stays failed
    cdef public bint split_media     # keep coded frames' FLV headers apart (rtmp_ingest.pyx)

    # Index of the record for csid, or -1.
    cdef Py_ssize_t find_stream(self, uint32_t csid) noexcept
    # Append a record for csid (first fmt 0 chunk); raises ChunkError past MAX_CHUNK_STREAMS.
    cdef Py_ssize_t add_stream(self, uint32_t csid) except -1
    # Parse chunks until a message is complete (returns its record index) or input runs out (-1).
    cdef Py_ssize_t advance(self) except -2
    # split_media: an audio/video message header that must wait for its first body bytes.
    cdef bint head_pending(self, uint8_t type_id, uint32_t length, Py_ssize_t unread_after) noexcept
    # Allocate the payload of a message starting on record slot; the header is consumed.
    cdef int start_message(self, Py_ssize_t slot, Py_ssize_t unread_after) except -1
    # Hand over the completed message of record slot, applying Set Chunk Size and Abort.
    cdef RtmpMessage finish_message(self, Py_ssize_t slot)
    # Drop the partial message of record slot (Abort, release).
    cdef void drop_partial(self, Py_ssize_t slot) noexcept
    # fail() with the reason for a fmt 0/1/2 header inside a message; raise and keep a
    # MessageTooLong for a length over max_message_size.
    cdef int fail_interrupted(self, uint8_t fmt, Py_ssize_t slot) except -1
    cdef int fail_too_long(self, uint32_t csid, uint32_t length) except -1
    # Record and raise a ChunkError; every later call raises it again.
    cdef int fail(self, str reason) except -1
    # Raise the stored ChunkError if the demuxer has failed.
    cdef int check_failed(self) except -1


@cython.final
cdef class ChunkMuxer:
    cdef WriteBuf out                # chunks waiting for take()
    cdef uint32_t out_chunk_size     # maximum chunk payload we send
    cdef MuxStream* streams          # per-csid header state (PyMem), NULL until the first message
    cdef Py_ssize_t nstreams         # records in use
    cdef Py_ssize_t streams_capacity # records allocated
    cdef Py_ssize_t last_slot        # record used by the previous message (a cheap lookup cache)

    # The csid's record, added on first use.
    cdef MuxStream* stream_for(self, uint32_t csid) except NULL
    # Chunk one message into out (arguments already range-checked).
    cdef int write(self, uint32_t csid, uint8_t type_id, uint32_t stream_id, uint32_t timestamp,
                   const uint8_t* payload, Py_ssize_t length) except -1
