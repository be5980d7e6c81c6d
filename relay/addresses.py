"""What per-address limits count: one peer's share of the address space.

Every limit "per address" in Relay (RTMP connection slots, the stream-key throttle, HTTP
connections, slowed Basic-auth failures) counts an `address_group`, not a raw address: an
IPv6 subscriber usually holds a whole /64 and can rotate through it at will, so IPv6 counts
per /64; an IPv4-mapped IPv6 address is its IPv4 address.
"""

from __future__ import annotations

import ipaddress

#: IPv6 addresses are counted per network of this prefix length (one subscriber's usual share).
IPV6_GROUP_PREFIX = 64


def address_group(address: str) -> str:
    """The unit per-address limits count in: an IPv4 address, or an IPv6 /64.

    `address` is a socket's host string; anything that does not parse (a Unix socket, "?")
    is its own group, so it is still counted, never merged with others."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])  # drop an IPv6 zone index
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        network = ipaddress.IPv6Network((int(ip), IPV6_GROUP_PREFIX), strict=False)
        return str(network)
    return str(ip)
