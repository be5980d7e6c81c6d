"""Who holds the RTMP(S) connection slots, and whom to let go when they are all taken.

Theory of operation. Every accepted connection asks for a slot before it costs anything else
(before its TLS handshake, for RTMPS), and keeps it until it closes. Two caps apply:

- `max_per_address`: an address group (`address_group`: an IPv4 address, an IPv6 /64) holds
  at most this many connections; more are refused. One host alone cannot take everything.
- `max_connections`: all groups together. When it is reached, the newcomer takes the slot of
  the *oldest not-yet-publishing* connection of the group holding the *most* slots (among
  groups tied for the most, the one that has held that many longest), provided that group
  holds more slots than the newcomer's own group; otherwise the newcomer is refused.
  Publishing connections are never evicted.

Why eviction rather than only shorter pre-publish deadlines: many addresses (a botnet, or one
host with many IPv6 /64s) can fill the global cap while each stays under its per-address cap,
and any deadline long enough for a slow encoder on a bad link is long enough to hold the slots
again as soon as they are freed. Evicting by "most slots held, then oldest" means an address
that holds nothing (an honest encoder) can always get in while any slot is held by a connection
that is not publishing; an idle connection is the cheapest thing to give up (its owner has sent
no valid publish yet), and the oldest idle one has had the longest to publish. An attacker who
wants to evict an honest encoder must hold fewer slots per group than that encoder's group and
must churn connections faster than the encoder completes its publish (well under a second).

Pure bookkeeping: the caller closes the evicted connection; no I/O, no clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Generic, TypeVar

from relay.streams.throttle import address_group

Conn = TypeVar("Conn")


class SlotDecision(Enum):
    ADMITTED = "admitted"
    REFUSED_PER_ADDRESS = "refused: the address holds its share of connections"
    REFUSED_FULL = "refused: every connection slot is held by a publisher or a smaller group"


@dataclass(frozen=True, slots=True)
class SlotAdmission(Generic[Conn]):
    decision: SlotDecision
    group: str  # the newcomer's address group
    held: int  # slots the newcomer's group held before this decision
    evicted: Conn | None = None  # already released; the caller must close it


@dataclass(slots=True)
class _Group(Generic[Conn]):
    held: int = 0
    # Not yet publishing, oldest first (dicts keep insertion order).
    pending: dict[Conn, None] = field(default_factory=dict)


class ConnectionSlots(Generic[Conn]):
    """The slot table shared by every RTMP(S) listener of one process."""

    def __init__(self, max_connections: int, max_per_address: int) -> None:
        self.max_connections = max_connections
        self.max_per_address = max_per_address
        self._group_of: dict[Conn, str] = {}
        self._groups: dict[str, _Group[Conn]] = {}
        # held -> groups with at least one pending connection that hold that many slots, in
        # the order they got there; the eviction candidates, found without a scan of all.
        self._evictable: dict[int, dict[str, None]] = {}

    @property
    def total(self) -> int:
        """Slots held now, all groups together."""
        return len(self._group_of)

    def held_by(self, address: str) -> int:
        group = self._groups.get(address_group(address))
        return group.held if group is not None else 0

    @property
    def groups(self) -> int:
        return len(self._groups)

    def admit(self, conn: Conn, address: str, *,
              per_address: bool = True) -> SlotAdmission[Conn]:
        """Give `conn` a slot (and name the connection it displaced), or refuse it.

        `per_address=False`: the per-address cap does not apply (a trusted load balancer's
        connection, counted under its client's address once its PROXY header says which)."""
        name = address_group(address)
        group = self._groups.get(name)
        held = group.held if group is not None else 0
        if per_address and held >= self.max_per_address:
            return SlotAdmission(SlotDecision.REFUSED_PER_ADDRESS, name, held)
        evicted: Conn | None = None
        if len(self._group_of) >= self.max_connections:
            evicted = self._victim(held)
            if evicted is None:
                return SlotAdmission(SlotDecision.REFUSED_FULL, name, held)
            self.release(evicted)  # of another group: it held more than this one
        if group is None:
            group = self._groups[name] = _Group()
        self._unmark(name, group)
        group.held += 1
        group.pending[conn] = None
        self._group_of[conn] = name
        self._mark(name, group)
        return SlotAdmission(SlotDecision.ADMITTED, name, held, evicted)

    def settle(self, conn: Conn) -> None:
        """`conn` is publishing now: it keeps its slot and is no longer evictable."""
        name = self._group_of.get(conn)
        if name is None:
            return
        group = self._groups[name]
        self._unmark(name, group)
        group.pending.pop(conn, None)
        self._mark(name, group)

    def release(self, conn: Conn) -> None:
        """`conn` closed (or was evicted): free its slot. Releasing twice is harmless."""
        name = self._group_of.pop(conn, None)
        if name is None:
            return
        group = self._groups[name]
        self._unmark(name, group)
        group.held -= 1
        group.pending.pop(conn, None)
        if group.held == 0:
            del self._groups[name]
        else:
            self._mark(name, group)

    def _victim(self, newcomer_held: int) -> Conn | None:
        """The oldest pending connection of the group holding the most slots, if that group
        holds more than the newcomer's group (so a swap never makes the spread worse)."""
        if not self._evictable:
            return None
        most = max(self._evictable)  # at most ~sqrt(2 * max_connections) distinct counts
        if most <= newcomer_held:
            return None
        name = next(iter(self._evictable[most]))
        return next(iter(self._groups[name].pending))

    def _mark(self, name: str, group: _Group[Conn]) -> None:
        if group.pending:
            self._evictable.setdefault(group.held, {})[name] = None

    def _unmark(self, name: str, group: _Group[Conn]) -> None:
        bucket = self._evictable.get(group.held)
        if bucket is not None:
            bucket.pop(name, None)
            if not bucket:
                del self._evictable[group.held]
