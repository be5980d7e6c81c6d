"""Per-session ingest health, kept as plain numbers and turned into rates at scrape time.

`IngestHealth.record` runs once per frame on the media path, so it only adds to ints in
preallocated per-second buckets: no label lookup, no container created. `/metrics`
(relay.metrics) reads the buckets at scrape time. `PlaybackClients` counts the distinct
addresses that fetched a live stream's HLS lately, in a dict with a cap.
"""

from __future__ import annotations

from typing import Final

#: Seconds of complete buckets the bitrate and frame rate average over.
RATE_WINDOW: Final = 5
#: Seconds a playback client counts as a viewer after its last request.
VIEWER_WINDOW: Final = 30.0
#: Distinct client addresses remembered per live stream; past it the oldest are forgotten
#: (a peer controls how many addresses it sends from, so the dict must not grow with them).
MAX_VIEWERS_TRACKED: Final = 10_000


class IngestHealth:
    """One live session's ingest numbers; `record` is called for every frame it carries.

    Rates use whole seconds of the caller's monotonic clock: the current second is still
    filling, so a rate averages the `RATE_WINDOW` seconds before it (fewer at the start).
    """

    __slots__ = (
        "_bytes",
        "_first_second",
        "_frames",
        "_last_keyframe_dts",
        "_second",
        "keyframe_interval",
        "last_audio_dts",
        "last_video_dts",
    )

    def __init__(self) -> None:
        # A ring of RATE_WINDOW complete seconds plus the one filling; _second[i] says which
        # second bucket i holds, so a stale bucket is reset when its slot comes round again
        # (no sweep when the stream pauses for longer than the ring).
        size = RATE_WINDOW + 1
        self._bytes = [0] * size
        self._frames = [0] * size
        self._second = [-1] * size
        self._first_second = -1
        self.last_audio_dts: int | None = None  # ms
        self.last_video_dts: int | None = None  # ms
        self._last_keyframe_dts: int | None = None
        #: Seconds between the last two video keyframes (media time, so the encoder's GOP
        #: whatever the network did); None before the second keyframe.
        self.keyframe_interval: float | None = None

    def new_connection(self) -> None:
        """The encoder reconnected: its timestamps start over, so the keyframe interval and
        the drift wait for the new connection's frames (the rates carry on)."""
        self.last_audio_dts = self.last_video_dts = None
        self._last_keyframe_dts = None
        self.keyframe_interval = None

    def record(self, now: float, size: int, video: bool, keyframe: bool, dts: int) -> None:
        """A frame of `size` bytes arrived at `now` (monotonic seconds); dts in ms."""
        second = int(now)
        slot = second % len(self._second)
        if self._second[slot] != second:
            self._second[slot] = second
            self._bytes[slot] = 0
            self._frames[slot] = 0
            if self._first_second < 0:
                self._first_second = second
        self._bytes[slot] += size
        if video:
            self._frames[slot] += 1
            self.last_video_dts = dts
            if keyframe:
                if self._last_keyframe_dts is not None:
                    self.keyframe_interval = (dts - self._last_keyframe_dts) / 1000
                self._last_keyframe_dts = dts
        else:
            self.last_audio_dts = dts

    def _window(self, now: float) -> tuple[int, int, int]:
        """(bytes, video frames, seconds) of the complete seconds in the window."""
        current = int(now)
        if self._first_second < 0:
            return 0, 0, 0
        start = max(current - RATE_WINDOW, self._first_second)
        seconds = max(current - start, 0)  # 0 with a clock behind the first frame's
        total_bytes = total_frames = 0
        for slot, second in enumerate(self._second):
            if start <= second < current:
                total_bytes += self._bytes[slot]
                total_frames += self._frames[slot]
        return total_bytes, total_frames, seconds

    def rates(self, now: float) -> tuple[float, float]:
        """(bits per second of frame data, video frames per second) over the window; zeros
        before a whole second has passed."""
        total, frames, seconds = self._window(now)
        if not seconds:
            return 0.0, 0.0
        return total * 8 / seconds, frames / seconds

    def bitrate(self, now: float) -> float:
        return self.rates(now)[0]

    def frame_rate(self, now: float) -> float:
        return self.rates(now)[1]

    def drift_ms(self) -> int | None:
        """The last audio dts minus the last video dts, ms; None without both tracks."""
        if self.last_audio_dts is None or self.last_video_dts is None:
            return None
        return self.last_audio_dts - self.last_video_dts


class PlaybackClients:
    """The distinct addresses that requested a live stream's HLS in the last 30 s."""

    __slots__ = ("_last_seen", "max_tracked")

    def __init__(self, max_tracked: int = MAX_VIEWERS_TRACKED) -> None:
        self._last_seen: dict[str, float] = {}  # address -> monotonic seconds, oldest first
        self.max_tracked = max_tracked

    def seen(self, address: str, now: float) -> None:
        # Re-inserted at the end, so the dict stays ordered by last request and the oldest
        # entries are at its front: pruning stops at the first recent one.
        self._last_seen.pop(address, None)
        self._last_seen[address] = now
        if len(self._last_seen) > self.max_tracked:
            self._prune(now)
            while len(self._last_seen) > self.max_tracked:
                del self._last_seen[next(iter(self._last_seen))]

    def _prune(self, now: float) -> None:
        last_seen = self._last_seen
        while last_seen:
            oldest = next(iter(last_seen))
            if now - last_seen[oldest] <= VIEWER_WINDOW:
                break
            del last_seen[oldest]

    def count(self, now: float) -> int:
        """Viewers now (forgets the addresses that stopped asking)."""
        self._prune(now)
        return len(self._last_seen)
