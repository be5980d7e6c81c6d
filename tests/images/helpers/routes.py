"""What test_routes.py shares with other test modules: kept here so no test module imports
another."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from relay.images import routes
from relay.images.pool import DecodePool
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


@contextlib.asynccontextmanager
async def routes_client(directory: Any, base_url: str, *, pool: DecodePool | None = None,
                        **options: Any) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the image routes over `directory`; their pool (a new one unless given)
    is closed after, which ends its worker processes."""
    images = pool if pool is not None else DecodePool()
    app = Starlette(routes=routes.image_routes(directory, pool=images, **options))
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url=base_url) as client:
            yield client
    finally:
        await images.aclose()
