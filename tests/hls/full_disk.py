"""Disks that fill up, for the recording tests: a real small tmpfs (mounted when the tests
run as root with CAP_SYS_ADMIN, as in the CI container; skipped otherwise) and a simulated
one (`DiskBudget`: the recording's writes raise ENOSPC after a number of bytes), which runs
anywhere."""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

import relay.hls.recording


@contextmanager
def small_tmpfs(path: Path, size: int) -> Iterator[Path]:
    """A tmpfs of `size` bytes mounted at `path` for the block; skip the test when this
    process may not mount one."""
    path.mkdir(parents=True, exist_ok=True)
    try:
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755",
                                  "tmpfs", str(path)], capture_output=True, text=True,
                                 timeout=30, check=False)
    except OSError as exc:
        pytest.skip(f"cannot run mount ({exc}); a real full disk needs root")
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs ({mounted.stderr.strip()}); a real full disk "
                    "needs root with CAP_SYS_ADMIN")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=30,
                       check=False)


def fill(directory: Path) -> int:
    """Take every free byte of `directory`'s file system with a filler file; its size."""
    written = 0
    with (directory / "filler").open("wb", buffering=0) as filler:
        chunk = bytes(64 * 1024)
        while True:
            try:
                written += filler.write(chunk) or 0
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
                if len(chunk) == 1:
                    return written
                chunk = chunk[:len(chunk) // 2]


class DiskBudget:
    """Stands in for `relay.hls.recording._write_all`: writes for real until `budget` bytes
    are spent, then writes what is left of the budget and raises ENOSPC, as a file system
    that fills up half-way through a write does."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.failures = 0

    def __call__(self, fd: int, data: bytes) -> None:
        if len(data) <= self.budget:
            self.budget -= len(data)
            os.write(fd, data)  # a regular file takes it whole
            return
        if self.budget:
            os.write(fd, data[:self.budget])
            self.budget = 0
        self.failures += 1
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    @contextmanager
    def installed(self, monkeypatch: pytest.MonkeyPatch) -> Iterator[DiskBudget]:
        with monkeypatch.context() as patch:
            patch.setattr(relay.hls.recording, "_write_all", self)
            yield self
