"""The simulcast targets of one live session: a push task per target, its status, its retries.

Theory of operation: the app builds a `SimulcastManager` when a session starts, with the
stream's targets and one bounded queue per target (a `MediaSink` of the session, fed by the
hub without copying media). When the stream becomes active, `start()` runs one task per
target. Each task makes push attempts (`relay.simulcast.pusher.push`, one connection each)
and walks the target's status machine (`relay.simulcast.target_status`):
`starting` for each attempt, `broadcasting` once the target accepted the publish, `errored`
when an attempt fails. A `normal` error is retried after an exponential backoff with full
jitter while the session lives; a `fatal` one (or a URL that does not parse) is not retried.
Every retry asks the queue to `restart()`, so the next connection gets the track
configurations first and then media from a keyframe on.

An encoder that reconnects inside the stream's reconnect window does not restart anything
here: the queue sees a discontinuity and the pusher keeps its timestamps monotonic. At the
session's end (`end()`/`stop()`), broadcasting targets get `STOP_GRACE_SECONDS` to send what
is queued and unpublish (the queue yields EndOfStream), the other tasks are cancelled at once,
and every target is back to `idle`.

Each status change is one store write (the row and its
`video.live_stream.simulcast_target.<status>` event, `Store.set_simulcast_target_status`),
queued to one writer task per manager so that neither the media path nor a push waits for
the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlsplit

from relay.logs import LogLimiter, peer_text
from relay.media.units import MediaFrame, TrackConfig
from relay.simulcast.counters import SimulcastCounters, TargetSnapshot
from relay.simulcast.pusher import PushStats, parse_target_url, push
from relay.simulcast.target_status import TargetInput, TargetMachine
from relay.simulcast.tls import TargetTls
from relay.store import Store
from relay.store.records import SimulcastErrorSeverity, SimulcastTarget, SimulcastTargetStatus
from relay.streams.queue import BatchClock, MediaQueue

log = logging.getLogger("relay.simulcast")

#: Backoff after a normal error (seconds): the n-th consecutive failed attempt waits a random
#: time in [0, min(RECONNECT_MAX_DELAY, RECONNECT_INITIAL_DELAY * 2**n)) ("full jitter", so
#: the targets of many sessions that lost the same server do not come back in step).
RECONNECT_INITIAL_DELAY = 1.0
RECONNECT_MAX_DELAY = 60.0
#: A connection that stayed published this long resets the backoff to its start; one that
#: a target drops right after the publish keeps backing off instead of reconnecting in a loop.
RECONNECT_RESET_AFTER = 30.0
#: At the session's end, how long broadcasting targets may take to send what is queued and
#: unpublish before they are cancelled (a stop of the server waits at most this long).
STOP_GRACE_SECONDS = 2.0
#: Status writes one manager holds while the store is slow or down; past it the oldest are
#: dropped (the rows catch up with the next write of each target).
MAX_PENDING_STATUS_WRITES = 256

#: Each target's queue (`MediaQueue`): what a slow or dead target may hold before it drops
#: whole GOPs. About 20 s of a 6 Mbit/s stream; the frames are the hub's own (not copied).
TARGET_QUEUE_MAX_BYTES = 16 * 1024 * 1024
#: The same in frames (video and audio): about 25 s of 60 fps video with 48 kHz AAC.
TARGET_QUEUE_MAX_FRAMES = 3000
#: A pusher is woken when this long has passed since media arrived in its queue (with the
#: first media after it: the session's queues share a `BatchClock`), or when
#: TARGET_BATCH_BYTES are queued, whichever is first: it then muxes and writes everything
#: queued in one write. The wake-up and the send() system call, not the muxing, are what a
#: target costs per frame; 100 ms makes ~10 of each a second instead of one per ingest read
#: (~77 at 30 fps with AAC), for 100 ms more delay on a service whose ingest buffers seconds.
TARGET_BATCH_DELAY = 0.1
#: 256 KiB is ~0.35 s at 6 Mbit/s: the delay decides there; at 20 Mbit/s and more, the size.
TARGET_BATCH_BYTES = 256 * 1024

_LOG = LogLimiter(log)


class TargetQueue(Protocol):
    """What the manager needs of a target's queue (`relay.streams.queue.MediaQueue`): it is
    the session's sink, and a retry restarts it from the track configurations."""

    def on_track(self, config: TrackConfig) -> None: ...
    def on_frame(self, frame: MediaFrame) -> None: ...
    def on_discontinuity(self) -> None: ...
    def on_end(self) -> None: ...
    def restart(self) -> None: ...
    # Its state, read for the metrics (at scrape time and when the session stops).
    @property
    def queued_bytes(self) -> int: ...
    @property
    def dropped_frames(self) -> int: ...
    @property
    def dropped_bytes(self) -> int: ...
    @property
    def dropped_gops(self) -> int: ...


class PushFunction(Protocol):
    """`relay.simulcast.pusher.push`: one connection to `target`, sending what `queue`
    yields; returns after EndOfStream, raises TargetError (with `severity`) otherwise."""

    def __call__(self, target: Any, queue: Any, *, ssl_context: ssl.SSLContext | None,
                 on_published: Callable[[], None], stats: PushStats) -> Awaitable[None]: ...


ParseTarget = Callable[[str, str], Any]


def _pusher() -> tuple[PushFunction, ParseTarget]:
    return push, parse_target_url


def new_batch_clock() -> BatchClock:
    """The clock the target queues of one session share (their wake-ups batched together)."""
    return BatchClock(TARGET_BATCH_DELAY)


def new_target_queue(clock: BatchClock | None = None) -> TargetQueue:
    """A target's queue with the limits above; `clock` is its session's (`new_batch_clock`),
    None for a queue with a batching timer of its own."""
    return MediaQueue(max_bytes=TARGET_QUEUE_MAX_BYTES, max_frames=TARGET_QUEUE_MAX_FRAMES,
                      batch_delay=TARGET_BATCH_DELAY, batch_bytes=TARGET_BATCH_BYTES,
                      clock=clock)


def error_of(exc: BaseException) -> tuple[SimulcastErrorSeverity, str]:
    """The severity and reason of a failed attempt. A TargetError carries both; anything
    else is a defect of Relay's, counted as network trouble so that it is retried with the
    backoff rather than silently ending the target."""
    severity = getattr(exc, "severity", None)
    reason = getattr(exc, "reason", None) or str(exc) or type(exc).__name__
    if severity in ("fatal", "normal"):
        return severity, peer_text(str(reason))
    return "normal", f"unexpected {type(exc).__name__}: {peer_text(str(reason))}"


@dataclass(slots=True)
class _Target:
    record: SimulcastTarget
    queue: TargetQueue
    machine: TargetMachine = field(default_factory=TargetMachine)
    task: asyncio.Task[None] | None = None
    attempts: int = 0  # push attempts made in this session
    last_error: str | None = None
    #: The attempt in progress's counts (the pusher updates them), and the ended attempts'.
    push_stats: PushStats | None = None
    sent_bytes: int = 0
    sent_frames: int = 0

    def snapshot(self) -> TargetSnapshot:
        current = self.push_stats
        queue = self.queue
        return TargetSnapshot(
            target_id=self.record.id, status=self.machine.status,
            error_severity=self.machine.error_severity, attempts=self.attempts,
            sent_bytes=self.sent_bytes + (current.bytes_written if current else 0),
            sent_frames=self.sent_frames + (current.frames_sent if current else 0),
            queued_bytes=queue.queued_bytes, dropped_frames=queue.dropped_frames,
            dropped_bytes=queue.dropped_bytes, dropped_gops=queue.dropped_gops)

    def attempt_ended(self) -> None:
        current, self.push_stats = self.push_stats, None
        if current is not None:
            self.sent_bytes += current.bytes_written
            self.sent_frames += current.frames_sent


class SimulcastManager:
    """The simulcast of one live session; see the module's docstring."""

    def __init__(
        self,
        store: Store,
        stream_id: str,
        targets: Sequence[tuple[SimulcastTarget, TargetQueue]],
        *,
        ssl_context: ssl.SSLContext | TargetTls | None,
        push: PushFunction | None = None,
        parse_target: ParseTarget | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        jitter: Callable[[float], float] = lambda high: random.uniform(0.0, high),
        clock: Callable[[], float] = time.monotonic,
        stop_grace: float = STOP_GRACE_SECONDS,
        on_stopped: Callable[[SimulcastManager], None] | None = None,
        counters: SimulcastCounters | None = None,
    ) -> None:
        self.store = store
        #: The process-wide counters this session's attempts and, at its stop, its totals
        #: go to (`relay.simulcast.counters`).
        self.counters = counters if counters is not None else SimulcastCounters()
        self.stream_id = stream_id
        self.targets = [_Target(record, queue) for record, queue in targets]
        self._ssl_context = ssl_context
        self._push = push
        self._parse = parse_target
        self._sleep = sleep
        self._jitter = jitter
        self._clock = clock
        self._stop_grace = stop_grace
        self._on_stopped = on_stopped
        self._started = False
        self._ended = False
        self._stopping: asyncio.Task[None] | None = None
        self._writes: deque[tuple[str, SimulcastTargetStatus,
                                  SimulcastErrorSeverity | None]] = deque()
        self._writes_waiting = asyncio.Event()
        self._writes_closed = False  # the end's writes are queued: the writer may finish
        self._writer: asyncio.Task[None] | None = None
        self.writes_dropped = 0

    def status(self, target_id: str) -> tuple[SimulcastTargetStatus,
                                              SimulcastErrorSeverity | None]:
        """A target's status as this manager last set it (for tests and metrics)."""
        target = next(t for t in self.targets if t.record.id == target_id)
        return target.machine.status, target.machine.error_severity

    @property
    def ended(self) -> bool:
        """The session ended: the targets are stopping or stopped."""
        return self._ended

    def snapshot(self) -> list[TargetSnapshot]:
        """Each target now, for the metrics collector (read at scrape time)."""
        return [target.snapshot() for target in self.targets]

    # -- the session's hooks -----------------------------------------------------------

    def start(self) -> None:
        """The stream became active: start pushing. Later calls (the encoder reconnected
        inside the reconnect window and the stream is active again) change nothing."""
        if self._started or self._ended:
            return
        self._started = True
        if self._push is None or self._parse is None:
            push, parse = _pusher()
            self._push = self._push or push
            self._parse = self._parse or parse
        loop = asyncio.get_running_loop()
        for target in self.targets:
            target.task = loop.create_task(
                self._run(target), name=f"simulcast-{self.stream_id}-{target.record.id}")

    def end(self) -> None:
        """The session ended: stop every target (in the background; `stop()` awaits it)."""
        if self._stopping is None:
            self._ended = True
            self._stopping = asyncio.get_running_loop().create_task(
                self._stop(), name=f"simulcast-stop-{self.stream_id}")

    async def stop(self) -> None:
        """End (if not ended yet) and wait until every task is done and every status write
        has been made."""
        self.end()
        assert self._stopping is not None
        await asyncio.shield(self._stopping)

    # -- one target ----------------------------------------------------------------------

    async def _run(self, target: _Target) -> None:
        assert self._push is not None and self._parse is not None
        record = target.record
        self._change(target, TargetInput.CONNECT)
        try:
            address = self._parse(record.url, record.stream_key or "")
        except ValueError as exc:
            # Stored before the API checked URLs, or by hand: nothing to retry.
            self._failed(target, "fatal", f"the url cannot be pushed to: {exc}")
            return
        tls = self._ssl_context if urlsplit(record.url).scheme.lower() == "rtmps" else None
        failures = 0  # consecutive attempts that failed
        while True:
            published_at: float | None = None

            def on_published() -> None:
                nonlocal published_at
                published_at = self._clock()
                self._change(target, TargetInput.PUBLISHED)
                if target.attempts > 1:
                    log.info("stream %s: simulcast target %s is broadcasting again "
                             "(attempt %d)", self.stream_id, record.id, target.attempts)

            target.attempts += 1
            self.counters.attempts += 1
            target.push_stats = PushStats()
            try:
                # A TargetTls makes its context on the first rtmps:// connection (tls.py).
                context = await tls.context() if isinstance(tls, TargetTls) else tls
                await self._push(address, target.queue, ssl_context=context,
                                 on_published=on_published, stats=target.push_stats)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                severity, reason = error_of(exc)
                if severity == "normal" and not hasattr(exc, "severity"):
                    log.exception("stream %s: simulcast target %s: push failed",
                                  self.stream_id, record.id)
                self._failed(target, severity, reason)
                if severity == "fatal":
                    return
            else:
                # The push sent the queue's EndOfStream and unpublished: the session is over.
                self._change(target, TargetInput.STOP)
                return
            finally:
                target.attempt_ended()
            if published_at is not None and \
                    self._clock() - published_at >= RECONNECT_RESET_AFTER:
                failures = 0
            delay = self._jitter(min(RECONNECT_MAX_DELAY,
                                     RECONNECT_INITIAL_DELAY * 2.0 ** failures))
            failures += 1
            await self._sleep(delay)
            target.queue.restart()
            self._change(target, TargetInput.RETRY)

    def _failed(self, target: _Target, severity: SimulcastErrorSeverity, reason: str) -> None:
        target.last_error = reason
        if severity == "fatal":
            self.counters.failures_fatal += 1
        else:
            self.counters.failures_normal += 1
        self._change(target, TargetInput.FAILED, severity)
        retry = "not retried" if severity == "fatal" else "retrying with backoff"
        _LOG.warning(f"simulcast-{severity}-{self.stream_id}-{target.record.id}",
                     "stream %s: simulcast target %s errored (%s): %s; %s", self.stream_id,
                     target.record.id, severity, reason, retry)

    def _change(self, target: _Target, event: TargetInput,
                severity: SimulcastErrorSeverity | None = None) -> None:
        if target.machine.handle(event, severity):
            self._queue_write(target.record.id, target.machine.status,
                              target.machine.error_severity)

    # -- the end -------------------------------------------------------------------------

    async def _stop(self) -> None:
        running = [t.task for t in self.targets if t.task is not None and not t.task.done()]
        grace = [t.task for t in self.targets if t.task is not None and not t.task.done()
                 and t.machine.status == "broadcasting"]
        for task in running:
            if task not in grace:
                task.cancel()
        if grace:
            # The queues have their EndOfStream (the hub ended its sinks): a healthy target
            # gets the rest of the media and an unpublish.
            await asyncio.wait(grace, timeout=self._stop_grace)
        for task in running:
            task.cancel()
        for task in running:
            with contextlib.suppress(asyncio.CancelledError):
                try:
                    await task
                except Exception:
                    log.exception("stream %s: a simulcast task failed", self.stream_id)
        for target in self.targets:
            self._change(target, TargetInput.STOP)
        self._writes_closed = True
        if self._writer is not None:
            self._writes_waiting.set()
            await self._writer
        # With no await from here to the running set's discard: a scrape sees these totals
        # either in the snapshot or in the counters, never in both or neither.
        self._fold_totals()
        if self._on_stopped is not None:
            self._on_stopped(self)

    def _fold_totals(self) -> None:
        counters = self.counters
        for target in self.targets:
            target.attempt_ended()  # a cancelled attempt's counts (already done otherwise)
            done = target.snapshot()
            counters.sent_bytes += done.sent_bytes
            counters.sent_frames += done.sent_frames
            counters.dropped_frames += done.dropped_frames
            counters.dropped_bytes += done.dropped_bytes
            counters.dropped_gops += done.dropped_gops

    # -- status writes -------------------------------------------------------------------

    def _queue_write(self, target_id: str, status: SimulcastTargetStatus,
                     severity: SimulcastErrorSeverity | None) -> None:
        if len(self._writes) >= MAX_PENDING_STATUS_WRITES:
            self._writes.popleft()
            self.writes_dropped += 1
        self._writes.append((target_id, status, severity))
        self._writes_waiting.set()
        if self._writer is None or self._writer.done():
            self._writer = asyncio.get_running_loop().create_task(
                self._write_statuses(), name=f"simulcast-status-{self.stream_id}")

    async def _write_statuses(self) -> None:
        while True:
            while self._writes:
                target_id, status, severity = self._writes.popleft()
                try:
                    await self.store.set_simulcast_target_status(
                        self.stream_id, target_id, status, severity)
                except Exception:
                    # The store failing must not stop the pushes; the next change of this
                    # target writes its row again.
                    log.exception("stream %s: could not record simulcast target %s as %s",
                                  self.stream_id, target_id, status)
            if self._writes_closed:
                return
            self._writes_waiting.clear()
            await self._writes_waiting.wait()
