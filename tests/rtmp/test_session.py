"""The server session, driven through bytes only: Relay's publishing client on one side,
feeding three ways (whole, one byte at a time, with trailing bytes)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from relay._native.rtmp_chunk import ChunkMuxer, chunk_tail
from relay.rtmp import amf0
from relay.rtmp.client import ClientSession, Published, Refused
from relay.rtmp.messages import MessageType, UserControlEvent, user_control_payload
from relay.rtmp.session import (
    DEFAULT_MAX_BUFFERED_BEFORE_PUBLISH,
    DEFAULT_MAX_COMMAND_SIZE,
    DEFAULT_MAX_MESSAGES_BEFORE_PUBLISH,
    MAX_MESSAGES_PER_TURN,
    MAX_PENDING_OUTPUT,
    WINDOW_ACK_SIZE,
    Closing,
    Connected,
    Event,
    MediaMessage,
    Metadata,
    PublishEnded,
    PublishRequested,
    RemoteProtocolError,
    ServerSession,
    State,
)
from tests.rtmp.hostile import shared_reference_connect

Feeder = Callable[[bytes], Iterator[bytes]]


def whole(data: bytes) -> Iterator[bytes]:
    yield data


def bytewise(data: bytes) -> Iterator[bytes]:
    for i in range(len(data)):
        yield data[i:i + 1]


FEEDERS = [whole, bytewise]


def reads_of(size: int) -> Feeder:
    def feed(data: bytes) -> Iterator[bytes]:
        for i in range(0, len(data), size):
            yield data[i:i + size]
    return feed


def pump(server: ServerSession, data: bytes, feed: Feeder = whole) -> list[Event]:
    events: list[Event] = []
    for piece in feed(data):
        server.receive_data(piece)
        while True:
            server.new_turn()  # each read is a turn of the event loop, as in the adapter
            while (event := server.next_event()) is not None:
                events.append(event)
            if not server.turn_spent:
                break
    return events


def fixed_random(n: int) -> bytes:
    return bytes(range(256)) * (n // 256) + bytes(n % 256)


def connect(feed: Feeder = whole, key: str = "secret-key?token=1") -> tuple[
        ServerSession, ClientSession, list[Event]]:
    server = ServerSession(random_bytes=fixed_random)
    client = ClientSession(tc_url="rtmp://127.0.0.1/app", stream_key=key,
                           random_bytes=fixed_random)
    events = pump(server, client.initial_bytes(), feed)
    for _ in range(10):  # a few round trips: handshake, connect, createStream, publish
        client.receive_data(server.data_to_send())
        events += pump(server, client.data_to_send(), feed)
        if any(isinstance(e, PublishRequested) for e in events):
            break
    return server, client, events


@pytest.mark.parametrize("feed", FEEDERS)
def test_publish_flow(feed: Feeder) -> None:
    server, client, events = connect(feed)
    assert isinstance(events[0], Connected)
    assert events[0].tc_url == "rtmp://127.0.0.1/app"
    request = events[-1]
    assert request == PublishRequested("secret-key", "token=1", "live")
    assert server.state is State.PUBLISH_PENDING
    server.accept_publish()
    client.receive_data(server.data_to_send())
    assert client.next_event() == Published()

    client.send_metadata({"width": 320.0, "height": 240.0})
    client.send_media(MessageType.VIDEO, 0, b"\x17\x00\x00\x00\x00avcC")
    client.send_media(MessageType.AUDIO, 23, b"\xaf\x01frame")
    client.unpublish()
    events = pump(server, client.data_to_send() + b"", feed)
    assert events == [
        Metadata({"width": 320.0, "height": 240.0}),
        MediaMessage(9, 0, b"\x17\x00\x00\x00\x00avcC"),
        MediaMessage(8, 23, b"\xaf\x01frame"),
        PublishEnded("unpublish"),
    ]
    assert server.state is State.CLOSING


def test_trailing_bytes_stay_buffered() -> None:
    server, client, _ = connect()
    server.accept_publish()
    client.receive_data(server.data_to_send())
    client.send_media(MessageType.VIDEO, 40, b"\x27\x01\x00\x00\x00" + b"x" * 10_000)
    data = client.data_to_send()
    assert pump(server, data[:-1]) == []
    assert server.buffered > 0
    (event,) = pump(server, data[-1:])
    assert isinstance(event, MediaMessage) and len(event.payload) == 10_005


def test_refused_publish_tells_the_encoder_and_closes() -> None:
    server, client, _ = connect()
    server.refuse_publish("unknown stream key")
    assert server.next_event() == Closing("publish refused: unknown stream key")
    client.receive_data(server.data_to_send())
    assert client.next_event() == Refused("NetStream.Publish.BadName", "unknown stream key",
                                          "onStatus", "publish_requested")


def _error(txn: float, code: str) -> bytes:
    # On a chunk stream the server's session does not use, so a fresh muxer's full
    # (type 0) header is right; one chunk, since the body is short.
    muxer = ChunkMuxer()
    muxer.write_message(9, MessageType.COMMAND_AMF0, 0, 0, amf0.encode_command(
        "_error", txn, None, {"level": "error", "code": code, "description": "no"}))
    return muxer.take()


def test_client_ignores_errors_to_release_stream_and_fc_publish() -> None:
    """Servers that do not know these FMS calls answer `_error`; encoders carry on."""
    server, client, _ = connect()
    client.receive_data(server.data_to_send() + _error(2.0, "NetConnection.Call.Failed")
                        + _error(3.0, "NetConnection.Call.Failed"))
    assert client.next_event() is None
    server.accept_publish()
    client.receive_data(server.data_to_send())
    assert client.next_event() == Published()


def test_client_reports_an_error_to_publish_with_its_command_and_state() -> None:
    server, client, _ = connect()
    client.receive_data(server.data_to_send() + _error(5.0, "NetStream.Publish.Denied"))
    assert client.next_event() == Refused("NetStream.Publish.Denied", "no", "_error",
                                          "publish_requested")


def test_wrong_application_is_rejected() -> None:
    server = ServerSession(random_bytes=fixed_random)
    client = ClientSession(tc_url="rtmp://h/live", stream_key="k", app="live",
                           random_bytes=fixed_random)
    events = pump(server, client.initial_bytes())
    client.receive_data(server.data_to_send())
    events += pump(server, client.data_to_send())
    assert events == [Closing("connect to unknown application 'live'")]
    client.receive_data(server.data_to_send())
    refused = client.next_event()
    assert isinstance(refused, Refused) and "unknown application" in refused.description


def handshaken(**limits: int) -> tuple[ServerSession, ChunkMuxer]:
    server = ServerSession(random_bytes=fixed_random, **limits)
    client = ClientSession(tc_url="rtmp://h/app", stream_key="k", random_bytes=fixed_random)
    pump(server, client.initial_bytes())
    client.receive_data(server.data_to_send())
    pump(server, client.data_to_send()[:1536])  # C2 only: no connect yet
    assert server.state is State.AWAIT_CONNECT
    return server, ChunkMuxer()


def test_command_before_connect_is_a_protocol_error() -> None:
    server, muxer = handshaken()
    muxer.write_message(3, MessageType.COMMAND_AMF0, 0, 0,
                        amf0.encode_command("publish", 1.0, None, "k"))
    with pytest.raises(RemoteProtocolError, match="expected connect, got 'publish'"):
        pump(server, muxer.take())


def test_unknown_message_type_is_a_protocol_error() -> None:
    server, muxer = handshaken()
    muxer.write_message(3, 42, 0, 0, b"??")
    with pytest.raises(RemoteProtocolError, match="unknown message type 42"):
        pump(server, muxer.take())


def test_ping_is_answered_and_acks_follow_the_window() -> None:
    server, muxer = handshaken()
    server.data_to_send()
    muxer.write_message(2, MessageType.USER_CONTROL, 0, 0,
                        user_control_payload(UserControlEvent.PING_REQUEST, 1234))
    pump(server, muxer.take())
    assert user_control_payload(UserControlEvent.PING_RESPONSE, 1234) in server.data_to_send()
    # A window's worth of bytes (here: ignored audio before publish) earns an ack.
    muxer.write_set_chunk_size(65536)
    for _ in range(WINDOW_ACK_SIZE // 60_000 + 1):
        muxer.write_message(6, MessageType.AUDIO, 1, 0, b"a" * 60_000)
    pump(server, muxer.take(), reads_of(65536))  # as a socket delivers it
    out = server.data_to_send()
    assert out[7:8] == bytes([MessageType.ACKNOWLEDGEMENT])
    assert int.from_bytes(out[-4:], "big") >= WINDOW_ACK_SIZE


def test_play_is_refused_with_a_status() -> None:
    server = ServerSession(random_bytes=fixed_random)
    client = ClientSession(tc_url="rtmp://h/app", stream_key="k", random_bytes=fixed_random)
    pump(server, client.initial_bytes())
    client.receive_data(server.data_to_send())
    pump(server, client.data_to_send())  # C2 + connect; the client never sees the answer
    assert server.state is State.CONNECTED
    server.data_to_send()
    muxer = ChunkMuxer()
    muxer.write_message(8, MessageType.COMMAND_AMF0, 1, 0,
                        amf0.encode_command("play", 0.0, None, "k"))
    assert pump(server, muxer.take()) == [Closing("play refused: playback is HLS")]
    assert b"NetStream.Play.Failed" in server.data_to_send()


def test_aggregate_messages_are_split() -> None:
    server, client, _ = connect()
    server.accept_publish()
    client.receive_data(server.data_to_send())

    def tag(type_id: int, ts: int, body: bytes) -> bytes:
        header = bytes([type_id]) + len(body).to_bytes(3, "big") + \
            (ts & 0xFFFFFF).to_bytes(3, "big") + bytes([ts >> 24]) + b"\x00\x00\x00"
        return header + body + (11 + len(body)).to_bytes(4, "big")

    muxer = ChunkMuxer()
    muxer.write_message(7, MessageType.AGGREGATE, 1, 1000,
                        tag(9, 500, b"v1") + tag(8, 520, b"a1") + tag(9, 533, b"v2"))
    # The server's demuxer has seen this connection's chunk state, so use a csid it has not.
    events = pump(server, muxer.take())
    assert events == [MediaMessage(9, 1000, b"v1"), MediaMessage(8, 1020, b"a1"),
                      MediaMessage(9, 1033, b"v2")]
    muxer.write_message(7, MessageType.AGGREGATE, 1, 0, tag(9, 0, b"v")[:-6])
    with pytest.raises(RemoteProtocolError, match="aggregate"):
        pump(server, muxer.take())


# -- what a peer may cost before (and after) a publish is admitted ------------------------


CLIENT_CHUNK_SIZE = 4096  # what ClientSession announces after connect


def command_of_size(size: int, name: str = "x") -> bytes:
    """An AMF0 command message whose payload is exactly `size` bytes (a long string arg)."""
    head = amf0.encode_command(name, 0.0)
    return head + amf0.encode("s" * (size - len(head) - 3 - (2 if size - len(head) > 65538
                                                               else 0)))


def test_command_of_size_is_exact() -> None:
    for size in (100, DEFAULT_MAX_COMMAND_SIZE, DEFAULT_MAX_COMMAND_SIZE + 1, 1 << 20):
        assert len(command_of_size(size)) == size


def test_a_long_command_before_connect_is_refused_at_its_first_chunk() -> None:
    server, muxer = handshaken()
    muxer.write_message(3, MessageType.COMMAND_AMF0, 0, 0, command_of_size(1 << 20))
    data = muxer.take()
    # Only the first chunk (header + 128 bytes) is given: nothing of the 1 MiB is buffered.
    with pytest.raises(RemoteProtocolError,
                       match=r"^message length 1048576 on csid 3 exceeds max_message_size=65536, "
                             r"the limit for every message before a publish is admitted "
                             r"\(max_command_size\)$"):
        pump(server, data[:140])
    assert server.buffered <= 140


@pytest.mark.parametrize("state", ["await_connect", "connected"])
def test_before_publish_every_message_is_held_to_the_command_limit(state: str) -> None:
    if state == "await_connect":
        server, muxer = handshaken()
    else:
        server, _, _ = connect()
        muxer = ChunkMuxer(CLIENT_CHUNK_SIZE)
    # At the limit: decoded and answered (here: ignored, as transaction 0 needs no answer).
    muxer.write_message(8, MessageType.DATA_AMF0, 0, 0, command_of_size(DEFAULT_MAX_COMMAND_SIZE))
    assert pump(server, muxer.take()) == []
    # One byte more, of any type, media too: refused from the header.
    muxer.write_message(9, MessageType.VIDEO, 1, 0, bytes(DEFAULT_MAX_COMMAND_SIZE + 1))
    with pytest.raises(RemoteProtocolError, match="before a publish is admitted"):
        pump(server, muxer.take())


def test_an_aggregate_before_publish_is_refused() -> None:
    server, _, _ = connect()
    muxer = ChunkMuxer(CLIENT_CHUNK_SIZE)
    muxer.write_message(9, MessageType.AGGREGATE, 1, 0, bytes(20))
    with pytest.raises(RemoteProtocolError,
                       match=r"^aggregate message before a publish is admitted$"):
        pump(server, muxer.take())


def test_after_publish_media_may_be_long_but_commands_may_not() -> None:
    server, client, _ = connect()
    server.accept_publish()
    client.receive_data(server.data_to_send())
    frame = b"\x27\x01\x00\x00\x00" + bytes(1 << 20)
    client.send_media(MessageType.VIDEO, 40, frame)
    (event,) = pump(server, client.data_to_send(), reads_of(65536))
    assert event == MediaMessage(9, 40, frame)
    muxer = ChunkMuxer(CLIENT_CHUNK_SIZE)
    muxer.write_message(9, MessageType.DATA_AMF0, 1, 0,
                        command_of_size(DEFAULT_MAX_COMMAND_SIZE + 1, "@setDataFrame"))
    with pytest.raises(RemoteProtocolError,
                       match=r"^message length 65537 \(type 18\) on csid 9 exceeds "
                             r"max_command_size=65536; only audio, video and aggregate"):
        pump(server, muxer.take())


def test_buffered_bytes_are_bounded_before_publish() -> None:
    server, _ = handshaken()
    # The first chunk of a long message on each of several chunk streams: each message
    # reserves its full length, 4 x 64 KiB fit, the fifth does not.
    for csid in range(3, 8):
        muxer = ChunkMuxer()
        muxer.write_message(csid, MessageType.COMMAND_AMF0, 0, 0,
                            command_of_size(DEFAULT_MAX_COMMAND_SIZE - 100))
        first_chunk = muxer.take()[:12 + 128]
        if csid < 7:
            assert pump(server, first_chunk) == []
            continue
        with pytest.raises(RemoteProtocolError, match=r"would make \d+ bytes buffered, over "
                                                      r"max_buffered=262144$"):
            pump(server, first_chunk)
    assert DEFAULT_MAX_BUFFERED_BEFORE_PUBLISH == 262144


def test_a_shared_reference_connect_is_refused_without_walking_it() -> None:
    server, muxer = handshaken()
    muxer.write_message(3, MessageType.COMMAND_AMF0, 0, 0, shared_reference_connect())
    with pytest.raises(RemoteProtocolError, match=r"^malformed command: .* max_size=262144"):
        pump(server, muxer.take())


def test_a_non_string_app_is_named_by_its_type_only() -> None:
    server, muxer = handshaken()
    muxer.write_message(3, MessageType.COMMAND_AMF0, 0, 0,
                        amf0.encode_command("connect", 1.0, {"app": {"a": [1.0] * 50}}))
    assert pump(server, muxer.take()) == [Closing("connect to unknown application '<dict>'")]
    assert b"unknown application '<dict>'" in server.data_to_send()


def test_peer_names_reach_errors_and_replies_cut_and_escaped() -> None:
    server, muxer = handshaken()
    muxer.write_message(3, MessageType.COMMAND_AMF0, 0, 0,
                        amf0.encode_command("evil\nline", 1.0))
    with pytest.raises(RemoteProtocolError, match=r"^expected connect, got 'evil\\x0aline'$"):
        pump(server, muxer.take())

    server, _, _ = connect()
    server.data_to_send()
    muxer = ChunkMuxer(CLIENT_CHUNK_SIZE)
    muxer.write_message(8, MessageType.COMMAND_AMF0, 0, 0,
                        amf0.encode_command("n" * 10_000, 7.0))
    assert pump(server, muxer.take()) == []
    reply = server.data_to_send()
    assert b"n" * 200 + b"...(10000 characters) is not supported" in reply
    assert len(reply) < 600


def test_replies_stop_parsing_once_max_pending_output_waits() -> None:
    server, muxer = handshaken(max_messages_before_publish=10**9)
    server.data_to_send()
    ping = user_control_payload(UserControlEvent.PING_REQUEST, 1)
    for _ in range(20_000):
        muxer.write_message(2, MessageType.USER_CONTROL, 0, 0, ping)
    data = muxer.take()
    sent = 0
    rounds = 0
    position = 0
    while position < len(data):
        piece = data[position:position + 65536]  # one socket read
        position += len(piece)
        server.receive_data(piece)
        while True:
            server.new_turn()
            assert server.next_event() is None
            # However much input is unparsed, the replies waiting stay near the bound.
            assert server.pending_output < MAX_PENDING_OUTPUT + 64
            if not server.output_full and not server.turn_spent:
                break
            if server.output_full:
                sent += len(server.data_to_send())
                rounds += 1
    sent += len(server.data_to_send())
    assert rounds >= 2  # the bound was met, and parsing went on once the output was taken
    response = user_control_payload(UserControlEvent.PING_RESPONSE, 1)
    assert sent >= 20_000 * len(response)  # every ping was answered in the end


def test_one_turn_parses_at_most_max_messages_per_turn() -> None:
    """A read full of pings is parsed a bounded number of messages per turn of the loop."""
    server, muxer = handshaken()
    server.data_to_send()
    count = 3 * MAX_MESSAGES_PER_TURN + 10
    values = range(0x7F000000, 0x7F000000 + count)  # distinct and easy to find in the output
    for value in values:
        muxer.write_message(2, MessageType.USER_CONTROL, 0, 0,
                            user_control_payload(UserControlEvent.PING_REQUEST, value))
    server.receive_data(muxer.take())  # one read holds them all
    answers = []
    while True:
        server.new_turn()
        assert server.next_event() is None
        out = server.data_to_send()
        answers.append(sum(user_control_payload(UserControlEvent.PING_RESPONSE, v) in out
                           for v in values))
        if not server.turn_spent:
            break
    assert answers == [MAX_MESSAGES_PER_TURN] * 3 + [10]


def test_messages_before_publish_are_capped() -> None:
    server, muxer = handshaken(max_messages_before_publish=100)
    ping = user_control_payload(UserControlEvent.PING_REQUEST, 1)
    for _ in range(100):
        muxer.write_message(2, MessageType.USER_CONTROL, 0, 0, ping)
    assert pump(server, muxer.take()) == []  # the hundredth is still allowed
    muxer.write_message(2, MessageType.USER_CONTROL, 0, 0, ping)
    with pytest.raises(RemoteProtocolError, match="more than 100 messages before a publish"):
        pump(server, muxer.take())


def test_a_publisher_may_send_any_number_of_messages() -> None:
    server, client, _ = connect()
    server.accept_publish()
    client.receive_data(server.data_to_send())
    for i in range(3 * DEFAULT_MAX_MESSAGES_BEFORE_PUBLISH):
        client.send_media(MessageType.AUDIO, i, b"\xaf\x01" + b"a" * 8)
    events = pump(server, client.data_to_send())
    assert len(events) == 3 * DEFAULT_MAX_MESSAGES_BEFORE_PUBLISH


def test_media_sent_as_a_shared_chunk_tail_arrives_whole() -> None:
    """send_chunked: this connection's header and a tail shared with others; the server
    reads the same messages send_media would give. An extended timestamp is refused (every
    chunk would repeat it), and send_media carries that one."""
    server, client, _ = connect()
    server.accept_publish()
    client.receive_data(server.data_to_send())
    assert client.next_event() == Published()
    body = b"\x27\x01\x00\x00\x00" + bytes(range(256)) * 40
    csid = client.media_csid(MessageType.VIDEO)
    tail = chunk_tail(csid, client.chunk_size, body[:5], body[5:])
    assert client.send_chunked(MessageType.VIDEO, 40, len(body), tail)
    assert client.send_chunked(MessageType.VIDEO, 73, len(body), tail)
    assert not client.send_chunked(MessageType.VIDEO, 0x2000000, len(body), tail)
    client.send_media(MessageType.VIDEO, 0x2000000, body)
    pieces = client.chunks_to_send()
    assert sum(piece is tail for piece in pieces) == 2  # shared, not copied
    events = pump(server, b"".join(pieces))
    assert events == [MediaMessage(9, 40, body), MediaMessage(9, 73, body),
                      MediaMessage(9, 0x2000000, body)]
