"""Messages a hostile peer sends, shared by the unit tests and the real-socket tests."""

from __future__ import annotations

from relay.rtmp import amf0


def shared_reference_connect(levels: int = 40) -> bytes:
    """The ~1 KB `connect` of issue 12, as an AMF0 command message payload.

    x0 = {}, x(k) = {a: x(k-1), b: x(k-1)} through AMF0 references (marker 0x07, AMF0 2.9),
    and app = x(levels): about 20 bytes a level, 2**(levels + 2) nodes when walked as a tree.
    The command object is AMF0 reference 0, x0 reference 1, x(k) reference k + 1."""

    def key(name: str) -> bytes:
        return len(name).to_bytes(2, "big") + name.encode()

    def ref(index: int) -> bytes:
        return b"\x07" + index.to_bytes(2, "big")

    body = amf0.encode("connect", 1.0) + b"\x03" + key("x0") + b"\x03\x00\x00\x09"
    for k in range(1, levels + 1):
        body += key(f"x{k}") + b"\x03" + key("a") + ref(k) + key("b") + ref(k) + b"\x00\x00\x09"
    return body + key("app") + ref(levels + 1) + b"\x00\x00\x09"
