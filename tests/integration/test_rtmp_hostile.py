"""Hostile RTMP peers against `relay serve`, over real sockets (issue 12, items 1 and 2).

Each peer is a raw socket that does the RTMP handshake by hand (C0, then C1 and C2 as
zeros, which Relay accepts as the simple handshake) and sends chunks cut by Relay's own
ChunkMuxer. Meanwhile /healthz is polled with short timeouts: a server whose event loop is
busy with one peer's message does not answer it.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from relay._native.rtmp_chunk import ChunkMuxer
from relay.rtmp import amf0
from relay.rtmp.handshake import HANDSHAKE_SIZE
from relay.rtmp.messages import MessageType
from testkit.relay_process import RelayProcess, wait_for
from tests.rtmp.hostile import shared_reference_connect

# Each /healthz poll may take this long: far more than an idle server needs, far less than
# the seconds a frozen one did (10 s and more for the shared-reference connect).
HEALTHZ_TIMEOUT = 2.0


@pytest.fixture
def relay(tmp_path: Path) -> Iterator[RelayProcess]:
    process = RelayProcess(tmp_path / "data").start()
    try:
        yield process
    finally:
        assert process.stop() == 0, process.log


def rtmp_socket(relay: RelayProcess) -> socket.socket:
    """A connection that has finished the handshake (S0 S1 S2 read)."""
    url = urlsplit(relay.urls["rtmp"])
    assert url.hostname is not None and url.port is not None
    sock = socket.create_connection((url.hostname, url.port), timeout=10)
    sock.sendall(b"\x03" + bytes(2 * HANDSHAKE_SIZE))
    answer = b""
    while len(answer) < 1 + 2 * HANDSHAKE_SIZE:
        data = sock.recv(65536)
        assert data, "closed during the handshake"
        answer += data
    return sock


def closed_by_server(sock: socket.socket, within: float = 10.0) -> bool:
    sock.settimeout(within)
    try:
        while sock.recv(65536):
            pass
    except ConnectionResetError:
        pass
    return True


def healthz_answers(relay: RelayProcess) -> bool:
    try:
        response = httpx.get(relay.http_url + "/healthz", timeout=HEALTHZ_TIMEOUT)
    except httpx.TimeoutException:
        return False
    return response.status_code == 200


def logged(relay: RelayProcess, *parts: str) -> bool:
    return any(all(part in line for part in parts) for line in relay.lines)


def test_a_shared_reference_connect_does_not_freeze_the_server(relay: RelayProcess) -> None:
    assert healthz_answers(relay)
    sock = rtmp_socket(relay)
    try:
        muxer = ChunkMuxer()
        payload = shared_reference_connect(40)
        assert len(payload) < 1024
        muxer.write_message(3, MessageType.COMMAND_AMF0, 0, 0, payload)
        sock.sendall(muxer.take())
        # During and after: every poll is answered, none waits on the hostile connect.
        polls = [healthz_answers(relay) for _ in range(10)]
        assert all(polls), f"/healthz missed {polls.count(False)} of 10 polls"
        assert closed_by_server(sock)
    finally:
        sock.close()
    wait_for(lambda: logged(relay, "closing: protocol error: malformed command",
                            "max_size=262144"))
    assert healthz_answers(relay)


def test_a_long_command_before_connect_is_refused_at_once(relay: RelayProcess) -> None:
    sock = rtmp_socket(relay)
    try:
        muxer = ChunkMuxer()
        command = amf0.encode_command("connect", 1.0, "s" * (1 << 20))
        muxer.write_message(3, MessageType.COMMAND_AMF0, 0, 0, command)
        # The first chunk declares 1 MiB; Relay closes on it, without waiting for the rest
        # (or for the 10 s handshake deadline, which would be a different logged reason).
        sock.sendall(muxer.take()[:12 + 128])
        assert closed_by_server(sock)
    finally:
        sock.close()
    wait_for(lambda: logged(relay, f"closing: protocol error: message length {len(command)} on "
                                   "csid 3 exceeds max_message_size=65536", "before a publish"))
    assert not logged(relay, "no publish within")
    assert healthz_answers(relay)
