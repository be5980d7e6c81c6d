"""Jobs the image tests run in worker processes (`relay.images.worker`): module-level
functions, which a worker imports by name, and a file-based gate to hold one until a test
lets it go (a worker is another process: no threading.Event reaches it)."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path
from typing import Any

from relay.images.jobs import Rendered
from relay.images.media import MediaReader
from relay.images.params import ImageParamError

#: The directory of the gate `gated_thumbnail` waits for (set before the worker starts:
#: a worker takes its environment from the relay's when it starts).
GATE_ENV = "RELAY_TEST_IMAGE_GATE"
GATE_SECONDS = 20.0


class FileGate:
    """A gate in a directory: a job appends to `runs`, touches `started` and waits for
    `open`."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory

    def open(self) -> None:
        (self.directory / "open").touch()

    @property
    def runs(self) -> int:
        runs = self.directory / "runs"
        return len(runs.read_text().splitlines()) if runs.exists() else 0

    def started(self) -> bool:
        return (self.directory / "started").exists()


async def started(gate: FileGate, within: float = 60.0) -> None:
    """Until a job is at the gate (`within` seconds: a worker's start, PyAV's import, on a
    busy machine)."""
    async with asyncio.timeout(within):
        while not gate.started():  # noqa: ASYNC110 (another process touches a file)
            await asyncio.sleep(0.01)


def _pass(directory: str) -> None:
    gate = Path(directory)
    with open(gate / "runs", "a") as runs:
        runs.write(f"{os.getpid()}\n")
    (gate / "started").touch()
    deadline = time.monotonic() + GATE_SECONDS
    while not (gate / "open").exists():
        if time.monotonic() > deadline:
            raise RuntimeError("the test never opened the gate")
        time.sleep(0.01)


def gated(reader: MediaReader, directory: str, body: bytes) -> Rendered:
    """`body` once the gate in `directory` is open."""
    _pass(directory)
    return Rendered(body, "image/jpeg")


def gated_bad_time(reader: MediaReader, directory: str) -> Rendered:
    """A request's own error (a time outside the media), counted in the gate's runs."""
    _pass(directory)
    raise ImageParamError("time", "99 is outside the media")


def gated_thumbnail(timeline: Any, reader: MediaReader, request: Any) -> Rendered:
    """In place of `render_thumbnail`: held at the gate named by GATE_ENV."""
    _pass(os.environ[GATE_ENV])
    return Rendered(b"jpeg", "image/jpeg")


def kill_own_process(*_: Any) -> Rendered:
    """Dies as a crashing decoder would (as a job, or in place of a render function)."""
    os.kill(os.getpid(), signal.SIGKILL)
    raise AssertionError("not reached")


def hang(*_: Any) -> Rendered:
    """Never answers (a decoder stuck in a loop)."""
    time.sleep(3600)
    raise AssertionError("not reached")


def broken(*_: Any) -> Rendered:
    """A bug in a job: not the request's error."""
    raise KeyError("a bug")


def made(reader: MediaReader, body: bytes) -> Rendered:
    return Rendered(body, "image/jpeg", 1.5)


def read_back(reader: MediaReader, *keys: str) -> Rendered:
    """The bytes of `keys` as the relay gives them, joined by b"|"."""
    return Rendered(b"|".join(reader.read(key) for key in keys), "text/plain")


def worker_pid(reader: MediaReader) -> Rendered:
    return Rendered(str(os.getpid()).encode(), "text/plain")
