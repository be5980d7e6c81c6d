"""Hostile peers: each attack of issue 12 as a loop a test or the soak can run against Relay.

Run as a process (`python -m tests.hostile.attackers --rtmp 127.0.0.1:5222 --http URL ...`)
so the peers' own CPU never competes with the measuring side for one interpreter lock. Every
attack is a coroutine that repeats its move until the deadline, spreading its connections
over loopback source addresses 127.0.0.10 and up (one "botnet host" per attack and slot), and
counting what it did; at the end the counts are printed as one JSON object.

The bytes are built here by hand where Relay's own writers would refuse to produce them (AMF
references, oversized commands): a peer that follows the protocol cannot attack it.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import random
import socket
import ssl
import struct
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from relay.rtmp import amf0

HANDSHAKE_SIZE = 1536
DEFAULT_CHUNK_SIZE = 128
CONNECT_TIMEOUT = 5.0


# -- bytes -----------------------------------------------------------------------------------


def chunked(csid: int, type_id: int, stream_id: int, payload: bytes,
            chunk_size: int = DEFAULT_CHUNK_SIZE, timestamp: int = 0) -> bytes:
    """One RTMP message as a type-0 chunk and type-3 continuations (RTMP 5.3.1)."""
    header = bytes([csid]) + timestamp.to_bytes(3, "big") + len(payload).to_bytes(3, "big") \
        + bytes([type_id]) + struct.pack("<I", stream_id)
    out = bytearray(header)
    for start in range(0, max(len(payload), 1), chunk_size):
        if start:
            out.append(0xC0 | csid)
        out += payload[start:start + chunk_size]
    return bytes(out)


def command(name: str, txn: float, *args: amf0.AmfValue, stream_id: int = 0,
            chunk_size: int = DEFAULT_CHUNK_SIZE) -> bytes:
    return chunked(3, 20, stream_id, amf0.encode_command(name, txn, *args), chunk_size)


def reference_bomb_connect(levels: int = 40) -> bytes:
    """A ~700-byte `connect` whose `app` is a DAG of shared AMF0 references.

    x0 = {}, x_i = {a: x_{i-1}, b: x_{i-1}}: decoding costs one node per level, but any walk of
    the value as a tree (printing it, copying it) visits 2**levels nodes."""
    body = bytearray(amf0.encode("connect", 1.0))
    body.append(0x03)  # the command object: reference slot 0
    body += struct.pack(">H", 4) + b"junk"
    body += b"\x0a" + struct.pack(">I", levels + 1)  # strict array: slot 1
    body += b"\x03\x00\x00\x09"  # x0 = {}: slot 2
    for level in range(1, levels + 1):
        body.append(0x03)  # x_level: slot level + 2
        for key in (b"a", b"b"):
            body += struct.pack(">H", 1) + key + b"\x07" + struct.pack(">H", level + 1)
        body += b"\x00\x00\x09"
    body += struct.pack(">H", 3) + b"app" + b"\x07" + struct.pack(">H", levels + 2)
    body += b"\x00\x00\x09"
    return chunked(3, 20, 0, bytes(body))


def big_command(size: int = 1 << 20) -> bytes:
    """A `connect` of `size` bytes (a long string argument), announced in its first chunk."""
    return chunked(3, 20, 0, amf0.encode_command("connect", 1.0, "x" * size), 4096)


def set_chunk_size(size: int) -> bytes:
    return chunked(2, 1, 0, struct.pack(">I", size))


def ping_request(value: int) -> bytes:
    return chunked(2, 4, 0, struct.pack(">HI", 6, value))  # user control 6: ping request


def connect_command(app: str = "app") -> bytes:
    return command("connect", 1.0, {"app": app, "tcUrl": f"rtmp://relay/{app}",
                                    "flashVer": "FMLE/3.0", "type": "nonprivate"})


def publish_commands(stream_key: str) -> bytes:
    return (connect_command() + command("createStream", 2.0, None)
            + command("publish", 3.0, None, stream_key, "live", stream_id=1))


# -- connections -----------------------------------------------------------------------------


class SourceAddresses:
    """Loopback source addresses, one /32 per attacking host: 127.0.0.10 .. 127.0.255.254."""

    def __init__(self, first: int) -> None:
        self._next = first

    def take(self) -> str:
        n = self._next
        self._next += 1
        return f"127.0.{(n >> 8) & 0xFF}.{max(n & 0xFF, 1)}"


async def open_from(host: str, port: int, source: str, *, tls: ssl.SSLContext | None = None,
                    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.wait_for(
        asyncio.open_connection(host, port, local_addr=(source, 0), ssl=tls,
                                server_hostname="relay" if tls else None), CONNECT_TIMEOUT)


async def rtmp_handshake(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """C0 C1, read S0 S1 S2, answer C2 (RTMP 5.2; the simple form, echoing S1)."""
    writer.write(b"\x03" + bytes(8) + os.urandom(HANDSHAKE_SIZE - 8))
    await writer.drain()
    answer = await asyncio.wait_for(reader.readexactly(1 + 2 * HANDSHAKE_SIZE), 10)
    writer.write(answer[1:1 + HANDSHAKE_SIZE])
    await writer.drain()


async def read_until_closed(reader: asyncio.StreamReader, within: float) -> bool:
    """Drain what the server sends; True when it closed the connection `within` seconds."""
    deadline = time.monotonic() + within
    with contextlib.suppress(OSError, asyncio.IncompleteReadError):
        while (left := deadline - time.monotonic()) > 0:
            try:
                if not await asyncio.wait_for(reader.read(65536), left):
                    return True
            except TimeoutError:
                return False
    return True


def close(writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(Exception):
        writer.transport.abort()


# -- the attacks -----------------------------------------------------------------------------


@dataclass
class Target:
    rtmp: tuple[str, int]
    http: str  # http://host:port
    rtmps: tuple[str, int] | None = None
    token: tuple[str, str] | None = None
    playback_id: str | None = None  # a live stream's, for held LL-HLS requests
    asset_playback_id: str | None = None  # a finished recording's
    deadline: float = 0.0
    counts: Counter[str] = field(default_factory=Counter)

    @property
    def http_address(self) -> tuple[str, int]:
        host, port = self.http.rsplit("//", 1)[1].rsplit(":", 1)
        return host, int(port)

    def live(self) -> bool:
        return time.monotonic() < self.deadline


Attack = Callable[[Target, SourceAddresses], Awaitable[None]]


async def _repeat(target: Target, name: str, move: Callable[[], Awaitable[None]],
                  pause: float = 0.05) -> None:
    """Run `move` until the deadline, counting tries and the errors they met."""
    while target.live():
        try:
            await move()
            target.counts[name] += 1
        except (OSError, TimeoutError, asyncio.IncompleteReadError, ssl.SSLError):
            target.counts[f"{name}.refused"] += 1
        await asyncio.sleep(pause)


async def amf_reference_bomb(target: Target, sources: SourceAddresses) -> None:
    """Item 1: a connect whose `app` costs 2**40 to walk."""
    payload = reference_bomb_connect()

    async def move() -> None:
        reader, writer = await open_from(*target.rtmp, sources.take())
        try:
            await rtmp_handshake(reader, writer)
            writer.write(payload)
            await writer.drain()
            await read_until_closed(reader, 5)
        finally:
            close(writer)
    await _repeat(target, "amf_reference_bomb", move, 0.2)


async def big_commands(target: Target, sources: SourceAddresses) -> None:
    """Item 2: 1 MiB command messages before any connect."""
    payload = set_chunk_size(4096) + big_command()

    async def move() -> None:
        reader, writer = await open_from(*target.rtmp, sources.take())
        try:
            await rtmp_handshake(reader, writer)
            writer.write(payload)
            with contextlib.suppress(OSError):
                await asyncio.wait_for(writer.drain(), 5)
            await read_until_closed(reader, 5)
        finally:
            close(writer)
    await _repeat(target, "big_command", move, 0.2)


async def idle_hoarders(target: Target, sources: SourceAddresses, count: int = 200,
                        per_host: int = 50) -> None:
    """Item 3: hundreds of connections that never finish a handshake, from a few hosts,
    replaced as the server closes them; over TLS too when RTMPS is served."""
    tls = ssl.create_default_context()
    tls.check_hostname = False
    tls.verify_mode = ssl.CERT_NONE
    hosts = [sources.take() for _ in range(max(1, count // per_host))]
    endpoints: list[tuple[tuple[str, int], bool]] = [(target.rtmp, False)]
    if target.rtmps is not None:
        endpoints.append((target.rtmps, True))

    async def hold(slot: int) -> None:
        (host, port), over_tls = endpoints[slot % len(endpoints)]
        source = hosts[slot % len(hosts)]
        while target.live():
            try:
                if over_tls:
                    # A raw TCP connection that sends half a ClientHello: the TLS handshake
                    # never completes, which is the slot an RTMPS hoarder holds.
                    sock = socket.socket()
                    sock.setblocking(False)
                    sock.bind((source, 0))
                    await asyncio.get_running_loop().sock_connect(sock, (host, port))
                    await asyncio.get_running_loop().sock_sendall(sock, b"\x16\x03\x01\x02")
                    reader, writer = await asyncio.open_connection(sock=sock)
                else:
                    reader, writer = await open_from(host, port, source)
                    writer.write(b"\x03")  # C0 only
                target.counts["idle_hoarder.opened"] += 1
                await read_until_closed(reader, max(0.0, target.deadline - time.monotonic()))
                close(writer)
            except (OSError, TimeoutError):
                target.counts["idle_hoarder.refused"] += 1
            await asyncio.sleep(1.0)  # it wants to hold slots, not to churn them
    await asyncio.gather(*(hold(i) for i in range(count)))


async def ping_flood(target: Target, sources: SourceAddresses) -> None:
    """Item 4: pings whose answers are never read, into a tiny receive buffer."""
    async def move() -> None:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        sock.bind((sources.take(), 0))
        loop = asyncio.get_running_loop()
        await asyncio.wait_for(loop.sock_connect(sock, target.rtmp), 5)
        reader, writer = await asyncio.open_connection(sock=sock)
        try:
            await rtmp_handshake(reader, writer)
            writer.write(connect_command())
            burst = b"".join(ping_request(i) for i in range(2000))
            end = min(target.deadline, time.monotonic() + 20)
            while time.monotonic() < end and not writer.is_closing():
                writer.write(burst)
                try:
                    await asyncio.wait_for(writer.drain(), 2)
                except TimeoutError:
                    target.counts["ping_flood.stalled"] += 1
                    break
        finally:
            close(writer)
    await _repeat(target, "ping_flood", move, 0.5)


async def connection_flood(target: Target, sources: SourceAddresses) -> None:
    """Items 3 and 5: from one host, connect far beyond its per-address cap, again and
    again; each refusal would be a log line if they were not rate-limited."""
    source = sources.take()

    async def move() -> None:
        writers = []
        try:
            for _ in range(60):
                _, writer = await open_from(*target.rtmp, source)
                writers.append(writer)
            await asyncio.sleep(0.5)
        finally:
            for writer in writers:
                close(writer)
    await _repeat(target, "connection_flood", move, 0.2)


async def wrong_keys(target: Target, sources: SourceAddresses) -> None:
    """Item 6: publishes with random keys from rotating addresses."""
    async def move() -> None:
        reader, writer = await open_from(*target.rtmp, sources.take())
        try:
            await rtmp_handshake(reader, writer)
            writer.write(publish_commands(base64.b32encode(os.urandom(15)).decode()))
            await writer.drain()
            await read_until_closed(reader, 15)
        finally:
            close(writer)
    await asyncio.gather(*(_repeat(target, "wrong_key", move, 0.1) for _ in range(4)))


async def slowloris(target: Target, sources: SourceAddresses, count: int = 100) -> None:
    """Item 7: HTTP connections that send their request line one byte every two seconds."""
    source = sources.take()

    async def drip() -> None:
        while target.live():
            try:
                reader, writer = await open_from(*target.http_address, source)
            except (OSError, TimeoutError):
                target.counts["slowloris.refused"] += 1
                await asyncio.sleep(1)
                continue
            target.counts["slowloris.opened"] += 1
            try:
                for byte in b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: " + b"a" * 10_000:
                    if writer.is_closing() or reader.at_eof() or not target.live():
                        break
                    writer.write(bytes([byte]))
                    await asyncio.sleep(2)
            except OSError:
                pass
            finally:
                close(writer)
    await asyncio.gather(*(drip() for _ in range(count)))


async def held_requests(target: Target, sources: SourceAddresses, count: int = 100) -> None:
    """Item 7: blocking playlist reloads for the segment after next, held by the hundred on
    one live stream (each waits until that segment exists, or for its hold timeout); the
    soak runs Relay with a per-stream cap below `count`, so some are refused at once."""
    if target.playback_id is None:
        return
    path = f"/{target.playback_id}/rendition.m3u8"

    async def hold() -> None:
        source = sources.take()
        while target.live():
            try:
                playlist = await _http(target, source, (
                    f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").encode())
                ahead = _last_msn(playlist) + 2
                answer = await _http(target, source, (
                    f"GET {path}?_HLS_msn={ahead}&_HLS_part=0 HTTP/1.1\r\nHost: x\r\n"
                    "Connection: close\r\n\r\n").encode())
                status = answer[9:12].decode(errors="replace") or "eof"
                target.counts[f"held.{status}"] += 1
            except (OSError, TimeoutError, ValueError):
                target.counts["held.refused"] += 1
            await asyncio.sleep(1.0)
    await asyncio.gather(*(hold() for _ in range(count)))


def _last_msn(response: bytes) -> int:
    """The last listed media sequence number of a media playlist response."""
    sequence, segments = None, 0
    for line in response.decode(errors="replace").splitlines():
        if line.startswith("#EXT-X-MEDIA-SEQUENCE:"):
            sequence = int(line.split(":", 1)[1])
        elif line.startswith("#EXTINF:"):
            segments += 1
    if sequence is None:
        raise ValueError("not a media playlist")
    return sequence + segments - 1


async def _http(target: Target, source: str, request: bytes) -> bytes:
    reader, writer = await open_from(*target.http_address, source)
    try:
        writer.write(request)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), 30)
    finally:
        close(writer)


async def recorded_playlists(target: Target, sources: SourceAddresses) -> None:
    """Item 8: a finished recording's playlist, gzipped, as fast as it is served."""
    if target.asset_playback_id is None:
        return
    request = (f"GET /{target.asset_playback_id}/rendition.m3u8 HTTP/1.1\r\nHost: x\r\n"
               "Accept-Encoding: gzip\r\nConnection: close\r\n\r\n").encode()
    source = sources.take()

    async def move() -> None:
        await _http(target, source, request)
    await _repeat(target, "recorded_playlist", move, 0.01)


async def api_abuse(target: Target, sources: SourceAddresses) -> None:
    """Items 9 and 10: out-of-range paging and bad bodies with a real token, and wrong
    secrets from rotating addresses."""
    token_id, secret = target.token or ("nobody", "x" * 32)
    good = base64.b64encode(f"{token_id}:{secret}".encode()).decode()
    requests = [
        f"GET /video/v1/live-streams?page=365720738912483540992&limit=99999999999 HTTP/1.1\r\n"
        f"Host: x\r\nAuthorization: Basic {good}\r\nConnection: close\r\n\r\n",
        f"GET /video/v1/assets?page=-1 HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {good}\r\n"
        "Connection: close\r\n\r\n",
        f"POST /video/v1/live-streams HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {good}\r\n"
        "Content-Type: application/json\r\nContent-Length: 19\r\nConnection: close\r\n\r\n"
        '{"reconnect_window"',
    ]

    async def move() -> None:
        source = sources.take()
        request = random.choice(requests)
        if random.random() < 0.5:
            bad = base64.b64encode(f"{token_id}:{os.urandom(8).hex()}".encode()).decode()
            request = (f"GET /video/v1/live-streams HTTP/1.1\r\nHost: x\r\nAuthorization: "
                       f"Basic {bad}\r\nConnection: close\r\n\r\n")
        answer = await _http(target, source, request.encode())
        target.counts[f"api.{answer[9:12].decode(errors='replace') or 'eof'}"] += 1
    await _repeat(target, "api", move, 0.02)


ATTACKS: dict[str, Attack] = {
    "amf_reference_bomb": amf_reference_bomb,
    "big_commands": big_commands,
    "idle_hoarders": idle_hoarders,
    "ping_flood": ping_flood,
    "connection_flood": connection_flood,
    "wrong_keys": wrong_keys,
    "slowloris": slowloris,
    "held_requests": held_requests,
    "recorded_playlists": recorded_playlists,
    "api_abuse": api_abuse,
}


async def run(target: Target, names: list[str], seconds: float) -> Counter[str]:
    target.deadline = time.monotonic() + seconds
    # Each attack gets its own block of 4,096 source addresses.
    tasks = [ATTACKS[name](target, SourceAddresses(10 + 4096 * i))
             for i, name in enumerate(names)]
    results = await asyncio.gather(*tasks, return_exceptions=True)
    for name, result in zip(names, results, strict=True):
        if isinstance(result, BaseException):
            target.counts[f"{name}.crashed:{type(result).__name__}"] += 1
    return target.counts


def _address(text: str) -> tuple[str, int]:
    host, port = text.rsplit(":", 1)
    return host, int(port)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rtmp", type=_address, required=True)
    parser.add_argument("--rtmps", type=_address)
    parser.add_argument("--http", required=True)
    parser.add_argument("--token", help="ID:SECRET of a real access token")
    parser.add_argument("--playback-id")
    parser.add_argument("--asset-playback-id")
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--attacks", default=",".join(ATTACKS))
    args = parser.parse_args()
    token = None
    if args.token:
        token_id, _, secret = args.token.partition(":")
        token = (token_id, secret)
    target = Target(rtmp=args.rtmp, http=args.http, rtmps=args.rtmps, token=token,
                    playback_id=args.playback_id, asset_playback_id=args.asset_playback_id)
    counts = asyncio.run(run(target, args.attacks.split(","), args.seconds))
    print(json.dumps(dict(sorted(counts.items()))), flush=True)


if __name__ == "__main__":
    main()
