"""The viewer simulator's playlist and fragment reading, on what Relay's own playlist and fMP4
writers produce (the simulator runs end to end in the suite's smoke run)."""

from __future__ import annotations

import asyncio
import itertools
import zlib
from pathlib import Path

import pytest

from benchmarks.viewers import (
    MAX_BODY_BYTES,
    MAX_RESPONSE_HEAD,
    PART_HEAD_BYTES,
    Connection,
    ListedPart,
    Response,
    ResponseReader,
    ViewerError,
    first_decode_time,
    listed_parts,
    new_parts,
    run_loop,
)
from relay.hls import fmp4
from relay.hls.playlist import LivePlaylist, PlaylistKind, PlaylistRenderer

T0 = 1_700_000_000.0


def playlist_with_parts(first_msn: int = 40, segments: int = 3,
                        open_parts: int = 2) -> LivePlaylist:
    """`segments` complete 2 s segments of 7 parts from `first_msn`, then an open segment
    with `open_parts` parts."""
    playlist = LivePlaylist(kind=PlaylistKind.LIVE, target_duration=2, part_target=0.3,
                            first_msn=first_msn)
    for msn in range(segments):
        playlist.start_segment(init=0, program_date_time=T0 + 2 * msn)
        for index in range(7):
            playlist.add_part(0.3 if index < 6 else 0.2, independent=index == 0)
        playlist.complete_segment(2.0)
    playlist.start_segment(init=0, program_date_time=T0 + 2 * segments)
    for index in range(open_parts):
        playlist.add_part(0.3, independent=index == 0)
    return playlist


def test_listed_parts_numbers_parts_by_segment() -> None:
    playlist = playlist_with_parts()
    parts, part_target = listed_parts(PlaylistRenderer(playlist).render())
    assert part_target == 0.3
    assert [(p.msn, p.index) for p in parts][-3:] == [(42, 6), (43, 0), (43, 1)]
    assert parts[-1].uri.endswith(".m4s") and parts[-1].duration == 0.3
    assert {p.msn for p in parts} <= {40, 41, 42, 43}


def test_listed_parts_after_a_skip() -> None:
    playlist = LivePlaylist(kind=PlaylistKind.LIVE, target_duration=2, part_target=0.3)
    for msn in range(12):
        playlist.start_segment(init=0, program_date_time=T0 + 2 * msn)
        for index in range(7):
            playlist.add_part(0.3 if index < 6 else 0.2, independent=index == 0)
        playlist.complete_segment(2.0)
    text = PlaylistRenderer(playlist).render(skip=True)
    assert "#EXT-X-SKIP" in text
    full, _ = listed_parts(PlaylistRenderer(playlist).render())
    delta, _ = listed_parts(text)
    assert [(p.msn, p.index, p.uri) for p in delta] == [(p.msn, p.index, p.uri) for p in full]


@pytest.mark.parametrize("decode_time", [0, 90_000 * 7 + 3000, 2**33 + 5])
def test_first_decode_time_reads_the_first_tfdt(decode_time: int) -> None:
    fragment = fmp4.media_fragment(3, [
        fmp4.TrackRun(track_id=1, base_media_decode_time=decode_time, samples=(
            fmp4.Sample(duration=3000, keyframe=True, composition_offset=0, data=b"\0" * 9),)),
        fmp4.TrackRun(track_id=2, base_media_decode_time=12, samples=(
            fmp4.Sample(duration=1024, keyframe=True, composition_offset=0, data=b"\1" * 5),)),
    ])
    assert first_decode_time(fragment) == decode_time / 90_000


def test_first_decode_time_needs_a_fragment() -> None:
    with pytest.raises(ViewerError):
        first_decode_time(b"not a fragment")


# -- the HTTP/1.1 response reader, on responses captured from `relay serve` --------------------
# (tests/vectors/viewers/capture.py recorded them: a gzip playlist, a blocking reload, a part)

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "viewers"


def captured(name: str) -> tuple[bytes, bytes]:
    """(head without its blank line, body) of a captured response."""
    raw = (VECTORS / name).read_bytes()
    end = raw.index(b"\r\n\r\n")
    return raw[:end], raw[end + 4:]


def read_whole(raw: bytes, pieces: list[int], keep: int = MAX_BODY_BYTES) -> Response:
    """`raw` fed to one reader cut at `pieces` (offsets), as reads would deliver it."""
    reader = ResponseReader(keep)
    cuts = [0, *pieces, len(raw)]
    for start, end in itertools.pairwise(cuts):
        assert not reader.done
        assert reader.feed(memoryview(raw[start:end])) == end - start
    assert reader.done
    return reader.response(received=1.0)


@pytest.mark.parametrize("name", ["playlist.http", "reload.http"])
def test_reader_takes_a_captured_gzip_playlist_cut_anywhere(name: str) -> None:
    raw = (VECTORS / name).read_bytes()
    _head, body = captured(name)
    text = zlib.decompress(body, 31).decode("ascii")
    assert text.startswith("#EXTM3U") and "#EXT-X-PART:" in text
    for cut in range(1, len(raw)):  # every split into two reads, the head's end included
        response = read_whole(raw, [cut])
        assert (response.status, response.length, response.gzipped) == (200, len(body), True)
        assert response.body == body
    response = read_whole(raw, list(range(1, len(raw))))  # a byte at a time
    assert zlib.decompress(response.body, 31).decode("ascii") == text


def test_reader_keeps_a_captured_parts_first_bytes_and_counts_the_rest() -> None:
    raw = (VECTORS / "part.http").read_bytes()
    head, body = captured("part.http")
    assert b"content-type: video/mp4" in head.lower()
    for pieces in ([], [len(head) + 2], [len(head) + 4], [len(head) + 4 + 100, 20_000],
                   list(range(7, len(raw), 1460))):
        response = read_whole(raw, pieces, keep=PART_HEAD_BYTES)
        assert (response.status, response.length, response.gzipped) == (200, len(body), False)
        assert response.body == body[:PART_HEAD_BYTES]
        assert first_decode_time(response.body) == first_decode_time(body) > 0


def test_reader_leaves_what_follows_the_response() -> None:
    raw = (VECTORS / "reload.http").read_bytes()
    reader = ResponseReader()
    assert reader.feed(memoryview(raw + b"HTTP/1.1 200 OK\r\n")) == len(raw)
    assert reader.done


@pytest.mark.parametrize(("raw", "problem"), [
    (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n", "transfer-encoding"),
    (b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\n", "without Content-Length"),
    (b"HTTP/1.1 200 OK\r\ncontent-length: twelve\r\n\r\n", "no number"),
    (b"SSH-2.0-OpenSSH_9.6\r\n\r\n", "not an HTTP/1.1 status line"),
    (b"HTTP/1.1 200 OK\r\nx: " + b"y" * MAX_RESPONSE_HEAD, "head over"),
])
def test_reader_refuses_what_it_cannot_frame(raw: bytes, problem: str) -> None:
    with pytest.raises(ViewerError, match=problem):
        ResponseReader().feed(memoryview(raw))


def test_reader_takes_an_empty_body_and_a_503() -> None:
    response = read_whole(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n", [])
    assert (response.status, response.length, response.body) == (503, 0, b"")


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_connections_share_one_buffer_and_read_captured_responses(loop: str) -> None:
    """Two keep-alive connections to a server that answers with the captured bytes, the
    part sent in small writes: each gets its own responses whole through the shared buffer
    (on asyncio's loop and on uvloop, which the simulator runs on)."""
    (asyncio.run if loop == "asyncio" else run_loop)(two_connections())


async def two_connections() -> None:
    answers = {b"/p.m3u8": (VECTORS / "reload.http").read_bytes(),
               b"/part.m4s": (VECTORS / "part.http").read_bytes()}
    closed: asyncio.Queue[None] = asyncio.Queue()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                assert b"\r\naccept-encoding: gzip\r\n" in head.lower()
                answer = answers[head.split(b" ")[1]]
                for at in range(0, len(answer), 3000):
                    writer.write(answer[at:at + 3000])
                    await writer.drain()
                    await asyncio.sleep(0)
        except asyncio.IncompleteReadError:  # the client closed its connection
            writer.close()
            await writer.wait_closed()
            closed.put_nowait(None)

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        first, second = [await Connection.open("127.0.0.1", port) for _ in range(2)]
        for _ in range(3):
            parts = await asyncio.gather(first.fetch("/part.m4s", keep=PART_HEAD_BYTES),
                                         second.fetch("/part.m4s", keep=PART_HEAD_BYTES))
            playlists = await asyncio.gather(first.get("/p.m3u8"), second.get("/p.m3u8"))
            _, body = captured("part.http")
            assert [(p.length, p.body) for p in parts] == [(len(body), body[:PART_HEAD_BYTES])] * 2
            assert playlists[0] == playlists[1] == zlib.decompress(captured("reload.http")[1], 31)
        first.close()
        second.close()
        for _ in range(2):  # the server's side saw both closes
            await asyncio.wait_for(closed.get(), 10)
    finally:
        server.close()
        await server.wait_closed()


# -- the new parts of a blocking reload --------------------------------------------------------


def every_have(parts: list[ListedPart]) -> list[tuple[int, int]]:
    """Each listed part, one before the first, and one past the last part."""
    haves = [(p.msn, p.index) for p in parts]
    return [(parts[0].msn - 1, 0), (parts[0].msn, -1), *haves, (parts[-1].msn + 1, 0)]


def test_new_parts_on_a_captured_reload_are_the_listed_parts_after_have() -> None:
    text = zlib.decompress(captured("reload.http")[1], 31).decode("ascii")
    parts, _ = listed_parts(text)
    assert len({p.msn for p in parts}) >= 3
    for have in every_have(parts):
        assert new_parts(text, have) == [p for p in parts if (p.msn, p.index) > have], have


@pytest.mark.parametrize("skip", [False, True])
def test_new_parts_on_rendered_playlists(skip: bool) -> None:
    playlist = playlist_with_parts(first_msn=7, segments=12, open_parts=1)
    text = PlaylistRenderer(playlist).render(skip=skip)
    assert ("#EXT-X-SKIP" in text) is skip
    parts, _ = listed_parts(text)
    for have in every_have(parts):
        assert new_parts(text, have) == [p for p in parts if (p.msn, p.index) > have], have


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_a_connection_fails_its_request_when_the_server_closes_or_stays_silent(
        loop: str) -> None:
    (asyncio.run if loop == "asyncio" else run_loop)(closed_and_silent())


async def closed_and_silent() -> None:
    part = (VECTORS / "part.http").read_bytes()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        if head.startswith(b"GET /cut "):  # half the part, then the connection ends
            writer.write(part[:len(part) // 2])
            await writer.drain()
        else:  # silent until the client goes
            await reader.read()
        writer.close()
        await writer.wait_closed()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        cut = await Connection.open("127.0.0.1", port)
        with pytest.raises(ConnectionError, match="/cut: the server closed the connection"):
            await cut.fetch("/cut", keep=PART_HEAD_BYTES)
        with pytest.raises(ConnectionError, match="the server closed the connection"):
            await cut.fetch("/again")  # the next request names why the connection ended
        silent = await Connection.open("127.0.0.1", port)
        with pytest.raises(TimeoutError, match=r"/silent: no response within 0\.2 s"):
            await silent.fetch("/silent", timeout=0.2)
        cut.close()
        silent.close()
    finally:
        server.close()
        await server.wait_closed()
