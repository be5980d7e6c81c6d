"""Signed playback end to end: ffmpeg publishes to a `relay serve` subprocess a stream whose
playback ids are signed (and one public), a signing key and a playback restriction come from
the API, and tokens are signed with PyJWT (RS256, `kid`, `aud` v, `sub`, `exp`) as an
application signs them with the private key the API returned. ffprobe and ffmpeg play the
tokenised URL; hls.js in headless Chromium plays the player page given `?token=`; every kind
of bad token is a 403 with the Mux error envelope on the playlists and on media. Both playback
servers (`--playback-server lean` and `asgi`) run the same checks.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from typing import Any

import httpx
import jwt
import pytest

from testkit.browser import launch_chromium, open_player
from testkit.encoders import ffmpeg_publish, needs_ffmpeg
from testkit.peers import metric
from testkit.relay_process import RelayProcess
from tests.integration.helpers.hls_playback import SIZE, decode, probe, stop_encoder
from tests.integration.helpers.rtmp_ingest import (
    api,
    create_stream,
    publish_url,
    start_relay,
    wait_status,
    wait_until,
)
from tests.integration.helpers.signed_playback import token_for

pytestmark = [needs_ffmpeg,
              pytest.mark.skipif(shutil.which("ffprobe") is None,
                                 reason="ffprobe is not installed")]


@pytest.fixture(params=["lean", "asgi"])
def relay(tmp_path: Any, request: pytest.FixtureRequest) -> Iterator[RelayProcess]:
    process = start_relay(tmp_path / "data", "--playback-server", request.param)
    try:
        yield process
    finally:
        assert process.stop() == 0, process.log


def alg_none(key: dict[str, Any], playback_id: str) -> str:
    payload = {"sub": playback_id, "aud": "v", "exp": int(time.time()) + 600}
    return jwt.encode(payload, None, algorithm="none", headers={"kid": key["id"]})


def assert_forbidden(response: httpx.Response, reason: str) -> None:
    assert response.status_code == 403, (response.status_code, response.text)
    error = response.json()["error"]
    assert error["type"] == "forbidden" and error["messages"][0] == reason, error


def media_uris(text: str) -> list[str]:
    return [line for line in text.splitlines() if line and not line.startswith("#")]


def test_a_signed_stream_plays_only_with_a_valid_token(relay: RelayProcess) -> None:
    with api(relay) as client:
        created = client.post("/system/v1/signing-keys")
        assert created.status_code == 201, created.text
        key = created.json()["data"]
        restricted = client.post("/video/v1/playback-restrictions", json={
            "referrer": {"allowed_domains": ["*.example.com"], "allow_no_referrer": False}})
        assert restricted.status_code == 201, restricted.text
        restriction_id = restricted.json()["data"]["id"]
    stream = create_stream(relay, playback_policies=["signed", "public"], latency_mode="low",
                           new_asset_settings={"playback_policies": ["signed"]})
    by_policy = {p["policy"]: p["id"] for p in stream["playback_ids"]}
    signed, public = by_policy["signed"], by_policy["public"]
    encoder = ffmpeg_publish(publish_url(relay, stream["stream_key"]), seconds=40, size=SIZE,
                             gop=30)
    try:
        wait_status(relay, stream["id"], "active", 30)
        token = token_for(key, signed)
        url = f"{relay.http_url}/{signed}.m3u8?token={token}"
        with httpx.Client(base_url=relay.http_url, timeout=30) as client:
            wait_until(lambda: client.get(f"/{public}.m3u8").status_code == 200, 15,
                       "the public playlist")

            # ffprobe and ffmpeg follow the URIs of the playlists as given: every one
            # carries the session value.
            probed = probe(url)
            codecs = sorted(s["codec_name"] for s in probed["streams"])
            assert codecs == ["aac", "h264"], probed
            decoded = decode(url, 3)
            assert decoded.returncode == 0 and decoded.seconds >= 2.5, decoded.stderr

            multivariant = client.get(f"/{signed}.m3u8", params={"token": token})
            assert multivariant.status_code == 200
            [rendition] = media_uris(multivariant.text)
            session = rendition.partition("?")[2]
            assert session.startswith("session=") and token not in multivariant.text
            playlist = client.get(f"/{rendition}")
            assert playlist.status_code == 200
            assert all(uri.endswith("?" + session) for uri in media_uris(playlist.text))
            assert f'.m4s?{session}"' in playlist.text  # parts and the preload hint
            segment = media_uris(playlist.text)[-1]
            assert client.get(f"/{signed}/{segment}").status_code == 200
            bare = f"/{signed}/{segment.partition('?')[0]}"

            # Refused: the playlists and a media URL, for each kind of bad token.
            for reason, bad in {
                "missing token": None,
                "expired": token_for(key, signed, exp=int(time.time()) - 3600),
                "wrong audience": token_for(key, signed, aud="t"),
                "wrong playback id": token_for(key, public),
                "bad signature": alg_none(key, signed),
            }.items():
                params = {"token": bad} if bad is not None else {}
                for path in (f"/{signed}.m3u8", f"/{signed}/rendition.m3u8"):
                    assert_forbidden(client.get(path, params=params), reason)
                assert_forbidden(client.get(bare, params=params), "missing token")

            # A public id ignores tokens, even bogus ones.
            public_playlist = client.get(f"/{public}.m3u8", params={"token": "bogus"})
            assert public_playlist.status_code == 200 and "session=" not in public_playlist.text

            # A restriction admits the allowed sites only, on the playlists and the media.
            restricted_token = token_for(key, signed, playback_restriction_id=restriction_id)
            admitted = client.get(f"/{signed}.m3u8", params={"token": restricted_token},
                                  headers={"Referer": "https://a.example.com/"})
            assert admitted.status_code == 200
            assert_forbidden(client.get(f"/{signed}.m3u8", params={"token": restricted_token},
                                        headers={"Referer": "https://evil.test/"}),
                             "referrer not allowed")
            restricted_rendition = media_uris(admitted.text)[0]
            assert client.get(f"/{restricted_rendition}", headers={
                "Referer": "https://a.example.com/"}).status_code == 200
            assert_forbidden(client.get(f"/{restricted_rendition}",
                                        headers={"Referer": "https://evil.test/"}),
                             "referrer not allowed")

            # hls.js in Chromium plays the player page given the token.
            with launch_chromium() as browser:
                seen = open_player(browser, f"{relay.http_url}/player/{signed}?token={token}",
                                   startup_timeout=15, sample_seconds=3)
                assert seen.started and seen.advanced, seen.summary()

            # Deleting the signing key stops its tokens and their sessions at once.
            with api(relay) as admin:
                assert admin.delete(f"/system/v1/signing-keys/{key['id']}").status_code == 204
            assert_forbidden(client.get(f"/{signed}.m3u8", params={"token": token}),
                             "unknown key")
            assert_forbidden(client.get(f"/{rendition}"), "unknown key")
            assert_forbidden(client.get(f"/{signed}/{segment}"), "unknown key")
            # Counted by reason: the two playlists refused for the expired token.
            assert metric(relay.urls["metrics"],
                          'relay_playback_refused_total{reason="expired"}') == 2
    finally:
        stop_encoder(encoder)
    assert "refused" in relay.log and token not in relay.log
