"""The backoff schedule: exponential bounds, full jitter, a window, then failed."""

from __future__ import annotations

import pytest

from relay.webhooks.retry import RetryPolicy


def test_bounds_double_up_to_the_cap() -> None:
    policy = RetryPolicy(base_delay=1.0, max_delay=60.0, window=3600.0)
    assert [policy.bound(n) for n in range(1, 9)] == [1, 2, 4, 8, 16, 32, 60, 60]
    assert policy.bound(10_000) == 60.0  # no overflow for a long-failing endpoint


def test_full_jitter_spans_zero_to_the_bound() -> None:
    policy = RetryPolicy(base_delay=1.0, max_delay=60.0, window=3600.0)
    at = [policy.next_attempt_at(first_attempt_at=0, attempts=3, now=100.0, draw=d)
          for d in (0.0, 0.5, 0.999)]
    assert at == [100.0, 102.0, pytest.approx(103.996)]


def test_failed_once_the_window_is_over() -> None:
    policy = RetryPolicy(base_delay=1.0, max_delay=3600.0, window=86400.0)
    assert policy.next_attempt_at(first_attempt_at=0, attempts=30, now=86399.0,
                                  draw=0.9) == 86400.0  # the last try lands at the end
    assert policy.next_attempt_at(first_attempt_at=0, attempts=31, now=86400.0, draw=0.0) is None


def test_the_default_schedule_lasts_a_day() -> None:
    policy = RetryPolicy()
    now, attempts = 0.0, 0
    while True:
        attempts += 1
        at = policy.next_attempt_at(first_attempt_at=0, attempts=attempts, now=now, draw=0.999)
        if at is None:
            break
        now = at
    assert now == 86400.0
    assert 25 < attempts < 60


def test_bad_delays_are_refused() -> None:
    with pytest.raises(ValueError, match="base_delay"):
        RetryPolicy(base_delay=0)
    with pytest.raises(ValueError, match="max_delay"):
        RetryPolicy(base_delay=10, max_delay=1)
