"""RTMP message types and the small protocol-control messages (RTMP 1.0 sections 5.4, 6.2, 7.1).

Each control message is a fixed-size payload; these helpers build and check them. Media and
command payloads are left to `relay.media.flv` and `relay.rtmp.amf0`.
"""

from __future__ import annotations

import struct
from enum import IntEnum


class MessageType(IntEnum):
    SET_CHUNK_SIZE = 1  # 5.4.1
    ABORT = 2  # 5.4.2
    ACKNOWLEDGEMENT = 3  # 5.4.3
    USER_CONTROL = 4  # 6.2
    WINDOW_ACK_SIZE = 5  # 5.4.4
    SET_PEER_BANDWIDTH = 6  # 5.4.5
    AUDIO = 8  # 7.1.4
    VIDEO = 9  # 7.1.5
    DATA_AMF3 = 15  # 7.1.2
    SHARED_OBJECT_AMF3 = 16  # 7.1.3
    COMMAND_AMF3 = 17  # 7.1.1
    DATA_AMF0 = 18
    SHARED_OBJECT_AMF0 = 19
    COMMAND_AMF0 = 20
    AGGREGATE = 22  # 7.1.6


class UserControlEvent(IntEnum):
    STREAM_BEGIN = 0  # 7.1.7
    STREAM_EOF = 1
    STREAM_DRY = 2
    SET_BUFFER_LENGTH = 3
    STREAM_IS_RECORDED = 4
    PING_REQUEST = 6
    PING_RESPONSE = 7


class PeerBandwidthLimit(IntEnum):
    HARD = 0
    SOFT = 1
    DYNAMIC = 2


# Chunk stream ids Relay writes on: 2 is reserved for protocol control (5.4), the others are
# conventional (ffmpeg and Flash use 3 for NetConnection commands and 5 for NetStream status).
CONTROL_CSID = 2
COMMAND_CSID = 3
STATUS_CSID = 5

_U32 = struct.Struct(">I")
_USER_CONTROL = struct.Struct(">HI")


def u32_payload(value: int) -> bytes:
    """Payload of Acknowledgement (sequence number) and Window Acknowledgement Size."""
    return _U32.pack(value & 0xFFFFFFFF)


def parse_u32_payload(payload: bytes, what: str) -> int:
    if len(payload) < 4:
        raise ValueError(f"{what} message has {len(payload)} bytes, expected 4")
    return int(_U32.unpack_from(payload)[0])


def set_peer_bandwidth_payload(window: int, limit: PeerBandwidthLimit) -> bytes:
    return _U32.pack(window) + bytes((limit,))


def user_control_payload(event: UserControlEvent, value: int) -> bytes:
    """Stream Begin/EOF/Dry/Is Recorded (stream id) and Ping Request/Response (timestamp)."""
    return _USER_CONTROL.pack(event, value & 0xFFFFFFFF)


def parse_user_control(payload: bytes) -> tuple[int, int]:
    """(event type, first 32-bit argument); Set Buffer Length's second argument is ignored."""
    if len(payload) < 6:
        raise ValueError(f"user control message has {len(payload)} bytes, expected at least 6")
    event, value = _USER_CONTROL.unpack_from(payload)
    return int(event), int(value)
