"""AMF0 values, plus the AMF3 subset that RTMP command messages carry (sans-IO).

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
import math
import struct
from typing import Final, TypeAlias

from relay.logs import peer_text

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

# Containers may nest this deep (the outermost value is depth 0). Real commands and
# metadata nest two or three levels; the bound keeps recursion and work per byte small.
MAX_DEPTH: Final = 32

# The default size budget of one decode call (see the theory of operation): one per value
# plus the length of every string, key and byte array, counting a referenced value in full
# each time it is referenced. Relay refuses command and data messages over 64 KiB, whose
# size without references is at most their length; four times that leaves room for the
# rare encoder that uses references, and walking a value of this size takes milliseconds.
MAX_DECODED_SIZE: Final = 256 * 1024


class AmfError(ValueError):
    """Malformed, unsupported or unencodable AMF data; the message says what and where."""


class Undefined:
    """The AMF ``undefined`` value (AMF0 marker 0x06, AMF3 marker 0x00); use ``UNDEFINED``."""

    __slots__ = ()
    _instance: Undefined | None = None

    def __new__(cls) -> Undefined:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNDEFINED"

    def __bool__(self) -> bool:
        return False

    def __reduce__(self) -> str:
        return "UNDEFINED"


UNDEFINED: Final = Undefined()

AmfValue: TypeAlias = (
    Undefined
    | bool
    | float
    | str
    | bytes
    | dict[str, "AmfValue"]
    | list["AmfValue"]
    | _dt.datetime
    | None
)


class EcmaArray(dict[str, AmfValue]):
    """A ``dict`` that encodes as an AMF0 ECMA array (0x08) instead of an object (0x03).

    Decoding returns ECMA arrays as this type; it compares equal to a plain dict with the
    same items, so callers that do not care can treat it as one.
    """

    __slots__ = ()

    def __repr__(self) -> str:
        return f"EcmaArray({dict.__repr__(self)})"


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

# AMF3 markers (AMF3 spec 3.1).
AMF3_UNDEFINED: Final = 0x00
AMF3_NULL: Final = 0x01
AMF3_FALSE: Final = 0x02
AMF3_TRUE: Final = 0x03
AMF3_INTEGER: Final = 0x04
AMF3_DOUBLE: Final = 0x05
AMF3_STRING: Final = 0x06
AMF3_XML_DOC: Final = 0x07
AMF3_DATE: Final = 0x08
AMF3_ARRAY: Final = 0x09
AMF3_OBJECT: Final = 0x0A
AMF3_XML: Final = 0x0B
AMF3_BYTE_ARRAY: Final = 0x0C

_AMF0_NAMES: Final = {
    MOVIECLIP: "movieclip",
    OBJECT_END: "object-end",
    UNSUPPORTED: "unsupported",
    RECORDSET: "recordset",
}
# AMF3 values that may be sent as a reference into the object table (AMF3 spec 2.2).
_AMF3_REFERABLE: Final = frozenset(
    (AMF3_XML_DOC, AMF3_DATE, AMF3_ARRAY, AMF3_OBJECT, AMF3_XML, AMF3_BYTE_ARRAY))

_AMF3_NAMES: Final = {
    0x0D: "vector-int",
    0x0E: "vector-uint",
    0x0F: "vector-double",
    0x10: "vector-object",
    0x11: "dictionary",
}

_U16_MAX: Final = 0xFFFF
_U32_MAX: Final = 0xFFFFFFFF
_U29_MAX: Final = 0x1FFFFFFF
_EMPTY_KEY_AND_END: Final = b"\x00\x00\x09"  # UTF-8-empty + object-end-marker (AMF0 2.5)
_EPOCH: Final = _dt.datetime(1970, 1, 1, tzinfo=_dt.UTC)
_ONE_MS: Final = _dt.timedelta(milliseconds=1)

_F64 = struct.Struct(">d")
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_DATE_TAIL = struct.Struct(">dh")

# An AMF3 reference may point at a slot whose value is still being decoded.
_IN_PROGRESS: Final = object()


class _Amf3Context:
    """AMF3 reference tables (AMF3 spec 2.2): strings, complex objects, traits."""

    __slots__ = ("object_sizes", "objects", "strings", "traits")

    def __init__(self) -> None:
        self.strings: list[str] = []
        self.objects: list[object] = []
        self.object_sizes: list[int] = []  # decoded size of each entry of objects
        # (dynamic, sealed member names, their total length: what each instance costs)
        self.traits: list[tuple[bool, list[str], int]] = []


class _Reader:
    """A cursor over one message; holds the AMF0 reference table and the size budget."""

    __slots__ = ("data", "max_size", "pos", "ref_sizes", "refs", "size")

    def __init__(self, data: bytes, pos: int, max_size: int) -> None:
        self.data = data
        self.pos = pos
        self.refs: list[object] = []  # AMF0 complex values, in order of their markers
        self.ref_sizes: list[int] = []  # decoded size of each entry of refs
        self.size = 0  # decoded size so far, references counted in full
        self.max_size = max_size

    def spend(self, n: int, at: int) -> None:
        """Add n to the decoded size; past the budget the message is refused."""
        self.size += n
        if self.size > self.max_size:
            raise AmfError(
                f"value at offset {at} makes the decoded size pass max_size={self.max_size} "
                "(a reference counts the size of what it points at each time)")

    # -- primitive fields --------------------------------------------------------------

    def need(self, n: int, what: str) -> None:
        left = len(self.data) - self.pos
        if n > left:
            raise AmfError(f"truncated {what} at offset {self.pos}: needs {n} bytes, {left} left")

    def u8(self, what: str) -> int:
        self.need(1, what)
        b = self.data[self.pos]
        self.pos += 1
        return b

    def u16(self, what: str) -> int:
        self.need(2, what)
        (v,) = _U16.unpack_from(self.data, self.pos)
        self.pos += 2
        return int(v)

    def u32(self, what: str) -> int:
        self.need(4, what)
        (v,) = _U32.unpack_from(self.data, self.pos)
        self.pos += 4
        return int(v)

    def f64(self, what: str) -> float:
        self.need(8, what)
        (v,) = _F64.unpack_from(self.data, self.pos)
        self.pos += 8
        return float(v)

    def utf8(self, n: int, what: str) -> str:
        self.need(n, what)
        start = self.pos
        try:
            s = self.data[start : start + n].decode("utf-8")
        except UnicodeDecodeError as e:
            raise AmfError(f"{what} at offset {start} is not valid UTF-8 ({e.reason})") from None
        self.pos += n
        return s

    def check_count(self, count: int, what: str, at: int) -> None:
        # Every element takes at least one byte, so a count above the bytes left is a lie;
        # refusing it here keeps a 4-byte count from driving a long loop or allocation.
        left = len(self.data) - self.pos
        if count > left:
            raise AmfError(
                f"{what} at offset {at} declares {count} elements, only {left} bytes left"
            )

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
            return _Amf3Reader(self, _Amf3Context()).value(depth)
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
        self.refs.append(_IN_PROGRESS)
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
        self.refs.append(_IN_PROGRESS)
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
        return _date_from_ms(float(ms), at)

    def reference(self, at: int) -> AmfValue:
        index = self.u16("reference index")
        if index >= len(self.refs):
            raise AmfError(
                f"reference {index} at offset {at} points past the {len(self.refs)} "
                "objects decoded so far"
            )
        target = self.refs[index]
        if target is _IN_PROGRESS:
            raise AmfError(f"reference {index} at offset {at} is cyclic; cycles are not supported")
        self.spend(self.ref_sizes[index], at)
        return target  # type: ignore[return-value]  # only AmfValues are stored


class _Amf3Reader:
    """Decodes AMF3 values (AMF3 spec section 3) from the parent reader's cursor."""

    __slots__ = ("ctx", "r")

    def __init__(self, reader: _Reader, ctx: _Amf3Context) -> None:
        self.r = reader
        self.ctx = ctx

    def u29(self, what: str) -> int:
        """AMF3 1.3.1: 1-3 bytes of 7 bits with a continuation bit, then a full 4th byte."""
        r = self.r
        result = 0
        for _ in range(3):
            b = r.u8(what)
            if b < 0x80:
                return (result << 7) | b
            result = (result << 7) | (b & 0x7F)
        return (result << 8) | r.u8(what)

    def string(self, what: str, *, spend: bool = True) -> str:
        """UTF-8-vr (AMF3 1.3.2): a reference into the string table or an inline string.

        Costs its length, referenced or not (a key or a value), unless ``spend`` is false
        (a class name, which the decoded value does not keep)."""
        at = self.r.pos
        header = self.u29(f"{what} header")
        if header & 1 == 0:
            index = header >> 1
            if index >= len(self.ctx.strings):
                raise AmfError(
                    f"AMF3 string reference {index} at offset {at} points past the "
                    f"{len(self.ctx.strings)} strings decoded so far"
                )
            s = self.ctx.strings[index]
            if spend:
                self.r.spend(len(s), at)
            return s
        s = self.r.utf8(header >> 1, what)
        if spend:
            self.r.spend(len(s), at)
        if s:  # AMF3 1.3.2: the empty string is never sent by reference
            self.ctx.strings.append(s)
        return s

    def object_entry(self, index: int, at: int) -> object:
        objects = self.ctx.objects
        if index >= len(objects):
            raise AmfError(
                f"AMF3 object reference {index} at offset {at} points past the "
                f"{len(objects)} objects decoded so far"
            )
        entry = objects[index]
        if entry is _IN_PROGRESS:
            raise AmfError(f"AMF3 object reference {index} at offset {at} is cyclic")
        self.r.spend(self.ctx.object_sizes[index], at)
        return entry

    def add_object(self, value: object, size: int) -> None:
        self.ctx.objects.append(value)
        self.ctx.object_sizes.append(size)

    def object_ref_or_inline(self, what: str) -> tuple[int, object | None]:
        """Read a U29 with the reference bit: (inline value >> 1, None) or (0, referenced)."""
        at = self.r.pos
        header = self.u29(f"{what} header")
        if header & 1 == 0:
            return 0, self.object_entry(header >> 1, at)
        return header >> 1, None

    def value(self, depth: int) -> AmfValue:
        r = self.r
        at = r.pos
        marker = r.u8("AMF3 value marker")
        if marker not in _AMF3_REFERABLE:
            # A referable value spends its own unit only when it is not a reference:
            # a reference costs the size recorded for its target instead.
            r.spend(1, at)
        if marker == AMF3_UNDEFINED:
            return UNDEFINED
        if marker == AMF3_NULL:
            return None
        if marker == AMF3_FALSE:
            return False
        if marker == AMF3_TRUE:
            return True
        if marker == AMF3_INTEGER:
            n = self.u29("AMF3 integer")
            return float(n - 0x20000000 if n & 0x10000000 else n)  # 29-bit two's complement
        if marker == AMF3_DOUBLE:
            return r.f64("AMF3 double")
        if marker == AMF3_STRING:
            return self.string("AMF3 string")
        if marker in (AMF3_XML_DOC, AMF3_XML):
            length, ref = self.object_ref_or_inline("AMF3 xml")
            if ref is not None:
                return ref  # type: ignore[return-value]  # only AmfValues are stored
            text = r.utf8(length, "AMF3 xml")
            r.spend(1 + len(text), at)
            self.add_object(text, 1 + len(text))
            return text
        if marker == AMF3_DATE:
            _, ref = self.object_ref_or_inline("AMF3 date")
            if ref is not None:
                return ref  # type: ignore[return-value]
            r.spend(1, at)
            date = _date_from_ms(r.f64("AMF3 date"), at)
            self.add_object(date, 1)
            return date
        if marker == AMF3_BYTE_ARRAY:
            length, ref = self.object_ref_or_inline("AMF3 byte array")
            if ref is not None:
                return ref  # type: ignore[return-value]
            r.need(length, "AMF3 byte array")
            r.spend(1 + length, at)
            blob = r.data[r.pos : r.pos + length]
            r.pos += length
            self.add_object(blob, 1 + length)
            return blob
        if marker in (AMF3_ARRAY, AMF3_OBJECT):
            if depth >= MAX_DEPTH:
                raise AmfError(
                    f"AMF3 marker 0x{marker:02x} at offset {at} nests deeper than {MAX_DEPTH}"
                )
            if marker == AMF3_ARRAY:
                return self.read_array(at, depth)
            return self.read_object(at, depth)
        name = _AMF3_NAMES.get(marker, "unknown")
        raise AmfError(f"unsupported AMF3 marker 0x{marker:02x} ({name}) at offset {at}")

    def read_array(self, at: int, depth: int) -> AmfValue:
        """AMF3 3.11: associative part (name/value pairs to an empty name), then dense part."""
        dense_count, ref = self.object_ref_or_inline("AMF3 array")
        if ref is not None:
            return ref  # type: ignore[return-value]
        self.r.spend(1, at)
        start = self.r.size - 1
        slot = len(self.ctx.objects)
        self.add_object(_IN_PROGRESS, 0)
        assoc: dict[str, AmfValue] = {}
        while (key := self.string("AMF3 array key")) != "":
            assoc[key] = self.value(depth + 1)
        self.r.check_count(dense_count, "AMF3 array", at)
        dense = [self.value(depth + 1) for _ in range(dense_count)]
        result: AmfValue
        if not assoc:
            result = dense
        else:
            # ActionScript's view of a mixed array: dense items under their indices.
            mixed = EcmaArray((str(i), v) for i, v in enumerate(dense))
            mixed.update(assoc)
            result = mixed
        self.ctx.objects[slot] = result
        self.ctx.object_sizes[slot] = self.r.size - start
        return result

    def read_object(self, at: int, depth: int) -> AmfValue:
        """AMF3 3.12: traits (inline or by reference), sealed values, dynamic members."""
        r = self.r
        header_at = r.pos
        header = self.u29("AMF3 object header")
        if header & 1 == 0:
            entry = self.object_entry(header >> 1, header_at)
            return entry  # type: ignore[return-value]  # only AmfValues are stored
        r.spend(1, at)
        start = r.size - 1
        if header & 2 == 0:
            index = header >> 2
            if index >= len(self.ctx.traits):
                raise AmfError(
                    f"AMF3 traits reference {index} at offset {header_at} points past the "
                    f"{len(self.ctx.traits)} traits decoded so far"
                )
            dynamic, sealed, names_size = self.ctx.traits[index]
            # Every instance has the traits' member names as its keys.
            r.spend(names_size, header_at)
        else:
            class_name = self.string("AMF3 class name", spend=False)
            if header & 4:
                raise AmfError(
                    f"AMF3 externalizable object of class '{peer_text(class_name)}' at offset "
                    f"{at} is not supported"
                )
            dynamic = bool(header & 8)
            count = header >> 4
            r.check_count(count, "AMF3 object traits", at)
            # Reading the names spends their length: this instance's keys.
            sealed = [self.string("AMF3 sealed member name") for _ in range(count)]
            self.ctx.traits.append((dynamic, sealed, sum(len(name) for name in sealed)))
        slot = len(self.ctx.objects)
        self.add_object(_IN_PROGRESS, 0)
        obj: dict[str, AmfValue] = {}
        for name in sealed:
            obj[name] = self.value(depth + 1)
        if dynamic:
            while (key := self.string("AMF3 dynamic member name")) != "":
                obj[key] = self.value(depth + 1)
        self.ctx.objects[slot] = obj
        self.ctx.object_sizes[slot] = r.size - start
        return obj


def _date_from_ms(ms: float, at: int) -> _dt.datetime:
    if not math.isfinite(ms):
        raise AmfError(f"date at offset {at} is {ms} milliseconds, not a finite time")
    try:
        return _EPOCH + _dt.timedelta(milliseconds=ms)
    except OverflowError:
        raise AmfError(f"date at offset {at} ({ms} ms since 1970) is out of range") from None


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
            out += _F64.pack(float(value))
        except OverflowError:
            raise AmfError(f"integer {value} is too large for an AMF number") from None
    elif isinstance(value, str):
        raw = _utf8(value, "string")
        if len(raw) <= _U16_MAX:
            out.append(STRING)
            out += _U16.pack(len(raw))
        elif len(raw) <= _U32_MAX:
            out.append(LONG_STRING)
            out += _U32.pack(len(raw))
        else:
            raise AmfError(f"string of {len(raw)} bytes is too long for AMF0")
        out += raw
    elif isinstance(value, bytes | bytearray):
        # AMF0 has no byte array; switch to AMF3 for this one value (AMF0 3.1, AMF3 3.14).
        if len(value) > _U29_MAX >> 1:
            raise AmfError(f"byte array of {len(value)} bytes is too long for AMF3")
        out += bytes((AVMPLUS, AMF3_BYTE_ARRAY))
        out += _encode_u29((len(value) << 1) | 1)
        out += value
    elif isinstance(value, _dt.datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise AmfError(f"date {value.isoformat()} is naive; pass a timezone-aware datetime")
        out.append(DATE)
        out += _DATE_TAIL.pack((value - _EPOCH) / _ONE_MS, 0)
    elif isinstance(value, dict):
        _check_depth(value, depth)
        if isinstance(value, EcmaArray):
            out.append(ECMA_ARRAY)
            out += _U32.pack(len(value))
        else:
            out.append(OBJECT)
        for key, item in value.items():
            if not isinstance(key, str):
                raise AmfError(f"object key {peer_text(key)} is a {type(key).__name__}, "
                               "not a string")
            raw_key = _utf8(key, "object key")
            if len(raw_key) > _U16_MAX:
                raise AmfError(f"object key of {len(raw_key)} bytes is longer than 65535")
            out += _U16.pack(len(raw_key))
            out += raw_key
            _encode_value(out, item, depth + 1)
        out += _EMPTY_KEY_AND_END
    elif isinstance(value, list | tuple):
        _check_depth(value, depth)
        out.append(STRICT_ARRAY)
        out += _U32.pack(len(value))
        for item in value:
            _encode_value(out, item, depth + 1)
    else:
        raise AmfError(f"cannot encode a {type(value).__name__} as AMF0")


def _check_depth(value: object, depth: int) -> None:
    # Mirrors the decoder's bound, so whatever encodes also decodes; it also stops cycles.
    if depth >= MAX_DEPTH:
        raise AmfError(f"{type(value).__name__} nests deeper than {MAX_DEPTH} levels")


def _encode_u29(n: int) -> bytes:
    """AMF3 1.3.1 variable-length unsigned 29-bit integer."""
    if n < 0x80:
        return bytes((n,))
    if n < 0x4000:
        return bytes((0x80 | (n >> 7), n & 0x7F))
    if n < 0x200000:
        return bytes((0x80 | (n >> 14), 0x80 | ((n >> 7) & 0x7F), n & 0x7F))
    return bytes((0x80 | (n >> 22), 0x80 | ((n >> 15) & 0x7F), 0x80 | ((n >> 8) & 0x7F), n & 0xFF))
