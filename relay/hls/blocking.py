"""Blocking playlist reload and delta-update requests (rfc8216bis 6.2.5), sans-IO.

Theory of operation: the HTTP layer hands `decide` the query of a playlist request
(`_HLS_msn`, `_HLS_part`, `_HLS_skip`; anything else is ignored) and the playlist's state, and
gets one of

    BadRequest(reason)  answer 400 with the reason, at once
    Ready(skip)         render now (`skip`: the delta form was asked for)
    Wait(msn, part, skip)
                        hold the request; after each playlist change call `is_satisfied`,
                        render when it is true, answer 503 after `hold_timeout` seconds

Rules (LL-HLS.md): `_HLS_part` needs `_HLS_msn`; values are non-negative integers; an msn more
than 2 past the last segment, or a part more than the Advance Part Limit past the last part,
is refused at once. `_HLS_msn=M` alone waits for segment M to be complete; with
`_HLS_part=N` for part N of segment M, where an index past the end of a completed segment M
means part 0 of M+1 (hls.js asks exactly that). Once the playlist has ENDLIST every
directive is ignored and the whole playlist is served.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Protocol

from relay.hls.model import PartInfo, SegmentInfo
from relay.logs import peer_text

MSN_PARAM: Final = "_HLS_msn"
PART_PARAM: Final = "_HLS_part"
SKIP_PARAM: Final = "_HLS_skip"

MSN_AHEAD_LIMIT: Final = 2  # rfc8216bis 6.2.5.2: msn > last msn + 2 -> 400
HOLD_TIMEOUT_TARGET_DURATIONS: Final = 3  # a held request gets 503 after 3 x TARGETDURATION
#: Buckets (seconds) of `relay_hls_blocking_reload_wait_seconds`: a reload for the next part
#: waits up to a PART-TARGET (0.3 s), one for the next segment up to a segment (2 s in LOW
#: mode, 6 s in STANDARD), and none longer than the hold timeout, 3 x TARGETDURATION.
RELOAD_WAIT_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.0, 3.0,
                              6.0, 10.0, 20.0, 30.0)
# Directive values are at most this many digits (the resource names use at most 12 for an msn).
MAX_DIRECTIVE_DIGITS: Final = 12
# _HLS_skip=v2 also asks to skip date ranges; without CAN-SKIP-DATERANGES it means YES.
SKIP_VALUES: Final = frozenset({"YES", "v2"})
# How much of a bad directive value a 400's reason shows (escaped: `relay.logs.peer_text`).
SHOWN_VALUE_LIMIT: Final = 40


class ReloadState(Protocol):
    """What the rules read from a playlist (`relay.hls.playlist.LivePlaylist` has it all)."""

    @property
    def ended(self) -> bool: ...

    @property
    def part_target(self) -> float | None: ...

    @property
    def next_msn(self) -> int: ...  # the msn the next started segment gets

    @property
    def last_complete_msn(self) -> int | None: ...

    @property
    def last_part(self) -> PartInfo | None: ...

    def segment(self, msn: int) -> SegmentInfo | None: ...


@dataclass(frozen=True, slots=True)
class BadRequest:
    """Answer 400 with `reason` (one line, naming the offending value)."""

    reason: str


@dataclass(frozen=True, slots=True)
class Ready:
    """Render the playlist now; `skip` asks for the delta form."""

    skip: bool = False


@dataclass(frozen=True, slots=True)
class Wait:
    """Hold the request until `is_satisfied`; `part` None waits for a whole segment."""

    msn: int
    part: int | None
    skip: bool = False


Decision = BadRequest | Ready | Wait


def hold_timeout(target_duration: int) -> float:
    """Seconds a blocked request may be held before the HTTP layer answers 503."""
    return float(HOLD_TIMEOUT_TARGET_DURATIONS * target_duration)


def advance_part_limit(part_target: float) -> int:
    """rfc8216bis 6.2.5.2: how far past the last part a request may reach: three divided by
    the part target when it is under one second, three otherwise."""
    return math.ceil(3 / part_target) if part_target < 1 else 3


def decide(query: Mapping[str, str], state: ReloadState) -> Decision:
    """Classify a playlist request's delivery directives against the playlist's state."""
    if state.ended:
        return Ready()
    raw_skip = query.get(SKIP_PARAM)
    if raw_skip is not None and raw_skip not in SKIP_VALUES:
        return BadRequest(f"{SKIP_PARAM} must be YES or v2, got "
                          f"'{peer_text(raw_skip, SHOWN_VALUE_LIMIT)}'")
    skip = raw_skip is not None
    msn = _integer(query, MSN_PARAM)
    if isinstance(msn, BadRequest):
        return msn
    part = _integer(query, PART_PARAM)
    if isinstance(part, BadRequest):
        return part
    if part is not None and msn is None:
        return BadRequest(f"{PART_PARAM}={part} needs {MSN_PARAM}")
    if msn is None:
        return Ready(skip)
    last_msn = _last_listed_msn(state)
    if msn > last_msn + MSN_AHEAD_LIMIT:
        return BadRequest(f"{MSN_PARAM}={msn} is more than {MSN_AHEAD_LIMIT} past the last "
                          f"segment {last_msn}")
    if state.part_target is None:
        part = None  # a playlist without parts: the directive names nothing; wait for M
    if part is not None:
        assert state.part_target is not None
        segment = state.segment(msn)
        if segment is not None and segment.complete and part >= len(segment.parts):
            msn, part = msn + 1, 0  # past the end of a completed segment: the next one's first
        limit = advance_part_limit(state.part_target)
        last = state.last_part
        if last is None or last.msn < msn:
            ahead = part + 1  # at least: the parts of segment msn up to this one
        elif last.msn == msn:
            ahead = part - last.index
        else:
            ahead = 0  # an older segment: already there
        if ahead > limit:
            return BadRequest(f"{PART_PARAM}={part} of segment {msn} is more than {limit} parts "
                              f"past the last part")
    wait = Wait(msn, part, skip)
    return Ready(skip) if is_satisfied(wait, state) else wait


def is_satisfied(wait: Wait, state: ReloadState) -> bool:
    """Whether the playlist now holds what a held request waits for (or has ended)."""
    if state.ended:
        return True
    complete = state.last_complete_msn
    if wait.part is None or state.part_target is None:
        return complete is not None and complete >= wait.msn
    if complete is not None and complete > wait.msn:
        return True
    last = state.last_part
    # Comparing (msn, index) pairs also covers the part-past-the-end rule: part N of a
    # segment that completed with N parts or fewer is reached by part 0 of the next one.
    return last is not None and (last.msn, last.index) >= (wait.msn, wait.part)


def _last_listed_msn(state: ReloadState) -> int:
    """The newest segment the playlist lists: a complete one, or the open one once it has a
    part (a playlist without parts does not list its open segment)."""
    complete = state.last_complete_msn
    last = state.last_part
    if last is None:
        return complete if complete is not None else state.next_msn - 1
    return last.msn if complete is None or last.msn > complete else complete


def _integer(query: Mapping[str, str], name: str) -> int | BadRequest | None:
    raw = query.get(name)
    if raw is None:
        return None
    # isdigit alone takes other scripts' digits ("٣", "²"): ASCII only.
    if not (raw.isascii() and raw.isdigit() and len(raw) <= MAX_DIRECTIVE_DIGITS):
        return BadRequest(f"{name} must be a non-negative integer of at most "
                          f"{MAX_DIRECTIVE_DIGITS} digits, got "
                          f"'{peer_text(raw, SHOWN_VALUE_LIMIT)}'")
    return int(raw)
