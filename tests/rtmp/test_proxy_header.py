"""RTMP(S) behind a TCP load balancer (`--trusted-proxy`): over real sockets on 127.0.0.1,
a trusted peer's connections start with a PROXY header whose client address the slots and
the log lines use; a trusted peer's connection without one is closed, and so is another
peer's that sends one. nginx itself fronts `relay serve` in
tests/integration/test_trusted_proxy.py."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import ssl
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path

import pytest

from relay.proxy_protocol import ProxyHeader
from relay.rtmp.client import ClientSession, Published, Refused
from relay.rtmp.server import RtmpConnection, RtmpCounters, RtmpLimits, RtmpServer
from relay.store import NewLiveStream, Store
from relay.streams.registry import IngestRegistry
from relay.trusted_proxies import TrustedProxies
from testkit.tls import self_signed

pytestmark = pytest.mark.anyio

LIMITS = RtmpLimits(max_connections=10, max_connections_per_ip=2, handshake_timeout=5.0,
                    idle_timeout=5.0, max_message_size=64 * 1024, max_buffered=256 * 1024)
LOOPBACK = TrustedProxies([ipaddress.ip_network("127.0.0.1/32")])
ELSEWHERE = TrustedProxies([ipaddress.ip_network("127.0.0.9/32")])


def v1(source: str, port: int = 40000) -> bytes:
    destination = "::1" if ":" in source else "127.0.0.1"
    return bytes(ProxyHeader(1, (source, port), (destination, 5222), 0))


class Harness:
    def __init__(self, store: Store, trusted: TrustedProxies, *, limits: RtmpLimits = LIMITS,
                 tls: ssl.SSLContext | None = None) -> None:
        self.store = store
        self.registry = IngestRegistry(store)
        self.counters = RtmpCounters()
        self.server = RtmpServer(self.registry, limits=limits, counters=self.counters,
                                 scheme="rtmps" if tls else "rtmp", ssl_context=tls,
                                 trusted=trusted)
        self.port = 0
        self.writers: list[asyncio.StreamWriter] = []

    async def start(self) -> Harness:
        import socket
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        sock.setblocking(False)
        self.port = sock.getsockname()[1]
        await self.server.start(sock)
        return self

    async def stream_key(self) -> str:
        stream = await self.store.create_live_stream(NewLiveStream(
            latency_mode="standard", reconnect_window=0.0, max_continuous_duration=43200,
            audio_only=False, use_slate_for_standard_latency=False, test=False,
            new_asset_settings={"playback_policies": ["public"]},
            playback_policies=("public",)), [])
        return stream.stream_key

    async def publish(self, preamble: bytes, *, tls: ssl.SSLContext | None = None,
                      bytewise: bool = False) -> Published | Refused | None:
        """Connect, send `preamble` (a PROXY header), then publish a new stream's key;
        None when the server closes the connection instead of answering."""
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        self.writers.append(writer)
        client = ClientSession(tc_url=f"rtmp://127.0.0.1:{self.port}/app",
                               stream_key=await self.stream_key())
        try:
            if bytewise:
                for index in range(len(preamble)):
                    writer.write(preamble[index:index + 1])
                    await writer.drain()
                    await asyncio.sleep(0.001)
            if tls is not None:
                writer.write(preamble)
                await writer.start_tls(tls, server_hostname="localhost")
                writer.write(client.initial_bytes())
            elif not bytewise:  # the header and the first RTMP bytes in one segment, as nginx
                writer.write(preamble + client.initial_bytes())
            else:
                writer.write(client.initial_bytes())
            async with asyncio.timeout(10):
                while True:
                    data = await reader.read(65536)
                    if not data:
                        return None
                    client.receive_data(data)
                    writer.write(client.data_to_send())
                    if (event := client.next_event()) is not None:
                        assert isinstance(event, Published | Refused)
                        return event
        except (ConnectionError, ssl.SSLError):
            return None

    def connection_from(self, address: str) -> RtmpConnection:
        (found,) = [c for c in self.server.connections if c.address == address]
        return found

    async def close(self) -> None:
        for writer in self.writers:
            writer.close()
            with contextlib.suppress(ConnectionError, ssl.SSLError):
                await writer.wait_closed()
        await self.server.close()
        await self.registry.close()


@pytest.fixture
async def trusted(store: Store) -> AsyncIterator[Harness]:
    harness = await Harness(store, LOOPBACK).start()
    try:
        yield harness
    finally:
        await harness.close()


async def until(predicate: Callable[[], bool], within: float = 5.0) -> None:
    for _ in range(int(within / 0.01)):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"not reached within {within}s")


async def test_each_stated_address_has_its_own_share(trusted: Harness) -> None:
    # Three publishers through one balancer, over the per-address cap of two.
    for client in ("10.0.0.1", "10.0.0.2", "2001:db8::7"):
        assert await trusted.publish(v1(client)) == Published()
    connection = trusted.connection_from("10.0.0.1")
    assert connection.peer == "10.0.0.1:40000"
    assert connection.proxy is not None and connection.proxy.startswith("127.0.0.1:")
    assert trusted.server.slots.held_by("127.0.0.1") == 0  # nothing under the balancer
    # The cap applies to the stated address: a second fits, a third does not.
    assert await trusted.publish(v1("10.0.0.1", 40001)) == Published()
    assert await trusted.publish(v1("10.0.0.1", 40002)) is None
    assert trusted.counters.connections_refused_per_ip == 1
    assert trusted.server.slots.held_by("10.0.0.1") == 2
    assert trusted.counters.proxy_headers == 5


async def test_a_header_arriving_byte_by_byte(trusted: Harness) -> None:
    header = bytes(ProxyHeader(2, ("192.0.2.5", 1), ("127.0.0.1", 2), 0))
    assert await trusted.publish(header, bytewise=True) == Published()
    assert trusted.connection_from("192.0.2.5").peer == "192.0.2.5:1"


async def test_local_and_unknown_keep_the_socket_address(trusted: Harness) -> None:
    local = bytes(ProxyHeader(2, None, None, 0, command_local=True))
    assert await trusted.publish(local) == Published()
    assert await trusted.publish(b"PROXY UNKNOWN\r\n") == Published()
    assert trusted.server.slots.held_by("127.0.0.1") == 2


async def test_a_trusted_peer_without_a_header_is_closed(
        trusted: Harness, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "relay.rtmp")
    assert await trusted.publish(b"") is None  # RTMP's C0 first: not a PROXY header
    assert trusted.counters.proxy_header_errors == 1
    assert "without a valid PROXY header" in caplog.text
    assert await trusted.publish(b"PROXY TCP4 10.0.0.1 nonsense 1 2\r\n") is None
    assert trusted.counters.proxy_header_errors == 2
    assert not trusted.server.connections and trusted.server.slots.total == 0


async def test_a_trusted_peer_that_never_finishes_its_header(store: Store) -> None:
    harness = await Harness(store, LOOPBACK,
                            limits=replace(LIMITS, handshake_timeout=0.5)).start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", harness.port)
        harness.writers.append(writer)
        writer.write(b"PROXY TCP4 10.0.0.1 ")
        await until(lambda: harness.server.slots.total == 1)  # counted from accept
        async with asyncio.timeout(10):
            assert await reader.read() == b""
        assert harness.counters.proxy_header_errors == 1
        assert harness.server.slots.total == 0
    finally:
        await harness.close()


async def test_a_header_from_an_untrusted_peer_is_refused(
        store: Store, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "relay.rtmp")
    harness = await Harness(store, ELSEWHERE).start()
    try:
        assert await harness.publish(v1("10.0.0.1")) is None
        assert harness.counters.proxy_headers_refused == 1
        assert "not a trusted proxy" in caplog.text
        # Without a header the same peer publishes as before, under its own address.
        assert await harness.publish(b"") == Published()
        assert harness.server.slots.held_by("127.0.0.1") == 1
    finally:
        await harness.close()


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("tls")
    return self_signed(folder)


@pytest.mark.parametrize("trust", [LOOPBACK, ELSEWHERE], ids=["trusted", "untrusted"])
async def test_rtmps_reads_the_header_before_tls(store: Store, certificate: tuple[Path, Path],
                                                 trust: TrustedProxies) -> None:
    cert, key = certificate
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)
    client_tls = ssl.create_default_context(cafile=cert)
    harness = await Harness(store, trust, tls=server_tls).start()
    try:
        if trust is LOOPBACK:
            answer = await harness.publish(v1("198.51.100.4"), tls=client_tls)
            assert answer == Published()
            assert harness.connection_from("198.51.100.4").peer == "198.51.100.4:40000"
            assert harness.counters.tls_handshake_failures == 0
        else:  # refused before TLS: the header is all the peer gets to send
            reader, writer = await asyncio.open_connection("127.0.0.1", harness.port)
            harness.writers.append(writer)
            writer.write(v1("198.51.100.4") + b"\x16\x03\x01")
            async with asyncio.timeout(10):
                with contextlib.suppress(ConnectionError):
                    assert await reader.read() == b""
            assert harness.counters.proxy_headers_refused == 1
            assert harness.server.slots.total == 0
    finally:
        await harness.close()


async def test_a_silent_rtmps_connection_is_closed_at_the_deadline(
        store: Store, certificate: tuple[Path, Path]) -> None:
    # RTMPS waits for a first byte before TLS (to refuse a PROXY header); a peer that sends
    # nothing is still closed at the handshake deadline, and its watch on the socket ends.
    cert, key = certificate
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)
    harness = await Harness(store, ELSEWHERE, tls=server_tls,
                            limits=replace(LIMITS, handshake_timeout=0.5)).start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", harness.port)
        harness.writers.append(writer)
        async with asyncio.timeout(10):
            with contextlib.suppress(ConnectionError):
                assert await reader.read() == b""
        assert harness.counters.tls_handshake_failures == 1
        assert not harness.server.connections and harness.server.slots.total == 0
        # The listener goes on: a publisher after it gets in.
        assert await harness.publish(b"", tls=ssl.create_default_context(
            cafile=cert)) == Published()
    finally:
        await harness.close()
