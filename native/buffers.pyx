"""Byte readers, writers and the bounded input buffer shared by Relay's protocol code.

Theory of operation: `ByteReader` walks a bytes-like object it borrows (no copy) with a
ReadCursor; `ByteWriter` appends big-endian fields to a WriteBuf that allocates on first use and
grows by doubling; `InputBuffer` accumulates stream input up to `max_size` unread bytes for an
`asyncio.BufferedProtocol` (`get_buffer` / `buffer_updated`) or a plain `feed`, and hands the
unread bytes to a parser, which drops what it used with `consume`. All byte work is done by the
inline helpers in bytesio.pxd, which native parsers embed directly.

Memory handed out as a memoryview (`ByteWriter.getbuffer`, `InputBuffer.get_buffer`) is pinned
while the view is alive: the owner refuses to reallocate or free it and raises BufferError
instead, so a stale view can never point at freed memory.
"""

from cpython.buffer cimport (
    PyBUF_FORMAT,
    PyBUF_ND,
    PyBUF_SIMPLE,
    PyBUF_STRIDES,
    PyBUF_WRITABLE,
    PyBuffer_Release,
    PyObject_GetBuffer,
)
from cpython.bytes cimport PyBytes_FromStringAndSize
from cpython.long cimport PyLong_AsLongLongAndOverflow
from libc.stdint cimport uint8_t, uint16_t, uint32_t

from bytesio cimport (
    ReadCursor,
    ib_append,
    ib_consume,
    ib_commit,
    ib_cursor,
    ib_fits,
    ib_free,
    ib_headroom,
    ib_init,
    ib_len,
    ib_reserve,
    ib_tail,
    ib_tail_size,
    rc_current,
    rc_init,
    rc_read_f64be,
    rc_read_u8,
    rc_read_u16be,
    rc_read_u24be,
    rc_read_u32be,
    rc_read_u32le,
    rc_remaining,
    rc_skip,
    wb_clear,
    wb_free,
    wb_init,
    wb_put_bytes,
    wb_put_f64be,
    wb_put_u8,
    wb_put_u16be,
    wb_put_u24be,
    wb_put_u32be,
    wb_put_u32le,
    wb_resize,
)

__all__ = ["BufferOverflow", "BufferUnderrun", "ByteReader", "ByteWriter", "InputBuffer"]


cdef enum:
    # get_buffer(-1) offers at least this much: one recv of a typical RTMP/SRT burst, and the
    # whole cost of a connection that has gone quiet (the goal is <= 32 KiB per idle connection).
    READ_SIZE = 16384

# Where an empty view points, so that no exported buffer has a NULL address.
cdef uint8_t _EMPTY[1]


class BufferUnderrun(ValueError):
    """Not enough bytes: a read or consume needed more bytes than remain."""

    def __init__(self, needed, remaining):
        super().__init__(needed, remaining)
        self.needed = needed
        self.remaining = remaining

    def __str__(self):
        return f"needed {self.needed} byte(s) but only {self.remaining} remain"


class BufferOverflow(ValueError):
    """A bound would be exceeded: `value` bytes against the bound `bound` = `limit`."""

    def __init__(self, bound, limit, value):
        super().__init__(bound, limit, value)
        self.bound = bound
        self.limit = limit
        self.value = value

    def __str__(self):
        return (
            f"{self.value} bytes would exceed {self.bound}={self.limit}; "
            f"consume buffered bytes first or raise {self.bound}"
        )


cdef long long unsigned_field(object value, long long maximum, str method) except -1:
    # Range-check an int for a fixed-width field; TypeError for non-integers (no float truncation).
    cdef int overflow = 0
    cdef long long number = PyLong_AsLongLongAndOverflow(value, &overflow)
    if overflow != 0 or number < 0 or number > maximum:
        raise OverflowError(f"{method}() got {value!r}, outside the field's range 0..{maximum}")
    return number


cdef int check_count(Py_ssize_t n, str method) except -1:
    # Byte counts come from length fields; a negative one is a caller bug, not an underrun.
    if n < 0:
        raise ValueError(f"{method}() needs a byte count >= 0, got {n}")
    return 0


cdef object export_span(object owner, Py_ssize_t* exports, uint8_t* data, Py_ssize_t size,
                        bint readonly):
    # Wrap owner's memory in a memoryview that pins it (see _ExportedSpan).
    cdef _ExportedSpan span = _ExportedSpan.__new__(_ExportedSpan)
    span.owner = owner
    span.exports = exports
    span.data = data if data != NULL else _EMPTY
    span.size = size
    span.readonly = readonly
    return memoryview(span)


cdef class _ExportedSpan:
    """Internal: the object behind a memoryview of a ByteWriter's or InputBuffer's memory."""

    def __getbuffer__(self, Py_buffer* buffer, int flags):
        if self.exported:
            # A second export could outlive a reallocation the first one allowed.
            raise BufferError("this span was already exported; ask its owner for a new view")
        if self.readonly and (flags & PyBUF_WRITABLE) == PyBUF_WRITABLE:
            raise BufferError("this view is read-only")
        buffer.buf = self.data
        buffer.obj = self
        buffer.len = self.size
        buffer.readonly = self.readonly
        buffer.itemsize = 1
        buffer.format = NULL
        if (flags & PyBUF_FORMAT) == PyBUF_FORMAT:
            buffer.format = b"B"
        buffer.ndim = 1
        # Pointers into the Py_buffer itself, as CPython's PyBuffer_FillInfo does.
        buffer.shape = &buffer.len if (flags & PyBUF_ND) == PyBUF_ND else NULL
        buffer.strides = &buffer.itemsize if (flags & PyBUF_STRIDES) == PyBUF_STRIDES else NULL
        buffer.suboffsets = NULL
        buffer.internal = NULL
        self.exported = True
        self.exports[0] += 1

    def __releasebuffer__(self, Py_buffer* buffer):
        self.exports[0] -= 1


cdef class ByteReader:
    """Reads fixed-width fields from a bytes-like object, without copying it.

    The reader holds the object's buffer until it is garbage-collected, so a bytearray it reads
    cannot be resized meanwhile. Reads past the end raise BufferUnderrun and move nothing.
    """

    def __cinit__(self, data):
        PyObject_GetBuffer(data, &self.view, PyBUF_SIMPLE)
        self.has_view = True
        rc_init(&self.cursor, <const uint8_t*>self.view.buf, self.view.len)

    def __dealloc__(self):
        if self.has_view:
            PyBuffer_Release(&self.view)

    cdef int require(self, Py_ssize_t n) except -1:
        # The one bounds check per read; the rc_read_* helpers rely on it.
        if rc_remaining(&self.cursor) < n:
            raise BufferUnderrun(n, rc_remaining(&self.cursor))
        return 0

    @property
    def position(self):
        """Offset of the next unread byte."""
        return self.cursor.pos

    @property
    def remaining(self):
        """Number of bytes not yet read."""
        return rc_remaining(&self.cursor)

    def read_u8(self):
        """Read one unsigned byte."""
        self.require(1)
        return rc_read_u8(&self.cursor)

    def read_u16be(self):
        """Read a big-endian unsigned 16-bit integer."""
        self.require(2)
        return rc_read_u16be(&self.cursor)

    def read_u24be(self):
        """Read a big-endian unsigned 24-bit integer."""
        self.require(3)
        return rc_read_u24be(&self.cursor)

    def read_u32be(self):
        """Read a big-endian unsigned 32-bit integer."""
        self.require(4)
        return rc_read_u32be(&self.cursor)

    def read_u32le(self):
        """Read a little-endian unsigned 32-bit integer."""
        self.require(4)
        return rc_read_u32le(&self.cursor)

    def read_f64be(self):
        """Read a big-endian IEEE 754 double."""
        self.require(8)
        return rc_read_f64be(&self.cursor)

    def read_bytes(self, Py_ssize_t n):
        """Read the next n bytes as a new bytes object."""
        check_count(n, "read_bytes")
        self.require(n)
        data = PyBytes_FromStringAndSize(<const char*>rc_current(&self.cursor), n)
        rc_skip(&self.cursor, n)
        return data

    def skip(self, Py_ssize_t n):
        """Step over the next n bytes."""
        check_count(n, "skip")
        self.require(n)
        rc_skip(&self.cursor, n)


cdef class ByteWriter:
    """Builds a byte string from fixed-width fields; allocates nothing until the first write.

    `getbuffer()` returns a read-only view of the content without copying it; while that view
    is alive, writes and `clear()` raise BufferError (release the view, e.g. with `with`).
    """

    def __cinit__(self, Py_ssize_t initial_capacity=0):
        wb_init(&self.buf)
        if initial_capacity < 0:
            raise ValueError(f"initial_capacity must be >= 0, got {initial_capacity}")
        if initial_capacity > 0:
            wb_resize(&self.buf, initial_capacity)

    def __dealloc__(self):
        wb_free(&self.buf)

    cdef int check_writable(self) except -1:
        # Writing could reallocate the memory an exported view points at.
        if self.exports > 0:
            raise BufferError(
                "cannot change a ByteWriter while a getbuffer() view is alive; release the view")
        return 0

    def __len__(self):
        return self.buf.size

    @property
    def allocated(self):
        """Bytes of memory currently allocated (0 before the first write)."""
        return self.buf.capacity

    def write_u8(self, value):
        """Append one unsigned byte (0..255)."""
        self.check_writable()
        wb_put_u8(&self.buf, <uint8_t>unsigned_field(value, 0xFF, "write_u8"))

    def write_u16be(self, value):
        """Append a big-endian unsigned 16-bit integer."""
        self.check_writable()
        wb_put_u16be(&self.buf, <uint16_t>unsigned_field(value, 0xFFFF, "write_u16be"))

    def write_u24be(self, value):
        """Append a big-endian unsigned 24-bit integer."""
        self.check_writable()
        wb_put_u24be(&self.buf, <uint32_t>unsigned_field(value, 0xFFFFFF, "write_u24be"))

    def write_u32be(self, value):
        """Append a big-endian unsigned 32-bit integer."""
        self.check_writable()
        wb_put_u32be(&self.buf, <uint32_t>unsigned_field(value, 0xFFFFFFFF, "write_u32be"))

    def write_u32le(self, value):
        """Append a little-endian unsigned 32-bit integer."""
        self.check_writable()
        wb_put_u32le(&self.buf, <uint32_t>unsigned_field(value, 0xFFFFFFFF, "write_u32le"))

    def write_f64be(self, double value):
        """Append a big-endian IEEE 754 double."""
        self.check_writable()
        wb_put_f64be(&self.buf, value)

    def write(self, data):
        """Append the bytes of any bytes-like object."""
        cdef Py_buffer view
        self.check_writable()
        PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
        try:
            wb_put_bytes(&self.buf, view.buf, view.len)
        finally:
            PyBuffer_Release(&view)

    def getvalue(self):
        """The content as a new bytes object."""
        return PyBytes_FromStringAndSize(<const char*>self.buf.data, self.buf.size)

    def getbuffer(self):
        """A read-only memoryview of the content, without copying; pins the writer while alive."""
        return export_span(self, &self.exports, self.buf.data, self.buf.size, True)

    def clear(self):
        """Forget the content, keeping the allocation for reuse."""
        self.check_writable()
        wb_clear(&self.buf)


cdef class InputBuffer:
    """Accumulates stream input, holding at most `max_size` unread bytes.

    Memory is allocated on first input and freed by `release()`. Fill it either with
    `get_buffer()` + `buffer_updated()` (asyncio.BufferedProtocol, no copy) or with `feed()`;
    read with `peek()` and drop what was used with `consume()`. Exceeding `max_size` raises
    BufferOverflow and changes nothing.
    """

    def __cinit__(self, Py_ssize_t max_size):
        if max_size < 1:
            raise ValueError(f"max_size must be >= 1, got {max_size}")
        ib_init(&self.buf, max_size)

    def __dealloc__(self):
        ib_free(&self.buf)

    cdef ReadCursor unread_cursor(self) noexcept:
        return ib_cursor(&self.buf)

    cdef int consume_cursor(self, const ReadCursor* cursor) except -1:
        # A cursor from before a consume/feed/get_buffer would drop the wrong bytes.
        if cursor.data != self.buf.store.data + self.buf.start or cursor.pos > ib_len(&self.buf):
            raise ValueError("stale cursor: take a new unread_cursor() after changing the buffer")
        ib_consume(&self.buf, cursor.pos)
        return 0

    def __len__(self):
        return ib_len(&self.buf)

    @property
    def max_size(self):
        """The most unread bytes this buffer will hold."""
        return self.buf.max_size

    @property
    def allocated(self):
        """Bytes of memory currently allocated (0 until input arrives, and after release())."""
        return self.buf.store.capacity

    def get_buffer(self, Py_ssize_t sizehint=-1):
        """A writable memoryview of free space for the next read (BufferedProtocol.get_buffer).

        Offers at least `sizehint` bytes (16 KiB if sizehint <= 0) when max_size allows, never
        more than max_size minus the unread bytes. Raises BufferOverflow when full.
        """
        cdef Py_ssize_t headroom = ib_headroom(&self.buf)
        cdef Py_ssize_t want = sizehint if sizehint > 0 else READ_SIZE
        if headroom == 0:
            raise BufferOverflow("max_size", self.buf.max_size, ib_len(&self.buf) + 1)
        if want > headroom:
            want = headroom
        self.offered = 0
        ib_reserve(&self.buf, want, self.exports > 0)
        # The clip is implied while the allocation stays <= max_size; it keeps the bound local.
        self.offered = min(ib_tail_size(&self.buf), headroom)
        return export_span(self, &self.exports, ib_tail(&self.buf), self.offered, False)

    def buffer_updated(self, Py_ssize_t nbytes):
        """Commit nbytes written into the view from the last get_buffer()."""
        if nbytes < 0 or nbytes > self.offered:
            raise ValueError(
                f"buffer_updated({nbytes}) is outside the {self.offered} bytes offered by the "
                "last get_buffer(); call get_buffer() first and write at most that much")
        ib_commit(&self.buf, nbytes)
        self.offered = 0

    def feed(self, data):
        """Append the bytes of a bytes-like object (a copy), as data_received would."""
        cdef Py_buffer view
        PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
        try:
            if not ib_fits(&self.buf, view.len):
                raise BufferOverflow(
                    "max_size", self.buf.max_size, ib_len(&self.buf) + view.len)
            self.offered = 0
            ib_append(&self.buf, view.buf, view.len, self.exports > 0)
        finally:
            PyBuffer_Release(&view)

    def peek(self, Py_ssize_t n):
        """The first n unread bytes, as a new bytes object; they stay unread."""
        cdef ReadCursor cursor = self.unread_cursor()
        check_count(n, "peek")
        if rc_remaining(&cursor) < n:
            raise BufferUnderrun(n, rc_remaining(&cursor))
        return PyBytes_FromStringAndSize(<const char*>rc_current(&cursor), n)

    def consume(self, Py_ssize_t n):
        """Drop the first n unread bytes."""
        cdef ReadCursor cursor = self.unread_cursor()
        check_count(n, "consume")
        if rc_remaining(&cursor) < n:
            raise BufferUnderrun(n, rc_remaining(&cursor))
        rc_skip(&cursor, n)
        self.consume_cursor(&cursor)

    def release(self):
        """Free the memory if nothing is buffered and no view is alive; return whether it did."""
        if ib_len(&self.buf) > 0 or self.exports > 0:
            return False
        ib_free(&self.buf)
        self.offered = 0
        return True
