# Byte cursors and growable buffers shared by every native parser and writer.
#
# Theory of operation: a parser sees its input as one ReadCursor (pointer + length + position)
# and reads big-endian fields with the inline loads below; a writer appends to one WriteBuf that
# grows by doubling; stream input accumulates in one InputBuf whose unread bytes are handed to the
# parser as a ReadCursor. Everything here is inline C: this .pxd has no .pyx, so cimporting it
# adds no import at run time and any extension module (RTMP, MPEG-TS, fMP4) can embed these
# structs directly. Only the allocating helpers need the GIL (PyMem_* is pymalloc); the loads,
# stores and cursor reads are `noexcept nogil` and compile to plain C.

from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcpy, memmove
from cpython.mem cimport PyMem_Free, PyMem_Realloc
from cpython.pyport cimport PY_SSIZE_T_MAX


cdef enum:
    # Smallest allocation a WriteBuf makes, so that many tiny appends cost few reallocations.
    WB_MIN_CAPACITY = 64


# ---------------------------------------------------------------------------------------------
# Loads and stores on raw pointers. Network byte order is big-endian throughout RTMP, MPEG-TS
# and ISO BMFF; shifts on single bytes are alignment-safe, and compilers fuse them into one load
# plus a byte swap.

# Read a big-endian 16-bit field (RTMP 5.3.1.1 chunk stream ids 64..65599, TS section lengths).
cdef inline uint16_t load_u16be(const uint8_t* p) noexcept nogil:
    return <uint16_t>((<uint16_t>p[0] << 8) | p[1])

# Read a big-endian 24-bit field (RTMP 5.3.1.2 timestamp and message length, FLV tag sizes).
cdef inline uint32_t load_u24be(const uint8_t* p) noexcept nogil:
    return (<uint32_t>p[0] << 16) | (<uint32_t>p[1] << 8) | p[2]

# Read a big-endian 32-bit field (RTMP 5.3.1.3 extended timestamp, ISO BMFF box sizes).
cdef inline uint32_t load_u32be(const uint8_t* p) noexcept nogil:
    return (<uint32_t>p[0] << 24) | (<uint32_t>p[1] << 16) | (<uint32_t>p[2] << 8) | p[3]

# Read a little-endian 32-bit field: RTMP 5.3.1.2.1 sends the message stream id little-endian.
cdef inline uint32_t load_u32le(const uint8_t* p) noexcept nogil:
    return (<uint32_t>p[3] << 24) | (<uint32_t>p[2] << 16) | (<uint32_t>p[1] << 8) | p[0]

# Read a big-endian IEEE 754 double (AMF0 2.2 number); memcpy type-puns without aliasing UB.
cdef inline double load_f64be(const uint8_t* p) noexcept nogil:
    cdef uint64_t bits = (<uint64_t>load_u32be(p) << 32) | load_u32be(p + 4)
    cdef double value
    memcpy(&value, &bits, 8)
    return value

# Write a big-endian 16-bit field; also used to patch lengths in place after the payload is known.
cdef inline void store_u16be(uint8_t* p, uint16_t value) noexcept nogil:
    p[0] = <uint8_t>(value >> 8)
    p[1] = <uint8_t>value

# Write the low 24 bits big-endian; the caller has checked the value fits (RTMP 5.3.1.2).
cdef inline void store_u24be(uint8_t* p, uint32_t value) noexcept nogil:
    p[0] = <uint8_t>(value >> 16)
    p[1] = <uint8_t>(value >> 8)
    p[2] = <uint8_t>value

# Write a big-endian 32-bit field; fMP4 box sizes are patched this way once the box is complete.
cdef inline void store_u32be(uint8_t* p, uint32_t value) noexcept nogil:
    p[0] = <uint8_t>(value >> 24)
    p[1] = <uint8_t>(value >> 16)
    p[2] = <uint8_t>(value >> 8)
    p[3] = <uint8_t>value

# Write a little-endian 32-bit field (RTMP 5.3.1.2.1 message stream id).
cdef inline void store_u32le(uint8_t* p, uint32_t value) noexcept nogil:
    p[0] = <uint8_t>value
    p[1] = <uint8_t>(value >> 8)
    p[2] = <uint8_t>(value >> 16)
    p[3] = <uint8_t>(value >> 24)

# Write a big-endian IEEE 754 double (AMF0 2.2 number), bit-exact including NaN payloads.
cdef inline void store_f64be(uint8_t* p, double value) noexcept nogil:
    cdef uint64_t bits
    memcpy(&bits, &value, 8)
    store_u32be(p, <uint32_t>(bits >> 32))
    store_u32be(p + 4, <uint32_t>bits)


# ---------------------------------------------------------------------------------------------
# ReadCursor: a borrowed view of bytes being parsed. The cursor owns nothing; whoever filled it
# keeps the memory alive and unmoved while it is in use.

ctypedef struct ReadCursor:
    const uint8_t* data  # first byte of the input (borrowed)
    Py_ssize_t size      # number of bytes at data
    Py_ssize_t pos       # offset of the next unread byte, 0 <= pos <= size

# Point a cursor at size bytes; parsing starts at the first one.
cdef inline void rc_init(ReadCursor* cur, const uint8_t* data, Py_ssize_t size) noexcept nogil:
    cur.data = data
    cur.size = size
    cur.pos = 0

# Bytes left to read: parsers compare this with a field's width before every rc_read_*.
cdef inline Py_ssize_t rc_remaining(const ReadCursor* cur) noexcept nogil:
    return cur.size - cur.pos

# Address of the next unread byte, for copying a payload out or handing it to a sub-parser.
cdef inline const uint8_t* rc_current(const ReadCursor* cur) noexcept nogil:
    return cur.data + cur.pos

# The rc_read_* and rc_skip helpers do no bounds check, so that a parser checks once per header
# rather than once per field: the caller MUST have checked rc_remaining(cur) >= the width.

# Read one byte; the caller checked rc_remaining(cur) >= 1.
cdef inline uint8_t rc_read_u8(ReadCursor* cur) noexcept nogil:
    cdef uint8_t value = cur.data[cur.pos]
    cur.pos += 1
    return value

# Read a big-endian 16-bit field; the caller checked rc_remaining(cur) >= 2.
cdef inline uint16_t rc_read_u16be(ReadCursor* cur) noexcept nogil:
    cdef uint16_t value = load_u16be(cur.data + cur.pos)
    cur.pos += 2
    return value

# Read a big-endian 24-bit field; the caller checked rc_remaining(cur) >= 3.
cdef inline uint32_t rc_read_u24be(ReadCursor* cur) noexcept nogil:
    cdef uint32_t value = load_u24be(cur.data + cur.pos)
    cur.pos += 3
    return value

# Read a big-endian 32-bit field; the caller checked rc_remaining(cur) >= 4.
cdef inline uint32_t rc_read_u32be(ReadCursor* cur) noexcept nogil:
    cdef uint32_t value = load_u32be(cur.data + cur.pos)
    cur.pos += 4
    return value

# Read a little-endian 32-bit field; the caller checked rc_remaining(cur) >= 4.
cdef inline uint32_t rc_read_u32le(ReadCursor* cur) noexcept nogil:
    cdef uint32_t value = load_u32le(cur.data + cur.pos)
    cur.pos += 4
    return value

# Read a big-endian double; the caller checked rc_remaining(cur) >= 8.
cdef inline double rc_read_f64be(ReadCursor* cur) noexcept nogil:
    cdef double value = load_f64be(cur.data + cur.pos)
    cur.pos += 8
    return value

# Step over n bytes (padding, ignored fields); the caller checked 0 <= n <= rc_remaining(cur).
cdef inline void rc_skip(ReadCursor* cur, Py_ssize_t n) noexcept nogil:
    cur.pos += n


# ---------------------------------------------------------------------------------------------
# WriteBuf: an owned, growable output buffer. It allocates nothing until the first write, so an
# idle connection's writer costs only the struct; growth doubles, so appends are amortized O(1).

ctypedef struct WriteBuf:
    uint8_t* data        # PyMem allocation, NULL until the first reservation
    Py_ssize_t size      # bytes written so far
    Py_ssize_t capacity  # bytes allocated at data

# Start empty without allocating: idle connections must cost nothing until they send or receive.
cdef inline void wb_init(WriteBuf* buf) noexcept nogil:
    buf.data = NULL
    buf.size = 0
    buf.capacity = 0

# Reallocate to exactly new_capacity (>= buf.size); raises MemoryError and leaves buf intact.
cdef inline int wb_resize(WriteBuf* buf, Py_ssize_t new_capacity) except -1:
    cdef uint8_t* data = <uint8_t*>PyMem_Realloc(buf.data, <size_t>new_capacity)
    if data == NULL:
        raise MemoryError()
    buf.data = data
    buf.capacity = new_capacity
    return 0

# Smallest doubling of capacity (from WB_MIN_CAPACITY) that holds needed bytes, without overflow.
cdef inline Py_ssize_t wb_grown_capacity(Py_ssize_t capacity, Py_ssize_t needed) noexcept nogil:
    cdef Py_ssize_t grown = capacity if capacity >= WB_MIN_CAPACITY else WB_MIN_CAPACITY
    while grown < needed:
        if grown > (PY_SSIZE_T_MAX >> 1):  # a shift, not //, so no cdivision directive is needed
            return needed
        grown *= 2
    return grown

# Make room for extra more bytes after size; the common case is one compare and no call.
cdef inline int wb_reserve(WriteBuf* buf, Py_ssize_t extra) except -1:
    if extra <= buf.capacity - buf.size:
        return 0
    if extra > PY_SSIZE_T_MAX - buf.size:
        raise MemoryError()
    return wb_resize(buf, wb_grown_capacity(buf.capacity, buf.size + extra))

# Append one byte.
cdef inline int wb_put_u8(WriteBuf* buf, uint8_t value) except -1:
    wb_reserve(buf, 1)
    buf.data[buf.size] = value
    buf.size += 1
    return 0

# Append a big-endian 16-bit field.
cdef inline int wb_put_u16be(WriteBuf* buf, uint16_t value) except -1:
    wb_reserve(buf, 2)
    store_u16be(buf.data + buf.size, value)
    buf.size += 2
    return 0

# Append the low 24 bits big-endian; the caller has checked the value fits.
cdef inline int wb_put_u24be(WriteBuf* buf, uint32_t value) except -1:
    wb_reserve(buf, 3)
    store_u24be(buf.data + buf.size, value)
    buf.size += 3
    return 0

# Append a big-endian 32-bit field.
cdef inline int wb_put_u32be(WriteBuf* buf, uint32_t value) except -1:
    wb_reserve(buf, 4)
    store_u32be(buf.data + buf.size, value)
    buf.size += 4
    return 0

# Append a little-endian 32-bit field (RTMP 5.3.1.2.1 message stream id).
cdef inline int wb_put_u32le(WriteBuf* buf, uint32_t value) except -1:
    wb_reserve(buf, 4)
    store_u32le(buf.data + buf.size, value)
    buf.size += 4
    return 0

# Append a big-endian double (AMF0 2.2 number).
cdef inline int wb_put_f64be(WriteBuf* buf, double value) except -1:
    wb_reserve(buf, 8)
    store_f64be(buf.data + buf.size, value)
    buf.size += 8
    return 0

# Append n bytes; memmove, because src may lie inside buf itself (copying a previous header).
cdef inline int wb_put_bytes(WriteBuf* buf, const void* src, Py_ssize_t n) except -1:
    cdef Py_ssize_t offset
    if n <= 0:
        return 0
    if buf.data != NULL and <const uint8_t*>src >= buf.data \
            and <const uint8_t*>src < buf.data + buf.capacity:
        # src would dangle if wb_reserve reallocates, so remember it as an offset.
        offset = <const uint8_t*>src - buf.data
        wb_reserve(buf, n)
        src = buf.data + offset
    else:
        wb_reserve(buf, n)
    memmove(buf.data + buf.size, src, <size_t>n)
    buf.size += n
    return 0

# Forget the content but keep the allocation: a writer reused per message stops reallocating.
cdef inline void wb_clear(WriteBuf* buf) noexcept nogil:
    buf.size = 0

# Free the allocation and return to the wb_init state (safe to call twice).
cdef inline void wb_free(WriteBuf* buf) noexcept:
    PyMem_Free(buf.data)
    wb_init(buf)


# ---------------------------------------------------------------------------------------------
# InputBuf: bounded accumulation of stream input, for BufferedProtocol.get_buffer/buffer_updated
# or data_received. Bytes [start, store.size) are unread; the parser reads them through
# ib_cursor and drops what it used with ib_consume, which only advances start (O(1)). Memory
# moves only in ib_reserve, when the tail is too small for the next write:
#   * empty: rewind start and size to 0 (nothing to move);
#   * compact (move the unread bytes to the front) when that moves no more bytes than it frees
#     (start >= unread), so bytes moved never exceed bytes consumed: amortized O(1) per byte even
#     when fed one byte at a time;
#   * otherwise at least double the allocation (compacting first), never beyond max_size;
#   * at max_size the allocation cannot grow, so compaction is forced; it moves < max_size bytes,
#     and is costly only if the parser keeps nearly max_size bytes unread while consuming little.
# max_size bounds the unread bytes a peer can make us hold; callers check it with ib_fits before
# writing and report the overflow in their own terms.

ctypedef struct InputBuf:
    WriteBuf store        # the allocation; store.size is the end of the buffered bytes
    Py_ssize_t start      # offset of the first unread byte in store.data
    Py_ssize_t max_size   # most unread bytes this buffer may hold (a peer-controlled bound)

# Start empty with no allocation; max_size >= 1 is the caller's to check.
cdef inline void ib_init(InputBuf* ib, Py_ssize_t max_size) noexcept nogil:
    wb_init(&ib.store)
    ib.start = 0
    ib.max_size = max_size

# Number of unread bytes.
cdef inline Py_ssize_t ib_len(const InputBuf* ib) noexcept nogil:
    return ib.store.size - ib.start

# How many more bytes may arrive before max_size is reached.
cdef inline Py_ssize_t ib_headroom(const InputBuf* ib) noexcept nogil:
    return ib.max_size - (ib.store.size - ib.start)

# Whether n more bytes fit under max_size (n >= 0).
cdef inline bint ib_fits(const InputBuf* ib, Py_ssize_t n) noexcept nogil:
    return n <= ib_headroom(ib)

# A cursor over the unread bytes; valid until the next ib_reserve/ib_append/ib_free.
cdef inline ReadCursor ib_cursor(const InputBuf* ib) noexcept nogil:
    cdef ReadCursor cur
    rc_init(&cur, ib.store.data + ib.start, ib.store.size - ib.start)
    return cur

# Free space after the unread bytes, where the next bytes go.
cdef inline uint8_t* ib_tail(InputBuf* ib) noexcept nogil:
    return ib.store.data + ib.store.size

# Bytes available at ib_tail without moving memory.
cdef inline Py_ssize_t ib_tail_size(const InputBuf* ib) noexcept nogil:
    return ib.store.capacity - ib.store.size

# Move the unread bytes to the front of the allocation (see the policy above).
cdef inline void ib_compact(InputBuf* ib) noexcept nogil:
    cdef Py_ssize_t unread = ib.store.size - ib.start
    if ib.start == 0:
        return
    if unread > 0:
        memmove(ib.store.data, ib.store.data + ib.start, <size_t>unread)
    ib.start = 0
    ib.store.size = unread

# Ensure ib_tail_size >= want, where 0 < want <= ib_headroom (the caller's check). pinned means a
# view of the allocation is exported: it may then be compacted but not reallocated (BufferError).
cdef inline int ib_reserve(InputBuf* ib, Py_ssize_t want, bint pinned) except -1:
    cdef Py_ssize_t unread = ib.store.size - ib.start
    cdef Py_ssize_t capacity
    if unread == 0:
        ib.start = 0
        ib.store.size = 0
    if ib.store.capacity - ib.store.size >= want:
        return 0
    if ib.store.capacity - unread >= want and (
            ib.start >= unread or ib.store.capacity >= ib.max_size or pinned):
        ib_compact(ib)
        return 0
    if pinned:
        raise BufferError(
            "cannot grow the input buffer while a memoryview from get_buffer() is alive; "
            "release the view first")
    ib_compact(ib)
    # At least double: growing to the smallest size that fits would leave the next reservation
    # to another costly compaction. (capacity < max_size here, so capacity + 1 cannot overflow.)
    capacity = wb_grown_capacity(ib.store.capacity, max(unread + want, ib.store.capacity + 1))
    if capacity > ib.max_size:
        capacity = ib.max_size
    return wb_resize(&ib.store, capacity)

# Mark n bytes written at ib_tail as buffered; 0 <= n <= ib_tail_size is the caller's check.
cdef inline void ib_commit(InputBuf* ib, Py_ssize_t n) noexcept nogil:
    ib.store.size += n

# Append n bytes (caller checked ib_fits); memmove, as src may be a view of our own tail.
cdef inline int ib_append(InputBuf* ib, const void* src, Py_ssize_t n, bint pinned) except -1:
    if n <= 0:
        return 0
    ib_reserve(ib, n, pinned)
    memmove(ib_tail(ib), src, <size_t>n)
    ib.store.size += n
    return 0

# Drop n unread bytes (0 <= n <= ib_len); O(1): memory moves only when space is next needed.
cdef inline void ib_consume(InputBuf* ib, Py_ssize_t n) noexcept nogil:
    ib.start += n

# Free the allocation and forget any unread bytes; an idle connection then costs nothing.
cdef inline void ib_free(InputBuf* ib) noexcept:
    wb_free(&ib.store)
    ib.start = 0
