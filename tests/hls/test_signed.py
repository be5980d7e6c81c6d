"""Signed playback on the playback routes (`relay.hls.signed`), on both servers: the Starlette
routes through httpx's ASGI transport and the lean server on a socket (`Server` of
test_routes.py). Tokens are signed with PyJWT with a key the API's key maker made, as an
application would sign them with the private key `POST /system/v1/signing-keys` returned."""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import logging
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from relay.api.errors import ERROR_TYPES
from relay.api.signing import new_key_pair
from relay.hls.multivariant import VariantInfo
from relay.hls.recording import RecordingWriter, finalize
from relay.hls.signed import (
    FORBIDDEN_TYPE,
    PlaybackGate,
    SignedGzipCache,
    session_query,
    sign_playlist,
)
from relay.playback.access import PlaybackAccess
from relay.store.records import PlaybackId, PlaybackRestriction
from tests.hls.helpers.recording import record
from tests.hls.helpers.routes import ASSET, LIVE_ID, SIGNED_ID, Server
from tests.hls.playlist_checker import check_media_playlist, check_multivariant

pytestmark = pytest.mark.anyio

KID, OTHER_KID = "K" * 40, "O" * 40
RESTRICTION = "R" * 40
SIGNED_ASSET_ID = "SignedAsset1"
# Every URI in a playlist Relay writes: a quoted attribute or a line of its own.
_URIS = re.compile(r'URI="([^"]*)"|^([^#\n][^\n]*)$', re.MULTILINE)


@pytest.fixture(scope="module")
def private_keys() -> dict[str, tuple[bytes, str]]:
    made = {}
    for kid in (KID, OTHER_KID):
        private_b64, public_pem = new_key_pair()
        made[kid] = (base64.b64decode(private_b64), public_pem)
    return made


def sign(keys: dict[str, tuple[bytes, str]], *, kid: str = KID, **claims: Any) -> str:
    payload = {"sub": SIGNED_ID, "aud": "v", "exp": int(time.time()) + 300, **claims}
    return jwt.encode({k: v for k, v in payload.items() if v is not None}, keys[kid][0],
                      algorithm="RS256", headers={"kid": kid})


def unsigned(**claims: Any) -> str:
    """An `alg: none` token: no signature at all (PyJWT makes one when asked)."""
    payload = {"sub": SIGNED_ID, "aud": "v", "exp": int(time.time()) + 300, **claims}
    return jwt.encode(payload, None, algorithm="none", headers={"kid": KID})


@pytest.fixture(params=["asgi", "lean"])
async def server(tmp_path: Path, request: pytest.FixtureRequest,
                 private_keys: dict[str, tuple[bytes, str]]) -> AsyncIterator[Server]:
    access = PlaybackAccess()
    for kid in (KID,):  # OTHER_KID is a key the server never heard of
        access.verifier.keys.add(kid, private_keys[kid][1])
    access.restriction_changed(PlaybackRestriction(
        RESTRICTION, 0, 0, allowed_domains=("*.example.com",), allow_no_referrer=False))
    async with Server(tmp_path, mode=request.param, gate=PlaybackGate(access)) as server:
        server.store.ids[SIGNED_ASSET_ID] = PlaybackId(SIGNED_ASSET_ID, "signed", "asset",
                                                       ASSET)
        yield server


def uris(text: str) -> list[str]:
    return [match[0] or match[1] for match in _URIS.findall(text)]


def assert_forbidden(response: httpx.Response, reason: str) -> None:
    assert response.status_code == 403, (response.status_code, response.text)
    assert response.headers["content-type"] == "application/json"
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["access-control-allow-origin"] == "*"
    body = response.json()
    assert body["error"]["type"] == FORBIDDEN_TYPE == ERROR_TYPES[403]
    assert body["error"]["messages"][0] == reason, body


async def test_a_signed_id_plays_with_a_token_and_every_uri_carries_the_session(
        server: Server, private_keys: dict[str, tuple[bytes, str]]) -> None:
    server.feed(4.5)
    token = sign(private_keys)
    multivariant = await server.get(f"/{SIGNED_ID}.m3u8", token=token)
    assert multivariant.status_code == 200, multivariant.text
    check_multivariant(multivariant.text)
    [media_uri] = uris(multivariant.text)
    path, _, query = media_uri.partition("?")
    assert path == f"{SIGNED_ID}/rendition.m3u8" and query.startswith("session=")
    assert token not in multivariant.text

    # The player follows the URI as it is, and every URI of the media playlist it gets
    # (EXT-X-MAP, parts, segments, the preload hint) carries the same session value.
    media = await server.client.get(f"/{media_uri}", headers={"Accept-Encoding": "gzip"})
    assert media.status_code == 200 and media.headers["content-encoding"] == "gzip"
    listed = uris(media.text)
    assert len(listed) > 10 and all(uri.endswith("?" + query) for uri in listed), listed
    assert '#EXT-X-PRELOAD-HINT:TYPE=PART,URI="' in media.text
    check_media_playlist(media.text.replace("?" + query, ""))
    for uri in {listed[0], listed[1], listed[-1], listed[-2]}:  # init, part, segment, hint
        if uri == listed[-1]:
            server.feed(0.4)  # the hinted part
        answer = await server.client.get(f"/{SIGNED_ID}/{uri}")
        assert answer.status_code == 200 and answer.headers["content-type"] == "video/mp4"

    # The same media without the session value, or with another id's, is refused.
    assert_forbidden(await server.get(f"/{SIGNED_ID}/{listed[1].partition('?')[0]}"),
                     "missing token")
    assert_forbidden(await server.get(f"/{SIGNED_ID}/rendition.m3u8"), "missing token")
    # The session value opens this playback id only (its MAC covers it).
    server.store.ids["OtherSigned1"] = PlaybackId("OtherSigned1", "signed", "live_stream",
                                                  "stream0001")
    assert_forbidden(await server.client.get(f"/OtherSigned1/{listed[0]}"), "bad signature")


async def test_blocking_reloads_and_delta_updates_keep_the_session(
        server: Server, private_keys: dict[str, tuple[bytes, str]]) -> None:
    server.feed(20)
    multivariant = await server.get(f"/{SIGNED_ID}.m3u8", token=sign(private_keys))
    session = uris(multivariant.text)[0].partition("?session=")[2]
    assert server.live is not None and server.live.playlist is not None
    hint = server.live.playlist.next_part
    assert hint is not None
    held = asyncio.ensure_future(server.get(
        f"/{SIGNED_ID}/rendition.m3u8", session=session, _HLS_msn=str(hint[0]),
        _HLS_part=str(hint[1])))
    await asyncio.sleep(0.05)
    assert not held.done()  # held like a public one
    server.feed(0.4)
    released = await asyncio.wait_for(held, 2)
    assert released.status_code == 200
    assert f'URI="{hint[0]}.{hint[1]}.m4s?session={session}"' in released.text
    delta = await server.get(f"/{SIGNED_ID}/rendition.m3u8", session=session, _HLS_skip="YES")
    assert "#EXT-X-SKIP:SKIPPED-SEGMENTS=" in delta.text
    assert all(uri.endswith(f"?session={session}") for uri in uris(delta.text))
    check_media_playlist(delta.text.replace(f"?session={session}", ""))


async def test_refusals_name_their_reason_and_never_log_the_token(
        server: Server, private_keys: dict[str, tuple[bytes, str]],
        caplog: pytest.LogCaptureFixture) -> None:
    server.feed(2.5)
    good = await server.get(f"/{SIGNED_ID}.m3u8", token=sign(private_keys))
    media_uri = uris(good.text)[0]
    refused = {
        "missing token": None,
        "expired": sign(private_keys, exp=int(time.time()) - 3600),
        "wrong audience": sign(private_keys, aud="t"),
        "wrong playback id": sign(private_keys, sub=LIVE_ID),
        "bad signature": unsigned(),
        "unknown key": sign(private_keys, kid=OTHER_KID),
        "malformed token": "not.a.jwt",
    }
    with caplog.at_level(logging.INFO, logger="relay.playback"):
        for reason, token in refused.items():
            params = {"token": token} if token is not None else {}
            for path in (f"/{SIGNED_ID}.m3u8", f"/{SIGNED_ID}/rendition.m3u8"):
                assert_forbidden(await server.get(path, **params), reason)
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "refused" in logged and "expired" in logged
    for token in refused.values():
        assert token is None or token not in logged
    assert server.gate is not None and server.gate.refusals["expired"] == 2
    # Deleting the signing key stops its tokens and the sessions made from them at once.
    assert server.gate.access is not None
    server.gate.access.key_deleted(KID)
    assert_forbidden(await server.client.get(f"/{media_uri}"), "unknown key")
    assert_forbidden(await server.get(f"/{SIGNED_ID}.m3u8", token=sign(private_keys)),
                     "unknown key")
    assert_forbidden(await server.get(f"/{SIGNED_ID}/0.m4s",
                                      session=media_uri.partition("?session=")[2]),
                     "unknown key")


async def test_a_restriction_holds_the_referer(
        server: Server, private_keys: dict[str, tuple[bytes, str]]) -> None:
    server.feed(2.5)
    token = sign(private_keys, playback_restriction_id=RESTRICTION)
    admitted = await server.client.get(f"/{SIGNED_ID}.m3u8", params={"token": token},
                                       headers={"Referer": "https://a.example.com/"})
    assert admitted.status_code == 200
    media_uri = uris(admitted.text)[0]
    for referer in ("https://evil.test/", None):
        headers = {"Referer": referer} if referer else {}
        assert_forbidden(await server.client.get(f"/{SIGNED_ID}.m3u8", params={"token": token},
                                                 headers=headers), "referrer not allowed")
        # The session value carries the restriction: its media are held to it too.
        assert_forbidden(await server.client.get(f"/{media_uri}", headers=headers),
                         "referrer not allowed")
    media = await server.client.get(f"/{media_uri}",
                                    headers={"Referer": "https://b.a.example.com/x"})
    assert media.status_code == 200


async def test_a_public_id_ignores_tokens(server: Server) -> None:
    server.feed(2.5)
    plain = await server.get(f"/{LIVE_ID}.m3u8")
    bogus = await server.get(f"/{LIVE_ID}.m3u8", token="bogus", session="bogus")
    assert bogus.status_code == 200 and bogus.text == plain.text and "?" not in plain.text
    media = await server.get(f"/{LIVE_ID}/rendition.m3u8", token="bogus")
    assert media.status_code == 200 and "session=" not in media.text
    assert (await server.get(f"/{LIVE_ID}/0.m4s", session="bogus")).status_code == 200


async def test_a_signed_asset_signs_its_recorded_playlists_and_files(
        server: Server, tmp_path: Path, private_keys: dict[str, tuple[bytes, str]]) -> None:
    directory = tmp_path / ASSET
    record(directory, [2.0, 2.0], first_msn=0)
    finalize(directory)
    RecordingWriter(directory).write_variant(VariantInfo(bandwidth=1000, codecs=("mp4a.40.2",)))
    token = sign(private_keys, sub=SIGNED_ASSET_ID)
    assert_forbidden(await server.get(f"/{SIGNED_ASSET_ID}.m3u8"), "missing token")
    multivariant = await server.get(f"/{SIGNED_ASSET_ID}.m3u8", token=token)
    assert multivariant.status_code == 200
    media_uri = uris(multivariant.text)[0]
    vod = await server.client.get(f"/{media_uri}")
    assert vod.status_code == 200 and vod.text.endswith("#EXT-X-ENDLIST\n")
    listed = uris(vod.text)
    session = media_uri.partition("?")[2]
    assert listed == ["init-0.mp4?" + session, "0.m4s?" + session, "1.m4s?" + session]
    segment = await server.client.get(f"/{SIGNED_ASSET_ID}/{listed[2]}")
    assert segment.status_code == 200 and segment.content == b"segment 1"
    assert_forbidden(await server.get(f"/{SIGNED_ASSET_ID}/1.m4s"), "missing token")


async def test_the_player_page_passes_the_token_on(server: Server) -> None:
    page = await server.get(f"/player/{SIGNED_ID}", token="a.b-c_d")
    assert page.status_code == 200 and f"/{SIGNED_ID}.m3u8?token=a.b-c_d" in page.text
    hostile = await server.get(f"/player/{SIGNED_ID}", token='"</script><b>')
    assert "</script><b>" not in hostile.text and "%3C%2Fscript%3E" in hostile.text
    # The image tokens (audiences t and s) go to the poster and the storyboard.
    images = await server.client.get(f"/player/{SIGNED_ID}", params={
        "token": "v.v", "thumbnail_token": "t.t", "storyboard_token": "s.s"})
    assert f'poster="/{SIGNED_ID}/thumbnail.jpg?token=t.t"' in images.text
    assert f'var storyboard = "/{SIGNED_ID}/storyboard.vtt?token=s.s";' in images.text


async def test_without_access_a_signed_id_is_not_found(tmp_path: Path) -> None:
    for mode in ("asgi", "lean"):
        async with Server(tmp_path, mode=mode, gate=PlaybackGate(None)) as server:
            server.feed(2.5)
            for path in (f"/{SIGNED_ID}.m3u8", f"/{SIGNED_ID}/rendition.m3u8"):
                assert (await server.get(path, token="x")).status_code == 404


def test_sign_playlist_puts_the_query_on_every_uri_and_nowhere_else() -> None:
    playlist = (
        b'#EXTM3U\n#EXT-X-VERSION:9\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:7\n'
        b'#EXT-X-MAP:URI="init-0.mp4"\n#EXT-X-PROGRAM-DATE-TIME:2026-12-07T06:00:00.000Z\n'
        b'#EXT-X-PART:DURATION=0.500,URI="7.0.m4s",INDEPENDENT=YES\n#EXTINF:2.000,\n7.m4s\n'
        b'#EXT-X-PRELOAD-HINT:TYPE=PART,URI="8.0.m4s"\n'
        b'#EXT-X-RENDITION-REPORT:URI="../other/rendition.m3u8",LAST-MSN=7\n')
    query = session_query("1800000000.KID..MAC")
    signed = sign_playlist(playlist, query).decode()
    assert signed.count("?session=") == 5
    assert signed.replace("?session=1800000000.KID..MAC", "") == playlist.decode()
    # A multivariant playlist's media playlist URI.
    variant = b"#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\nID/rendition.m3u8\n"
    assert sign_playlist(variant, b"?session=v").endswith(b"ID/rendition.m3u8?session=v\n")


def test_the_signed_gzip_cache_is_bounded_in_entries_and_bytes() -> None:
    cache = SignedGzipCache(max_entries=3, max_bytes=10_000)
    plain = b"#EXTM3U\n" + b"#EXTINF:2.000,\n1.m4s\n" * 100
    for n in range(5):
        query = b"?session=%d" % n
        signed = sign_playlist(plain, query)
        assert gzip.decompress(cache.gzipped(plain, query, signed)) == signed
    assert len(cache) == 3 and cache.misses == 5
    cache.gzipped(plain, b"?session=4", sign_playlist(plain, b"?session=4"))
    assert cache.hits == 1
    small = SignedGzipCache(max_entries=100, max_bytes=len(plain) + 200)
    for n in range(3):
        small.gzipped(plain, b"?s=%d" % n, sign_playlist(plain, b"?s=%d" % n))
    assert len(small) == 1 and small.bytes <= small.max_bytes


def test_the_forbidden_body_is_the_mux_envelope() -> None:
    from relay.hls.routes import forbidden_body
    from relay.hls.signed import Refusal
    from relay.playback.tokens import RefusalReason
    body = json.loads(forbidden_body(Refusal(RefusalReason.EXPIRED, "exp 1 is 5 s ago")))
    assert body == {"error": {"type": "forbidden", "messages": ["expired", "exp 1 is 5 s ago"]}}


async def test_resolve_keeps_signed_ids_out_and_resolve_signed_names_them(
        server: Server) -> None:
    server.feed(2.5)
    assert await server.directory.resolve(SIGNED_ID) is None  # as for callers without a gate
    assert server.directory.resolve_cached(SIGNED_ID) == (True, None)
    assert await server.directory.resolve_signed(SIGNED_ID) == (server.live, True)
    assert server.directory.resolve_cached_signed(SIGNED_ID) == (True, server.live, True)
    assert await server.directory.resolve_signed(LIVE_ID) == (server.live, False)
