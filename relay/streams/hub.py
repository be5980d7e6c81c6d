"""One live stream's session: the lifecycle's effects, the timers, and the media fan-out.

A `LiveSession` exists from the moment an encoder is admitted on a stream's key until the
stream goes idle. Ingest adapters (RTMP, later SRT) attach as its `Publisher` and push track
configurations and frames into it; consumers (the HLS packager, simulcast pushers) attach as
`MediaSink`s, each behind its own bounded queue (`relay.streams.queue`), so the publisher's
read loop only ever appends references and one slow consumer cannot stall it. The media
path never waits for the store: lifecycle effects are queued and written in order by one
worker task per session, through the store's group commit (`Store.session_write`), so the
writes of many sessions that change at once (a stop ends every session together) share
transactions; and the recordings of those sessions are finalized side by side in the disk
pool (`relay.hls.disk`), a few at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Protocol

from relay.media.units import AudioConfig, MediaFrame, TrackConfig, TrackKind, VideoConfig
from relay.store import SessionWrite, Store
from relay.store.records import Asset, IngestProtocol, LiveStream, RecordedMedia, RecordingTime
from relay.streams.health import IngestHealth, PlaybackClients
from relay.streams.ingest_warnings import IngestWarning, IngestWarnings, WarningCounts
from relay.streams.lifecycle import Effect, Input, SessionLifecycle, State

log = logging.getLogger("relay.streams")

_VIDEO = TrackKind.VIDEO


class Publisher(Protocol):
    """An encoder's connection as the session sees it."""

    @property
    def protocol(self) -> IngestProtocol: ...

    @property
    def peer(self) -> str:
        """"address:port", for logs."""

    def close(self, reason: str) -> None:
        """End the connection (telling the encoder why, where the protocol can)."""


class MediaSink(Protocol):
    """A consumer of a session's media: the HLS packager, a simulcast pusher."""

    def on_track(self, config: TrackConfig) -> None: ...
    def on_frame(self, frame: MediaFrame) -> None: ...
    def on_discontinuity(self) -> None: ...
    def on_end(self) -> None: ...


class LiveSession:
    """The session of one live stream; see `relay.streams.lifecycle` for its states."""

    def __init__(
        self,
        stream: LiveStream,
        store: Store,
        *,
        session_limit: float,
        on_ended: Callable[[LiveSession], None],
        wall_clock: Callable[[], float] = time.time,
        clock: Callable[[], float] = time.monotonic,
        warning_counts: WarningCounts | None = None,
        lease_owner: str | None = None,
    ) -> None:
        self.stream = stream
        self.store = store
        #: The node holding the stream's lease for this session (several nodes on one
        #: database): the disconnections and the end are written only while it still does,
        #: and the end releases it.
        self.lease_owner = lease_owner
        self.lifecycle = SessionLifecycle(reconnect_window=stream.reconnect_window)
        self.publisher: Publisher | None = None
        self.sinks: list[MediaSink] = []
        self.tracks: dict[TrackKind, TrackConfig] = {}
        self.asset_id: str | None = None
        self.protocol: IngestProtocol = "rtmp"
        #: Read by /metrics at scrape time: the ingest's rates, keyframe interval and drift,
        self.health = IngestHealth()
        #: the encoder's resumes inside the reconnect window,
        self.reconnects = 0
        #: the HLS clients of the stream (the packager's routes record them),
        self.viewers = PlaybackClients()
        #: and whether the session limit ended the session.
        self.limit_reached = False
        #: Finds what the streamer should fix (video.live_stream.warning); the app sets its
        #: segment_target from the packager's.
        self.warnings = IngestWarnings(expect_video=not stream.audio_only,
                                       counts=warning_counts)
        self._session_limit = session_limit
        self._on_ended = on_ended
        self._wall_clock = wall_clock
        self._clock = clock
        # Lifecycle effects and ingest warnings, written in order (at most
        # `WarningLimits.max_per_session` warnings per session reach it).
        self._effects: asyncio.Queue[
            tuple[Effect | IngestWarning, RecordingTime | None]] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None
        self._window_timer: asyncio.TimerHandle | None = None
        self._limit_timer: asyncio.TimerHandle | None = None
        self._recording_since: tuple[float, float] | None = None  # (wall, monotonic)
        self._end_reason = ""
        self.finished = asyncio.Event()
        self.started_at = wall_clock()  # epoch seconds
        # Consumers hook in here (the app wires them; this module knows none of them):
        #: called once with the asset id when the store has created (or continued) the asset;
        self.asset_listeners: list[Callable[[str], None]] = []
        #: awaited when the session ends, before the store records it: finishes the
        #: recording and describes its media (None when unknown);
        self.recording_done: Callable[[], Awaitable[RecordedMedia | None]] | None = None
        #: called each time the stream becomes active (again after an encoder reconnected),
        #: once the store has it active: simulcast starts here;
        self.active_listeners: list[Callable[[], None]] = []
        #: called once when the session ends, after its sinks were ended;
        self.end_listeners: list[Callable[[], None]] = []
        #: per-session state of the consumers, by name (the hub never reads it).
        self.attachments: dict[str, object] = {}
        # True once a sink that reports playable segments is attached (the HLS packager).
        self._sink_reports_playable = False
        # The recording being finished (from the end on), awaited by the end's store write.
        self._recording: asyncio.Task[RecordedMedia | None] | None = None
        # Clear while a MARK_RECORDING write is queued: the recording cannot be finished
        # before the store has said which asset it goes to.
        self._asset_settled = asyncio.Event()
        self._asset_settled.set()
        self._asset_writes = 0  # MARK_RECORDING writes queued or being written

    # -- admission -------------------------------------------------------------------

    @property
    def stream_id(self) -> str:
        return self.stream.id

    @property
    def state(self) -> State:
        return self.lifecycle.state

    def start(self, publisher: Publisher) -> None:
        """The first admission on this stream: start the session with `publisher`."""
        self.publisher = publisher
        self.protocol = publisher.protocol
        loop = asyncio.get_running_loop()
        self._worker = loop.create_task(self._run_effects(), name=f"session-{self.stream_id}")
        limit = min(self._session_limit, float(self.stream.max_continuous_duration))
        self._limit_timer = loop.call_later(limit, self._limit_reached, limit)
        self._apply(self.lifecycle.start())
        log.info("stream %s: %s connected from %s", self.stream_id, publisher.protocol,
                 publisher.peer)

    def can_resume(self) -> bool:
        return self.lifecycle.accepts(Input.RECONNECT)

    def resume(self, publisher: Publisher) -> None:
        """An encoder came back inside the reconnect window: same session, same asset."""
        self.publisher = publisher
        self.reconnects += 1
        self.health.new_connection()
        self.warnings.new_connection()
        self._apply(self.lifecycle.handle(Input.RECONNECT))
        for sink in self.sinks:
            sink.on_discontinuity()
        log.info("stream %s: %s reconnected from %s", self.stream_id, publisher.protocol,
                 publisher.peer)

    def detach(self, publisher: Publisher, reason: str) -> None:
        """The publisher's connection ended (for any reason)."""
        if publisher is not self.publisher:
            return
        self.publisher = None
        log.info("stream %s: %s from %s disconnected: %s", self.stream_id,
                 publisher.protocol, publisher.peer, reason)
        if self.lifecycle.accepts(Input.DROP):
            self._apply(self.lifecycle.handle(Input.DROP))

    def end(self, reason: str) -> None:
        """End the session now: the application completed, disabled or deleted the stream,
        reset its key, or the session limit was reached."""
        if self.lifecycle.ended:
            return
        self._end_reason = reason
        log.info("stream %s: session ended: %s", self.stream_id, reason)
        self._apply(self.lifecycle.handle(Input.END))

    # -- media -----------------------------------------------------------------------

    def publish_track(self, config: TrackConfig) -> None:
        if self.stream.audio_only and isinstance(config, VideoConfig):
            return
        kind = TrackKind.VIDEO if isinstance(config, VideoConfig) else TrackKind.AUDIO
        self.tracks[kind] = config
        self.warnings.on_track(kind)
        for sink in self.sinks:
            sink.on_track(config)

    def publish_frame(self, frame: MediaFrame) -> None:
        self.publish_units((frame,))

    def publish_units(self, units: Iterable[TrackConfig | MediaFrame]) -> None:
        """One read's media in arrival order (an ingest adapter's batch).

        What is the same for every frame of a read is looked up once: the clock (one read,
        one arrival time), the consumers, and whether the lifecycle still waits for media or
        for a playable frame (once the stream is active, a frame changes no state)."""
        tracks = self.tracks
        audio_only = self.stream.audio_only
        sinks = self.sinks
        record = self.health.record
        check = self.warnings.on_frame
        now = self._clock()
        settled = self._lifecycle_settled()  # once the stream is active: True
        for unit in units:
            if not isinstance(unit, MediaFrame):
                self.publish_track(unit)
                continue
            kind = unit.kind
            video = kind is _VIDEO
            if (video and audio_only) or kind not in tracks:
                # A frame before its decoder configuration cannot be decoded by anyone.
                continue
            keyframe, dts = unit.keyframe, unit.dts
            record(now, len(unit.data), video, keyframe, dts)
            if not settled:
                self._advance_lifecycle(unit)
                settled = self._lifecycle_settled()
            raised = check(now, video, keyframe, dts)
            if raised:
                self._warn(raised)
            for sink in sinks:
                sink.on_frame(unit)

    def _lifecycle_settled(self) -> bool:
        """Whether a frame can change the lifecycle's state no more (until a reconnect)."""
        state = self.lifecycle.state
        return not (state is State.CONNECTED
                    or (state is State.RECORDING and not self._sink_reports_playable))

    def _advance_lifecycle(self, frame: MediaFrame) -> None:
        # The connection's first frame starts the recording; without a sink that reports
        # playable segments, the first playable frame makes the stream active.
        state = self.lifecycle.state
        if state is State.CONNECTED:
            self._apply(self.lifecycle.handle(Input.MEDIA))
            state = self.lifecycle.state
        if (state is State.RECORDING and not self._sink_reports_playable
                and self._first_frame_playable(frame)):
            self._apply(self.lifecycle.handle(Input.PLAYABLE))

    def mark_playable(self) -> None:
        """A sink (the HLS packager) has a playable segment of this connection's media."""
        if self.lifecycle.state is State.RECORDING:
            self._apply(self.lifecycle.handle(Input.PLAYABLE))

    def _first_frame_playable(self, frame: MediaFrame) -> bool:
        # Without a packager (simulcast only, tests), the first keyframe (or, for audio-only
        # streams, the first audio frame) stands in for the first playable segment.
        if isinstance(self.tracks.get(TrackKind.VIDEO), VideoConfig):
            return frame.kind is TrackKind.VIDEO and frame.keyframe
        return isinstance(self.tracks.get(TrackKind.AUDIO), AudioConfig)

    def attach_sink(self, sink: MediaSink, *, reports_playable: bool = False) -> None:
        """Feed `sink` this session's media; with `reports_playable` the sink calls
        `mark_playable` and the stream becomes active only then."""
        self.sinks.append(sink)
        self._sink_reports_playable |= reports_playable
        for config in self.tracks.values():
            sink.on_track(config)

    def _warn(self, raised: tuple[IngestWarning, ...]) -> None:
        for warning in raised:
            # The message holds only numbers Relay measured, no peer text.
            log.warning("stream %s: ingest warning %s: %s", self.stream_id, warning.kind,
                        warning.message)
            if not self.lifecycle.ended:
                self._effects.put_nowait((warning, None))
        if self.warnings.raised >= self.warnings.limits.max_per_session:
            log.warning("stream %s: %d ingest warnings raised, the most per session; later "
                        "ones are only counted (relay_live_stream_warnings_suppressed_total)",
                        self.stream_id, self.warnings.raised)

    # -- effects ---------------------------------------------------------------------

    def _apply(self, effects: tuple[Effect, ...]) -> None:
        loop = asyncio.get_running_loop()
        for effect in effects:
            if effect is Effect.START_WINDOW:
                self._window_timer = loop.call_later(
                    self.stream.reconnect_window, self._window_expired)
            elif effect is Effect.CANCEL_WINDOW:
                if self._window_timer is not None:
                    self._window_timer.cancel()
                    self._window_timer = None
            elif effect is Effect.CLOSE_PUBLISHER:
                publisher, self.publisher = self.publisher, None
                if publisher is not None:
                    publisher.close(self._end_reason)
            elif effect is Effect.MARK_RECORDING:
                self._recording_since = (self._wall_clock(), self._clock())
                self._asset_writes += 1
                self._asset_settled.clear()
                self._effects.put_nowait((effect, None))
            elif effect is Effect.MARK_DISCONNECTED:
                self._effects.put_nowait((effect, self._close_recording_interval()))
            else:
                if effect is Effect.FINISH:
                    self._finish_media()
                self._effects.put_nowait((effect, None))

    def _close_recording_interval(self) -> RecordingTime | None:
        if self._recording_since is None:
            return None
        wall, mono = self._recording_since
        self._recording_since = None
        return RecordingTime(started_at=wall, duration=round(self._clock() - mono, 3))

    def _finish_media(self) -> None:
        if self._limit_timer is not None:
            self._limit_timer.cancel()
            self._limit_timer = None
        for sink in self.sinks:
            sink.on_end()
        self.sinks.clear()
        self._tell(self.end_listeners, "end")
        if self.recording_done is not None:
            # Finish the recording now, beside the store writes queued before the end
            # (the disconnection): the end's write awaits it.
            self._recording = asyncio.get_running_loop().create_task(
                self._finish_recording(self.recording_done),
                name=f"recording-{self.stream_id}")

    def _tell(self, listeners: list[Callable[[], None]], what: str) -> None:
        # A consumer's failure must not stop the session's effects (or its end).
        for listener in listeners:
            try:
                listener()
            except Exception:
                log.exception("stream %s: a consumer failed on the session's %s",
                              self.stream_id, what)

    async def _finish_recording(
        self, done: Callable[[], Awaitable[RecordedMedia | None]]
    ) -> RecordedMedia | None:
        await self._asset_settled.wait()
        try:
            return await done()
        except Exception:
            log.exception("stream %s: could not finish the recording", self.stream_id)
            return None

    def _window_expired(self) -> None:
        self._window_timer = None
        if self.lifecycle.accepts(Input.WINDOW_EXPIRED):
            log.info("stream %s: reconnect window of %gs expired", self.stream_id,
                     self.stream.reconnect_window)
            self._apply(self.lifecycle.handle(Input.WINDOW_EXPIRED))

    def _limit_reached(self, limit: float) -> None:
        self._limit_timer = None
        self.limit_reached = True
        self.end(f"session reached its limit of {limit:g}s (max_continuous_duration)")

    async def _run_effects(self) -> None:
        while True:
            effect, recorded = await self._effects.get()
            if isinstance(effect, IngestWarning):
                try:
                    await self.store.session_write(SessionWrite(
                        "warning", self.stream_id, warning=(effect.kind.value, effect.message)))
                except Exception:
                    log.exception("stream %s: could not record the %s warning",
                                  self.stream_id, effect.kind)
                continue
            try:
                await self._write(effect, recorded, self.protocol)
            except Exception:
                # The store failing must not take the ingest down; the next transition
                # (or the recovery on restart) brings the rows back in line.
                log.exception("stream %s: could not record %s", self.stream_id, effect)
            finally:
                if effect is Effect.MARK_RECORDING:
                    self._asset_writes -= 1
                    if not self._asset_writes:
                        self._asset_settled.set()
            if effect is Effect.MARK_ACTIVE and not self.lifecycle.ended:
                self._tell(self.active_listeners, "activation")
            if effect is Effect.FINISH:
                break
        self.finished.set()
        self._on_ended(self)

    async def _write(
        self, effect: Effect, recorded: RecordingTime | None, protocol: IngestProtocol
    ) -> None:
        # Through the store's group commit: the transitions of every session that arrive
        # together (a stop ends them all at once) share a transaction.
        store, stream_id = self.store, self.stream_id
        if effect is Effect.MARK_CONNECTED:
            await store.session_write(SessionWrite("connected", stream_id))
        elif effect is Effect.MARK_RECORDING:
            known = self.asset_id
            asset = await store.session_write(
                SessionWrite("recording", stream_id, self.asset_id, protocol=protocol))
            if isinstance(asset, Asset):
                self.asset_id = asset.id
                if asset.id != known:
                    for listener in self.asset_listeners:
                        listener(asset.id)
        elif effect is Effect.MARK_ACTIVE:
            await store.session_write(SessionWrite("active", stream_id))
        elif effect is Effect.MARK_DISCONNECTED:
            await store.session_write(
                SessionWrite("disconnected", stream_id, self.asset_id, recorded=recorded,
                             node_id=self.lease_owner))
        elif effect is Effect.FINISH:
            media = await self._recording if self._recording is not None else None
            await store.session_write(SessionWrite("ended", stream_id, self.asset_id,
                                                   media=media, node_id=self.lease_owner))

    async def wait_finished(self) -> None:
        with contextlib.suppress(asyncio.CancelledError):
            await self.finished.wait()
