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


_PTS_WRAP = 1 << 33
_PTS_HALF = 1 << 32


class PtsUnwrapper:
    """Extends 33-bit 90 kHz MPEG PTS / DTS values to one 64-bit tick count.

    H.222.0 2.4.3.7: PTS and DTS are 33-bit counts of a 90 kHz clock, so they wrap after
    2**33 ticks (about 26.5 hours), and a transport stream may start anywhere on that circle.
    The same shortest-step rule as `TimestampUnwrapper` applies: the step from the previous
    value is taken modulo 2**33 into -2**32..2**32, so one unwrapper can follow the PTS and DTS
    of every track of a program at once (they stay within seconds of each other). The first
    value is returned unchanged.
    """

    __slots__ = ("_last", "_last33")

    def __init__(self) -> None:
        self._last: int | None = None
        self._last33 = 0

    def unwrap(self, ts33: int) -> int:
        """The 64-bit extension of `ts33` (0 <= ts33 < 2**33), in 90 kHz ticks."""
        if not 0 <= ts33 < _PTS_WRAP:
            raise ValueError(f"PTS/DTS {ts33} is not a 33-bit unsigned value")
        last = self._last
        if last is None:
            extended = ts33
        else:
            step = ts33 - self._last33
            if step < -_PTS_HALF:
                step += _PTS_WRAP  # wrapped forward past 2**33
            elif step > _PTS_HALF:
                step -= _PTS_WRAP  # stepped back across a wrap
            extended = last + step
        self._last = extended
        self._last33 = ts33
        return extended
