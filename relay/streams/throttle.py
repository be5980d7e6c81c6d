"""Slow down addresses that keep presenting bad stream keys.

Guessing a 128-bit key is hopeless, but a misconfigured encoder in a reconnect loop (or a
scanner) should not cost a store lookup every few milliseconds. After `free_failures` failed
attempts inside `window` seconds, every further attempt from that address waits
`base_delay * 2**(n - free_failures)` seconds, capped at `max_delay`, before its answer.
Pure: the caller passes `now`.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass, field


@dataclass(slots=True)
class AuthThrottle:
    free_failures: int = 3
    window: float = 60.0
    base_delay: float = 0.5
    max_delay: float = 30.0
    max_addresses: int = 10_000  # bound on memory: the least recently failing are forgotten
    failures_total: int = 0
    _failures: OrderedDict[str, deque[float]] = field(default_factory=OrderedDict)

    def record_failure(self, address: str, now: float) -> None:
        self.failures_total += 1
        times = self._failures.pop(address, None)
        if times is None:
            times = deque(maxlen=64)
        times.append(now)
        self._failures[address] = times
        while len(self._failures) > self.max_addresses:
            self._failures.popitem(last=False)

    def record_success(self, address: str) -> None:
        self._failures.pop(address, None)

    def delay(self, address: str, now: float) -> float:
        """Seconds to wait before answering this address's next attempt."""
        times = self._failures.get(address)
        if not times:
            return 0.0
        while times and now - times[0] > self.window:
            times.popleft()
        excess = len(times) - self.free_failures
        if excess < 0:
            return 0.0
        return min(self.max_delay, self.base_delay * 2.0 ** excess)

    @property
    def tracked_addresses(self) -> int:
        return len(self._failures)
