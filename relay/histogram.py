"""A plain histogram: a bucket array updated with `bisect`, exported at scrape time.

Observing costs one `bisect` and two additions, no lock and no label lookup, so the media and
HTTP paths can observe freely; `relay.metrics` turns the counts into a Prometheus histogram
(cumulative `le` buckets) when /metrics is scraped.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Sequence
from itertools import pairwise


class BucketHistogram:
    """Counts of observations per bucket; `bounds` are the buckets' inclusive upper bounds
    (Prometheus `le`), ascending; one more bucket above the last holds the rest (+Inf)."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        if not bounds or any(a >= b for a, b in pairwise(bounds)):
            raise ValueError(f"histogram bounds must be ascending and not empty, got "
                             f"{tuple(bounds)}")
        self.bounds = tuple(float(bound) for bound in bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        # bisect_left: a value equal to a bound belongs to that bound's bucket (le).
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    @property
    def count(self) -> int:
        return sum(self.counts)

    def cumulative(self) -> list[tuple[float, int]]:
        """The Prometheus buckets: (`le`, observations at or under it), `math.inf` last."""
        buckets: list[tuple[float, int]] = []
        total = 0
        for bound, count in zip((*self.bounds, math.inf), self.counts, strict=True):
            total += count
            buckets.append((bound, total))
        return buckets
