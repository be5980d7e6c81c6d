"""HLS request parsing: the LL-HLS delivery directives (`_HLS_msn`, `_HLS_part`, `_HLS_skip`;
relay/hls/blocking.py `decide`), media resource names (relay/hls/model.py `parse_resource`,
then `LivePlaylist.availability` as the live route asks it), Accept-Encoding
(relay/hls/routes.py `accepts_gzip`) and playback ids (`PlaybackDirectory.resolve`).

The functions are called directly rather than through the Starlette app: a request the rules
decide to hold would wait seconds for the playlist to change, which no fuzzer can afford.

Input: byte 0 picks the target (mod 4); byte 1 configures a real `LivePlaylist` (ended, part
target, window); bytes 2..7 its first msn; byte 8 the number (mod 32) of the operations that
follow, one byte each (start a segment, add a part, complete a segment, end); the rest is the
text under test: a raw query string (parsed by Starlette's QueryParams, as the route does), a
resource name, an Accept-Encoding value or a playback id (each decoded as UTF-8, as paths are).

Findings: any exception; a 400 reason that is not one bounded line; a decision that names a
segment beyond the limits, or holds a request the playlist already satisfies; a resource name
accepted in any spelling but the one the playlist writes (two URLs for one immutable
resource, or a name the recorded route, which looks the file up by that name, cannot find); a
playback id that reaches the store without being 1..64 ASCII letters and digits.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, cast

from starlette.datastructures import QueryParams

from fuzz.common import Finding, check_reason
from relay.hls.blocking import (
    MSN_AHEAD_LIMIT,
    SKIP_PARAM,
    BadRequest,
    Ready,
    Wait,
    decide,
    is_satisfied,
)
from relay.hls.model import INIT_URI, PART_URI, SEGMENT_URI, parse_resource
from relay.hls.playlist import LivePlaylist, PlaylistError
from relay.hls.routes import PlaybackDirectory, accepts_gzip
from relay.store import Store
from relay.store.asset_files import AssetFiles
from relay.store.records import PlaybackId

PART_TARGETS = (None, 0.2, 1 / 3, 0.5, 1.0)
TARGET_DURATION = 2
STATE_BYTES = 9


def _playlist(data: bytes) -> LivePlaylist:
    config = data[1]
    part_target = PART_TARGETS[config % len(PART_TARGETS)]
    playlist = LivePlaylist(target_duration=TARGET_DURATION, part_target=part_target,
                            window_segments=1 + (config >> 4), first_msn=int.from_bytes(
                                data[2:8], "big"))
    operations = data[STATE_BYTES : STATE_BYTES + data[8] % 32]
    for operation in operations:
        try:
            kind = operation & 3
            if kind == 0:
                playlist.start_segment(init=operation >> 6, program_date_time=0.0)
            elif kind == 1 and part_target is not None:
                playlist.add_part(part_target, independent=bool(operation & 4))
            elif kind == 2:
                open_segment = playlist.segments[-1] if playlist.segments else None
                parts = open_segment.parts if open_segment is not None else []
                playlist.complete_segment(sum(p.duration for p in parts) if parts else 1.5)
            elif operation & 0xFC == 0xFC:
                playlist.end()
        except PlaylistError:
            pass
    return playlist


def _last_listed(playlist: LivePlaylist) -> int:
    listed = [msn for msn in (playlist.last_complete_msn,
                              playlist.last_part.msn if playlist.last_part else None)
              if msn is not None]
    return max(listed) if listed else playlist.next_msn - 1


def _check_query(raw: bytes, playlist: LivePlaylist) -> None:
    query = QueryParams(raw)
    decision = decide(query, playlist)
    if isinstance(decision, BadRequest):
        check_reason(Exception(decision.reason))
        return
    if playlist.ended and decision != Ready():
        raise Finding(f"{decision} on an ended playlist")
    if decision.skip != (SKIP_PARAM in query) and not playlist.ended:
        raise Finding(f"skip={decision.skip} for a query with{'out' * (SKIP_PARAM not in query)} "
                      f"{SKIP_PARAM}")
    if isinstance(decision, Wait):
        # +1: a part index past a completed segment's end moves the wait to the next one.
        if decision.msn > _last_listed(playlist) + MSN_AHEAD_LIMIT + 1:
            raise Finding(f"holds for msn {decision.msn}, past the limit")
        if decision.part is not None and decision.part < 0:
            raise Finding(f"holds for part {decision.part}")
        if is_satisfied(decision, playlist):
            raise Finding(f"holds a request the playlist already satisfies: {decision}")


def _check_name(name: str, playlist: LivePlaylist) -> None:
    resource = parse_resource(name)
    if resource is None:
        return
    if resource.init is not None:
        canonical = INIT_URI.format(init=resource.init)
    elif resource.part is not None:
        canonical = PART_URI.format(msn=resource.msn, part=resource.part)
    else:
        canonical = SEGMENT_URI.format(msn=resource.msn)
    if canonical != name:
        raise Finding(f"resource name {name[:80]!r} accepted as {canonical!r}")
    playlist.availability(resource)


class _Store:
    """The one store call `PlaybackDirectory.resolve` makes; it checks what reaches it."""

    async def get_playback_id(self, playback_id: str) -> PlaybackId | None:
        if not (1 <= len(playback_id) <= 64 and playback_id.isascii()
                and playback_id.isalnum()):
            raise Finding(f"playback id {playback_id[:80]!r} reached the store")
        return None


_DIRECTORY = PlaybackDirectory(cast(Store, _Store()), lambda _stream_id: None,
                               AssetFiles(Path("/nonexistent")))


# The directory queries the store in a task of its own (lookups of one id share it), so
# resolve() runs on a loop, one for the whole run.
_LOOP = asyncio.new_event_loop()


def _run(coroutine: Coroutine[Any, Any, Any]) -> Any:
    """Run `coroutine` to its end on the harness's loop."""
    return _LOOP.run_until_complete(coroutine)


def check(data: bytes) -> None:
    if len(data) < STATE_BYTES:
        return
    target, text = data[0] % 4, data[STATE_BYTES + data[8] % 32 :]
    if target == 0:
        _check_query(text, _playlist(data))
    elif target == 1:
        _check_name(text.decode("utf-8", "replace"), _playlist(data))
    elif target == 2:
        if not isinstance(accepts_gzip(text.decode("latin-1")), bool):
            raise Finding("accepts_gzip returned a non-bool")
    else:
        if _run(_DIRECTORY.resolve(text.decode("utf-8", "replace"))) is not None:
            raise Finding("an unknown playback id resolved")
