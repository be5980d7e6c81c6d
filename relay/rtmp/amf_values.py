"""AMF values, limits and the decoding cursor shared by the AMF0 and AMF3 readers (sans-IO).

``relay.rtmp.amf0`` is the public interface (decode, encode, the value types); this module
holds what both of its readers need, so that the AMF3 reader (``relay.rtmp.amf3``) can live
in its own module without an import cycle. The size budget and the bounds are explained in
``relay.rtmp.amf0``'s theory of operation.
"""

from __future__ import annotations

import datetime as _dt
import math
import struct
from typing import Final, TypeAlias

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


EPOCH: Final = _dt.datetime(1970, 1, 1, tzinfo=_dt.UTC)

F64: Final = struct.Struct(">d")
U16: Final = struct.Struct(">H")
U32: Final = struct.Struct(">I")

#: A reference table slot whose value is still being decoded (a reference to it is a cycle).
IN_PROGRESS: Final = object()


class Cursor:
    """A cursor over one message and its size budget: what the AMF0 and AMF3 readers share."""

    __slots__ = ("data", "max_size", "pos", "size")

    def __init__(self, data: bytes, pos: int, max_size: int) -> None:
        self.data = data
        self.pos = pos
        self.size = 0  # decoded size so far, references counted in full
        self.max_size = max_size

    def spend(self, n: int, at: int) -> None:
        """Add n to the decoded size; past the budget the message is refused."""
        self.size += n
        if self.size > self.max_size:
            raise AmfError(
                f"value at offset {at} makes the decoded size pass max_size={self.max_size} "
                "(a reference counts the size of what it points at each time)")

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
        (v,) = U16.unpack_from(self.data, self.pos)
        self.pos += 2
        return int(v)

    def u32(self, what: str) -> int:
        self.need(4, what)
        (v,) = U32.unpack_from(self.data, self.pos)
        self.pos += 4
        return int(v)

    def f64(self, what: str) -> float:
        self.need(8, what)
        (v,) = F64.unpack_from(self.data, self.pos)
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


def date_from_ms(ms: float, at: int) -> _dt.datetime:
    if not math.isfinite(ms):
        raise AmfError(f"date at offset {at} is {ms} milliseconds, not a finite time")
    try:
        return EPOCH + _dt.timedelta(milliseconds=ms)
    except OverflowError:
        raise AmfError(f"date at offset {at} ({ms} ms since 1970) is out of range") from None
