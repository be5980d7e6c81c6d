"""What test_bitreader.py shares with other test modules: kept here so no test module imports
another."""

from __future__ import annotations


class BitWriter:
    """MSB-first bit writer with Exp-Golomb codes (H.264 9.1), for building test inputs."""

    def __init__(self) -> None:
        self._value = 0
        self._size = 0

    @property
    def size(self) -> int:
        return self._size

    def u(self, n: int, value: int) -> BitWriter:
        assert 0 <= value < (1 << n) or (n == 0 and value == 0), (n, value)
        self._value = (self._value << n) | value
        self._size += n
        return self

    def flag(self, value: bool) -> BitWriter:
        return self.u(1, int(value))

    def ue(self, value: int) -> BitWriter:
        code = value + 1
        length = code.bit_length()
        return self.u(length - 1, 0).u(length, code)

    def se(self, value: int) -> BitWriter:
        return self.ue(2 * value - 1 if value > 0 else -2 * value)

    def append(self, other: BitWriter) -> BitWriter:
        """Everything `other` holds, bit for bit."""
        return self.u(other._size, other._value)

    def bits(self, text: str) -> BitWriter:
        """Literal bits, e.g. "0110"."""
        for char in text:
            self.u(1, int(char))
        return self

    def trailing_bits(self) -> BitWriter:
        """rbsp_trailing_bits(): a one, then zeros to the byte boundary."""
        self.u(1, 1)
        return self.u(-self._size % 8, 0)

    def to_bytes(self) -> bytes:
        assert self._size % 8 == 0, f"{self._size} bits is not whole bytes"
        return self._value.to_bytes(self._size // 8, "big")


def add_emulation_prevention(rbsp: bytes) -> bytes:
    """Insert 0x03 wherever two zero bytes are followed by a byte <= 3 (H.264 7.4.1)."""
    out = bytearray()
    zeros = 0
    for byte in rbsp:
        if zeros >= 2 and byte <= 3:
            out.append(3)
            zeros = 0
        out.append(byte)
        zeros = zeros + 1 if byte == 0 else 0
    return bytes(out)
