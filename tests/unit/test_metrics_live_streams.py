"""The per live stream series of /metrics and the live streams by status, read from real
sessions (a stand-in publisher) at scrape time and parsed back with prometheus_client."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from relay.media.units import MediaFrame, TrackKind
from relay.store import Store
from relay.streams.registry import IngestRegistry, StreamChange
from tests.streams.helpers.sessions import AUDIO, VIDEO, FakePublisher, frame, new_stream
from tests.unit.helpers.metrics_live_streams import collector_of, scrape

pytestmark = pytest.mark.anyio


PER_STREAM = ("relay_live_stream_ingest_bitrate_bps", "relay_live_stream_frame_rate",
              "relay_live_stream_keyframe_interval_seconds", "relay_live_stream_av_drift_ms",
              "relay_live_stream_reconnects_total", "relay_live_stream_viewers")


async def test_per_stream_series_of_a_live_session(store: Store) -> None:
    stream = await new_stream(store)
    idle = await new_stream(store)
    disabled = await new_stream(store)
    registry = IngestRegistry(store)
    await registry.load_keys()
    registry.stream_changed(disabled.id, StreamChange.DISABLED,
                            dataclasses.replace(disabled, status="disabled"))
    publisher = FakePublisher()
    session = await registry.admit(stream.stream_key, publisher, "127.0.0.1")
    session.publish_track(VIDEO)
    session.publish_track(AUDIO)
    # The session's clock, which the collector's must match, at chosen seconds.
    now = 990.0
    session._clock = lambda: now
    # A first connection, long before the window, then the encoder reconnects.
    session.publish_frame(MediaFrame(TrackKind.VIDEO, 0, 0, True, b"\x00" * 9999))
    session.detach(publisher, "gone")
    session.resume(FakePublisher())
    for second in range(1000, 1006):
        for index in range(30):
            now = second + index / 30
            session.publish_frame(MediaFrame(TrackKind.VIDEO, second * 1000 + index * 33,
                                             second * 1000 + index * 33, index == 0,
                                             b"\x00" * 2000))
        now = second + 0.5
        session.publish_frame(MediaFrame(TrackKind.AUDIO, second * 1000 + 40,
                                         second * 1000 + 40, False, b"\x00" * 500))
    session.viewers.seen("192.0.2.7", 1003.0)
    session.viewers.seen("192.0.2.8", 1003.5)

    samples, docs = scrape(collector_of(registry, 1005.2))
    labels = (("live_stream_id", stream.id),)
    assert samples["relay_live_stream_frame_rate", labels] == 30
    assert samples["relay_live_stream_ingest_bitrate_bps", labels] == (30 * 2000 + 500) * 8
    assert samples["relay_live_stream_keyframe_interval_seconds", labels] == 1.0
    # The last video frame is at 1005 s + 29 * 33 ms, the last audio one at 1005 s + 40 ms.
    assert samples["relay_live_stream_av_drift_ms", labels] == 40 - 29 * 33
    assert samples["relay_live_stream_reconnects_total", labels] == 1
    assert samples["relay_live_stream_viewers", labels] == 2
    for name in PER_STREAM:
        assert docs[name.removesuffix("_total")]  # every family has help text
    by_status = {dict(key[1])["status"]: value for key, value in samples.items()
                 if key[0] == "relay_live_streams"}
    assert by_status["active"] == 1  # no sink reports playable: the keyframe stands in
    assert by_status["idle"] == 1 and by_status["disabled"] == 1
    assert by_status["connected"] == by_status["recording"] == by_status["disconnected"] == 0
    assert docs["relay_live_streams"] and idle.id != stream.id

    # Thirty seconds later the viewers have gone, the series stay while the session does.
    samples, _ = scrape(collector_of(registry, 1040.0))
    assert samples["relay_live_stream_viewers", labels] == 0
    assert samples["relay_live_stream_frame_rate", labels] == 0

    session.end("test over")
    await asyncio.wait_for(session.wait_finished(), 5)
    samples, _ = scrape(collector_of(registry, 1041.0))
    assert not [key for key in samples if key[0] in PER_STREAM]
    await registry.close()


async def test_session_limit_disconnects_are_counted(store: Store) -> None:
    stream = await new_stream(store)
    registry = IngestRegistry(store, session_limit=0.2)
    session = await registry.admit(stream.stream_key, FakePublisher(), "127.0.0.1")
    session.publish_track(VIDEO)
    session.publish_frame(frame(TrackKind.VIDEO, 0, keyframe=True))
    samples, _ = scrape(collector_of(registry, 0.0))
    assert samples["relay_ingest_session_limit_disconnects_total", ()] == 0
    await asyncio.wait_for(session.wait_finished(), 5)
    samples, docs = scrape(collector_of(registry, 0.0))
    assert samples["relay_ingest_session_limit_disconnects_total", ()] == 1
    assert docs["relay_ingest_session_limit_disconnects"]
    await registry.close()
