"""The image routes over ASGI, on a recording made in-process: statuses, envelopes, the
queue bound's 503, the rate limit's 429, shared decodes and signed playback ids' tokens."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from PIL import Image

from relay.api.signing import new_key_pair
from relay.hls.packager import LivePackager
from relay.hls.signed import PlaybackGate
from relay.images import routes
from relay.images.pool import ClientRates, DecodePool
from relay.playback.access import PlaybackAccess
from tests.images.helpers import jobs
from tests.images.helpers.jobs import FileGate
from tests.images.helpers.routes import recording, routes_client
from tests.images.media import red_frame_number

__all__ = ["recording"]  # fixtures, defined in tests.images.helpers.routes

pytestmark = pytest.mark.anyio


class Directory:
    def __init__(self, recordings: dict[str, Path], signed: frozenset[str] = frozenset()
                 ) -> None:
        self.recordings = recordings
        self.signed = signed

    async def resolve_signed(self, playback_id: str
                             ) -> tuple[LivePackager | Path | None, bool]:
        return self.recordings.get(playback_id), playback_id in self.signed


@contextlib.asynccontextmanager
async def client_for(recording: Path, *, pool: DecodePool | None = None,
                     **options: Any) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the routes; their pool (a new one unless given) is closed after."""
    directory = Directory({"asset1": recording, "empty": recording / "nothing",
                           SIGNED_ID: recording}, signed=frozenset({SIGNED_ID}))
    async with routes_client(directory, "http://relay.test", pool=pool, **options) as client:
        yield client


@pytest.fixture
async def client(recording: Path) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(recording) as opened:
        yield opened


async def test_a_thumbnail_and_its_headers(client: httpx.AsyncClient) -> None:
    response = await client.get("/asset1/thumbnail.png", params={"time": "1.6"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    assert response.headers["access-control-allow-origin"] == "*"
    assert response.headers["cache-control"] == routes.RECORDED_IMAGE_CACHE
    picture = Image.open(io.BytesIO(response.content))
    assert picture.size == (64, 48)
    assert red_frame_number(picture) == 15  # second segment, 0.6 s in: its keyframe 15


async def test_errors_use_the_mux_envelope(client: httpx.AsyncClient) -> None:
    for path, status, kind, start in (
            ("/asset1/thumbnail.jpg?time=2.5", 400, "invalid_parameters", "time: "),
            ("/asset1/thumbnail.jpg?width=big", 400, "invalid_parameters", "width: "),
            ("/asset1/animated.gif?start=3", 400, "invalid_parameters", "start: "),
            ("/asset1/thumbnail.tiff", 400, "invalid_parameters", "format: "),
            ("/unknown/thumbnail.jpg", 404, "not_found", "not found"),
            ("/empty/storyboard.vtt", 404, "not_found", "not found")):
        response = await client.get(path)
        assert response.status_code == status, (path, response.text)
        body = response.json()["error"]
        assert body["type"] == kind and body["messages"][0].startswith(start), (path, body)
        assert response.headers["cache-control"] == "no-store"


async def test_each_kind_is_served(client: httpx.AsyncClient) -> None:
    for path, media_type in (("/asset1/animated.gif?end=1&fps=5", "image/gif"),
                             ("/asset1/animated.webp?end=1&fps=5", "image/webp"),
                             ("/asset1/storyboard.vtt", "text/vtt; charset=utf-8"),
                             ("/asset1/storyboard.webp", "image/webp")):
        response = await client.get(path)
        assert response.status_code == 200, (path, response.text)
        assert response.headers["content-type"] == media_type


async def test_concurrent_identical_requests_share_one_decode(recording: Path) -> None:
    pool = DecodePool()
    async with client_for(recording, pool=pool) as client:
        responses = await asyncio.gather(*(client.get("/asset1/thumbnail.jpg?time=0.5")
                                           for _ in range(10)))
    assert {r.status_code for r in responses} == {200}
    assert len({r.content for r in responses}) == 1
    assert pool.counters.decodes == 1
    assert pool.counters.shared + pool.counters.cache_hits == 9


async def test_past_the_queue_bound_the_answer_is_503_with_retry_after(
        recording: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    gate = FileGate(tmp_path / "gate")
    monkeypatch.setenv(jobs.GATE_ENV, str(gate.directory))
    monkeypatch.setattr(routes, "render_thumbnail", jobs.gated_thumbnail)
    pool = DecodePool(workers=1, max_pending=1)
    async with client_for(recording, pool=pool) as client:
        first = asyncio.create_task(client.get("/asset1/thumbnail.jpg?time=0"))
        await jobs.started(gate)
        refused = await client.get("/asset1/thumbnail.jpg?time=1")
        gate.open()
        assert (await first).status_code == 200
    assert refused.status_code == 503, refused.text
    assert refused.headers["retry-after"] == "1"
    assert refused.json()["error"]["type"] == "service_unavailable"


async def test_a_decoder_that_crashes_is_a_500_and_the_next_image_is_made(
        recording: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pool = DecodePool(workers=1)
    async with client_for(recording, pool=pool) as client:
        with monkeypatch.context() as patched:
            patched.setattr(routes, "render_thumbnail", jobs.kill_own_process)
            crashed = await client.get("/asset1/thumbnail.jpg?time=0")
        assert crashed.status_code == 500, crashed.text
        assert crashed.headers["cache-control"] == "no-store"
        error = crashed.json()["error"]
        assert error["type"] == "error"
        assert error["messages"] == ["the image worker stopped while making this image "
                                     "(killed by SIGKILL); it is replaced, retry"]
        # Not cached: the same image, asked again, is made by a new worker.
        again = await client.get("/asset1/thumbnail.jpg?time=0")
        assert again.status_code == 200 and again.headers["content-type"] == "image/jpeg"
    assert pool.counters.worker_failures == 1 and pool.counters.worker_starts == 2


async def test_the_rate_limit_charges_new_decodes_only(recording: Path) -> None:
    async with client_for(recording, rates=ClientRates(rate=0.01, burst=2)) as client:
        for width in ("10", "20"):
            assert (await client.get(f"/asset1/thumbnail.jpg?width={width}")).status_code \
                == 200
        limited = await client.get("/asset1/thumbnail.jpg?width=30")
        assert limited.status_code == 429, limited.text
        assert int(limited.headers["retry-after"]) >= 1
        assert limited.json()["error"]["type"] == "too_many_requests"
        # What is cached costs nothing.
        assert (await client.get("/asset1/thumbnail.jpg?width=10")).status_code == 200


SIGNED_ID = "SignedAsset1"
KID = "K" * 40


@pytest.fixture(scope="module")
def signing_key() -> tuple[bytes, str]:
    private_b64, public_pem = new_key_pair()
    return base64.b64decode(private_b64), public_pem


def token(key: tuple[bytes, str], audience: str, playback_id: str = SIGNED_ID) -> str:
    return jwt.encode({"sub": playback_id, "aud": audience, "exp": int(time.time()) + 300},
                      key[0], algorithm="RS256", headers={"kid": KID})


async def test_a_signed_id_serves_images_with_a_token_of_their_audience(
        recording: Path, signing_key: tuple[bytes, str]) -> None:
    access = PlaybackAccess()
    access.verifier.keys.add(KID, signing_key[1])
    async with client_for(recording, gate=PlaybackGate(access)) as client:
        for path, audience in (("thumbnail.jpg", "t"), ("animated.gif?end=0.5", "g"),
                               ("storyboard.jpg", "s")):
            joiner = "&" if "?" in path else "?"
            good = await client.get(f"/{SIGNED_ID}/{path}{joiner}token="
                                    f"{token(signing_key, audience)}")
            assert good.status_code == 200, good.text
            assert good.headers["cache-control"].startswith("private")
            for bad in ("", f"token={token(signing_key, 'v')}",
                        f"token={token(signing_key, audience, 'asset1')}"):
                refused = await client.get(f"/{SIGNED_ID}/{path}{joiner}{bad}")
                assert refused.status_code == 403, (path, bad, refused.text)
                assert refused.json()["error"]["type"] == "forbidden"
        # The storyboard's cues name the sheet with the viewer's token, which plays it.
        storyboard = token(signing_key, "s")
        vtt = await client.get(f"/{SIGNED_ID}/storyboard.vtt?token={storyboard}")
        assert vtt.status_code == 200, vtt.text
        cues = [line for line in vtt.text.splitlines() if "#xywh=" in line]
        assert cues and all(f"storyboard.jpg?token={storyboard}#xywh=" in cue
                            for cue in cues)
        sheet = await client.get(f"/{SIGNED_ID}/{cues[0].split('#')[0]}")
        assert sheet.status_code == 200
        # A public id ignores tokens and stays public.
        public = await client.get("/asset1/thumbnail.jpg?token=bogus")
        assert public.status_code == 200 and public.headers["cache-control"].startswith(
            "public")


async def test_without_access_a_signed_id_has_no_images(recording: Path) -> None:
    for gate in (None, PlaybackGate(None)):
        async with client_for(recording, gate=gate) as client:
            response = await client.get(f"/{SIGNED_ID}/thumbnail.jpg?token=x")
            assert response.status_code == 404
