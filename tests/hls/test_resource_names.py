"""Names in playback request paths have one spelling: the resource names the playlist writes
and 1..64 ASCII letters and digits for a playback id. Both were fuzz findings
(tests/vectors/fuzz/hls/): `\\d` took any Unicode digit, leading zeros were read as numbers,
and `$` matched before a final newline."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import cast

import pytest

from relay.hls.model import INIT_URI, PART_URI, SEGMENT_URI, ResourceName, parse_resource
from relay.hls.routes import PlaybackDirectory
from relay.store import Store
from relay.store.asset_files import AssetFiles
from relay.store.records import PlaybackId


@pytest.mark.parametrize(("name", "resource"), [
    ("0.m4s", ResourceName(msn=0)),
    ("999999999999.m4s", ResourceName(msn=999999999999)),
    ("6.0.m4s", ResourceName(msn=6, part=0)),
    ("6.10.m4s", ResourceName(msn=6, part=10)),
    ("6.999999.m4s", ResourceName(msn=6, part=999999)),
    ("init-0.mp4", ResourceName(init=0)),
    ("init-999999999.mp4", ResourceName(init=999999999)),
])
def test_the_names_the_playlist_writes_parse(name: str, resource: ResourceName) -> None:
    assert parse_resource(name) == resource
    if resource.init is not None:
        assert INIT_URI.format(init=resource.init) == name
    elif resource.part is not None:
        assert PART_URI.format(msn=resource.msn, part=resource.part) == name
    else:
        assert SEGMENT_URI.format(msn=resource.msn) == name


@pytest.mark.parametrize("name", [
    "06.m4s", "07.0.m4s", "6.01.m4s", "init-00.mp4", "init-01.mp4",  # leading zeros
    "6.m4s\n", "init-0.mp4\n", "6.0.m4s\n",  # a final newline
    "\u0663.m4s", "6.\u0663.m4s", "init-\u0663.mp4",  # ARABIC-INDIC DIGIT THREE
    " 6.m4s", "6.m4s ", "1000000000000.m4s", "6.1000000.m4s", "init-1000000000.mp4",
])
def test_other_spellings_are_not_resources(name: str) -> None:
    assert parse_resource(name) is None


class RecordingStore:
    def __init__(self) -> None:
        self.looked_up: list[str] = []

    async def get_playback_id(self, playback_id: str) -> PlaybackId | None:
        self.looked_up.append(playback_id)
        return None


@pytest.mark.parametrize("playback_id", ["abc\n", "v\n", "abc\r", "", "a" * 65, "ab-c",
                                         "\u0663", "abc\x00"])
def test_a_malformed_playback_id_never_reaches_the_store(playback_id: str,
                                                         tmp_path: Path) -> None:
    store = RecordingStore()
    directory = PlaybackDirectory(cast(Store, store), lambda _stream: None, AssetFiles(tmp_path))
    assert asyncio.run(directory.resolve(playback_id)) is None
    assert asyncio.run(directory.resolve("a" * 64)) is None
    assert store.looked_up == ["a" * 64]
