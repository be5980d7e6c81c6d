"""The upstream fetcher (`relay.hls.upstream`) against a real HTTP server on 127.0.0.1 standing
for the owner node: coalescing counted by that server, the immutable cache and its bounds,
timeouts, unreachable owners and bad answers, the headers that pass."""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
import socket
from collections.abc import AsyncIterator

import pytest

from relay.hls import upstream
from relay.hls.upstream import (
    Fetched,
    ImmutableCache,
    OwnerProxy,
    UpstreamFetcher,
    UpstreamLimits,
)
from tests.hls.helpers.upstream import Canned, CountingServer

pytestmark = pytest.mark.anyio

PART = "/PbId/7.3.m4s"
PLAYLIST = "/PbId/rendition.m3u8"
IMMUTABLE = [("content-type", "video/mp4"),
             ("cache-control", "public, max-age=31536000, immutable"),
             ("access-control-allow-origin", "*")]


@pytest.fixture
async def owner() -> AsyncIterator[CountingServer]:
    server = CountingServer()
    server.routes[PART] = Canned(200, IMMUTABLE, b"part bytes " * 100)
    async with server.serving():
        yield server


@pytest.fixture
async def fetcher() -> AsyncIterator[UpstreamFetcher]:
    fetcher = UpstreamFetcher()
    try:
        yield fetcher
    finally:
        await fetcher.aclose()


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def envelope(fetched: Fetched) -> dict[str, object]:
    assert fetched.header("content-type") == "application/json"
    error = json.loads(fetched.body)["error"]
    assert isinstance(error, dict)
    return error


async def test_a_hundred_viewers_of_one_part_cost_the_owner_one_request(
        owner: CountingServer, fetcher: UpstreamFetcher) -> None:
    owner.hold = True
    viewers = [asyncio.create_task(fetcher.get(owner.url, PART)) for _ in range(100)]
    await owner.arrived.wait()
    await asyncio.sleep(0)  # every viewer task has run up to its wait
    owner.release()
    answers = await asyncio.gather(*viewers)
    assert owner.requests[PART] == 1
    assert {(a.status, a.body) for a in answers} == {(200, b"part bytes " * 100)}
    assert fetcher.counters.coalesced == 99 and fetcher.counters.requests == 1
    # A later viewer: from the cache, the owner is not asked again.
    later = await fetcher.get(owner.url, PART)
    assert later.body == answers[0].body and owner.requests[PART] == 1
    assert fetcher.counters.cache_hits == 1 and fetcher.in_flight == 0


async def test_playlists_are_forwarded_with_their_query_and_never_cached(
        owner: CountingServer, fetcher: UpstreamFetcher) -> None:
    owner.routes[PLAYLIST] = Canned(200, [("content-type", "application/vnd.apple.mpegurl"),
                                          ("cache-control", "public, max-age=1")],
                                    b"#EXTM3U\n")
    blocking = "_HLS_msn=7&_HLS_part=3&_HLS_skip=YES&session=1.a.b.c%2Fd"
    for _ in range(2):
        await fetcher.get(owner.url, PLAYLIST, blocking)
    await fetcher.get(owner.url, PLAYLIST, "_HLS_msn=8")
    await fetcher.get(owner.url, PLAYLIST)
    assert owner.requests == {f"{PLAYLIST}?{blocking}": 2, f"{PLAYLIST}?_HLS_msn=8": 1,
                              PLAYLIST: 1}
    assert len(fetcher.cache) == 0
    # One keep-alive connection carried all four requests.
    assert owner.connections == 1


async def test_held_blocking_reloads_with_one_query_share_one_request(
        owner: CountingServer, fetcher: UpstreamFetcher) -> None:
    owner.routes[PLAYLIST] = Canned(200, [("content-type", "application/vnd.apple.mpegurl")],
                                    b"#EXTM3U\n")
    owner.hold = True
    same = [asyncio.create_task(fetcher.get(owner.url, PLAYLIST, "_HLS_msn=9&_HLS_part=0"))
            for _ in range(20)]
    other = asyncio.create_task(fetcher.get(owner.url, PLAYLIST, "_HLS_msn=9&_HLS_part=1"))
    await owner.arrived.wait()
    await asyncio.sleep(0.05)  # the second distinct request reaches the owner too
    owner.release()
    await asyncio.gather(*same, other)
    assert owner.requests == {f"{PLAYLIST}?_HLS_msn=9&_HLS_part=0": 1,
                              f"{PLAYLIST}?_HLS_msn=9&_HLS_part=1": 1}


async def test_a_viewer_who_leaves_does_not_cancel_the_others_request(
        owner: CountingServer, fetcher: UpstreamFetcher) -> None:
    owner.hold = True
    leaving = asyncio.create_task(fetcher.get(owner.url, PART))
    staying = asyncio.create_task(fetcher.get(owner.url, PART))
    await owner.arrived.wait()
    leaving.cancel()
    owner.release()
    assert (await staying).status == 200
    assert owner.requests[PART] == 1


async def test_only_passed_headers_reach_the_viewer_and_gzip_is_undone_for_who_needs_it(
        owner: CountingServer, fetcher: UpstreamFetcher) -> None:
    plain = b"#EXTM3U\n" + b"#EXT-X-PART:URI=\"1.0.m4s\"\n" * 100
    owner.routes[PLAYLIST] = Canned(200, [
        ("Content-Type", "application/vnd.apple.mpegurl"), ("Cache-Control", "public, max-age=1"),
        ("Content-Encoding", "gzip"), ("Vary", "Accept-Encoding"), ("Age", "0"),
        ("Connection", "keep-alive"), ("Keep-Alive", "timeout=5"), ("X-Internal", "secret"),
        ("Set-Cookie", "a=b"), ("Access-Control-Allow-Origin", "*")], gzip.compress(plain))
    fetched = await fetcher.get(owner.url, PLAYLIST)
    assert owner.seen[-1].headers["accept-encoding"] == "gzip"
    names = [name for name, _ in fetched.headers]
    assert names == ["content-type", "cache-control", "content-encoding", "vary", "age",
                     "access-control-allow-origin"]
    headers, body = fetched.answer(accepts_gzip=True)
    assert gzip.decompress(body) == plain and ("content-encoding", "gzip") in headers
    headers, body = fetched.answer(accepts_gzip=False)
    assert body == plain and "content-encoding" not in dict(headers)
    assert b"content-encoding" not in fetched.header_block(False)
    assert b"content-encoding: gzip\r\n" in fetched.header_block(True)


async def test_signed_requests_carry_referer_and_user_agent_and_are_coalesced_by_them(
        owner: CountingServer, fetcher: UpstreamFetcher) -> None:
    await fetcher.get(owner.url, "/PbId/1.m4s", "session=v", referer="https://a.example/",
                      user_agent="player A")
    await fetcher.get(owner.url, "/PbId/1.m4s", "session=v", referer="https://b.example/",
                      user_agent="player A")
    assert owner.requests["/PbId/1.m4s?session=v"] == 2
    assert [s.headers["referer"] for s in owner.seen] == ["https://a.example/",
                                                         "https://b.example/"]
    assert owner.seen[0].headers["user-agent"] == "player A"


async def test_an_unreachable_owner_is_a_503_with_the_envelope_logged_once(
        fetcher: UpstreamFetcher, caplog: pytest.LogCaptureFixture) -> None:
    owner = f"http://127.0.0.1:{closed_port()}"
    with caplog.at_level(logging.WARNING, logger="relay.hls.upstream"):
        first = await fetcher.get(owner, PART)
        second = await fetcher.get(owner, "/PbId/8.m4s")
    for answer in (first, second):
        assert answer.status == 503 and answer.failed
        assert answer.header("retry-after") == "1"
        assert answer.header("cache-control") == "no-store"
        error = envelope(answer)
        assert error["type"] == "service_unavailable"
        assert owner in str(error["messages"])
    assert fetcher.counters.unreachable == 2
    lines = [r for r in caplog.records if "unreachable" in r.getMessage()]
    assert len(lines) == 1
    assert len(fetcher.cache) == 0


async def test_an_owner_that_does_not_answer_in_time_is_a_502(
        owner: CountingServer) -> None:
    owner.routes[PLAYLIST] = Canned(never=True)
    fetcher = UpstreamFetcher(UpstreamLimits(read_timeout=0.2))
    try:
        answer = await fetcher.get(owner.url, PLAYLIST, "_HLS_msn=99")
    finally:
        await fetcher.aclose()
    assert answer.status == 502 and envelope(answer)["type"] == "bad_gateway"
    assert "did not answer within 0.2 s" in str(envelope(answer)["messages"])
    assert fetcher.counters.timeouts == 1


@pytest.mark.parametrize(("canned", "said"), [
    (Canned(500, [], b"boom"), "answered status 500"),
    (Canned(302, [("location", "http://elsewhere/")], b""), "answered status 302"),
    (Canned(200, IMMUTABLE, b"x" * 2048), "more than 1024 bytes"),
    (Canned(200, [("content-encoding", "gzip")], b"not gzip at all"), "does not inflate"),
    (Canned(200, [("content-encoding", "gzip")], gzip.compress(b"\0" * 4096)),
     "does not inflate"),
])
async def test_bad_answers_are_502s_and_never_cached(owner: CountingServer, canned: Canned,
                                                     said: str) -> None:
    owner.routes["/PbId/9.m4s"] = canned
    fetcher = UpstreamFetcher(UpstreamLimits(max_body_bytes=1024))
    try:
        answer = await fetcher.get(owner.url, "/PbId/9.m4s")
        again = await fetcher.get(owner.url, "/PbId/9.m4s")
    finally:
        await fetcher.aclose()
    assert answer.status == again.status == 502, answer.body
    assert said in str(envelope(answer)["messages"])
    assert owner.requests["/PbId/9.m4s"] == 2 and len(fetcher.cache) == 0


async def test_the_owners_404_403_and_503_pass_as_they_are(
        owner: CountingServer, fetcher: UpstreamFetcher) -> None:
    owner.routes["/PbId/1.m4s"] = Canned(403, [("content-type", "application/json")],
                                         b'{"error":{"type":"forbidden","messages":[]}}')
    owner.routes["/PbId/2.m4s"] = Canned(503, [("retry-after", "1")], b"wait\n")
    assert (await fetcher.get(owner.url, "/PbId/1.m4s")).status == 403
    assert (await fetcher.get(owner.url, "/PbId/2.m4s")).header("retry-after") == "1"
    missing = await fetcher.get(owner.url, "/PbId/3.m4s")
    assert (missing.status, missing.body, missing.failed) == (404, b"nope\n", False)


async def test_requests_in_flight_are_bounded(owner: CountingServer) -> None:
    fetcher = UpstreamFetcher(UpstreamLimits(max_in_flight=1))
    owner.hold = True
    try:
        first = asyncio.create_task(fetcher.get(owner.url, PART))
        await owner.arrived.wait()
        refused = await fetcher.get(owner.url, "/PbId/7.4.m4s")
        joined = asyncio.create_task(fetcher.get(owner.url, PART))  # the same: coalesced
        await asyncio.sleep(0)
        owner.release()
        assert (await first).status == (await joined).status == 200
    finally:
        await fetcher.aclose()
    assert refused.status == 503 and refused.header("retry-after") == "1"
    assert "1 answers" in str(envelope(refused)["messages"])
    assert fetcher.counters.busy == 1 and owner.requests["/PbId/7.4.m4s"] == 0


async def test_clients_are_bounded_by_owner_count(owner: CountingServer) -> None:
    fetcher = UpstreamFetcher(UpstreamLimits(max_owners=2))
    try:
        for owner_url in (owner.url, owner.url + "/", f"http://localhost:{owner.url[17:]}"):
            assert (await fetcher.get(owner_url, PART)).status == 200
        assert len(fetcher._clients) == 2
    finally:
        await fetcher.aclose()


def immutable(size: int) -> Fetched:
    return Fetched(200, (("cache-control", "immutable"),), b"x" * size)


def test_the_cache_is_bounded_in_entries_and_bytes_least_recently_used_first() -> None:
    cache = ImmutableCache(max_entries=3, max_bytes=100)
    keys = [("o", f"/p/{i}.m4s", "", "", "") for i in range(5)]
    for key in keys[:3]:
        cache.put(key, immutable(10))
    assert cache.get(keys[0]) is not None  # now the most recently used
    cache.put(keys[3], immutable(10))
    assert len(cache) == 3 and cache.get(keys[1]) is None and cache.get(keys[0]) is not None
    # Over 100 bytes with the others: the least recently used go (2, then 3; 0 was read).
    cache.put(keys[4], immutable(85))
    assert cache.bytes == 95 and cache.get(keys[4]) is not None
    assert cache.get(keys[2]) is None and cache.get(keys[3]) is None
    assert cache.get(keys[0]) is not None
    cache.put(keys[1], immutable(101))  # larger than the whole cache: not kept
    assert cache.get(keys[1]) is None and cache.bytes == 95
    assert ImmutableCache().max_bytes == upstream.CACHE_MAX_BYTES


def test_what_is_immutable() -> None:
    assert immutable(1).immutable
    assert not Fetched(200, (("cache-control", "no-cache"),), b"init").immutable
    assert not Fetched(404, (("cache-control", "immutable"),), b"").immutable
    assert not Fetched(200, (), b"").immutable


async def test_owner_lookups_are_shared_cached_and_forgotten_when_the_owner_fails(
        owner: CountingServer) -> None:
    asked: list[str] = []
    where = {"PbId": owner.url, "Gone": f"http://127.0.0.1:{closed_port()}"}

    async def lookup(playback_id: str) -> str | None:
        asked.append(playback_id)
        await asyncio.sleep(0.01)
        return where.get(playback_id)

    proxy = OwnerProxy(lookup)
    try:
        answers = await asyncio.gather(*(proxy.fetch("PbId", PART, "", signed=False)
                                         for _ in range(10)))
        assert all(a is not None and a.status == 200 for a in answers)
        assert asked == ["PbId"] and owner.requests[PART] == 1
        assert await proxy.fetch("Local", PART, "", signed=False) is None
        failed = await proxy.fetch("Gone", PART, "", signed=False)
        assert failed is not None and failed.status == 503
        await proxy.fetch("Gone", PART, "", signed=False)
        assert asked == ["PbId", "Local", "Gone", "Gone"]  # looked up again after a failure
        await proxy.fetch("PbId", PART, "", signed=False)
        assert asked.count("PbId") == 1  # still cached
    finally:
        await proxy.aclose()


async def test_connections_per_owner_are_bounded(owner: CountingServer) -> None:
    fetcher = UpstreamFetcher(UpstreamLimits(max_connections_per_owner=1, connect_timeout=0.2))
    owner.hold = True
    try:
        first = asyncio.create_task(fetcher.get(owner.url, PART))
        await owner.arrived.wait()
        waited = await fetcher.get(owner.url, "/PbId/7.4.m4s")  # no connection free in time
        owner.release()
        assert (await first).status == 200
    finally:
        await fetcher.aclose()
    assert waited.status == 503 and waited.header("retry-after") == "1"
    assert "1 requests open" in str(envelope(waited)["messages"])
    assert owner.connections == 1 and fetcher.counters.busy == 1
    assert fetcher.counters.unreachable == 0


async def test_answers_to_requests_with_a_query_are_not_cached(
        owner: CountingServer, fetcher: UpstreamFetcher) -> None:
    # A signed id's media carry a session value the owner checks each time (its expiry too).
    for _ in range(2):
        assert (await fetcher.get(owner.url, PART, "session=1.k.r.mac")).status == 200
    assert owner.requests[f"{PART}?session=1.k.r.mac"] == 2 and len(fetcher.cache) == 0
