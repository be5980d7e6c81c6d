"""The RTMP handshake (relay/rtmp/handshake.py), both sides, fed in fuzzer-chosen splits.

Input: `common.split_input` layout; the stream is what the peer sends. Flag bit 0: Relay is
the client (the simulcast pusher reading a remote server's S0+S1+S2) instead of the server;
bit 1: the client sends its C1 in the digest form. Randomness is fixed, so both a split and
a whole feed must give the same bytes out.

Allowed: `HandshakeError`. Findings: any other exception; the server answering anything but
S0+S1+S2 (3073 bytes) once C0+C1 are in, or the client anything but C2 (1536 bytes) once
S0+S1 are in; completion before or after exactly 3073 peer bytes; leftover bytes that are
not exactly what followed those 3073; a split changing the output.
"""

from __future__ import annotations

from fuzz.common import Finding, pieces, split_input
from relay.rtmp.handshake import (
    HANDSHAKE_SIZE,
    ClientHandshake,
    HandshakeError,
    ServerHandshake,
)

PEER_BYTES = 1 + 2 * HANDSHAKE_SIZE  # C0+C1+C2 (or S0+S1+S2)


def _random(n: int) -> bytes:
    return bytes(i & 0xFF for i in range(n))


def _run(stream_pieces: list[bytes], client: bool, digest: bool) -> tuple[bytes, bytes, bool]:
    """(bytes sent back, leftover, completed); raises HandshakeError."""
    side: ServerHandshake | ClientHandshake
    if client:
        side = ClientHandshake(epoch_ms=1234, random_bytes=_random, digest=digest)
        side.initial_bytes()
    else:
        side = ServerHandshake(epoch_ms=1234, random_bytes=_random)
    out = bytearray()
    fed = 0
    for piece in stream_pieces:
        out += side.receive_data(piece)
        fed += len(piece)
        reply_size = HANDSHAKE_SIZE if client else 1 + 2 * HANDSHAKE_SIZE
        expected_out = reply_size if fed >= 1 + HANDSHAKE_SIZE else 0
        if len(out) != expected_out:
            raise Finding(f"{'client' if client else 'server'} sent {len(out)} bytes after "
                          f"{fed} peer bytes; expected {expected_out}")
        if side.complete != (fed >= PEER_BYTES):
            raise Finding(f"complete={side.complete} after {fed} peer bytes")
    return bytes(out), side.take_leftover() if side.complete else b"", side.complete


def check(data: bytes) -> None:
    flags, lengths, stream = split_input(data)
    client, digest = bool(flags & 1), bool(flags & 2)
    try:
        whole = _run([stream] if stream else [], client, digest)
    except HandshakeError:
        whole = None
    try:
        split = _run(list(pieces(stream, lengths)), client, digest)
    except HandshakeError:
        split = None
    if (whole is None) != (split is None):
        raise Finding("a split changed whether the handshake was refused")
    if whole is None or split is None:
        return
    if whole != split:
        raise Finding("a split changed the handshake's output or leftover")
    _, leftover, complete = whole
    if complete and leftover != stream[PEER_BYTES:]:
        raise Finding(f"leftover is {len(leftover)} bytes; {len(stream) - PEER_BYTES} followed "
                      "the handshake")
