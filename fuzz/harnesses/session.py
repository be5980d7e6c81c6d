"""The whole RTMP server session (relay/rtmp/session.py `ServerSession`) after a valid
handshake: chunk demuxing, protocol control, command dispatch through the transition table,
data messages, aggregates, and the media the session hands out, parsed as the server does.

Input: `common.split_input` layout; the stream is what the encoder sends after C0+C1+C2
(which the harness sends first, in the plain form). Flag bit 0: refuse the publish (the
application's other answer) instead of accepting it; bit 1: hand the pieces in through
get_buffer()/buffer_updated() (the asyncio path) instead of receive_data(). The harness acts
as `relay.rtmp.server` does: it answers PublishRequested, unwraps each media message's
timestamp and parses its tag (`flv.check_tag`), and stops feeding once the session closes.

Allowed: `RemoteProtocolError` from next_event(), `ChunkError` and `RemoteProtocolError`
from the input calls (the server catches both there), each with a bounded one-line reason,
as are Closing reasons. Findings: any other exception (a hang or a blow-up shows as a libFuzzer
timeout or out-of-memory), and the checks of the `flv` harness on every media message.
"""

from __future__ import annotations

from fuzz.common import Finding, check_reason, copy_in, growth_feedback, pieces, split_input
from fuzz.harnesses.flv import check_tag
from relay._native.rtmp_chunk import ChunkError
from relay.media.timestamps import TimestampUnwrapper
from relay.rtmp.handshake import HANDSHAKE_SIZE
from relay.rtmp.session import (
    Closing,
    MediaMessage,
    PublishEnded,
    PublishRequested,
    RemoteProtocolError,
    ServerSession,
)

#: C0 (version 3), C1 (time 0, zero version: the plain form, then random bytes), C2.
HANDSHAKE = b"\x03" + bytes(8) + (bytes(range(256)) * 6)[: HANDSHAKE_SIZE - 8] \
    + bytes(HANDSHAKE_SIZE)


def _random(n: int) -> bytes:
    return bytes(n)


def check(data: bytes) -> None:
    flags, lengths, stream = split_input(data)
    refuse, via_buffer = bool(flags & 1), bool(flags & 2)
    session = ServerSession(random_bytes=_random)
    session.receive_data(HANDSHAKE)
    if len(session.data_to_send()) != 1 + 2 * HANDSHAKE_SIZE:
        raise Finding("the handshake was not answered with S0+S1+S2")
    timestamps = TimestampUnwrapper()
    sent = 0
    try:
        for piece in pieces(stream, lengths):
            try:
                if via_buffer:
                    copy_in(session.get_buffer, session.buffer_updated, piece)
                else:
                    session.receive_data(piece)
            except (ChunkError, RemoteProtocolError) as exc:
                check_reason(exc)
                return
            closed = False
            while (event := session.next_event()) is not None:
                if isinstance(event, PublishRequested):
                    if refuse:
                        session.refuse_publish("refused by the fuzz harness")
                    else:
                        session.accept_publish()
                elif isinstance(event, MediaMessage):
                    check_tag(event.type_id, event.payload, timestamps.unwrap(event.timestamp))
                elif isinstance(event, Closing):
                    check_reason(Exception(event.reason))
                    closed = True
                elif isinstance(event, PublishEnded):
                    closed = True
            sent += len(session.data_to_send())
            growth_feedback(sent)
            if closed:
                return
    except RemoteProtocolError as exc:
        check_reason(exc)
    finally:
        session.release()
