"""Refusals of bad stream keys are answered ever more slowly per address group, within bounds.
Pure: every call gets its `now`."""

from __future__ import annotations

import pytest

from relay.streams.throttle import AuthThrottle, address_group


@pytest.mark.parametrize(("address", "group"), [
    ("192.0.2.7", "192.0.2.7"),
    ("2001:db8:1:2:aaaa:bbbb:cccc:dddd", "2001:db8:1:2::/64"),
    ("2001:db8:1:2::1", "2001:db8:1:2::/64"),
    ("2001:db8:1:3::1", "2001:db8:1:3::/64"),
    ("::ffff:192.0.2.7", "192.0.2.7"),  # a dual-stack socket's IPv4 peer
    ("fe80::1%eth0", "fe80::/64"),  # zone index dropped
    ("?", "?"),  # no address: its own group, still counted
])
def test_address_groups(address: str, group: str) -> None:
    assert address_group(address) == group


def test_refusals_wait_longer_then_cap_and_expire() -> None:
    throttle = AuthThrottle(free_failures=3, window=60, base_delay=0.5, max_delay=4)
    assert [throttle.record_failure("10.0.0.1", now=n) for n in range(3)] == [0, 0, 0]
    assert throttle.record_failure("10.0.0.1", now=3) == 0.5
    assert throttle.record_failure("10.0.0.1", now=4) == 1.0
    assert throttle.record_failure("10.0.0.1", now=5) == 2.0
    assert [throttle.record_failure("10.0.0.1", now=6 + n) for n in range(5)][-1] == 4
    assert throttle.record_failure("10.0.0.2", now=11) == 0  # another address
    # Failures older than the window no longer count.
    assert throttle.failures("10.0.0.1", now=200) == 0
    assert throttle.record_failure("10.0.0.1", now=200) == 0
    assert throttle.failures_total == 13


def test_rotating_ipv6_addresses_in_one_64_count_together() -> None:
    throttle = AuthThrottle(free_failures=2, base_delay=1, max_delay=100)
    delays = [throttle.record_failure(f"2001:db8:0:7::{n:x}", now=n) for n in range(5)]
    assert delays == [0, 0, 1, 2, 4]
    assert throttle.record_failure("2001:db8:0:8::1", now=5) == 0  # the next /64
    assert throttle.failures("::ffff:10.1.1.1", now=5) == 0
    throttle.record_failure("10.1.1.1", now=5)
    assert throttle.failures("::ffff:10.1.1.1", now=5) == 1  # mapped IPv4 is IPv4


def test_waiting_refusals_per_group_are_capped() -> None:
    throttle = AuthThrottle(max_slowed_per_address=2)
    assert throttle.begin_slowed("2001:db8::1")
    assert throttle.begin_slowed("2001:db8::2")
    assert not throttle.begin_slowed("2001:db8::3")  # the same /64: its two are waiting
    assert throttle.begin_slowed("10.0.0.1")  # other groups are not affected
    assert throttle.slowed_now == 3
    throttle.end_slowed("2001:db8::1")
    assert throttle.begin_slowed("2001:db8::3")
    for address in ("2001:db8::2", "2001:db8::3", "10.0.0.1"):
        throttle.end_slowed(address)
    assert throttle.slowed_now == 0


def test_memory_is_bounded() -> None:
    throttle = AuthThrottle(free_failures=0, max_addresses=100)
    for n in range(1000):
        throttle.record_failure(f"10.0.{n // 256}.{n % 256}", now=n)
    assert throttle.tracked_addresses == 100
    # The least recently failing are the ones forgotten.
    assert throttle.failures("10.0.0.0", now=1000) == 0
    assert throttle.failures("10.0.3.231", now=1000) == 1


def test_penalties_follow_the_delays_without_a_wait() -> None:
    """SRT cannot hold a refusal: the delay becomes a deadline other attempts are refused by."""
    throttle = AuthThrottle(free_failures=2, base_delay=1, max_delay=8)
    group = address_group("2001:db8:0:9::1")
    assert throttle.penalise("2001:db8:0:9::1", now=0) == 0
    assert throttle.penalise("2001:db8:0:9::2", now=1) == 0
    assert throttle.penalty_until(group) == 0.0  # the free failures cost nothing
    assert throttle.penalise("2001:db8:0:9::3", now=2) == 1
    assert throttle.penalty_until(group) == 3
    assert throttle.penalise("2001:db8:0:9::4", now=2.5) == 2
    assert throttle.penalty_until(group) == 4.5
    assert throttle.penalty_until(address_group("2001:db8:0:a::1")) == 0.0  # another /64
    # Penalties and RTMP's slowed refusals count the same failures.
    assert throttle.failures("2001:db8:0:9::5", now=3) == 4
    assert throttle.record_failure("2001:db8:0:9::5", now=3) == 4


def test_a_shorter_penalty_never_cuts_a_longer_one() -> None:
    throttle = AuthThrottle(free_failures=0, base_delay=1, max_delay=100, window=1000)
    assert [throttle.penalise("192.0.2.1", now=0) for _ in range(5)] == [1, 2, 4, 8, 16]
    assert throttle.penalty_until("192.0.2.1") == 16
    throttle.failures_total = 0
    throttle._failures.clear()  # a fresh count, as if the window had passed
    throttle.penalise("192.0.2.1", now=1)  # delay 1: ends at 2, before 16
    assert throttle.penalty_until("192.0.2.1") == 16


def test_penalties_are_bounded_and_ended_ones_forgotten() -> None:
    throttle = AuthThrottle(free_failures=0, base_delay=1, max_delay=1, max_addresses=3)
    for n in range(5):
        throttle.penalise(f"192.0.2.{n}", now=100)
    assert throttle.penalised_groups == 3
    assert throttle.penalty_until("192.0.2.0") == 0.0  # the oldest went first
    assert throttle.penalty_until("192.0.2.4") == 101
    # Later, a new penalty forgets those that ended.
    throttle.penalise("192.0.2.9", now=200)
    assert throttle.penalised_groups == 1
