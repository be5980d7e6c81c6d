"""What test_packager.py shares with other test modules: kept here so no test module imports
another."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from relay.hls.packager import LivePackager
from relay.media.units import MediaFrame
from relay.store.records import LatencyMode
from tests.hls.helpers.segmenter import (
    audio_config,
    audio_frames,
    interleave,
    video_config,
    video_frames,
)

T0 = 1_700_000_000.0


class Feeder:
    """Feeds a packager frames with arrival times on a fake wall clock."""

    def __init__(self, mode: LatencyMode = "low", **options: Any) -> None:
        self.now = T0
        self.playable = 0
        self.fatal: list[str] = []
        self.packager = LivePackager(
            mode, label="test", on_playable=self._playable, on_fatal=self.fatal.append,
            clock=lambda: self.now, **options)

    def _playable(self) -> None:
        self.playable += 1

    def tracks(self, audio: bool = True) -> Feeder:
        self.packager.on_track(video_config())
        if audio:
            self.packager.on_track(audio_config())
        return self

    def frames(self, frames: Iterable[MediaFrame]) -> Feeder:
        for frame in frames:
            self.now = T0 + frame.dts / 1000
            self.packager.on_frame(frame)
        return self


def av(seconds: float, start: int = 0) -> list[MediaFrame]:
    return interleave(video_frames(seconds, start=start), audio_frames(seconds, start=start))
