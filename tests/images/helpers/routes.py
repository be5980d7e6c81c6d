"""What test_routes.py shares with other test modules: kept here so no test module imports
another."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.images.media import fragmented_mp4

PLAYLIST = """#EXTM3U
#EXT-X-VERSION:6
#EXT-X-TARGETDURATION:1
#EXT-X-PLAYLIST-TYPE:VOD
#EXT-X-MAP:URI="init-0.mp4"
#EXTINF:1.000,
0.m4s
#EXTINF:1.000,
1.m4s
#EXT-X-ENDLIST
"""


@pytest.fixture
def recording(tmp_path: Path) -> Path:
    # The init file is empty and each segment a whole fragmented MP4: the reader joins
    # init + segment, which is the same bytes.
    directory = tmp_path / "asset"
    directory.mkdir()
    (directory / "rendition.m3u8").write_text(PLAYLIST)
    (directory / "init-0.mp4").write_bytes(b"")
    (directory / "0.m4s").write_bytes(fragmented_mp4(frames=30, gop=15))
    (directory / "1.m4s").write_bytes(fragmented_mp4(frames=30, gop=15))
    return directory
