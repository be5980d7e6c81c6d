"""The live window's complete segments on disk for a session that records nothing.

Theory of operation: the live playlist keeps in memory only the live edge and serves older
segments of its window from a file (`LivePlaylist.store`). A recording session has that file
already (the recording's segment); a session without one (no recording, or a recording that
ended early) writes each complete segment into its own spool instead:

    DATA_DIR/spool/{process}/          one per process, with a `lock` file it holds locked
        {session}/{msn}.m4s            one per segment while the window may serve it

Each write runs on the process's disk pool (`relay.hls.disk`); the session deletes a
segment's file with a later write once the playlist no longer holds the segment, and its
whole directory when it ends. At most MAX_SPOOL_WRITES writes of one session wait for the
disk: a segment that would pass that bound is not spooled and stays in memory (where it
would have been without a spool); after a failed write (a full disk) the session spools no
more. A process that dies leaves its directory behind; the next
process to start a spool removes every process directory whose lock nobody holds (flock:
several processes may share a data dir, `--workers`).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import functools
import logging
import os
import secrets
import shutil
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Final

from relay.hls.disk import DISK, DiskPool
from relay.hls.model import SEGMENT_URI

log = logging.getLogger("relay.hls")

#: The spool's directory in the data dir.
SPOOL_DIR: Final = "spool"
#: Spool writes one session may have waiting for the disk; a segment past it stays in memory.
MAX_SPOOL_WRITES: Final = 4
#: Seconds a session's end waits for its spool writes before it removes the directory anyway.
SPOOL_CLOSE_SECONDS: Final = 5.0

_LOCK: Final = "lock"


class Spools:
    """The process's spool directory (made, locked and its stale siblings removed on first
    use, in the disk pool) and its sessions' spools."""

    def __init__(self, root: Path, *, disk: DiskPool = DISK) -> None:
        self.root = root
        self.disk = disk
        self.directory = root / f"{os.getpid()}-{secrets.token_hex(4)}"
        self._lock_fd: int | None = None
        self._preparing = threading.Lock()  # writes run in several disk workers at once
        self.writes = 0  # segments written
        self.failures = 0  # writes that failed (the segment stayed in memory)

    def session(self, name: str) -> SessionSpool:
        """A new session's spool (`name`: a stream id, made unique here)."""
        return SessionSpool(self, f"{name}-{secrets.token_hex(4)}")

    def prepare(self) -> None:
        """Blocking: make and lock this process's directory; remove stale ones."""
        with self._preparing:
            if self._lock_fd is not None:
                return
            self.directory.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.directory / _LOCK, os.O_RDWR | os.O_CREAT, 0o600)
            fcntl.flock(fd, fcntl.LOCK_EX)
            self._lock_fd = fd
            for other in self.root.iterdir():
                if other != self.directory and other.is_dir() and _abandoned(other):
                    shutil.rmtree(other, ignore_errors=True)

    def close(self) -> None:
        """Blocking: remove this process's directory (at shutdown)."""
        with self._preparing:
            if self._lock_fd is not None:
                shutil.rmtree(self.directory, ignore_errors=True)
                os.close(self._lock_fd)
                self._lock_fd = None


def _abandoned(directory: Path) -> bool:
    """Whether no process holds `directory`'s lock (one without a lock file is a process's
    that died before it took it, or not ours: left alone unless it has the lock file)."""
    try:
        fd = os.open(directory / _LOCK, os.O_RDWR)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False  # held: a live process's
    finally:
        os.close(fd)  # (closing releases the lock taken)
    return True


class SessionSpool:
    """One session's spool; see the module's theory of operation. Loop side only."""

    def __init__(self, spools: Spools, name: str) -> None:
        self._spools = spools
        self.directory = spools.directory / name
        self._written: list[int] = []  # msns written (or being written), oldest first
        self._pending: set[asyncio.Future[str]] = set()
        self._closed = False
        self._stopped = False  # after a failed write

    def put(self, msn: int, fragments: Sequence[bytes], keep_from: int,
            done: Callable[[str], None]) -> bool:
        """Write segment `msn` (its buffers in order) and delete the files of those below
        `keep_from` (the playlist holds them no more); `done(path)` once written. False when
        MAX_SPOOL_WRITES wait already, or the spool is closed or stopped by a failed write:
        the segment is not spooled."""
        if self._closed or self._stopped or len(self._pending) >= MAX_SPOOL_WRITES:
            return False
        expired = [m for m in self._written if m < keep_from]
        self._written = [m for m in self._written if m >= keep_from] + [msn]
        future = self._spools.disk.run(functools.partial(
            self._write, msn, tuple(fragments), expired))
        self._pending.add(future)

        def written(future: asyncio.Future[str]) -> None:
            self._pending.discard(future)
            if future.cancelled():
                return
            exc = future.exception()
            if exc is not None:
                # A full disk (the likely cause: the recording on it ended too) would fail
                # every write: the session spools no more, and its window stays in memory.
                self._spools.failures += 1
                if not self._stopped:
                    self._stopped = True
                    log.warning("spool %s: a write failed (%s); the session's live window "
                                "stays in memory", self.directory.name, exc)
                return
            self._spools.writes += 1
            if not self._closed:
                done(future.result())

        future.add_done_callback(written)
        return True

    def _write(self, msn: int, fragments: tuple[bytes, ...], expired: list[int]) -> str:
        self._spools.prepare()
        self.directory.mkdir(exist_ok=True)
        for old in expired:
            (self.directory / SEGMENT_URI.format(msn=old)).unlink(missing_ok=True)
        path = self.directory / SEGMENT_URI.format(msn=msn)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            try:
                for data in fragments:
                    view = memoryview(data)
                    while view:
                        view = view[os.write(fd, view):]
            finally:
                os.close(fd)
        except BaseException:
            path.unlink(missing_ok=True)  # give back what a write on a full disk took
            raise
        return str(path)

    async def close(self) -> None:
        """The session ended: wait for its writes (SPOOL_CLOSE_SECONDS at most), then remove
        its directory."""
        if self._closed:
            return
        self._closed = True
        if self._pending:
            await asyncio.wait(set(self._pending), timeout=SPOOL_CLOSE_SECONDS)
        with contextlib.suppress(OSError):
            await self._spools.disk.run(
                functools.partial(shutil.rmtree, self.directory, ignore_errors=True))
