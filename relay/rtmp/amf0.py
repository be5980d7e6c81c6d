"""AMF0 values, plus the AMF3 subset that RTMP command messages carry (sans-IO).

This is the public interface; the AMF3 reader is ``relay.rtmp.amf3``, and the value types
and the cursor both readers share are ``relay.rtmp.amf_values``.

Theory of operation
-------------------
RTMP command messages (type 20), data messages (type 18, e.g. ``@setDataFrame`` /
``onMetaData``) and FLV script tags are sequences of AMF0 values (AMF0 spec, section 2).
A type 17 "AMF3 command" is one format byte 0x00 followed by the same AMF0 sequence, in
which any value may switch to AMF3 with the avmplus marker 0x11 (AMF0 spec 3.1, "AVM+
type marker"); the AMF3 value that follows is decoded with the AMF3 spec.

Decoding is a recursive descent over one immutable ``bytes`` with a cursor. Everything the
peer controls is bounded before it is used: nesting depth (``MAX_DEPTH``), every length is
checked against the bytes that remain, and a declared element count larger than the bytes
left fails at once (each element takes at least one byte), so a 4-byte count can never cause
a large allocation. Every failure is an ``AmfError`` whose one-line reason names the marker
or field and the offset; a peer's string in it is shown through ``relay.logs.peer_text``.

References let a few bytes describe a huge value: ``x1 = {a: x0, b: x0}``, ``x2 = {a: x1,
b: x1}`` ... doubles at every level, and anything that walks the result (``repr``, a
comparison, a JSON dump) walks every shared node again. So each decode call has a size
budget (``max_size``, default ``MAX_DECODED_SIZE``): every value costs one, every string
and key costs its length in characters and a byte array its length besides, and a
reference costs the whole size of what it points at, each time it appears (AMF0 2.9
references, AMF3 string, object and traits references alike). The size of a decoded value
walked as a tree is therefore at most ``max_size``, however it shares nodes; without
references it is at most the message's length in bytes, so a message no longer than the
budget never meets it. The cost of a reference is looked up, not walked, so decoding stays
linear in the input.

Python values:

==================  ==========================================================
AMF                 Python
==================  ==========================================================
number, integer     ``float`` (AMF3 integers too); ``encode`` takes int or float
boolean             ``bool``
string, long str.   ``str`` (``encode`` picks the long form above 65535 bytes)
xml document        ``str`` (encodes back as a string)
object              ``dict[str, AmfValue]``; a typed object's class name is dropped
ECMA array          ``EcmaArray`` (a ``dict`` subclass) so it encodes back as 0x08
strict array        ``list``
null / undefined    ``None`` / ``UNDEFINED``
date                timezone-aware ``datetime`` in UTC (milliseconds; the spec's
                    time-zone field is reserved and ignored)
AMF3 byte array     ``bytes`` (encoded through the avmplus switch)
==================  ==========================================================

References: AMF0 references (0x07) resolve to an already finished object of the same
message; a reference to an object still being decoded (a cycle) is refused. The AMF0 table
spans the values of one ``decode_all``/``decode_command`` call; ``decode`` starts a fresh
one. Each avmplus switch starts a fresh AMF3 context (string, object and traits tables).
"""

from __future__ import annotations

import datetime as _dt
import struct
from typing import Final

from relay.logs import peer_text
from relay.rtmp.amf3 import AMF3_BYTE_ARRAY, U29_MAX, Amf3Context, Amf3Reader, encode_u29
from relay.rtmp.amf_values import (
    EPOCH,
    F64,
    IN_PROGRESS,
    MAX_DECODED_SIZE,
    MAX_DEPTH,
    U16,
    U32,
    UNDEFINED,
    AmfError,
    AmfValue,
    Cursor,
    EcmaArray,
    Undefined,
    date_from_ms,
)

__all__ = [
    "MAX_DECODED_SIZE",
    "MAX_DEPTH",
    "UNDEFINED",
    "AmfError",
    "AmfValue",
    "EcmaArray",
    "Undefined",
    "decode",
    "decode_all",
    "decode_command",
    "encode",
    "encode_command",
]

# AMF0 markers (AMF0 spec 2.1).
NUMBER: Final = 0x00
BOOLEAN: Final = 0x01
STRING: Final = 0x02
OBJECT: Final = 0x03
MOVIECLIP: Final = 0x04  # reserved, not supported
NULL: Final = 0x05
UNDEFINED_MARKER: Final = 0x06
REFERENCE: Final = 0x07
ECMA_ARRAY: Final = 0x08
OBJECT_END: Final = 0x09
STRICT_ARRAY: Final = 0x0A
DATE: Final = 0x0B
LONG_STRING: Final = 0x0C
UNSUPPORTED: Final = 0x0D
RECORDSET: Final = 0x0E  # reserved, not supported
XML_DOCUMENT: Final = 0x0F
TYPED_OBJECT: Final = 0x10
AVMPLUS: Final = 0x11

_AMF0_NAMES: Final = {
    MOVIECLIP: "movieclip",
    OBJECT_END: "object-end",
    UNSUPPORTED: "unsupported",
    RECORDSET: "recordset",
}
_U16_MAX: Final = 0xFFFF
_U32_MAX: Final = 0xFFFFFFFF
_EMPTY_KEY_AND_END: Final = b"\x00\x00\x09"  # UTF-8-empty + object-end-marker (AMF0 2.5)
_ONE_MS: Final = _dt.timedelta(milliseconds=1)
_DATE_TAIL = struct.Struct(">dh")


class _Reader(Cursor):
    """Reads AMF0 values; holds the AMF0 reference table (AMF0 2.9)."""

    __slots__ = ("ref_sizes", "refs")

    def __init__(self, data: bytes, pos: int, max_size: int) -> None:
        super().__init__(data, pos, max_size)
        self.refs: list[object] = []  # AMF0 complex values, in order of their markers
        self.ref_sizes: list[int] = []  # decoded size of each entry of refs

    # -- AMF0 --------------------------------------------------------------------------

    def value(self, depth: int) -> AmfValue:
        at = self.pos
        marker = self.u8("value marker")
        if marker == NUMBER:
            self.spend(1, at)
            return self.f64("number")
        if marker == BOOLEAN:
            self.spend(1, at)
            return self.u8("boolean") != 0  # AMF0 2.3: non-zero is true
        if marker == STRING:
            return self.text(self.u16("string length"), "string", at)
        if marker == NULL:
            self.spend(1, at)
            return None
        if marker == UNDEFINED_MARKER:
            self.spend(1, at)
            return UNDEFINED
        if marker == LONG_STRING:
            return self.text(self.u32("long string length"), "long string", at)
        if marker == XML_DOCUMENT:
            return self.text(self.u32("xml document length"), "xml document", at)
        if marker == DATE:
            self.spend(1, at)
            return self.date()
        if marker == REFERENCE:
            return self.reference(at)
        if marker == AVMPLUS:
            # The switch covers one value at the same depth; AMF3 containers check depth.
            return Amf3Reader(self, Amf3Context()).value(depth)
        if marker in (OBJECT, ECMA_ARRAY, STRICT_ARRAY, TYPED_OBJECT):
            if depth >= MAX_DEPTH:
                raise AmfError(
                    f"marker 0x{marker:02x} at offset {at} nests deeper than {MAX_DEPTH}"
                )
            self.spend(1, at)
            if marker == STRICT_ARRAY:
                return self.strict_array(at, depth)
            if marker == TYPED_OBJECT:
                self.utf8(self.u16("typed object class name length"), "typed object class name")
            if marker == ECMA_ARRAY:
                # AMF0 2.10: the count is advisory; the pairs run to the object-end marker,
                # and nothing is allocated by it.
                self.u32("ECMA array count")
                return self.members(EcmaArray(), depth)
            return self.members({}, depth)
        name = _AMF0_NAMES.get(marker, "unknown")
        raise AmfError(f"unsupported AMF0 marker 0x{marker:02x} ({name}) at offset {at}")

    def text(self, n: int, what: str, at: int) -> str:
        s = self.utf8(n, what)  # a truncation is reported as such, before the budget
        self.spend(1 + len(s), at)
        return s

    def members(self, into: dict[str, AmfValue], depth: int) -> dict[str, AmfValue]:
        """Read key/value pairs up to the object-end marker (AMF0 2.5, 2.10, 2.18)."""
        start = self.size - 1  # the container's own unit, spent by value()
        slot = len(self.refs)
        self.refs.append(IN_PROGRESS)
        self.ref_sizes.append(0)
        while True:
            key_at = self.pos
            key = self.utf8(self.u16("object key length"), "object key")
            self.need(1, "object member marker")
            if key == "" and self.data[self.pos] == OBJECT_END:
                self.pos += 1
                break
            self.spend(len(key), key_at)
            into[key] = self.value(depth + 1)
        self.refs[slot] = into
        self.ref_sizes[slot] = self.size - start
        return into

    def strict_array(self, at: int, depth: int) -> list[AmfValue]:
        start = self.size - 1
        count = self.u32("strict array count")
        self.check_count(count, "strict array", at)
        slot = len(self.refs)
        self.refs.append(IN_PROGRESS)
        self.ref_sizes.append(0)
        items = [self.value(depth + 1) for _ in range(count)]
        self.refs[slot] = items
        self.ref_sizes[slot] = self.size - start
        return items

    def date(self) -> _dt.datetime:
        at = self.pos
        self.need(10, "date")
        ms, _tz = _DATE_TAIL.unpack_from(self.data, self.pos)  # AMF0 2.13: tz is reserved
        self.pos += 10
        return date_from_ms(float(ms), at)

    def reference(self, at: int) -> AmfValue:
        index = self.u16("reference index")
        if index >= len(self.refs):
            raise AmfError(
                f"reference {index} at offset {at} points past the {len(self.refs)} "
                "objects decoded so far"
            )
        target = self.refs[index]
        if target is IN_PROGRESS:
            raise AmfError(f"reference {index} at offset {at} is cyclic; cycles are not supported")
        self.spend(self.ref_sizes[index], at)
        return target  # type: ignore[return-value]  # only AmfValues are stored


def _as_bytes(data: bytes | bytearray | memoryview) -> bytes:
    return data if isinstance(data, bytes) else bytes(data)


def decode(data: bytes, offset: int = 0, *,
           max_size: int = MAX_DECODED_SIZE) -> tuple[AmfValue, int]:
    """Decode one AMF0 value at ``offset``; return it and the offset just past it.

    ``max_size`` bounds the decoded value's size, references counted in full (see the
    module docstring)."""
    if not 0 <= offset <= len(data):
        raise AmfError(f"offset {offset} is outside the {len(data)}-byte input")
    reader = _Reader(_as_bytes(data), offset, max_size)
    value = reader.value(0)
    return value, reader.pos


def _decode_from(reader: _Reader) -> list[AmfValue]:
    values: list[AmfValue] = []
    while reader.pos < len(reader.data):
        values.append(reader.value(0))
    return values


def decode_all(data: bytes, *, max_size: int = MAX_DECODED_SIZE) -> list[AmfValue]:
    """Decode AMF0 values until the end of ``data`` (one message: one reference table and
    one size budget, ``max_size``)."""
    return _decode_from(_Reader(_as_bytes(data), 0, max_size))


def decode_command(payload: bytes, *, amf3: bool = False,
                   max_size: int = MAX_DECODED_SIZE) -> tuple[str, float, list[AmfValue]]:
    """Split an RTMP command message into (name, transaction id, remaining values).

    ``amf3=True`` is for message type 17: a 0x00 format byte, then AMF0 values that may
    switch to AMF3 one value at a time (RTMP 7.1.1; AMF0 3.1). ``max_size`` bounds the
    decoded size of the whole message, as for ``decode_all``.
    """
    data = _as_bytes(payload)
    start = 0
    if amf3:
        if not data:
            raise AmfError("AMF3 command message is empty")
        if data[0] != 0x00:
            raise AmfError(f"AMF3 command starts with format byte 0x{data[0]:02x}, expected 0x00")
        start = 1
    values = _decode_from(_Reader(data, start, max_size))
    if not values:
        raise AmfError("command message has no values; expected a name and a transaction id")
    name = values[0]
    if not isinstance(name, str):
        raise AmfError(f"command name must be a string, got {_type_name(name)}")
    if len(values) < 2:
        raise AmfError(f"command '{peer_text(name)}' has no transaction id")
    tid = values[1]
    if not isinstance(tid, float):
        raise AmfError(f"command '{peer_text(name)}' transaction id must be a number, "
                       f"got {_type_name(tid)}")
    return name, tid, values[2:]


def _type_name(value: object) -> str:
    return "undefined" if value is UNDEFINED else type(value).__name__


# -- encoding ------------------------------------------------------------------------------


def encode(*values: AmfValue) -> bytes:
    """Encode values as consecutive AMF0 values (no references are emitted)."""
    out = bytearray()
    for value in values:
        _encode_value(out, value, 0)
    return bytes(out)


def encode_command(name: str, transaction_id: float, *args: AmfValue) -> bytes:
    """Encode an RTMP command message body (type 20): name, transaction id, arguments."""
    return encode(name, float(transaction_id), *args)


def _utf8(text: str, what: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise AmfError(f"{what} cannot be encoded as UTF-8 ({e.reason})") from None


def _encode_value(out: bytearray, value: object, depth: int) -> None:
    if value is None:
        out.append(NULL)
    elif value is UNDEFINED:
        out.append(UNDEFINED_MARKER)
    elif isinstance(value, bool):
        out += bytes((BOOLEAN, 1 if value else 0))
    elif isinstance(value, int | float):
        try:
            out.append(NUMBER)
            out += F64.pack(float(value))
        except OverflowError:
            raise AmfError(f"integer {value} is too large for an AMF number") from None
    elif isinstance(value, str):
        raw = _utf8(value, "string")
        if len(raw) <= _U16_MAX:
            out.append(STRING)
            out += U16.pack(len(raw))
        elif len(raw) <= _U32_MAX:
            out.append(LONG_STRING)
            out += U32.pack(len(raw))
        else:
            raise AmfError(f"string of {len(raw)} bytes is too long for AMF0")
        out += raw
    elif isinstance(value, bytes | bytearray):
        # AMF0 has no byte array; switch to AMF3 for this one value (AMF0 3.1, AMF3 3.14).
        if len(value) > U29_MAX >> 1:
            raise AmfError(f"byte array of {len(value)} bytes is too long for AMF3")
        out += bytes((AVMPLUS, AMF3_BYTE_ARRAY))
        out += encode_u29((len(value) << 1) | 1)
        out += value
    elif isinstance(value, _dt.datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise AmfError(f"date {value.isoformat()} is naive; pass a timezone-aware datetime")
        out.append(DATE)
        out += _DATE_TAIL.pack((value - EPOCH) / _ONE_MS, 0)
    elif isinstance(value, dict):
        _check_depth(value, depth)
        if isinstance(value, EcmaArray):
            out.append(ECMA_ARRAY)
            out += U32.pack(len(value))
        else:
            out.append(OBJECT)
        for key, item in value.items():
            if not isinstance(key, str):
                raise AmfError(f"object key {peer_text(key)} is a {type(key).__name__}, "
                               "not a string")
            raw_key = _utf8(key, "object key")
            if len(raw_key) > _U16_MAX:
                raise AmfError(f"object key of {len(raw_key)} bytes is longer than 65535")
            out += U16.pack(len(raw_key))
            out += raw_key
            _encode_value(out, item, depth + 1)
        out += _EMPTY_KEY_AND_END
    elif isinstance(value, list | tuple):
        _check_depth(value, depth)
        out.append(STRICT_ARRAY)
        out += U32.pack(len(value))
        for item in value:
            _encode_value(out, item, depth + 1)
    else:
        raise AmfError(f"cannot encode a {type(value).__name__} as AMF0")


def _check_depth(value: object, depth: int) -> None:
    # Mirrors the decoder's bound, so whatever encodes also decodes; it also stops cycles.
    if depth >= MAX_DEPTH:
        raise AmfError(f"{type(value).__name__} nests deeper than {MAX_DEPTH} levels")
