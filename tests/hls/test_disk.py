"""The disk pool: results, exceptions, batched wake-ups, a hung job that holds one worker
only, a loop that stops waiting, and a shutdown."""

from __future__ import annotations

import asyncio
import gc
import threading
import weakref

import pytest

from relay.hls.disk import DiskPool

pytestmark = pytest.mark.anyio


async def test_jobs_run_on_the_pool_threads_and_return_results() -> None:
    disk = DiskPool(3)
    seen: set[str] = set()

    def job(n: int) -> int:
        seen.add(threading.current_thread().name)
        return n * n

    results = await asyncio.gather(*(disk.run(lambda n=n: job(n)) for n in range(50)))
    assert results == [n * n for n in range(50)]
    assert seen and seen <= {"relay-disk-0", "relay-disk-1", "relay-disk-2"}
    assert threading.current_thread().name not in seen
    disk.shutdown()


async def test_an_exception_goes_to_its_job_only() -> None:
    disk = DiskPool(2)

    def fail() -> None:
        raise OSError("disk full")

    failing = disk.run(fail)
    fine = disk.run(lambda: "written")
    with pytest.raises(OSError, match="disk full"):
        await failing
    assert await fine == "written"
    disk.shutdown()


async def test_finished_jobs_wake_the_loop_in_batches() -> None:
    disk = DiskPool(1)
    gate = threading.Event()
    first = disk.run(gate.wait)  # holds the worker while the rest queue up
    rest = [disk.run(lambda n=n: n) for n in range(200)]
    gate.set()
    assert await first is True
    assert await asyncio.gather(*rest) == list(range(200))
    assert disk.jobs_run == 201
    # The worker finishes jobs faster than the loop settles them: far fewer wake-ups.
    assert disk.wakeups < 100
    disk.shutdown()


async def test_a_hung_job_holds_one_worker_and_the_others_go_on() -> None:
    disk = DiskPool(2)
    hung = threading.Event()
    stuck = disk.run(hung.wait)
    others = await asyncio.wait_for(
        asyncio.gather(*(disk.run(lambda n=n: n) for n in range(20))), 30)
    assert others == list(range(20)) and not stuck.done()
    hung.set()
    assert await stuck is True
    disk.shutdown()


async def test_a_cancelled_wait_does_not_break_the_pool() -> None:
    disk = DiskPool(1)
    gate = threading.Event()
    held = disk.run(gate.wait)
    held.cancel()
    gate.set()
    assert await disk.run(lambda: "next") == "next"
    disk.shutdown()


async def test_shutdown_lets_the_workers_exit_after_the_queued_jobs() -> None:
    disk = DiskPool(2)
    queued = [disk.run(lambda n=n: n) for n in range(10)]
    workers = list(disk._workers)
    disk.shutdown()
    assert await asyncio.gather(*queued) == list(range(10))
    for worker in workers:
        await asyncio.to_thread(worker.join, 30)
        assert not worker.is_alive()
    assert await disk.run(lambda: "again") == "again"  # a later job starts new workers
    disk.shutdown()


def test_a_pool_needs_a_thread() -> None:
    with pytest.raises(ValueError, match="at least 1 thread"):
        DiskPool(0)


class Buffers:
    """Stands for a segment's buffers, which a recording job holds."""


async def test_a_worker_keeps_nothing_of_a_job_it_has_run() -> None:
    disk = DiskPool(4)
    held: list[weakref.ref[Buffers]] = []
    for _ in range(8):
        buffers = Buffers()
        held.append(weakref.ref(buffers))
        await disk.run(lambda buffers=buffers: len(vars(buffers)))
        del buffers
    await asyncio.sleep(0.05)  # the workers are idle, waiting for the next job
    gc.collect()
    assert [ref() for ref in held] == [None] * 8
    disk.shutdown()
