"""SrtListener against real SRT callers on 127.0.0.1: srt-live-transmit (Debian's srt-tools)
fed from stdin, ffmpeg pushing MPEG-TS, and a caller made with Relay's own binding where the
exact reject code must be read back. No timing assertions: every wait has a generous timeout
and waits for a state, never for a duration."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import socket
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from relay.srt.binding import SrtError, connect, lib, set_int, set_str
from relay.srt.decisions import SrtAccept, SrtReject
from relay.srt.listener import (
    MAX_PAYLOAD,
    ConnectionAccepted,
    ConnectionClosed,
    DataReceived,
    SrtEvent,
    SrtLimits,
    SrtListener,
    StatsReported,
)

pytestmark = pytest.mark.anyio

PASSPHRASE = "correct horse battery"
TIMEOUT = 60.0
# A long receiver latency: on a loaded machine retransmissions still arrive in time, so no
# packet is dropped as too late and the bytes compare exactly.
LATENCY_MS = 1000
TS_PACKET = 188
CHUNK = 7 * TS_PACKET  # 1316: what srt-live-transmit and ffmpeg put in one SRT packet
NULL_PACKET = b"\x47\x1f\xff\x10" + b"\xff" * 184


def decide(streamid: str, address: str) -> SrtAccept | SrtReject:
    """The test's admission: a few fixed stream ids, the way SrtAdmission answers."""
    assert address == "127.0.0.1"
    if streamid.startswith("open"):
        return SrtAccept(None)
    if streamid.startswith("secret"):
        return SrtAccept(PASSPHRASE)
    if streamid == "live-already":
        return SrtReject(409, "stream is already live")
    if streamid == "boom":
        raise RuntimeError("the key cache is broken")
    return SrtReject(404, "unknown stream key")


class Recorder:
    """The sink: keeps every batch, wakes waiters."""

    def __init__(self) -> None:
        self.batches: list[list[SrtEvent]] = []
        self.on_batch: Callable[[list[SrtEvent]], None] | None = None
        self._changed = asyncio.Event()

    def __call__(self, batch: list[SrtEvent]) -> None:
        # Views are valid only while held; keep copies of the data so the test can compare.
        self.batches.append(batch)
        if self.on_batch is not None:
            self.on_batch(batch)
        self._changed.set()

    @property
    def events(self) -> list[SrtEvent]:
        return [event for batch in self.batches for event in batch]

    def accepted(self) -> list[ConnectionAccepted]:
        return [e for e in self.events if isinstance(e, ConnectionAccepted)]

    def closed(self, handle: int) -> list[ConnectionClosed]:
        return [e for e in self.events if isinstance(e, ConnectionClosed) and e.handle == handle]

    def stats(self, handle: int) -> list[StatsReported]:
        return [e for e in self.events if isinstance(e, StatsReported) and e.handle == handle]

    def data(self, handle: int) -> bytes:
        return b"".join(bytes(e.data) for e in self.events
                        if isinstance(e, DataReceived) and e.handle == handle)

    async def wait(self, condition: Callable[[], object], what: str) -> None:
        deadline = time.monotonic() + TIMEOUT
        while not condition():
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out waiting for {what}; events: "
                                     f"{[type(e).__name__ for e in self.events][-20:]}")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(left, 0.5))

    async def wait_accepted(self, streamid: str) -> ConnectionAccepted:
        await self.wait(lambda: any(e.streamid == streamid for e in self.accepted()),
                        f"{streamid} accepted")
        return next(e for e in self.accepted() if e.streamid == streamid)


@pytest.fixture
async def recorder() -> Recorder:
    return Recorder()


@contextlib.asynccontextmanager
async def running(recorder: Recorder, *, latency_ms: int = LATENCY_MS,
                  limits: SrtLimits | None = None) -> AsyncIterator[SrtListener]:
    listener = SrtListener("127.0.0.1", 0, latency_ms=latency_ms, decide=decide,
                           sink=recorder, loop=asyncio.get_running_loop(), limits=limits)
    listener.start()
    try:
        yield listener
    finally:
        await listener.close()


@pytest.fixture(scope="module")
def ts_file(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """Three seconds of H.264 + AAC in MPEG-TS from ffmpeg, padded with null packets to a
    whole number of 1316-byte chunks (srt-live-transmit holds back a partial last chunk)."""
    path = tmp_path_factory.mktemp("srt") / "test.ts"
    subprocess.run(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-f", "lavfi",
         "-i", "testsrc2=size=320x240:rate=25", "-f", "lavfi", "-i", "sine=frequency=440",
         "-t", "3", "-c:v", "libx264", "-preset", "ultrafast", "-g", "25", "-c:a", "aac",
         "-f", "mpegts", str(path)], check=True, timeout=120)
    data = path.read_bytes()
    while len(data) % CHUNK:
        data += NULL_PACKET
    return data


def slt_command(port: int, query: str, *options: str) -> list[str]:
    # One SRT payload per 1316 bytes of stdin, as TS over SRT is sent (7 TS packets).
    return ["srt-live-transmit", "-a:no", f"-chunk:{CHUNK}", *options, "file://con",
            f"srt://127.0.0.1:{port}?{query}"]


@contextlib.asynccontextmanager
async def slt(port: int, query: str, *options: str
              ) -> AsyncIterator[asyncio.subprocess.Process]:
    """srt-live-transmit as a caller, reading what to send from its stdin (a pipe)."""
    proc = await asyncio.create_subprocess_exec(
        *slt_command(port, query, *options), stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.communicate()


async def feed(proc: asyncio.subprocess.Process, data: bytes) -> None:
    """Write `data` in 20-packet pieces, letting the loop turn between them (a steady stream
    rather than one burst that could overflow the kernel's UDP buffer)."""
    assert proc.stdin is not None
    for start in range(0, len(data), 20 * CHUNK):
        proc.stdin.write(data[start:start + 20 * CHUNK])
        await proc.stdin.drain()
        await asyncio.sleep(0.005)


async def feed_until(proc: asyncio.subprocess.Process, data: bytes,
                     done: Callable[[], bool]) -> None:
    """Feed `data`, then null TS packets until `done()`: srt-live-transmit holds back the
    last chunk or two it read until more input comes."""
    await feed(proc, data)
    deadline = time.monotonic() + TIMEOUT
    while not done() and time.monotonic() < deadline:
        await feed(proc, NULL_PACKET * 7)
        await asyncio.sleep(0.05)


async def stderr_of(proc: asyncio.subprocess.Process) -> str:
    """Everything the caller wrote to stderr, once it has ended (killed after TIMEOUT)."""
    try:
        _, err = await asyncio.wait_for(proc.communicate(), TIMEOUT)
    except TimeoutError:
        proc.kill()
        _, err = await proc.communicate()
    return err.decode(errors="replace")


async def slt_rejected(port: int, query: str) -> tuple[str, int]:
    """srt-live-transmit's stderr after the listener rejects it, and how many attempts it
    took. srt-live-transmit 1.5.1 now and then hangs silently after a rejection that libsrt
    did deliver (a caller made with the binding gets the code every time, see
    caller_reject_reason), so a silent attempt is retried, up to three."""
    attempts = 0
    while attempts < 3:
        attempts += 1
        proc = await asyncio.create_subprocess_exec(
            *slt_command(port, query), stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE)
        try:
            _, err = await asyncio.wait_for(proc.communicate(), 15)
        except TimeoutError:
            proc.kill()
            _, err = await proc.communicate()
        if "reject" in err.decode(errors="replace").lower():
            break
    return err.decode(errors="replace"), attempts


def ffmpeg_command(port: int, query: str, seconds: int = 3) -> list[str]:
    return ["ffmpeg", "-hide_banner", "-nostdin", "-re", "-f", "lavfi",
            "-i", "testsrc2=size=320x240:rate=25", "-t", str(seconds), "-c:v", "libx264",
            "-preset", "ultrafast", "-g", "25", "-f", "mpegts",
            f"srt://127.0.0.1:{port}?{query}"]


async def run_ffmpeg(port: int, query: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        *ffmpeg_command(port, query), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE)
    err = await stderr_of(proc)
    assert proc.returncode is not None
    return proc.returncode, err


# -- data ----------------------------------------------------------------------------------


async def test_srt_live_transmit_bytes_arrive_exactly_and_in_order(
        recorder: Recorder, ts_file: bytes) -> None:
    async with running(recorder) as listener, slt(listener.port, "streamid=open-1") as proc:
        accepted = await recorder.wait_accepted("open-1")
        assert re.fullmatch(r"127\.0\.0\.1:\d+", accepted.peer)
        await feed_until(proc, ts_file,
                         lambda: len(recorder.data(accepted.handle)) >= len(ts_file))
        # Every view handed over is read-only: the sink cannot write into a receive slab.
        view = next(e.data for e in recorder.events if isinstance(e, DataReceived))
        assert view.readonly
        proc.kill()
        await recorder.wait(lambda: recorder.closed(accepted.handle), "the close")
    received = recorder.data(accepted.handle)
    assert received[:len(ts_file)] == ts_file
    assert received[len(ts_file):] == NULL_PACKET * ((len(received) - len(ts_file)) // 188)
    assert listener.counters.bytes_received == len(received)
    assert listener.counters.backlog_dropped_bytes == 0
    # Accepted, then the data, then closed: nothing of a connection comes after its close.
    kinds = [type(e) for e in recorder.events if e.handle == accepted.handle
             and not isinstance(e, StatsReported)]
    assert kinds[0] is ConnectionAccepted and kinds[-1] is ConnectionClosed
    assert ConnectionAccepted not in kinds[1:] and ConnectionClosed not in kinds[:-1]


async def test_ffmpeg_with_passphrase_pushes_ts_and_stats_arrive(recorder: Recorder) -> None:
    async with running(recorder) as listener:
        code, err = await run_ffmpeg(
            listener.port, f"streamid=secret-1&passphrase={PASSPHRASE}&pbkeylen=16")
        assert code == 0, err[-2000:]
        accepted = await recorder.wait_accepted("secret-1")
        await recorder.wait(lambda: recorder.closed(accepted.handle), "the close")
        await recorder.wait(lambda: recorder.stats(accepted.handle), "a stats report")
    data = recorder.data(accepted.handle)
    assert len(data) > 10 * CHUNK and len(data) % TS_PACKET == 0
    assert all(data[i] == 0x47 for i in range(0, len(data), TS_PACKET))
    stats = recorder.stats(accepted.handle)[-1].stats
    assert stats.packets_received > 0 and stats.bytes_received > 0
    assert stats.packets_undecrypted == 0
    assert stats.rtt_ms >= 0 and stats.receive_rate_mbps >= 0
    assert recorder.closed(accepted.handle)[0].reason  # libsrt's words for the end


async def test_wrong_passphrase_fails_the_handshake(recorder: Recorder) -> None:
    async with running(recorder) as listener:
        code, err = await run_ffmpeg(listener.port,
                                     "streamid=secret-2&passphrase=not-the-passphrase")
        assert code != 0
        assert "passphrase" in err.lower()  # the caller's libsrt: "Incorrect passphrase"
        code, err = await run_ffmpeg(listener.port, "streamid=secret-3")  # none at all
        assert code != 0
    assert not recorder.accepted()


# -- admission -------------------------------------------------------------------------------


def caller_reject_reason(port: int, streamid: str) -> int:
    """Connect with Relay's own binding (blocking: run it in a thread) and return the reject
    reason the caller got."""
    lib.srt_startup()
    sock = lib.srt_create_socket()
    try:
        set_int(sock, lib.SRTO_TRANSTYPE, lib.SRTT_LIVE)
        set_str(sock, lib.SRTO_STREAMID, streamid)
        with pytest.raises(SrtError) as failure:
            connect(sock, "127.0.0.1", port)
        assert failure.value.code == lib.SRT_ECONNREJ
        return int(lib.srt_getrejectreason(sock))
    finally:
        lib.srt_close(sock)
        lib.srt_cleanup()


async def test_rejected_streamid_fails_the_caller_with_the_reason(recorder: Recorder) -> None:
    async with running(recorder) as listener:
        assert await asyncio.to_thread(caller_reject_reason, listener.port, "nope") == 1404
        assert await asyncio.to_thread(
            caller_reject_reason, listener.port, "live-already") == 1409
        # ffmpeg fails; its libsrt logs the reject as an application's reason.
        code, err = await run_ffmpeg(listener.port, "streamid=nope")
        assert code != 0
        assert "rejection reason" in err
        err, attempts = await slt_rejected(listener.port, "streamid=live-already")
        assert "rejection reason" in err
    assert not recorder.accepted()
    assert listener.counters.callers_rejected == 3 + attempts


async def test_an_exception_in_decide_rejects_and_is_logged(
        recorder: Recorder, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="relay.srt")
    async with running(recorder) as listener:
        assert await asyncio.to_thread(caller_reject_reason, listener.port, "boom") == 1500
        err, attempts = await slt_rejected(listener.port, "streamid=boom")
        assert "rejection reason" in err
        # The listener goes on: the next caller is let in.
        async with slt(listener.port, "streamid=open-after-boom"):
            await recorder.wait_accepted("open-after-boom")
    assert listener.counters.decide_errors == 1 + attempts
    assert any("admission check failed (RuntimeError: the key cache is broken)"
               in record.getMessage() for record in caplog.records)


async def test_latency_the_larger_side_wins(recorder: Recorder) -> None:
    async with running(recorder, latency_ms=200) as listener, \
            slt(listener.port, "streamid=open-low&latency=50"), \
            slt(listener.port, "streamid=open-high&latency=700"):
        low = await recorder.wait_accepted("open-low")
        high = await recorder.wait_accepted("open-high")
        await recorder.wait(lambda: recorder.stats(low.handle) and
                            recorder.stats(high.handle), "stats of both")
    assert recorder.stats(low.handle)[0].stats.latency_ms == 200
    assert recorder.stats(high.handle)[0].stats.latency_ms == 700


# -- closing ---------------------------------------------------------------------------------


async def test_closing_one_connection_leaves_the_other_going(
        recorder: Recorder, ts_file: bytes) -> None:
    async with running(recorder) as listener, slt(listener.port, "streamid=open-a") as a, \
            slt(listener.port, "streamid=open-b") as b:
        first = await recorder.wait_accepted("open-a")
        second = await recorder.wait_accepted("open-b")
        await feed(a, ts_file[:50 * CHUNK])
        await feed_until(b, ts_file[:50 * CHUNK],
                         lambda: len(recorder.data(second.handle)) >= 50 * CHUNK)
        assert recorder.data(second.handle).startswith(ts_file[:50 * CHUNK])
        listener.close_connection(first.handle)
        await recorder.wait(lambda: recorder.closed(first.handle), "a closed")
        assert recorder.closed(first.handle)[0].reason == "closed by Relay"
        before = len(recorder.data(second.handle))
        await feed_until(b, ts_file[50 * CHUNK:100 * CHUNK], lambda: ts_file[
            50 * CHUNK:100 * CHUNK] in recorder.data(second.handle)[before:])
        assert ts_file[50 * CHUNK:100 * CHUNK] in recorder.data(second.handle)[before:]
        assert not recorder.closed(second.handle)
        listener.close_connection(first.handle)  # already closed: nothing happens
    assert len(recorder.closed(first.handle)) == 1


async def test_close_joins_the_thread_with_callers_connected(
        recorder: Recorder, ts_file: bytes) -> None:
    listener = SrtListener("127.0.0.1", 0, latency_ms=LATENCY_MS, decide=decide,
                           sink=recorder, loop=asyncio.get_running_loop())
    listener.start()
    async with slt(listener.port, "streamid=open-x") as x, \
            slt(listener.port, f"streamid=secret-y&passphrase={PASSPHRASE}") as y:
        handles = [(await recorder.wait_accepted(sid)).handle for sid in ("open-x", "secret-y")]
        await feed(x, ts_file[:20 * CHUNK])
        await feed(y, ts_file[:20 * CHUNK])
        assert x.returncode is None and y.returncode is None  # both callers still there
        assert not recorder.closed(handles[0]) and not recorder.closed(handles[1])
        await listener.close()
        # Both closes reached the sink before close() returned; the thread is gone.
        for handle in handles:
            assert recorder.closed(handle)
        assert not [t for t in threading.enumerate() if t.name.startswith("srt-listener")]
    assert listener.counters.connections_open == 0


async def test_start_on_a_taken_port_names_the_port(recorder: Recorder) -> None:
    async with running(recorder) as first:
        second = SrtListener("127.0.0.1", first.port, decide=decide, sink=recorder,
                             loop=asyncio.get_running_loop())
        with pytest.raises(OSError, match=rf"UDP 127\.0\.0\.1:{first.port}.*--srt-port"):
            second.start()


# -- bounds ----------------------------------------------------------------------------------


class BlockingFeeder:
    """Feeds srt-live-transmit from a thread, so the data flows while the loop is blocked."""

    def __init__(self, port: int, query: str, data: bytes) -> None:
        self.proc = subprocess.Popen(slt_command(port, query), stdin=subprocess.PIPE,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.data = data
        self.go = threading.Event()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._feed, daemon=True)
        self.thread.start()

    def _feed(self) -> None:
        assert self.proc.stdin is not None
        if not self.go.wait(TIMEOUT):
            return
        with contextlib.suppress(BrokenPipeError):
            for start in range(0, len(self.data), 20 * CHUNK):
                self.proc.stdin.write(self.data[start:start + 20 * CHUNK])
                self.proc.stdin.flush()
                time.sleep(0.005)
            # Null packets after: srt-live-transmit holds back its last chunks until more.
            while not self.stop.wait(0.05):
                self.proc.stdin.write(NULL_PACKET * 7)
                self.proc.stdin.flush()

    def close(self) -> None:
        self.stop.set()
        self.proc.kill()
        self.proc.wait()
        self.thread.join(TIMEOUT)
        assert self.proc.stdin is not None
        with contextlib.suppress(BrokenPipeError):
            self.proc.stdin.close()


@contextlib.contextmanager
def feeder(port: int, query: str, data: bytes) -> Iterator[BlockingFeeder]:
    fed = BlockingFeeder(port, query, data)
    try:
        yield fed
    finally:
        fed.close()


def block_loop_until(condition: Callable[[], bool]) -> None:
    """Hold the event loop (as a slow consumer would) until the thread has done its part."""
    deadline = time.monotonic() + TIMEOUT
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)


async def test_what_arrives_while_the_loop_is_busy_comes_in_one_batch(
        recorder: Recorder, ts_file: bytes) -> None:
    async with running(recorder) as listener:
        with feeder(listener.port, "streamid=open-batch", ts_file) as fed:
            accepted = await recorder.wait_accepted("open-batch")
            blocked: list[int] = []

            def on_batch(batch: list[SrtEvent]) -> None:
                if not blocked and any(isinstance(e, DataReceived) for e in batch):
                    blocked.append(len(recorder.batches))
                    block_loop_until(
                        lambda: listener.counters.bytes_received >= len(ts_file))

            recorder.on_batch = on_batch
            fed.go.set()
            await recorder.wait(lambda: blocked and len(recorder.batches) > blocked[0],
                                "the next batch")
        # SRT live mode may drop a late packet on a loaded machine (TLPKTDROP), so what
        # arrived is checked payload by payload: whole, in order, nearly all of the file.
        received = recorder.data(accepted.handle)
        assert payloads_in_order(received, ts_file) >= 0.9 * len(ts_file) // CHUNK
        # Everything received while the loop was held came in the one next batch, its
        # payloads joined into views (at most one per receive slab), not one per datagram.
        after = recorder.batches[blocked[0]]
        views = [e for e in after if isinstance(e, DataReceived)]
        held = sum(len(e.data) for e in views)
        assert held > 2 * MAX_PAYLOAD
        assert len(views) <= held // listener.limits.recv_slab_bytes + 2
        through_next = sum(len(e.data) for b in recorder.batches[:blocked[0] + 1]
                           for e in b if isinstance(e, DataReceived))
        assert through_next >= 0.9 * len(ts_file)


async def test_backlog_over_max_pending_bytes_is_dropped_and_counted(
        recorder: Recorder, ts_file: bytes) -> None:
    limits = SrtLimits(max_pending_bytes=16 * 1024, recv_slab_bytes=8 * 1024)
    async with running(recorder, limits=limits) as listener:
        with feeder(listener.port, "streamid=open-slow", ts_file) as fed:
            accepted = await recorder.wait_accepted("open-slow")
            blocked: list[int] = []

            def on_batch(batch: list[SrtEvent]) -> None:
                if not blocked and any(isinstance(e, DataReceived) for e in batch):
                    blocked.append(len(recorder.batches))
                    block_loop_until(lambda: listener.counters.bytes_received
                                     + listener.counters.backlog_dropped_bytes >= len(ts_file))

            recorder.on_batch = on_batch
            fed.go.set()
            await recorder.wait(lambda: blocked and len(recorder.batches) > blocked[0],
                                "the batch after the block")
            await recorder.wait(lambda: any(e.stats.backlog_dropped_bytes
                                            for e in recorder.stats(accepted.handle)),
                                "stats with the drops")
        after = recorder.batches[blocked[0]]
        held = sum(len(e.data) for e in after if isinstance(e, DataReceived))
        assert held <= limits.max_pending_bytes
    counters = listener.counters
    assert counters.backlog_dropped_bytes > 0
    received = recorder.data(accepted.handle)
    assert len(received) == counters.bytes_received
    # Whole payloads were dropped, the rest arrived intact and in order.
    payloads_in_order(received, ts_file)


def payloads_in_order(received: bytes, sent_file: bytes) -> int:
    """Check that `received` is a subsequence of the 1316-byte payloads of `sent_file`
    (null-packet payloads sent after it aside); return how many of the file's it holds."""
    sent = iter([sent_file[i:i + CHUNK] for i in range(0, len(sent_file), CHUNK)])
    found = 0
    for start in range(0, len(received), CHUNK):
        payload = received[start:start + CHUNK]
        if payload == NULL_PACKET * 7:
            continue
        assert any(payload == candidate for candidate in sent), f"payload at {start}"
        found += 1
    return found


# -- idle: the thread blocks while it has nothing to wait for --------------------------------
# Counted in wake-ups, not time: a thread blocked on its event makes no voluntary context
# switch; one waiting in srt_epoll_uwait makes about 100 a second (libsrt re-checks every
# ~10 ms whatever the timeout).
IDLE_WINDOW = 1.0
#: Voluntary context switches allowed in IDLE_WINDOW: a blocked thread makes none.
IDLE_SWITCHES_MAX = 3
SHORT_LINGER = SrtLimits(handshake_linger_ms=1000)


def voluntary_switches(listener: SrtListener) -> int:
    assert listener._thread is not None and listener._thread.native_id is not None
    status = Path(f"/proc/self/task/{listener._thread.native_id}/status").read_text()
    found = re.search(r"^voluntary_ctxt_switches:\s+(\d+)$", status, re.M)
    assert found is not None, status
    return int(found[1])


async def until_idle(listener: SrtListener, waits_before: int) -> None:
    """Until the thread has blocked again since `waits_before` idle waits."""
    deadline = time.monotonic() + TIMEOUT
    while listener.counters.idle_waits <= waits_before:
        assert time.monotonic() < deadline, "the listener thread never went idle"
        await asyncio.sleep(0.02)


def libsrt_threads() -> list[str]:
    """The names of this process's libsrt threads (SRT:GC, SRT:RcvQ:w1, SRT:SndQ:w1)."""
    names = []
    for task in Path("/proc/self/task").iterdir():
        with contextlib.suppress(OSError):  # a thread that ended meanwhile
            name = (task / "comm").read_text().strip()
            if name.startswith("SRT:"):
                names.append(name)
    return names


async def until(condition: Callable[[], object], what: str) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


async def switches_while_idle(listener: SrtListener) -> int:
    """The thread's voluntary context switches over IDLE_WINDOW, in which nothing wakes it."""
    waits = listener.counters.idle_waits
    before = voluntary_switches(listener)
    await asyncio.sleep(IDLE_WINDOW)
    switches = voluntary_switches(listener) - before
    assert listener.counters.idle_waits == waits  # nothing woke it meanwhile
    return switches


async def test_with_no_caller_the_thread_does_not_wake_and_libsrt_is_released(
        recorder: Recorder) -> None:
    async with running(recorder) as listener:
        await until_idle(listener, 0)
        assert await switches_while_idle(listener) <= IDLE_SWITCHES_MAX
        # No receive-queue worker polling the port, no garbage collector: libsrt is off.
        assert not libsrt_threads()
        assert listener.counters.arms == 1  # at start only


async def test_with_libsrt_kept_started_elsewhere_its_gc_drops_the_multiplexer(
        recorder: Recorder) -> None:
    """Another libsrt user in the process: srt_cleanup does not stop libsrt, its garbage
    collector drops the multiplexer later; the loop watches the port only after that."""
    assert lib.srt_startup() >= 0
    try:
        async with running(recorder, limits=SHORT_LINGER) as listener:
            await until_idle(listener, 0)
            assert not [name for name in libsrt_threads() if not name.startswith("SRT:GC")]
            assert await switches_while_idle(listener) <= IDLE_SWITCHES_MAX
            async with slt(listener.port, "streamid=open-gc"):
                await recorder.wait_accepted("open-gc")
    finally:
        lib.srt_cleanup()


async def test_after_the_last_caller_leaves_the_thread_blocks_and_the_next_wakes_it(
        recorder: Recorder, ts_file: bytes) -> None:
    async with running(recorder, limits=SHORT_LINGER) as listener:
        await until_idle(listener, 0)
        for round_ in range(2):
            sid = f"open-round-{round_}"
            waits = listener.counters.idle_waits
            async with slt(listener.port, f"streamid={sid}") as proc:
                handle = (await recorder.wait_accepted(sid)).handle
                await feed_until(proc, ts_file[:20 * CHUNK],
                                 lambda h=handle: len(recorder.data(h)) >= 20 * CHUNK)
                assert recorder.data(handle).startswith(ts_file[:20 * CHUNK])
                proc.kill()
                await recorder.wait(lambda h=handle: recorder.closed(h), "the close")
            await until_idle(listener, waits)
            assert await switches_while_idle(listener) <= IDLE_SWITCHES_MAX
            assert not libsrt_threads()
        # At start, then by each caller (more if a handshake outlasted the linger).
        assert listener.counters.arms >= 3


async def test_a_handshake_failing_after_the_callback_leaves_no_polling(
        recorder: Recorder) -> None:
    """A wrong passphrase fails after the listen callback let the handshake go on: the
    thread lingers for the accept that never comes, then blocks again."""
    async with running(recorder, limits=SHORT_LINGER) as listener:
        await until_idle(listener, 0)
        waits = listener.counters.idle_waits
        code, _ = await run_ffmpeg(listener.port,
                                   "streamid=secret-idle&passphrase=not-the-passphrase")
        assert code != 0
        await until_idle(listener, waits)
        assert await switches_while_idle(listener) <= IDLE_SWITCHES_MAX
        # The next caller still gets in.
        async with slt(listener.port, "streamid=open-after-idle"):
            await recorder.wait_accepted("open-after-idle")
    assert [e.streamid for e in recorder.accepted()] == ["open-after-idle"]


async def test_a_rejected_caller_arms_libsrt_which_is_released_again(
        recorder: Recorder) -> None:
    async with running(recorder, limits=SHORT_LINGER) as listener:
        await until_idle(listener, 0)
        assert not libsrt_threads()
        arms, waits = listener.counters.arms, listener.counters.idle_waits
        assert await asyncio.to_thread(caller_reject_reason, listener.port, "nope") == 1404
        assert listener.counters.arms > arms  # the caller's first datagram armed it
        await until_idle(listener, waits)
        assert await switches_while_idle(listener) <= IDLE_SWITCHES_MAX
        # caller_reject_reason's own srt_cleanup may leave its sockets to libsrt's GC.
        await until(lambda: not libsrt_threads(), "libsrt's threads to end")


async def test_a_command_leaves_the_idle_thread_idle_and_close_is_prompt(
        recorder: Recorder) -> None:
    async with running(recorder) as listener:
        await until_idle(listener, 0)
        arms, waits = listener.counters.arms, listener.counters.idle_waits
        listener.close_connection(12345)  # no such connection: nothing to do
        assert await switches_while_idle(listener) <= IDLE_SWITCHES_MAX + 2
        await listener.close()  # an idle thread ends on close, with no poll to wait out
        assert listener._thread is not None and not listener._thread.is_alive()
        assert (listener.counters.arms, listener.counters.idle_waits) == (arms, waits)
    assert not recorder.events


def test_a_handshake_linger_below_the_minimum_is_refused() -> None:
    with pytest.raises(ValueError, match="handshake_linger_ms 499 is below 500 ms"):
        SrtLimits(handshake_linger_ms=499)


async def test_a_failure_to_arm_is_logged_and_the_next_datagram_tries_again(
        recorder: Recorder, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    import relay.srt.listener as listener_module

    calls = []
    real_bind_acquire = listener_module.bind_acquire

    def failing_once(sock: int, udp: socket.socket) -> int:
        calls.append(sock)
        if len(calls) == 2:  # the first arming by a datagram
            raise OSError(24, "Too many open files")
        return real_bind_acquire(sock, udp)

    monkeypatch.setattr(listener_module, "bind_acquire", failing_once)
    caplog.set_level(logging.WARNING, logger="relay.srt")
    async with running(recorder, limits=SHORT_LINGER) as listener:
        await until_idle(listener, 0)
        # srt-live-transmit resends its handshake: the retry after ARM_RETRY_SECONDS gets it.
        async with slt(listener.port, "streamid=open-retry"):
            await recorder.wait_accepted("open-retry")
    assert len(calls) >= 3
    assert any("cannot start libsrt on UDP port" in r.getMessage() and "Too many open files"
               in r.getMessage() for r in caplog.records)
