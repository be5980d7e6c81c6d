"""What test_sessions.py shares with other test modules: kept here so no test module imports
another."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Literal

from relay.media.units import AudioConfig, Codec, MediaFrame, TrackKind, VideoConfig
from relay.store import NewLiveStream, Store
from relay.store.records import LiveStream
from relay.streams.registry import IngestRegistry

VIDEO = VideoConfig(codec=Codec.H264, record=b"\x01\x64\x00\x1f", width=1280, height=720,
                    codecs="avc1.64001f", frame_rate=30.0)


AUDIO = AudioConfig(codec=Codec.AAC, record=b"\x11\x90", sample_rate=48000, channels=2,
                    codecs="mp4a.40.2")


@dataclass
class FakePublisher:
    peer: str = "127.0.0.1:5000"
    protocol: Literal["rtmp"] = "rtmp"
    closed: list[str] = field(default_factory=list)

    def close(self, reason: str) -> None:
        self.closed.append(reason)


async def new_stream(store: Store, **overrides: object) -> LiveStream:
    values: dict[str, object] = dict(
        latency_mode="standard", reconnect_window=60.0, max_continuous_duration=43200,
        audio_only=False, use_slate_for_standard_latency=False, test=False,
        new_asset_settings={"playback_policies": ["public"]}, playback_policies=("public",))
    values.update(overrides)
    return await store.create_live_stream(NewLiveStream(**values), [])  # type: ignore[arg-type]


def frame(kind: TrackKind, dts: int, keyframe: bool = False) -> MediaFrame:
    return MediaFrame(kind=kind, dts=dts, pts=dts, keyframe=keyframe, data=b"\x00" * 8)


def push(session: object, *, keyframe: bool = True) -> None:
    session.publish_track(VIDEO)  # type: ignore[attr-defined]
    session.publish_track(AUDIO)  # type: ignore[attr-defined]
    session.publish_frame(frame(TrackKind.AUDIO, 0))  # type: ignore[attr-defined]
    session.publish_frame(frame(TrackKind.VIDEO, 0, keyframe))  # type: ignore[attr-defined]


async def settle(registry: IngestRegistry, stream_id: str) -> None:
    """Wait until the session's queued store writes are done (or it ended)."""
    for _ in range(200):
        session = registry.sessions.get(stream_id)
        if session is None or session._effects.empty():
            await asyncio.sleep(0.02)
            if session is None or session._effects.empty():
                return
        await asyncio.sleep(0.01)
