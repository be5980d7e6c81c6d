"""relay serve raises its soft open-file limit to what its connection caps need."""

from __future__ import annotations

import logging
import resource

import pytest

from relay.file_limit import ensure_file_limit


class FakeLimit:
    def __init__(self, soft: int, hard: int) -> None:
        self.limits = (soft, hard)

    def get(self) -> tuple[int, int]:
        return self.limits

    def set(self, limits: tuple[int, int]) -> None:
        if limits[1] != resource.RLIM_INFINITY and limits[0] > limits[1]:
            raise ValueError("not allowed to raise maximum limit")
        self.limits = limits


def test_the_soft_limit_is_raised_to_what_the_caps_need() -> None:
    limit = FakeLimit(1024, 1_048_576)
    assert ensure_file_limit(5320, limit.get, limit.set) == 5320
    assert limit.limits == (5320, 1_048_576)


def test_a_higher_soft_limit_is_kept() -> None:
    limit = FakeLimit(100_000, 1_048_576)
    assert ensure_file_limit(5320, limit.get, limit.set) == 100_000
    assert limit.limits == (100_000, 1_048_576)


def test_a_low_hard_limit_is_reached_and_named(caplog: pytest.LogCaptureFixture) -> None:
    limit = FakeLimit(1024, 4096)
    with caplog.at_level(logging.WARNING, logger="relay"):
        assert ensure_file_limit(5320, limit.get, limit.set) == 4096
    assert limit.limits == (4096, 4096)
    assert "need about 5320 open files, but the limit is 4096" in caplog.text


def test_an_unlimited_hard_limit() -> None:
    limit = FakeLimit(1024, resource.RLIM_INFINITY)
    assert ensure_file_limit(5320, limit.get, limit.set) == 5320


def test_the_real_limit_can_be_read() -> None:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert ensure_file_limit(16) >= min(soft, 16)
