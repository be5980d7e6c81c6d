"""What per-address limits count: an IPv4 address, or an IPv6 /64."""

from __future__ import annotations

import pytest

from relay.addresses import address_group


@pytest.mark.parametrize(("host", "group"), [
    ("192.0.2.7", "192.0.2.7"),
    ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
    ("2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::/64"),
    ("2001:db8:1:3::1", "2001:db8:1:3::/64"),
    ("::ffff:192.0.2.7", "192.0.2.7"),  # IPv4-mapped: its IPv4 address
    ("fe80::1%eth0", "fe80::/64"),  # the zone index is dropped
    ("/run/relay.sock", "/run/relay.sock"),  # not an address: its own group
    ("", ""),
])
def test_address_group(host: str, group: str) -> None:
    assert address_group(host) == group
