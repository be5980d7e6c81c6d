# Declarations for buffers.pyx: the Python-facing byte reader, writer and input buffer.
#
# Why this path: setup.py compiles native/buffers.pyx as relay._native.buffers, and Cython looks
# for a module's own .pxd under its full name (relay/_native/buffers.pxd, searched in
# include_path ["native"]). A plain native/buffers.pxd is silently ignored when compiling
# buffers.pyx, and `from buffers cimport ...` elsewhere would import a top-level `buffers` at run
# time; the dotted name native/relay._native.buffers.pxd also works but Cython deprecates it.
# Other native modules cimport this file as `from relay._native.buffers cimport InputBuffer`.
#
# Native parsers should prefer embedding ReadCursor / WriteBuf / InputBuf from bytesio.pxd,
# which costs no import; these classes are for Python-level parsers (AMF0, decoder
# configurations), for asyncio protocols and for tests. They are final, so that calls to their
# cdef methods are direct C calls rather than through a vtable.

cimport cython
from cpython.buffer cimport Py_buffer
from libc.stdint cimport uint8_t

from bytesio cimport InputBuf, ReadCursor, WriteBuf


@cython.final
cdef class _ExportedSpan:
    # One-shot buffer exporter behind the memoryviews we hand out, so that the owner knows when
    # its memory is referenced from Python and refuses to move or free it until released.
    cdef object owner             # keeps the owner (and so the memory) alive while exported
    cdef Py_ssize_t* exports      # the owner's count of live views, in the owner's struct
    cdef uint8_t* data            # first byte of the span
    cdef Py_ssize_t size          # bytes in the span
    cdef bint readonly            # whether consumers may write through the view
    cdef bint exported            # set by the first __getbuffer__: a span is exported once


@cython.final
cdef class ByteReader:
    cdef Py_buffer view           # the source's buffer, held (no copy) until the reader dies
    cdef bint has_view            # whether view must be released in __dealloc__
    cdef ReadCursor cursor        # position within view.buf

    # Raise BufferUnderrun unless n bytes remain; the rc_read_* call after it is then unchecked.
    cdef int require(self, Py_ssize_t n) except -1


@cython.final
cdef class ByteWriter:
    cdef WriteBuf buf             # the bytes written so far; unallocated until the first write
    cdef Py_ssize_t exports       # live getbuffer() views; writes are refused while > 0

    # Raise BufferError while a getbuffer() view is alive, since a write may reallocate.
    cdef int check_writable(self) except -1


@cython.final
cdef class InputBuffer:
    cdef InputBuf buf             # unread stream input, bounded by buf.max_size
    cdef Py_ssize_t exports       # live get_buffer() views; the allocation may not move while > 0
    cdef Py_ssize_t offered       # bytes offered by the last get_buffer(), not yet committed

    # A cursor over the unread bytes, for Cython parsers: read with rc_read_*, then call
    # consume_cursor. Valid until the next get_buffer/feed/release on this buffer.
    cdef ReadCursor unread_cursor(self) noexcept
    # Drop the bytes the cursor has read (cursor.pos), as consume(cursor.pos) would.
    cdef int consume_cursor(self, const ReadCursor* cursor) except -1
