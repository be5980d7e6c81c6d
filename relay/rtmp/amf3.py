"""The AMF3 values that RTMP command messages may carry (AMF3 spec), read from AMF0 (sans-IO).

An AMF0 sequence switches to AMF3 for one value with the avmplus marker 0x11 (AMF0 spec 3.1);
``relay.rtmp.amf0`` hands its cursor to an ``Amf3Reader`` with a fresh ``Amf3Context`` (the
string, object and traits reference tables of AMF3 spec 2.2) for that value. The same size
budget applies: a string, object or traits reference costs the size of what it points at,
each time it appears, so shared nodes cannot amplify (see ``relay.rtmp.amf0``).
"""

from __future__ import annotations

from typing import Final

from relay.logs import peer_text
from relay.rtmp.amf_values import (
    IN_PROGRESS,
    MAX_DEPTH,
    UNDEFINED,
    AmfError,
    AmfValue,
    Cursor,
    EcmaArray,
    date_from_ms,
)

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

# AMF3 values that may be sent as a reference into the object table (AMF3 spec 2.2).
REFERABLE: Final = frozenset(
    (AMF3_XML_DOC, AMF3_DATE, AMF3_ARRAY, AMF3_OBJECT, AMF3_XML, AMF3_BYTE_ARRAY))

UNSUPPORTED_NAMES: Final = {
    0x0D: "vector-int",
    0x0E: "vector-uint",
    0x0F: "vector-double",
    0x10: "vector-object",
    0x11: "dictionary",
}

U29_MAX: Final = 0x1FFFFFFF


class Amf3Context:
    """AMF3 reference tables (AMF3 spec 2.2): strings, complex objects, traits."""

    __slots__ = ("object_sizes", "objects", "strings", "traits")

    def __init__(self) -> None:
        self.strings: list[str] = []
        self.objects: list[object] = []
        self.object_sizes: list[int] = []  # decoded size of each entry of objects
        # (dynamic, sealed member names, their total length: what each instance costs)
        self.traits: list[tuple[bool, list[str], int]] = []


class Amf3Reader:
    """Decodes AMF3 values (AMF3 spec section 3) from the parent reader's cursor."""

    __slots__ = ("ctx", "r")

    def __init__(self, reader: Cursor, ctx: Amf3Context) -> None:
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
        if entry is IN_PROGRESS:
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
        if marker not in REFERABLE:
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
            date = date_from_ms(r.f64("AMF3 date"), at)
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
        name = UNSUPPORTED_NAMES.get(marker, "unknown")
        raise AmfError(f"unsupported AMF3 marker 0x{marker:02x} ({name}) at offset {at}")

    def read_array(self, at: int, depth: int) -> AmfValue:
        """AMF3 3.11: associative part (name/value pairs to an empty name), then dense part."""
        dense_count, ref = self.object_ref_or_inline("AMF3 array")
        if ref is not None:
            return ref  # type: ignore[return-value]
        self.r.spend(1, at)
        start = self.r.size - 1
        slot = len(self.ctx.objects)
        self.add_object(IN_PROGRESS, 0)
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
        self.add_object(IN_PROGRESS, 0)
        obj: dict[str, AmfValue] = {}
        for name in sealed:
            obj[name] = self.value(depth + 1)
        if dynamic:
            while (key := self.string("AMF3 dynamic member name")) != "":
                obj[key] = self.value(depth + 1)
        self.ctx.objects[slot] = obj
        self.ctx.object_sizes[slot] = r.size - start
        return obj


def encode_u29(n: int) -> bytes:
    """AMF3 1.3.1 variable-length unsigned 29-bit integer."""
    if n < 0x80:
        return bytes((n,))
    if n < 0x4000:
        return bytes((0x80 | (n >> 7), n & 0x7F))
    if n < 0x200000:
        return bytes((0x80 | (n >> 14), 0x80 | ((n >> 7) & 0x7F), n & 0x7F))
    return bytes((0x80 | (n >> 22), 0x80 | ((n >> 15) & 0x7F), 0x80 | ((n >> 8) & 0x7F), n & 0xFF))
