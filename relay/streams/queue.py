"""Bounded, GOP-aware queues between the hub and each consumer of a session's media.

Theory of operation: the hub calls the `MediaSink` side (`on_track`, `on_frame`,
`on_discontinuity`, `on_end`) synchronously from the publisher's read loop; those calls only
append references (frame data is never copied) and never block or wait. Every consumer sits
behind one, so a slow consumer can never stall the publisher's read loop. Two consumer sides:

- `MediaQueue`: one task awaiting `get()` (a simulcast pusher, which waits on its socket),
  or a synchronous `pump` it sets while it keeps up (`set_pump`: no task wake-up); the
  queues of one session's targets can share a `BatchClock` that wakes them together;
- `DrainQueue`: a synchronous in-process consumer (the HLS packager), called from one
  `loop.call_soon` callback scheduled when the queue goes from empty to non-empty, which
  hands it everything queued in one pass: no task and no wake-up per frame, and at most one
  loop iteration between a frame's arrival and its consumer. The session's control items
  (a discontinuity, the end) are handed over synchronously, after what was queued before
  them, so the consumer has seen them when the hub's call returns.

Each is bounded by the bytes of frame data it holds and by the
number of items; when a new frame would pass either bound, whole GOPs are dropped from the
head: the queued frames up to the next resumption point (a video keyframe, or any audio frame
on a stream without video, every AAC frame being a random access point). When no later
resumption point is queued, every queued frame goes and the queue refuses frames until the
next one arrives, so the consumer always continues on a keyframe. Track configurations and
discontinuities inside a dropped range are kept (coalesced: the last configuration per track,
one discontinuity), since the consumer needs them to decode what follows. A consumer attached
mid-GOP starts on the next resumption point too; the frames it passes over then are counted
as `skipped_frames`, not as drops (nothing was lost for want of room).

`restart()` is for a consumer that lost its connection and starts a new one: the next `get()`s
yield the track configurations in force, then frames from the next resumption point on.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from relay.media.units import MediaFrame, TrackConfig, TrackKind, VideoConfig

#: Default bound on the frame data a queue holds. At 6 Mbit/s (a 1080p30 simulcast) this is
#: about 11 s of media, five 2-s GOPs: enough to ride out a TCP stall or a reconnect's
#: handshake without a drop, while a dead target costs at most this much per target.
DEFAULT_MAX_BYTES = 8 * 1024 * 1024
#: Default bound on queued items (frames, configs, markers). 30 fps video plus 48 kHz AAC
#: (46.9 frames/s) is ~77 frames/s, so 2,000 frames is ~26 s: it bounds how far behind live a
#: low-bitrate stream (where 8 MiB would be minutes) can fall before GOPs are dropped.
DEFAULT_MAX_FRAMES = 2_000
#: The item bound must leave room for what a drop keeps (two configs and a discontinuity)
#: plus at least a GOP's start.
MIN_MAX_FRAMES = 16


@dataclass(frozen=True, slots=True)
class Discontinuity:
    """The source reconnected: timestamps after this may jump (either way)."""


@dataclass(frozen=True, slots=True)
class EndOfStream:
    """The session ended; nothing follows."""


QueueItem = TrackConfig | MediaFrame | Discontinuity | EndOfStream

_DISCONTINUITY = Discontinuity()
_END = EndOfStream()


@dataclass(slots=True)
class QueueDrops:
    """What queues dropped, shared by the queues of one kind of consumer (process-wide, for
    /metrics); counted at each drop, never per frame."""

    frames: int = 0
    bytes: int = 0
    gops: int = 0


class _GopQueue:
    """The hub's side, the bounds and the GOP dropping shared by both kinds of queue."""

    #: Mark every gap a drop leaves with a `Discontinuity` (for a consumer that must know
    #: the timestamps jump, the HLS segmenter; a pusher just keeps them monotonic).
    _marks_gaps = False

    def __init__(self, *, max_bytes: int = DEFAULT_MAX_BYTES,
                 max_frames: int = DEFAULT_MAX_FRAMES,
                 start_on_keyframe: bool = True,
                 drops: QueueDrops | None = None) -> None:
        if max_bytes < 1:
            raise ValueError(f"max_bytes is {max_bytes}; it must be at least 1")
        if max_frames < MIN_MAX_FRAMES:
            raise ValueError(f"max_frames is {max_frames}; it must be at least "
                             f"{MIN_MAX_FRAMES}")
        self.max_bytes = max_bytes
        self.max_frames = max_frames
        self._items: deque[QueueItem] = deque()
        self._bytes = 0  # frame data bytes in _items
        self._frames = 0  # MediaFrames in _items
        #: The latest configuration per track as the hub announced it.
        self._tracks: dict[TrackKind, TrackConfig] = {}
        #: The configurations the consumer has been given (what its decoder is set up with).
        self._delivered: dict[TrackKind, TrackConfig] = {}
        # A consumer starts on a resumption point too (the hub may attach it mid-GOP),
        # unless it sorts out the start itself (the HLS segmenter).
        self._awaiting_keyframe = start_on_keyframe
        #: The consumer's first frame has been queued: from then on a frame refused while
        #: awaiting a keyframe is a drop; before, it is its start passing over a GOP begun.
        self._started = not start_on_keyframe
        self._ended = False  # on_end was called
        self._finished = False  # EndOfStream was handed out
        self.dropped_frames = 0
        self.dropped_bytes = 0
        self.dropped_gops = 0
        #: Frames passed over before the consumer's start (a keyframe): not drops.
        self.skipped_frames = 0
        self._drops = drops

    # -- the hub's side (MediaSink) ------------------------------------------------------

    def on_track(self, config: TrackConfig) -> None:
        if self._ended:
            return
        kind = TrackKind.VIDEO if isinstance(config, VideoConfig) else TrackKind.AUDIO
        self._tracks[kind] = config
        self._append(config)

    def on_frame(self, frame: MediaFrame) -> None:
        if self._ended:
            return
        size = len(frame.data)
        if self._awaiting_keyframe:
            if not self._resumes(frame):
                if self._started:
                    self._count_drop(size)
                    self._mark_gap()
                else:
                    self.skipped_frames += 1
                return
            self._awaiting_keyframe = False
            self._started = True
        if size > self.max_bytes:
            # One frame over the whole bound: it cannot be queued, nor can its GOP.
            self._count_gop()
            self._drop_all_frames(count_gop=False)
            self._awaiting_keyframe = True
            self._count_drop(size)
            self._mark_gap()
            return
        while self._frames and (self._bytes + size > self.max_bytes
                                or len(self._items) + 1 > self.max_frames):
            if not self._drop_gop(frame):
                return
        self._items.append(frame)
        self._bytes += size
        self._frames += 1
        self._wake()

    def on_discontinuity(self) -> None:
        if not self._ended:
            self._append(_DISCONTINUITY)

    def on_end(self) -> None:
        if self._ended:
            return
        self._ended = True
        self._items.append(_END)
        self._wake()

    # -- state, for counters and tests ---------------------------------------------------

    @property
    def queued_bytes(self) -> int:
        """Frame data bytes queued."""
        return self._bytes

    @property
    def queued_frames(self) -> int:
        return self._frames

    def __len__(self) -> int:
        """Items queued (frames, configurations, markers)."""
        return len(self._items)

    @property
    def tracks(self) -> dict[TrackKind, TrackConfig]:
        """The latest configuration per track announced by the hub."""
        return dict(self._tracks)

    # -- internals -----------------------------------------------------------------------

    def _wake(self) -> None:
        """Something was queued: let the consumer know."""

    def _resumes(self, frame: MediaFrame) -> bool:
        """Whether a consumer can start decoding at `frame`."""
        if frame.kind is TrackKind.VIDEO:
            return frame.keyframe
        return frame.keyframe and TrackKind.VIDEO not in self._tracks

    def _append(self, item: QueueItem) -> None:
        items = self._items
        if len(items) + 1 > self.max_frames:
            # Only configurations and markers, which are never dropped, can fill the queue
            # here (a frame makes room through _drop_gop): coalesce them.
            self._drop_all_frames()
            self._coalesce_all()
        items.append(item)
        self._wake()

    def _drop_gop(self, incoming: MediaFrame) -> bool:
        """Drop the queued frames before the next resumption point after the head's GOP.

        Returns False when there was none: every queued frame went, and `incoming` is queued
        only if it is itself a resumption point (otherwise it is dropped, and frames are
        refused until one arrives).
        """
        items = self._items
        cut = -1
        seen_frame = False
        for index, item in enumerate(items):
            if isinstance(item, MediaFrame):
                if seen_frame and self._resumes(item):
                    cut = index
                    break
                seen_frame = True
        self._count_gop()
        if cut < 0:
            self._drop_all_frames(count_gop=False)
            if self._resumes(incoming):
                self._awaiting_keyframe = False
                return True
            self._count_drop(len(incoming.data))
            return False
        kept = self._drop_frames(cut)
        items.extendleft(reversed(kept))
        return True

    def _drop_frames(self, count: int) -> list[QueueItem]:
        """Pop the first `count` items, counting the frames among them as dropped; return the
        others, coalesced, in the order they must keep."""
        items = self._items
        configs: dict[TrackKind, TrackConfig] = {}
        discontinuity = False
        for _ in range(count):
            item = items.popleft()
            if isinstance(item, MediaFrame):
                self._frames -= 1
                self._bytes -= len(item.data)
                self._count_drop(len(item.data))
                discontinuity |= self._marks_gaps
            elif isinstance(item, Discontinuity):
                discontinuity = True
            elif not isinstance(item, EndOfStream):
                configs[_kind(item)] = item
        kept: list[QueueItem] = [_DISCONTINUITY] if discontinuity else []
        kept.extend(configs[kind] for kind in (TrackKind.VIDEO, TrackKind.AUDIO)
                    if kind in configs)
        return kept

    def _drop_all_frames(self, *, count_gop: bool = True) -> None:
        if not self._frames:
            return
        if count_gop:
            self._count_gop()
        kept = self._drop_frames(len(self._items))
        self._items.extend(kept)
        self._awaiting_keyframe = True

    def _coalesce_all(self) -> None:
        self._items.extend(self._drop_frames(len(self._items)))

    def _mark_gap(self) -> None:
        """A frame was dropped without a queued frame before it going too: make sure the
        frames that follow come after a discontinuity (for a queue that marks gaps)."""
        if not self._marks_gaps:
            return
        for item in reversed(self._items):
            if isinstance(item, Discontinuity):
                return  # already marked, and no frame queued since
            if isinstance(item, MediaFrame | EndOfStream):
                break
        self._items.append(_DISCONTINUITY)
        self._wake()

    def _count_drop(self, size: int) -> None:
        self.dropped_frames += 1
        self.dropped_bytes += size
        if self._drops is not None:
            self._drops.frames += 1
            self._drops.bytes += size

    def _count_gop(self) -> None:
        self.dropped_gops += 1
        if self._drops is not None:
            self._drops.gops += 1

    def _take(self) -> QueueItem:
        item = self._items.popleft()
        if isinstance(item, MediaFrame):
            self._frames -= 1
            self._bytes -= len(item.data)
        elif isinstance(item, EndOfStream):
            self._finished = True
        elif not isinstance(item, Discontinuity):
            self._delivered[_kind(item)] = item
        return item


class MediaQueue(_GopQueue):
    """A `MediaSink` that buffers for one consumer task, bounded, dropping whole GOPs when
    full."""

    def __init__(self, *, max_bytes: int = DEFAULT_MAX_BYTES,
                 max_frames: int = DEFAULT_MAX_FRAMES,
                 drops: QueueDrops | None = None,
                 batch_delay: float = 0.0, batch_bytes: int = 0,
                 clock: BatchClock | None = None) -> None:
        """`batch_delay` (seconds) and `batch_bytes` batch the consumer's wake-ups: a waiting
        `get()` returns once `batch_bytes` of frame data are queued or `batch_delay` after
        the first item arrived, whichever comes first (the end and a restart at once). With
        the default 0, every item wakes it. With a `clock`, the clock's delay replaces
        `batch_delay`, and the queues sharing it wake together (see `BatchClock`)."""
        super().__init__(max_bytes=max_bytes, max_frames=max_frames, drops=drops)
        if batch_delay < 0:
            raise ValueError(f"batch_delay is {batch_delay}; it must be at least 0")
        if batch_bytes < 0:
            raise ValueError(f"batch_bytes is {batch_bytes}; it must be at least 0")
        self.batch_delay = clock.delay if clock is not None else batch_delay
        self.batch_bytes = batch_bytes
        self._clock = clock
        self._clocked = False  # waiting in the clock's batch
        self._waiter: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._pump: Callable[[], None] | None = None
        self._pump_handle: asyncio.Handle | None = None

    def on_end(self) -> None:
        super().on_end()
        self._wake_now()

    # -- the consumer's side -------------------------------------------------------------

    async def get(self) -> QueueItem:
        """The next item, waiting for one. Only one task may wait at a time. After
        `EndOfStream` has been returned, every call returns it again."""
        while not self._items:
            if self._finished:
                return _END
            if self._waiter is not None:
                raise RuntimeError("MediaQueue.get() is already being awaited by another task")
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._take()

    def set_pump(self, pump: Callable[[], None] | None) -> None:
        """Wake the consumer by calling `pump()` (from a callback of the loop, never from the
        hub's calls) instead of through a waiting `get()`, until `set_pump(None)`: a
        consumer that can take what is queued synchronously saves its task a wake-up per
        batch. `pump` must not raise. Only one consumer at a time, pump or `get()`."""
        if pump is not None and self._waiter is not None:
            raise RuntimeError("MediaQueue.get() is being awaited; a pump cannot be set")
        self._pump = pump
        if pump is None:
            if self._pump_handle is not None:
                self._pump_handle.cancel()
                self._pump_handle = None
        elif self._items:
            self._wake()

    def get_frames(self, max_bytes: int) -> list[MediaFrame]:
        """The frames at the head of the queue up to the first other item, taken while less
        than `max_bytes` of frame data are taken (so at least one when the head is a
        frame): a consumer's batch, without an item-by-item `get_nowait()`."""
        items = self._items
        frames: list[MediaFrame] = []
        taken = 0
        while items and taken < max_bytes:
            head = items[0]
            if not isinstance(head, MediaFrame):
                break
            items.popleft()
            frames.append(head)
            taken += len(head.data)
        self._frames -= len(frames)
        self._bytes -= taken
        return frames

    def get_nowait(self) -> QueueItem | None:
        """The next item if one is queued, else None (lets a consumer batch its writes)."""
        if not self._items:
            return _END if self._finished else None
        return self._take()

    def restart(self) -> None:
        """For a consumer starting a new connection: the next items are the configurations
        in force, then frames from the next resumption point (a keyframe) on."""
        in_force = dict(self._delivered)
        items = self._items
        while items:
            head = items[0]
            if isinstance(head, MediaFrame):
                if self._resumes(head):
                    break
                items.popleft()
                self._frames -= 1
                self._bytes -= len(head.data)
                self._count_drop(len(head.data))
            elif isinstance(head, EndOfStream):
                break
            else:
                items.popleft()
                if not isinstance(head, Discontinuity):  # a new connection starts afresh
                    in_force[_kind(head)] = head
        if not items or isinstance(items[0], EndOfStream):
            # Nothing to resume from queued: take the next resumption point that arrives.
            self._awaiting_keyframe = not self._ended
        for kind in (TrackKind.AUDIO, TrackKind.VIDEO):  # appendleft: video ends up first
            config = in_force.get(kind)
            if config is not None:
                items.appendleft(config)
        self._delivered.clear()
        if items:
            self._wake_now()

    def _wake(self) -> None:
        waiter = self._waiter
        if self._pump is None and (waiter is None or waiter.done()):
            return
        if not self.batch_delay or self._bytes >= self.batch_bytes:
            self._wake_now()
        elif self._clock is not None:
            self._clock.add(self)
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.batch_delay,
                                                                self._wake_now)

    def _wake_now(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._pump is not None:
            # Out of the hub's call (the pump writes to a socket): the next callback.
            if self._pump_handle is None:
                self._pump_handle = asyncio.get_running_loop().call_soon(self._run_pump)
            return
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _wake_in_callback(self) -> None:
        """`_wake_now` from a loop callback (the clock's): a pump is called at once."""
        if self._pump is None:
            self._wake_now()
        elif self._pump_handle is None:
            self._run_pump()

    def _run_pump(self) -> None:
        self._pump_handle = None
        if self._pump is not None and (self._items or self._finished):
            self._pump()


class BatchClock:
    """Batches the wake-ups of a group of `MediaQueue`s together (the simulcast targets of
    one session), in the loop iteration that brings media, instead of each on its timer.

    A queue's timer fires in a loop iteration of its own: one more wake-up of the process
    (epoll, the timer, the consumer's task) per queue and batch, which on a virtual machine
    costs more than the consumer's work. Here the first item queued for a waiting consumer
    starts the group's batch, and the first item queued `delay` or more after that (the
    media arrives every few ms while a stream is live, so in an iteration the publisher's
    read woke anyway) wakes every queue of the group waiting in the batch at once. Only
    when no media follows (the publisher stalled) does a timer wake them, `FALLBACK_FACTOR`
    times the delay after the batch started: one timer per group, cancelled otherwise.
    """

    #: The fallback timer, as a multiple of `delay`: later than the next media arrival of a
    #: live stream (every 10-33 ms), so it fires only when the stream pauses.
    FALLBACK_FACTOR = 2.0

    def __init__(self, delay: float) -> None:
        if delay <= 0:
            raise ValueError(f"delay is {delay}; it must be above 0")
        self.delay = delay
        self._queues: list[MediaQueue] = []
        self._started = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._due: asyncio.Handle | None = None

    def add(self, queue: MediaQueue) -> None:
        """`queue` queued an item for its waiting consumer: wake it with the batch."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        if not self._queues:
            self._started = now
            self._timer = loop.call_later(self.delay * self.FALLBACK_FACTOR, self.wake)
        if not queue._clocked:
            queue._clocked = True
            self._queues.append(queue)
        if now - self._started >= self.delay and self._due is None:
            # Due: in the next callback, out of the hub's call (a queue's pump writes to a
            # socket), once for the group.
            self._due = loop.call_soon(self.wake)

    def wake(self) -> None:
        """Wake every queue waiting in the batch (the batch is due). From a loop callback."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._due is not None:
            self._due.cancel()
            self._due = None
        queues, self._queues = self._queues, []
        for queue in queues:
            queue._clocked = False
            queue._wake_in_callback()


class MediaConsumer(Protocol):
    """A synchronous consumer of a session's media (`relay.streams.hub.MediaSink`'s
    methods): what a `DrainQueue` feeds."""

    def on_track(self, config: TrackConfig) -> None: ...
    def on_frame(self, frame: MediaFrame) -> None: ...
    def on_discontinuity(self) -> None: ...
    def on_end(self) -> None: ...


class DrainQueue(_GopQueue):
    """A `MediaSink` that buffers for one synchronous consumer (the HLS packager), bounded,
    dropping whole GOPs when full, and hands it everything queued from one `call_soon`
    callback per batch.

    The callback is scheduled when the queue goes from empty to non-empty: one per loop
    iteration that brought media, however many frames it brought. A discontinuity and the
    end are handed over at once, after what was queued before them. A gap left by a drop
    reaches the consumer as a discontinuity (its timestamps jump). Must be fed from a
    running event loop.
    """

    _marks_gaps = True

    def __init__(self, consumer: MediaConsumer, *, max_bytes: int = DEFAULT_MAX_BYTES,
                 max_frames: int = DEFAULT_MAX_FRAMES,
                 drops: QueueDrops | None = None) -> None:
        # The consumer sorts out a start mid-GOP itself (the segmenter waits for a keyframe
        # and counts what it skipped): only a drop makes this queue wait for one.
        super().__init__(max_bytes=max_bytes, max_frames=max_frames,
                         start_on_keyframe=False, drops=drops)
        self.consumer = consumer
        self._scheduled: asyncio.Handle | None = None
        self._draining = False

    def on_frame(self, frame: MediaFrame) -> None:
        # The common case, once per frame: room for it, nothing to drop, nothing awaited.
        # Anything else (a bound reached, a keyframe awaited, the end) takes the full path.
        size = len(frame.data)
        items = self._items
        if (self._ended or self._awaiting_keyframe or self._bytes + size > self.max_bytes
                or len(items) >= self.max_frames):
            super().on_frame(frame)
            return
        items.append(frame)
        self._bytes += size
        self._frames += 1
        self._wake()

    def on_discontinuity(self) -> None:
        super().on_discontinuity()
        self.drain()

    def on_end(self) -> None:
        super().on_end()
        self.drain()

    def drain(self) -> None:
        """Hand the consumer everything queued, in order (what the scheduled callback does;
        safe to call at any time)."""
        if self._scheduled is not None:
            self._scheduled.cancel()
        self._run_scheduled()

    def _wake(self) -> None:
        if self._scheduled is None and not self._draining:
            self._scheduled = asyncio.get_running_loop().call_soon(self._run_scheduled)

    def _run_scheduled(self) -> None:
        # The pass itself (drain() cancels the callback first, when one is scheduled).
        self._scheduled = None
        if self._draining:
            return  # called back from the consumer: the running pass takes what follows
        self._draining = True
        consumer = self.consumer
        on_frame = consumer.on_frame
        items = self._items
        try:
            while items:
                item = self._take()
                if isinstance(item, MediaFrame):
                    on_frame(item)
                elif isinstance(item, Discontinuity):
                    consumer.on_discontinuity()
                elif isinstance(item, EndOfStream):
                    consumer.on_end()
                else:
                    consumer.on_track(item)
        finally:
            self._draining = False
            if items:  # the consumer raised: the rest goes in the next pass
                self._wake()


def _kind(config: TrackConfig) -> TrackKind:
    return TrackKind.VIDEO if isinstance(config, VideoConfig) else TrackKind.AUDIO
