"""The collector and allocator tuning `relay serve` applies, and the collector-time metric."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from relay.cli import (
    GC_YOUNG_THRESHOLD,
    MALLOC_MMAP_ENV,
    MALLOC_MMAP_THRESHOLD,
    MALLOC_TRIM_THRESHOLD,
    trim_malloc,
    tune_gc,
    tune_malloc,
)
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


class FakeLibc:
    def __init__(self) -> None:
        self.calls: list[tuple[int, int]] = []

    def mallopt(self, option: int, value: int) -> int:
        self.calls.append((option, value))
        return 1


def test_tune_malloc_fixes_the_mmap_threshold_unless_the_operator_set_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(MALLOC_MMAP_ENV, raising=False)
    libc = FakeLibc()
    assert tune_malloc(libc)
    # M_MMAP_THRESHOLD and M_TRIM_THRESHOLD in glibc's malloc.h
    assert libc.calls == [(-3, MALLOC_MMAP_THRESHOLD), (-1, MALLOC_TRIM_THRESHOLD)]
    monkeypatch.setenv(MALLOC_MMAP_ENV, "65536")
    assert not tune_malloc(libc) and len(libc.calls) == 2
    monkeypatch.delenv(MALLOC_MMAP_ENV)
    assert not tune_malloc(object())  # a C library without mallopt: nothing to do


class TrimmingLibc:
    def __init__(self) -> None:
        self.pads: list[int] = []

    def malloc_trim(self, pad: int) -> int:
        self.pads.append(pad)
        return 1


def test_trim_malloc_trims_the_whole_heap_once_where_there_is_malloc_trim() -> None:
    libc = TrimmingLibc()
    assert trim_malloc(libc)
    assert libc.pads == [0]  # no padding kept at the top: everything free goes back
    assert not trim_malloc(object())  # a C library without malloc_trim: nothing to do
    assert trim_malloc()  # this process's glibc has it (the test machine's C library)
