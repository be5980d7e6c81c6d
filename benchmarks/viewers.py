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
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
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


def first_decode_time(fragment: bytes) -> float:
    """Seconds: the first track's `tfdt` in a CMAF fragment (video, 90 kHz, in Relay's)."""
    at = fragment.find(b"tfdt")
    if at < 0:
        raise ViewerError("a part without a tfdt box")
    if fragment[at + 4] == 1:
        return int.from_bytes(fragment[at + 8:at + 16], "big") / 90_000
    return int.from_bytes(fragment[at + 8:at + 12], "big") / 90_000


class Connection:
    """One keep-alive HTTP/1.1 connection, one request at a time."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 host: str) -> None:
        self.reader = reader
        self.writer = writer
        self.host = host

    @classmethod
    async def open(cls, host: str, port: int) -> Connection:
        reader, writer = await asyncio.open_connection(host, port)
        return cls(reader, writer, f"{host}:{port}")

    async def get(self, path: str) -> bytes:
        self.writer.write(f"GET {path} HTTP/1.1\r\nHost: {self.host}\r\n"
                          "Accept-Encoding: gzip\r\n\r\n".encode("ascii"))
        head = (await self.reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        status = int(head[0].split(" ", 2)[1])
        length = 0
        gzipped = False
        for line in head[1:]:
            name, _, value = line.partition(":")
            name = name.strip().lower()
            if name == "content-length":
                length = int(value)
            elif name == "content-encoding":
                gzipped = "gzip" in value
            elif name == "transfer-encoding":
                raise ViewerError(f"{path}: unexpected transfer-encoding {value.strip()}")
        body = await self.reader.readexactly(length)
        if status != 200:
            raise ViewerError(f"{path}: HTTP {status}")
        return zlib.decompress(body, 16 + zlib.MAX_WBITS) if gzipped else body

    def close(self) -> None:
        self.writer.close()


async def viewer(connection: Connection, playback_id: str, stats: ViewerStats,
                 stop: asyncio.Event, measure_from: float, began: float) -> None:
    playlist = f"/{playback_id}/rendition.m3u8"
    parts, stats.part_target = listed_parts((await connection.get(playlist)).decode("ascii"))
    if not parts:
        raise ViewerError("the playlist lists no parts (is the stream latency_mode low?)")
    have = (parts[-1].msn, parts[-1].index)
    while not stop.is_set():
        text = await asyncio.wait_for(connection.get(
            f"{playlist}?_HLS_msn={have[0]}&_HLS_part={have[1] + 1}"), REQUEST_TIMEOUT)
        stats.requests += 1
        for part in listed_parts(text.decode("ascii"))[0]:
            if (part.msn, part.index) <= have:
                continue
            data = await asyncio.wait_for(connection.get(f"/{playback_id}/{part.uri}"),
                                          REQUEST_TIMEOUT)
            received = time.monotonic()
            stats.requests += 1
            stats.bytes_in += len(data)
            if received >= measure_from and not stop.is_set():
                due = began + first_decode_time(data) + part.duration
                stats.delays.append(received - due)
            have = (part.msn, part.index)


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
        _, self.publisher = await loop.create_connection(lambda: Publisher(session), host, port)
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
    asyncio.run(measure((host, int(port)), key, args.base_url, args.playback_id,
                        read_flv(args.flv), tuple(int(n) for n in args.viewers.split(",")),
                        warmup=args.warmup, seconds=args.seconds,
                        report=lambda r: print(r, "on time" if r.on_time else "late")))


if __name__ == "__main__":
    main()
