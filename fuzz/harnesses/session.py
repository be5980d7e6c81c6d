"""The whole RTMP server session (relay/rtmp/session.py `ServerSession`) after a valid
handshake: chunk demuxing, protocol control, command dispatch through the transition table,
data messages, aggregates, and the media the session hands out, parsed as the server does.

Input: `common.split_input` layout; the stream is what the encoder sends after C0+C1+C2
(which the harness sends first, in the plain form). Flag bit 0: refuse the publish (the
application's other answer) instead of accepting it; bit 1: hand the pieces in through
get_buffer()/buffer_updated() (the asyncio path) instead of receive_data(). The harness acts
as `relay.rtmp.server` does: it answers PublishRequested, unwraps each media message's
timestamp and parses its tag (`flv.check_tag`), and stops feeding once the session closes.
Every input is run twice, through the per-message path (`MediaMessage` events, parsed as
above) and through the native batch path the server uses (`parse_media=True`: one
`MediaBatch` per read from relay._native.rtmp_ingest), and the two must agree on every
media unit, the counts of media messages and malformed tags, the first tag error, the bytes
sent back and the reason the connection ended.

Allowed: `RemoteProtocolError` from next_event(), `ChunkError` and `RemoteProtocolError`
from the input calls (the server catches both there), each with a bounded one-line reason,
as are Closing reasons. Findings: any other exception (a hang or a blow-up shows as a libFuzzer
timeout or out-of-memory), and the checks of the `flv` harness on every media message.
"""

from __future__ import annotations

from fuzz.common import Finding, check_reason, copy_in, growth_feedback, pieces, split_input
from fuzz.harnesses.flv import check_tag
from relay._native.rtmp_chunk import ChunkError
from relay.media.flv import FlvError, parse_audio_tag, parse_video_tag
from relay.media.timestamps import TimestampUnwrapper
from relay.media.units import AudioConfig, MediaFrame, VideoConfig
from relay.rtmp.handshake import HANDSHAKE_SIZE
from relay.rtmp.session import (
    Closing,
    MediaBatch,
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
    old = _drive(list(pieces(stream, lengths)), refuse, via_buffer, parse_media=False)
    new = _drive(list(pieces(stream, lengths)), refuse, via_buffer, parse_media=True)
    for what, a, b in zip(("units", "messages", "tag errors", "first tag error",
                           "output", "end"), old, new, strict=True):
        if a != b:
            if isinstance(a, list) and isinstance(b, list):
                at = next((i for i, (x, y) in enumerate(zip(a, b, strict=False))
                           if x != y),
                          min(len(a), len(b)))
                raise Finding(f"the batch path's {what} differ from the per-message path's "
                              f"at {at} of {len(a)} / {len(b)}")
            raise Finding(f"the batch path's {what} differ from the per-message path's: "
                          f"{str(a)[:80]!r} / {str(b)[:80]!r}")


Outcome = tuple[list[object], int, int, str, bytes, str]


def _drive(chunks: list[bytes], refuse: bool, via_buffer: bool, *,
           parse_media: bool) -> Outcome:
    session = ServerSession(random_bytes=_random, parse_media=parse_media)
    session.receive_data(HANDSHAKE)
    if len(session.data_to_send()) != 1 + 2 * HANDSHAKE_SIZE:
        raise Finding("the handshake was not answered with S0+S1+S2")
    timestamps = TimestampUnwrapper()
    units: list[object] = []
    messages = errors = 0
    first_error = end = ""
    output = bytearray()
    try:
        for piece in chunks:
            try:
                if via_buffer:
                    copy_in(session.get_buffer, session.buffer_updated, piece)
                else:
                    session.receive_data(piece)
            except (ChunkError, RemoteProtocolError) as exc:
                check_reason(exc)
                end = f"input: {exc}"
                break
            closed = False
            while (event := session.next_event()) is not None:
                if isinstance(event, PublishRequested):
                    if refuse:
                        session.refuse_publish("refused by the fuzz harness")
                    else:
                        session.accept_publish()
                elif isinstance(event, MediaMessage):
                    dts = timestamps.unwrap(event.timestamp)
                    check_tag(event.type_id, event.payload, dts)
                    messages += 1
                    try:
                        parse = parse_video_tag if event.type_id == 9 else parse_audio_tag
                        unit = parse(event.payload, dts)
                    except FlvError as exc:
                        errors += 1
                        first_error = first_error or str(exc)
                    else:
                        if isinstance(unit, MediaFrame | VideoConfig | AudioConfig):
                            units.append(unit)
                elif isinstance(event, MediaBatch):
                    units += event.units
                    messages += event.messages
                    errors += event.errors
                    first_error = first_error or event.first_error
                elif isinstance(event, Closing):
                    check_reason(Exception(event.reason))
                    end = f"closing: {event.reason}"
                    closed = True
                elif isinstance(event, PublishEnded):
                    end = f"ended: {event.command}"
                    closed = True
            sent = session.data_to_send()
            output += sent
            growth_feedback(len(output))
            if closed:
                break
    except RemoteProtocolError as exc:
        check_reason(exc)
        end = f"error: {exc}"
    finally:
        session.release()
    return units, messages, errors, first_error, bytes(output), end
