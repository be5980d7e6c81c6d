"""The RTMP handshake, server and client side, sans-IO (RTMP 1.0 spec, section 5.2).

Theory of operation
-------------------
Each side sends a one-byte version (C0/S0, always 3: RTMP 5.2.2) and a 1536-byte packet
(C1/S1: time, four zero bytes, 1528 random bytes: RTMP 5.2.3), then echoes the peer's
packet back (C2/S2: the peer's time, the time we read it, the peer's random bytes:
RTMP 5.2.4). The server answers S0+S1+S2 at once when C0+C1 are in and is done when C2
arrives; the client sends C2 when S0+S1 are in and is done when S2 arrives.

Flash-era encoders and ffmpeg send the "digest" (a.k.a. complex) form instead, marked by a
non-zero version in C1 bytes 4..7. It is not in the RTMP 1.0 spec; the facts used here are
from the public descriptions of it (the clean-room "RTMPE" specification written from
rtmpdump, lkcl.net/rtmp/RTMPE.txt, and the crtmpserver-derived write-ups of C1's layout):

* The 1528 bytes after time and version are two 764-byte blocks. The digest block holds a
  4-byte offset field, then ``offset`` filler bytes, then the 32-byte digest. In scheme 0
  the digest block is the second one and the offset field is bytes 8..11; in scheme 1 it
  is the first one and the field is bytes 772..775. The digest sits at
  ``sum(field bytes) % 728 + field position + 4`` (728 = 764 - 4 - 32).
* The digest is HMAC-SHA256 over the 1536 bytes minus the 32 digest bytes, keyed with
  the first 30 bytes of the player key ("Genuine Adobe Flash Player 001") for C1, or the
  first 36 bytes of the server key ("Genuine Adobe Flash Media Server 001") for S1.
* The full keys append the same 32 bytes to those strings (``_KEY_SUFFIX``). S2 is 1504
  random bytes followed by HMAC-SHA256(key=HMAC-SHA256(full server key, C1's digest),
  the 1504 bytes); a digest-form C2 is built the same way from S1's digest with the full
  player key.

A client that marks C1 as digest form but whose digest does not validate at either scheme
gets the plain answer: such clients exist and accept it. C2 is never checked: digest-form
clients send a signed C2 rather than an echo, and the echo carries no security.

Neither side reads a clock (``epoch_ms`` is the time field the caller chooses) or draws
randomness except through ``random_bytes``. Nothing past C2 (or S2) is parsed: those bytes
start the chunk stream and are handed back by ``take_leftover`` (so are bytes fed after
completion, until taken). Before completion at most C0+C1+C2 plus the rest of the call that
completes the handshake is buffered.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import os
import struct
from collections.abc import Callable
from typing import Final

__all__ = [
    "C0_VERSION",
    "DIGEST_SIZE",
    "FMS_DIGEST_KEY",
    "FMS_KEY",
    "FP_DIGEST_KEY",
    "FP_KEY",
    "HANDSHAKE_SIZE",
    "RTMPE_VERSION",
    "ClientHandshake",
    "HandshakeError",
    "ServerHandshake",
    "digest_position",
    "find_digest",
]

C0_VERSION: Final = 3  # RTMP 5.2.2: the only version defined for plain RTMP
RTMPE_VERSION: Final = 6  # encrypted RTMP (RTMPE); Relay does not speak it
HANDSHAKE_SIZE: Final = 1536  # RTMP 5.2.3
DIGEST_SIZE: Final = 32  # HMAC-SHA256 output

_RANDOM_SIZE: Final = HANDSHAKE_SIZE - 8  # C1/S1 random field (RTMP 5.2.3)
_SIGNED_RANDOM_SIZE: Final = HANDSHAKE_SIZE - DIGEST_SIZE  # digest-form C2/S2: 1504 + 32
_BLOCK_SIZE: Final = 764  # each half of the digest-form random field
_DIGEST_OFFSET_MODULUS: Final = _BLOCK_SIZE - 4 - DIGEST_SIZE  # 728
_OFFSET_FIELDS: Final = (8, 8 + _BLOCK_SIZE)  # scheme 0: bytes 8..11, scheme 1: 772..775

# The 32 bytes both full keys end with (RTMPE.txt "RandomCrud").
_KEY_SUFFIX: Final = bytes.fromhex(
    "f0eec24a8068bee82e00d0d1029e7e576eec5d2d29806fab93b8e636cfeb31ae"
)
FP_KEY: Final = b"Genuine Adobe Flash Player 001" + _KEY_SUFFIX  # 62 bytes
FMS_KEY: Final = b"Genuine Adobe Flash Media Server 001" + _KEY_SUFFIX  # 68 bytes
FP_DIGEST_KEY: Final = FP_KEY[:30]  # signs C1
FMS_DIGEST_KEY: Final = FMS_KEY[:36]  # signs S1

# Version fields for the digest form: any non-zero value marks it; clients that verify S1
# (e.g. players) expect a server version whose first byte is at least 3.
_SERVER_VERSION: Final = bytes((4, 5, 0, 1))
_CLIENT_VERSION: Final = bytes((10, 0, 32, 18))
_ZERO_VERSION: Final = bytes(4)

_U32 = struct.Struct(">I")


class HandshakeError(ValueError):
    """The peer's handshake bytes are not acceptable; the message says why, in one line."""


def digest_position(packet: bytes, scheme: int) -> int:
    """Where the 32-byte digest of a digest-form C1/S1 sits under ``scheme`` (0 or 1)."""
    field = _OFFSET_FIELDS[scheme]
    return sum(packet[field : field + 4]) % _DIGEST_OFFSET_MODULUS + field + 4


def _hmac_sha256(key: bytes, message: bytes) -> bytes:
    return hmac.new(key, message, hashlib.sha256).digest()


def _packet_digest(packet: bytes, position: int, key: bytes) -> bytes:
    return _hmac_sha256(key, packet[:position] + packet[position + DIGEST_SIZE :])


def find_digest(packet: bytes, key: bytes) -> tuple[int, bytes] | None:
    """Return (scheme, digest) if ``packet`` carries a valid digest under ``key``, else None."""
    for scheme in (0, 1):
        position = digest_position(packet, scheme)
        digest = packet[position : position + DIGEST_SIZE]
        if hmac.compare_digest(_packet_digest(packet, position, key), digest):
            return scheme, digest
    return None


def _with_digest(packet: bytes, scheme: int, key: bytes) -> bytes:
    """``packet`` with its digest (under ``scheme`` and ``key``) written in place."""
    position = digest_position(packet, scheme)
    digest = _packet_digest(packet, position, key)
    return packet[:position] + digest + packet[position + DIGEST_SIZE :]


def _signed_echo(peer_digest: bytes, full_key: bytes, random: bytes) -> bytes:
    """Digest-form C2/S2: random bytes + HMAC(HMAC(full key, peer's digest), random)."""
    return random + _hmac_sha256(_hmac_sha256(full_key, peer_digest), random)


def _plain_echo(peer_packet: bytes, epoch_ms: int) -> bytes:
    """RTMP 5.2.4: the peer's time, the time we read its packet, the peer's random bytes."""
    return peer_packet[:4] + _U32.pack(epoch_ms) + peer_packet[8:]


def _check_version(byte: int, side: str) -> None:
    if byte == C0_VERSION:
        return
    if byte == RTMPE_VERSION:
        raise HandshakeError(
            f"{side} version 6 asks for RTMPE (encrypted RTMP), which is not supported; "
            "use rtmp:// or rtmps://"
        )
    hint = " (a TLS ClientHello: use the rtmps port)" if byte == 0x16 else ""
    raise HandshakeError(f"{side} version byte 0x{byte:02x} is not RTMP version 3{hint}")


class _Step(enum.Enum):
    VERSION = "version"  # C0 / S0
    HELLO = "hello"  # C1 / S1
    ECHO = "echo"  # C2 / S2
    DONE = "done"


# One transition table for both sides: step -> (bytes it consumes, next step).
_TRANSITIONS: Final = {
    _Step.VERSION: (1, _Step.HELLO),
    _Step.HELLO: (HANDSHAKE_SIZE, _Step.ECHO),
    _Step.ECHO: (HANDSHAKE_SIZE, _Step.DONE),
}


class _Handshake:
    """Shared driver: buffers input and runs each step's handler as its bytes arrive."""

    def __init__(self, epoch_ms: int, random_bytes: Callable[[int], bytes]) -> None:
        self._epoch_ms = epoch_ms & 0xFFFFFFFF  # a 32-bit wrapping field (RTMP 5.2.3)
        self._random_bytes = random_bytes
        self._step = _Step.VERSION
        self._buffer = bytearray()
        self._leftover = b""
        self.complete = False

    def _random(self, n: int) -> bytes:
        data = self._random_bytes(n)
        if len(data) != n:
            raise ValueError(f"random_bytes({n}) returned {len(data)} bytes")
        return data

    def _drive(self, data: bytes) -> bytes:
        if self.complete:
            # Bytes fed after completion belong to the chunk stream too: keep them with
            # the leftover for the caller to take (they are never parsed here).
            self._leftover += data
            return b""
        self._buffer += data
        out = bytearray()
        while self._step is not _Step.DONE:
            size, next_step = _TRANSITIONS[self._step]
            if len(self._buffer) < size:
                break
            chunk = bytes(self._buffer[:size])
            del self._buffer[:size]
            out += self._handle(self._step, chunk)
            self._step = next_step
        if self._step is _Step.DONE:
            self.complete = True
            self._leftover = bytes(self._buffer)
            self._buffer = bytearray()
        return bytes(out)

    def _handle(self, step: _Step, chunk: bytes) -> bytes:
        raise NotImplementedError

    def take_leftover(self) -> bytes:
        """Bytes that arrived after the peer's last handshake packet; clears them."""
        leftover, self._leftover = self._leftover, b""
        return leftover


class ServerHandshake(_Handshake):
    """Server side: feed C0, C1, C2 in any split; returns S0+S1+S2 once C0+C1 are in."""

    def __init__(
        self, *, epoch_ms: int = 0, random_bytes: Callable[[int], bytes] = os.urandom
    ) -> None:
        super().__init__(epoch_ms, random_bytes)
        self.digest = False  # the client used the digest form and its C1 digest validated
        self.digest_scheme: int | None = None

    def receive_data(self, data: bytes) -> bytes:
        """Feed bytes from the client; return bytes to send (possibly empty)."""
        return self._drive(data)

    def _handle(self, step: _Step, chunk: bytes) -> bytes:
        if step is _Step.VERSION:
            _check_version(chunk[0], "C0")
            return b""
        if step is _Step.HELLO:
            return bytes((C0_VERSION,)) + self._answer(chunk)
        return b""  # C2: accepted as is (see the module docstring)

    def _answer(self, c1: bytes) -> bytes:
        time = _U32.pack(self._epoch_ms)
        found = find_digest(c1, FP_DIGEST_KEY) if c1[4:8] != _ZERO_VERSION else None
        if found is None:
            s1 = time + _ZERO_VERSION + self._random(_RANDOM_SIZE)
            return s1 + _plain_echo(c1, self._epoch_ms)
        scheme, c1_digest = found
        self.digest = True
        self.digest_scheme = scheme
        s1 = time + _SERVER_VERSION + self._random(_RANDOM_SIZE)
        s1 = _with_digest(s1, scheme, FMS_DIGEST_KEY)  # same scheme as the client's
        return s1 + _signed_echo(c1_digest, FMS_KEY, self._random(_SIGNED_RANDOM_SIZE))


class ClientHandshake(_Handshake):
    """Client side: send ``initial_bytes()``, feed S0, S1, S2; returns C2 once S1 is in."""

    def __init__(
        self,
        *,
        epoch_ms: int = 0,
        random_bytes: Callable[[int], bytes] = os.urandom,
        digest: bool = False,
    ) -> None:
        super().__init__(epoch_ms, random_bytes)
        self.digest = digest  # send C1 in the digest form
        self.server_digest = False  # S1 carried a valid server digest
        self._c1: bytes | None = None

    def initial_bytes(self) -> bytes:
        """C0+C1. Call once, before ``receive_data``; later calls return the same bytes."""
        if self._c1 is None:
            time = _U32.pack(self._epoch_ms)
            if self.digest:
                c1 = time + _CLIENT_VERSION + self._random(_RANDOM_SIZE)
                self._c1 = _with_digest(c1, 0, FP_DIGEST_KEY)
            else:
                self._c1 = time + _ZERO_VERSION + self._random(_RANDOM_SIZE)
        return bytes((C0_VERSION,)) + self._c1

    def receive_data(self, data: bytes) -> bytes:
        """Feed bytes from the server; return C2 once S0+S1 are in, else b""."""
        if self._c1 is None:
            raise RuntimeError("call initial_bytes() and send C0+C1 before receive_data")
        return self._drive(data)

    def _handle(self, step: _Step, chunk: bytes) -> bytes:
        if step is _Step.VERSION:
            _check_version(chunk[0], "S0")
            return b""
        if step is _Step.HELLO:
            found = find_digest(chunk, FMS_DIGEST_KEY) if self.digest else None
            if found is None:
                return _plain_echo(chunk, self._epoch_ms)
            self.server_digest = True
            return _signed_echo(found[1], FP_KEY, self._random(_SIGNED_RANDOM_SIZE))
        return b""  # S2: not checked, as the server does not check C2
