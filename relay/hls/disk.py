"""One thread for the recordings' file writes, shared by every live session.

Theory of operation: the event loop never blocks on the disk. Each recording job (write an
init, a segment, the playlist; finalize) is a plain function; `DiskThread.run` queues it and
returns a future. One worker thread takes the jobs in submission order, draining whatever
has queued up as one batch, runs them, and then settles the batch's futures with a single
call into the loop. So the loop wakes once per batch, not once per job, and the recording
writes of hundreds of sessions do not each take a thread pool hand-off (and the GIL
contention of several pool threads). Order: jobs run in the order they were queued, so a
session's writes stay in its own order. The thread starts on first use and is a daemon:
`relay serve` awaits each recording's last job before it exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

_Job = tuple[Callable[[], Any], "asyncio.Future[Any]", asyncio.AbstractEventLoop]


class DiskThread:
    """Runs blocking file jobs in one worker thread; see the module's theory of operation."""

    def __init__(self, name: str = "relay-disk") -> None:
        self._name = name
        self._jobs: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.jobs_run = 0
        self.batches = 0

    def run(self, job: Callable[[], T]) -> asyncio.Future[T]:
        """Queue `job`; the future gets its result or its exception."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        if self._thread is None:
            with self._lock:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._work, name=self._name,
                                                    daemon=True)
                    self._thread.start()
        self._jobs.put((job, future, loop))
        return future

    def _work(self) -> None:
        while True:
            batch = [self._jobs.get()]
            while True:
                try:
                    batch.append(self._jobs.get_nowait())
                except queue.Empty:
                    break
            settled: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], bool,
                                                                 Any]]] = {}
            for job, future, loop in batch:
                try:
                    outcome: tuple[bool, Any] = (True, job())
                except BaseException as exc:  # handed to the awaiting coroutine
                    outcome = (False, exc)
                settled.setdefault(loop, []).append((future, *outcome))
            self.jobs_run += len(batch)
            self.batches += 1
            for loop, results in settled.items():
                # A closed loop raises RuntimeError: nobody awaits these any more.
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(_settle, results)


def _settle(results: list[tuple[asyncio.Future[Any], bool, Any]]) -> None:
    for future, ok, value in results:
        if future.done():
            continue  # the awaiting side was cancelled
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)


#: The process's disk thread (recordings of every session).
DISK = DiskThread()
