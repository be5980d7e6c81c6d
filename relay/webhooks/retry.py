"""When to try a delivery again: exponential backoff with full jitter, for a bounded window.

Full jitter (a uniform draw from zero to the exponential bound) spreads the retries of many
events that failed together, e.g. all queued while a receiver was down, instead of sending
them back in waves. Pure: the caller passes the time and the random draw.
"""

from __future__ import annotations

from dataclasses import dataclass

#: The first retry waits up to this long; each further one up to twice the one before.
DEFAULT_BASE_DELAY = 1.0
#: No single wait is longer than this, so a receiver back after an outage hears again soon.
DEFAULT_MAX_DELAY = 3600.0
#: A delivery still failing this long after its first try is given up (failed), as Mux does.
DEFAULT_RETRY_WINDOW = 24 * 3600.0


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    base_delay: float = DEFAULT_BASE_DELAY
    max_delay: float = DEFAULT_MAX_DELAY
    window: float = DEFAULT_RETRY_WINDOW

    def __post_init__(self) -> None:
        if not 0 < self.base_delay <= self.max_delay:
            raise ValueError(f"retry delays need 0 < base_delay <= max_delay, got "
                             f"{self.base_delay} and {self.max_delay}")

    def bound(self, attempts: int) -> float:
        """The longest wait after the `attempts`-th failed try (1 for the first)."""
        exponent = min(max(attempts - 1, 0), 62)  # 2**62 s is past any max_delay
        return min(self.max_delay, self.base_delay * 2.0 ** exponent)

    def next_attempt_at(self, *, first_attempt_at: float, attempts: int, now: float,
                        draw: float) -> float | None:
        """When to try again after the `attempts`-th failure at `now`, with `draw` uniform in
        [0, 1); None when the window is over and the delivery is failed."""
        if now - first_attempt_at >= self.window:
            return None
        at = now + draw * self.bound(attempts)
        # The last try lands at the window's end rather than past it.
        return min(at, first_attempt_at + self.window)
