"""The PROXY protocol parser (relay/proxy_protocol.py): nginx's real bytes, the spec's
cases both versions, fed whole, byte by byte and with what follows kept, and round trips
under arbitrary splits (hypothesis)."""

from __future__ import annotations

import ipaddress
import struct
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relay.proxy_protocol import (
    MAX_V1_HEADER_BYTES,
    MAX_V2_HEADER_BYTES,
    V2_SIGNATURE,
    ProxyHeader,
    ProxyHeaderError,
    ProxyHeaderReader,
    looks_like_proxy_header,
    parse_proxy_header,
)

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "proxy_protocol"


def feed_whole(data: bytes) -> tuple[ProxyHeader | None, bytes]:
    reader = ProxyHeaderReader()
    return reader.feed(data), reader.rest


def feed_bytewise(data: bytes) -> tuple[ProxyHeader | None, bytes]:
    reader = ProxyHeaderReader()
    for index in range(len(data)):
        header = reader.feed(data[index:index + 1])
        if header is not None:
            return header, reader.rest + data[index + 1:]
    return None, b""


@pytest.mark.parametrize("feed", [feed_whole, feed_bytewise])
@pytest.mark.parametrize(("name", "source", "destination", "rest"), [
    ("nginx_1.22_tcp4_then_rtmp_c0.bin", ("127.0.0.2", 32803), ("127.0.0.1", 39079), b"\x03"),
    ("nginx_1.22_tcp4_then_tls.bin", ("127.0.0.1", 40473), ("127.0.0.1", 39079), b"\x16"),
])
def test_nginx_bytes(feed, name: str, source: tuple[str, int],
                     destination: tuple[str, int], rest: bytes) -> None:
    data = (VECTORS / name).read_bytes()
    header, left = feed(data)
    assert header is not None
    assert (header.version, header.source, header.destination) == (1, source, destination)
    assert left == rest  # the client's first byte stays for the next protocol
    assert bytes(header) + left == data  # nginx writes the canonical form


@pytest.mark.parametrize("feed", [feed_whole, feed_bytewise])
def test_trailing_bytes_stay_buffered(feed) -> None:
    follow = b"\x03" + bytes(1536) + b"more"
    for header in (b"PROXY TCP6 2001:db8::1 ::1 65535 0\r\n",
                   bytes(ProxyHeader(2, ("10.1.2.3", 5), ("10.0.0.1", 1935), 28))):
        parsed, left = feed(header + follow)
        assert parsed is not None and parsed.length == len(header)
        assert left == follow


def test_v1_unknown_uses_the_socket_address() -> None:
    for line in (b"PROXY UNKNOWN\r\n", b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n"):
        header = parse_proxy_header(line + b"x")
        assert header is not None and header.source is None and header.length == len(line)


def test_v1_longest_line_is_accepted_and_one_more_byte_is_not() -> None:
    six = b"ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"
    tcp6 = b"PROXY TCP6 " + six + b" " + six + b" 65535 65535\r\n"
    header = parse_proxy_header(tcp6)
    assert header is not None and header.source == (six.decode(), 65535)
    # pp 2.1's worst case: UNKNOWN with the longest addresses, which the receiver ignores.
    longest = b"PROXY UNKNOWN " + six + b" " + six + b" 65535 65535\r\n"
    assert len(longest) == MAX_V1_HEADER_BYTES
    header = parse_proxy_header(longest)
    assert header is not None and header.source is None and header.length == len(longest)
    with pytest.raises(ProxyHeaderError, match="CRLF within 107"):
        parse_proxy_header(longest[:-2] + b" \r\n")
    # Without a CRLF, more is needed up to the bound, never past it.
    assert parse_proxy_header(b"PROXY TCP4 " + b"1" * (MAX_V1_HEADER_BYTES - 12)) is None
    with pytest.raises(ProxyHeaderError):
        parse_proxy_header(b"PROXY TCP4 " + b"1" * (MAX_V1_HEADER_BYTES - 11))


@pytest.mark.parametrize("line", [
    b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n",  # a field too many
    b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",
    b"PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n",  # two spaces
    b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n",  # leading zero
    b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n",
    b"PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n",
    b"PROXY TCP4 ::1 5.6.7.8 1 2\r\n",  # IPv6 under TCP4
    b"PROXY TCP6 1.2.3.4 ::1 1 2\r\n",
    b"PROXY TCP4 1.2.3.256 5.6.7.8 1 2\r\n",
    b"PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n",
    b"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n",
    b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",  # bare LF
    b"PROXY UNKNOWN \r\r\n",  # a bare CR, refused whether or not the CRLF came with it
    b"PROXY UNKNOWN \n\r\n",
    b"PROXX TCP4",
    b"proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n",
])
def test_v1_malformed(line: bytes) -> None:
    with pytest.raises(ProxyHeaderError) as caught:
        parse_proxy_header(line)
    assert "\n" not in str(caught.value) and len(str(caught.value)) < 200


@pytest.mark.parametrize("first", [b"\x03", b"\x06", b"\x16", b"G", b"\x00"])
def test_other_protocols_fail_at_the_first_byte(first: bytes) -> None:
    assert not looks_like_proxy_header(first[0])
    with pytest.raises(ProxyHeaderError, match="does not start with a PROXY header"):
        parse_proxy_header(first)


def v2(command: int, family: int, payload: bytes, length: int | None = None) -> bytes:
    return (V2_SIGNATURE + bytes([0x20 | command, family])
            + struct.pack(">H", len(payload) if length is None else length) + payload)


def test_v2_inet_and_inet6_with_tlvs_skipped() -> None:
    tlv = b"\x01\x00\x02h2"  # PP2_TYPE_ALPN
    block = bytes([192, 0, 2, 7, 10, 0, 0, 1]) + struct.pack(">HH", 50000, 1935)
    header = parse_proxy_header(v2(1, 0x11, block + tlv) + b"\x03")
    assert header == ProxyHeader(2, ("192.0.2.7", 50000), ("10.0.0.1", 1935), 16 + 17)
    six = (ipaddress.IPv6Address("2001:db8::7").packed + ipaddress.IPv6Address("::1").packed
           + struct.pack(">HH", 1, 2))
    header = parse_proxy_header(v2(1, 0x21, six))
    assert header is not None and header.source == ("2001:db8::7", 1)


def test_v2_local_and_unspec_use_the_socket_address() -> None:
    local = parse_proxy_header(v2(0, 0x11, bytes(12)))  # a balancer's own health check
    assert local is not None and local.command_local and local.source is None
    assert parse_proxy_header(v2(0, 0x00, b"")) == ProxyHeader(2, None, None, 16, True)
    unspec = parse_proxy_header(v2(1, 0x00, b""))
    assert unspec is not None and unspec.source is None and not unspec.command_local
    unix = parse_proxy_header(v2(1, 0x31, bytes(216)))
    assert unix is not None and unix.source is None


@pytest.mark.parametrize(("data", "reason"), [
    (v2(1, 0x11, bytes(11)), "fewer than its 12"),
    (v2(1, 0x21, bytes(12)), "fewer than its 36"),
    (v2(2, 0x11, bytes(12)), "command 0x2"),
    (V2_SIGNATURE + b"\x11\x11\x00\x0c" + bytes(12), "version 1"),
    (v2(1, 0x41, bytes(12)), "family/transport 0x41"),
    (v2(1, 0x13, bytes(12)), "family/transport 0x13"),
    (v2(1, 0x11, b"", length=MAX_V2_HEADER_BYTES - 15), "over the 536"),
    (b"\r\n\r\n\x00\r\nQUIX", "not a PROXY header"),
])
def test_v2_malformed(data: bytes, reason: str) -> None:
    with pytest.raises(ProxyHeaderError, match=reason):
        parse_proxy_header(data)


def test_v2_waits_for_its_length_and_no_longer() -> None:
    data = v2(1, 0x11, bytes(12) + bytes(100))
    for end in range(len(data)):
        assert parse_proxy_header(data[:end]) is None
    header = parse_proxy_header(data)
    assert header is not None and header.length == len(data)
    longest = v2(1, 0x11, bytes(MAX_V2_HEADER_BYTES - 16))
    assert parse_proxy_header(longest) is not None


ipv4 = st.builds(lambda n: str(ipaddress.IPv4Address(n)), st.integers(0, 2**32 - 1))
ipv6 = st.builds(lambda n: str(ipaddress.IPv6Address(n)), st.integers(0, 2**128 - 1))
ports = st.integers(0, 65535)


@st.composite
def headers(draw: st.DrawFn) -> ProxyHeader:
    version = draw(st.sampled_from([1, 2]))
    if draw(st.booleans()):
        local = version == 2 and draw(st.booleans())
        return ProxyHeader(version, None, None, 0, command_local=local)
    addresses = draw(st.sampled_from([ipv4, ipv6]))
    return ProxyHeader(version, (draw(addresses), draw(ports)),
                       (draw(addresses), draw(ports)), 0)


@given(headers(), st.binary(max_size=64), st.lists(st.integers(1, 40), max_size=20))
def test_round_trip_under_any_split(header: ProxyHeader, rest: bytes,
                                    cuts: list[int]) -> None:
    wire = bytes(header)
    data = wire + rest
    reader = ProxyHeaderReader()
    parsed = None
    position = 0
    for size in [*cuts, len(data)]:
        chunk = data[position:position + size]
        position += len(chunk)
        parsed = reader.feed(chunk)
        if parsed is not None:
            break
    assert parsed is not None
    assert (parsed.version, parsed.source, parsed.destination, parsed.command_local) == (
        header.version, header.source, header.destination, header.command_local)
    assert parsed.length == len(wire)
    assert reader.rest + data[position:] == rest
    assert bytes(parsed) == wire


@given(st.binary(max_size=700))
def test_any_bytes_give_a_header_more_or_a_one_line_error(data: bytes) -> None:
    try:
        header = parse_proxy_header(data)
    except ProxyHeaderError as exc:
        assert "\n" not in str(exc) and len(str(exc)) < 300
        return
    if header is not None:
        assert header.length <= min(len(data), MAX_V2_HEADER_BYTES)
    else:
        assert len(data) < MAX_V2_HEADER_BYTES
