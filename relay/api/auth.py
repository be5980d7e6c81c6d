"""Slowing down failed API authentication, per client address.

A wrong token id or secret is answered 401 only after a delay, and the failures of one
address are answered one per `failure_delay` seconds: the first waits `failure_delay`, a
second one sent meanwhile waits twice as long, and so on. However many connections it
opens, a client guessing secrets learns at most one answer per `failure_delay` seconds per
address. A request whose credentials are right is never delayed. Addresses are counted as a
host owns them: an IPv4 address, or an IPv6 /64 (one subscriber's prefix, rfc6177), so
rotating through one's own IPv6 addresses does not multiply the rate.

While `max_slowed_per_address` failures of an address are waiting, further requests with
credentials from that address are refused at once with 429 and Retry-After, before their
credentials are checked: answering them without the delay, even with "wrong", would let a
client test guesses as fast as it likes. The cost is that an honest client behind the same
address (a NAT, a /64) is refused too while someone there keeps failing; clients at other
addresses are not. When `max_slowed_total` failures wait across all addresses, an address
with a failure waiting is refused the same way. The table has an entry only for an address
with a failure waiting, so it never holds more entries than requests held.

Theory of operation: `FailedAuthQueue` is the bookkeeping, with no I/O and no clock (the
caller passes `now`); BasicAuthMiddleware (middleware.py) asks `refuses(key)` before checking
credentials, and on a failure sleeps until `failed(key, now)` and then calls `released(key)`.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

#: Seconds a failed authentication waits before its 401.
AUTH_FAILURE_DELAY = 1.0
#: Failed authentications from one address (an IPv6 /64) waiting at once; beyond, 429.
AUTH_MAX_SLOWED_PER_ADDRESS = 4
#: Failed authentications from all addresses waiting at once; beyond, 429.
AUTH_MAX_SLOWED_TOTAL = 256
#: IPv6 addresses are counted per prefix of this length.
IPV6_PREFIX = 64


@dataclass(frozen=True, slots=True)
class AuthLimits:
    failure_delay: float = AUTH_FAILURE_DELAY
    max_slowed_per_address: int = AUTH_MAX_SLOWED_PER_ADDRESS
    max_slowed_total: int = AUTH_MAX_SLOWED_TOTAL


def address_key(host: str | None) -> str:
    """The unit a client's failures are counted in: its IPv4 address or its IPv6 /64."""
    if not host:
        return "-"
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return host[:64]  # not an IP address (a Unix socket): one shared key per name
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, IPV6_PREFIX), strict=False))
    return str(ip)


@dataclass(slots=True)
class _Waiting:
    count: int = 0  # failures of this address waiting for their answer
    last_release: float = 0.0  # when the latest of them is answered


class FailedAuthQueue:
    """Failed authentications waiting for their 401, per address key."""

    def __init__(self, limits: AuthLimits) -> None:
        self.limits = limits
        self._waiting: dict[str, _Waiting] = {}
        self._total = 0
        self.refused = 0  # requests refused with 429 (for metrics and tests)
        self.slowed = 0  # failures answered after a delay

    def refuses(self, key: str) -> bool:
        """Whether a request with credentials from `key` is refused before they are checked."""
        waiting = self._waiting.get(key)
        if waiting is None:
            return False
        full = waiting.count >= self.limits.max_slowed_per_address or \
            self._total >= self.limits.max_slowed_total
        if full:
            self.refused += 1
        return full

    def failed(self, key: str, now: float) -> float:
        """A request from `key` failed authentication at `now`: when to answer it."""
        waiting = self._waiting.setdefault(key, _Waiting(last_release=now))
        waiting.count += 1
        self._total += 1
        self.slowed += 1
        waiting.last_release = max(waiting.last_release, now) + self.limits.failure_delay
        return waiting.last_release

    def released(self, key: str) -> None:
        """The failure's answer went out (or its request was cancelled)."""
        waiting = self._waiting[key]
        waiting.count -= 1
        self._total -= 1
        if waiting.count == 0:
            del self._waiting[key]

    def waiting(self, key: str) -> int:
        waiting = self._waiting.get(key)
        return 0 if waiting is None else waiting.count

    @property
    def addresses(self) -> int:
        """Addresses with a failure waiting: the size of the table."""
        return len(self._waiting)

    @property
    def total(self) -> int:
        return self._total
