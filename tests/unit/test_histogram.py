"""The plain histogram: bucket placement (Prometheus `le`), cumulative export, bad bounds."""

from __future__ import annotations

import math

import pytest

from relay.histogram import BucketHistogram


def test_values_fall_in_the_first_bucket_whose_bound_they_do_not_exceed() -> None:
    histogram = BucketHistogram((0.1, 1.0, 10.0))
    for value in (0.0, 0.1, 0.10001, 1.0, 5.0, 10.0, 11.0, 1e9):
        histogram.observe(value)
    assert histogram.counts == [2, 2, 2, 2]
    assert histogram.count == 8
    assert histogram.sum == pytest.approx(0.0 + 0.1 + 0.10001 + 1.0 + 5.0 + 10.0 + 11.0 + 1e9)
    assert histogram.cumulative() == [(0.1, 2), (1.0, 4), (10.0, 6), (math.inf, 8)]


def test_an_empty_histogram_exports_zero_buckets() -> None:
    histogram = BucketHistogram((1, 2))
    assert histogram.cumulative() == [(1.0, 0), (2.0, 0), (math.inf, 0)]
    assert (histogram.count, histogram.sum) == (0, 0.0)


@pytest.mark.parametrize("bounds", [(), (1.0, 1.0), (2.0, 1.0)])
def test_bounds_must_ascend(bounds: tuple[float, ...]) -> None:
    with pytest.raises(ValueError, match="ascending"):
        BucketHistogram(bounds)
