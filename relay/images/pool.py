"""Where images are made: a bounded pool of worker processes, never the event loop.

Theory of operation: `DecodePool.run(key, job)` answers from the result cache when it can;
joins the decode already running for the same key (concurrent requests for one image share
one decode: a dict of tasks keyed by (playback id, request, media version)); and otherwise
starts `job` (an `ImageJob`) in a worker process, unless `max_pending` distinct decodes are
already queued or running, when it raises `ImageBusy` (the route answers 503 with
Retry-After) instead of letting the queue grow. A started decode runs to its end even if its
requesters leave, and its result goes to the cache, bounded in entries and bytes (LRU).
`DecodePool.share` puts other image work under the same queue bound and sharing, without the
cache: the image of a live stream another node owns, fetched from that node
(`relay.hls.upstream`).

Processes, not threads: PyAV and Pillow release the GIL only around their C calls; in
worker threads the Python between those calls competed with the event loop for the GIL,
and their garbage (frames, pictures) was collected in the relay's process, in pauses of
15-19 ms while 50 image requests ran (`benchmarks/images.py`). A worker process
(`relay.images.worker`) also keeps a crash of an FFmpeg decoder out of the relay: the
request is answered 500 and the worker replaced. There are `workers` slots; a slot's
process is started when a job first needs it (a relay that serves no image starts none) and
again after its process died or hung (`job_timeout`), and the most recently used slot is
taken first, so that a quiet relay keeps few processes busy.

`ClientRates` is the per-client limit: a token bucket per client address, charged for each
decode a client starts (a cached or shared image costs nothing).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Coroutine, Hashable
from dataclasses import dataclass
from typing import Any, Final, TypeVar, cast

from relay.images.jobs import Rendered
from relay.images.worker import (
    DEFAULT_IMAGE_JOB_TIMEOUT,
    ImageJob,
    ImageWorkerFailed,
    WorkerProcess,
)
from relay.limits import DEFAULT_IMAGE_WORKERS, MAX_IMAGE_WORKERS

#: Distinct decodes queued or running at once; past it a request is answered 503.
DEFAULT_MAX_PENDING_IMAGES: Final = 64
#: Retry-After (seconds) of that 503 and of the rate limit's 429.
BUSY_RETRY_AFTER: Final = 1
#: The result cache: at most this many images, of at most this many bytes together; an
#: image larger than MAX_CACHED_IMAGE_BYTES is served and not kept.
DEFAULT_IMAGE_CACHE_ENTRIES: Final = 1024
DEFAULT_IMAGE_CACHE_BYTES: Final = 64 * 1024 * 1024
MAX_CACHED_IMAGE_BYTES: Final = 8 * 1024 * 1024
#: The per-client limit: decodes a second a client may start on average, and in a burst.
DEFAULT_DECODES_PER_SECOND: Final = 5.0
DEFAULT_DECODE_BURST: Final = 20
#: Clients whose buckets are remembered; past it the least recently seen are forgotten.
MAX_RATE_CLIENTS: Final = 10_000

T = TypeVar("T")
R = TypeVar("R")


class ImageBusy(Exception):
    """Too many decodes queued or running; retry after `retry_after` seconds."""

    def __init__(self, pending: int, limit: int) -> None:
        super().__init__(f"{pending} images are being made (limit {limit}); retry shortly")
        self.retry_after = BUSY_RETRY_AFTER


class RateLimited(Exception):
    """A client started decodes faster than its limit."""

    def __init__(self, retry_after: int, rate: float, burst: int) -> None:
        super().__init__(f"more than {rate:g} new images a second (burst {burst}) from this "
                         f"client; retry after {retry_after} s")
        self.retry_after = retry_after


@dataclass(slots=True)
class ImageCounters:
    """Read by the metrics collector at scrape time (when it is given them)."""

    requests: int = 0
    cache_hits: int = 0
    shared: int = 0  # joined a decode already running
    decodes: int = 0  # decodes started
    decode_seconds: float = 0.0  # ...their time in the workers, summed
    busy: int = 0  # refused: the queue bound
    rate_limited: int = 0
    failed: int = 0  # decodes that raised (a bad time, media gone, a bug, a worker's end)
    worker_starts: int = 0  # worker processes started
    worker_failures: int = 0  # ...killed after a crash, a hang (the job timeout), a bad answer


class _Slot:
    """A place for one worker process (None: not started, or replaced)."""

    __slots__ = ("worker",)

    def __init__(self) -> None:
        self.worker: WorkerProcess | None = None


class DecodePool:
    """Bounded, shared, cached image decodes (see the module docstring)."""

    def __init__(self, *, workers: int = DEFAULT_IMAGE_WORKERS,
                 max_pending: int = DEFAULT_MAX_PENDING_IMAGES,
                 cache_entries: int = DEFAULT_IMAGE_CACHE_ENTRIES,
                 cache_bytes: int = DEFAULT_IMAGE_CACHE_BYTES,
                 job_timeout: float = DEFAULT_IMAGE_JOB_TIMEOUT,
                 counters: ImageCounters | None = None) -> None:
        if not 1 <= workers <= MAX_IMAGE_WORKERS or max_pending < 1 or job_timeout <= 0:
            raise ValueError(f"workers ({workers}) must be 1..{MAX_IMAGE_WORKERS}, "
                             f"max_pending ({max_pending}) at least 1 and job_timeout "
                             f"({job_timeout}) positive")
        self.workers = workers
        self.max_pending = max_pending
        self.cache_entries = cache_entries
        self.cache_bytes = cache_bytes
        self.job_timeout = job_timeout
        self.counters = counters if counters is not None else ImageCounters()
        self._slots = [_Slot() for _ in range(workers)]
        self._idle: asyncio.LifoQueue[_Slot] | None = None  # made on the loop, when used
        self._closed = False
        self._running: dict[Hashable, asyncio.Task[Rendered]] = {}
        self._sharing: dict[Hashable, asyncio.Task[Any]] = {}  # `share`'s, by key
        self._cache: OrderedDict[Hashable, Rendered] = OrderedDict()
        self._cached_bytes = 0

    @property
    def pending(self) -> int:
        """Distinct decodes queued or running, and `share`'s work in progress."""
        return len(self._running) + len(self._sharing)

    @property
    def cached_bytes(self) -> int:
        return self._cached_bytes

    def has(self, key: Hashable) -> bool:
        """Whether `run(key, ...)` would start no decode (cached or running), or
        `share(key, ...)` no new work."""
        return key in self._cache or key in self._running or key in self._sharing

    @property
    def processes(self) -> list[int]:
        """The process ids of the worker processes started and not replaced."""
        return [slot.worker.pid for slot in self._slots
                if slot.worker is not None and not slot.worker.broken]

    async def run(self, key: Hashable, job: ImageJob) -> Rendered:
        """The image for `key`: cached, shared with a running decode, or made by `job` in a
        worker process; ImageBusy past the queue bound; `job`'s exceptions (and
        ImageWorkerFailed) go to every waiter."""
        self.counters.requests += 1
        cached = self._cache.get(key)
        if cached is not None:
            self._cache.move_to_end(key)
            self.counters.cache_hits += 1
            return cached
        task, new = self._join(self._running, key, lambda: self._make(key, job), "relay-image")
        if new:
            self.counters.decodes += 1
        # shield: a requester that leaves (a closed connection) does not cancel the decode
        # the others wait for.
        return await asyncio.shield(task)

    async def share(self, key: Hashable, work: Callable[[], Awaitable[T]]) -> T:
        """`work()`'s result, under the bound and the sharing of decodes but not cached:
        calls with the same key while one runs share it; ImageBusy when `max_pending`
        decodes and works are in progress. For an image another node makes (the owner of a
        live stream): its answer's own Cache-Control says how long it may be kept, and a
        live image's is a second."""
        self.counters.requests += 1
        task, _ = self._join(self._sharing, key, lambda: self._shared(key, work),
                             "relay-image-share")
        # shield: as in `run`, a requester that leaves does not cancel the others' work.
        return cast(T, await asyncio.shield(task))

    def _join(self, running: dict[Hashable, asyncio.Task[R]], key: Hashable,
              start: Callable[[], Coroutine[Any, Any, R]], name: str
              ) -> tuple[asyncio.Task[R], bool]:
        """The task `running` has for `key` (shared), or a new one from `start()` under the
        queue bound (ImageBusy past it); whether it is new."""
        task = running.get(key)
        if task is not None:
            self.counters.shared += 1
            return task, False
        if self.pending >= self.max_pending:
            self.counters.busy += 1
            raise ImageBusy(self.pending, self.max_pending)
        task = asyncio.get_running_loop().create_task(start(), name=name)
        task.add_done_callback(_retrieve)
        running[key] = task
        return task, True

    async def _shared(self, key: Hashable, work: Callable[[], Awaitable[T]]) -> T:
        try:
            return await work()
        finally:
            self._sharing.pop(key, None)

    async def _make(self, key: Hashable, job: ImageJob) -> Rendered:
        try:
            began = time.perf_counter()
            try:
                result = await self._in_worker(job)
            except Exception:
                self.counters.failed += 1
                raise
            finally:
                self.counters.decode_seconds += time.perf_counter() - began
            self._keep(key, result)
            return result
        finally:
            self._running.pop(key, None)

    async def _in_worker(self, job: ImageJob) -> Rendered:
        """`job` run by the next free worker (a new process in a slot without one)."""
        if self._idle is None:
            self._idle = asyncio.LifoQueue()
            for slot in reversed(self._slots):
                self._idle.put_nowait(slot)
        slot = await self._idle.get()
        try:
            if self._closed:
                raise ImageWorkerFailed("the image pool is closed (the relay is stopping)")
            if slot.worker is None or slot.worker.broken:
                slot.worker = await WorkerProcess.start()
                self.counters.worker_starts += 1
            try:
                return await slot.worker.run(job, self.job_timeout)
            finally:
                if slot.worker.broken:
                    if not self._closed:
                        self.counters.worker_failures += 1
                    broken, slot.worker = slot.worker, None  # the next job starts another
                    await broken.kill()  # reaped (killed already, unless cancelled)
        finally:
            if self._closed and slot.worker is not None:
                # Started, or busy, while the pool closed: `aclose` did not see it.
                ending, slot.worker = slot.worker, None
                await ending.stop()
            self._idle.put_nowait(slot)

    def _keep(self, key: Hashable, result: Rendered) -> None:
        size = len(result.body)
        if size > MAX_CACHED_IMAGE_BYTES or size > self.cache_bytes:
            return
        self._cache[key] = result
        self._cached_bytes += size
        while len(self._cache) > self.cache_entries or self._cached_bytes > self.cache_bytes:
            _, dropped = self._cache.popitem(last=False)
            self._cached_bytes -= len(dropped.body)

    async def aclose(self) -> None:
        """Stop taking work: queued decodes fail, `share`'s work is cancelled, and the
        worker processes end (an idle one when its stdin closes; one still making an image
        is killed after WORKER_STOP_TIMEOUT, its requesters answered 500)."""
        self._closed = True
        for task in self._sharing.values():
            task.cancel()
        await asyncio.gather(*(slot.worker.stop() for slot in self._slots
                               if slot.worker is not None))


def _retrieve(task: asyncio.Task[Any]) -> None:
    # Every waiter may have left: the exception was still seen (no "never retrieved" log).
    if not task.cancelled():
        with contextlib.suppress(Exception):
            task.exception()


class ClientRates:
    """A token bucket per client: `rate` decodes a second on average, `burst` at once."""

    def __init__(self, *, rate: float = DEFAULT_DECODES_PER_SECOND,
                 burst: int = DEFAULT_DECODE_BURST, max_clients: int = MAX_RATE_CLIENTS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError(f"rate ({rate}) must be positive and burst ({burst}) at least 1")
        self.rate = rate
        self.burst = burst
        self._max_clients = max_clients
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # tokens, when

    def take(self, client: str) -> None:
        """Charge `client` one decode; RateLimited when its bucket is empty."""
        now = self._clock()
        tokens, when = self._buckets.pop(client, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - when) * self.rate)
        if tokens < 1.0:
            self._buckets[client] = (tokens, now)
            wait = max(1, math.ceil((1.0 - tokens) / self.rate))
            raise RateLimited(wait, self.rate, self.burst)
        self._buckets[client] = (tokens - 1.0, now)  # most recent last
        while len(self._buckets) > self._max_clients:
            self._buckets.popitem(last=False)  # the least recently seen
