"""HLS and LL-HLS playback end to end, as players and CDNs see it.

Real peers only: `relay serve` runs as a subprocess on free ports bound to 127.0.0.1
(`RelayProcess`), ffmpeg (Debian's package) publishes a synthetic H.264 + AAC stream over
RTMP, ffmpeg and ffprobe are the HLS players that must decode what Relay serves, and httpx
plays the application and a player's playlist and media requests. Every
media playlist read here goes through `tests.hls.playlist_checker`, with the previous
sample when there is one, so the LL-HLS rules (LL-HLS.md) are asserted on real output.

Covered:
- every latency mode, and audio-only streams with and without parts, decode in ffmpeg;
  ffprobe sees the tracks;
- playlists sampled every ~0.3 s during a low-latency push (plain and blocking reloads)
  keep the rules; the multivariant playlist describes the rendition (BANDWIDTH no lower
  than any segment's bit rate);
- blocking playlist reload: the next part, the part past the end of a segment, a whole
  segment, the 400s (bad values, `_HLS_part` alone, too far ahead) and the 503 of a
  stalled encoder; delta updates (`_HLS_skip`); the hinted part held until complete;
  a segment's bytes are its parts' bytes;
- HTTP: gzip, CORS, Cache-Control and content types; one 404 body for every unknown,
  malformed, not-yet-live or unserved resource;
- the recording: EVENT while live (decodable), VOD with ENDLIST after, durations from the
  API, the playlist and ffprobe agree with what was pushed; delete removes the files;
- a reconnect inside the window: one asset, EXT-X-DISCONTINUITY live and recorded;
- `kill -9` mid-push: a restart on the same data dir completes the recording as a
  playable VOD asset, and the stream can go live again.

The last section holds regression tests for server bugs these tests found (fixed).

Timing is measured and printed (`pytest -s`), and asserted only against the protocol's own
bounds (3 x TARGETDURATION), never tightly: the test machine is small and shared.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from testkit.encoders import ffmpeg_publish, finish, needs_ffmpeg
from testkit.relay_process import RelayProcess
from tests.hls.playlist_checker import (
    MediaPlaylist,
    check_media_playlist,
    check_multivariant,
    parse_media_playlist,
)
from tests.integration.helpers.hls_playback import (
    FFPROBE,
    SIZE,
    Live,
    decode,
    http,
    last_msn,
    probe,
    pushing,
    relay,
    stop_encoder,
    wait_playable,
)
from tests.integration.helpers.rtmp_ingest import (
    TOKEN,
    api,
    create_stream,
    get_stream,
    publish_url,
    start_relay,
    wait_status,
    wait_until,
)

__all__ = ["relay"]  # fixtures, defined in tests.integration.helpers.hls_playback

pytestmark = [needs_ffmpeg,
              pytest.mark.skipif(FFPROBE is None, reason="ffprobe is not installed")]

PLAYLIST_TYPES = ("application/vnd.apple.mpegurl", "application/x-mpegurl")
PLAYLIST_CACHE = "public, max-age=1"
VOD_PLAYLIST_CACHE = "public, max-age=300"
MEDIA_CACHE = "public, max-age=31536000, immutable"


# -- the relay, the encoder and the players -------------------------------------------------


@pytest.fixture(params=["lean", "asgi"])
def relay_either(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[RelayProcess]:
    """`relay serve` with each playback server (--playback-server): their answers are the
    same."""
    process = start_relay(tmp_path / "data", "--playback-server", request.param)
    try:
        yield process
    finally:
        assert process.stop() == 0, process.log


# -- reading playlists ----------------------------------------------------------------------

def hint(text: str) -> tuple[int, int]:
    """(msn, part) of the part the playlist's EXT-X-PRELOAD-HINT names."""
    hints = [h for h in parse_media_playlist(text).hints if h.get("TYPE") == "PART"]
    assert len(hints) == 1, text
    msn, part, _ = hints[0]["URI"].strip('"').split(".")
    return int(msn), int(part)


def part_uris(playlist: MediaPlaylist) -> list[str]:
    return [part.uri for segment in playlist.segments for part in segment.parts]


def segment_uris(playlist: MediaPlaylist) -> list[str]:
    return [segment.uri for segment in playlist.segments if segment.uri is not None]


def blocking(client: httpx.Client, live: Live, msn: int, part: int | None = None,
             **extra: str) -> httpx.Response:
    params = {"_HLS_msn": str(msn), **extra}
    if part is not None:
        params["_HLS_part"] = str(part)
    return client.get(live.media, params=params)


def just_after_a_segment_start(client: httpx.Client, live: Live) -> str:
    """A playlist fetched right after a segment started: for about 1.7 s (a 2 s segment
    less one part) no new segment appears, so msn arithmetic on it does not race."""
    msn, part = hint(client.get(live.media).text)
    if part > 0:
        msn += 1
    response = blocking(client, live, msn, 0)
    assert response.status_code == 200, response.text
    return response.text


# -- 1. every latency mode decodes ----------------------------------------------------------

@pytest.mark.parametrize(("mode", "audio_only"), [("low", False), ("reduced", False),
                                                  ("standard", False), ("reduced", True),
                                                  ("low", True)],
                         ids=["low", "reduced", "standard", "audio-only", "audio-only-low"])
def test_each_latency_mode_plays_in_ffmpeg(relay: RelayProcess, mode: str,
                                           audio_only: bool) -> None:
    # 2 s GOPs: segments of 2 s (low, reduced) or 6 s (standard); standard needs a whole
    # 6 s segment before it plays, so it is pushed longer.
    seconds = 18 if mode == "standard" else 12
    with pushing(relay, seconds, gop=60, latency_mode=mode, audio_only=audio_only) as live, \
            http(relay) as client:
        url = f"{relay.http_url}{live.multivariant}"
        multivariant = client.get(live.multivariant).text
        (variant,) = check_multivariant(multivariant)
        codecs = variant.attributes["CODECS"].strip('"').split(",")
        media = client.get(live.media).text
        playlist = check_media_playlist(media)
        assert playlist.target_duration == (6 if mode == "standard" else 2), media
        assert (playlist.part_target is not None) is (mode == "low"), media

        decoded = decode(url, 3, "-live_start_index", "0")
        print(f"{mode} audio_only={audio_only}: decoded {decoded.seconds:.2f} s")
        assert decoded.returncode == 0 and decoded.stderr == "", decoded.stderr
        assert decoded.seconds >= 2.5, decoded

        streams = {s["codec_type"]: s for s in probe(url)["streams"]}
        if audio_only:
            assert codecs == ["mp4a.40.2"], multivariant
            assert "RESOLUTION" not in variant.attributes
            assert "FRAME-RATE" not in variant.attributes
            assert list(streams) == ["audio"], streams
        else:
            assert codecs[0].startswith("avc1.") and codecs[1:] == ["mp4a.40.2"], codecs
            assert sorted(streams) == ["audio", "video"], streams
            video = streams["video"]
            assert (video["codec_name"], f"{video['width']}x{video['height']}") == \
                ("h264", SIZE)
        assert streams["audio"]["codec_name"] == "aac"
        assert streams["audio"]["sample_rate"] == "44100"


# -- 2. sampled playlists keep the rules ----------------------------------------------------

def test_sampled_low_latency_playlists_keep_the_rules(relay: RelayProcess) -> None:
    with pushing(relay, 16, latency_mode="low") as live, http(relay) as client:
        previous: str | None = None
        plain = held = 0
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline:
            text = client.get(live.media).text
            check_media_playlist(text, previous=previous)
            previous, plain = text, plain + 1
            # Then as hls.js does: a blocking reload for the part the hint names.
            msn, part = hint(text)
            response = blocking(client, live, msn, part)
            assert response.status_code == 200, response.text
            playlist = check_media_playlist(response.text, previous=previous)
            assert f"{msn}.{part}.m4s" in part_uris(playlist), response.text
            previous, held = response.text, held + 1
            time.sleep(0.3)
        print(f"checked {plain} plain and {held} blocking reloads")
        assert plain >= 8 and held >= 8

        # The variant describes the rendition. Its BANDWIDTH is the peak segment bit rate
        # (rfc8216bis 4.4.6.2) of the segments measured so far, so it is compared with the
        # segments listed before it was read; AVERAGE-BANDWIDTH with those listed after.
        assert previous is not None
        multivariant = client.get(live.multivariant).text
        (variant,) = check_multivariant(multivariant)
        attributes = variant.attributes
        assert variant.uri == f"{live.playback_id}/rendition.m3u8", multivariant
        assert attributes["RESOLUTION"] == SIZE
        assert attributes["FRAME-RATE"] == "30.000"
        codecs = attributes["CODECS"].strip('"').split(",")
        assert codecs[0].startswith("avc1.") and codecs[1:] == ["mp4a.40.2"], codecs
        bandwidth, average = int(attributes["BANDWIDTH"]), int(attributes["AVERAGE-BANDWIDTH"])
        before = bit_rates(client, live.playback_id, parse_media_playlist(previous))
        after = bit_rates(client, live.playback_id, parse_media_playlist(
            client.get(live.media).text))
        print(f"BANDWIDTH {bandwidth}, AVERAGE-BANDWIDTH {average}, segment bit rates "
              f"{[round(r) for r in after]}")
        assert before and max(before) <= bandwidth * 1.01, (before, multivariant)
        assert min(after) * 0.99 <= average <= max(after) * 1.01, (after, multivariant)


def bit_rates(client: httpx.Client, playback_id: str, playlist: MediaPlaylist) -> list[float]:
    """Each complete segment's bit rate: its bytes over its EXTINF."""
    return [len(client.get(f"/{playback_id}/{segment.uri}").content) * 8 / segment.duration
            for segment in playlist.segments if segment.uri is not None and segment.duration]


# -- 3. blocking reload, delta updates, hinted parts ---------------------------------------

def test_blocking_reload_serves_the_next_part_segment_and_part_past_the_end(
        relay: RelayProcess) -> None:
    with pushing(relay, 20, latency_mode="low") as live, http(relay) as client:
        text = client.get(live.media).text
        target = check_media_playlist(text).target_duration
        assert target == 2

        # The next part, eight times in a row, each from the previous answer's hint.
        delays = []
        for _ in range(8):
            msn, part = hint(text)
            started = time.monotonic()
            response = blocking(client, live, msn, part)
            delays.append(time.monotonic() - started)
            assert response.status_code == 200, response.text
            playlist = check_media_playlist(response.text, previous=text)
            assert f"{msn}.{part}.m4s" in part_uris(playlist), response.text
            text = response.text
        print(f"next-part blocking reload delays (s): {[round(d, 3) for d in delays]}")
        assert max(delays) < 3 * target

        # A whole segment: _HLS_msn alone waits until the open segment is complete.
        open_msn, _ = hint(text)
        started = time.monotonic()
        response = blocking(client, live, open_msn)
        waited = time.monotonic() - started
        print(f"whole-segment blocking reload: {waited:.3f} s")
        assert response.status_code == 200 and waited < 3 * target
        playlist = check_media_playlist(response.text, previous=text)
        assert f"{open_msn}.m4s" in segment_uris(playlist), response.text
        text = response.text

        # A part index past the end of a completed segment means part 0 of the next one
        # (hls.js asks exactly that), however far past.
        complete = [s for s in playlist.segments if s.complete and s.parts][-1]
        for past in (len(complete.parts), len(complete.parts) + 5):
            response = blocking(client, live, complete.msn, past)
            assert response.status_code == 200, response.text
            after = check_media_playlist(response.text, previous=text)
            assert f"{complete.msn + 1}.0.m4s" in part_uris(after), response.text
            text = response.text

        # Requests for what is already listed are answered at once.
        started = time.monotonic()
        response = blocking(client, live, complete.msn, 0)
        assert response.status_code == 200 and time.monotonic() - started < 1


def test_blocking_reload_refuses_bad_directives_with_400(relay: RelayProcess) -> None:
    with pushing(relay, 14, latency_mode="low") as live, http(relay) as client:
        text = just_after_a_segment_start(client, live)
        last = last_msn(parse_media_playlist(text))
        index = len(parse_media_playlist(text).segments[-1].parts) - 1  # its last part
        refused: list[tuple[dict[str, str], str]] = [
            ({"_HLS_part": "1"}, "_HLS_msn"),  # _HLS_part needs _HLS_msn
            ({"_HLS_msn": "abc"}, "abc"),
            ({"_HLS_msn": "-1"}, "-1"),
            ({"_HLS_msn": "1.5"}, "1.5"),
            ({"_HLS_msn": ""}, "_HLS_msn"),
            ({"_HLS_msn": str(last), "_HLS_part": "xyz"}, "xyz"),
            ({"_HLS_skip": "maybe"}, "maybe"),
            # rfc8216bis 6.2.5.2: more than 2 past the last segment...
            ({"_HLS_msn": str(last + 3)}, str(last + 3)),
            ({"_HLS_msn": str(last + 3), "_HLS_part": "0"}, str(last + 3)),
            # ...or more than the Advance Part Limit (3 / PART-TARGET = 10) past the last part.
            ({"_HLS_msn": str(last), "_HLS_part": str(index + 11)}, str(index + 11)),
        ]
        for params, named in refused:
            started = time.monotonic()
            response = client.get(live.media, params=params)
            elapsed = time.monotonic() - started
            assert response.status_code == 400, (params, response.status_code, response.text)
            assert elapsed < 1, (params, elapsed)  # refused at once, never held
            assert named in response.text, (params, response.text)  # names what is wrong
            assert response.headers["access-control-allow-origin"] == "*"
        # No segment started meanwhile, so `last` was exact for every request above.
        assert last_msn(parse_media_playlist(client.get(live.media).text)) == last

        # The limits themselves are accepted: last + 2, and a part within the limit.
        with ThreadPoolExecutor(2) as pool:
            ahead = pool.submit(blocking, client, live, last + 2)
            near = pool.submit(blocking, client, live, last, index + 2)
            assert near.result().status_code == 200, near.result().text
            assert ahead.result().status_code in (200, 503), ahead.result().text


def test_delta_updates_skip_old_segments_once_the_playlist_is_long_enough(
        relay: RelayProcess) -> None:
    with pushing(relay, 26, latency_mode="low") as live, http(relay) as client:
        # At first the playlist is shorter than CAN-SKIP-UNTIL: a skip request gets it whole.
        early = client.get(live.media, params={"_HLS_skip": "YES"}).text
        assert "#EXT-X-SKIP" not in early, early
        control = parse_media_playlist(early).server_control or {}
        assert float(control["CAN-SKIP-UNTIL"]) == 12.0, early

        full = early
        deadline = time.monotonic() + 30
        while "#EXT-X-SKIP" not in (delta := client.get(
                live.media, params={"_HLS_skip": "YES"}).text):
            assert time.monotonic() < deadline, "no delta update after 30 s:\n" + delta
            full = client.get(live.media).text
            time.sleep(0.3)
        print(f"first delta update:\n{delta}")
        skipped = check_media_playlist(delta, previous=full)
        assert skipped.skipped is not None and skipped.skipped >= 1
        assert skipped.version >= 9 and skipped.has_map

        # The delta is the full playlist with its oldest segments replaced by EXT-X-SKIP:
        # same MEDIA-SEQUENCE, and every segment it lists is listed alike in the full one.
        msn, part = hint(delta)
        whole = check_media_playlist(blocking(client, live, msn, part).text, previous=delta)
        assert skipped.media_sequence == whole.media_sequence
        listed = whole.by_msn()
        for segment in skipped.segments:
            if segment.complete:
                assert (listed[segment.msn].uri, listed[segment.msn].duration) == \
                    (segment.uri, segment.duration), (delta, whole)
        first = skipped.segments[0]
        assert first.uri == f"{skipped.media_sequence + skipped.skipped}.m4s", delta

        # Parts leave the playlist 3 x TARGETDURATION behind the live edge but stay
        # downloadable 3 x TARGETDURATION more: the newest segment listed without its parts.
        unlisted = [s for s in whole.segments if s.complete and not s.parts]
        assert unlisted, "no segment old enough to have its parts unlisted"
        retained = client.get(f"/{live.playback_id}/{unlisted[-1].msn}.0.m4s")
        assert retained.status_code == 200 and retained.content[4:8] == b"moof", retained.text

        # Blocking reload and delta update together, and the v2 spelling.
        msn, part = hint(delta)
        for value in ("YES", "v2"):
            response = blocking(client, live, msn, part, _HLS_skip=value)
            assert response.status_code == 200, response.text
            both = check_media_playlist(response.text)
            assert both.skipped and f"{msn}.{part}.m4s" in part_uris(both), response.text


def test_hinted_part_is_held_until_complete_and_segments_are_their_parts(
        relay: RelayProcess) -> None:
    with pushing(relay, 16, latency_mode="low") as live, http(relay) as client:
        target = 2
        not_found = client.get("/NoSuchPlaybackId.m3u8")
        init = client.get(f"/{live.playback_id}/init-0.mp4")
        assert init.status_code == 200 and init.content[4:8] == b"ftyp", init.content[:16]
        delays = []
        for _ in range(5):
            text = client.get(live.media).text
            msn, part = hint(text)
            uri = f"/{live.playback_id}/{msn}.{part}.m4s"
            started = time.monotonic()
            response = client.get(uri)
            delays.append(time.monotonic() - started)
            assert response.status_code == 200, (uri, response.text)
            assert response.content[4:8] == b"moof", response.content[:16]
            assert response.headers["cache-control"] == MEDIA_CACHE
            # The part is now complete: listed, and the same bytes on a second request.
            playlist = parse_media_playlist(blocking(client, live, msn, part).text)
            assert f"{msn}.{part}.m4s" in part_uris(playlist)
            assert client.get(uri).content == response.content
            # Parts further ahead are not hinted yet: 404 at once, not held.
            for ahead in (f"{msn}.{part + 5}.m4s", f"{msn + 2}.0.m4s"):
                started = time.monotonic()
                early = client.get(f"/{live.playback_id}/{ahead}")
                assert (early.status_code, early.text) == (404, not_found.text), ahead
                assert time.monotonic() - started < 1, ahead
        print(f"hinted part delays (s): {[round(d, 3) for d in delays]}")
        assert max(delays) < 3 * target

        # A complete segment is exactly its parts, in order (CMAF: the same fragments).
        msn, _ = hint(client.get(live.media).text)
        playlist = parse_media_playlist(blocking(client, live, msn).text)
        segment = playlist.by_msn()[msn]
        assert segment.complete and segment.parts
        parts = [client.get(f"/{live.playback_id}/{p.uri}").content for p in segment.parts]
        whole = client.get(f"/{live.playback_id}/{segment.uri}").content
        assert whole == b"".join(parts) and len(whole) > 0


def test_segments_behind_the_live_edge_come_from_the_recording(relay: RelayProcess) -> None:
    """Only the live edge stays in memory (LivePlaylist.store): every segment and part the
    playlist lists is still served, the older ones from the recording's files, byte for
    byte, and the window gauge stays near the edge's size, not the window's."""
    with pushing(relay, 40, latency_mode="low") as live, http(relay) as client:
        first = last_msn(parse_media_playlist(client.get(live.media).text))
        for msn in range(first + 1, first + 7):  # six segments more (blocking reloads)
            text = blocking(client, live, msn).text
        playlist = check_media_playlist(text)
        asset_id = get_stream(relay, live.id)["active_asset_id"]
        recording = relay.data_dir / "assets" / asset_id
        complete = [segment for segment in playlist.segments if segment.complete]
        assert len(complete) >= 6, [segment.uri for segment in playlist.segments]
        for segment in complete:
            whole = client.get(f"/{live.playback_id}/{segment.uri}")
            assert whole.status_code == 200, segment.uri
            assert whole.content == (recording / segment.uri).read_bytes(), segment.uri
            if segment.parts:
                parts = [client.get(f"/{live.playback_id}/{p.uri}") for p in segment.parts]
                assert all(part.status_code == 200 for part in parts), segment.uri
                assert b"".join(part.content for part in parts) == whole.content
        # In memory: the init, the newest complete segment or two and the open one (about
        # 230 kB a segment here; the window lists at least 6), not the whole window (the
        # code before held 3.3 MB at this point).
        sizes = [len((recording / segment.uri).read_bytes()) for segment in complete]
        assert window_bytes(relay) < 4 * max(sizes) + 10_000 < sum(sizes), sizes


def test_a_stalled_encoder_gets_held_requests_a_503(relay: RelayProcess) -> None:
    with pushing(relay, 40, latency_mode="low") as live, http(relay) as client:
        text = just_after_a_segment_start(client, live)
        before = parse_media_playlist(text)
        target = before.target_duration
        assert target == 2
        last = last_msn(before)
        msn, part = hint(text)

        def timed(path: str, params: dict[str, str]) -> tuple[httpx.Response, float]:
            with http(relay) as own:
                started = time.monotonic()
                response = own.get(path, params=params)
                return response, time.monotonic() - started

        live.encoder.send_signal(signal.SIGSTOP)
        try:
            with ThreadPoolExecutor(3) as pool:
                segment = pool.submit(timed, live.media, {"_HLS_msn": str(last + 2)})
                next_part = pool.submit(timed, live.media,
                                        {"_HLS_msn": str(msn), "_HLS_part": str(part + 1)})
                hinted = pool.submit(timed, f"/{live.playback_id}/{msn}.{part}.m4s", {})
                results = {"segment": segment.result(), "part": next_part.result(),
                           "hinted part": hinted.result()}
        finally:
            live.encoder.send_signal(signal.SIGCONT)
        for name, (response, waited) in results.items():
            print(f"stalled, {name}: {response.status_code} after {waited:.2f} s")
        for name in ("segment", "part"):
            response, waited = results[name]
            assert response.status_code == 503, (name, response.text)
            assert 3 * target * 0.9 <= waited < 3 * target + 4, (name, waited)
            assert response.headers["access-control-allow-origin"] == "*"
        # The hinted part cannot be served either; it must not hang or pretend to exist.
        response, waited = results["hinted part"]
        assert response.status_code in (404, 503) and waited < 3 * target + 4, results

        # The encoder resumes: so does the playlist, within the rules.
        msn, part = hint(client.get(live.media).text)
        response = blocking(client, live, msn, part)
        assert response.status_code == 200, response.text
        after = check_media_playlist(response.text, previous=text)
        assert f"{msn}.{part}.m4s" in part_uris(after)
        assert live.encoder.poll() is None, "the encoder must survive the stall"


# -- 4. HTTP: compression, CORS, caching, uniform 404s --------------------------------------

def test_headers_gzip_cors_cache_control_and_uniform_404s(relay_either: RelayProcess) -> None:
    relay = relay_either
    stream = create_stream(relay, latency_mode="low")
    pid = stream["playback_ids"][0]["id"]
    with http(relay) as client:
        never = client.get("/NoSuchPlaybackId.m3u8")
        assert never.status_code == 404 and never.headers["access-control-allow-origin"] == "*"
        # Not live yet: the same 404 as a playback id that never existed.
        for path in (f"/{pid}.m3u8", f"/{pid}/rendition.m3u8", f"/{pid}/init-0.mp4"):
            response = client.get(path)
            assert (response.status_code, response.text) == (404, never.text), path

    with pushing(relay, 14, latency_mode="low") as live, http(relay) as client:
        identity = {"Accept-Encoding": "identity"}
        gzip_ok = {"Accept-Encoding": "gzip, deflate"}
        plain = client.get(live.media, headers=identity)
        assert "content-encoding" not in plain.headers
        packed = client.get(live.media, headers=gzip_ok)
        assert packed.headers["content-encoding"] == "gzip"
        assert int(packed.headers["content-length"]) < len(plain.content)
        check_media_playlist(packed.text)  # httpx inflated it: it is a whole playlist
        # A playlist under 512 bytes is not worth compressing.
        small = client.get(live.multivariant, headers=gzip_ok)
        assert len(small.content) < 512 and "content-encoding" not in small.headers
        for response in (plain, packed, small):
            assert response.headers["content-type"].split(";")[0].lower() in PLAYLIST_TYPES
            assert response.headers["cache-control"] == PLAYLIST_CACHE
            assert response.headers["access-control-allow-origin"] == "*"
            assert "accept-encoding" in response.headers.get("vary", "").lower()

        playlist = parse_media_playlist(plain.text)
        segment = next(s for s in playlist.segments if s.complete)
        assert segment.map_uri is not None
        media = {"part": segment.parts[0].uri, "segment": segment.uri,
                 "init": segment.map_uri}
        for kind, uri in media.items():
            response = client.get(f"/{live.playback_id}/{uri}")
            assert response.status_code == 200, (kind, response.text)
            assert response.headers["content-type"] == "video/mp4"
            assert response.headers["access-control-allow-origin"] == "*"
            cache = response.headers["cache-control"]
            if kind == "init":
                # Init numbers restart with each session: never cached as immutable.
                assert "immutable" not in cache, cache
            else:
                assert cache == MEDIA_CACHE, (kind, cache)

        # Whatever does not resolve is the same 404, so a 404 tells nobody whether a
        # playback id exists: unknown or malformed ids, other ids, unknown resources.
        msn, _ = hint(plain.text)
        for path in ("/NoSuchPlaybackId2.m3u8", "/bad!id.m3u8", "/bad%20id.m3u8",
                     f"/{'a' * 65}.m3u8", "/.m3u8", f"/{live.playback_id}",
                     f"/{live.playback_id}.mpd", f"/{live.id}.m3u8",
                     f"/{live.stream['stream_key']}.m3u8",
                     f"/NoSuchPlaybackId/{segment.uri}", f"/bad!id/{segment.uri}",
                     f"/{live.playback_id}/{msn + 5}.m4s", f"/{live.playback_id}/999.m4s",
                     f"/{live.playback_id}/{msn + 2}.0.m4s", f"/{live.playback_id}/init-9.mp4",
                     f"/{live.playback_id}/nothing.ts", f"/{live.playback_id}/index.m3u8"):
            started = time.monotonic()
            response = client.get(path)
            assert (response.status_code, response.text) == (404, never.text), path
            assert response.headers["access-control-allow-origin"] == "*", path
            assert time.monotonic() - started < 1, path  # never held


# -- 5. the recording -----------------------------------------------------------------------

def test_recording_plays_as_event_then_vod_and_delete_removes_it(relay: RelayProcess) -> None:
    pushed = 10
    stream = create_stream(relay, latency_mode="reduced")
    encoder = ffmpeg_publish(publish_url(relay, stream["stream_key"]), seconds=pushed,
                             size=SIZE, gop=60)
    live = Live(stream, encoder)
    try:
        wait_playable(relay, live)
        asset_id = get_stream(relay, live.id)["active_asset_id"]
        with api(relay) as client:
            asset = client.get(f"/video/v1/assets/{asset_id}").json()["data"]
        assert asset["status"] == "preparing" and asset["is_live"] is True, asset
        asset_pid = asset["playback_ids"][0]["id"]
        url = f"{relay.http_url}/{asset_pid}.m3u8"
        with http(relay) as client:
            # While live, the asset plays as a growing EVENT playlist.
            wait_until(lambda: client.get(f"/{asset_pid}.m3u8").status_code == 200, 10,
                       "the asset's multivariant playlist")
            check_multivariant(client.get(f"/{asset_pid}.m3u8").text)
            event = client.get(f"/{asset_pid}/rendition.m3u8")
            assert event.headers["cache-control"] == PLAYLIST_CACHE
            recorded = check_media_playlist(event.text)
            assert recorded.playlist_type == "EVENT" and not recorded.endlist, event.text
            decoded = decode(url, 2, "-live_start_index", "0")
            assert decoded.returncode == 0 and decoded.stderr == "", decoded.stderr
            assert decoded.seconds >= 1.5, decoded
        code, err = finish(encoder)
        assert code == 0, err
    finally:
        stop_encoder(encoder)

    wait_status(relay, live.id, "idle")
    with api(relay) as client:
        asset = client.get(f"/video/v1/assets/{asset_id}").json()["data"]
    assert asset["status"] == "ready" and asset["is_live"] is False, asset
    with http(relay) as client:
        vod = client.get(f"/{asset_pid}/rendition.m3u8")
        assert vod.headers["cache-control"] == VOD_PLAYLIST_CACHE
        assert vod.headers["access-control-allow-origin"] == "*"
        playlist = check_media_playlist(vod.text, previous=event.text)
        assert playlist.playlist_type == "VOD" and playlist.endlist, vod.text
        assert vod.text.endswith("#EXT-X-ENDLIST\n")
        assert not playlist.hints and playlist.server_control is None, vod.text
        (variant,) = check_multivariant(client.get(f"/{asset_pid}.m3u8").text)
        assert variant.attributes["RESOLUTION"] == SIZE
        # Every segment exists now: BANDWIDTH must be the peak (rfc8216bis 4.4.6.2).
        rates = bit_rates(client, asset_pid, playlist)
        assert max(rates) <= int(variant.attributes["BANDWIDTH"]) * 1.01, (rates, variant)
        # The recording's internals and anything outside it are not served.
        for path in (f"/{asset_pid}/rendition.json", f"/{asset_pid}/..%2F..%2Frelay.db",
                     f"/{asset_pid}/{playlist.segments[-1].msn + 1}.m4s"):
            response = client.get(path)
            assert response.status_code == 404, (path, response.text)
    listed = playlist.duration()
    probed = float(probe(url)["format"]["duration"])
    decoded = decode(url)
    print(f"pushed {pushed} s; asset {asset['duration']} s, playlist {listed:.3f} s, "
          f"ffprobe {probed:.3f} s, decoded {decoded.seconds:.3f} s")
    assert abs(asset["duration"] - pushed) <= 2, asset  # within one segment
    assert abs(asset["duration"] - listed) < 0.01, (asset, vod.text)
    assert abs(probed - pushed) <= 2
    assert decoded.returncode == 0 and decoded.stderr == "", decoded.stderr
    assert abs(decoded.seconds - listed) <= 1, decoded
    assert sorted(track["type"] for track in asset["tracks"]) == ["audio", "video"]

    directory = relay.data_dir / "assets" / asset_id
    assert (directory / "rendition.m3u8").is_file()
    with api(relay) as client:
        assert client.delete(f"/video/v1/assets/{asset_id}").status_code == 204
        assert client.get(f"/video/v1/assets/{asset_id}").status_code == 404
    wait_until(lambda: not directory.exists(), 10, "the asset's files to go")
    with http(relay) as client:
        for path in (f"/{asset_pid}.m3u8", f"/{asset_pid}/rendition.m3u8",
                     f"/{asset_pid}/{playlist.segments[0].uri}"):
            assert client.get(path).status_code == 404, path


# -- 6. reconnects --------------------------------------------------------------------------

def test_a_reconnect_inside_the_window_continues_with_a_discontinuity(
        relay: RelayProcess) -> None:
    stream = create_stream(relay, latency_mode="low", reconnect_window=20)
    live = Live(stream, ffmpeg_publish(publish_url(relay, stream["stream_key"]), seconds=5,
                                       size=SIZE))
    url = publish_url(relay, stream["stream_key"])
    with http(relay) as client:
        try:
            wait_playable(relay, live)
            asset_id = get_stream(relay, live.id)["active_asset_id"]
            code, err = finish(live.encoder)
            assert code == 0, err
            # Inside the window the stream stays live: no ENDLIST, still active.
            before = client.get(live.media).text
            check_media_playlist(before)
            assert "#EXT-X-ENDLIST" not in before and "#EXT-X-DISCONTINUITY" not in before
            assert get_stream(relay, live.id)["status"] == "active"

            live.encoder = ffmpeg_publish(url, seconds=8, size=SIZE)
            wait_until(lambda: "#EXT-X-DISCONTINUITY\n" in client.get(live.media).text, 20,
                       "a discontinuity in the live playlist")
            during = client.get(live.media).text
            playlist = check_media_playlist(during, previous=before)
            resumed = [s for s in playlist.segments if s.discontinuity]
            assert len(resumed) == 1 and resumed[0].parts[0].independent, during
            assert get_stream(relay, live.id)["active_asset_id"] == asset_id
            code, err = finish(live.encoder)
            assert code == 0, err
        finally:
            stop_encoder(live.encoder)

    with api(relay) as client:
        assert client.put(f"/video/v1/live-streams/{live.id}/complete").status_code == 200
    wait_status(relay, live.id, "idle")
    assert get_stream(relay, live.id)["recent_asset_ids"] == [asset_id]
    with api(relay) as client:
        asset = client.get(f"/video/v1/assets/{asset_id}").json()["data"]
    assert asset["status"] == "ready" and len(asset["recording_times"]) == 2, asset
    asset_pid = asset["playback_ids"][0]["id"]
    with http(relay) as client:
        text = client.get(f"/{asset_pid}/rendition.m3u8").text
    recording = check_media_playlist(text)
    assert recording.endlist and text.count("#EXT-X-DISCONTINUITY\n") == 1, text
    assert [s.discontinuity for s in recording.segments].count(True) == 1
    decoded = decode(f"{relay.http_url}/{asset_pid}.m3u8")
    print(f"pushed 5 + 8 s; asset {asset['duration']} s, decoded {decoded.seconds:.3f} s")
    assert decoded.returncode == 0 and decoded.stderr == "", decoded.stderr
    assert abs(asset["duration"] - 13) <= 3, asset  # within a segment per connection
    assert abs(decoded.seconds - recording.duration()) <= 1, decoded


# -- 7. kill -9 -----------------------------------------------------------------------------

def test_kill_9_mid_push_then_restart_completes_the_recording(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    relay = start_relay(data_dir)
    stream = create_stream(relay, latency_mode="reduced")
    live = Live(stream, ffmpeg_publish(publish_url(relay, stream["stream_key"]), seconds=60,
                                       size=SIZE, gop=60))
    try:
        wait_playable(relay, live)
        asset_id = get_stream(relay, live.id)["active_asset_id"]
        playlist_file = data_dir / "assets" / asset_id / "rendition.m3u8"
        wait_until(lambda: playlist_file.is_file() and len(segment_uris(
            parse_media_playlist(playlist_file.read_text()))) >= 3, 20,
            "three recorded segments")
        assert relay.stop(signal.SIGKILL) == -signal.SIGKILL, relay.log
    finally:
        stop_encoder(live.encoder)
    interrupted = parse_media_playlist(playlist_file.read_text())
    assert not interrupted.endlist and interrupted.playlist_type == "EVENT"
    recorded = sum(s.duration or 0 for s in interrupted.segments if s.complete)
    assert recorded >= 5.9

    restarted = RelayProcess(data_dir, token=TOKEN).start()
    try:
        assert f"completed the recording of asset {asset_id}" in restarted.log, restarted.log
        assert get_stream(restarted, live.id)["status"] == "idle"
        with api(restarted) as client:
            asset = client.get(f"/video/v1/assets/{asset_id}").json()["data"]
        print(f"recorded {recorded:.3f} s before kill -9; asset {asset['duration']} s")
        assert asset["status"] == "ready" and asset["is_live"] is False, asset
        # Exactly what was recorded: every listed segment's file was written before it was
        # listed, so nothing listed is lost and nothing unlisted is added.
        assert asset["duration"] > 0 and abs(asset["duration"] - recorded) < 0.01, asset
        asset_pid = asset["playback_ids"][0]["id"]
        with http(restarted) as client:
            vod = client.get(f"/{asset_pid}/rendition.m3u8")
            assert vod.status_code == 200, vod.text
            playlist = check_media_playlist(vod.text)
            assert playlist.endlist and playlist.playlist_type == "VOD", vod.text
            (variant,) = check_multivariant(client.get(f"/{asset_pid}.m3u8").text)
            rates = bit_rates(client, asset_pid, playlist)
        assert abs(asset["duration"] - playlist.duration()) < 0.01
        # Described as after a clean end: BANDWIDTH is the peak of every segment kept,
        # AVERAGE-BANDWIDTH their average, and the interrupted connection's recording time
        # is rebuilt from the media.
        measured = sum(rate * (s.duration or 0) for rate, s in zip(
            rates, playlist.segments, strict=True)) / playlist.duration()
        assert max(rates) <= int(variant.attributes["BANDWIDTH"]) * 1.01, (rates, variant)
        assert abs(int(variant.attributes["AVERAGE-BANDWIDTH"]) - measured) <= measured * 0.01
        (interval,) = asset["recording_times"]
        assert abs(interval["duration"] - asset["duration"]) <= 2, asset
        url = f"{restarted.http_url}/{asset_pid}.m3u8"
        decoded = decode(url)
        assert decoded.returncode == 0 and decoded.stderr == "", decoded.stderr
        assert abs(decoded.seconds - playlist.duration()) <= 1, decoded
        assert abs(float(probe(url)["format"]["duration"]) - playlist.duration()) <= 1

        # The stream recovered too: it goes live again, into a new asset.
        again = Live(live.stream, ffmpeg_publish(publish_url(restarted, stream["stream_key"]),
                                                 seconds=5, size=SIZE, gop=60))
        try:
            wait_playable(restarted, again)
            assert get_stream(restarted, live.id)["active_asset_id"] != asset_id
        finally:
            stop_encoder(again.encoder)
    finally:
        assert restarted.stop() == 0, restarted.log


# -- regressions: server bugs these tests found ---------------------------------------------

def test_msn_limit_counts_only_segments_the_playlist_lists(relay: RelayProcess) -> None:
    """rfc8216bis 6.2.5.2: `_HLS_msn` more than 2 past the last Media Segment *in the
    Playlist* is a 400, at once. Without parts (reduced, standard) the open segment is not
    listed, so "last" is the last complete segment, whatever the phase of the open one."""
    with pushing(relay, 20, gop=60, latency_mode="reduced") as live, http(relay) as client:
        outcomes = []
        for _ in range(2):
            listed = last_msn(parse_media_playlist(client.get(live.media).text))
            done = blocking(client, live, listed + 1)  # returns as segment listed+1 completes
            assert done.status_code == 200, done.text
            last = last_msn(parse_media_playlist(done.text))
            # Early in the next segment, then in its second half (its first fragment cut).
            for pause in (0.3, 1.0):
                time.sleep(pause)
                text = client.get(live.media).text
                assert last_msn(parse_media_playlist(text)) == last, "a segment completed"
                started = time.monotonic()
                response = blocking(client, live, last + 3)
                outcomes.append((response.status_code, round(time.monotonic() - started, 2)))
        print(f"_HLS_msn = last listed + 3: {outcomes}")
        assert [status for status, _ in outcomes] == [400] * 4, outcomes


def test_gzip_is_not_sent_to_a_client_that_refuses_it(relay: RelayProcess) -> None:
    """RFC 9110 12.5.3: a coding with qvalue 0 is "not acceptable"."""
    with pushing(relay, 10, latency_mode="low") as live, http(relay) as client:
        accepted = client.get(live.media, headers={"Accept-Encoding": "gzip"})
        assert accepted.headers.get("content-encoding") == "gzip"  # long enough to pack
        for refusal in ("gzip;q=0", "gzip; q=0.0, identity", "identity, gzip;q=0"):
            response = client.get(live.media, headers={"Accept-Encoding": refusal})
            assert "content-encoding" not in response.headers, refusal


def window_bytes(relay: RelayProcess) -> float:
    text = httpx.get(relay.urls["metrics"], timeout=10).text
    (line,) = [line for line in text.splitlines()
               if line.startswith("relay_hls_live_window_bytes ")]
    return float(line.split()[1])


def test_metrics_report_the_bytes_live_windows_hold(relay: RelayProcess) -> None:
    assert window_bytes(relay) == 0
    assert "\nrelay_gc_seconds_total " in httpx.get(relay.urls["metrics"], timeout=10).text
    with pushing(relay, 5, latency_mode="low") as live:
        held = window_bytes(relay)
        assert held > 10_000, held  # at least the first segment (2 s) and the init
        finish(live.encoder)
    deadline = time.monotonic() + 20
    while window_bytes(relay) and time.monotonic() < deadline:
        time.sleep(0.2)  # low latency: no reconnect window, the session ends at once
    assert window_bytes(relay) == 0


def test_fifty_requests_held_for_one_segment_are_all_answered(relay: RelayProcess) -> None:
    """One future segment, fifty blocked playlist requests (each its own connection): the
    segment's arrival releases them all."""
    with pushing(relay, 30, latency_mode="low") as live:
        with http(relay) as client:
            msn = last_msn(parse_media_playlist(client.get(live.media).text)) + 2
        results: list[int] = []

        def held() -> None:
            with http(relay) as client:
                results.append(client.get(live.media,
                                          params={"_HLS_msn": str(msn)}).status_code)

        threads = [threading.Thread(target=held) for _ in range(50)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(20)
        assert results == [200] * 50
