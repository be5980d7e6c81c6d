"""Simulated LL-HLS viewers: how many one Relay process serves while parts stay on time.

Theory of operation: one paced publisher (the load generator's: `loadgen.MediaClock` over
Relay's RTMP client) sends a clip in real time from this process, so the media's wall-clock
schedule is known here: media time t (ms from the clip's first keyframe, which starts the
stream's timeline) is due at `began + t`. Each viewer does what hls.js does in low-latency
mode, on one keep-alive HTTP/1.1 connection with `Accept-Encoding: gzip`: it loads the media
playlist once, starts at its newest part, then loops on a blocking reload for the part after
the last one it has (`_HLS_msn=M&_HLS_part=P+1`; past a segment's last part the server
answers with the next segment's first) and fetches every part the reload lists that it does
not have yet.

A part's delivery delay is "its bytes received" minus "its media end was sent": the
part's first video decode time (its `tfdt`, 90 kHz from the stream's first keyframe) plus
its duration from the playlist, on the publisher's schedule. The server cannot cut a part
before the frame after it arrives, so on an idle server the delay is about one frame, the
publisher's tick and the HTTP round trips. Each step runs its viewers for a warm-up, then
keeps their delays for the measured window; it passes when the p99 delay stays under
PART-TARGET and no request failed. Steps go up until one fails. The client's own CPU use
is reported, so that a run limited by this process rather than the server shows as such.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
import zlib
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar, cast
from urllib.parse import urlsplit

from benchmarks.loadgen import CHUNK_SIZE, MediaClock, Publisher, Tag, read_flv
from relay.rtmp.client import ClientSession

#: Seconds a request may take before the viewer counts it failed (a held request is
#: answered within 3 x TARGETDURATION by the server, with 503 if the media is late).
REQUEST_TIMEOUT = 15.0
#: Viewers that connect at once while a run starts.
CONNECT_CONCURRENCY = 100
#: The publisher writes what fell due this often: finer than a frame, so that each frame
#: leaves within a few ms of its due time (the load generator's 50 ms tick would add a
#: delay of 0-50 ms that drifts with the clip's phase against the tick).
TICK = 0.004


class ViewerError(Exception):
    """A response this client cannot use (a status other than 200, a broken framing)."""


@dataclass(frozen=True, slots=True)
class ListedPart:
    msn: int
    index: int
    uri: str
    duration: float  # seconds


@dataclass(slots=True)
class ViewerStats:
    delays: list[float] = field(default_factory=list)  # seconds, in the measured window
    requests: int = 0
    errors: int = 0
    bytes_in: int = 0
    first_error: str = ""
    part_target: float = 0.0  # seconds, from the playlist's EXT-X-PART-INF


@dataclass(slots=True)
class ViewerReport:
    viewers: int
    seconds: float  # the measured window
    parts: int  # part deliveries measured
    p50_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    part_target_ms: float
    requests_per_s: float
    mbit_per_s: float  # part bytes received, all viewers
    errors: int
    first_error: str
    client_cpu: float  # this process's CPU-seconds per second (1.0 = one core)

    @property
    def on_time(self) -> bool:
        return (self.errors == 0 and self.p99_ms is not None
                and self.p99_ms <= self.part_target_ms)


def _attribute(line: str, name: str) -> str:
    start = line.index(name + "=") + len(name) + 1
    if line[start] == '"':
        return line[start + 1:line.index('"', start + 1)]
    end = line.find(",", start)
    return line[start:] if end < 0 else line[start:end]


def listed_parts(text: str) -> tuple[list[ListedPart], float]:
    """The parts a media playlist lists; and its PART-TARGET."""
    parts: list[ListedPart] = []
    msn = 0
    index = 0
    part_target = 0.0
    for line in text.splitlines():
        if line.startswith("#EXT-X-PART:"):
            parts.append(ListedPart(msn, index, _attribute(line, "URI"),
                                    float(_attribute(line, "DURATION"))))
            index += 1
        elif line and not line.startswith("#"):
            msn += 1  # a complete segment's URI: the next segment begins
            index = 0
        elif line.startswith("#EXT-X-MEDIA-SEQUENCE:"):
            msn = int(line.split(":", 1)[1])
        elif line.startswith("#EXT-X-SKIP:"):
            msn += int(_attribute(line, "SKIPPED-SEGMENTS"))
        elif line.startswith("#EXT-X-PART-INF:"):
            part_target = float(_attribute(line, "PART-TARGET"))
    return parts, part_target


def new_parts(text: str, have: tuple[int, int]) -> list[ListedPart]:
    """The parts a media playlist lists after part `have` (msn, index), as `listed_parts`
    numbers them, reading only the segments from `have`'s on: the segment numbers are
    counted from the end (the open segment's is EXT-X-MEDIA-SEQUENCE, plus any skipped
    segments, plus the complete segments listed: one EXTINF each)."""
    msn = _header_int(text, "#EXT-X-MEDIA-SEQUENCE:") + text.count("#EXTINF:")
    if "#EXT-X-SKIP:" in text:
        line = text[text.index("#EXT-X-SKIP:"):].split("\n", 1)[0]
        msn += int(_attribute(line, "SKIPPED-SEGMENTS"))
    start = len(text)
    while msn >= have[0]:  # back to the EXTINF of the segment before have's
        start = text.rfind("#EXTINF:", 0, start)
        msn -= 1
        if start < 0:  # have's segment is the first listed (or not listed): read it all
            return [p for p in listed_parts(text)[0] if (p.msn, p.index) > have]
    found: list[ListedPart] = []
    index = 0
    for line in text[start:].split("\n"):
        if line.startswith("#EXT-X-PART:"):
            if (msn, index) > have:
                found.append(ListedPart(msn, index, _attribute(line, "URI"),
                                        float(_attribute(line, "DURATION"))))
            index += 1
        elif line and not line.startswith("#"):
            msn += 1  # a complete segment's URI: the next segment begins
            index = 0
    return found


def _header_int(text: str, tag: str) -> int:
    at = text.find(tag)
    if at < 0:
        return 0  # RFC 8216 4.3.3.2: no EXT-X-MEDIA-SEQUENCE means 0
    return int(text[at + len(tag):text.index("\n", at)].strip())


def first_decode_time(fragment: bytes) -> float:
    """Seconds: the first track's `tfdt` in a CMAF fragment (video, 90 kHz, in Relay's)."""
    at = fragment.find(b"tfdt")
    if at < 0:
        raise ViewerError("a part without a tfdt box")
    if fragment[at + 4] == 1:
        return int.from_bytes(fragment[at + 8:at + 16], "big") / 90_000
    return int.from_bytes(fragment[at + 8:at + 12], "big") / 90_000


#: Bytes of a part kept for its `tfdt` (in the first `traf` of the `moof` that begins it:
#: about 100 bytes in; the rest of the part is counted, not kept).
PART_HEAD_BYTES = 1024
#: Bytes of one socket read into each connection's reused buffer (a 6 Mbit/s part at
#: PART-TARGET 0.3 is about 225 kB: a few reads).
READ_BUFFER_BYTES = 256 * 1024
#: Bytes of a response head at most (Relay's are about 200).
MAX_RESPONSE_HEAD = 8 * 1024
#: Bytes of a kept response body at most (playlists; a part keeps PART_HEAD_BYTES).
MAX_BODY_BYTES = 8 * 1024 * 1024


@dataclass(slots=True)
class Response:
    status: int
    length: int  # the body's Content-Length
    body: bytes  # the whole body, or its first bytes up to the request's `keep`
    gzipped: bool
    received: float  # time.monotonic() when the last byte was read


class ResponseReader:
    """Sans-IO reader of one HTTP/1.1 response framed by Content-Length (Relay's playback
    server frames every response so, RFC 9112 6.3): `feed` it bytes until `done`; it keeps
    the body's first `keep` bytes and counts the rest."""

    __slots__ = ("_body", "_head", "_left", "done", "gzipped", "keep", "length", "status")

    def __init__(self, keep: int = MAX_BODY_BYTES) -> None:
        self.keep = keep
        self.done = False
        self.status = 0
        self.length = -1  # -1: the head is not complete yet
        self.gzipped = False
        self._head = bytearray()
        self._body = bytearray()
        self._left = 0

    def feed(self, data: memoryview) -> int:
        """Reads what `data` holds of this response; returns the bytes it used (the rest
        belongs to whatever follows). Raises ViewerError on a response it cannot frame."""
        used = 0
        if self.length < 0:
            prior = len(self._head)
            room = MAX_RESPONSE_HEAD + 4 - prior  # a head's bytes at most, with its end
            self._head += data[:room]
            end = self._head.find(b"\r\n\r\n", max(0, prior - 3))
            if end < 0:
                if len(data) >= room:
                    raise ViewerError(f"a response head over {MAX_RESPONSE_HEAD} bytes")
                return len(data)
            used = end + 4 - prior
            self._parse_head(bytes(self._head[:end]))
            self._head = bytearray()
        take = min(self._left, len(data) - used)
        room = self.keep - len(self._body)
        if room > 0:
            self._body += data[used:used + min(take, room)]
        self._left -= take
        used += take
        if self._left == 0:
            self.done = True
        return used

    def _parse_head(self, head: bytes) -> None:
        lines = head.lower().split(b"\r\n")
        status = lines[0].split(b" ", 2)
        if len(status) < 2 or not status[0].startswith(b"http/1.") or not status[1].isdigit():
            raise ViewerError(f"not an HTTP/1.1 status line: {lines[0][:80]!r}")
        self.status = int(status[1])
        length = -1
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            if name == b"content-length":
                if not value.strip().isdigit():
                    raise ViewerError(f"a Content-Length that is no number: {value[:40]!r}")
                length = int(value)
            elif name == b"content-encoding":
                self.gzipped = b"gzip" in value
            elif name == b"transfer-encoding":
                raise ViewerError(f"unexpected transfer-encoding {value.strip()[:40]!r}")
        if length < 0:
            raise ViewerError("a response without Content-Length")
        self.length = self._left = length

    def response(self, received: float) -> Response:
        return Response(self.status, self.length, bytes(self._body), self.gzipped, received)


class Connection(asyncio.BufferedProtocol):
    """One keep-alive HTTP/1.1 connection, one request at a time: the socket is read into
    one buffer that every connection shares (the loop hands it to `buffer_updated` right
    after the read, so it is free again before the next connection's read), and a
    `ResponseReader` takes what it needs from there."""

    #: The shared read buffer (created with the first connection).
    _buffer: ClassVar[memoryview | None] = None

    def __init__(self, host: str) -> None:
        self.host = host.encode("ascii")
        self.transport: asyncio.Transport | None = None
        self._reader: ResponseReader | None = None
        self._waiter: asyncio.Future[Response] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._path = ""
        self._lost: Exception | None = None
        if Connection._buffer is None:
            Connection._buffer = memoryview(bytearray(READ_BUFFER_BYTES))

    @classmethod
    async def open(cls, host: str, port: int) -> Connection:
        loop = asyncio.get_running_loop()
        _, connection = await loop.create_connection(lambda: cls(f"{host}:{port}"), host, port)
        return connection

    def fetch(self, path: str, keep: int = MAX_BODY_BYTES,
              timeout: float = REQUEST_TIMEOUT) -> asyncio.Future[Response]:
        """GET `path` (with `Accept-Encoding: gzip`, as hls.js in a browser sends it);
        the response keeps the body's first `keep` bytes. Fails with TimeoutError after
        `timeout` s, and with ConnectionError when the connection is lost."""
        if self._lost is not None:
            raise ConnectionError(f"{path}: the connection is closed ({self._lost})")
        if self._reader is not None or self.transport is None:
            raise RuntimeError("one request at a time on a Connection")
        loop = asyncio.get_running_loop()
        self._path = path
        self._reader = ResponseReader(keep)
        self._waiter = waiter = loop.create_future()
        self._timer = loop.call_later(timeout, self._expire, timeout)
        self.transport.write(b"GET %s HTTP/1.1\r\nHost: %s\r\nAccept-Encoding: gzip\r\n\r\n"
                             % (path.encode("ascii"), self.host))
        return waiter

    async def get(self, path: str) -> bytes:
        """The body of a 200 response to GET `path`, decompressed; ViewerError otherwise."""
        response = await self.fetch(path)
        if response.status != 200:
            raise ViewerError(f"{path}: HTTP {response.status}")
        return zlib.decompress(response.body, 16 + zlib.MAX_WBITS) if response.gzipped \
            else response.body

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    # -- the protocol's side ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TCPTransport is no asyncio.Transport subclass, but has its methods
        self.transport = cast(asyncio.Transport, transport)

    def get_buffer(self, sizehint: int) -> memoryview:
        assert Connection._buffer is not None
        return Connection._buffer

    def buffer_updated(self, nbytes: int) -> None:
        assert Connection._buffer is not None
        reader = self._reader
        if reader is None:
            self._fail(ViewerError(f"{nbytes} bytes received with no request outstanding"))
            return
        try:
            used = reader.feed(Connection._buffer[:nbytes])
        except ViewerError as exc:
            self._fail(ViewerError(f"{self._path}: {exc}"))
            return
        if not reader.done:
            return
        if used != nbytes:  # one request at a time: nothing may follow its response
            self._fail(ViewerError(f"{self._path}: {nbytes - used} bytes after the response"))
            return
        received = time.monotonic()
        self._reader = None
        if self._timer is not None:
            self._timer.cancel()
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(reader.response(received))

    def eof_received(self) -> bool:
        return False  # close: a keep-alive server closes only an idle connection

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = exc or ConnectionError("closed by the server")
        self._fail(ConnectionError(f"{self._path}: connection lost ({self._lost})"))

    def _expire(self, timeout: float) -> None:
        self._fail(TimeoutError(f"{self._path}: no response within {timeout:g} s"))

    def _fail(self, exc: Exception) -> None:
        self._reader = None
        if self._timer is not None:
            self._timer.cancel()
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(exc)
        if self.transport is not None:
            self.transport.abort()


async def viewer(connection: Connection, playback_id: str, stats: ViewerStats,
                 stop: asyncio.Event, measure_from: float, began: float) -> None:
    playlist = f"/{playback_id}/rendition.m3u8"
    parts, stats.part_target = listed_parts((await connection.get(playlist)).decode("ascii"))
    if not parts:
        raise ViewerError("the playlist lists no parts (is the stream latency_mode low?)")
    have = (parts[-1].msn, parts[-1].index)
    prefix = f"/{playback_id}/"
    while not stop.is_set():
        text = await connection.get(f"{playlist}?_HLS_msn={have[0]}&_HLS_part={have[1] + 1}")
        stats.requests += 1
        for part in new_parts(text.decode("ascii"), have):
            response = await connection.fetch(prefix + part.uri, keep=PART_HEAD_BYTES)
            if response.status != 200:
                raise ViewerError(f"{prefix}{part.uri}: HTTP {response.status}")
            if response.gzipped:
                raise ViewerError(f"{prefix}{part.uri}: a part sent with gzip")
            stats.requests += 1
            stats.bytes_in += response.length
            if response.received >= measure_from and not stop.is_set():
                due = began + first_decode_time(response.body) + part.duration
                stats.delays.append(response.received - due)
            have = (part.msn, part.index)


class _Publisher(Publisher):
    """The load generator's publisher, also on uvloop (whose TCPTransport is no
    asyncio.Transport subclass, which `Publisher.connection_made` asserts)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.local_port = transport.get_extra_info("sockname")[1]
        self.transport.write(self.session.initial_bytes())


class Feed:
    """The paced publisher: the clip, looped, in real time on one RTMP connection."""

    def __init__(self, tags: list[Tag]) -> None:
        self.tags = tags
        self.began = 0.0  # time.monotonic() at media time 0
        self.publisher: Publisher | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self, host: str, port: int, stream_key: str) -> None:
        session = ClientSession(tc_url=f"rtmp://{host}:{port}/app", stream_key=stream_key,
                                chunk_size=CHUNK_SIZE)
        loop = asyncio.get_running_loop()
        _, self.publisher = await loop.create_connection(lambda: _Publisher(session), host, port)
        await asyncio.wait_for(self.publisher.published, 30)
        self._task = asyncio.create_task(self._pace(MediaClock(self.tags, session.stream_id)))

    async def _pace(self, media: MediaClock) -> None:
        assert self.publisher is not None and self.publisher.transport is not None
        self.began = next_tick = time.monotonic()
        while not self.publisher.closed:
            self.publisher.transport.write(media.due((time.monotonic() - self.began) * 1000))
            next_tick += TICK
            await asyncio.sleep(max(0.0, next_tick - time.monotonic()))
        raise ViewerError("the server closed the publisher's connection")

    def check(self) -> None:
        if self._task is not None and self._task.done():
            self._task.result()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, ViewerError):
                await self._task
        if self.publisher is not None and self.publisher.transport is not None:
            self.publisher.transport.abort()


#: Seconds the first segment may take to appear.
PLAYLIST_WAIT = 30.0


async def wait_playlist(host: str, port: int, playback_id: str) -> None:
    """Until the media playlist lists a part (the first segment is complete)."""
    deadline = time.monotonic() + PLAYLIST_WAIT
    while time.monotonic() < deadline:
        connection = await Connection.open(host, port)
        try:
            parts, _ = listed_parts(
                (await connection.get(f"/{playback_id}/rendition.m3u8")).decode("ascii"))
            if parts:
                return
        except ViewerError:
            pass
        finally:
            connection.close()
        await asyncio.sleep(0.2)
    raise ViewerError(f"no playlist with parts for {playback_id} within {PLAYLIST_WAIT:g} s")


async def measure(rtmp: tuple[str, int], stream_key: str, base_url: str, playback_id: str,
                  tags: list[Tag], steps: tuple[int, ...], *, warmup: float, seconds: float,
                  report: Callable[[ViewerReport], None] = lambda _: None,
                  ) -> list[ViewerReport]:
    """Publish `tags` to `stream_key` and run the viewer steps until one is late."""
    feed = Feed(tags)
    await feed.start(*rtmp, stream_key)
    reports: list[ViewerReport] = []
    try:
        address = urlsplit(base_url)
        await wait_playlist(address.hostname or "127.0.0.1", address.port or 80, playback_id)
        for count in steps:
            result = await run(base_url, playback_id, count, feed.began, warmup=warmup,
                               seconds=seconds)
            feed.check()
            reports.append(result)
            report(result)
            if not result.on_time:
                break
    finally:
        await feed.stop()
    return reports


async def run(base_url: str, playback_id: str, count: int, began: float, *, warmup: float,
              seconds: float) -> ViewerReport:
    """`count` viewers of `playback_id` for `warmup` + `seconds`; delays from the window.
    `began` is the publisher's time.monotonic() at media time 0."""
    address = urlsplit(base_url)
    host, port = address.hostname or "127.0.0.1", address.port or 80
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)

    async def connect() -> Connection:
        async with gate:
            return await Connection.open(host, port)

    connections = await asyncio.gather(*(connect() for _ in range(count)))
    stats = ViewerStats()
    stop = asyncio.Event()
    measure_from = time.monotonic() + warmup

    async def watch(connection: Connection) -> None:
        try:
            await viewer(connection, playback_id, stats, stop, measure_from, began)
        except (ViewerError, OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                TimeoutError, ValueError) as exc:
            if not stop.is_set():
                stats.errors += 1
                stats.first_error = stats.first_error or f"{type(exc).__name__}: {exc}"

    tasks = [asyncio.create_task(watch(c)) for c in connections]
    await asyncio.sleep(warmup)
    cpu, window_began = time.process_time(), time.monotonic()
    requests, received = stats.requests, stats.bytes_in
    await asyncio.sleep(seconds)
    elapsed = time.monotonic() - window_began
    client_cpu = (time.process_time() - cpu) / elapsed
    requests, received = stats.requests - requests, stats.bytes_in - received
    stop.set()
    for task in tasks:
        task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.gather(*tasks, return_exceptions=True)
    for connection in connections:
        connection.close()
    delays = sorted(stats.delays)

    def ms(value: float) -> float:
        return round(value * 1000, 1)

    return ViewerReport(
        viewers=count, seconds=round(elapsed, 1), parts=len(delays),
        p50_ms=ms(statistics.median(delays)) if delays else None,
        p99_ms=ms(delays[min(len(delays) - 1, int(len(delays) * 0.99))]) if delays else None,
        max_ms=ms(delays[-1]) if delays else None,
        part_target_ms=ms(stats.part_target), requests_per_s=round(requests / elapsed, 1),
        mbit_per_s=round(received * 8 / elapsed / 1e6, 1), errors=stats.errors,
        first_error=stats.first_error, client_cpu=round(client_cpu, 2))


_T = TypeVar("_T")


def run_loop(main: Coroutine[Any, Any, _T]) -> _T:
    """`asyncio.run(main)` on uvloop, the loop Relay runs on (cheaper per read and callback
    than asyncio's own, which the simulator's 7 requests per viewer-second notice)."""
    try:
        import uvloop
    except ImportError:  # uvloop is Relay's dependency: only a bare checkout lacks it
        return asyncio.run(main)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("rtmp_url", help="rtmp://HOST:PORT/app/STREAM_KEY of a low stream")
    parser.add_argument("base_url", help="Relay's HTTP address, e.g. http://127.0.0.1:8080")
    parser.add_argument("playback_id", help="the stream's playback id")
    parser.add_argument("flv", type=Path, help="the clip to publish (H.264 first, looped)")
    parser.add_argument("--viewers", default="25,50,100", help="steps, comma-separated")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    address, key = args.rtmp_url.removeprefix("rtmp://").rsplit("/", 1)
    host, port = address.split("/")[0].rsplit(":", 1)
    run_loop(measure((host, int(port)), key, args.base_url, args.playback_id,
                        read_flv(args.flv), tuple(int(n) for n in args.viewers.split(",")),
                        warmup=args.warmup, seconds=args.seconds,
                        report=lambda r: print(r, "on time" if r.on_time else "late")))


if __name__ == "__main__":
    main()
