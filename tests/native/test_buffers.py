"""ByteReader, ByteWriter and InputBuffer: encodings both ways, bounds, allocation, round trips."""

from __future__ import annotations

import math
import pickle
import re
import struct
from itertools import pairwise

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relay._native.buffers import (
    BufferOverflow,
    BufferUnderrun,
    ByteReader,
    ByteWriter,
    InputBuffer,
)

Value = int | float

# Field name -> width in bytes; the name is the suffix of ByteWriter.write_* / ByteReader.read_*.
WIDTHS = {"u8": 1, "u16be": 2, "u24be": 3, "u32be": 4, "u32le": 4, "f64be": 8}
MAXIMUMS = {
    "u8": 0xFF,
    "u16be": 0xFFFF,
    "u24be": 0xFFFFFF,
    "u32be": 0xFFFFFFFF,
    "u32le": 0xFFFFFFFF,
}

# (field, value, encoding): known byte strings, written out by hand, not by the code under test.
VECTORS: list[tuple[str, Value, str]] = [
    ("u8", 0x00, "00"),
    ("u8", 0x7F, "7f"),
    ("u8", 0xFF, "ff"),
    ("u16be", 0x0000, "0000"),
    ("u16be", 0x0102, "0102"),
    ("u16be", 0xFFFF, "ffff"),
    ("u24be", 0x000080, "000080"),
    ("u24be", 0x010203, "010203"),
    ("u24be", 0xFFFFFF, "ffffff"),
    ("u32be", 0x00000001, "00000001"),
    ("u32be", 0x01020304, "01020304"),
    ("u32be", 0xFFFFFFFF, "ffffffff"),
    ("u32le", 0x00000001, "01000000"),
    ("u32le", 0x01020304, "04030201"),
    ("u32le", 0xFFFFFFFF, "ffffffff"),
    ("f64be", 0.0, "0000000000000000"),
    ("f64be", -0.0, "8000000000000000"),
    ("f64be", 1.0, "3ff0000000000000"),
    ("f64be", -2.5, "c004000000000000"),
    ("f64be", 1e300, "7e37e43c8800759c"),
    ("f64be", math.inf, "7ff0000000000000"),
]
VECTOR_IDS = [f"{field}={value!r}" for field, value, _ in VECTORS]

# Bytes that follow a field and must be left unread.
TRAILER = b"\xee\xff\x00"

# The promised cost of a connection that has received something and gone quiet.
IDLE_BUDGET = 32 * 1024


def write_field(writer: ByteWriter, field: str, value: Value) -> None:
    getattr(writer, f"write_{field}")(value)


def read_field(reader: ByteReader, field: str) -> Value:
    value: Value = getattr(reader, f"read_{field}")()
    return value


def same_value(a: Value, b: Value) -> bool:
    """Equality that tells -0.0 from 0.0 and compares NaNs by their bits."""
    if isinstance(a, float) or isinstance(b, float):
        return struct.pack(">d", a) == struct.pack(">d", b)
    return a == b


def fill_via_get_buffer(buffer: InputBuffer, data: bytes) -> None:
    """Deliver data as asyncio.BufferedProtocol does: get_buffer, write into it, buffer_updated."""
    with buffer.get_buffer(len(data)) as view:
        view[: len(data)] = data
        buffer.buffer_updated(len(data))


# --- encode and decode, every width, both directions -------------------------------------------


@pytest.mark.parametrize(("field", "value", "encoding"), VECTORS, ids=VECTOR_IDS)
def test_writer_encodes_known_bytes(field: str, value: Value, encoding: str) -> None:
    writer = ByteWriter()
    write_field(writer, field, value)
    assert writer.getvalue() == bytes.fromhex(encoding)
    assert len(writer) == WIDTHS[field]


@pytest.mark.parametrize(("field", "value", "encoding"), VECTORS, ids=VECTOR_IDS)
def test_reader_decodes_whole_input(field: str, value: Value, encoding: str) -> None:
    reader = ByteReader(bytes.fromhex(encoding))
    assert same_value(read_field(reader, field), value)
    assert reader.position == WIDTHS[field]
    assert reader.remaining == 0


@pytest.mark.parametrize("fill", ["feed", "get_buffer"])
@pytest.mark.parametrize(("field", "value", "encoding"), VECTORS, ids=VECTOR_IDS)
def test_reader_decodes_input_arriving_one_byte_at_a_time(
    field: str, value: Value, encoding: str, fill: str
) -> None:
    data = bytes.fromhex(encoding)
    buffer = InputBuffer(64)
    for index, byte in enumerate(data):
        if fill == "feed":
            buffer.feed(bytes([byte]))
        else:
            fill_via_get_buffer(buffer, bytes([byte]))
        reader = ByteReader(buffer.peek(len(buffer)))
        if index < len(data) - 1:
            with pytest.raises(BufferUnderrun) as caught:
                read_field(reader, field)
            assert (caught.value.needed, caught.value.remaining) == (len(data), index + 1)
            assert reader.position == 0
    reader = ByteReader(buffer.peek(len(buffer)))
    assert same_value(read_field(reader, field), value)
    buffer.consume(reader.position)
    assert len(buffer) == 0


@pytest.mark.parametrize(("field", "value", "encoding"), VECTORS, ids=VECTOR_IDS)
def test_reader_leaves_trailing_bytes_unread(field: str, value: Value, encoding: str) -> None:
    data = bytes.fromhex(encoding) + TRAILER
    reader = ByteReader(data)
    assert same_value(read_field(reader, field), value)
    assert reader.remaining == len(TRAILER)
    assert reader.read_bytes(reader.remaining) == TRAILER

    buffer = InputBuffer(64)
    buffer.feed(data)
    reader = ByteReader(buffer.peek(WIDTHS[field]))
    assert same_value(read_field(reader, field), value)
    buffer.consume(reader.position)
    assert len(buffer) == len(TRAILER)
    assert buffer.peek(len(TRAILER)) == TRAILER


@pytest.mark.parametrize("field", ["u8", "u16be", "u24be", "u32be"])
@given(data=st.data())
def test_unsigned_fields_match_int_to_bytes(field: str, data: st.DataObject) -> None:
    value = data.draw(st.integers(0, MAXIMUMS[field]))
    writer = ByteWriter()
    write_field(writer, field, value)
    assert writer.getvalue() == value.to_bytes(WIDTHS[field], "big")
    assert read_field(ByteReader(writer.getvalue()), field) == value


@given(value=st.integers(0, 0xFFFFFFFF))
def test_u32le_matches_int_to_bytes(value: int) -> None:
    writer = ByteWriter()
    writer.write_u32le(value)
    assert writer.getvalue() == value.to_bytes(4, "little")
    assert ByteReader(writer.getvalue()).read_u32le() == value


@given(value=st.floats(allow_nan=True, allow_infinity=True))
def test_f64be_matches_struct_bit_for_bit(value: float) -> None:
    writer = ByteWriter()
    writer.write_f64be(value)
    assert writer.getvalue() == struct.pack(">d", value)
    assert same_value(ByteReader(writer.getvalue()).read_f64be(), value)


def test_reader_reads_and_skips_byte_strings() -> None:
    reader = ByteReader(b"\x00\x03abc" + TRAILER)
    length = reader.read_u16be()
    assert reader.read_bytes(length) == b"abc"
    assert reader.read_bytes(0) == b""
    reader.skip(1)
    assert reader.position == 6
    assert reader.read_bytes(2) == TRAILER[1:]


# --- underruns ---------------------------------------------------------------------------------


@pytest.mark.parametrize("field", list(WIDTHS))
def test_short_read_names_needed_and_remaining_and_moves_nothing(field: str) -> None:
    width = WIDTHS[field]
    reader = ByteReader(bytes(width - 1))
    message = f"needed {width} byte(s) but only {width - 1} remain"
    with pytest.raises(BufferUnderrun, match=re.escape(message)) as caught:
        read_field(reader, field)
    assert str(caught.value) == message
    assert (caught.value.needed, caught.value.remaining) == (width, width - 1)
    assert reader.position == 0
    assert reader.remaining == width - 1


def test_short_read_bytes_and_skip_move_nothing() -> None:
    reader = ByteReader(b"abc")
    reader.skip(1)
    with pytest.raises(BufferUnderrun, match=r"^needed 5 byte\(s\) but only 2 remain$"):
        reader.read_bytes(5)
    with pytest.raises(BufferUnderrun, match=r"^needed 3 byte\(s\) but only 2 remain$"):
        reader.skip(3)
    assert reader.position == 1
    assert reader.read_bytes(2) == b"bc"


def test_underrun_is_a_value_error_and_survives_pickling() -> None:
    error = pickle.loads(pickle.dumps(BufferUnderrun(4, 2)))
    assert isinstance(error, BufferUnderrun)
    assert isinstance(error, ValueError)
    assert (error.needed, error.remaining) == (4, 2)
    assert str(error) == "needed 4 byte(s) but only 2 remain"


@pytest.mark.parametrize("method", ["read_bytes", "skip", "peek", "consume"])
def test_negative_byte_count_is_a_caller_error_not_an_underrun(method: str) -> None:
    target: ByteReader | InputBuffer
    target = ByteReader(b"abc") if method in {"read_bytes", "skip"} else InputBuffer(8)
    message = rf"^{method}\(\) needs a byte count >= 0, got -1$"
    with pytest.raises(ValueError, match=message) as caught:
        getattr(target, method)(-1)
    assert not isinstance(caught.value, BufferUnderrun)


def test_input_buffer_short_peek_and_consume_keep_the_content() -> None:
    buffer = InputBuffer(8)
    buffer.feed(b"abc")
    with pytest.raises(BufferUnderrun, match=r"^needed 4 byte\(s\) but only 3 remain$"):
        buffer.peek(4)
    with pytest.raises(BufferUnderrun, match=r"^needed 4 byte\(s\) but only 3 remain$"):
        buffer.consume(4)
    assert buffer.peek(3) == b"abc"


# --- writer value ranges -----------------------------------------------------------------------

OUT_OF_RANGE = [
    ("u8", 0x100),
    ("u8", -1),
    ("u16be", 0x10000),
    ("u16be", -1),
    ("u24be", 0x1000000),
    ("u24be", -1),
    ("u32be", 0x100000000),
    ("u32be", -1),
    ("u32le", 0x100000000),
    ("u32le", -(2**70)),
    ("u8", 2**70),
]


@pytest.mark.parametrize(("field", "value"), OUT_OF_RANGE)
def test_writer_rejects_out_of_range_values_with_the_value(field: str, value: int) -> None:
    writer = ByteWriter()
    writer.write(b"kept")
    message = f"write_{field}() got {value}, outside the field's range 0..{MAXIMUMS[field]}"
    with pytest.raises(OverflowError, match=f"^{re.escape(message)}$"):
        write_field(writer, field, value)
    assert writer.getvalue() == b"kept"


@pytest.mark.parametrize("value", [1.0, "1", None, b"\x01"])
@pytest.mark.parametrize("field", list(MAXIMUMS))
def test_writer_rejects_non_integers_instead_of_truncating(field: str, value: object) -> None:
    writer = ByteWriter()
    with pytest.raises(TypeError):
        getattr(writer, f"write_{field}")(value)
    assert len(writer) == 0


def test_writer_accepts_any_bytes_like_and_builds_in_order() -> None:
    writer = ByteWriter()
    writer.write(b"ab")
    writer.write(bytearray(b"cd"))
    writer.write(memoryview(b"xefx")[1:3])
    writer.write(b"")
    writer.write_u8(0x21)
    assert writer.getvalue() == b"abcdef!"
    assert len(writer) == 7


def test_writer_grows_past_its_initial_capacity_keeping_the_content() -> None:
    writer = ByteWriter(4)
    payload = bytes(range(256)) * 40
    for start in range(0, len(payload), 7):
        writer.write(payload[start : start + 7])
    assert writer.getvalue() == payload
    assert writer.allocated >= len(payload)


def test_writer_clear_keeps_memory_for_reuse() -> None:
    writer = ByteWriter()
    writer.write(bytes(1000))
    allocated = writer.allocated
    writer.clear()
    assert len(writer) == 0
    assert writer.getvalue() == b""
    assert writer.allocated == allocated
    writer.write_u16be(0x0102)
    assert writer.getvalue() == b"\x01\x02"


# --- InputBuffer bounds --------------------------------------------------------------------------


def test_exactly_max_size_fits_and_one_more_byte_raises_and_loses_nothing() -> None:
    content = bytes(range(16))
    buffer = InputBuffer(16)
    buffer.feed(content[:10])
    with pytest.raises(BufferOverflow) as caught:
        buffer.feed(content[10:] + b"!")
    error = caught.value
    assert (error.bound, error.limit, error.value) == ("max_size", 16, 17)
    assert str(error).startswith("17 bytes would exceed max_size=16;")
    assert buffer.peek(len(buffer)) == content[:10]

    buffer.feed(content[10:])
    assert len(buffer) == 16
    with pytest.raises(BufferOverflow, match=r"^17 bytes would exceed max_size=16;"):
        buffer.feed(b"!")
    with pytest.raises(BufferOverflow, match=r"^17 bytes would exceed max_size=16;"):
        buffer.get_buffer(1)
    assert buffer.peek(16) == content


def test_get_buffer_never_offers_more_than_max_size() -> None:
    buffer = InputBuffer(16)
    with buffer.get_buffer(1000) as view:
        assert len(view) == 16
        view[:10] = bytes(10)
        buffer.buffer_updated(10)
    with buffer.get_buffer(-1) as view:
        assert len(view) == 6
    buffer.consume(4)
    with buffer.get_buffer(1) as view:
        assert 1 <= len(view) <= 10
    assert buffer.allocated <= 16


def test_oversized_first_feed_allocates_nothing() -> None:
    buffer = InputBuffer(4)
    with pytest.raises(BufferOverflow, match=r"^5 bytes would exceed max_size=4;"):
        buffer.feed(b"12345")
    assert (len(buffer), buffer.allocated) == (0, 0)


@pytest.mark.parametrize("max_size", [0, -1])
def test_max_size_must_be_positive(max_size: int) -> None:
    with pytest.raises(ValueError, match=rf"^max_size must be >= 1, got {max_size}$"):
        InputBuffer(max_size)


def test_buffer_updated_cannot_commit_more_than_was_offered() -> None:
    buffer = InputBuffer(64)
    with pytest.raises(ValueError, match=r"^buffer_updated\(1\) is outside the 0 bytes offered"):
        buffer.buffer_updated(1)
    with buffer.get_buffer(8) as view:
        offered = len(view)
        with pytest.raises(ValueError, match=rf"outside the {offered} bytes offered"):
            buffer.buffer_updated(offered + 1)
        with pytest.raises(ValueError, match=r"^buffer_updated\(-1\)"):
            buffer.buffer_updated(-1)
        view[:2] = b"ok"
        buffer.buffer_updated(2)
        # A second commit for the same get_buffer() would duplicate bytes.
        with pytest.raises(ValueError, match=r"outside the 0 bytes offered"):
            buffer.buffer_updated(2)
    buffer.get_buffer(8).release()
    buffer.feed(b"!")  # feed() writes where the offered space was: the offer is void
    with pytest.raises(ValueError, match=r"outside the 0 bytes offered"):
        buffer.buffer_updated(1)
    assert buffer.peek(len(buffer)) == b"ok!"


# --- lazy allocation and release ---------------------------------------------------------------


def test_new_writer_allocates_nothing_until_written() -> None:
    writer = ByteWriter()
    assert writer.allocated == 0
    assert writer.getvalue() == b""
    with writer.getbuffer() as view:
        assert len(view) == 0
    assert writer.allocated == 0
    writer.write(b"")
    assert writer.allocated == 0
    writer.write_u8(1)
    assert writer.allocated > 0


def test_writer_initial_capacity_is_allocated_up_front() -> None:
    assert ByteWriter(100).allocated == 100
    with pytest.raises(ValueError, match=r"^initial_capacity must be >= 0, got -1$"):
        ByteWriter(-1)


def test_new_input_buffer_allocates_nothing_until_input_arrives() -> None:
    buffer = InputBuffer(1 << 20)
    assert (len(buffer), buffer.allocated, buffer.max_size) == (0, 0, 1 << 20)
    assert buffer.peek(0) == b""
    buffer.consume(0)
    buffer.feed(b"")
    assert buffer.release() is True
    assert buffer.allocated == 0

    buffer.feed(b"x")
    assert 0 < buffer.allocated <= IDLE_BUDGET
    assert buffer.release() is False  # one unread byte still needs the memory
    assert buffer.allocated > 0
    buffer.consume(1)
    assert buffer.release() is True
    assert buffer.allocated == 0
    buffer.feed(b"yz")  # usable again after release()
    assert buffer.peek(2) == b"yz"


def test_first_read_allocates_within_the_idle_budget() -> None:
    buffer = InputBuffer(1 << 20)
    with buffer.get_buffer(-1) as view:
        assert len(view) > 0
        assert buffer.allocated <= IDLE_BUDGET
        # The view pins the memory: release() must not free it under a live view.
        assert buffer.release() is False
    assert buffer.release() is True
    assert buffer.allocated == 0


def test_streaming_through_a_buffer_then_releasing_returns_to_zero() -> None:
    buffer = InputBuffer(1 << 20)
    chunk = bytes(range(256)) * 16
    for _ in range(256):  # 1 MiB through, consumed as it arrives
        fill_via_get_buffer(buffer, chunk)
        assert buffer.peek(len(chunk)) == chunk
        buffer.consume(len(chunk))
    assert buffer.allocated <= IDLE_BUDGET
    assert buffer.release() is True
    assert buffer.allocated == 0


def test_byte_at_a_time_stream_reuses_one_allocation() -> None:
    # A parser that consumes each 4-byte value as soon as it is complete: the buffer must
    # rewind and compact in place, never growing, however long the stream.
    buffer = InputBuffer(1 << 20)
    writer = ByteWriter()
    for value in range(20_000):
        writer.write_u32be(value * 2654435761 % 2**32)
    stream = writer.getvalue()
    buffer.feed(stream[:1])
    first_allocation = buffer.allocated
    values = []
    for byte in stream[1:]:
        buffer.feed(bytes([byte]))
        if len(buffer) >= 4:
            values.append(ByteReader(buffer.peek(4)).read_u32be())
            buffer.consume(4)
    assert values == [value * 2654435761 % 2**32 for value in range(20_000)]
    assert buffer.allocated == first_allocation


def test_emptied_buffer_offers_its_whole_allocation_again() -> None:
    # Once everything is consumed the next read starts at the front, so one recv can fill it all.
    buffer = InputBuffer(1 << 20)
    buffer.feed(bytes(60))
    allocated = buffer.allocated
    buffer.consume(60)
    with buffer.get_buffer(1) as view:
        assert len(view) == allocated


def test_partial_consumption_keeps_memory_bounded() -> None:
    # 1000 bytes stay unread while one byte is consumed per byte fed: compaction, not growth.
    buffer = InputBuffer(1 << 20)
    buffer.feed(bytes(1000))
    for index in range(50_000):
        buffer.feed(bytes([index % 251]))
        buffer.consume(1)
    assert len(buffer) == 1000
    assert buffer.peek(1000) == bytes(index % 251 for index in range(49_000, 50_000))
    assert buffer.allocated <= 4 * 1000


# --- exported views ----------------------------------------------------------------------------


def test_writer_view_is_copy_free_read_only_and_blocks_writes_while_alive() -> None:
    writer = ByteWriter()
    writer.write(b"abc")
    view = writer.getbuffer()
    assert view.readonly
    assert bytes(view) == b"abc"
    with pytest.raises(TypeError):
        view[0] = 0
    with pytest.raises(BufferError, match="while a getbuffer\\(\\) view is alive"):
        writer.write_u8(1)
    with pytest.raises(BufferError):
        writer.write(bytes(10_000))
    with pytest.raises(BufferError):
        writer.clear()
    assert writer.getvalue() == b"abc"
    view.release()
    writer.write(bytes(10_000))
    assert len(writer) == 10_003


def test_a_view_cannot_be_re_exported_from_its_underlying_object() -> None:
    writer = ByteWriter()
    writer.write(b"abc")
    with writer.getbuffer() as view:
        exporter = view.obj
    with pytest.raises(BufferError, match="already exported"):
        memoryview(exporter)
    writer.write(bytes(10_000))  # the released view no longer pins the writer


def test_input_buffer_does_not_reallocate_under_a_live_view() -> None:
    buffer = InputBuffer(1 << 20)
    view = buffer.get_buffer(4)
    view[:4] = b"abcd"
    buffer.buffer_updated(4)
    with pytest.raises(BufferError, match="release the view first"):
        buffer.feed(bytes(1 << 19))
    with pytest.raises(BufferError, match="release the view first"):
        buffer.get_buffer(1 << 19)
    assert buffer.peek(len(buffer)) == b"abcd"
    view.release()
    buffer.feed(bytes(1 << 19))
    assert len(buffer) == 4 + (1 << 19)


def test_reader_borrows_without_copying_and_pins_its_source() -> None:
    source = bytearray(b"\x01\x02")
    reader = ByteReader(source)
    source[0] = 0x09
    assert reader.read_u8() == 0x09  # sees the change: no copy was made
    with pytest.raises(BufferError):
        source.extend(b"x")  # resizing would move memory the reader points at
    del reader
    source.extend(b"x")


def test_reader_rejects_non_buffers_and_non_contiguous_buffers() -> None:
    with pytest.raises(TypeError):
        ByteReader("text")  # type: ignore[arg-type]
    with pytest.raises(BufferError):
        ByteReader(memoryview(b"abcd")[::2])


# --- round trips under arbitrary splits --------------------------------------------------------

ITEMS = st.one_of(
    *(st.tuples(st.just(field), st.integers(0, maximum)) for field, maximum in MAXIMUMS.items()),
    st.tuples(st.just("f64be"), st.floats(allow_nan=True, allow_infinity=True)),
    st.tuples(st.just("bytes"), st.binary(max_size=40)),
)
Item = tuple[str, Value | bytes]


def write_item(writer: ByteWriter, item: Item) -> None:
    kind, value = item
    if isinstance(value, bytes):
        writer.write_u16be(len(value))  # length-prefixed, as AMF0 strings are
        writer.write(value)
    else:
        write_field(writer, kind, value)


def read_item(reader: ByteReader, kind: str) -> Value | bytes:
    if kind == "bytes":
        return reader.read_bytes(reader.read_u16be())
    return read_field(reader, kind)


def same_item(a: Value | bytes, b: Value | bytes) -> bool:
    if isinstance(a, bytes) or isinstance(b, bytes):
        return a == b
    return same_value(a, b)


def parse_available(buffer: InputBuffer, kinds: list[str], decoded: list[Value | bytes]) -> None:
    """Decode every complete item buffered, as a parser does after each delivery."""
    while len(decoded) < len(kinds):
        reader = ByteReader(buffer.peek(len(buffer)))
        try:
            value = read_item(reader, kinds[len(decoded)])
        except BufferUnderrun:
            return  # incomplete: wait for more input, nothing consumed
        decoded.append(value)
        buffer.consume(reader.position)


@given(items=st.lists(ITEMS, max_size=30), data=st.data())
def test_round_trip_through_writer_input_buffer_and_reader(
    items: list[Item], data: st.DataObject
) -> None:
    writer = ByteWriter()
    for item in items:
        write_item(writer, item)
    encoded = writer.getvalue()
    kinds = [kind for kind, _ in items]

    whole = ByteReader(encoded)
    assert all(same_item(read_item(whole, kind), value) for kind, value in items)
    assert whole.remaining == 0

    cuts = sorted(data.draw(st.lists(st.integers(0, len(encoded)), max_size=12), label="cuts"))
    # max_size is exactly the stream length: every split must fit, with no slack to hide a leak.
    buffer = InputBuffer(max(1, len(encoded)))
    decoded: list[Value | bytes] = []
    for start, end in pairwise([0, *cuts, len(encoded)]):
        piece = encoded[start:end]
        if piece and data.draw(st.booleans(), label="via get_buffer"):
            fill_via_get_buffer(buffer, piece)
        else:
            buffer.feed(piece)
        parse_available(buffer, kinds, decoded)
    assert len(decoded) == len(items)
    assert all(same_item(got, value) for got, (_, value) in zip(decoded, items, strict=True))
    assert len(buffer) == 0
    assert buffer.allocated <= max(1, len(encoded))


OPERATIONS = st.lists(
    st.one_of(
        st.tuples(st.just("feed"), st.binary(max_size=24)),
        st.tuples(st.just("read"), st.binary(min_size=1, max_size=24)),
        st.tuples(st.just("consume"), st.integers(0, 24)),
        st.tuples(st.just("release"), st.just(0)),
    ),
    max_size=60,
)


@given(max_size=st.integers(1, 48), operations=OPERATIONS)
def test_input_buffer_behaves_like_a_bounded_bytearray(
    max_size: int, operations: list[tuple[str, bytes | int]]
) -> None:
    buffer = InputBuffer(max_size)
    model = bytearray()
    for operation, argument in operations:
        if operation == "feed" and isinstance(argument, bytes):
            if len(model) + len(argument) > max_size:
                with pytest.raises(BufferOverflow):
                    buffer.feed(argument)
            else:
                buffer.feed(argument)
                model += argument
        elif operation == "read" and isinstance(argument, bytes):
            headroom = max_size - len(model)
            if headroom == 0:
                with pytest.raises(BufferOverflow):
                    buffer.get_buffer(len(argument))
                continue
            with buffer.get_buffer(len(argument)) as view:
                assert min(len(argument), headroom) <= len(view) <= headroom
                received = argument[: len(view)]  # a recv_into fills at most the view
                view[: len(received)] = received
                buffer.buffer_updated(len(received))
            model += received
        elif operation == "consume" and isinstance(argument, int):
            if argument > len(model):
                with pytest.raises(BufferUnderrun):
                    buffer.consume(argument)
            else:
                buffer.consume(argument)
                del model[:argument]
        elif operation == "release":
            assert buffer.release() is (len(model) == 0)
            if not model:
                assert buffer.allocated == 0
        assert len(buffer) == len(model)
        assert buffer.peek(len(model)) == model
        assert buffer.allocated <= max_size
