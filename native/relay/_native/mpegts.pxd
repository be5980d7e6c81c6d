# Declarations for mpegts.pyx: the MPEG-TS demuxer (ISO/IEC 13818-1 2.4.3 transport packets,
# 2.4.4 PSI sections, 2.4.3.6 PES packets).
#
# This file sits at native/relay/_native/ for the reason given at the top of buffers.pxd: Cython
# finds a module's own .pxd under its full dotted name.

cimport cython
from libc.stdint cimport int64_t, uint8_t, uint16_t, uint32_t, uint64_t

from bytesio cimport WriteBuf


cdef enum:
    # 13818-1 2.4.3.2: every transport packet is 188 bytes and starts with sync byte 0x47.
    TS_PACKET_SIZE = 188
    TS_SYNC_BYTE = 0x47
    # 2.4.4.11 / 2.4.4.8: a PAT or PMT section's section_length is at most 1021, so the
    # whole section (3 header bytes + section_length) fits in 1024.
    PSI_SECTION_MAX = 1024
    # Elementary streams of the first program that are followed; a PMT listing more has the rest
    # ignored. Encoders send one video and one or a few audio streams.
    STREAMS_MAX = 16
    # PIDs are 13 bits (2.4.3.2).
    PID_COUNT = 8192


# Continuity-counter state of one PID (2.4.3.3).
ctypedef struct CcState:
    uint8_t last                 # continuity_counter of the last packet accepted
    bint known                   # a packet has been seen since the PID was (re)assigned
    bint duplicate_seen          # the last packet was a duplicate: a second one is an error


# A PSI section being reassembled from the packets of one PID (2.4.4).
ctypedef struct PsiState:
    uint8_t data[PSI_SECTION_MAX]  # the section so far, from table_id on
    Py_ssize_t filled            # bytes of data received
    bint active                  # a section is being received
    uint32_t last_crc            # CRC_32 of the last section acted on (a repeat is skipped)
    bint have_crc                # last_crc is valid
    CcState cc                   # continuity of the PID


# One elementary stream of the program and its PES being reassembled (2.4.3.6).
ctypedef struct EsState:
    uint16_t pid                 # the stream's PID (0x0010..0x1FFE)
    uint8_t stream_type          # stream_type from the PMT (Table 2-34)
    bint reassemble              # carries PES (false for stream types that carry sections)
    CcState cc                   # continuity of the PID
    WriteBuf pes                 # the PES packet so far, header included
    bint active                  # a PES is being received into pes
    bint dropping                # the PES in progress went over a bound: skip to the next start
    bint random_access           # random_access_indicator of the PES's first packet
    bint discontinuity           # a gap or a lost packet touched the PES in progress
    Py_ssize_t expected          # 6 + PES_packet_length once known and nonzero, else 0


@cython.final
cdef class PesPacket:
    cdef readonly int pid                # PID it arrived on
    cdef readonly int stream_type        # stream_type from the PMT
    cdef readonly long long pts          # 33-bit PTS (90 kHz), -1 when absent
    cdef readonly long long dts          # 33-bit DTS (90 kHz), == pts when only PTS is sent
    cdef readonly bint random_access     # random_access_indicator on its first TS packet
    cdef readonly bint discontinuity     # data may be missing: a gap or a loss touched it
    cdef readonly bytes data             # PES_packet_data_bytes (the elementary stream)


@cython.final
cdef class ProgramChanged:
    cdef readonly tuple streams          # ((pid, stream_type), ...) in PMT order


@cython.final
cdef class TsDemuxer:
    cdef Py_ssize_t max_pes_size         # largest PES (header included) assembled
    cdef Py_ssize_t max_buffered         # most PES bytes held over all streams at once
    cdef Py_ssize_t pes_bytes            # PES bytes held now (sum of the streams' pes.size)
    cdef uint8_t carry[TS_PACKET_SIZE]   # input kept for the next feed(): a partial packet
    cdef Py_ssize_t carry_len            # bytes in carry
    cdef bint lost                       # sync lost: searching for 0x47 repeated at +188
    cdef bint acquiring                  # the first sync of the stream is being searched for
    cdef bint skipped                    # bytes were skipped while acquiring
    cdef uint8_t pid_kind[PID_COUNT]     # 0 other, 1 PAT, 2 PMT, 3 + slot for an ES
    cdef int pmt_pid                     # PID of the first program's PMT, -1 until a PAT
    cdef int program_number              # its program_number
    cdef PsiState pat                    # the PAT being received
    cdef PsiState pmt                    # the PMT being received
    cdef EsState streams[STREAMS_MAX]    # the program's elementary streams, PMT order
    cdef int nstreams                    # entries of streams in use
    cdef bint program_seen               # a PMT has been acted on
    cdef list events                     # output of the feed() in progress
    cdef readonly uint64_t packets       # transport packets read (sync byte found)
    cdef readonly uint64_t resyncs       # times sync was lost and searched for
    cdef readonly uint64_t cc_errors     # continuity_counter gaps on followed PIDs
    cdef readonly uint64_t pes_dropped   # PES over a bound or with a malformed header
    cdef readonly uint64_t bytes_fed     # bytes handed to feed()
    cdef readonly uint64_t section_errors  # PSI sections with a bad CRC_32 or malformed
    cdef readonly uint64_t errored_packets # packets with transport_error_indicator or a bad adaptation field

    # Read what packets buf holds; return how many bytes were used (the rest is kept).
    cdef Py_ssize_t scan(self, const uint8_t* buf, Py_ssize_t end) except -1
    # One 188-byte packet at p.
    cdef int packet(self, const uint8_t* p) except -1
    # Continuity check of a packet (2.4.3.3); returns 0 ok, 1 gap, 2 duplicate to discard.
    cdef int continuity(self, CcState* cc, uint8_t counter, bint has_payload,
                        bint discontinuity_indicator) noexcept
    # PSI payload of one packet of the PAT (which 1) or PMT (which 2) PID.
    cdef int psi_payload(self, PsiState* st, const uint8_t* p, Py_ssize_t n, bint start,
                         int which) except -1
    # Append to the section in progress; returns bytes used; acts on a completed section.
    cdef Py_ssize_t psi_append(self, PsiState* st, const uint8_t* p, Py_ssize_t n,
                               int which) except -1
    cdef int on_pat(self, const uint8_t* d, Py_ssize_t total) except -1
    cdef int on_pmt(self, const uint8_t* d, Py_ssize_t total) except -1
    # PES payload of one packet of the ES in slot.
    cdef int pes_payload(self, EsState* es, const uint8_t* p, Py_ssize_t n, bint start,
                         bint random_access) except -1
    # Drop the PES in progress (a bound, or a malformed header); counted in pes_dropped.
    cdef void pes_drop(self, EsState* es) noexcept
    # Emit the PES in progress (if any), parsing its header; forget it either way.
    cdef int pes_finish(self, EsState* es) except -1
    # Forget the PES in progress without counting it.
    cdef void pes_reset(self, EsState* es) noexcept
    # Emit every PES in progress and drop the program's streams.
    cdef int clear_program(self) except -1
