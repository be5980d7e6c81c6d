"""MPEG-TS demuxer: transport packets in, PES packets and program changes out (ISO/IEC 13818-1).

Theory of operation. feed() reads 188-byte transport packets (2.4.3.2) straight from the caller's
buffer; only a trailing partial packet (at most 188 bytes) is copied, into `carry`, and is read
with the start of the next feed(). A packet must start with the sync byte 0x47; when one does not,
sync is lost (counted in `resyncs`) and the demuxer searches for a 0x47 that is repeated 188 bytes
later, which is where it resumes; the first sync of a stream is found the same way (counted only
when bytes had to be skipped). Every PES in progress is marked `discontinuity` then, since the
skipped bytes may have held its packets.

PIDs are looked up in one 8192-entry table (`pid_kind`): PID 0 carries the PAT, whose first
program with a nonzero program_number (0 names the NIT, 2.4.4.3) gives the PMT's PID; the PMT
(2.4.4.8) gives the elementary streams. Both are PSI sections (2.4.4), reassembled across packets
with the pointer_field, checked with their CRC_32 (Annex A; a bad section is ignored and counted
in `section_errors`), and acted on only when their CRC differs from the last one acted on. A PMT
whose (pid, stream_type) list differs from the current one emits ProgramChanged, after the PES
in progress of any stream it removes or retypes. Packets on any other PID are skipped.

Continuity (2.4.3.3): each followed PID's continuity_counter must advance by one per packet with
a payload and stay put on one without. A packet may be repeated once (same counter, with a
payload): the copy is discarded. A discontinuity_indicator in the adaptation field (2.4.3.5)
allows any value. Anything else is a gap, counted in `cc_errors`; it marks the PES in progress
`discontinuity` (or drops the PSI section in progress).

PES reassembly (2.4.3.6): a packet with payload_unit_start_indicator ends the PID's PES in
progress and starts one; the payload bytes accumulate in a growable C buffer per stream. A PES
with PES_packet_length 0 (video, 2.4.3.7) ends at the next start on its PID or at flush(); one
with a nonzero length ends as soon as that many bytes have arrived (one that is cut short by the
next start is emitted marked `discontinuity`). The header is parsed once the PES is complete,
and the payload leaves as one bytes object: nothing else is created per packet. A PES over
max_pes_size, PES bytes over max_buffered across streams, or a malformed header drop the PES
(counted in `pes_dropped`).

Nothing a peer sends raises: bad bytes are counted and skipped. TsError is only for misuse
(a bad argument, a feed of something that is not bytes-like).
"""

cimport cython
from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_FromStringAndSize
from cpython.long cimport PyLong_AsLongLongAndOverflow
from libc.stdint cimport int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memchr, memcpy, memset

from bytesio cimport load_u16be, wb_clear, wb_free, wb_init, wb_reserve

__all__ = [
    "DEFAULT_MAX_BUFFERED",
    "DEFAULT_MAX_PES_SIZE",
    "MAX_STREAMS",
    "PACKET_SIZE",
    "PesPacket",
    "ProgramChanged",
    "TsDemuxer",
    "TsError",
]


cdef enum:
    # pid_kind values.
    KIND_OTHER = 0
    KIND_PAT = 1
    KIND_PMT = 2
    KIND_ES = 3
    PID_PAT = 0x0000
    PID_NULL = 0x1FFF
    # 2.4.3.3 Table 2-3: PIDs 0x0010..0x1FFE may carry a PMT or elementary stream.
    PID_FIRST_FREE = 0x0010
    TABLE_PAT = 0x00
    TABLE_PMT = 0x02
    # A PES buffer larger than this after a PES completes is freed, so a stream that once sent a
    # huge PES does not keep its allocation.
    PES_KEEP = 1 << 20
    # feed() joins carry to this many new bytes to find the first packet boundary: enough to
    # decide every sync candidate in carry (carry <= 188 bytes, and a candidate at q needs q+188).
    JOIN_SIZE = 2 * TS_PACKET_SIZE

PACKET_SIZE = TS_PACKET_SIZE
DEFAULT_MAX_PES_SIZE = 8 * 1024 * 1024
# Two streams' worth of maximal PES: a bound on what a peer makes one connection hold.
DEFAULT_MAX_BUFFERED = 16 * 1024 * 1024
MAX_STREAMS = STREAMS_MAX
# The largest bound accepted; a PES_packet_length is 16 bits, but a length-0 video PES is not.
cdef Py_ssize_t MAX_BOUND = 1 << 30

# CRC_32 of PSI sections (13818-1 Annex A): polynomial 0x04C11DB7, MSB first, initial value
# 0xFFFFFFFF, no final XOR; a section's CRC over all its bytes, CRC_32 included, is 0.
cdef uint32_t CRC_TABLE[256]


cdef void _fill_crc_table() noexcept:
    cdef uint32_t crc
    cdef int i, bit
    for i in range(256):
        crc = <uint32_t>i << 24
        for bit in range(8):
            crc = (crc << 1) ^ 0x04C11DB7 if crc & 0x80000000 else crc << 1
        CRC_TABLE[i] = crc


_fill_crc_table()


cdef inline uint32_t crc32_mpeg(const uint8_t* p, Py_ssize_t n) noexcept nogil:
    cdef uint32_t crc = 0xFFFFFFFF
    cdef Py_ssize_t i
    for i in range(n):
        crc = (crc << 8) ^ CRC_TABLE[((crc >> 24) ^ p[i]) & 0xFF]
    return crc


cdef inline long long read_timestamp(const uint8_t* p) noexcept nogil:
    # 2.4.3.7: a 33-bit PTS or DTS in 5 bytes, split 3 + 15 + 15 around marker bits.
    return ((<long long>(p[0] >> 1) & 0x07) << 30) | (<long long>p[1] << 22) \
        | (<long long>(p[2] >> 1) << 15) | (<long long>p[3] << 7) | (p[4] >> 1)


cdef inline bint has_optional_header(uint8_t stream_id) noexcept nogil:
    # 2.4.3.7: every stream_id but these carries the flags, header_data_length and PTS/DTS.
    return not (stream_id == 0xBC or stream_id == 0xBE or stream_id == 0xBF
                or stream_id == 0xF0 or stream_id == 0xF1 or stream_id == 0xFF
                or stream_id == 0xF2 or stream_id == 0xF8)


cdef inline bint carries_sections(uint8_t stream_type) noexcept nogil:
    # Table 2-34 stream types that carry sections rather than PES: private sections (0x05),
    # DSM-CC (0x0A..0x0D), and SCTE 35 splice information (0x86). Their PIDs are listed in
    # ProgramChanged but not reassembled.
    return stream_type == 0x05 or (0x0A <= stream_type <= 0x0D) or stream_type == 0x86


class TsError(ValueError):
    """The demuxer was misused (a bad argument); peer bytes never raise it."""


cdef Py_ssize_t checked_bound(object value, str name) except -1:
    cdef int overflow = 0
    cdef long long number
    if not isinstance(value, int) or isinstance(value, bool):
        raise TsError(f"{name} must be an int, got {type(value).__name__}")
    number = PyLong_AsLongLongAndOverflow(value, &overflow)
    if overflow != 0 or number < TS_PACKET_SIZE or number > MAX_BOUND:
        raise TsError(f"{name} must be {TS_PACKET_SIZE}..{MAX_BOUND}, got {value}")
    return <Py_ssize_t>number


cdef inline void cc_forget(CcState* cc) noexcept nogil:
    cc.known = False
    cc.duplicate_seen = False
    cc.last = 0


cdef class PesPacket:
    """One PES packet (13818-1 2.4.3.6) of an elementary stream of the program."""

    def __init__(self, int pid, int stream_type, long long pts, long long dts,
                 bint random_access, bint discontinuity, bytes data not None):
        self.pid = pid
        self.stream_type = stream_type
        self.pts = pts
        self.dts = dts
        self.random_access = random_access
        self.discontinuity = discontinuity
        self.data = data

    def __repr__(self):
        return (f"PesPacket(pid={self.pid}, stream_type=0x{self.stream_type:02x}, "
                f"pts={self.pts}, dts={self.dts}, random_access={self.random_access}, "
                f"discontinuity={self.discontinuity}, data=<{len(self.data)} bytes>)")

    def __eq__(self, other):
        if not isinstance(other, PesPacket):
            return NotImplemented
        cdef PesPacket that = <PesPacket>other
        return (self.pid == that.pid and self.stream_type == that.stream_type
                and self.pts == that.pts and self.dts == that.dts
                and self.random_access == that.random_access
                and self.discontinuity == that.discontinuity and self.data == that.data)

    def __hash__(self):
        return hash((self.pid, self.stream_type, self.pts, self.dts, self.random_access,
                     self.discontinuity, self.data))


cdef class ProgramChanged:
    """The first program's elementary streams, as its PMT (2.4.4.8) lists them: emitted when a
    PMT is first seen and whenever the (pid, stream_type) list changes."""

    def __init__(self, tuple streams not None):
        self.streams = streams

    def __repr__(self):
        listed = ", ".join(f"({pid}, 0x{kind:02x})" for pid, kind in self.streams)
        return f"ProgramChanged(streams=({listed}))"

    def __eq__(self, other):
        if not isinstance(other, ProgramChanged):
            return NotImplemented
        return self.streams == (<ProgramChanged>other).streams

    def __hash__(self):
        return hash(self.streams)


cdef class TsDemuxer:
    """Demuxes an MPEG transport stream into the first program's PES packets (13818-1 2.4).

    feed() bytes as they arrive, in any split; each call returns the PesPacket and
    ProgramChanged events completed by it, in stream order. flush() at end of input emits the
    PES still in progress. Counters (`packets`, `resyncs`, `cc_errors`, `pes_dropped`,
    `bytes_fed`, `section_errors`, `errored_packets`) say what was survived.
    """

    def __cinit__(self):
        cdef int slot
        self.max_pes_size = DEFAULT_MAX_PES_SIZE
        self.max_buffered = DEFAULT_MAX_BUFFERED
        memset(self.pid_kind, KIND_OTHER, PID_COUNT)
        self.pid_kind[PID_PAT] = KIND_PAT
        self.pmt_pid = -1
        self.program_number = -1
        # Sync is first acquired like a lost one, on a 0x47 repeated 188 bytes later: a stream
        # may start mid-packet (a caller joining a multicast, a listener that missed the start).
        self.lost = True
        self.acquiring = True
        for slot in range(STREAMS_MAX):
            wb_init(&self.streams[slot].pes)
        self.events = []

    def __init__(self, max_pes_size=DEFAULT_MAX_PES_SIZE, *, max_buffered=DEFAULT_MAX_BUFFERED):
        self.max_pes_size = checked_bound(max_pes_size, "max_pes_size")
        self.max_buffered = checked_bound(max_buffered, "max_buffered")

    def __dealloc__(self):
        cdef int slot
        for slot in range(STREAMS_MAX):
            wb_free(&self.streams[slot].pes)

    @property
    def max_pes_size(self):
        """Largest PES packet (header included) reassembled; a larger one is dropped."""
        return self.max_pes_size

    @property
    def max_buffered(self):
        """Most PES bytes held at once over all streams; past it the growing PES is dropped."""
        return self.max_buffered

    @property
    def buffered(self):
        """Bytes held now: PES in progress plus a partial packet."""
        return self.pes_bytes + self.carry_len

    @property
    def program(self):
        """The current program's ((pid, stream_type), ...), empty before the first PMT."""
        return tuple((self.streams[i].pid, self.streams[i].stream_type)
                     for i in range(self.nstreams))

    def feed(self, data):
        """Demux the bytes of a bytes-like object; returns the events they complete."""
        cdef Py_buffer view
        cdef const uint8_t* buf
        cdef Py_ssize_t n, take, used, offset, rest
        cdef uint8_t joined[TS_PACKET_SIZE + JOIN_SIZE]
        try:
            PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
        except (TypeError, BufferError) as exc:
            raise TsError(f"feed() takes a contiguous bytes-like object, got "
                          f"{type(data).__name__}: {exc}") from None
        self.events = []
        try:
            buf = <const uint8_t*>view.buf
            n = view.len
            self.bytes_fed += <uint64_t>n
            offset = 0
            if self.carry_len > 0:
                # Join the kept bytes to the first new ones; see JOIN_SIZE for why the scan then
                # always gets past carry when n > JOIN_SIZE.
                take = n if n < JOIN_SIZE else JOIN_SIZE
                memcpy(joined, self.carry, <size_t>self.carry_len)
                memcpy(joined + self.carry_len, buf, <size_t>take)
                used = self.scan(joined, self.carry_len + take)
                if take == n:
                    rest = self.carry_len + take - used
                    memcpy(self.carry, joined + used, <size_t>rest)
                    self.carry_len = rest
                    return self.events
                offset = used - self.carry_len
                self.carry_len = 0
            used = self.scan(buf + offset, n - offset)
            rest = n - offset - used
            memcpy(self.carry, buf + offset + used, <size_t>rest)
            self.carry_len = rest
            return self.events
        finally:
            PyBuffer_Release(&view)
            self.events = None

    def flush(self):
        """End of input: emit every PES in progress (a partial packet is discarded)."""
        cdef int slot
        self.events = []
        try:
            if self.carry_len == TS_PACKET_SIZE and self.carry[0] == TS_SYNC_BYTE:
                # A last packet whose successor never came to confirm its sync byte.
                self.packet(self.carry)
            self.carry_len = 0
            for slot in range(self.nstreams):
                self.pes_finish(&self.streams[slot])
            return self.events
        finally:
            self.events = None

    # --- packets -------------------------------------------------------------------------------

    cdef Py_ssize_t scan(self, const uint8_t* buf, Py_ssize_t end) except -1:
        cdef Py_ssize_t pos = 0
        cdef const uint8_t* hit
        cdef int slot
        while True:
            if not self.lost:
                while end - pos >= TS_PACKET_SIZE and buf[pos] == TS_SYNC_BYTE:
                    self.packet(buf + pos)
                    pos += TS_PACKET_SIZE
                if end - pos < TS_PACKET_SIZE:
                    return pos
                # 2.4.3.2: not a sync byte where a packet should start.
                self.lost = True
                self.skipped = True
                self.resyncs += 1
                for slot in range(self.nstreams):
                    if self.streams[slot].active:
                        self.streams[slot].discontinuity = True
            # Search for a 0x47 with another 188 bytes later (the packet after it).
            while True:
                hit = <const uint8_t*>memchr(buf + pos, TS_SYNC_BYTE, <size_t>(end - pos))
                if hit == NULL:
                    self.skipped = self.skipped or pos < end
                    return end
                self.skipped = self.skipped or hit != buf + pos
                pos = hit - buf
                if pos + TS_PACKET_SIZE >= end:
                    return pos  # undecided until more bytes arrive; kept (<= 188 bytes)
                if buf[pos + TS_PACKET_SIZE] == TS_SYNC_BYTE:
                    break
                self.skipped = True
                pos += 1
            self.lost = False
            if self.acquiring:
                # The first sync of the stream: a resync only if bytes had to be skipped.
                self.acquiring = False
                if self.skipped:
                    self.resyncs += 1

    cdef int packet(self, const uint8_t* p) except -1:
        cdef uint8_t b1 = p[1]
        cdef int pid = ((b1 & 0x1F) << 8) | p[2]
        cdef uint8_t kind = self.pid_kind[pid]
        cdef uint8_t control = (p[3] >> 4) & 0x03
        cdef Py_ssize_t start = 4
        cdef Py_ssize_t af_length
        cdef bint random_access = False
        cdef bint discontinuity = False
        cdef int verdict
        cdef EsState* es
        cdef PsiState* st
        self.packets += 1
        if b1 & 0x80:
            # transport_error_indicator: the header itself may be wrong, so nothing is trusted;
            # the continuity check of the PID's next packet sees the loss.
            self.errored_packets += 1
            return 0
        if kind == KIND_OTHER or control == 0:
            return 0  # not followed; or adaptation_field_control '00', reserved: discarded
        if control & 0x02:
            # 2.4.3.4 adaptation field: up to 183 bytes alone, 182 before a payload.
            af_length = p[4]
            if af_length > (183 if control == 2 else 182):
                self.errored_packets += 1
                if kind >= KIND_ES:
                    es = &self.streams[kind - KIND_ES]
                    if es.active:
                        es.discontinuity = True
                return 0
            if af_length > 0:
                discontinuity = (p[5] & 0x80) != 0
                random_access = (p[5] & 0x40) != 0
            start = 5 + af_length
        if kind >= KIND_ES:
            es = &self.streams[kind - KIND_ES]
            verdict = self.continuity(&es.cc, p[3] & 0x0F, control & 0x01, discontinuity)
            if verdict == 2:
                return 0
            if verdict == 1 and es.active:
                es.discontinuity = True
            if control & 0x01 and es.reassemble:
                self.pes_payload(es, p + start, TS_PACKET_SIZE - start, (b1 & 0x40) != 0,
                                 random_access)
            return 0
        st = &self.pat if kind == KIND_PAT else &self.pmt
        verdict = self.continuity(&st.cc, p[3] & 0x0F, control & 0x01, discontinuity)
        if verdict == 2:
            return 0
        if verdict == 1:
            st.active = False  # the section in progress lost bytes
        if control & 0x01:
            self.psi_payload(st, p + start, TS_PACKET_SIZE - start, (b1 & 0x40) != 0, kind)
        return 0

    cdef int continuity(self, CcState* cc, uint8_t counter, bint has_payload,
                        bint discontinuity_indicator) noexcept:
        # 2.4.3.3: the counter advances with each packet that has a payload and not otherwise;
        # one duplicate of a packet with a payload may follow it and is to be discarded.
        cdef uint8_t expected
        if not cc.known or discontinuity_indicator:
            cc.known = True
            cc.duplicate_seen = False
            cc.last = counter
            return 0
        if has_payload:
            if counter == cc.last and not cc.duplicate_seen:
                cc.duplicate_seen = True
                return 2
            expected = (cc.last + 1) & 0x0F
        else:
            expected = cc.last
        cc.duplicate_seen = False
        cc.last = counter
        if counter == expected:
            return 0
        self.cc_errors += 1
        return 1

    # --- PSI -----------------------------------------------------------------------------------

    cdef int psi_payload(self, PsiState* st, const uint8_t* p, Py_ssize_t n, bint start,
                         int which) except -1:
        cdef Py_ssize_t pointer, used
        if not start:
            if st.active:
                self.psi_append(st, p, n, which)
            return 0
        if n < 1:
            st.active = False
            return 0
        # 2.4.4.2 pointer_field: the bytes before the new section end the previous one.
        pointer = p[0]
        p += 1
        n -= 1
        if pointer > n:
            st.active = False
            self.section_errors += 1
            return 0
        if st.active:
            self.psi_append(st, p, pointer, which)
            if st.active:  # the next section starts before this one was complete
                st.active = False
                self.section_errors += 1
        p += pointer
        n -= pointer
        # Sections may follow one another in a packet; 0xFF stuffing ends them (2.4.4.1).
        while n > 0 and p[0] != 0xFF:
            st.active = True
            st.filled = 0
            used = self.psi_append(st, p, n, which)
            p += used
            n -= used
            if st.active:
                break
        return 0

    cdef Py_ssize_t psi_append(self, PsiState* st, const uint8_t* p, Py_ssize_t n,
                               int which) except -1:
        cdef Py_ssize_t used = 0
        cdef Py_ssize_t total, want
        cdef uint32_t crc
        if st.filled < 3:
            want = 3 - st.filled
            if want > n:
                want = n
            memcpy(st.data + st.filled, p, <size_t>want)
            st.filled += want
            used = want
            if st.filled < 3:
                return used
        total = 3 + (load_u16be(st.data + 1) & 0x0FFF)
        if total > PSI_SECTION_MAX or total < 3 + 9:
            # 2.4.4.4 / 2.4.4.9: section_length <= 1021 and a long-form section holds at
            # least its 5-byte header extension and CRC_32.
            st.active = False
            self.section_errors += 1
            return n
        want = total - st.filled
        if want > n - used:
            want = n - used
        memcpy(st.data + st.filled, p + used, <size_t>want)
        st.filled += want
        used += want
        if st.filled < total:
            return used
        st.active = False
        if crc32_mpeg(st.data, total) != 0:
            self.section_errors += 1
            return used
        crc = (<uint32_t>st.data[total - 4] << 24) | (<uint32_t>st.data[total - 3] << 16) \
            | (<uint32_t>st.data[total - 2] << 8) | st.data[total - 1]
        if st.have_crc and crc == st.last_crc:
            return used  # the same section again (PAT and PMT repeat every 100 ms or so)
        if which == KIND_PAT:
            if st.data[0] != TABLE_PAT:
                return used
            if self.on_pat(st.data, total):
                st.have_crc = True
                st.last_crc = crc
        else:
            if st.data[0] != TABLE_PMT:
                return used
            if self.on_pmt(st.data, total):
                st.have_crc = True
                st.last_crc = crc
        return used

    cdef int on_pat(self, const uint8_t* d, Py_ssize_t total) except -1:
        # 2.4.4.3 Table 2-30; returns 1 when acted on, 0 when ignored.
        cdef Py_ssize_t pos
        cdef int number, pid, slot
        if not (d[1] & 0x80) or not (d[5] & 0x01) or d[6] != 0:
            # Not the long form, not current_next_indicator, or not section 0: ignored.
            return 0
        pos = 8
        while pos + 4 <= total - 4:
            number = load_u16be(d + pos)
            pid = load_u16be(d + pos + 2) & 0x1FFF
            pos += 4
            if number == 0:
                continue  # network_PID (the NIT)
            if pid < PID_FIRST_FREE or pid == PID_NULL:
                self.section_errors += 1
                return 0
            if pid != self.pmt_pid:
                if self.pid_kind[pid] >= KIND_ES:
                    self.clear_program()  # the new PMT PID was an elementary stream's
                if self.pmt_pid >= 0:
                    self.pid_kind[self.pmt_pid] = KIND_OTHER
                self.pmt_pid = pid
                self.pid_kind[pid] = KIND_PMT
                self.pmt.active = False
                self.pmt.have_crc = False
                cc_forget(&self.pmt.cc)
            if number != self.program_number:
                self.program_number = number
                self.pmt.have_crc = False
            return 1
        return 1

    cdef int on_pmt(self, const uint8_t* d, Py_ssize_t total) except -1:
        # 2.4.4.8 Table 2-33; returns 1 when acted on, 0 when ignored.
        cdef Py_ssize_t pos, end, info_length
        cdef int count = 0
        cdef int slot, old, pid, i
        cdef uint16_t pids[STREAMS_MAX]
        cdef uint8_t types[STREAMS_MAX]
        cdef int keep[STREAMS_MAX]
        cdef EsState kept[STREAMS_MAX]
        cdef bint same
        if not (d[1] & 0x80) or not (d[5] & 0x01) or d[6] != 0:
            return 0
        if load_u16be(d + 3) != self.program_number:
            return 0  # another program's PMT on the same PID
        end = total - 4
        info_length = load_u16be(d + 10) & 0x0FFF
        pos = 12 + info_length
        if pos > end:
            self.section_errors += 1
            return 0
        while pos + 5 <= end:
            pid = load_u16be(d + pos + 1) & 0x1FFF
            info_length = load_u16be(d + pos + 3) & 0x0FFF
            if pos + 5 + info_length > end:
                self.section_errors += 1
                return 0
            if count < STREAMS_MAX and PID_FIRST_FREE <= pid < PID_NULL \
                    and pid != self.pmt_pid:
                same = False
                for i in range(count):
                    if pids[i] == pid:
                        same = True
                if not same:
                    pids[count] = <uint16_t>pid
                    types[count] = d[pos]
                    count += 1
            pos += 5 + info_length
        if self.program_seen and count == self.nstreams:
            same = True
            for i in range(count):
                if pids[i] != self.streams[i].pid or types[i] != self.streams[i].stream_type:
                    same = False
                    break
            if same:
                return 1
        # Streams that stay (same PID and type) keep their state, PES in progress included;
        # the others end their PES in progress before the change is announced.
        for old in range(self.nstreams):
            keep[old] = -1
            for i in range(count):
                if pids[i] == self.streams[old].pid and types[i] == self.streams[old].stream_type:
                    keep[old] = i
            if keep[old] < 0:
                self.pes_finish(&self.streams[old])
                wb_free(&self.streams[old].pes)
            self.pid_kind[self.streams[old].pid] = KIND_OTHER
        memcpy(kept, self.streams, sizeof(EsState) * STREAMS_MAX)
        for slot in range(STREAMS_MAX):
            wb_init(&self.streams[slot].pes)
        for slot in range(count):
            for old in range(self.nstreams):
                if keep[old] == slot:
                    self.streams[slot] = kept[old]
                    break
            else:
                self.streams[slot].pid = pids[slot]
                self.streams[slot].stream_type = types[slot]
                self.streams[slot].reassemble = not carries_sections(types[slot])
                cc_forget(&self.streams[slot].cc)
                self.pes_reset(&self.streams[slot])
            self.pid_kind[pids[slot]] = <uint8_t>(KIND_ES + slot)
        self.nstreams = count
        self.program_seen = True
        self.events.append(ProgramChanged(tuple((pids[i], types[i]) for i in range(count))))
        return 1

    cdef int clear_program(self) except -1:
        cdef int slot
        for slot in range(self.nstreams):
            self.pes_finish(&self.streams[slot])
            wb_free(&self.streams[slot].pes)
            self.pid_kind[self.streams[slot].pid] = KIND_OTHER
        if self.program_seen:
            self.events.append(ProgramChanged(()))  # the streams are gone until the next PMT
        self.nstreams = 0
        self.program_seen = False
        self.pmt.have_crc = False
        return 0

    # --- PES -----------------------------------------------------------------------------------

    cdef int pes_payload(self, EsState* es, const uint8_t* p, Py_ssize_t n, bint start,
                         bint random_access) except -1:
        cdef Py_ssize_t room
        if start:
            if es.active:
                self.pes_finish(es)
            elif es.dropping:
                self.pes_reset(es)
            es.active = True
            es.random_access = random_access
            es.discontinuity = False
            es.expected = 0
        elif not es.active:
            return 0  # no PES in progress (its start was lost, or it was complete or dropped)
        if es.expected != 0 and es.pes.size + n > es.expected:
            n = es.expected - es.pes.size  # the rest of the packet is stuffing
        if es.pes.size + n > self.max_pes_size or self.pes_bytes + n > self.max_buffered:
            self.pes_drop(es)
            return 0
        if n > es.pes.capacity - es.pes.size:
            wb_reserve(&es.pes, n)
        memcpy(es.pes.data + es.pes.size, p, <size_t>n)
        es.pes.size += n
        self.pes_bytes += n
        if es.expected == 0 and es.pes.size >= 6:
            # 2.4.3.7 PES_packet_length; 0 means unbounded (video), complete at the next start.
            room = load_u16be(es.pes.data + 4)
            if room != 0:
                es.expected = 6 + room
                if es.expected > self.max_pes_size:
                    self.pes_drop(es)
                    return 0
                if es.pes.size >= es.expected:
                    self.pes_finish(es)
        elif es.expected != 0 and es.pes.size >= es.expected:
            self.pes_finish(es)
        return 0

    cdef void pes_reset(self, EsState* es) noexcept:
        self.pes_bytes -= es.pes.size
        if es.pes.capacity > PES_KEEP:
            wb_free(&es.pes)
        else:
            wb_clear(&es.pes)
        es.active = False
        es.dropping = False
        es.random_access = False
        es.discontinuity = False
        es.expected = 0

    cdef void pes_drop(self, EsState* es) noexcept:
        self.pes_reset(es)
        es.dropping = True
        self.pes_dropped += 1

    cdef int pes_finish(self, EsState* es) except -1:
        cdef const uint8_t* d = es.pes.data
        cdef Py_ssize_t size = es.pes.size
        cdef Py_ssize_t offset = 6
        cdef long long pts = -1
        cdef long long dts = -1
        cdef uint8_t flags, stream_id
        cdef PesPacket pes
        if not es.active:
            if es.dropping:
                self.pes_reset(es)
            return 0
        if es.expected != 0:
            if size > es.expected:
                size = es.expected
            elif size < es.expected:
                es.discontinuity = True  # cut short: its declared length never arrived
        # 2.4.3.6: packet_start_code_prefix, stream_id, PES_packet_length.
        if size < 6 or d[0] != 0 or d[1] != 0 or d[2] != 1:
            self.pes_drop(es)
            return 0
        stream_id = d[3]
        if stream_id == 0xBE:
            self.pes_reset(es)  # padding_stream: nothing to deliver
            return 0
        if has_optional_header(stream_id):
            # '10', flags, PTS_DTS_flags, header_data_length (2.4.3.7).
            if size < 9 or (d[6] & 0xC0) != 0x80:
                self.pes_drop(es)
                return 0
            flags = d[7] >> 6
            offset = 9 + d[8]
            if offset > size or flags == 1 or (flags == 2 and d[8] < 5) \
                    or (flags == 3 and d[8] < 10):
                self.pes_drop(es)
                return 0
            if flags & 2:
                pts = read_timestamp(d + 9)
                dts = read_timestamp(d + 14) if flags == 3 else pts
        pes = PesPacket.__new__(PesPacket)
        pes.pid = es.pid
        pes.stream_type = es.stream_type
        pes.pts = pts
        pes.dts = dts
        pes.random_access = es.random_access
        pes.discontinuity = es.discontinuity
        pes.data = PyBytes_FromStringAndSize(<const char*>d + offset, size - offset)
        self.pes_reset(es)
        self.events.append(pes)
        return 0
