"""An MSB-first bit reader with Exp-Golomb codes, for parameter sets and AudioSpecificConfig.

Parameter sets are parsed once per stream (not per frame), so this favours clarity over speed:
the whole input becomes one Python int and each read is a shift and a mask.
"""

from __future__ import annotations

from relay.media.units import MediaFormatError

#: H.264 7.4.1 / H.265 7.4.2: inside a NAL unit, 0x000003 is an emulation prevention byte
#: pattern; the 0x03 is dropped to recover the RBSP.
_EMULATION_PREVENTION = b"\x00\x00\x03"
#: Bits an Exp-Golomb code's prefix may span: 31 zeros and the stop bit.
_EXP_GOLOMB_WINDOW = 32


def nal_to_rbsp(nal: bytes) -> bytes:
    """Drop the emulation prevention bytes of a NAL unit (H.264 7.3.1, H.265 7.3.1.1)."""
    if _EMULATION_PREVENTION not in nal:
        return nal
    out = bytearray()
    start = 0
    while True:
        hit = nal.find(_EMULATION_PREVENTION, start)
        if hit < 0:
            out += nal[start:]
            return bytes(out)
        out += nal[start : hit + 2]
        start = hit + 3


class BitReader:
    """Reads fixed-width fields and Exp-Golomb codes (H.264 9.1, H.265 9.2) from bytes.

    Every read past the end raises `MediaFormatError` naming `what` (e.g. "H.264 SPS") and the
    bit position, so a truncated structure never surfaces as an IndexError.
    """

    __slots__ = ("_pos", "_size", "_value", "what")

    def __init__(self, data: bytes, what: str) -> None:
        self.what = what
        self._value = int.from_bytes(data, "big")
        self._size = len(data) * 8
        self._pos = 0

    @property
    def position(self) -> int:
        """Bits read so far."""
        return self._pos

    @property
    def bits_left(self) -> int:
        return self._size - self._pos

    def u(self, n: int) -> int:
        """An n-bit unsigned field, most significant bit first."""
        end = self._pos + n
        if end > self._size:
            raise MediaFormatError(
                f"{self.what} is truncated: needed {n} more bits at bit {self._pos} "
                f"of {self._size}"
            )
        self._pos = end
        return (self._value >> (self._size - end)) & ((1 << n) - 1)

    def flag(self) -> bool:
        return self.u(1) == 1

    def skip(self, n: int) -> None:
        self.u(n)

    def ue(self) -> int:
        """ue(v): unsigned Exp-Golomb. Codes longer than 32 bits (values >= 2**32 - 1) are
        rejected; no syntax element in either spec reaches them."""
        left = self._size - self._pos
        # Only the next 32 bits decide (at most 31 zeros, then the stop bit): reading just
        # those keeps a code's cost independent of what follows it. Masking all that is left
        # cost one input-sized integer per code, ~90 ms for an H.265 SPS padded to 64 KiB.
        window = min(left, _EXP_GOLOMB_WINDOW)
        head = (self._value >> (left - window)) & ((1 << window) - 1)
        if head == 0:
            rest = self._value & ((1 << left) - 1)  # once, on the way to an error
            if rest == 0:
                raise MediaFormatError(
                    f"{self.what} is truncated: Exp-Golomb code at bit {self._pos} has no "
                    "stop bit"
                )
            raise MediaFormatError(
                f"{self.what}: Exp-Golomb code at bit {self._pos} has "
                f"{left - rest.bit_length()} leading zeros (more than 31)"
            )
        zeros = window - head.bit_length()
        self._pos += zeros
        return self.u(zeros + 1) - 1

    def se(self) -> int:
        """se(v): signed Exp-Golomb, 1 -> 1, 2 -> -1, 3 -> 2, ..."""
        k = self.ue()
        return (k + 1) // 2 if k & 1 else -(k // 2)

    def ue_max(self, limit: int, name: str) -> int:
        """ue(v) that must lie in 0..limit (the spec's range for `name`)."""
        value = self.ue()
        if value > limit:
            raise MediaFormatError(f"{self.what}: {name} = {value} is out of range 0..{limit}")
        return value

    def se_range(self, low: int, high: int, name: str) -> int:
        """se(v) that must lie in low..high."""
        value = self.se()
        if not low <= value <= high:
            raise MediaFormatError(
                f"{self.what}: {name} = {value} is out of range {low}..{high}"
            )
        return value
