"""The disk thread: order, results, exceptions, batching, and a loop that stops waiting."""

from __future__ import annotations

import asyncio
import threading

import pytest

from relay.hls.disk import DiskThread

pytestmark = pytest.mark.anyio


async def test_jobs_run_in_order_on_one_thread_and_return_results() -> None:
    disk = DiskThread()
    seen: list[tuple[int, str]] = []

    def job(n: int) -> int:
        seen.append((n, threading.current_thread().name))
        return n * n

    results = await asyncio.gather(*(disk.run(lambda n=n: job(n)) for n in range(50)))
    assert results == [n * n for n in range(50)]
    assert [n for n, _ in seen] == list(range(50))
    assert {name for _, name in seen} == {"relay-disk"}
    assert threading.current_thread().name != "relay-disk"


async def test_an_exception_goes_to_its_job_only() -> None:
    disk = DiskThread()

    def fail() -> None:
        raise OSError("disk full")

    failing = disk.run(fail)
    fine = disk.run(lambda: "written")
    with pytest.raises(OSError, match="disk full"):
        await failing
    assert await fine == "written"


async def test_queued_jobs_settle_in_batches() -> None:
    disk = DiskThread()
    gate = threading.Event()
    first = disk.run(gate.wait)  # holds the thread while the rest queue up
    rest = [disk.run(lambda n=n: n) for n in range(20)]
    gate.set()
    assert await first is True
    assert await asyncio.gather(*rest) == list(range(20))
    assert disk.jobs_run == 21
    assert disk.batches <= 3  # the held job, then (nearly) all the others at once


async def test_a_cancelled_wait_does_not_break_the_thread() -> None:
    disk = DiskThread()
    gate = threading.Event()
    held = disk.run(gate.wait)
    held.cancel()
    gate.set()
    assert await disk.run(lambda: "next") == "next"
