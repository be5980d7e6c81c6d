"""A paced RTMP load generator: many publishers from one process, each real-time.

Theory of operation: every connection does the handshake and connect -> createStream ->
publish with Relay's sans-IO client (`relay.rtmp.client`), one after another, so that the
server sees a realistic ramp. Then all of them start their media at the same instant and
stay in phase: the FLV tags of one clip (looped, timestamps continued) are chunk-muxed ONCE,
and each tick (TICK seconds) the bytes that fell due are written to every connection. So the
generator's cost is one `transport.write` per connection per tick, whatever the bit rate,
and one process drives thousands of publishers from one core.

Real time is judged on both sides of each socket: the server's unread bytes (its receive
queue, from /proc/net/tcp) plus what the generator could not hand to the kernel yet (the
transport's write buffer). A connection whose backlog exceeds LAG_LIMIT seconds of its media
is behind: the server does not keep up with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from relay._native.rtmp_chunk import ChunkMuxer
from relay.rtmp.client import AUDIO_CSID, VIDEO_CSID, ClientSession, ClientState, Refused
from relay.rtmp.messages import MessageType

#: How often due media is written to every connection.
TICK = 0.05
#: Chunk size the publishers announce (ffmpeg's choice).
CHUNK_SIZE = 4096
#: A connection more than this many seconds of media behind is not real-time.
LAG_LIMIT = 2.0
#: Connections opened at once while ramping up.
CONNECT_CONCURRENCY = 50


@dataclass(frozen=True, slots=True)
class Tag:
    type_id: int
    timestamp: int  # ms
    payload: bytes

    @property
    def keyframe(self) -> bool:
        return self.type_id == MessageType.VIDEO and self.payload[0] >> 4 == 1


def read_flv(path: Path) -> list[Tag]:
    """The audio and video tags of an FLV file."""
    data = path.read_bytes()
    if data[:3] != b"FLV":
        raise ValueError(f"{path} is not an FLV file")
    pos = int.from_bytes(data[5:9], "big") + 4
    tags = []
    while pos + 11 <= len(data):
        type_id = data[pos] & 0x1F
        size = int.from_bytes(data[pos + 1:pos + 4], "big")
        timestamp = int.from_bytes(data[pos + 4:pos + 7], "big") | data[pos + 7] << 24
        payload = data[pos + 11:pos + 11 + size]
        pos += 11 + size + 4
        if type_id in (MessageType.AUDIO, MessageType.VIDEO) and payload:
            tags.append(Tag(type_id, timestamp, payload))
    return tags


class MediaClock:
    """The chunk-muxed media of the looped clip, in due order, muxed once for everyone."""

    def __init__(self, tags: list[Tag], stream_id: int) -> None:
        self._tags = tags
        self._stream_id = stream_id
        self._length = tags[-1].timestamp + 40
        self._muxer = ChunkMuxer(CHUNK_SIZE)
        self._loop = 0
        self._index = 0
        self.bytes_per_second = sum(len(t.payload) for t in tags) / (self._length / 1000)

    def due(self, until_ms: float) -> bytes:
        """The bytes of every message due up to `until_ms` media time, not sent yet."""
        while True:
            tag = self._tags[self._index]
            timestamp = tag.timestamp + self._loop * self._length
            if timestamp > until_ms:
                break
            header = tag.payload[1:2] == b"\x00"  # AVC / AAC sequence header
            if self._loop == 0 or not header:
                csid = VIDEO_CSID if tag.type_id == MessageType.VIDEO else AUDIO_CSID
                self._muxer.write_message(csid, tag.type_id, self._stream_id,
                                          timestamp & 0xFFFFFFFF, tag.payload)
            self._index += 1
            if self._index == len(self._tags):
                self._index = 0
                self._loop += 1
        return self._muxer.take()


class Publisher(asyncio.Protocol):
    def __init__(self, session: ClientSession) -> None:
        self.session = session
        self.transport: asyncio.Transport | None = None
        self.published: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.closed = False
        self.local_port = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.local_port = transport.get_extra_info("sockname")[1]
        transport.write(self.session.initial_bytes())

    def data_received(self, data: bytes) -> None:
        self.session.receive_data(data)  # commands, then acknowledgements and pings
        if not self.published.done():
            event = self.session.next_event()
            if isinstance(event, Refused):
                self.published.set_exception(RuntimeError(f"publish refused: {event}"))
            elif self.session.state is ClientState.PUBLISHING:
                self.published.set_result(None)
        out = self.session.data_to_send()
        if out and self.transport is not None:
            self.transport.write(out)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.published.done():
            self.published.set_exception(ConnectionError(f"connection lost: {exc}"))


@dataclass(slots=True)
class Report:
    connections: int
    published: int
    seconds: float
    behind: int  # connections more than LAG_LIMIT s of media behind at the end
    closed: int  # connections the server closed
    worst_lag_s: float
    late_ticks: int  # ticks the generator itself ran late (> TICK): its own limit
    sent_mbps: float  # per connection
    output_problem: str = ""


def server_backlogs(server_port: int) -> dict[int, int]:
    """Unread bytes per client port on the server's side of each connection."""
    backlog: dict[int, int] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                local_port = int(fields[1].rsplit(":", 1)[1], 16)
                remote_port = int(fields[2].rsplit(":", 1)[1], 16)
                if local_port == server_port:
                    rx_queue = int(fields[4].split(":")[1], 16)
                    backlog[remote_port] = rx_queue
    return backlog


async def run(host: str, port: int, stream_keys: list[str], tags: list[Tag],
              seconds: float, check: Callable[[], str] | None = None,
              media_phase: Callable[[bool], None] | None = None) -> Report:
    """Publish the clip to every key for `seconds`, paced in real time, and report.

    `check`, run (in a thread) while the publishers are still connected, looks at what the
    server made of them and returns "" or a problem, reported as `output_problem`.
    `media_phase` is called with True when every publisher is up and the media starts, and
    with False when the last tick is written: a caller measures the steady state between."""
    loop = asyncio.get_running_loop()
    publishers: list[Publisher] = []
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)

    async def connect(key: str) -> Publisher:
        async with gate:
            session = ClientSession(tc_url=f"rtmp://{host}:{port}/app", stream_key=key,
                                    chunk_size=CHUNK_SIZE)
            _, protocol = await loop.create_connection(lambda: Publisher(session), host, port)
            await asyncio.wait_for(protocol.published, 30)
            return protocol

    publishers = list(await asyncio.gather(*(connect(key) for key in stream_keys)))
    stream_ids = {p.session.stream_id for p in publishers}
    if len(stream_ids) != 1:
        raise RuntimeError(f"publishers got different stream ids {stream_ids}; the shared "
                           "media needs one")
    media = MediaClock(tags, stream_ids.pop())
    if media_phase is not None:
        media_phase(True)
    began = loop.time()
    late = 0
    sent = 0
    deadline = began + seconds
    next_tick = began
    while True:
        now = loop.time()
        if now - next_tick > TICK:
            late += 1
        blob = media.due((now - began) * 1000)
        if blob:
            for publisher in publishers:
                if not publisher.closed and publisher.transport is not None:
                    publisher.transport.write(blob)
            sent += len(blob)
        if now >= deadline:
            break
        next_tick += TICK
        await asyncio.sleep(max(0.0, next_tick - loop.time()))
    elapsed = loop.time() - began
    if media_phase is not None:
        media_phase(False)
    await asyncio.sleep(0.5)  # let the server drain what is in flight
    backlogs = server_backlogs(port)
    limit = LAG_LIMIT * media.bytes_per_second
    worst = 0.0
    behind = 0
    for publisher in publishers:
        assert publisher.transport is not None
        pending = publisher.transport.get_write_buffer_size() + backlogs.get(
            publisher.local_port, 0)
        worst = max(worst, pending / media.bytes_per_second)
        if pending > limit:
            behind += 1
    closed = sum(p.closed for p in publishers)
    problem = await loop.run_in_executor(None, check) if check is not None else ""
    for publisher in publishers:
        if publisher.transport is not None:
            publisher.transport.abort()
    return Report(connections=len(stream_keys), published=len(publishers),
                  seconds=round(elapsed, 1), behind=behind, closed=closed,
                  worst_lag_s=round(worst, 2), late_ticks=late,
                  sent_mbps=round(sent * 8 / elapsed / 1e6, 3), output_problem=problem)


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url", help="rtmp://HOST:PORT/app")
    parser.add_argument("flv", type=Path)
    parser.add_argument("keys", nargs="+")
    parser.add_argument("--seconds", type=float, default=20)
    args = parser.parse_args()
    host, port = args.url.removeprefix("rtmp://").split("/")[0].rsplit(":", 1)
    started = time.monotonic()
    report = asyncio.run(run(host, int(port), args.keys, read_flv(args.flv), args.seconds))
    print(report, f"({time.monotonic() - started:.1f} s)")


if __name__ == "__main__":
    main()
