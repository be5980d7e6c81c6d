"""The PROXY protocol header (HAProxy's proxy-protocol.txt, versions 1 and 2), sans-IO.

Theory of operation: a TCP load balancer in front of Relay (nginx's `stream` module with
`proxy_protocol on`, HAProxy with `send-proxy`) opens its own connection for each client, so
the socket's peer is the balancer. It states the client's address in a header it writes
before anything else on the connection; Relay reads that header first (before the RTMP
handshake, before TLS for RTMPS) and only from peers it trusts (`--trusted-proxy`), since
from anyone else the header is a lie for the asking.

`ProxyHeaderReader.feed(data)` buffers bytes until the header is complete and returns it
(`ProxyHeader`, with `rest`: the bytes after it, which belong to the next protocol), `None`
while more is needed, or raises `ProxyHeaderError` with a one-line reason. It decides as
early as the bytes allow: a first byte that starts neither signature fails at once, and a
version 1 line without its CRLF within `MAX_V1_HEADER_BYTES` fails there. No I/O, no clock:
the caller bounds the wait (the listener's handshake deadline).

Spec sections cited as "pp 2.1" (version 1, human-readable) and "pp 2.2" (version 2,
binary) of proxy-protocol.txt.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass
from typing import Final

#: pp 2.1: "a 108-byte buffer is always enough to store all the line and a trailing zero":
#: 107 bytes at most, CRLF included (the TCP6 case with the longest addresses).
MAX_V1_HEADER_BYTES: Final = 107
#: pp 2.2: the 12-byte signature, version/command, family/transport, 2-byte length.
V2_FIXED_BYTES: Final = 16
#: Bytes of a version 2 header Relay accepts at most, the fixed part included: the largest
#: address block (AF_UNIX, 216 bytes) plus room for a few TLVs (which Relay skips). A longer
#: header is refused rather than buffered: the length field alone could ask for 64 KiB.
MAX_V2_HEADER_BYTES: Final = 536

V1_PREFIX: Final = b"PROXY "
#: pp 2.2: "\x0D\x0A\x0D\x0A\x00\x0D\x0A\x51\x55\x49\x54\x0A".
V2_SIGNATURE: Final = b"\r\n\r\n\x00\r\nQUIT\n"

_V2_VERSION: Final = 0x2
_V2_LOCAL: Final = 0x0
_V2_PROXY: Final = 0x1
_AF_UNSPEC, _AF_INET, _AF_INET6, _AF_UNIX = 0x0, 0x1, 0x2, 0x3
#: pp 2.2: the address block's size per family (two addresses and, for IP, two ports).
_ADDRESS_BLOCK: Final = {_AF_UNSPEC: 0, _AF_INET: 12, _AF_INET6: 36, _AF_UNIX: 216}


class ProxyHeaderError(Exception):
    """The peer's bytes are not a valid PROXY header; the message says why, in one line,
    without the peer's bytes beyond a short escaped excerpt."""


@dataclass(frozen=True, slots=True)
class ProxyHeader:
    """A parsed header. `source` is the client's (address, port) the balancer states, or
    None when the header says to use the connection's own addresses: version 1 `UNKNOWN`,
    version 2 `LOCAL` (a health check of the balancer's own) or an address family Relay does
    not take a client from (UNSPEC, AF_UNIX)."""

    version: int  # 1 or 2
    source: tuple[str, int] | None
    destination: tuple[str, int] | None
    length: int  # bytes of the header on the wire
    command_local: bool = False  # version 2 LOCAL

    def __bytes__(self) -> bytes:  # the canonical encoding (tests' round trips)
        if self.version == 1:
            if self.source is None or self.destination is None:
                return b"PROXY UNKNOWN\r\n"
            protocol = "TCP6" if ":" in self.source[0] else "TCP4"
            return (f"PROXY {protocol} {self.source[0]} {self.destination[0]} "
                    f"{self.source[1]} {self.destination[1]}\r\n").encode("ascii")
        command = _V2_LOCAL if self.command_local else _V2_PROXY
        if self.source is None or self.destination is None:
            return V2_SIGNATURE + bytes([_V2_VERSION << 4 | command, 0]) + b"\0\0"
        source = ipaddress.ip_address(self.source[0])
        destination = ipaddress.ip_address(self.destination[0])
        family = _AF_INET if source.version == 4 else _AF_INET6
        block = (source.packed + destination.packed
                 + struct.pack(">HH", self.source[1], self.destination[1]))
        return (V2_SIGNATURE + bytes([_V2_VERSION << 4 | command, family << 4 | 0x1])
                + struct.pack(">H", len(block)) + block)


def parse_proxy_header(data: bytes | bytearray | memoryview) -> ProxyHeader | None:
    """The header at the start of `data`, or None when `data` is a valid beginning of one
    that is not complete yet; raises `ProxyHeaderError` as soon as `data` cannot begin one."""
    data = bytes(data[:MAX_V2_HEADER_BYTES])
    if not data:
        return None
    if data[0] == V1_PREFIX[0]:
        return _parse_v1(data)
    if data[0] == V2_SIGNATURE[0]:
        return _parse_v2(data)
    raise ProxyHeaderError(f"the connection does not start with a PROXY header (first byte "
                           f"0x{data[0]:02x}; a PROXY v1 line starts with 'PROXY ', v2 with "
                           f"its 12-byte signature)")


def _excerpt(data: bytes) -> str:
    # At most 40 bytes, every byte outside printable ASCII escaped: safe for one log line.
    shown = data[:40].decode("ascii", "backslashreplace")
    shown = "".join(c if " " <= c <= "~" else f"\\x{ord(c):02x}" for c in shown)
    return shown + ("..." if len(data) > 40 else "")


def _parse_v1(data: bytes) -> ProxyHeader | None:
    prefix = data[:len(V1_PREFIX)]
    if prefix != V1_PREFIX[:len(prefix)]:
        raise ProxyHeaderError(f"not a PROXY header: {_excerpt(prefix)!r}")
    end = data.find(b"\r\n", 0, MAX_V1_HEADER_BYTES)
    if end < 0:
        if len(data) >= MAX_V1_HEADER_BYTES:
            raise ProxyHeaderError(f"PROXY v1 line without CRLF within "
                                   f"{MAX_V1_HEADER_BYTES} bytes (pp 2.1)")
        if b"\n" in data or b"\r" in data[:-1]:
            raise ProxyHeaderError(f"PROXY v1 line with a bare CR or LF: {_excerpt(data)!r}")
        return None
    line = data[:end]
    length = end + 2
    if b"\r" in line or b"\n" in line:  # as when the CR or LF comes before the rest arrives
        raise ProxyHeaderError(f"PROXY v1 line with a bare CR or LF: {_excerpt(line)!r}")
    fields = line.split(b" ")
    if len(fields) >= 2 and fields[1] == b"UNKNOWN":
        # pp 2.1: "the receiver must ignore anything presented before the CRLF" and use
        # the connection's own addresses.
        return ProxyHeader(1, None, None, length)
    if len(fields) != 6 or fields[1] not in (b"TCP4", b"TCP6"):
        raise ProxyHeaderError(f"malformed PROXY v1 line (want 'PROXY TCP4|TCP6 SRC DST "
                               f"SPORT DPORT' or 'PROXY UNKNOWN'): {_excerpt(line)!r}")
    version = 4 if fields[1] == b"TCP4" else 6
    source = _v1_address(fields[2], version)
    destination = _v1_address(fields[3], version)
    return ProxyHeader(1, (source, _v1_port(fields[4])), (destination, _v1_port(fields[5])),
                       length)


def _v1_address(text: bytes, version: int) -> str:
    try:
        address = ipaddress.ip_address(text.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        raise ProxyHeaderError(f"PROXY v1 line with an invalid address: "
                               f"{_excerpt(text)!r}") from None
    if address.version != version:
        raise ProxyHeaderError(f"PROXY v1 line: {address} is not an IPv{version} address "
                               f"(pp 2.1: TCP4 carries IPv4, TCP6 IPv6)")
    return str(address)


def _v1_port(text: bytes) -> int:
    # pp 2.1: a decimal number 0..65535, no leading zero ("0" itself aside).
    if not text.isdigit() or (len(text) > 1 and text[0] == 0x30) or int(text) > 65535:
        raise ProxyHeaderError(f"PROXY v1 line with an invalid port: {_excerpt(text)!r}")
    return int(text)


def _parse_v2(data: bytes) -> ProxyHeader | None:
    signature = data[:len(V2_SIGNATURE)]
    if signature != V2_SIGNATURE[:len(signature)]:
        raise ProxyHeaderError(f"not a PROXY header: {_excerpt(signature)!r}")
    if len(data) < V2_FIXED_BYTES:
        return None
    version, command = data[12] >> 4, data[12] & 0x0F
    if version != _V2_VERSION:
        raise ProxyHeaderError(f"PROXY v2 header with version {version} (pp 2.2: must be 2)")
    if command not in (_V2_LOCAL, _V2_PROXY):
        raise ProxyHeaderError(f"PROXY v2 header with command 0x{command:x} (pp 2.2: LOCAL "
                               f"0x0 or PROXY 0x1)")
    family, transport = data[13] >> 4, data[13] & 0x0F
    if family not in _ADDRESS_BLOCK or transport > 0x2:
        raise ProxyHeaderError(f"PROXY v2 header with address family/transport "
                               f"0x{data[13]:02x} (pp 2.2)")
    (remaining,) = struct.unpack_from(">H", data, 14)
    length = V2_FIXED_BYTES + remaining
    if length > MAX_V2_HEADER_BYTES:
        raise ProxyHeaderError(f"PROXY v2 header of {length} bytes, over the "
                               f"{MAX_V2_HEADER_BYTES} Relay accepts (MAX_V2_HEADER_BYTES)")
    if len(data) < length:
        return None
    if command == _V2_LOCAL:
        # pp 2.2: LOCAL "must" be accepted and the real connection endpoints used; its
        # address block (if any) is skipped.
        return ProxyHeader(2, None, None, length, command_local=True)
    if remaining < _ADDRESS_BLOCK[family]:
        raise ProxyHeaderError(f"PROXY v2 header of family 0x{family:x} with {remaining} "
                               f"bytes of addresses, fewer than its {_ADDRESS_BLOCK[family]}")
    if family == _AF_INET:
        source = str(ipaddress.IPv4Address(data[16:20]))
        destination = str(ipaddress.IPv4Address(data[20:24]))
        ports = struct.unpack_from(">HH", data, 24)
    elif family == _AF_INET6:
        source = str(ipaddress.IPv6Address(data[16:32]))
        destination = str(ipaddress.IPv6Address(data[32:48]))
        ports = struct.unpack_from(">HH", data, 48)
    else:  # UNSPEC or AF_UNIX: no client address to take (pp 2.2: use the socket's)
        return ProxyHeader(2, None, None, length)
    return ProxyHeader(2, (source, ports[0]), (destination, ports[1]), length)


class ProxyHeaderReader:
    """Buffers a connection's first bytes until its PROXY header is complete.

    `feed` returns the header once (then `rest` holds what followed it), None while more is
    needed, and raises `ProxyHeaderError` when the bytes cannot be a header. It buffers at
    most `MAX_V2_HEADER_BYTES` plus one read."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self.header: ProxyHeader | None = None
        self.rest = b""

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def feed(self, data: bytes | bytearray | memoryview) -> ProxyHeader | None:
        if self.header is not None:
            raise RuntimeError("the PROXY header is complete; feed the rest elsewhere")
        self._buffer += data
        header = parse_proxy_header(self._buffer)
        if header is None:
            return None
        self.header = header
        self.rest = bytes(self._buffer[header.length:])
        self._buffer.clear()
        return header


def looks_like_proxy_header(first: int) -> bool:
    """Whether a connection's first byte starts a PROXY header ('P' or v2's CR). Neither
    can start an RTMP handshake (C0 is 3, or 6 for RTMPE) nor a TLS record (22)."""
    return first in (V1_PREFIX[0], V2_SIGNATURE[0])
