"""The RTMP handshake: plain and digest forms, fed whole, one byte at a time and with the
chunk stream's first bytes behind C2; client/server pairs; a real ffmpeg publisher.

Run as a script to re-capture the ffmpeg vector (see tests/vectors/rtmp/README.md):
    .venv/bin/python -m tests.rtmp.test_handshake --capture \
        tests/vectors/rtmp/ffmpeg_handshake_connect.bin
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import shutil
import struct
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relay.rtmp import amf0
from relay.rtmp.handshake import (
    C0_VERSION,
    DIGEST_SIZE,
    FMS_DIGEST_KEY,
    FMS_KEY,
    FP_DIGEST_KEY,
    FP_KEY,
    HANDSHAKE_SIZE,
    ClientHandshake,
    HandshakeError,
    ServerHandshake,
    digest_position,
    find_digest,
)

VECTORS = Path(__file__).parent.parent / "vectors" / "rtmp"
FFMPEG_VECTOR = VECTORS / "ffmpeg_handshake_connect.bin"
FFMPEG = shutil.which("ffmpeg")
FFMPEG_TIMEOUT_S = 15.0  # for the connect to arrive, and again for ffmpeg to exit

Feeder = Callable[[bytes], Iterator[bytes]]


def whole(data: bytes) -> Iterator[bytes]:
    yield data


def bytewise(data: bytes) -> Iterator[bytes]:
    for i in range(len(data)):
        yield data[i : i + 1]


FEEDERS = [whole, bytewise]


def counting_random(n: int) -> bytes:
    """Deterministic, non-constant 'random' bytes, so echoes can be checked by value."""
    return bytes((i * 7 + 3) & 0xFF for i in range(n))


def hmac_sha256(key: bytes, message: bytes) -> bytes:
    return hmac.new(key, message, hashlib.sha256).digest()


# -- C1 builders written from the published layout, independent of the code under test --


def plain_c1(time: int = 0x01020304) -> bytes:
    return struct.pack(">I", time) + bytes(4) + bytes((i * 13) & 0xFF for i in range(1528))


def digest_c1(scheme: int, filler: int = 0x5A) -> bytes:
    """A digest-form C1: version 9.0.124.2, digest placed per `scheme` with the FP key."""
    packet = bytearray(struct.pack(">I", 1000) + bytes((9, 0, 124, 2)))
    packet += bytes((filler + i) & 0xFF for i in range(1528))
    field = 8 if scheme == 0 else 772
    position = sum(packet[field : field + 4]) % 728 + field + 4
    digest = hmac_sha256(FP_DIGEST_KEY, bytes(packet[:position] + packet[position + 32 :]))
    packet[position : position + 32] = digest
    return bytes(packet)


def test_keys_are_the_published_byte_strings() -> None:
    assert len(FP_KEY) == 62 and len(FMS_KEY) == 68
    assert FP_DIGEST_KEY == b"Genuine Adobe Flash Player 001"
    assert FMS_DIGEST_KEY == b"Genuine Adobe Flash Media Server 001"
    suffix = bytes.fromhex("F0EEC24A8068BEE82E00D0D1029E7E576EEC5D2D29806FAB93B8E636CFEB31AE")
    assert FP_KEY[30:] == suffix and FMS_KEY[36:] == suffix


def test_digest_position_follows_the_offset_fields() -> None:
    packet = bytearray(HANDSHAKE_SIZE)
    packet[8:12] = bytes((200, 200, 200, 200))  # 800 % 728 = 72
    packet[772:776] = bytes((1, 2, 3, 4))  # 10
    assert digest_position(bytes(packet), 0) == 72 + 12
    assert digest_position(bytes(packet), 1) == 10 + 776
    # The largest offset (727) still leaves the digest inside its 764-byte block.
    packet[8:12] = bytes((255, 255, 217, 0))
    assert digest_position(bytes(packet), 0) == 727 + 12
    assert digest_position(bytes(packet), 0) + DIGEST_SIZE <= 8 + 764
    packet[8:12] = bytes((255, 255, 218, 0))  # 728 wraps to 0
    assert digest_position(bytes(packet), 0) == 12


# -- server, plain form --------------------------------------------------------------------


@pytest.mark.parametrize("feed", FEEDERS)
def test_server_plain_answer_and_completion(feed: Feeder) -> None:
    c1 = plain_c1()
    c2 = bytes(range(256)) * 6
    trailing = bytes.fromhex("030000000000a5140000000002000763")  # start of a connect chunk
    server = ServerHandshake(epoch_ms=0x0A0B0C0D, random_bytes=counting_random)
    out = bytearray()
    for piece in feed(bytes((C0_VERSION,)) + c1 + c2 + trailing):
        out += server.receive_data(piece)
    assert server.complete and not server.digest
    assert len(out) == 1 + 2 * HANDSHAKE_SIZE
    s0, s1, s2 = out[:1], out[1:1537], out[1537:]
    assert s0 == b"\x03"
    assert s1 == bytes.fromhex("0a0b0c0d") + bytes(4) + counting_random(1528)  # RTMP 5.2.3
    assert s2 == c1[:4] + bytes.fromhex("0a0b0c0d") + c1[8:]  # RTMP 5.2.4
    assert server.take_leftover() == trailing
    assert server.take_leftover() == b""


def test_server_answers_only_once_c1_is_complete() -> None:
    server = ServerHandshake()
    c1 = plain_c1()
    assert server.receive_data(b"\x03" + c1[:-1]) == b""
    answer = server.receive_data(c1[-1:])
    assert len(answer) == 1 + 2 * HANDSHAKE_SIZE
    assert not server.complete
    assert server.receive_data(bytes(HANDSHAKE_SIZE - 1)) == b""
    assert not server.complete
    assert server.receive_data(b"\x00") == b""
    assert server.complete and server.take_leftover() == b""


def test_server_leftover_is_everything_after_c2_in_one_call() -> None:
    trailing = bytes(range(200)) * 50  # 10000 bytes of chunk stream behind C2
    server = ServerHandshake()
    server.receive_data(b"\x03" + plain_c1())
    server.receive_data(bytes(HANDSHAKE_SIZE) + trailing)
    assert server.take_leftover() == trailing


def test_server_keeps_bytes_fed_after_completion_as_leftover() -> None:
    server = ServerHandshake()
    server.receive_data(b"\x03" + plain_c1() + bytes(HANDSHAKE_SIZE) + b"\x02")
    assert server.receive_data(b"\x03") == b""
    assert server.receive_data(b"\x04") == b""
    assert server.take_leftover() == b"\x02\x03\x04"
    assert server.receive_data(b"\x05") == b""
    assert server.take_leftover() == b"\x05"


def test_epoch_wraps_to_32_bits() -> None:
    server = ServerHandshake(epoch_ms=2**32 + 5)
    out = server.receive_data(b"\x03" + plain_c1())
    assert out[1:5] == struct.pack(">I", 5)


@pytest.mark.parametrize(
    ("first", "reason"),
    [
        (6, r"version 6 asks for RTMPE"),
        (0x16, r"0x16 is not RTMP version 3 \(a TLS ClientHello"),
        (ord("G"), r"C0 version byte 0x47 is not RTMP version 3$"),
        (0, r"C0 version byte 0x00"),
        (4, r"C0 version byte 0x04"),
    ],
)
def test_server_refuses_bad_version_on_the_first_byte(first: int, reason: str) -> None:
    server = ServerHandshake()
    with pytest.raises(HandshakeError, match=reason):
        server.receive_data(bytes((first,)))


# -- server, digest form -------------------------------------------------------------------


@pytest.mark.parametrize("scheme", [0, 1])
@pytest.mark.parametrize("feed", FEEDERS)
def test_server_digest_answer(scheme: int, feed: Feeder) -> None:
    c1 = digest_c1(scheme)
    server = ServerHandshake(epoch_ms=77, random_bytes=counting_random)
    out = bytearray()
    for piece in feed(b"\x03" + c1):
        out += server.receive_data(piece)
    assert server.digest and server.digest_scheme == scheme
    s1, s2 = bytes(out[1:1537]), bytes(out[1537:])
    assert s1[:4] == struct.pack(">I", 77) and s1[4:8] != bytes(4)
    # S1's digest validates with the 36-byte FMS key, at the client's scheme.
    position = sum(s1[(8, 772)[scheme] :][:4]) % 728 + (12, 776)[scheme]
    expected = hmac_sha256(FMS_DIGEST_KEY, s1[:position] + s1[position + 32 :])
    assert s1[position : position + 32] == expected
    found = find_digest(s1, FMS_DIGEST_KEY)
    assert found is not None and found[0] == scheme
    # S2 = 1504 random bytes + HMAC(HMAC(full FMS key, C1 digest), those bytes).
    c1_position = sum(c1[(8, 772)[scheme] :][:4]) % 728 + (12, 776)[scheme]
    c1_digest = c1[c1_position : c1_position + 32]
    assert s2[-32:] == hmac_sha256(hmac_sha256(FMS_KEY, c1_digest), s2[:1504])
    assert s2[:1504] == counting_random(1504)


@pytest.mark.parametrize("scheme", [0, 1])
def test_server_falls_back_to_plain_when_one_digest_byte_flips(scheme: int) -> None:
    c1 = bytearray(digest_c1(scheme))
    position = digest_position(bytes(c1), scheme)
    c1[position + 5] ^= 0x01
    server = ServerHandshake(epoch_ms=9, random_bytes=counting_random)
    out = server.receive_data(b"\x03" + bytes(c1))
    assert not server.digest and server.digest_scheme is None
    assert out[1:1537] == struct.pack(">I", 9) + bytes(4) + counting_random(1528)
    assert out[1537:] == bytes(c1[:4]) + struct.pack(">I", 9) + bytes(c1[8:])


def test_server_falls_back_when_a_signed_byte_outside_the_digest_flips() -> None:
    c1 = bytearray(digest_c1(0))
    c1[1000] ^= 0x80  # in the key block: covered by the HMAC, not part of the digest
    server = ServerHandshake()
    server.receive_data(b"\x03" + bytes(c1))
    assert not server.digest


def test_server_does_not_look_for_a_digest_when_version_is_zero() -> None:
    c1 = bytearray(digest_c1(0))
    c1[4:8] = bytes(4)  # a valid digest for the original bytes is irrelevant now
    server = ServerHandshake()
    server.receive_data(b"\x03" + bytes(c1))
    assert not server.digest


# -- client --------------------------------------------------------------------------------


def run_pair(
    client: ClientHandshake, server: ServerHandshake, feed: Feeder, trailing: bytes = b""
) -> bytes:
    """C0+C1 to the server, S0+S1+S2 to the client, C2 + `trailing` to the server, each
    through `feed`; returns the server's leftover."""
    answer = b"".join(server.receive_data(p) for p in feed(client.initial_bytes()))
    c2 = b"".join(client.receive_data(p) for p in feed(answer))
    assert client.complete and not server.complete
    assert len(c2) == HANDSHAKE_SIZE and client.take_leftover() == b""
    assert all(server.receive_data(p) == b"" for p in feed(c2 + trailing))
    assert server.complete
    return server.take_leftover()


@pytest.mark.parametrize("feed", FEEDERS)
def test_plain_pair_completes(feed: Feeder) -> None:
    client = ClientHandshake(epoch_ms=5)
    server = ServerHandshake(epoch_ms=6)
    assert run_pair(client, server, feed, trailing=b"\x02chunk") == b"\x02chunk"
    assert not server.digest and not client.server_digest


@pytest.mark.parametrize("feed", FEEDERS)
def test_digest_pair_completes(feed: Feeder) -> None:
    client = ClientHandshake(digest=True)
    server = ServerHandshake()
    assert run_pair(client, server, feed, trailing=b"\x03\x00") == b"\x03\x00"
    assert server.digest and server.digest_scheme == 0
    assert client.server_digest


def test_client_c1_and_c2_forms() -> None:
    plain = ClientHandshake(epoch_ms=0x11223344, random_bytes=counting_random)
    c0c1 = plain.initial_bytes()
    assert c0c1 == b"\x03" + bytes.fromhex("11223344") + bytes(4) + counting_random(1528)
    assert plain.initial_bytes() == c0c1  # idempotent
    s1 = plain_c1(time=0xCAFE)
    c2 = plain.receive_data(b"\x03" + s1)
    assert c2 == s1[:4] + bytes.fromhex("11223344") + s1[8:]
    assert not plain.complete
    assert plain.receive_data(bytes(HANDSHAKE_SIZE) + b"after") == b""
    assert plain.complete and plain.take_leftover() == b"after"

    signed = ClientHandshake(digest=True, random_bytes=counting_random)
    c1 = signed.initial_bytes()[1:]
    assert c1[4:8] != bytes(4)
    found = find_digest(c1, FP_DIGEST_KEY)
    assert found is not None and found[0] == 0
    server = ServerHandshake(random_bytes=counting_random)
    answer = server.receive_data(b"\x03" + c1)
    c2 = signed.receive_data(answer[:1537])
    s1_digest = find_digest(answer[1:1537], FMS_DIGEST_KEY)
    assert s1_digest is not None
    assert c2[-32:] == hmac_sha256(hmac_sha256(FP_KEY, s1_digest[1]), c2[:1504])


def test_digest_client_echoes_a_plain_server() -> None:
    client = ClientHandshake(digest=True)
    client.initial_bytes()
    s1 = plain_c1(time=3)
    c2 = client.receive_data(b"\x03" + s1)
    assert not client.server_digest
    assert c2[:4] == s1[:4] and c2[8:] == s1[8:]


def test_client_refuses_bad_s0_and_misuse() -> None:
    client = ClientHandshake()
    with pytest.raises(RuntimeError, match="initial_bytes"):
        client.receive_data(b"\x03")
    client.initial_bytes()
    with pytest.raises(HandshakeError, match="S0 version 6 asks for RTMPE"):
        client.receive_data(b"\x06")
    other = ClientHandshake()
    other.initial_bytes()
    with pytest.raises(HandshakeError, match="S0 version byte 0x08"):
        other.receive_data(b"\x08")


@given(
    digest=st.booleans(),
    cuts=st.lists(st.integers(min_value=0, max_value=4 * HANDSHAKE_SIZE), max_size=8),
    trailing=st.binary(max_size=64),
)
def test_pair_under_arbitrary_splits(digest: bool, cuts: list[int], trailing: bytes) -> None:
    client = ClientHandshake(digest=digest)
    server = ServerHandshake()
    stream = client.initial_bytes()
    answer = b"".join(server.receive_data(p) for p in split(stream, cuts))
    assert len(answer) == 1 + 2 * HANDSHAKE_SIZE
    c2 = b"".join(client.receive_data(p) for p in split(answer + trailing, cuts))
    assert client.complete and client.take_leftover() == trailing
    assert b"".join(server.receive_data(p) for p in split(c2 + trailing, cuts)) == b""
    assert server.complete and server.take_leftover() == trailing
    assert server.digest == digest


def split(data: bytes, cuts: list[int]) -> Iterator[bytes]:
    points = sorted({c for c in cuts if 0 < c < len(data)})
    for start, end in itertools.pairwise([0, *points, len(data)]):
        yield data[start:end]


# -- a real ffmpeg publisher ---------------------------------------------------------------


def first_message(stream: bytes) -> tuple[int, int, int, int, bytes] | None:
    """Decode the first chunk stream message by hand (RTMP 5.3.1): a type 0 header, then
    continuation chunks of 128 bytes (the default chunk size) with 1-byte type 3 headers.
    Returns (fmt, csid, type id, message stream id, payload), or None until complete."""
    if len(stream) < 12:
        return None
    fmt, csid = stream[0] >> 6, stream[0] & 0x3F
    timestamp = int.from_bytes(stream[1:4], "big")
    length = int.from_bytes(stream[4:7], "big")
    type_id = stream[7]
    stream_id = int.from_bytes(stream[8:12], "little")  # RTMP 5.3.1.2.1: little-endian
    assert fmt == 0 and timestamp != 0xFFFFFF, "expected a type 0 header, no extended time"
    payload = bytearray()
    pos = 12
    while len(payload) < length:
        if payload:  # every chunk after the first starts with a type 3 basic header
            if pos >= len(stream):
                return None
            assert stream[pos] == 0xC0 | csid, f"expected a type 3 header at {pos}"
            pos += 1
        take = min(128, length - len(payload))
        if pos + take > len(stream):
            return None
        payload += stream[pos : pos + take]
        pos += take
    return fmt, csid, type_id, stream_id, bytes(payload)


async def capture_ffmpeg_publish() -> tuple[bytes, ServerHandshake]:
    """Accept one ffmpeg publisher, complete the handshake, and return every byte it sent
    until its first chunk stream message is complete, with the server's handshake."""
    assert FFMPEG is not None
    loop = asyncio.get_running_loop()
    received = bytearray()
    after = bytearray()
    done: asyncio.Future[ServerHandshake] = loop.create_future()

    class Capture(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            assert isinstance(transport, asyncio.Transport)
            self.transport = transport
            self.handshake = ServerHandshake(epoch_ms=0)

        def data_received(self, data: bytes) -> None:
            received.extend(data)
            if not self.handshake.complete:
                try:
                    self.transport.write(self.handshake.receive_data(data))
                except HandshakeError as exc:
                    if not done.done():
                        done.set_exception(exc)
                    self.transport.close()
                    return
                if not self.handshake.complete:
                    return
                after.extend(self.handshake.take_leftover())
            else:
                after.extend(data)
            if first_message(bytes(after)) is not None and not done.done():
                done.set_result(self.handshake)
                self.transport.close()

        def connection_lost(self, exc: Exception | None) -> None:
            if not done.done():
                done.set_exception(ConnectionError(f"ffmpeg disconnected early: {exc}"))

    server = await loop.create_server(Capture, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    proc = await asyncio.create_subprocess_exec(
        FFMPEG, "-hide_banner", "-nostdin", "-loglevel", "error",
        "-re", "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=30", "-t", "2",
        "-c:v", "libx264", "-f", "flv", f"rtmp://127.0.0.1:{port}/app/key",
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        async with asyncio.timeout(FFMPEG_TIMEOUT_S):
            handshake = await done
    finally:
        server.close()
        await server.wait_closed()
        try:
            # With the connection closed under it, ffmpeg gives up at once.
            async with asyncio.timeout(FFMPEG_TIMEOUT_S):
                await proc.communicate()
        except TimeoutError:
            proc.kill()
            await proc.communicate()
    return bytes(received), handshake


def check_ffmpeg_stream(stream: bytes, handshake: ServerHandshake) -> None:
    """The bytes behind C2 start with a `connect` command on chunk stream 3."""
    assert handshake.complete
    assert handshake.digest, "ffmpeg sends the digest form of C1"
    chunks = stream[1 + 2 * HANDSHAKE_SIZE :]
    message = first_message(chunks)
    assert message is not None
    fmt, csid, type_id, stream_id, payload = message
    assert (fmt, csid, type_id, stream_id) == (0, 3, 20, 0)
    name, tid, args = amf0.decode_command(payload)
    assert (name, tid) == ("connect", 1.0)
    command_object = args[0]
    assert isinstance(command_object, dict)
    assert command_object["app"] == "app"
    assert command_object["type"] == "nonprivate"
    assert isinstance(command_object["tcUrl"], str)
    assert command_object["tcUrl"].endswith("/app")
    # Older ffmpeg sent "FMLE/3.0 (compatible; FMSc/1.0)"; 5.x names its libavformat.
    flash_ver = command_object["flashVer"]
    assert isinstance(flash_ver, str) and flash_ver.startswith("FMLE/3.0 (compatible; ")


@pytest.mark.skipif(FFMPEG is None, reason="ffmpeg is not installed")
def test_real_ffmpeg_publisher_completes_the_handshake() -> None:
    stream, handshake = asyncio.run(capture_ffmpeg_publish())
    check_ffmpeg_stream(stream, handshake)


@pytest.mark.parametrize("feed", FEEDERS)
def test_ffmpeg_vector(feed: Feeder) -> None:
    stream = FFMPEG_VECTOR.read_bytes()
    server = ServerHandshake(random_bytes=counting_random)
    answer = bytearray()
    leftover = bytearray()
    for piece in feed(stream):
        if server.complete:
            leftover += piece
        else:
            answer += server.receive_data(piece)
            if server.complete:
                leftover += server.take_leftover()
    assert len(answer) == 1 + 2 * HANDSHAKE_SIZE
    assert server.digest_scheme == 0
    # ffmpeg, when publishing, sends C2 as an echo of the S1 it got (signed by Relay's server).
    assert find_digest(stream[1537:3073], FMS_DIGEST_KEY) is not None
    assert bytes(leftover) == stream[1 + 2 * HANDSHAKE_SIZE :]
    check_ffmpeg_stream(stream, server)
    # The captured C1 is really signed: flipping one digest byte loses the digest form.
    c1 = bytearray(stream[1:1537])
    c1[digest_position(bytes(c1), 0)] ^= 0xFF
    fallback = ServerHandshake()
    fallback.receive_data(b"\x03" + bytes(c1))
    assert not fallback.digest


def _main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] != "--capture":
        print(__doc__)
        return 2
    stream, handshake = asyncio.run(capture_ffmpeg_publish())
    check_ffmpeg_stream(stream, handshake)
    Path(argv[1]).write_bytes(stream)
    print(f"wrote {len(stream)} bytes to {argv[1]}")
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
