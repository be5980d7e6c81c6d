"""What signed playback adds to a playlist request (`relay.hls.signed`), in microseconds.

    .venv/bin/python benchmarks/signed_playlists.py

A live LL-HLS media playlist as Relay renders it (2 s segments of 0.5 s parts, the default
window, one segment in progress) is answered to a viewer of a signed playback id: the
session value is checked (an HMAC), the renderer's cached bytes of the revision get the
viewer's `?session=` on every URI (`sign_playlist`), and, for a client that takes gzip, the
signed body is compressed once per (revision, session value) (`SignedGzipCache`: a miss is
one compression, a hit a dictionary look-up). A playlist request with `?token=` verifies the
token (remembered after its first RSA check) and makes the session value.
"""

from __future__ import annotations

import base64
import time
import timeit

import jwt

from relay.api.signing import new_key_pair
from relay.hls.playlist import LivePlaylist, PlaylistRenderer
from relay.hls.signed import PlaybackGate, SignedGzipCache, sign_playlist
from relay.playback.access import PlaybackAccess

KID = "K" * 40
PLAYBACK_ID = "P" * 40


def live_playlist() -> LivePlaylist:
    playlist = LivePlaylist(target_duration=2, part_target=0.5)
    start = time.time()
    for _ in range(12):
        playlist.start_segment(init=0, program_date_time=start)
        for index in range(4):
            playlist.add_part(0.5, independent=index == 0)
        playlist.complete_segment(2.0)
        start += 2.0
    playlist.start_segment(init=0, program_date_time=start)
    playlist.add_part(0.5, independent=True)
    return playlist


def per_call_us(function: object, number: int) -> float:
    timer = timeit.Timer(function)  # type: ignore[arg-type]
    return min(timer.repeat(repeat=5, number=number)) / number * 1e6


def main() -> None:
    renderer = PlaylistRenderer(live_playlist())
    plain = renderer.encoded()
    private_b64, public_pem = new_key_pair()
    access = PlaybackAccess()
    access.verifier.keys.add(KID, public_pem)
    gate = PlaybackGate(access)
    token = jwt.encode({"sub": PLAYBACK_ID, "aud": "v", "exp": int(time.time()) + 3600},
                       base64.b64decode(private_b64), algorithm="RS256",
                       headers={"kid": KID})
    query = gate.check(PLAYBACK_ID, {"token": token}, playlist=True, referer=None,
                       user_agent=None)
    assert isinstance(query, bytes)
    session = query.decode().partition("=")[2]
    signed = sign_playlist(plain, query)
    cache = SignedGzipCache()
    cache.gzipped(plain, query, signed)
    rows = [
        ("public: the renderer's cached bytes", per_call_us(renderer.encoded, 100_000)),
        ("check a playlist's ?token= (verified before)", per_call_us(
            lambda: gate.check(PLAYBACK_ID, {"token": token}, playlist=True, referer=None,
                               user_agent=None), 20_000)),
        ("check a ?session= value", per_call_us(
            lambda: gate.check(PLAYBACK_ID, {"session": session}, playlist=False,
                               referer=None, user_agent=None), 20_000)),
        ("sign_playlist (plain answer)", per_call_us(lambda: sign_playlist(plain, query),
                                                     20_000)),
        ("gzip of the signed body (a cache miss)", per_call_us(
            lambda: SignedGzipCache().gzipped(plain, query, signed), 2_000)),
        ("gzip form from the cache (a hit)", per_call_us(
            lambda: cache.gzipped(plain, query, signed), 100_000)),
    ]
    print(f"live LL-HLS media playlist: {len(plain)} bytes plain, {len(signed)} signed "
          f"({signed.count(b'?session=')} URIs)")
    for name, micros in rows:
        print(f"  {name:48s} {micros:8.2f} us")


if __name__ == "__main__":
    main()
