"""The image jobs as the relay's process names them, and the image a job gives back.

A job (`relay.images.worker.ImageJob`) is a module-level function and its arguments,
pickled by name: the routes name the functions of this module, and a worker, which imported
`relay.images.render` (PyAV, Pillow) before it said it was ready, runs them. The relay's
own process imports only this module: FFmpeg's libraries and Pillow, about 18 MiB of a
freshly started relay's memory (`benchmarks/idle_memory.py`), are loaded by the workers
alone, and no request makes the event loop import them.

Each `render_*` here runs its namesake in `relay.images.render` (the import inside finds
the module the worker already loaded); `render_live` and `render_recorded` say where the
media comes from.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from relay.images.media import MediaReader, RecordingIndex, RecordingReader, Timeline
from relay.images.params import AnimatedRequest, StoryboardRequest, ThumbnailRequest


@dataclass(frozen=True, slots=True)
class Rendered:
    """An encoded image (or WebVTT text) as the route serves it."""

    body: bytes
    media_type: str
    keyframe_time: float | None = None  # thumbnails: where on the timeline the picture is


# -- what to make -------------------------------------------------------------------------------

def render_thumbnail(timeline: Timeline, reader: MediaReader,
                     request: ThumbnailRequest) -> Rendered:
    from relay.images import render
    return render.render_thumbnail(timeline, reader, request)


def render_animated(timeline: Timeline, reader: MediaReader,
                    request: AnimatedRequest) -> Rendered:
    from relay.images import render
    return render.render_animated(timeline, reader, request)


def render_storyboard(timeline: Timeline, reader: MediaReader,
                      request: StoryboardRequest) -> Rendered:
    from relay.images import render
    return render.render_storyboard(timeline, reader, request)


def render_storyboard_vtt(timeline: Timeline, reader: MediaReader,
                          request: StoryboardRequest) -> Rendered:
    from relay.images import render
    return render.render_storyboard_vtt(timeline, reader, request)


# -- from what: the jobs a worker runs -------------------------------------------------------

#: This process's parsed recording playlists (a worker's: they are parsed where they are used).
_RECORDINGS: Final = RecordingIndex()


def render_live(reader: MediaReader, make: Callable[[Timeline, MediaReader, Any], Rendered],
                timeline: Timeline, request: Any) -> Rendered:
    """`make` on a live snapshot's timeline; `reader` asks the relay for its bytes."""
    return make(timeline, reader, request)


def render_recorded(_: MediaReader, make: Callable[[Timeline, MediaReader, Any], Rendered],
                    directory: Path, version: Hashable, request: Any) -> Rendered:
    """`make` on a recording, its playlist and files read here (MediaGone once gone)."""
    return make(_RECORDINGS.timeline(directory, version), RecordingReader(directory), request)
