"""Playback request kinds: every route's names, and what no route serves."""

from __future__ import annotations

import pytest

from relay.hls.request_counts import (
    HlsRequestCounters,
    RequestKind,
    media_request_kind,
    request_kind,
)


@pytest.mark.parametrize(("path", "kind"), [
    ("/AbC123.m3u8", RequestKind.MULTIVARIANT),
    ("/AbC123/rendition.m3u8", RequestKind.MEDIA_PLAYLIST),
    ("/AbC123/12.3.m4s", RequestKind.PART),
    ("/AbC123/12.m4s", RequestKind.SEGMENT),
    ("/AbC123/init-0.mp4", RequestKind.INIT),
    ("/player/AbC123", RequestKind.PLAYER),
    ("/static/hls.min.js", RequestKind.STATIC),
    ("/AbC123", RequestKind.OTHER),
    ("/AbC123/012.m4s", RequestKind.OTHER),  # not a name the playlist writes
    ("/AbC123/other.m3u8", RequestKind.OTHER),
    ("/a/b/c.m4s", RequestKind.OTHER),
    ("//12.m4s", RequestKind.OTHER),
    ("", RequestKind.OTHER),
    ("/", RequestKind.OTHER),
])
def test_request_kinds(path: str, kind: RequestKind) -> None:
    assert request_kind(path) is kind


def test_media_names() -> None:
    assert media_request_kind("rendition.m3u8") is RequestKind.MEDIA_PLAYLIST
    assert media_request_kind("3.0.m4s") is RequestKind.PART
    assert media_request_kind("init-7.mp4") is RequestKind.INIT
    assert media_request_kind("3.m4s\n") is RequestKind.OTHER


def test_counts_are_kept_per_kind_and_status() -> None:
    counters = HlsRequestCounters()
    counters.count(RequestKind.PART, 200)
    counters.count(RequestKind.PART, 200)
    counters.count(RequestKind.PART, 404)
    counters.count(RequestKind.SEGMENT, 200)
    assert counters.answered == {(RequestKind.PART, 200): 2, (RequestKind.PART, 404): 1,
                                 (RequestKind.SEGMENT, 200): 1}
