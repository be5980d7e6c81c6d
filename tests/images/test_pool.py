"""The decode pool: shared decodes, the cache bound, the queue bound, its worker processes
(a crash, a hang, a bad answer, the live reads, the shutdown); the client rate."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from relay.images import worker
from relay.images.media import LiveReader, MediaGone
from relay.images.params import ImageParamError
from relay.images.pool import (
    BUSY_RETRY_AFTER,
    MAX_CACHED_IMAGE_BYTES,
    ClientRates,
    DecodePool,
    ImageBusy,
    RateLimited,
)
from relay.images.worker import WORKER_NICENESS, ImageJob, ImageWorkerFailed
from relay.limits import MAX_IMAGE_WORKERS
from tests.images.helpers import jobs
from tests.images.helpers.jobs import FileGate, started

pytestmark = pytest.mark.anyio


@contextlib.asynccontextmanager
async def opened(**options: Any) -> AsyncIterator[DecodePool]:
    pool = DecodePool(**options)
    try:
        yield pool
    finally:
        await pool.aclose()


def made(body: bytes = b"x") -> ImageJob:
    return ImageJob(jobs.made, (body,))


def gated(gate: FileGate, body: bytes = b"image") -> ImageJob:
    return ImageJob(jobs.gated, (str(gate.directory), body))


def niceness(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[16])


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_concurrent_requests_for_one_image_share_one_decode(tmp_path: Path) -> None:
    gate = FileGate(tmp_path)
    async with opened(workers=2) as pool:
        waiters = [asyncio.create_task(pool.run("k", gated(gate))) for _ in range(20)]
        await started(gate)
        assert pool.pending == 1
        gate.open()
        results = await asyncio.gather(*waiters)
        assert gate.runs == 1 and {r.body for r in results} == {b"image"}
        assert pool.counters.decodes == 1 and pool.counters.shared == 19
        # Then from the cache, with no decode.
        assert (await pool.run("k", gated(gate))).body == b"image" and gate.runs == 1
        assert pool.counters.cache_hits == 1 and pool.has("k")
        # Started lazily, as many as were needed at once.
        assert len(pool.processes) == 1 and pool.counters.worker_starts == 1


async def test_a_requester_that_leaves_does_not_cancel_the_shared_decode(
        tmp_path: Path) -> None:
    gate = FileGate(tmp_path)
    async with opened(workers=1) as pool:
        first = asyncio.create_task(pool.run("k", gated(gate)))
        second = asyncio.create_task(pool.run("k", gated(gate)))
        await started(gate)
        first.cancel()
        gate.open()
        assert (await second).body == b"image"
        assert pool.counters.worker_failures == 0


async def test_past_the_queue_bound_a_new_decode_is_refused(tmp_path: Path) -> None:
    gates = [FileGate(tmp_path / "0"), FileGate(tmp_path / "1")]
    async with opened(workers=1, max_pending=2) as pool:
        running = [asyncio.create_task(pool.run(i, gated(gate)))
                   for i, gate in enumerate(gates)]
        await started(gates[0])  # the second waits for the one worker
        with pytest.raises(ImageBusy) as refused:
            await pool.run("third", gated(FileGate(tmp_path / "2")))
        assert refused.value.retry_after == BUSY_RETRY_AFTER
        assert "limit 2" in str(refused.value)
        joined = asyncio.create_task(pool.run(0, gated(gates[0])))  # no new decode
        for gate in gates:
            gate.open()
        await asyncio.gather(*running, joined)
        assert pool.counters.busy == 1 and pool.pending == 0


async def test_errors_reach_every_waiter_and_are_not_cached(tmp_path: Path) -> None:
    gate = FileGate(tmp_path)
    gate.open()
    bad = ImageJob(jobs.gated_bad_time, (str(gate.directory),))
    async with opened() as pool:
        results = await asyncio.gather(pool.run("k", bad), pool.run("k", bad),
                                       return_exceptions=True)
        assert all(isinstance(r, ImageParamError) and r.field == "time" for r in results)
        assert str(results[0]) == "time: 99 is outside the media"
        assert gate.runs == 1
        with pytest.raises(ImageParamError):
            await pool.run("k", bad)
        assert gate.runs == 2 and pool.counters.failed == 2
        # The request's own errors keep the worker.
        assert pool.counters.worker_failures == 0 and pool.counters.worker_starts == 1


async def test_the_cache_is_bounded_in_bytes_and_entries() -> None:
    async with opened(cache_entries=3, cache_bytes=100) as pool:
        for key in range(5):
            result = await pool.run(key, made(b"a" * 40))
        assert (result.body, result.media_type, result.keyframe_time) == \
            (b"a" * 40, "image/jpeg", 1.5)
        assert pool.cached_bytes == 80  # two of 40 fit under 100
        assert not pool.has(0) and pool.has(3) and pool.has(4)
    async with opened(cache_entries=2, cache_bytes=10_000) as small:
        for key in range(4):
            await small.run(key, made(b"b"))
        assert [small.has(k) for k in range(4)] == [False, False, True, True]
    # An image over MAX_CACHED_IMAGE_BYTES is served and not kept.
    async with opened(cache_bytes=4 * MAX_CACHED_IMAGE_BYTES) as big:
        body = b"c" * (MAX_CACHED_IMAGE_BYTES + 1)
        assert (await big.run("big", made(body))).body == body
        assert not big.has("big") and big.cached_bytes == 0


async def test_a_worker_that_dies_fails_its_job_and_is_replaced() -> None:
    async with opened(workers=1) as pool:
        first = int((await pool.run("pid", ImageJob(jobs.worker_pid, ()))).body)
        with pytest.raises(ImageWorkerFailed, match="stopped while making this image "
                                                    r"\(killed by SIGKILL\)"):
            await pool.run("crash", ImageJob(jobs.kill_own_process, ()))
        assert pool.counters.worker_failures == 1 and pool.counters.failed == 1
        assert pool.processes == [] and not alive(first)
        # The next job gets a new worker.
        second = int((await pool.run("pid2", ImageJob(jobs.worker_pid, ()))).body)
        assert second != first and pool.processes == [second]
        assert pool.counters.worker_starts == 2 and not pool.has("crash")


async def test_a_job_past_the_timeout_is_killed_with_its_worker() -> None:
    async with opened(workers=1, job_timeout=1.0) as pool:
        first = int((await pool.run("pid", ImageJob(jobs.worker_pid, ()))).body)
        with pytest.raises(ImageWorkerFailed, match="took longer than 1 s"):
            await pool.run("hang", ImageJob(jobs.hang, ()))
        assert not alive(first) and pool.counters.worker_failures == 1
        assert (await pool.run("next", made(b"ok"))).body == b"ok"


async def test_a_bug_in_a_job_is_a_failure_that_keeps_the_worker() -> None:
    async with opened(workers=1) as pool:
        first = int((await pool.run("pid", ImageJob(jobs.worker_pid, ()))).body)
        with pytest.raises(ImageWorkerFailed, match="could not be made: KeyError"):
            await pool.run("bug", ImageJob(jobs.broken, ()))
        assert pool.processes == [first] and pool.counters.worker_failures == 0


async def test_an_answer_over_the_bound_kills_the_worker(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(worker, "MAX_ANSWER_BYTES", 1000)
    async with opened(workers=1) as pool:
        with pytest.raises(ImageWorkerFailed, match="over MAX_ANSWER_BYTES"):
            await pool.run("big", made(b"x" * 2000))
        assert pool.counters.worker_failures == 1 and pool.processes == []
        assert (await pool.run("small", made(b"y"))).body == b"y"


async def test_a_worker_reads_live_bytes_from_the_relay() -> None:
    reader = LiveReader({"init-0.mp4": (b"init",), "3.m4s": (b"part1", b"part2")})
    async with opened(workers=1) as pool:
        result = await pool.run("live", ImageJob(jobs.read_back, ("init-0.mp4", "3.m4s"),
                                                 reader))
        assert result.body == b"init|part1part2"
        with pytest.raises(MediaGone):  # a segment that left the window meanwhile
            await pool.run("gone", ImageJob(jobs.read_back, ("4.m4s",), reader))
        with pytest.raises(MediaGone):  # a job without the relay's memory
            await pool.run("none", ImageJob(jobs.read_back, ("3.m4s",)))
        assert pool.counters.worker_failures == 0


async def test_workers_run_niced_and_end_with_the_pool() -> None:
    async with opened(workers=2) as pool:
        await pool.run("pid", ImageJob(jobs.worker_pid, ()))
        (pid,) = pool.processes
        assert niceness(pid) == WORKER_NICENESS  # proc(5) field 19
    assert not alive(pid)
    with pytest.raises(ImageWorkerFailed, match="closed"):
        await pool.run("after", made())


def worker_children() -> list[int]:
    """This process's children that are image workers."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rpartition(")")[2].split()[1])
            command = (stat.parent / "cmdline").read_bytes()
        except (OSError, ValueError):
            continue
        if ppid == os.getpid() and b"relay.images.worker" in command:
            found.append(int(stat.parent.name))
    return found


async def test_a_worker_started_while_the_pool_closes_is_ended_too() -> None:
    pool = DecodePool(workers=1)
    making = asyncio.create_task(pool.run("k", made(b"late")))
    await asyncio.sleep(0)  # its worker is starting
    await pool.aclose()
    await asyncio.gather(making, return_exceptions=True)
    assert worker_children() == []


def test_the_client_rate_is_a_token_bucket_per_client() -> None:
    now = [0.0]
    rates = ClientRates(rate=2.0, burst=3, clock=lambda: now[0])
    for _ in range(3):
        rates.take("a")
    with pytest.raises(RateLimited) as limited:
        rates.take("a")
    assert limited.value.retry_after == 1
    rates.take("b")  # another client has its own bucket
    now[0] += 0.5  # one token back
    rates.take("a")
    with pytest.raises(RateLimited):
        rates.take("a")
    now[0] += 100
    for _ in range(3):  # refilled up to the burst, not beyond
        rates.take("a")
    with pytest.raises(RateLimited):
        rates.take("a")


def test_the_client_table_is_bounded() -> None:
    now = [0.0]
    rates = ClientRates(rate=1.0, burst=1, max_clients=2, clock=lambda: now[0])
    rates.take("a")
    rates.take("b")
    rates.take("c")  # "a" is forgotten: it starts again with a full bucket
    rates.take("a")
    with pytest.raises(RateLimited):
        rates.take("c")


def test_bad_settings_are_refused() -> None:
    for workers in (0, MAX_IMAGE_WORKERS + 1):
        with pytest.raises(ValueError, match="workers"):
            DecodePool(workers=workers)
    with pytest.raises(ValueError, match="job_timeout"):
        DecodePool(job_timeout=0)
    with pytest.raises(ValueError, match="rate"):
        ClientRates(rate=0)
