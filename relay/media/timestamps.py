"""RTMP message timestamps (32-bit milliseconds) extended to one 64-bit timeline.

RTMP 5.3.1 timestamps wrap after 2**32 ms (about 49.7 days), and encoders may start anywhere
(ffmpeg and OBS often start near 0, others at a wall-clock derived value that can sit just
below the wrap). Each timestamp is taken as the previous one plus the shortest signed step
modulo 2**32: a step back by more than 2**31 is a wrap forward, a step forward by more than
2**31 is a small step back across a wrap, and small backward steps (audio and video
interleaving, a restarted encoder clock) stay backward steps.
"""

from __future__ import annotations


class _Unwrapper:
    """Extends `BITS`-bit timestamps by the shortest-step rule; the first one is returned
    unchanged."""

    __slots__ = ("_last", "_last_raw")
    BITS = 0
    WHAT = ""

    def __init__(self) -> None:
        self._last: int | None = None
        self._last_raw = 0

    def unwrap(self, raw: int) -> int:
        """The 64-bit extension of `raw` (0 <= raw < 2**BITS)."""
        wrap = 1 << self.BITS
        if not 0 <= raw < wrap:
            raise ValueError(f"{self.WHAT} {raw} is not a {self.BITS}-bit unsigned value")
        last = self._last
        if last is None:
            extended = raw
        else:
            step = raw - self._last_raw
            if step < -(wrap >> 1):
                step += wrap  # wrapped forward past 2**BITS
            elif step > wrap >> 1:
                step -= wrap  # stepped back across a wrap
            extended = last + step
        self._last = extended
        self._last_raw = raw
        return extended


class TimestampUnwrapper(_Unwrapper):
    """Extends one session's 32-bit RTMP timestamps (ms)."""

    __slots__ = ()
    BITS = 32
    WHAT = "RTMP timestamp"


class PtsUnwrapper(_Unwrapper):
    """Extends 33-bit 90 kHz MPEG PTS / DTS values to one 64-bit tick count.

    H.222.0 2.4.3.7: PTS and DTS are 33-bit counts of a 90 kHz clock, so they wrap after
    2**33 ticks (about 26.5 hours), and a transport stream may start anywhere on that circle.
    The same shortest-step rule as `TimestampUnwrapper` applies: the step from the previous
    value is taken modulo 2**33 into -2**32..2**32, so one unwrapper can follow the PTS and DTS
    of every track of a program at once (they stay within seconds of each other).
    """

    __slots__ = ()
    BITS = 33
    WHAT = "PTS/DTS"
