"""Playback requests counted by kind and status, for `relay_hls_requests_total`.

Any server of the playback routes (the Starlette routes of `relay.hls.routes`, or another
HTTP implementation) classifies each request with `request_kind` / `media_request_kind` and
calls `HlsRequestCounters.count(kind, status)` once it knows the status it answers with. A
count is one dict update keyed by (kind, status); /metrics reads the dict at scrape time.
The kinds are a closed set and the statuses are the codes the server itself answers with (a
handful), so the dict stays small whatever the clients send.
"""

from __future__ import annotations

from enum import StrEnum

from relay.hls.model import MEDIA_PLAYLIST_URI, parse_resource


class RequestKind(StrEnum):
    """What a playback request asked for (the `kind` label)."""

    MULTIVARIANT = "multivariant"  # /{PLAYBACK_ID}.m3u8
    MEDIA_PLAYLIST = "media_playlist"  # /{PLAYBACK_ID}/rendition.m3u8
    PART = "part"  # /{PLAYBACK_ID}/{msn}.{part}.m4s
    SEGMENT = "segment"  # /{PLAYBACK_ID}/{msn}.m4s
    INIT = "init"  # /{PLAYBACK_ID}/init-{n}.mp4
    PLAYER = "player"  # /player/{PLAYBACK_ID}
    STATIC = "static"  # /static/{name}
    OTHER = "other"  # a name none of the above spells


def media_request_kind(name: str) -> RequestKind:
    """The kind of `/{PLAYBACK_ID}/{name}`."""
    if name == MEDIA_PLAYLIST_URI:
        return RequestKind.MEDIA_PLAYLIST
    resource = parse_resource(name)
    if resource is None:
        return RequestKind.OTHER
    if resource.init is not None:
        return RequestKind.INIT
    return RequestKind.SEGMENT if resource.part is None else RequestKind.PART


def request_kind(path: str) -> RequestKind:
    """The kind of a playback URL path (no query), as the routes would serve it."""
    parts = path.split("/")
    if len(parts) == 2 and parts[0] == "":
        return RequestKind.MULTIVARIANT if parts[1].endswith(".m3u8") else RequestKind.OTHER
    if len(parts) == 3 and parts[0] == "" and parts[1]:
        if parts[1] == "player":
            return RequestKind.PLAYER
        if parts[1] == "static":
            return RequestKind.STATIC
        return media_request_kind(parts[2])
    return RequestKind.OTHER


class HlsRequestCounters:
    """Playback requests answered, by (kind, HTTP status); read at scrape time."""

    __slots__ = ("answered",)

    def __init__(self) -> None:
        self.answered: dict[tuple[RequestKind, int], int] = {}

    def count(self, kind: RequestKind, status: int) -> None:
        """One request of `kind` answered with `status`."""
        key = (kind, status)
        self.answered[key] = self.answered.get(key, 0) + 1
