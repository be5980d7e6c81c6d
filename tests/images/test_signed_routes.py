"""Signed playback ids on the image routes: a token of the route's audience (`t` thumbnails,
`g` animated, `s` storyboards) is needed, refusals are 403 in the Mux envelope, the
storyboard's WebVTT names its sheet with the token, public ids ignore tokens, and without a
gate a signed id stays a 404."""

from __future__ import annotations

import base64
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from relay.api.signing import new_key_pair
from relay.hls.packager import LivePackager
from relay.hls.routes import Target
from relay.hls.signed import FORBIDDEN_TYPE, PlaybackGate
from relay.playback.access import PlaybackAccess
from tests.images.helpers.routes import recording, routes_client

pytestmark = pytest.mark.anyio
__all__ = ["recording"]  # the fixture

KID = "K" * 40
SIGNED, PUBLIC = "signed1", "public1"


class Directory:
    def __init__(self, recording: Path) -> None:
        self.recording = recording

    async def resolve(self, playback_id: str) -> LivePackager | Path | None:
        return self.recording if playback_id == PUBLIC else None

    async def resolve_signed(self, playback_id: str) -> tuple[Target, bool]:
        if playback_id in (SIGNED, PUBLIC):
            return self.recording, playback_id == SIGNED
        return None, False


@pytest.fixture(scope="module")
def private_key() -> tuple[bytes, str]:
    private_b64, public_pem = new_key_pair()
    return base64.b64decode(private_b64), public_pem


def sign(key: tuple[bytes, str], **claims: Any) -> str:
    payload = {"sub": SIGNED, "aud": "t", "exp": int(time.time()) + 300, **claims}
    return jwt.encode(payload, key[0], algorithm="RS256", headers={"kid": KID})


@contextlib.asynccontextmanager
async def client_for(recording: Path, gate: PlaybackGate | None
                     ) -> AsyncIterator[httpx.AsyncClient]:
    async with routes_client(Directory(recording), "https://image.relay.test",
                             gate=gate) as client:
        yield client


@pytest.fixture
async def client(recording: Path, private_key: tuple[bytes, str]
                 ) -> AsyncIterator[httpx.AsyncClient]:
    access = PlaybackAccess()
    access.verifier.keys.add(KID, private_key[1])
    async with client_for(recording, PlaybackGate(access)) as opened:
        yield opened


def assert_forbidden(response: httpx.Response, reason: str) -> None:
    assert response.status_code == 403, (response.status_code, response.text)
    error = response.json()["error"]
    assert error["type"] == FORBIDDEN_TYPE and error["messages"][0] == reason, error
    assert response.headers["cache-control"] == "no-store"


async def test_each_image_needs_a_token_of_its_audience(
        client: httpx.AsyncClient, private_key: tuple[bytes, str]) -> None:
    for path, audience in (("thumbnail.webp", "t"), ("animated.gif?end=1&fps=5", "g"),
                           ("storyboard.webp", "s")):
        separator = "&" if "?" in path else "?"
        good = await client.get(f"/{SIGNED}/{path}{separator}token="
                                f"{sign(private_key, aud=audience)}")
        assert good.status_code == 200, (path, good.text)
        assert_forbidden(await client.get(f"/{SIGNED}/{path}"), "missing token")
        assert_forbidden(await client.get(f"/{SIGNED}/{path}{separator}token="
                                          f"{sign(private_key, aud='v')}"), "wrong audience")
    assert_forbidden(await client.get(f"/{SIGNED}/thumbnail.jpg",
                                      params={"token": sign(private_key, sub=PUBLIC)}),
                     "wrong playback id")
    # A public id ignores tokens, even bogus ones.
    public = await client.get(f"/{PUBLIC}/thumbnail.jpg", params={"token": "bogus"})
    assert public.status_code == 200, public.text


async def test_a_signed_storyboard_names_its_sheet_with_the_token(
        client: httpx.AsyncClient, private_key: tuple[bytes, str]) -> None:
    token = sign(private_key, aud="s")
    vtt = await client.get(f"/{SIGNED}/storyboard.vtt",
                           params={"token": token, "format": "webp"})
    assert vtt.status_code == 200, vtt.text
    sheets = [line for line in vtt.text.splitlines() if "#xywh=" in line]
    assert sheets and all(line.startswith(f"storyboard.webp?token={token}#xywh=")
                          for line in sheets), vtt.text
    # The player fetches the sheet as named: it is answered.
    sheet = await client.get(f"/{SIGNED}/{sheets[0].partition('#')[0]}")
    assert sheet.status_code == 200 and sheet.headers["content-type"] == "image/webp"
    public = await client.get(f"/{PUBLIC}/storyboard.vtt", params={"token": token})
    assert "token=" not in public.text


async def test_without_a_gate_a_signed_id_is_not_found(
        recording: Path, private_key: tuple[bytes, str]) -> None:
    async with client_for(recording, None) as client:
        response = await client.get(f"/{SIGNED}/thumbnail.jpg",
                                    params={"token": sign(private_key)})
    assert response.status_code == 404
