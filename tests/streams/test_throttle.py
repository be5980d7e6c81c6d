"""Failed publishes from one address are answered ever more slowly, within bounds."""

from __future__ import annotations

from relay.streams.throttle import AuthThrottle


def test_backoff_grows_then_caps_and_expires() -> None:
    throttle = AuthThrottle(free_failures=3, window=60, base_delay=0.5, max_delay=4)
    for n in range(3):
        throttle.record_failure("10.0.0.1", now=n)
    assert throttle.delay("10.0.0.1", now=3) == 0.5
    throttle.record_failure("10.0.0.1", now=4)
    assert throttle.delay("10.0.0.1", now=4) == 1.0
    for n in range(10):
        throttle.record_failure("10.0.0.1", now=5 + n)
    assert throttle.delay("10.0.0.1", now=15) == 4
    assert throttle.delay("10.0.0.2", now=15) == 0
    # Failures older than the window no longer count.
    assert throttle.delay("10.0.0.1", now=200) == 0
    assert throttle.failures_total == 14


def test_success_forgets_and_memory_is_bounded() -> None:
    throttle = AuthThrottle(free_failures=0, max_addresses=100)
    throttle.record_failure("a", now=0)
    assert throttle.delay("a", now=0) > 0
    throttle.record_success("a")
    assert throttle.delay("a", now=0) == 0
    for n in range(1000):
        throttle.record_failure(f"10.0.{n // 256}.{n % 256}", now=n)
    assert throttle.tracked_addresses == 100
