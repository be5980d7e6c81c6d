"""What test_drain_queue.py shares with other test modules: kept here so no test module imports
another."""

from __future__ import annotations

from relay.media.units import MediaFrame, TrackConfig
from relay.streams.queue import (
    Discontinuity,
    EndOfStream,
    QueueItem,
)


class Recorder:
    """A synchronous consumer that records what it is handed."""

    def __init__(self) -> None:
        self.items: list[QueueItem] = []
        self.fail_on: MediaFrame | None = None

    def on_track(self, config: TrackConfig) -> None:
        self.items.append(config)

    def on_frame(self, frame: MediaFrame) -> None:
        if frame is self.fail_on:
            self.fail_on = None
            raise RuntimeError("consumer failed")
        self.items.append(frame)

    def on_discontinuity(self) -> None:
        self.items.append(Discontinuity())

    def on_end(self) -> None:
        self.items.append(EndOfStream())
