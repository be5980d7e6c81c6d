"""Slowing down failed API authentication, per client address.

A wrong token id or secret is answered 401 only after a delay, and the failures of one
address are answered one per `failure_delay` seconds: the first waits `failure_delay`, a
second one sent meanwhile waits twice as long, and so on, up to the cap below. A request
whose credentials are right is never delayed. Addresses are counted as a
host owns them: an IPv4 address, or an IPv6 /64 (one subscriber's prefix, rfc6177), so
rotating through one's own IPv6 addresses does not multiply the rate.

While `max_slowed_per_address` failures of an address are waiting, a further failure from
that address is refused at once with 429 and Retry-After instead of joining the queue; the
same holds, for addresses with a failure waiting, once `max_slowed_total` wait across all
addresses. Credentials are always checked first, so a right token is never delayed or
refused, whatever others behind the same NAT or /64 are doing (as with stream keys). A guesser
past the cap does get its "wrong" quickly, but every secret has at least 32 characters
(`relay token create` makes 48 random letters and digits), so the guess rate is not what
protects it; the queue bounds the memory and work that failures cost. The table has an
entry only for an address with a failure waiting, so it never holds more entries than
requests held.

Theory of operation: `FailedAuthQueue` is the bookkeeping, with no I/O and no clock (the
caller passes `now`); BasicAuthMiddleware (middleware.py) checks the credentials, and on a
failure asks `refuses(key)`; if not refused it sleeps until `failed(key, now)` and then calls
`released(key)`.
"""

from __future__ import annotations

from dataclasses import dataclass

from relay.addresses import address_group

#: Seconds a failed authentication waits before its 401.
AUTH_FAILURE_DELAY = 1.0
#: Failed authentications from one address (an IPv6 /64) waiting at once; beyond, 429.
AUTH_MAX_SLOWED_PER_ADDRESS = 4
#: Failed authentications from all addresses waiting at once; beyond, 429.
AUTH_MAX_SLOWED_TOTAL = 256


@dataclass(frozen=True, slots=True)
class AuthLimits:
    failure_delay: float = AUTH_FAILURE_DELAY
    max_slowed_per_address: int = AUTH_MAX_SLOWED_PER_ADDRESS
    max_slowed_total: int = AUTH_MAX_SLOWED_TOTAL


def address_key(host: str | None) -> str:
    """The unit a client's failures are counted in: its IPv4 address or its IPv6 /64."""
    return address_group(host) if host else "-"


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
        """Whether a failed authentication from `key` is refused at once (429) instead of
        waiting for its 401."""
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
