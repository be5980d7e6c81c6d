"""RTMP message timestamps (32-bit milliseconds) extended to one 64-bit timeline.

RTMP 5.3.1 timestamps wrap after 2**32 ms (about 49.7 days), and encoders may start anywhere
(ffmpeg and OBS often start near 0, others at a wall-clock derived value that can sit just
below the wrap). Each timestamp is taken as the previous one plus the shortest signed step
modulo 2**32: a step back by more than 2**31 is a wrap forward, a step forward by more than
2**31 is a small step back across a wrap, and small backward steps (audio and video
interleaving, a restarted encoder clock) stay backward steps.
"""

from __future__ import annotations

_WRAP = 1 << 32
_HALF = 1 << 31


class TimestampUnwrapper:
    """Extends one session's 32-bit timestamps; the first one is returned unchanged."""

    __slots__ = ("_last", "_last32")

    def __init__(self) -> None:
        self._last: int | None = None
        self._last32 = 0

    def unwrap(self, ts32: int) -> int:
        """The 64-bit extension of `ts32` (0 <= ts32 < 2**32), in ms."""
        if not 0 <= ts32 < _WRAP:
            raise ValueError(f"RTMP timestamp {ts32} is not a 32-bit unsigned value")
        last = self._last
        if last is None:
            extended = ts32
        else:
            step = ts32 - self._last32
            if step < -_HALF:
                step += _WRAP  # wrapped forward past 2**32
            elif step > _HALF:
                step -= _WRAP  # stepped back across a wrap
            extended = last + step
        self._last = extended
        self._last32 = ts32
        return extended
