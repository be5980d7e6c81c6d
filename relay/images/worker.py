"""Image worker processes: each makes one image at a time, outside the relay's process.

Theory of operation: a `WorkerProcess` is a child `python -m relay.images.worker` (a fresh
interpreter, started by subprocess from a thread: never a fork of the running uvloop
process, nor a spawn that blocks its loop) at WORKER_NICENESS, so that FFmpeg's
decoders and Pillow's encoders neither hold the relay's GIL nor, when one crashes, take the
relay down. The two talk over the child's stdin and stdout in frames: a kind byte, a 4-byte
big-endian length, the payload.

    relay -> worker   J  a job: the pickle of (function, args); the worker calls
                         function(reader, *args), `reader` asking the relay for bytes
                      B  the bytes of a read the worker asked for
                      G  that read's media is gone (the worker's read raises MediaGone)
    worker -> relay   Y  ready (once, after its imports)
                      R  read: the key (UTF-8) of bytes the job needs from the relay's memory
                         (a live window's init section and fragments)
                      O  done: a 2-byte length, a JSON header (media type, keyframe time),
                         the image's bytes
                      E  failed: JSON {"kind": "param" | "gone" | "failed", ...}

The relay trusts what it sends (a pickle). It does not trust what comes back, since the
worker runs FFmpeg on media a peer sent: answers are bytes and JSON, never unpickled, at most
MAX_ANSWER_BYTES, and a worker that answers out of turn, dies or takes longer than the job
timeout is killed; the job then fails with ImageWorkerFailed (the route's 500) and the pool
starts another worker for the next job.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import os
import pickle
import signal
import struct
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Final

from relay.images.jobs import Rendered
from relay.images.media import MediaGone, MediaReader
from relay.images.params import ImageParamError
from relay.logs import peer_text

#: Niceness of the worker processes (0..19, higher yields more): when the cores are short,
#: the scheduler gives them to the event loop (ingest, playback) before image decodes.
WORKER_NICENESS: Final = 10
#: Seconds a new worker has to import PyAV and Pillow and say it is ready.
WORKER_START_TIMEOUT: Final = 30.0
#: Seconds one image may take in a worker (a 10 s animated image of 1080p media decodes
#: every frame of it); past it the worker is killed and replaced.
DEFAULT_IMAGE_JOB_TIMEOUT: Final = 30.0
#: Seconds a closing pool waits for its workers to end after their stdin closes, before it
#: kills them.
WORKER_STOP_TIMEOUT: Final = 2.0
#: Largest answer a worker may send (a frame's length): a 640-px animated GIF of 300 frames
#: stays far below it.
MAX_ANSWER_BYTES: Final = 128 * 1024 * 1024

#: What a worker imports before it says it is ready (PyAV and Pillow with it), so that its
#: first job does not wait for them; the relay's own process never imports it
#: (`relay.images.jobs`).
RENDER_MODULE: Final = "relay.images.render"

_HEADER: Final = struct.Struct(">cI")
# The child imports the relay package from where this process did.
_RELAY_ROOT: Final = str(Path(__file__).resolve().parent.parent.parent)
_JOB, _BYTES, _GONE = b"J", b"B", b"G"
_READY, _READ, _DONE, _FAILED = b"Y", b"R", b"O", b"E"


class ImageWorkerFailed(Exception):
    """The image could not be made: its worker died, hung, or the job raised an error that
    is not the request's (a bug); answered 500."""


@dataclass(frozen=True, slots=True)
class ImageJob:
    """What a worker runs: `function(reader, *args)`, a module-level function (pickled by
    name) and picklable arguments; `reader` answers the worker's reads from the relay's
    memory (None: every read is MediaGone)."""

    function: Callable[..., Rendered]
    args: tuple[object, ...]
    reader: MediaReader | None = field(default=None, compare=False)


# -- the relay's side ------------------------------------------------------------------------

class WorkerProcess:
    """One worker, started with `start()`; `run()` one job at a time."""

    def __init__(self, popen: subprocess.Popen[bytes], reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter, reading: asyncio.BaseTransport) -> None:
        self._popen = popen
        self._reader = reader
        self._writer = writer
        self._reading = reading
        self.broken = False  # killed, or must be: not to be given another job

    @classmethod
    async def start(cls, *, within: float = WORKER_START_TIMEOUT) -> WorkerProcess:
        """A ready worker; ImageWorkerFailed if none is ready `within` seconds."""
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            [_RELAY_ROOT, *filter(None, [env.get("PYTHONPATH")])])
        # Started from a thread by subprocess (vfork + exec): uvloop's spawn forks the whole
        # relay on the loop, tens of milliseconds of page tables for a relay of a few
        # hundred MB, and then waits on the loop for the child's exec.
        popen = await asyncio.to_thread(
            subprocess.Popen, [sys.executable, "-m", "relay.images.worker"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, bufsize=0)
        assert popen.stdin is not None and popen.stdout is not None
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        try:
            reading, _ = await loop.connect_read_pipe(
                lambda: asyncio.StreamReaderProtocol(reader), popen.stdout)
            writing, protocol = await loop.connect_write_pipe(
                lambda: asyncio.StreamReaderProtocol(asyncio.StreamReader()), popen.stdin)
        except BaseException:
            popen.kill()
            await asyncio.to_thread(popen.wait)
            raise
        worker = cls(popen, reader, asyncio.StreamWriter(writing, protocol, None, loop),
                     reading)
        try:
            async with asyncio.timeout(within):
                kind, _ = await worker._receive()
            if kind != _READY:
                raise ImageWorkerFailed(f"the image worker said {kind!r} before it was ready")
        except (TimeoutError, ImageWorkerFailed, OSError, asyncio.IncompleteReadError) as exc:
            await worker.kill()
            raise ImageWorkerFailed(f"an image worker did not start within {within:g} s "
                                    f"({worker.exit_status() or exc}); check that PyAV and "
                                    "Pillow import in the relay's Python") from None
        except BaseException:
            await worker.kill()
            raise
        return worker

    @property
    def pid(self) -> int:
        return self._popen.pid

    async def run(self, job: ImageJob, seconds: float) -> Rendered:
        """The job's image, made within `seconds`; its own errors as the job raised them
        (ImageParamError, MediaGone), others and the worker's failures as
        ImageWorkerFailed (the worker is then killed when it broke the protocol, died or
        took too long)."""
        if self.broken:
            raise ImageWorkerFailed("this image worker was stopped")
        payload = pickle.dumps((job.function, job.args), protocol=pickle.HIGHEST_PROTOCOL)
        try:
            async with asyncio.timeout(seconds):
                await self._send(_JOB, payload)
                while True:
                    kind, data = await self._receive()
                    if kind == _READ:
                        await self._answer_read(job.reader, data)
                    elif kind == _DONE:
                        result: Rendered | Exception = _rendered(data)
                        break
                    elif kind == _FAILED:
                        result = _failure(data)
                        break
                    else:
                        raise ImageWorkerFailed(f"the image worker answered {kind!r} "
                                                "out of turn")
        except TimeoutError:
            await self.kill()
            raise ImageWorkerFailed(f"the image took longer than {seconds:g} s; its worker "
                                    "was stopped and is replaced; retry, or ask a shorter "
                                    "or smaller image") from None
        except (OSError, asyncio.IncompleteReadError):
            await self.stop()  # its pipes closed: it ended, or is ending
            raise ImageWorkerFailed(f"the image worker stopped while making this image "
                                    f"({self.exit_status()}); it is replaced, retry") from None
        except ImageWorkerFailed:  # an answer that breaks the protocol
            await self.kill()
            raise
        except BaseException:  # cancelled mid-job: the worker's state is unknown
            self.broken = True
            self._popen.kill()  # reaped by the pool (`kill`)
            raise
        if isinstance(result, Exception):
            raise result  # the job's own error: the worker goes on
        return result

    async def _answer_read(self, reader: MediaReader | None, key: bytes) -> None:
        try:
            if reader is None:
                raise MediaGone("no media in the relay's memory for this job")
            # Off the loop: a segment the live window no longer holds is read from its file
            # (relay.hls.disk.read_stored), and joining parts copies a few megabytes.
            data = await asyncio.to_thread(reader.read, key.decode("utf-8", errors="replace"))
        except MediaGone:
            await self._send(_GONE, b"")
            return
        await self._send(_BYTES, data)

    async def _send(self, kind: bytes, payload: bytes) -> None:
        self._writer.write(_HEADER.pack(kind, len(payload)))
        self._writer.write(payload)
        await self._writer.drain()

    async def _receive(self) -> tuple[bytes, bytes]:
        kind, length = _HEADER.unpack(await self._reader.readexactly(_HEADER.size))
        if length > MAX_ANSWER_BYTES:
            raise ImageWorkerFailed(f"the image worker sent {length} bytes, over "
                                    f"MAX_ANSWER_BYTES ({MAX_ANSWER_BYTES})")
        return kind, await self._reader.readexactly(length)

    def exit_status(self) -> str:
        """How the process ended, for an error message ('' while it runs)."""
        code = self._popen.returncode
        if code is None:
            return ""
        if code < 0:
            with contextlib.suppress(ValueError):
                return f"killed by {signal.Signals(-code).name}"
            return f"killed by signal {-code}"
        return f"exit status {code}"

    async def stop(self, grace: float = WORKER_STOP_TIMEOUT) -> None:
        """End the worker: its stdin closed (an idle worker exits), killed after `grace`
        seconds."""
        self.broken = True
        self._writer.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            await asyncio.to_thread(self._popen.wait, grace)
        await self.kill()

    async def kill(self) -> None:
        """Kill the worker (unless it has ended), reap it and close its pipes."""
        self.broken = True
        self._popen.kill()  # after a poll: a process already reaped is not signalled
        await asyncio.to_thread(self._popen.wait)
        self._writer.close()
        self._reading.close()


def _rendered(data: bytes) -> Rendered:
    """A done frame's image; ImageWorkerFailed if it cannot be read."""
    if len(data) < 2:
        raise ImageWorkerFailed("the image worker's answer has no header")
    size = int.from_bytes(data[:2], "big")
    try:
        header = json.loads(data[2:2 + size])
        media_type, keyframe_time = header["type"], header.get("time")
        if not isinstance(media_type, str) or not (
                keyframe_time is None or isinstance(keyframe_time, int | float)):
            raise TypeError(media_type)
    except (ValueError, KeyError, TypeError):
        raise ImageWorkerFailed("the image worker's answer has a bad header") from None
    return Rendered(data[2 + size:], media_type,
                    None if keyframe_time is None else float(keyframe_time))


def _failure(data: bytes) -> Exception:
    """A failed frame's error as the route expects it; ImageWorkerFailed (raised) if it
    cannot be read."""
    try:
        failure = json.loads(data)
        kind, message = failure["kind"], str(failure["message"])
    except (ValueError, KeyError, TypeError):
        raise ImageWorkerFailed("the image worker's error could not be read") from None
    if kind == "param":
        return ImageParamError(peer_text(str(failure.get("field", "?"))), peer_text(message))
    if kind == "gone":
        return MediaGone(peer_text(message))
    return ImageWorkerFailed(f"the image could not be made: {peer_text(message)}")


# -- the worker's side -----------------------------------------------------------------------

class _Channel:
    """The worker's end of the frames, blocking."""

    def __init__(self, incoming: IO[bytes], outgoing: IO[bytes]) -> None:
        self._in = incoming
        self._out = outgoing

    def send(self, kind: bytes, payload: bytes) -> None:
        self._out.write(_HEADER.pack(kind, len(payload)) + payload)
        self._out.flush()

    def receive(self) -> tuple[bytes, bytes] | None:
        """The next frame; None at the end of the input (the relay closed it or ended)."""
        header = self._in.read(_HEADER.size)
        if len(header) < _HEADER.size:
            return None
        kind, length = _HEADER.unpack(header)
        payload = self._in.read(length)
        if len(payload) < length:
            return None
        return kind, payload


class _RelayReader:
    """A MediaReader that asks the relay (a live window's bytes are in its memory)."""

    def __init__(self, channel: _Channel) -> None:
        self._channel = channel

    def read(self, key: str) -> bytes:
        self._channel.send(_READ, key.encode("utf-8"))
        frame = self._channel.receive()
        if frame is None:
            raise SystemExit(0)  # the relay is gone
        kind, payload = frame
        if kind == _BYTES:
            return payload
        raise MediaGone(key)


def _serve(channel: _Channel) -> None:
    reader = _RelayReader(channel)
    while (frame := channel.receive()) is not None:
        kind, payload = frame
        if kind != _JOB:
            raise SystemExit(f"relay image worker: a {kind!r} frame where a job was due")
        function, args = pickle.loads(payload)  # from the relay, which this process trusts
        try:
            result: Rendered = function(reader, *args)
        except ImageParamError as exc:
            channel.send(_FAILED, json.dumps({
                "kind": "param", "field": exc.field,
                "message": str(exc).removeprefix(f"{exc.field}: ")}).encode())
        except MediaGone as exc:
            channel.send(_FAILED, json.dumps({"kind": "gone", "message": str(exc)}).encode())
        except Exception as exc:
            channel.send(_FAILED, json.dumps({
                "kind": "failed", "message": f"{type(exc).__name__}: {exc}"}).encode())
        else:
            header = json.dumps({"type": result.media_type,
                                 "time": result.keyframe_time}).encode()
            channel.send(_DONE, len(header).to_bytes(2, "big") + header + result.body)


def main() -> None:
    """The worker process: its stdout carries frames only, so what the libraries print
    goes to its stderr (the relay's)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the relay stops its workers itself
    with contextlib.suppress(OSError):
        os.nice(WORKER_NICENESS)
    outgoing = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    importlib.import_module(RENDER_MODULE)
    channel = _Channel(sys.stdin.buffer, outgoing)
    channel.send(_READY, b"")
    with contextlib.suppress(BrokenPipeError):
        _serve(channel)


if __name__ == "__main__":
    main()
