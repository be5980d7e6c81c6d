"""The collector tuning `relay serve` applies once up, and the collector-time metric."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from relay.cli import GC_YOUNG_THRESHOLD, tune_gc
from relay.metrics import GcTimer


@pytest.fixture
def restored_gc() -> Iterator[None]:
    thresholds = gc.get_threshold()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)


def test_tune_gc_freezes_what_exists_and_raises_the_young_threshold(restored_gc: None) -> None:
    _, middle, old = gc.get_threshold()
    tune_gc()
    assert gc.get_freeze_count() > 1000  # the modules and everything loaded so far
    assert gc.get_threshold() == (GC_YOUNG_THRESHOLD, middle, old)


def test_gc_timer_adds_each_collection_and_stops_when_removed() -> None:
    timer = GcTimer()
    timer.install()
    try:
        gc.collect()
        once = timer.seconds
        assert once > 0
        gc.collect()
        assert timer.seconds > once
    finally:
        timer.remove()
    stopped = timer.seconds
    gc.collect()
    assert timer.seconds == stopped
    timer.remove()  # twice is harmless
