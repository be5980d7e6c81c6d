"""The live window's spool for sessions that record nothing: where its files go, how many
writes may wait, what a failed write leaves, and the directories a dead process left."""

from __future__ import annotations

import asyncio
import fcntl
import functools
import os
import subprocess
import sys
from pathlib import Path

import pytest

from relay.hls.disk import DiskPool
from relay.hls.spool import _LOCK, MAX_SPOOL_WRITES, Spools

pytestmark = pytest.mark.anyio


async def test_writes_delete_what_the_playlist_let_go_and_the_end_removes_all(
        tmp_path: Path) -> None:
    spools = Spools(tmp_path / "spool")
    spool = spools.session("stream1")
    stored: dict[int, str] = {}
    for msn in range(5):
        assert spool.put(msn, [b"a" * msn, b"b"], keep_from=max(0, msn - 2),
                         done=functools.partial(stored.__setitem__, msn))
        for _ in range(100):  # one segment at a time, as a live stream completes them
            if msn in stored:
                break
            await asyncio.sleep(0.01)
    assert await asyncio.to_thread(Path(stored[4]).read_bytes) == b"aaaab"
    names = sorted(path.name for path in await asyncio.to_thread(
        lambda: list(spool.directory.iterdir())))
    assert names == ["2.m4s", "3.m4s", "4.m4s"]  # the last put let 0 and 1 go
    assert spool.directory.parent == spools.directory and spools.writes == 5
    await spool.close()
    assert not spool.directory.exists() and spools.directory.is_dir()
    assert not spool.put(5, [b"x"], keep_from=0, done=lambda path: None)  # closed
    await asyncio.to_thread(spools.close)
    assert not spools.directory.exists()


async def test_at_most_max_spool_writes_wait_and_a_failed_one_stays_in_memory(
        tmp_path: Path) -> None:
    pool = DiskPool(1)
    spools = Spools(tmp_path / "spool", disk=pool)
    spool = spools.session("stream1")
    done: list[str] = []
    accepted = [spool.put(msn, [b"x"], keep_from=0, done=done.append)
                for msn in range(MAX_SPOOL_WRITES + 2)]
    assert accepted == [True] * MAX_SPOOL_WRITES + [False] * 2
    await spool.close()
    # A write that fails (here: the spool directory is a file) is counted, logged, and
    # never reported stored.
    (tmp_path / "blocked").mkdir()
    blocked = Spools(tmp_path / "blocked", disk=pool)
    (blocked.directory).write_bytes(b"")
    failing = blocked.session("stream2")
    reported: list[str] = []
    assert failing.put(0, [b"x"], keep_from=0, done=reported.append)
    for _ in range(100):
        if blocked.failures:
            break
        await asyncio.sleep(0.01)
    assert blocked.failures == 1 and reported == []
    # ...and stops the session's spool (a full disk would fail every write).
    assert not failing.put(1, [b"x"], keep_from=0, done=reported.append)
    pool.shutdown()


def test_a_dead_processes_spool_is_removed_and_a_live_ones_kept(tmp_path: Path) -> None:
    root = tmp_path / "spool"
    dead = root / "111-dead"
    (dead / "stream-1").mkdir(parents=True)
    (dead / _LOCK).write_bytes(b"")
    (dead / "stream-1" / "3.m4s").write_bytes(b"x")
    foreign = root / "not-ours"  # no lock file: left alone
    foreign.mkdir()
    alive = root / "222-alive"
    alive.mkdir()
    (alive / _LOCK).write_bytes(b"")
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, os, sys; fd = os.open(sys.argv[1], os.O_RDWR); "
         "fcntl.flock(fd, fcntl.LOCK_EX); print('locked', flush=True); sys.stdin.read()",
         str(alive / _LOCK)], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"locked\n"
        spools = Spools(root)
        spools.prepare()
        assert not dead.exists() and alive.is_dir() and foreign.is_dir()
        # This process holds its own lock while it runs.
        fd = os.open(spools.directory / _LOCK, os.O_RDWR)
        try:
            with pytest.raises(BlockingIOError):
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(fd)
        spools.close()
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(10)
        if holder.stdout is not None:
            holder.stdout.close()
