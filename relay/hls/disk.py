"""A small pool of threads for the recordings' file writes, shared by every live session.

Theory of operation: the event loop never blocks on the disk. Each recording job (write an
init, a segment, the playlist; finalize) is a plain function; `DiskPool.run` queues it and
returns a future. `threads` workers take the jobs one at a time from one queue, so a write
that hangs (a failing sector, a stalled network file system) holds one worker while the
others go on with the other recordings' jobs; a recording is never more than one job in
the pool (its `RecordingQueue` awaits each job before it submits the next), so however many
of its writes hang, it holds at most one worker, and its writes run in its own order
whichever worker takes them.

A worker puts each outcome on a list and wakes the loop only when that list was empty, so
the loop wakes once per batch of finished jobs, not once per job (the recording writes of
hundreds of sessions would otherwise each cost a wake-up and a hand-off).

The pool also keeps the bytes its recordings have queued (`backlog`): a recording adds what
it queues and subtracts what was written, and refuses more past `max_backlog`, so a disk that
falls behind costs a bounded amount of memory however many recordings wait on it.

The workers start on first use and are daemons: `relay serve` awaits each recording's last
job before it exits, except a job that has hung (`RecordingQueue.close`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import queue
import threading
from collections.abc import Callable
from typing import Any, Final, TypeVar

from relay.hls.model import StoredMedia

T = TypeVar("T")

#: Threads that run recording jobs. One hung write holds one of them and leaves the others
#: to every other recording; a stop finalizes this many recordings at a time. File system
#: work (creating a file, fsync) waits in the kernel without the GIL, so a few threads more
#: than cores overlap it: finalizing 2,000 recordings took 5.0 s on 4 threads and 3.8 s on
#: 16 (2 shared cores, ext4).
DEFAULT_DISK_THREADS: Final = 8

#: Bytes that every recording together may have waiting for the disk (segments not yet
#: written); past it, a recording that would queue more ends (its bytes so far are kept).
#: 1 GiB is about 25 minutes of one 6 Mbit/s stream, or 15 s of 2,000 streams at 600 kbit/s.
DEFAULT_MAX_DISK_BACKLOG: Final = 1024 * 1024 * 1024

#: Threads that read stored segments and parts for the playback routes (`StoredReads`): a
#: read from the page cache takes well under a millisecond for a 6 Mbit/s segment, so two
#: serve a busy listener; more only overlap a slow disk.
DEFAULT_READ_THREADS: Final = 2

_Outcome = tuple["asyncio.Future[Any]", bool, Any]
_Job = tuple[Callable[[], Any], "asyncio.Future[Any]", asyncio.AbstractEventLoop] | None


class DiskPool:
    """Runs blocking file jobs in a few worker threads; see the module's theory of operation."""

    def __init__(self, threads: int = DEFAULT_DISK_THREADS, *, name: str = "relay-disk",
                 max_backlog: int = DEFAULT_MAX_DISK_BACKLOG) -> None:
        if threads < 1:
            raise ValueError(f"a disk pool needs at least 1 thread, got {threads}")
        self.threads = threads
        self.max_backlog = max_backlog
        #: Bytes queued by every recording and not written yet (kept by `RecordingQueue`).
        self.backlog = 0
        self._name = name
        self._jobs: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        self._workers: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._settled: dict[asyncio.AbstractEventLoop, list[_Outcome]] = {}
        self.jobs_run = 0
        self.wakeups = 0  # loop wake-ups that settled finished jobs

    def run(self, job: Callable[[], T]) -> asyncio.Future[T]:
        """Queue `job`; the future gets its result or its exception."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        if not self._workers:
            with self._lock:
                if not self._workers:
                    self._workers = [
                        threading.Thread(target=self._work, name=f"{self._name}-{n}",
                                         daemon=True)
                        for n in range(self.threads)]
                    for worker in self._workers:
                        worker.start()
        self._jobs.put((job, future, loop))
        return future

    def shutdown(self) -> None:
        """Let the workers exit once the jobs queued so far are done (a hung one stays)."""
        with self._lock:
            workers, self._workers = self._workers, []
        for _ in workers:
            self._jobs.put(None)

    def _work(self) -> None:
        while (item := self._jobs.get()) is not None:
            job, future, loop = item
            try:
                outcome: _Outcome = (future, True, job())
            except BaseException as exc:  # handed to the awaiting coroutine
                outcome = (future, False, exc)
            with self._lock:
                self.jobs_run += 1
                waiting = self._settled.setdefault(loop, [])
                waiting.append(outcome)
                wake = len(waiting) == 1
            if wake:
                # A closed loop raises RuntimeError: nobody awaits these any more.
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(self._settle, loop)
            # Drop this job before waiting for the next: a worker's locals would otherwise keep
            # its last job (a segment's buffers, 1.5 MB at 6 Mbit/s) alive until the next
            # one, which with 8 idle workers held 8 segments per recording stream.
            del item, job, future, loop, outcome

    def _settle(self, loop: asyncio.AbstractEventLoop) -> None:
        with self._lock:
            outcomes = self._settled.pop(loop, [])
            self.wakeups += 1
        for future, ok, value in outcomes:
            if future.done():
                continue  # the awaiting side was cancelled
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)


#: The process's disk pool (recordings of every session); `relay serve` makes its own from
#: --disk-threads.
DISK = DiskPool()


def read_stored(stored: StoredMedia) -> bytes | None:
    """The bytes `stored` names, read with one pread (blocking: run it off the loop); None
    when the file is gone or shorter (the asset was deleted, the session's spool removed)."""
    try:
        fd = os.open(stored.path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        data = os.pread(fd, stored.length, stored.offset)
    finally:
        os.close(fd)
    return data if len(data) == stored.length else None


class StoredReads:
    """Reads `StoredMedia` for the playback routes in `threads` threads of their own (a
    recording write that hangs does not hold a read up, nor the other way round), sharing
    one read among the requests that ask for the same bytes at the same time: a thousand
    viewers of one old segment cost one read and one copy in memory, not a thousand."""

    def __init__(self, threads: int = DEFAULT_READ_THREADS) -> None:
        self.pool = DiskPool(threads, name="relay-read", max_backlog=0)
        self._reading: dict[StoredMedia, asyncio.Future[bytes | None]] = {}
        self.reads = 0  # reads started (a shared one counts once)
        self.failed = 0  # ...that found the file gone or short (answered 404)

    async def read(self, stored: StoredMedia) -> bytes | None:
        future = self._reading.get(stored)
        if future is None:
            self.reads += 1
            future = self.pool.run(functools.partial(read_stored, stored))
            self._reading[stored] = future
            future.add_done_callback(lambda _: self._reading.pop(stored, None))
        try:
            data = await asyncio.shield(future)
        except OSError:
            data = None
        if data is None:
            self.failed += 1
        return data

    def shutdown(self) -> None:
        self.pool.shutdown()


#: The process's reads of stored media (every playback route's).
STORED_READS = StoredReads()
