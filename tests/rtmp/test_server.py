"""The asyncio adapter over real sockets on 127.0.0.1: limits, timeouts, and one bad
connection next to a good one. The publisher is Relay's own sans-IO client (ffmpeg drives the
same server in tests/integration/test_rtmp_ingest.py)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path

import pytest

from relay._native.rtmp_chunk import ChunkMuxer
from relay.rtmp import amf0
from relay.rtmp.buffer_budget import BufferBudget
from relay.rtmp.client import ClientSession, Published, Refused
from relay.rtmp.handshake import HANDSHAKE_SIZE
from relay.rtmp.messages import MessageType, UserControlEvent, user_control_payload
from relay.rtmp.server import RtmpCounters, RtmpLimits, RtmpServer
from relay.rtmp.session import DEFAULT_MAX_MESSAGES_BEFORE_PUBLISH, MAX_PENDING_OUTPUT
from relay.store import NewLiveStream, Store
from relay.streams.registry import IngestRegistry
from relay.streams.throttle import AuthThrottle
from testkit.tls import self_signed

pytestmark = pytest.mark.anyio

LIMITS = RtmpLimits(max_connections=10, handshake_timeout=5.0, idle_timeout=5.0,
                    max_message_size=64 * 1024, max_buffered=256 * 1024)
AVC_HEADER = bytes.fromhex("1700000000014d401effe1001867")  # truncated on purpose: parse error
KEYFRAME = b"\x17\x01\x00\x00\x00" + b"\x00\x00\x00\x05\x65\x88\x84\x00\x10"


class Harness:
    def __init__(self, store: Store, limits: RtmpLimits, *,
                 throttle: AuthThrottle | None = None,
                 tls: ssl.SSLContext | None = None) -> None:
        self.store = store
        self.registry = IngestRegistry(store, throttle=throttle)
        self.counters = RtmpCounters()
        self.server = RtmpServer(self.registry, limits=limits, counters=self.counters,
                                 scheme="rtmps" if tls else "rtmp", ssl_context=tls)
        self.port = 0
        self.writers: list[asyncio.StreamWriter] = []

    async def start(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        sock.setblocking(False)
        self.port = sock.getsockname()[1]
        await self.server.start(sock)

    async def stream_key(self) -> str:
        stream = await self.store.create_live_stream(NewLiveStream(
            latency_mode="standard", reconnect_window=0.0, max_continuous_duration=43200,
            audio_only=False, use_slate_for_standard_latency=False, test=False,
            new_asset_settings={"playback_policies": ["public"]},
            playback_policies=("public",)), [])
        return stream.stream_key

    async def connect(self, source: str = "127.0.0.1", tls: ssl.SSLContext | None = None,
                      ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", self.port, local_addr=(source, 0), ssl=tls,
            server_hostname="localhost" if tls else None)
        self.writers.append(writer)
        return reader, writer

    async def publisher(self, key: str, source: str = "127.0.0.1",
                        tls: ssl.SSLContext | None = None) -> Publisher:
        reader, writer = await self.connect(source, tls)
        client = ClientSession(tc_url=f"rtmp://127.0.0.1:{self.port}/app", stream_key=key)
        writer.write(client.initial_bytes())
        return Publisher(reader, writer, client)

    async def close(self) -> None:
        for writer in self.writers:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
        await self.server.close()
        await self.registry.close()


@pytest.fixture
async def harness(store: Store, request: pytest.FixtureRequest) -> AsyncIterator[Harness]:
    limits = getattr(request, "param", LIMITS)
    running = Harness(store, limits)
    await running.start()
    try:
        yield running
    finally:
        await running.close()


class Publisher:
    """One encoder connection driven by ClientSession."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 client: ClientSession) -> None:
        self.reader, self.writer, self.client = reader, writer, client

    async def until_answer(self) -> Published | Refused:
        async with asyncio.timeout(10):
            while True:
                data = await self.reader.read(65536)
                if not data:
                    raise ConnectionError("closed before an answer")
                self.client.receive_data(data)
                self.writer.write(self.client.data_to_send())
                if (event := self.client.next_event()) is not None:
                    return event

    async def send(self, type_id: int, timestamp: int, payload: bytes) -> None:
        self.client.send_media(type_id, timestamp, payload)
        self.writer.write(self.client.data_to_send())
        await self.writer.drain()

    async def closed_by_server(self, within: float = 10.0) -> bool:
        async with asyncio.timeout(within):
            try:
                while await self.reader.read(65536):
                    pass
            except ConnectionError:
                pass
        return True

    def close(self) -> None:
        self.writer.close()


async def until(predicate: Callable[[], bool], within: float = 5.0) -> None:
    """Wait for a condition the server reaches on its own (counters have no events)."""
    for _ in range(int(within / 0.01)):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"not reached within {within}s")


async def test_publish_and_a_broken_neighbour(harness: Harness) -> None:
    good = await harness.publisher(await harness.stream_key())
    assert await good.until_answer() == Published()
    await good.send(MessageType.VIDEO, 0, KEYFRAME)

    bad = await harness.publisher(await harness.stream_key())
    assert await bad.until_answer() == Published()
    # A chunk on a chunk stream that never had a type-0 header: a protocol error.
    bad.writer.write(b"\x45" + b"\x00" * 7)
    assert await bad.closed_by_server()
    await until(lambda: harness.counters.protocol_errors == 1)

    # The good publisher is unaffected: it still publishes, and the server still answers.
    for ts in range(40, 400, 40):
        await good.send(MessageType.VIDEO, ts, KEYFRAME)
    await until(lambda: harness.counters.media_messages >= 10)
    assert len(harness.server.connections) == 1
    await until(lambda: len(harness.registry.sessions) == 1)  # the broken one has ended
    good.close()
    await until(lambda: not harness.server.connections)


async def test_malformed_media_is_dropped_and_counted(harness: Harness) -> None:
    publisher = await harness.publisher(await harness.stream_key())
    assert await publisher.until_answer() == Published()
    await publisher.send(MessageType.VIDEO, 0, AVC_HEADER)
    await publisher.send(MessageType.VIDEO, 0, KEYFRAME)
    await until(lambda: harness.counters.media_messages == 2)
    assert harness.counters.media_errors == 1
    assert len(harness.server.connections) == 1  # the encoder stays connected
    publisher.close()


async def test_message_over_the_size_cap_closes_the_connection(harness: Harness) -> None:
    publisher = await harness.publisher(await harness.stream_key())
    assert await publisher.until_answer() == Published()
    await publisher.send(MessageType.VIDEO, 0, b"\x27\x01\x00\x00\x00" + bytes(70_000))
    assert await publisher.closed_by_server()
    await until(lambda: harness.counters.protocol_errors == 1)
    await until(lambda: not harness.registry.sessions)


async def test_unknown_key_is_refused_with_bad_name(harness: Harness) -> None:
    publisher = await harness.publisher("no-such-key")
    answer = await publisher.until_answer()
    assert answer == Refused("NetStream.Publish.BadName", "unknown stream key", "onStatus",
                             "publish_requested")
    assert await publisher.closed_by_server()


@pytest.mark.parametrize("harness", [replace(LIMITS, max_connections=2)], indirect=True)
async def test_connection_limit(harness: Harness) -> None:
    first = await harness.publisher(await harness.stream_key())
    second = await harness.publisher(await harness.stream_key())
    assert await first.until_answer() == Published()
    assert await second.until_answer() == Published()
    third = await harness.publisher(await harness.stream_key())
    assert await third.closed_by_server()
    assert harness.counters.connections_refused == 1
    first.close()
    await until(lambda: len(harness.server.connections) == 1)
    fourth = await harness.publisher(await harness.stream_key())
    assert await fourth.until_answer() == Published()
    second.close()
    fourth.close()


@pytest.mark.parametrize("harness", [replace(LIMITS, handshake_timeout=0.3)], indirect=True)
async def test_a_silent_connection_is_closed_at_the_handshake_deadline(
        harness: Harness) -> None:
    reader, writer = await harness.connect()
    writer.write(b"\x03" + bytes(100))  # C0 and part of C1, then nothing
    async with asyncio.timeout(5):
        assert await reader.read() == b""
    assert harness.counters.handshake_timeouts == 1


@pytest.mark.parametrize("harness", [replace(LIMITS, handshake_timeout=0.3)], indirect=True)
async def test_handshake_without_publish_is_closed_too(harness: Harness) -> None:
    reader, writer = await harness.connect()
    writer.write(b"\x03" + bytes(2 * HANDSHAKE_SIZE))
    async with asyncio.timeout(5):
        answer = await reader.read()
    assert answer.startswith(b"\x03") and len(answer) >= 1 + 2 * HANDSHAKE_SIZE
    assert harness.counters.handshake_timeouts == 1


@pytest.mark.parametrize("harness", [replace(LIMITS, idle_timeout=0.3)], indirect=True)
async def test_an_idle_publisher_is_closed(harness: Harness) -> None:
    publisher = await harness.publisher(await harness.stream_key())
    assert await publisher.until_answer() == Published()
    assert await publisher.closed_by_server(within=5)
    assert harness.counters.idle_timeouts == 1
    await until(lambda: not harness.registry.sessions)


async def test_amf3_command_messages_are_understood(harness: Harness) -> None:
    """An encoder sending commands as type 17 (AMF0 after a 0x00 format byte)."""
    publisher = await harness.publisher(await harness.stream_key())
    assert await publisher.until_answer() == Published()
    muxer = publisher.client._muxer
    muxer.write_message(3, MessageType.COMMAND_AMF3, 0, 0,
                        b"\x00" + amf0.encode("FCUnpublish", 6.0, None, "x"))
    muxer.write_message(3, MessageType.COMMAND_AMF3, 0, 0,
                        b"\x00" + amf0.encode("deleteStream", 7.0, None, 1.0))
    publisher.writer.write(publisher.client.data_to_send())
    assert await publisher.closed_by_server()  # the publish ended, as asked
    assert harness.counters.protocol_errors == 0


@pytest.mark.parametrize("harness", [replace(LIMITS, max_connections=4,
                                             max_connections_per_ip=3)], indirect=True)
async def test_per_address_cap_then_the_oldest_idle_of_the_biggest_holder_makes_way(
        harness: Harness) -> None:
    idle = [await harness.connect("127.0.0.1") for _ in range(3)]
    await until(lambda: harness.server.slots.total == 3)
    over, _ = await harness.connect("127.0.0.1")
    async with asyncio.timeout(5):
        assert await over.read() == b""  # closed on accept
    assert harness.counters.connections_refused_per_ip == 1
    await harness.connect("127.0.0.2")
    await until(lambda: harness.server.slots.total == 4)  # every slot is taken
    # An encoder from an address holding nothing: the oldest idle connection of 127.0.0.1
    # (which holds the most) is closed for it, and it publishes.
    publisher = await harness.publisher(await harness.stream_key(), source="127.0.0.3")
    assert await publisher.until_answer() == Published()
    assert harness.counters.connections_evicted == 1
    async with asyncio.timeout(5):
        assert await idle[0][0].read() == b""
    assert harness.server.slots.held_by("127.0.0.1") == 2
    assert harness.counters.connections_refused == 0
    publisher.close()


@pytest.mark.parametrize("harness", [replace(LIMITS, max_connections=2)], indirect=True)
async def test_publishers_are_never_evicted(harness: Harness) -> None:
    for source in ("127.0.0.1", "127.0.0.2"):
        publisher = await harness.publisher(await harness.stream_key(), source=source)
        assert await publisher.until_answer() == Published()
    refused, _ = await harness.connect("127.0.0.3")
    async with asyncio.timeout(5):
        assert await refused.read() == b""
    assert harness.counters.connections_refused == 1
    assert harness.counters.connections_evicted == 0


async def test_a_refusal_beyond_the_waiting_cap_is_closed_unanswered(store: Store) -> None:
    # An hour's delay: the slowed refusal never answers while the test runs.
    throttle = AuthThrottle(free_failures=0, base_delay=3600, max_slowed_per_address=1)
    harness = Harness(store, LIMITS, throttle=throttle)
    await harness.start()
    try:
        slowed = await harness.publisher("wrong-1")
        answer = asyncio.create_task(slowed.until_answer())
        await until(lambda: throttle.slowed_now == 1)
        unanswered = await harness.publisher("wrong-2")
        with pytest.raises(ConnectionError, match="closed before an answer"):
            await unanswered.until_answer()
        assert harness.registry.counters.refusals_unanswered == 1
        # A right key from the same address is not held up by either.
        publisher = await harness.publisher(await harness.stream_key())
        assert await publisher.until_answer() == Published()
        assert not answer.done()
        answer.cancel()
        slowed.close()
        publisher.close()
    finally:
        await harness.close()


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("tls")
    return self_signed(folder)


async def test_tls_handshakes_hold_slots_from_accept_and_expire(
        store: Store, certificate: tuple[Path, Path]) -> None:
    cert, key = certificate
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)
    client_tls = ssl.create_default_context(cafile=cert)
    harness = Harness(store, replace(LIMITS, handshake_timeout=1.0, max_connections_per_ip=2),
                      tls=server_tls)
    await harness.start()
    try:
        # A TLS record header and nothing more: the handshake never completes.
        stuck, stuck_writer = await harness.connect()
        stuck_writer.write(b"\x16\x03\x01\x02\x00")
        await until(lambda: harness.server.slots.total == 1)  # counted before TLS is done
        publisher = await harness.publisher(await harness.stream_key(), tls=client_tls)
        assert await publisher.until_answer() == Published()
        over, _ = await harness.connect()
        async with asyncio.timeout(5):
            assert await over.read() == b""  # the address holds two: the stuck one counts
        assert harness.counters.connections_refused_per_ip == 1
        async with asyncio.timeout(10):  # the handshake's own deadline
            with contextlib.suppress(ConnectionError):
                assert await stuck.read() == b""
        await until(lambda: harness.counters.tls_handshake_failures == 1)
        assert harness.server.slots.total == 1  # only the publisher's
        publisher.close()
        await until(lambda: harness.server.slots.total == 0)
    finally:
        await harness.close()


# -- a peer that does not read, and memory held before publishing -----------------------


def handshake_and_pings(count: int) -> bytes:
    """C0 C1 C2 as a client would send them without waiting, then `count` Ping Requests."""
    muxer = ChunkMuxer()
    ping = user_control_payload(UserControlEvent.PING_REQUEST, 7)
    for _ in range(count):
        muxer.write_message(2, MessageType.USER_CONTROL, 0, 0, ping)
    return b"\x03" + bytes(2 * HANDSHAKE_SIZE) + muxer.take()


async def open_unread_connection(port: int) -> socket.socket:
    """A client socket with a tiny receive buffer that the test never reads from."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    return sock


async def send_until_refused(sock: socket.socket, data: bytes, stop: Callable[[], bool]) -> None:
    """Send without blocking the loop: the server stops reading when it pauses."""
    view = memoryview(data)
    while view and not stop():
        try:
            sent = sock.send(view[:65536])
        except BlockingIOError:
            await asyncio.sleep(0.01)
            continue
        except ConnectionError:
            return
        view = view[sent:]
        await asyncio.sleep(0)


# These two send pings by the million before any publish: the cap on messages before a
# publish (tested on its own below) is lifted so that the output bounds are what is met.
@pytest.mark.parametrize("harness", [replace(LIMITS, write_buffer_high=16 * 1024,
                                             write_stall_timeout=0.5,
                                             max_messages_before_publish=10**9)],
                         indirect=True)
async def test_a_peer_that_sends_pings_and_never_reads_is_paused_then_closed(
        harness: Harness) -> None:
    sock = await open_unread_connection(harness.port)
    peaks: list[int] = []
    held: list[int] = []

    def closed() -> bool:
        for connection in harness.server.connections:
            assert connection._transport is not None
            peaks.append(connection._transport.get_write_buffer_size())
            held.append(connection.session.buffered)
        return harness.counters.write_stall_closes > 0

    try:
        # 8 MiB of pings would earn as many bytes of replies; the peer reads none of them.
        await send_until_refused(sock, handshake_and_pings(1_200_000), closed)
        await until(closed, within=20)
    finally:
        sock.close()
    assert harness.counters.write_pauses >= 1
    assert harness.counters.write_stall_closes == 1
    assert harness.counters.protocol_errors == 0
    # While paused, unsent output stayed within the high-water mark plus one batch of
    # replies (MAX_PENDING_OUTPUT), and nothing else was read.
    assert max(peaks) <= 16 * 1024 + MAX_PENDING_OUTPUT + 1024
    assert max(held) <= LIMITS.max_buffered_before_publish  # and input stayed bounded
    await until(lambda: not harness.server.connections)
    assert harness.server.budget.used == 0


@pytest.mark.parametrize("harness", [replace(LIMITS, write_buffer_high=16 * 1024,
                                             write_stall_timeout=60.0,
                                             handshake_timeout=60.0,
                                             max_messages_before_publish=10**9)],
                         indirect=True)
async def test_a_slow_reader_resumes_and_every_ping_is_answered(harness: Harness) -> None:
    count = 1_200_000  # 8 MiB of replies: more than the kernel's socket buffers hold
    sock = await open_unread_connection(harness.port)
    sender = asyncio.create_task(
        send_until_refused(sock, handshake_and_pings(count), lambda: False))
    try:
        await until(lambda: harness.counters.write_pauses >= 1, within=20)
        # Now read everything: the server resumes reading, parsing and answering.
        expected = 1 + 2 * HANDSHAKE_SIZE + count * 7  # fmt 3 replies after the first one
        received = 0
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(60):
            while received < expected - 64:
                data = await loop.sock_recv(sock, 65536)
                assert data, "closed before every ping was answered"
                received += len(data)
        await sender
    finally:
        sender.cancel()
        sock.close()
    assert harness.counters.write_stall_closes == 0
    assert harness.counters.protocol_errors == 0
    # Reads full of pings were worked through a bounded number per turn of the loop.
    assert harness.counters.turns_yielded > 0


async def test_a_connection_that_sends_many_messages_without_publishing_is_closed(
        harness: Harness) -> None:
    count = DEFAULT_MAX_MESSAGES_BEFORE_PUBLISH + 1
    sock = await open_unread_connection(harness.port)
    loop = asyncio.get_running_loop()
    try:
        await loop.sock_sendall(sock, handshake_and_pings(count))
        await until(lambda: harness.counters.protocol_errors == 1, within=10)
    finally:
        sock.close()
    assert harness.counters.handshake_timeouts == 0


def test_buffer_budget_charges_and_refuses() -> None:
    budget = BufferBudget(1000)
    assert budget.charge(0, 600)
    assert budget.charge(0, 400)  # exactly the limit
    assert not budget.charge(0, 1)  # one byte more: refused, nothing changes
    assert budget.used == 1000
    assert budget.charge(600, 100)  # shrinking always succeeds
    assert budget.charge(0, 500)
    assert not budget.charge(100, 102)
    budget.release(100)
    budget.release(400)
    budget.release(500)
    assert budget.used == 0
    with pytest.raises(ValueError, match="at least 1 byte, got 0"):
        BufferBudget(0)


def first_chunk_of_a_long_command(csid: int) -> bytes:
    """The first 128-byte chunk of a 60 KB command: the server reserves all 60 KB for it."""
    muxer = ChunkMuxer()
    muxer.write_message(csid, MessageType.COMMAND_AMF0, 0, 0,
                        amf0.encode_command("x", 0.0, "s" * 60_000))
    return muxer.take()[:12 + 128]


@pytest.mark.parametrize("harness", [replace(LIMITS, pre_publish_buffer_budget=200_000)],
                         indirect=True)
async def test_connections_that_have_not_published_share_one_budget(harness: Harness) -> None:
    held: list[asyncio.StreamWriter] = []
    for _ in range(3):  # 3 x 2 x 60 KB = 360 KB asked, 200 KB allowed
        _, writer = await harness.connect()
        writer.write(b"\x03" + bytes(2 * HANDSHAKE_SIZE) + first_chunk_of_a_long_command(3)
                     + first_chunk_of_a_long_command(4))
        held.append(writer)
    await until(lambda: harness.counters.budget_closes >= 2)
    assert harness.server.budget.used <= 200_000
    assert len(harness.server.connections) == 1
    # An encoder still publishes: it holds next to nothing before its publish.
    publisher = await harness.publisher(await harness.stream_key())
    assert await publisher.until_answer() == Published()
    for writer in held:
        writer.close()
    await until(lambda: len(harness.server.connections) == 1)
    assert harness.server.budget.used == 0  # the publisher's charge was returned too
    publisher.close()


async def test_a_long_command_before_connect_closes_at_its_first_chunk(
        harness: Harness) -> None:
    reader, writer = await harness.connect()
    muxer = ChunkMuxer()
    muxer.write_message(3, MessageType.COMMAND_AMF0, 0, 0,
                        amf0.encode_command("x", 0.0, "s" * (1 << 20)))
    # Only the first chunk: the server refuses from the header, without waiting for the rest.
    writer.write(b"\x03" + bytes(2 * HANDSHAKE_SIZE) + muxer.take()[:12 + 128])
    async with asyncio.timeout(10):
        while await reader.read(65536):
            pass
    assert harness.counters.protocol_errors == 1
    assert harness.counters.handshake_timeouts == 0
