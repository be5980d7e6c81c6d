"""One live session's HLS output: the live rendition in memory and the recording on disk.

Theory of operation: `LivePackager` is the session's `MediaSink`. Track configurations and
frames go through the segmenter (`relay.hls.segmenter`); its events drive

- the live media playlist (`LivePlaylist`, LIVE kind), created once the first segment has
  completed, because that segment fixes TARGETDURATION; the first segment's events wait in
  a buffer until then (bounded like any segment, by MAX_SEGMENT_BYTES);
- the bytes the playlist names: init segments, parts and internal fragments, handed to the
  playlist, which holds them while it may serve them (it owns the live window; the packager
  keeps no copy or index of its own);
- the recording: each init and complete segment goes to a `RecordingQueue`, which writes
  it into the asset's directory on the process's disk pool (`relay.hls.disk`), in order,
  once the store has given the session its asset id. The recording may end before the
  session: a failed write (a full disk), a disk that falls further behind than the bound
  (`--recording-max-backlog`), the asset deleted. What it wrote is kept and finalized; the
  live playlist is in memory and goes on.

HTTP handlers read the packager (`playlist`, `renderer`, `resource`, `variant`) and park on
`wait_change`, a future that every playlist change completes: a held request costs nothing
until the media it waits for arrives. The packager tells the session when a segment is
playable (`on_playable`), which makes the stream `active`, and asks it to end the session
(`on_fatal`, which must not end it synchronously: the packager is inside the session's
media call) when its media cannot be packaged: track configurations that fMP4 cannot carry
(`UnpackableTracks`), a segment without a keyframe past MAX_SEGMENT_BYTES, or an error of
the packager itself (a bug, logged with its traceback). Each is counted; none leaves a live
stream that nobody can play.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar

from relay.histogram import BucketHistogram
from relay.hls import fmp4
from relay.hls.blocking import RELOAD_WAIT_BUCKETS
from relay.hls.disk import DISK, DiskPool
from relay.hls.model import ResourceName, StoredMedia
from relay.hls.multivariant import VariantInfo
from relay.hls.playlist import LivePlaylist, PlaylistKind, PlaylistRenderer
from relay.hls.recording import (
    DISK_FULL_ERRNOS,
    RecordingGone,
    RecordingSummary,
    RecordingWriter,
)
from relay.hls.request_counts import HlsRequestCounters
from relay.hls.segmenter import (
    DEFAULT_PART_TARGET,
    InitChanged,
    PartCut,
    PartSegmenter,
    SegmentCompleted,
    SegmenterEvent,
    SegmentStarted,
)
from relay.hls.spool import SessionSpool
from relay.media.units import AudioConfig, MediaFrame, TrackConfig, VideoConfig
from relay.store.records import JSONDict, LatencyMode, RecordedMedia
from relay.streams.health import PlaybackClients
from relay.streams.queue import QueueDrops

log = logging.getLogger("relay.hls")

T = TypeVar("T")

#: A segment grows until the encoder's next keyframe; one that reaches this size means an
#: encoder that (nearly) never sends keyframes, and the session is ended with that reason.
#: 64 MiB is 85 s of a 6 Mbps stream.
MAX_SEGMENT_BYTES: Final = 64 * 1024 * 1024

#: Bytes of complete segments one recording may have waiting for the disk
#: (--recording-max-backlog); past it the recording ends (what it wrote is kept and
#: finalized) rather than hold more. 64 MiB is 85 s of a 6 Mbit/s stream.
DEFAULT_RECORDING_MAX_BACKLOG: Final = 64 * 1024 * 1024

#: Jobs (inits, segments, variants) one recording may have waiting for the disk.
MAX_RECORDING_JOBS: Final = 1024

#: A recording job that has run this long has hung (a stalled disk): closing the recording
#: stops waiting for it, so a stop is not held up without bound; the job still runs, and the
#: recording is finalized after it if the process lives that long.
DISK_STALL_SECONDS: Final = 5.0

#: Buckets (seconds) of `relay_hls_part_publish_delay_seconds`, from the arrival of a part's
#: last frame to the part's listing in the playlist: the segmenter holds one frame per track
#: (a frame's duration is known when the next arrives), so the delay is about one frame
#: interval (33 ms at 30 fps, 67 ms at 15 fps) plus the time the event loop took.
PART_PUBLISH_DELAY_BUCKETS: Final = (0.005, 0.01, 0.02, 0.035, 0.05, 0.075, 0.1, 0.15, 0.2,
                                     0.3, 0.5, 1.0, 2.0)

#: Bounds of the queue between the hub and the packager (`relay.streams.queue.DrainQueue`).
#: It is drained once per event-loop iteration, so it holds one iteration's media: a drop
#: there means a starved loop, never a slow consumer. 32 MiB is 43 s of a 6 Mbit/s stream,
#: 8,192 frames ~106 s at 30 fps + 48 kHz AAC.
PACKAGER_QUEUE_MAX_BYTES: Final = 32 * 1024 * 1024
PACKAGER_QUEUE_MAX_FRAMES: Final = 8192

#: The shortest wait of `RecordingQueue.close` between two looks at whether the job it waits
#: for has hung.
_STALL_POLL_SECONDS: Final = 0.5


@dataclass(slots=True)
class HlsCounters:
    """Process-wide packaging and playback counters (shared by every packager and the
    routes), read by the metrics collector at scrape time."""

    segments: int = 0
    parts: int = 0  # parts and internal fragments
    bytes_out: int = 0  # media bytes packaged (fragments)
    recording_dropped: int = 0  # segments the recording lost to a slow or failing disk
    recordings_failed: int = 0  # recordings a failed write ended early (a full disk...)
    recordings_behind: int = 0  # recordings ended early: the disk fell too far behind
    recordings_stalled: int = 0  # recordings closed without their hung write finishing
    failures: int = 0  # sessions whose media could not be packaged (and so ended)
    packaging_errors: int = 0  # ...of which by an unexpected error of the packager (a bug)
    # Dropped (whole GOPs) by the queues between the hub and the packagers: a starved loop.
    queue_drops: QueueDrops = field(default_factory=QueueDrops)
    # Added when each session ends, from its segmenter (`SegmenterCounters`):
    overruns: int = 0  # segments longer than TARGETDURATION (encoder GOP too long)
    frames_dropped: int = 0  # frames the segmenter could not place (before a keyframe...)
    timestamps_clamped: int = 0  # frame durations clamped to one tick (dts going backward)
    timestamp_gaps: int = 0  # dts jumps beyond the segmenter's max gap
    part_overruns: int = 0  # listed parts longer than PART-TARGET
    short_parts: int = 0  # listed parts under 85% of PART-TARGET, not independent nor last
    pdt_resyncs: int = 0  # PROGRAM-DATE-TIME anchors moved to the wall clock
    # The routes':
    playlist_requests: int = 0
    media_requests: int = 0
    held_requests: int = 0  # blocking reloads and hinted parts that had to wait
    held_timeouts: int = 0  # ...and were answered 503
    bad_requests: int = 0
    not_found: int = 0
    #: Requests for signed playback ids refused with 403, by reason (`relay.hls.signed`).
    playback_refused: dict[str, int] = field(default_factory=dict)
    #: By kind and status (any server of the playback routes calls `requests.count`).
    requests: HlsRequestCounters = field(default_factory=HlsRequestCounters)
    #: How long blocking playlist reloads (_HLS_msn, _HLS_part) were held, seconds.
    reload_wait: BucketHistogram = field(
        default_factory=lambda: BucketHistogram(RELOAD_WAIT_BUCKETS))
    #: From a listed part's last frame's arrival to the part in the playlist, seconds.
    part_publish_delay: BucketHistogram = field(
        default_factory=lambda: BucketHistogram(PART_PUBLISH_DELAY_BUCKETS))


class RecordingQueue:
    """Writes a recording in order, off the event loop, once its writer is known.

    `writer` completes when the store has created (or continued) the session's asset; until
    then jobs wait in the queue. A queue closed before that drops them. One job at a time is
    in the disk pool, so the recording's writes keep their order and a hung one holds one
    worker. The recording ends early (`ended` says why; logged once, counted) when a write
    fails, when its queued bytes or jobs would pass their bounds, or when the asset is
    deleted; then nothing more is queued, what was queued is dropped, and `close` still
    finalizes what was written."""

    def __init__(self, writer: asyncio.Future[RecordingWriter], *,
                 disk: DiskPool = DISK, label: str = "recording",
                 counters: HlsCounters | None = None,
                 max_backlog: int = DEFAULT_RECORDING_MAX_BACKLOG,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._writer = writer
        self._disk = disk
        self.label = label
        self.counters = counters if counters is not None else HlsCounters()
        self._max_backlog = max_backlog
        self._clock = clock
        self._jobs: deque[tuple[Callable[[RecordingWriter], Any], int,
                                Callable[[Any], None] | None]] = deque()
        self._backlog = 0
        self._wake = asyncio.Event()
        self._closing = False
        self._worker: asyncio.Task[RecordingSummary | None] | None = None
        #: Why the recording ended before its session; None while it records.
        self.ended: str | None = None
        self._variant: VariantInfo | None = None  # written when the recording is finalized
        # When the job in the pool started running (written by the worker thread).
        self._running_since: float | None = None

    @property
    def backlog(self) -> int:
        """Bytes queued and not written yet."""
        return self._backlog

    def submit(self, job: Callable[[RecordingWriter], T], size: int = 0,
               done: Callable[[T], None] | None = None) -> bool:
        """Queue `job` (`size`: the bytes it holds; `done` is called on the loop with what
        it returned, once it has run without an error); False when the recording has ended,
        or ends now because the job would pass a bound."""
        if self.ended is not None:
            return False
        over = self._over_bound(size)
        if over:
            self._end(over)
            self.counters.recordings_behind += 1
            return False
        self._jobs.append((job, size, done))
        self._backlog += size
        self._disk.backlog += size
        self._wake.set()
        if self._worker is None:
            self._worker = asyncio.get_running_loop().create_task(
                self._run(), name="relay-recording")
        return True

    def _over_bound(self, size: int) -> str:
        if self._backlog + size > self._max_backlog:
            return (f"the disk is {_size(self._backlog)} behind it, and {_size(size)} more "
                    f"would pass the limit of {_size(self._max_backlog)} "
                    "(--recording-max-backlog)")
        if len(self._jobs) >= MAX_RECORDING_JOBS:
            return (f"{len(self._jobs)} writes wait for the disk (limit "
                    f"{MAX_RECORDING_JOBS}, MAX_RECORDING_JOBS)")
        disk = self._disk
        if disk.backlog + size > disk.max_backlog:
            return (f"the disk is {_size(disk.backlog)} behind all recordings together "
                    f"(limit {_size(disk.max_backlog)})")
        return ""

    def _end(self, reason: str, *, level: int = logging.ERROR, kept: bool = True) -> None:
        """The recording stops here: drop what is queued, keep what was written."""
        if self.ended is not None:
            return
        self.ended = reason
        dropped = self._drop_queued()
        log.log(level, "%s: the recording stops: %s; %d queued write(s) dropped%s; live "
                "playback goes on", self.label, reason, dropped,
                ", what was written is kept and finalized" if kept else "")

    def _drop_queued(self) -> int:
        """Forget the queued jobs and give their bytes back to the budgets; how many."""
        dropped = len(self._jobs)
        for _, size, _ in self._jobs:
            self._backlog -= size
            self._disk.backlog -= size
        self._jobs.clear()
        return dropped

    async def close(self, variant: VariantInfo | None = None) -> RecordingSummary | None:
        """Write what is queued, finalize the playlist as VOD (with `variant`, when given)
        and return its summary; None when there is nothing to finalize, or when a write has
        hung (DISK_STALL_SECONDS)."""
        self._variant = variant
        self._closing = True
        self._wake.set()
        worker = self._worker
        if worker is None:
            return None
        if not self._writer.done():
            log.warning("%s: the asset was never created; %d write(s) dropped", self.label,
                        len(self._jobs))
            self._writer.cancel()
        while True:
            # Wake when the job running now would pass DISK_STALL_SECONDS (a job still
            # waiting for a worker is not stalled: look again a stall period later).
            since = self._running_since
            wait = (DISK_STALL_SECONDS if since is None
                    else max(_STALL_POLL_SECONDS, since + DISK_STALL_SECONDS - self._clock()))
            done, _ = await asyncio.wait({worker}, timeout=wait)
            if done:
                return worker.result()
            since = self._running_since
            if since is not None and self._clock() - since > DISK_STALL_SECONDS:
                self.counters.recordings_stalled += 1
                log.error("%s: a disk write has not returned in %.0f s; the recording is "
                          "left as written so far (finalized if the write returns)",
                          self.label, self._clock() - since)
                return None

    def _timed(self, job: Callable[[RecordingWriter], T], writer: RecordingWriter) -> T:
        # Runs in a disk worker; `close` reads the start time to tell a hung job.
        self._running_since = self._clock()
        try:
            return job(writer)
        finally:
            self._running_since = None

    async def _run(self) -> RecordingSummary | None:
        try:
            writer = await asyncio.shield(self._writer)
        except asyncio.CancelledError:
            if self._writer.cancelled():  # closed before the asset was created
                self._drop_queued()
                return None
            raise
        while True:
            while self._jobs:
                job, size, done = self._jobs.popleft()
                try:
                    result = await self._disk.run(functools.partial(self._timed, job, writer))
                    if done is not None:
                        done(result)
                except RecordingGone:
                    self._end("the asset was deleted", level=logging.INFO, kept=False)
                    return None
                except OSError as exc:
                    self._end(_write_failure(exc))
                    self.counters.recordings_failed += 1
                except Exception as exc:  # a bug of the writer: stop as for a failed write
                    log.error("%s: a recording job raised", self.label, exc_info=exc)
                    self._end(f"a write failed (internal error {type(exc).__name__})")
                    self.counters.recordings_failed += 1
                finally:
                    self._backlog -= size
                    self._disk.backlog -= size
            if self._closing:
                break
            self._wake.clear()
            await self._wake.wait()
        try:
            variant = self._variant
            summary = await self._disk.run(functools.partial(
                self._timed, lambda writer: writer.finish(variant), writer))
        except OSError as exc:
            log.error("%s: could not finalize the recording: %s", self.label,
                      _write_failure(exc))
            return None
        if summary is None:
            log.info("%s: the recording holds no segment", self.label)
        return summary


def _size(count: int) -> str:
    return f"{count / 2**20:.1f} MiB" if count >= 2**20 else f"{count} bytes"


def _write_failure(exc: OSError) -> str:
    """A failed write in one phrase (the error, not a traceback: the operator acts on it)."""
    what = exc.strerror or type(exc).__name__
    name = errno.errorcode.get(exc.errno or 0, "")
    prefix = "the disk is full" if exc.errno in DISK_FULL_ERRNOS else "a write failed"
    return f"{prefix} ({name + ': ' if name else ''}{what})"


class UnpackableTracks(Exception):
    """The encoder's track configurations cannot be carried in fMP4 (a codec Relay does not
    package, a size out of range): the encoder's fault, and the reason it is told."""


class LivePackager:
    """The HLS packager of one live session (a `relay.streams.hub.MediaSink`)."""

    def __init__(
        self,
        mode: LatencyMode,
        *,
        label: str,
        part_target: float = DEFAULT_PART_TARGET,
        recording: RecordingQueue | None = None,
        on_playable: Callable[[], None] = lambda: None,
        on_fatal: Callable[[str], object] = lambda reason: None,
        clock: Callable[[], float] = time.time,
        first_msn: int = 0,
        max_segment_bytes: int = MAX_SEGMENT_BYTES,
        counters: HlsCounters | None = None,
        spool: SessionSpool | None = None,
    ) -> None:
        self.segmenter = PartSegmenter(mode, part_target=part_target, first_msn=first_msn)
        self._first_msn = first_msn
        self._max_segment_bytes = max_segment_bytes
        self.label = label
        self.playlist: LivePlaylist | None = None
        self.renderer: PlaylistRenderer | None = None
        self.counters = counters if counters is not None else HlsCounters()
        #: Who plays the stream (the playback routes record each request; the app shares
        #: the session's, which /metrics reads).
        self.viewers = PlaybackClients()
        self._recording = recording
        self._spool = spool
        self._on_playable = on_playable
        self._on_fatal = on_fatal
        self._clock = clock
        self._failed = False
        self._ended = False
        self._buffered: list[tuple[SegmenterEvent, bytes]] = []
        self._current_init: tuple[TrackConfig, ...] = ()
        # The largest picture, frame rate and channel count of every init so far (Mux asset
        # tracks, `_asset_tracks`).
        self._video_seen: JSONDict = {}
        self._audio_seen: JSONDict = {}
        self._open_size = 0
        self._open_video_frames = 0
        self._change: asyncio.Future[None] | None = None
        # Bandwidth and frame rate measured over complete segments.
        self._peak_bps = 0.0
        self._total_bits = 0
        self._total_seconds = 0.0
        self._video_frames = 0
        self._video_seconds = 0.0
        self._completed = 0  # segments of this session
        self._variant: VariantInfo | None = None

    # -- MediaSink ---------------------------------------------------------------------

    def on_track(self, config: TrackConfig) -> None:
        if not self._failed:
            try:
                self._handle(self.segmenter.on_track(config))
            except Exception as exc:  # see _fault: contained here, the session is ended
                self._fault(exc)

    def on_frame(self, frame: MediaFrame) -> None:
        if not self._failed:
            try:
                self._handle(self.segmenter.on_frame(frame, self._clock()))
            except Exception as exc:
                self._fault(exc)

    def on_discontinuity(self) -> None:
        if not self._failed:
            try:
                self._handle(self.segmenter.on_discontinuity())
            except Exception as exc:
                self._fault(exc)

    def on_end(self) -> None:
        if self._ended:
            return
        self._ended = True
        if not self._failed:
            try:
                self._handle(self.segmenter.on_end(self._clock()))
            except Exception as exc:
                self._fault(exc)
        seen, counters = self.segmenter.counters, self.counters
        counters.overruns += seen.overruns
        counters.frames_dropped += (seen.dropped_no_track + seen.dropped_waiting
                                    + seen.dropped_overflow)
        counters.timestamps_clamped += seen.backward_timestamps
        counters.timestamp_gaps += seen.gaps
        counters.part_overruns += seen.part_overruns
        counters.short_parts += seen.short_parts
        counters.pdt_resyncs += seen.pdt_resyncs
        if self.playlist is not None:
            self.playlist.end()
        self._notify()

    async def finished(self) -> RecordingSummary | None:
        """After `on_end`: the recording written and finalized; its summary."""
        summary = None
        if self._recording is not None:
            summary = await self._recording.close(self.variant())
        if self._spool is not None:  # after: on a full disk the recording's finalize comes first
            await self._spool.close()
        return summary

    async def finished_media(self) -> RecordedMedia | None:
        """`finished`, as the store records it on the asset: duration and tracks."""
        summary = await self.finished()
        if summary is None:
            return None
        return RecordedMedia(duration=summary.duration, tracks=tuple(self._asset_tracks()))

    def _see_tracks(self, tracks: tuple[TrackConfig, ...]) -> None:
        video, audio = self._video_seen, self._audio_seen
        for config in tracks:
            if isinstance(config, VideoConfig):
                video["type"] = "video"
                if config.width:
                    video["max_width"] = max(video.get("max_width", 0), config.width)
                    video["max_height"] = max(video.get("max_height", 0), config.height)
                if config.frame_rate:
                    video["max_frame_rate"] = max(video.get("max_frame_rate", 0.0),
                                                  round(config.frame_rate, 3))
            else:
                audio["type"] = "audio"
                audio["max_channels"] = max(audio.get("max_channels", 0), config.channels)

    def _asset_tracks(self) -> list[JSONDict]:
        """Mux asset tracks: the largest picture, frame rate and channel count seen."""
        video, audio = dict(self._video_seen), dict(self._audio_seen)
        variant = self._variant
        if video and "max_frame_rate" not in video and variant and variant.frame_rate:
            video["max_frame_rate"] = variant.frame_rate
        duration = round(self._total_seconds, 3)
        return [dict(track, duration=duration) for track in (video, audio) if track]

    # -- what the HTTP routes read -------------------------------------------------------

    @property
    def ended(self) -> bool:
        return self._ended

    def resource(self, name: ResourceName) -> bytes | StoredMedia | None:
        """The bytes of a READY init, segment or part, where on disk they are when the live
        window no longer holds them, or None (`LivePlaylist.media`)."""
        return self.playlist.media(name) if self.playlist is not None else None

    def open_fragments(self) -> tuple[bytes, ...]:
        """The fragments of the segment in progress so far, oldest first (the image routes
        read the newest keyframe from them: in every latency mode, parts listed or not)."""
        playlist = self.playlist
        if playlist is None or not playlist.segments or playlist.segments[-1].complete:
            return ()
        return playlist.fragments(playlist.segments[-1].msn)

    def window_bytes(self) -> int:
        """Bytes of media held in memory for the live playlist: init segments, segments,
        parts (the open segment's too) and what waits for the first segment to complete."""
        waiting = sum(len(data) for _, data in self._buffered)
        return waiting + (self.playlist.held_bytes() if self.playlist is not None else 0)

    def variant(self) -> VariantInfo | None:
        """The rendition as the multivariant playlist describes it (after a segment)."""
        return self._variant

    async def wait_change(self) -> None:
        """Return at the next playlist change (or the end)."""
        if self._ended:
            return
        if self._change is None:
            self._change = asyncio.get_running_loop().create_future()
        await asyncio.shield(self._change)

    # -- segmenter events ----------------------------------------------------------------

    def _handle(self, events: list[SegmenterEvent]) -> None:
        if not events:
            return
        for event in events:
            if self._failed:
                return  # the rest belongs to a stream no longer packaged
            self._event(event)
        self._notify()

    def _fault(self, exc: Exception) -> None:
        """Packaging raised: the encoder's track configurations (`UnpackableTracks`), or
        anything else, which is a bug of the packager (a range check of the segmenter or the
        fMP4 writer that trips). Either way this session's media can no longer be packaged,
        and a live stream that cannot be played is worse than one that ends with a reason."""
        if isinstance(exc, UnpackableTracks):
            self._fail(f"cannot package the stream: {exc}")
            return
        self.counters.packaging_errors += 1
        log.error("%s: packaging failed by an internal error", self.label, exc_info=exc)
        self._fail(f"the stream could not be packaged (internal error {type(exc).__name__}; "
                   "the server log has the details)")

    def _event(self, event: SegmenterEvent) -> None:
        data = b""
        if isinstance(event, InitChanged):
            try:
                data = fmp4.init_segment(event.tracks)
            except ValueError as exc:
                # init_segment checks the configurations before it writes anything and
                # raises ValueError for one it cannot carry (its documented contract); this
                # call is the only place where that means the encoder's tracks.
                raise UnpackableTracks(str(exc)) from None
        elif isinstance(event, SegmentStarted):
            self._open_size = 0
        elif isinstance(event, PartCut):
            data = fmp4.media_fragment(event.sequence_number, event.runs)
            self._open_size += len(data)
            if self._open_size > self._max_segment_bytes:
                self._fail(f"a segment reached {self._open_size >> 20} MiB without a "
                           "keyframe; set the encoder's keyframe interval (2 s is usual)")
                return
        if self.playlist is None:
            # (The first segment's parts wait for it to complete, which fixes
            # TARGETDURATION: a start-up wait, left out of the publish delay.)
            self._buffered.append((event, data))
            if isinstance(event, SegmentCompleted):
                self._create_playlist(event.target_duration)
            return
        self._apply(event, data)
        if isinstance(event, PartCut) and event.listed:
            self.counters.part_publish_delay.observe(
                max(0.0, self._clock() - event.last_arrival))

    def _create_playlist(self, target_duration: int) -> None:
        self.playlist = LivePlaylist(kind=PlaylistKind.LIVE, target_duration=target_duration,
                                     part_target=self.segmenter.part_target, strict=False,
                                     first_msn=self._first_msn)
        self.renderer = PlaylistRenderer(self.playlist)
        buffered, self._buffered = self._buffered, []
        for event, data in buffered:
            self._apply(event, data)

    def _apply(self, event: SegmenterEvent, data: bytes) -> None:
        playlist = self.playlist
        assert playlist is not None
        if isinstance(event, InitChanged):
            playlist.add_init(event.init, data)
            self._current_init = event.tracks
            self._see_tracks(event.tracks)
            if self._recording is not None:
                self._recording.submit(lambda writer: writer.write_init(event.init, data))
        elif isinstance(event, SegmentStarted):
            info = event.segment
            playlist.start_segment(init=info.init, program_date_time=info.program_date_time,
                                   discontinuity=info.discontinuity)
            self._open_video_frames = 0
        elif isinstance(event, PartCut):
            self.counters.parts += 1
            self.counters.bytes_out += len(data)
            if self._current_init and isinstance(self._current_init[0], VideoConfig):
                self._open_video_frames += sum(
                    len(run.samples) for run in event.runs if run.track_id == 1)
            if event.listed:
                playlist.add_part(event.part.duration, independent=event.part.independent,
                                  data=data)
            else:
                playlist.add_fragment(data)
        elif isinstance(event, SegmentCompleted):
            self._complete(playlist, event)

    def _complete(self, playlist: LivePlaylist, event: SegmentCompleted) -> None:
        segment = playlist.complete_segment(event.duration)
        fragments = playlist.fragments(segment.msn)
        size = sum(map(len, fragments))
        self.counters.segments += 1
        self._completed += 1
        self._measure(size, event.duration)
        msn = segment.msn

        def stored(path: object) -> None:  # the window may let the bytes go (on the loop)
            if self.playlist is not None:
                self.playlist.store(msn, str(path))

        recorded = False
        if self._recording is not None:
            target = event.target_duration
            # The buffers as held: the disk gets the parts one after another, no copy.
            recorded = self._recording.submit(
                lambda writer: writer.write_segment(segment, fragments, target), size,
                done=stored)
            if not recorded:
                self.counters.recording_dropped += 1  # the queue said why, once
            if self._completed == 1 and self._variant is not None:
                variant = self._variant
                self._recording.submit(lambda writer: writer.write_variant(variant))
        if not recorded and self._spool is not None:
            self._spool.put(msn, fragments, playlist.oldest_msn, stored)
        self._on_playable()

    def _measure(self, size: int, duration: float) -> None:
        if duration <= 0:
            return
        bits = size * 8
        self._peak_bps = max(self._peak_bps, bits / duration)
        self._total_bits += bits
        self._total_seconds += duration
        if self._open_video_frames:
            self._video_frames += self._open_video_frames
            self._video_seconds += duration
        tracks = self._current_init
        video = next((t for t in tracks if isinstance(t, VideoConfig)), None)
        codecs = tuple(t.codecs for t in tracks
                       if isinstance(t, VideoConfig | AudioConfig) and t.codecs)
        if not codecs:
            return
        frame_rate = None
        if video is not None:
            frame_rate = video.frame_rate or (
                round(self._video_frames / self._video_seconds, 3)
                if self._video_seconds else None)
        average = max(1, round(self._total_bits / self._total_seconds))
        self._variant = VariantInfo(
            bandwidth=max(average, round(self._peak_bps)),
            average_bandwidth=average,
            codecs=codecs,
            resolution=(video.width, video.height) if video and video.width else None,
            frame_rate=frame_rate)

    def _notify(self) -> None:
        change, self._change = self._change, None
        if change is not None and not change.done():
            change.set_result(None)

    def _fail(self, reason: str) -> None:
        """Stop packaging, count it and ask the session to end with `reason`: nothing can
        play this session's media any more (the live playlist is the only way to watch it)."""
        if self._failed:
            return
        self._failed = True
        self.counters.failures += 1
        log.error("%s: %s; the session ends", self.label, reason)
        self._on_fatal(reason)
