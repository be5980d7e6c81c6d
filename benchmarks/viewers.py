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
is reported, so that a run limited by this process rather than the server shows as such,
with the time it waited for its core (other processes) and the publisher's latest tick (a
tick that runs late makes every part late, whoever delayed it).

Cost: the simulator has to stay cheap beside the server it measures (1,000 viewers make
about 7,000 requests and receive about 750 MB a second). So it runs on uvloop; each
connection is a non-blocking socket the loop watches, and a sans-IO `ResponseReader`
frames responses by Content-Length (as Relay's playback server sends every one). A read
copies only what is kept, into one buffer all connections share: a response's head, a
playlist, and a part's first PART_HEAD_BYTES (its `tfdt`); the rest of a part is taken
off the socket with MSG_TRUNC (Linux), so the server sends and this host's TCP receives
and acknowledges every byte, without the copy into this process. A reload is parsed only
from the segment of the viewer's newest part on (`new_parts`). Playlists still come with
gzip, as browsers ask for it on hls.js's behalf: Relay encodes each playlist revision once
for all viewers either way, and the inflate costs about 5 us a reload here.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import statistics
import sys
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
#: Viewers that connect from one source address (see `viewer_address`).
VIEWERS_PER_ADDRESS = 100
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
    #: The delays of segments' first parts (those with the keyframe: the largest), also in
    #: `delays`.
    first_part_delays: list[float] = field(default_factory=list)
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
    p99_first_part_ms: float | None  # segments' first parts only (the keyframe's: the largest)
    max_ms: float | None
    part_target_ms: float
    requests_per_s: float
    mbit_per_s: float  # part bytes received, all viewers
    errors: int
    first_error: str
    client_cpu: float  # this process's CPU-seconds per second (1.0 = one core)
    feed_late_max_ms: float | None  # the publisher's latest tick in the window (None: no feed)
    #: Seconds per second the viewers' process was ready to run but waited for a CPU (the
    #: kernel's schedstat run_delay; None where there is none): other processes on its core
    #: (the publisher's process among them: a tick it waits for shows in feed_late_max_ms).
    client_wait: float | None

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
#: Bytes of one socket read at most (a 6 Mbit/s part at PART-TARGET 0.3 is about 225 kB:
#: a few reads), into (or, discarding, naming) the buffer every connection shares.
READ_BUFFER_BYTES = 256 * 1024
#: Bytes a read copies while a response's head is incomplete (Relay's heads are about 200
#: bytes: one read takes a head and a playlist's or a part's kept bytes).
HEAD_READ_BYTES = 4096
#: Read a part's bytes past PART_HEAD_BYTES with MSG_TRUNC (Linux TCP: received, not copied).
DISCARD = sys.platform == "linux"
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

    def wanted(self) -> int:
        """Bytes the next read should copy at most: some of the head, or what is left of
        the kept body; 0 when the rest of the body (`left`) is only to be counted."""
        if self.length < 0:
            return HEAD_READ_BYTES
        return max(0, min(self._left, self.keep - len(self._body)))

    @property
    def left(self) -> int:
        """Body bytes not received yet (once the head is read)."""
        return self._left

    def skip(self, count: int) -> None:
        """`count` bytes of the body past the kept ones were received and not copied."""
        if self.length < 0 or not 0 < count <= self._left:
            raise ViewerError(f"{count} bytes skipped with {self._left} left of the body")
        self._left -= count
        if self._left == 0:
            self.done = True

    def response(self, received: float) -> Response:
        return Response(self.status, self.length, bytes(self._body), self.gzipped, received)


class Connection:
    """One keep-alive HTTP/1.1 connection, one request at a time, on a non-blocking socket
    that the loop watches (`add_reader`). Reads copy only what the `ResponseReader` keeps
    (the head, a playlist, a part's first bytes) into one buffer that every connection
    shares (a read is done and handed over within the callback); the rest of a part is
    received with MSG_TRUNC, which on Linux TCP takes the bytes off the socket without
    copying them to user space (tcp(7)): the server sends, and the client's kernel receives
    and acknowledges, every byte as before, at none of the copy's cost to this process."""

    #: The shared buffer reads copy into, and the one that MSG_TRUNC reads name (unwritten).
    _buffer: ClassVar[memoryview | None] = None

    def __init__(self, sock: socket.socket, host: str) -> None:
        self.sock = sock
        self.host = host.encode("ascii")
        self._loop = asyncio.get_running_loop()
        self._reader: ResponseReader | None = None
        self._waiter: asyncio.Future[Response] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._path = ""
        self._lost: Exception | None = None  # why the connection ended
        self._closed = False
        if Connection._buffer is None:
            Connection._buffer = memoryview(bytearray(READ_BUFFER_BYTES))
        self._loop.add_reader(sock.fileno(), self._readable)

    @classmethod
    async def open(cls, host: str, port: int, source: str | None = None) -> Connection:
        """A connection to `host`:`port` (IPv4), from the address `source` if given."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if source is not None:
                sock.bind((source, 0))
            await asyncio.get_running_loop().sock_connect(sock, (host, port))
        except BaseException:
            sock.close()
            raise
        return cls(sock, f"{host}:{port}")

    def fetch(self, path: str, keep: int = MAX_BODY_BYTES,
              timeout: float = REQUEST_TIMEOUT) -> asyncio.Future[Response]:
        """GET `path` (with `Accept-Encoding: gzip`, as hls.js in a browser sends it);
        the response keeps the body's first `keep` bytes. Fails with TimeoutError after
        `timeout` s, and with ConnectionError when the connection is lost."""
        if self._lost is not None:
            raise ConnectionError(f"{path}: the connection is closed ({self._lost})")
        if self._reader is not None:
            raise RuntimeError("one request at a time on a Connection")
        request = b"GET %s HTTP/1.1\r\nHost: %s\r\nAccept-Encoding: gzip\r\n\r\n" % (
            path.encode("ascii"), self.host)
        self._path = path
        self._reader = ResponseReader(keep)
        self._waiter = waiter = self._loop.create_future()
        self._timer = self._loop.call_later(timeout, self._expire, timeout)
        try:
            # One request at a time, so the socket's send buffer is empty: it takes all.
            sent = self.sock.send(request)
        except OSError as exc:
            self._fail(ConnectionError(f"{path}: {exc}"))
            return waiter
        if sent != len(request):
            self._fail(ConnectionError(f"{path}: the socket took {sent} of {len(request)} bytes"))
        return waiter

    async def get(self, path: str) -> bytes:
        """The body of a 200 response to GET `path`, decompressed; ViewerError otherwise."""
        response = await self.fetch(path)
        if response.status != 200:
            raise ViewerError(f"{path}: HTTP {response.status}")
        return zlib.decompress(response.body, 16 + zlib.MAX_WBITS) if response.gzipped \
            else response.body

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._loop.remove_reader(self.sock.fileno())
            self.sock.close()
        self._lost = self._lost or ConnectionError("closed by this client")
        self._fail(ConnectionError(f"{self._path}: the connection was closed"))

    def _end(self, exc: Exception) -> None:
        """The request in flight fails with `exc`, and the connection ends (for `exc`)."""
        self._fail(exc)
        self._lost = self._lost or exc
        self.close()

    def _readable(self) -> None:
        buffer = Connection._buffer
        assert buffer is not None
        reader = self._reader
        try:
            if reader is None:
                count = self.sock.recv_into(buffer, len(buffer))
                if count:
                    raise ViewerError(f"{count} bytes received with no request outstanding")
            elif (wanted := reader.wanted()) or not DISCARD:
                count = self.sock.recv_into(buffer, wanted or len(buffer))
                if count and reader.feed(buffer[:count]) != count:
                    # one request at a time: nothing may follow its response
                    raise ViewerError(f"{count} bytes and more than the response")
            else:
                count = self.sock.recv_into(buffer, min(reader.left, len(buffer)),
                                            socket.MSG_TRUNC)
                if count:
                    reader.skip(count)
        except (BlockingIOError, InterruptedError):
            return
        except (OSError, ViewerError) as exc:
            self._end(exc if isinstance(exc, ViewerError)
                      else ConnectionError(f"{self._path}: {exc}"))
            return
        if count == 0:
            self._end(ConnectionError(f"{self._path}: the server closed the connection"))
        elif reader is not None and reader.done:
            received = time.monotonic()
            self._reader = None
            if self._timer is not None:
                self._timer.cancel()
            if self._waiter is not None and not self._waiter.done():
                self._waiter.set_result(reader.response(received))

    def _expire(self, timeout: float) -> None:
        self._end(TimeoutError(f"{self._path}: no response within {timeout:g} s"))

    def _fail(self, exc: Exception) -> None:
        self._reader = None
        if self._timer is not None:
            self._timer.cancel()
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(exc)


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
                if part.index == 0:
                    stats.first_part_delays.append(response.received - due)
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
        #: Seconds: the latest a tick has run behind its time (since it was last set to 0):
        #: media that leaves late is late for every viewer, whoever made it late.
        self.late_max = 0.0
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
            now = time.monotonic()
            self.late_max = max(self.late_max, now - next_tick)
            self.publisher.transport.write(media.due((now - self.began) * 1000))
            next_tick += TICK
            await asyncio.sleep(max(0.0, next_tick - time.monotonic()))
        raise ViewerError("the server closed the publisher's connection")

    def check(self) -> None:
        if self._task is not None and self._task.done():
            self._task.result()

    async def sample(self) -> FeedSample:
        """The latest tick since the last sample (then forgotten); CPU is this process's."""
        late, self.late_max = self.late_max, 0.0
        return FeedSample(late, 0.0)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, ViewerError):
                await self._task
        if self.publisher is not None and self.publisher.transport is not None:
            self.publisher.transport.abort()


@dataclass(frozen=True, slots=True)
class FeedSample:
    late_max: float  # seconds: the publisher's latest tick since the previous sample
    cpu: float  # the publisher process's CPU-seconds so far (0: it is this process)


#: The checkout this module is in (the publisher's process imports it from there).
_CHECKOUT = Path(__file__).resolve().parents[1]
#: Seconds the publisher's process may take to publish, and to answer or stop.
FEED_PROCESS_WAIT = 30.0


class FeedProcess:
    """The paced publisher (`Feed`) in a process of its own on the same core, so that its
    ticks do not wait behind the viewers' callbacks (a part's media leaving late would be
    late for every viewer, and counted against the server): the kernel wakes a sleeping
    process as its timer fires. Asked over a pipe, it tells its latest tick and its CPU,
    which the report adds to this process's (its wait for the core shows in its ticks)."""

    def __init__(self, clip: Path) -> None:
        self.clip = clip
        self.began = 0.0
        self._process: asyncio.subprocess.Process | None = None

    async def start(self, host: str, port: int, stream_key: str) -> None:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            filter(None, [str(_CHECKOUT), os.environ.get("PYTHONPATH")]))}
        self._process = await asyncio.create_subprocess_exec(
            sys.executable, "-c", "from benchmarks.viewers import publisher_main; "
            "publisher_main()", host, str(port), stream_key, str(self.clip),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, env=env)
        words = await self._answer()
        if words[:1] != ["began"]:
            raise ViewerError(f"the publisher's process said {' '.join(words)[:200]!r}")
        self.began = float(words[1])

    async def _answer(self) -> list[str]:
        assert self._process is not None and self._process.stdout is not None
        line = await asyncio.wait_for(self._process.stdout.readline(), FEED_PROCESS_WAIT)
        if not line:
            raise ViewerError(f"the publisher's process ended ({await self._process.wait()}; "
                              "its error is above)")
        return line.decode("ascii", "replace").split()

    def check(self) -> None:
        if self._process is not None and self._process.returncode is not None:
            raise ViewerError(f"the publisher's process ended ({self._process.returncode})")

    async def sample(self) -> FeedSample:
        assert self._process is not None and self._process.stdin is not None
        self._process.stdin.write(b"sample\n")
        words = await self._answer()
        if len(words) != 2:
            raise ViewerError(f"the publisher's process said {' '.join(words)[:200]!r}")
        return FeedSample(*map(float, words))

    async def stop(self) -> None:
        if self._process is None or self._process.returncode is not None:
            return
        assert self._process.stdin is not None
        self._process.stdin.close()  # its end: it stops publishing and exits
        try:
            await asyncio.wait_for(self._process.wait(), FEED_PROCESS_WAIT)
        except TimeoutError:
            self._process.kill()
            await self._process.wait()


def publisher_main() -> None:
    """The publisher's process (`FeedProcess`): argv HOST PORT STREAM_KEY CLIP. Prints
    "began T" (time.monotonic() at media time 0) once publishing, then for each line on
    stdin "LATE_MAX CPU" (see FeedSample); stops when stdin closes."""
    host, port, key, clip = sys.argv[1:5]

    async def publish() -> None:
        feed = Feed(read_flv(Path(clip)))
        await feed.start(host, int(port), key)
        await asyncio.sleep(0)  # the pacing task's first tick sets `began`
        assert feed.began, "the publisher has not ticked"
        print("began", repr(feed.began), flush=True)
        loop = asyncio.get_running_loop()
        commands = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(commands), sys.stdin)
        try:
            while await commands.readline():
                feed.check()
                late, feed.late_max = feed.late_max, 0.0
                print(repr(late), repr(time.process_time()), flush=True)
        finally:
            await feed.stop()

    run_loop(publish())


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
                  clip: Path, steps: tuple[int, ...], *, warmup: float, seconds: float,
                  report: Callable[[ViewerReport], None] = lambda _: None,
                  publisher_process: bool = True) -> list[ViewerReport]:
    """Publish `clip` to `stream_key` (from a process of its own, or from this one) and run
    the viewer steps until one is late."""
    feed: Feed | FeedProcess = FeedProcess(clip) if publisher_process else Feed(read_flv(clip))
    await feed.start(*rtmp, stream_key)
    reports: list[ViewerReport] = []
    try:
        address = urlsplit(base_url)
        await wait_playlist(address.hostname or "127.0.0.1", address.port or 80, playback_id)
        for count in steps:
            result = await run(base_url, playback_id, count, feed.began, warmup=warmup,
                               seconds=seconds, feed=feed)
            feed.check()
            reports.append(result)
            report(result)
            if not result.on_time:
                break
    finally:
        await feed.stop()
    return reports


def viewer_address(host: str, number: int) -> str | None:
    """The source address of viewer `number` (from 0): viewers of a server on 127.0.0.0/8
    come from VIEWERS_PER_ADDRESS-sized groups of that network's addresses, as viewers
    come from many addresses (Relay allows 1,000 connections per address by default:
    `--http-max-connections-per-ip`); None (the system's choice) for any other server."""
    if not host.startswith("127."):
        return None
    group = number // VIEWERS_PER_ADDRESS
    return f"127.0.{1 + group // 250}.{1 + group % 250}"


async def run(base_url: str, playback_id: str, count: int, began: float, *, warmup: float,
              seconds: float, feed: Feed | FeedProcess | None = None) -> ViewerReport:
    """`count` viewers of `playback_id` for `warmup` + `seconds`; delays from the window.
    `began` is the publisher's time.monotonic() at media time 0; `feed`, when given, is the
    publisher, whose worst tick over the window is reported (and its CPU counted with this
    process's when it runs apart)."""
    address = urlsplit(base_url)
    host, port = address.hostname or "127.0.0.1", address.port or 80
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)

    async def connect(number: int) -> Connection:
        async with gate:
            return await Connection.open(host, port, viewer_address(host, number))

    connections = await asyncio.gather(*(connect(n) for n in range(count)))
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
    first = await feed.sample() if feed is not None else FeedSample(0.0, 0.0)
    cpu, window_began, waited = time.process_time(), time.monotonic(), run_delay()
    requests, received = stats.requests, stats.bytes_in
    await asyncio.sleep(seconds)
    last = await feed.sample() if feed is not None else FeedSample(0.0, 0.0)
    elapsed = time.monotonic() - window_began
    client_cpu = (time.process_time() - cpu + last.cpu - first.cpu) / elapsed
    waited_now = run_delay()
    client_wait = (None if waited is None or waited_now is None
                   else round((waited_now - waited) / elapsed, 3))
    requests, received = stats.requests - requests, stats.bytes_in - received
    stop.set()
    for task in tasks:
        task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.gather(*tasks, return_exceptions=True)
    for connection in connections:
        connection.close()
    delays = sorted(stats.delays)
    first_parts = sorted(stats.first_part_delays)

    def ms(value: float) -> float:
        return round(value * 1000, 1)

    return ViewerReport(
        viewers=count, seconds=round(elapsed, 1), parts=len(delays),
        p50_ms=ms(statistics.median(delays)) if delays else None,
        p99_ms=ms(delays[min(len(delays) - 1, int(len(delays) * 0.99))]) if delays else None,
        p99_first_part_ms=(ms(first_parts[min(len(first_parts) - 1, int(len(first_parts) * 0.99))])
                           if first_parts else None),
        max_ms=ms(delays[-1]) if delays else None,
        part_target_ms=ms(stats.part_target), requests_per_s=round(requests / elapsed, 1),
        mbit_per_s=round(received * 8 / elapsed / 1e6, 1), errors=stats.errors,
        first_error=stats.first_error, client_cpu=round(client_cpu, 2),
        feed_late_max_ms=ms(last.late_max) if feed is not None else None,
        client_wait=client_wait)


def run_delay() -> float | None:
    """Seconds this process has waited on a run queue (Linux /proc/self/schedstat)."""
    try:
        return int(Path("/proc/self/schedstat").read_text().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return None


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
    parser.add_argument("--publisher-in-process", action="store_true",
                        help="publish from the viewers' process (default: a process apart)")
    args = parser.parse_args()
    address, key = args.rtmp_url.removeprefix("rtmp://").rsplit("/", 1)
    host, port = address.split("/")[0].rsplit(":", 1)
    run_loop(measure((host, int(port)), key, args.base_url, args.playback_id,
                     args.flv, tuple(int(n) for n in args.viewers.split(",")),
                     warmup=args.warmup, seconds=args.seconds,
                     report=lambda r: print(r, "on time" if r.on_time else "late"),
                     publisher_process=not args.publisher_in_process))


if __name__ == "__main__":
    main()
