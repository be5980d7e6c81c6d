"""What test_recording.py shares with other test modules: kept here so no test module imports
another."""

from __future__ import annotations

from pathlib import Path

from relay.hls.model import SegmentInfo
from relay.hls.recording import (
    RecordingWriter,
)

T0 = 1_700_000_000.0


def record(directory: Path, durations: list[float], *, discontinuity_at: int = -1,
           first_msn: int = 100) -> RecordingWriter:
    writer = RecordingWriter(directory)
    writer.write_init(0, b"init-bytes")
    start = T0
    for index, duration in enumerate(durations):
        segment = SegmentInfo(msn=first_msn + index, init=0, program_date_time=start,
                              discontinuity=index == discontinuity_at, duration=duration)
        writer.write_segment(segment, f"segment {index}".encode(), target_duration=2)
        start += duration
    return writer
