"""Slow down the refusals of addresses that keep presenting bad stream keys.

Guessing a 128-bit key is hopeless, but a misconfigured encoder in a reconnect loop (or a
scanner) should not get its answers as fast as it can ask. The throttle only ever slows a
*refusal*: the registry looks the key up first, and a correct key is admitted at once whatever
its address did before. That matters behind NAT or a proxy, where one address is many
encoders: a neighbour's wrong keys must not delay an honest encoder past the pre-publish
deadline.

After `free_failures` failed attempts inside `window` seconds, the answer to each further
failed attempt from that address group waits `base_delay * 2**(n - 1)` seconds (n counting
the failures beyond the free ones), capped at `max_delay`. At most `max_slowed_per_address`
slowed refusals of one group wait at once; beyond that a refusal is not answered at all (the
caller closes the connection), so a guesser cannot park connections in the throttle.

A protocol that cannot hold a refusal (SRT: libsrt's listen callback answers at once) uses
`penalise` instead of waiting out the delay: the group is then *penalised* until now + delay,
and `penalty_until` tells the protocol to refuse the group's attempts unread until then
(relay/srt/admission.py). `penalty_until` is the one method safe to call from another thread:
it is a single `dict.get` on a dict that only the event loop's thread changes (never
iterated, entries replaced whole), which CPython's GIL makes atomic.

Addresses are grouped by `address_group`: an IPv6 client usually holds a whole /64 and can
rotate through it, so IPv6 is counted per /64; an IPv4-mapped IPv6 address is its IPv4 address.
Pure: the caller passes `now`.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass, field

from relay.addresses import address_group

__all__ = ["AuthThrottle", "address_group"]


@dataclass(slots=True)
class AuthThrottle:
    free_failures: int = 3
    window: float = 60.0
    base_delay: float = 0.5
    max_delay: float = 30.0
    max_slowed_per_address: int = 4  # slowed refusals of one group waiting at once
    max_addresses: int = 10_000  # bound on memory: the least recently failing are forgotten
    failures_total: int = 0
    _failures: OrderedDict[str, deque[float]] = field(default_factory=OrderedDict)
    _slowed: dict[str, int] = field(default_factory=dict)
    # group -> monotonic deadline of its penalty; at most max_addresses, oldest dropped.
    _penalties: dict[str, float] = field(default_factory=dict)

    def record_failure(self, address: str, now: float) -> float:
        """Note a failed attempt; return how long its refusal should wait (0: answer now)."""
        self.failures_total += 1
        group = address_group(address)
        times = self._failures.pop(group, None)
        if times is None:
            times = deque(maxlen=64)
        while times and now - times[0] > self.window:
            times.popleft()
        times.append(now)
        self._failures[group] = times
        while len(self._failures) > self.max_addresses:
            self._failures.popitem(last=False)
        excess = len(times) - self.free_failures
        if excess <= 0:
            return 0.0
        return min(self.max_delay, self.base_delay * 2.0 ** (excess - 1))

    def penalise(self, address: str, now: float) -> float:
        """Note a failed attempt whose refusal could not wait; return its delay. While the
        delay runs, `penalty_until` of the group says until when. Event loop's thread only."""
        delay = self.record_failure(address, now)
        if delay <= 0:
            return delay
        group = address_group(address)
        penalties = self._penalties
        # Only ever later: a shorter penalty never cuts a longer one short. Updating in
        # place (no pop) leaves no moment in which a reader sees no penalty at all.
        if now + delay > penalties.get(group, 0.0):
            penalties[group] = now + delay
        # Forget ended penalties from the oldest end, then the oldest beyond the bound
        # (a group penalised earliest, usually ended; only a flood of more than
        # max_addresses groups at once drops a running one).
        while penalties:
            oldest = next(iter(penalties))
            if penalties[oldest] > now and len(penalties) <= self.max_addresses:
                break
            del penalties[oldest]
        return delay

    def penalty_until(self, group: str) -> float:
        """When the penalty of `group` (an `address_group`) ends; 0.0 when it has none.
        Safe from any thread (see the module's docstring); compare with `now` yourself."""
        return self._penalties.get(group, 0.0)

    @property
    def penalised_groups(self) -> int:
        """Groups with a penalty entry (ended ones included until they are forgotten)."""
        return len(self._penalties)

    def begin_slowed(self, address: str) -> bool:
        """Reserve one of the group's waiting refusals; False when all are taken (then the
        refusal is not answered). Every True is paired with one `end_slowed`."""
        group = address_group(address)
        waiting = self._slowed.get(group, 0)
        if waiting >= self.max_slowed_per_address:
            return False
        self._slowed[group] = waiting + 1
        return True

    def end_slowed(self, address: str) -> None:
        group = address_group(address)
        waiting = self._slowed.get(group, 0) - 1
        if waiting > 0:
            self._slowed[group] = waiting
        else:
            self._slowed.pop(group, None)

    def failures(self, address: str, now: float) -> int:
        """Failed attempts of the address's group inside the window."""
        times = self._failures.get(address_group(address))
        return sum(1 for t in times if now - t <= self.window) if times else 0

    @property
    def tracked_addresses(self) -> int:
        return len(self._failures)

    @property
    def slowed_now(self) -> int:
        """Refusals waiting at this moment, all groups together."""
        return sum(self._slowed.values())
