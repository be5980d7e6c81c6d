"""AMF0 (and the AMF3 subset in commands): hand-written byte vectors both ways, a real
ffmpeg onMetaData tag, RTMP commands, bounds, and Hypothesis round trips and fuzzing."""

from __future__ import annotations

import copy
import datetime as dt
import math
import pickle
import struct
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.rtmp.amf0 import (
    MAX_DECODED_SIZE,
    MAX_DEPTH,
    UNDEFINED,
    AmfError,
    AmfValue,
    EcmaArray,
    Undefined,
    decode,
    decode_all,
    decode_command,
    encode,
    encode_command,
)
from tests.rtmp.hostile import shared_reference_connect

VECTORS = Path(__file__).parent.parent / "vectors" / "rtmp"
UTC = dt.UTC


def f64(x: float) -> bytes:
    return struct.pack(">d", x)


# (value, AMF0 bytes): written out by hand from the AMF0 spec, checked in both directions.
ROUND_TRIP_VECTORS: list[tuple[AmfValue, bytes]] = [
    (0.0, b"\x00" + bytes(8)),
    (1.0, bytes.fromhex("00 3ff0000000000000")),
    (-2.5, bytes.fromhex("00 c004000000000000")),
    (math.inf, bytes.fromhex("00 7ff0000000000000")),
    (True, b"\x01\x01"),
    (False, b"\x01\x00"),
    ("", b"\x02\x00\x00"),
    ("abc", b"\x02\x00\x03abc"),
    ("é", b"\x02\x00\x02\xc3\xa9"),
    (None, b"\x05"),
    (UNDEFINED, b"\x06"),
    ({}, b"\x03\x00\x00\x09"),
    ({"a": 1.0, "b": None}, b"\x03\x00\x01a\x00" + f64(1.0) + b"\x00\x01b\x05\x00\x00\x09"),
    ({"": 2.0}, b"\x03\x00\x00\x00" + f64(2.0) + b"\x00\x00\x09"),  # empty key, not the end
    (EcmaArray(), b"\x08\x00\x00\x00\x00\x00\x00\x09"),
    (EcmaArray({"x": "y"}), b"\x08\x00\x00\x00\x01\x00\x01x\x02\x00\x01y\x00\x00\x09"),
    ([], b"\x0a\x00\x00\x00\x00"),
    ([1.0, "a", [None]], b"\x0a\x00\x00\x00\x03\x00" + f64(1.0) + b"\x02\x00\x01a"
     b"\x0a\x00\x00\x00\x01\x05"),
    (dt.datetime(2024, 5, 6, 7, 8, 9, 123000, tzinfo=UTC),
     b"\x0b" + f64(1714979289123.0) + b"\x00\x00"),
    (dt.datetime(1969, 12, 31, 23, 59, 59, tzinfo=UTC), b"\x0b" + f64(-1000.0) + b"\x00\x00"),
    ("x" * 65535, b"\x02\xff\xff" + b"x" * 65535),
    ("x" * 65536, b"\x0c\x00\x01\x00\x00" + b"x" * 65536),  # long string past 65535 bytes
    (b"\x01\x02\x03", b"\x11\x0c\x07\x01\x02\x03"),  # AMF3 byte array via the avmplus switch
    (b"", b"\x11\x0c\x01"),
]  # fmt: skip

# (AMF0 bytes, value): forms that decode but encode differently (or not at all).
DECODE_ONLY_VECTORS: list[tuple[bytes, AmfValue]] = [
    (b"\x01\x7f", True),  # AMF0 2.3: any non-zero byte is true
    (b"\x0c\x00\x00\x00\x02hi", "hi"),  # a short long-string
    (b"\x0f\x00\x00\x00\x04<a/>", "<a/>"),  # xml document
    (b"\x10\x00\x03Foo\x00\x01x\x00" + f64(1.0) + b"\x00\x00\x09", {"x": 1.0}),  # typed object
    (b"\x08\x00\x00\x00\x07\x00\x01k\x05\x00\x00\x09", EcmaArray({"k": None})),  # count
    (b"\x0b" + f64(0.0) + b"\xff\x10", dt.datetime(1970, 1, 1, tzinfo=UTC)),  # tz ignored
    # AMF3 through the avmplus switch (AMF3 spec section 3)
    (b"\x11\x00", UNDEFINED),
    (b"\x11\x01", None),
    (b"\x11\x02", False),
    (b"\x11\x03", True),
    (b"\x11\x04\x00", 0.0),
    (b"\x11\x04\x7f", 127.0),
    (b"\x11\x04\x81\x00", 128.0),  # two-byte U29
    (b"\x11\x04\xff\x7f", 16383.0),
    (b"\x11\x04\x81\x80\x00", 16384.0),  # three-byte U29
    (b"\x11\x04\xbf\xff\xff\xff", 268435455.0),  # largest positive 29-bit integer
    (b"\x11\x04\xc0\x80\x80\x00", -268435456.0),  # sign bit of the 29-bit integer
    (b"\x11\x04\xff\xff\xff\xff", -1.0),
    (b"\x11\x05" + f64(0.5), 0.5),
    (b"\x11\x06\x01", ""),
    (b"\x11\x06\x07abc", "abc"),
    (b"\x11\x0b\x09<a/>", "<a/>"),  # XML
    (b"\x11\x07\x09<a/>", "<a/>"),  # legacy XMLDocument
    (b"\x11\x08\x01" + f64(86400000.0), dt.datetime(1970, 1, 2, tzinfo=UTC)),
    (b"\x11\x0c\x07\x01\x02\x03", b"\x01\x02\x03"),
    # array: dense count 2, no associative part, "abc" then a string reference to it
    (b"\x11\x09\x05\x01\x06\x07abc\x06\x00", ["abc", "abc"]),
    # array: dense count 1, associative "k" -> 5, then dense 7
    (b"\x11\x09\x03\x03k\x04\x05\x01\x04\x07", EcmaArray({"0": 7.0, "k": 5.0})),
    (b"\x11\x09\x01\x03k\x04\x05\x01", EcmaArray({"k": 5.0})),  # associative only
    # anonymous dynamic object {a: "hi"}
    (b"\x11\x0a\x0b\x01\x03a\x06\x05hi\x01", {"a": "hi"}),
    # two sealed objects of class Foo {x}; the second refers to the first one's traits
    (b"\x11\x09\x05\x01\x0a\x13\x07Foo\x03x\x04\x01\x0a\x01\x04\x02", [{"x": 1.0}, {"x": 2.0}]),
    # sealed member x, dynamic member y whose value is string 0 ("x") by reference
    (b"\x11\x0a\x1b\x01\x03x\x04\x01\x03y\x06\x00\x01", {"x": 1.0, "y": "x"}),
]


@pytest.mark.parametrize(("value", "data"), ROUND_TRIP_VECTORS)
def test_vector_both_ways(value: AmfValue, data: bytes) -> None:
    assert encode(value) == data
    decoded, end = decode(data)
    assert end == len(data)
    assert same(decoded, value)


@pytest.mark.parametrize(("data", "value"), DECODE_ONLY_VECTORS)
def test_decode_vector(data: bytes, value: AmfValue) -> None:
    decoded, end = decode(data)
    assert end == len(data)
    assert same(decoded, value)


VECTOR_INPUTS = [data for _, data in ROUND_TRIP_VECTORS if len(data) < 1000] + [
    data for data, _ in DECODE_ONLY_VECTORS
]


@pytest.mark.parametrize("data", VECTOR_INPUTS)
def test_every_truncation_is_an_amf_error(data: bytes) -> None:
    """Fed one byte at a time: every proper prefix fails cleanly, naming an offset."""
    for cut in range(len(data)):
        with pytest.raises(AmfError, match=r"offset \d+"):
            decode(data[:cut])


@pytest.mark.parametrize("data", VECTOR_INPUTS)
def test_trailing_bytes_are_left_alone(data: bytes) -> None:
    trailing = b"\x05\x02\x00\x01z"
    value, end = decode(data + trailing)
    assert end == len(data)
    assert decode(data + trailing, end) == (None, end + 1)
    assert decode_all(data + trailing)[1:] == [None, "z"]
    assert same(value, decode(data)[0])


def test_decode_at_offset_and_decode_all() -> None:
    data = b"\xff\xff" + encode("a", 2.0, None)
    assert decode(data, 2) == ("a", 6)
    assert decode(data, 6) == (2.0, 15)
    assert decode_all(data[2:]) == ["a", 2.0, None]
    assert decode_all(b"") == []
    with pytest.raises(AmfError, match="offset 17 is outside"):
        decode(data, 17)


# -- the real onMetaData that ffmpeg's FLV muxer writes ------------------------------------


def test_ffmpeg_onmetadata_vector() -> None:
    data = (VECTORS / "ffmpeg_onmetadata.amf0").read_bytes()
    name, metadata = decode_all(data)
    assert name == "onMetaData"
    assert isinstance(metadata, EcmaArray)
    assert metadata["width"] == 320.0
    assert metadata["height"] == 240.0
    assert metadata["framerate"] == 30.0
    assert metadata["videocodecid"] == 7.0  # AVC
    assert metadata["audiocodecid"] == 10.0  # AAC
    assert metadata["audiosamplerate"] == 44100.0
    assert metadata["stereo"] is False
    assert metadata["duration"] == pytest.approx(1.067)
    assert isinstance(metadata["encoder"], str) and metadata["encoder"].startswith("Lavf")
    assert len(metadata) == 13
    assert list(metadata)[:2] == ["duration", "width"]  # key order is kept
    assert encode(name, metadata) == data  # byte-exact, ECMA array count included


def test_ffmpeg_onmetadata_vector_one_value_at_a_time() -> None:
    data = (VECTORS / "ffmpeg_onmetadata.amf0").read_bytes()
    name, end = decode(data)
    assert (name, end) == ("onMetaData", 13)
    metadata, end = decode(data, end)
    assert end == len(data) and isinstance(metadata, dict)


# -- RTMP commands (RTMP 7.2), written out by hand -----------------------------------------

# `connect` as older ffmpeg and FMLE sent it when publishing to rtmp://localhost/live.
CONNECT = (
    b"\x02\x00\x07connect"
    b"\x00\x3f\xf0\x00\x00\x00\x00\x00\x00"  # transaction id 1
    b"\x03"
    b"\x00\x03app\x02\x00\x04live"
    b"\x00\x04type\x02\x00\x0anonprivate"
    b"\x00\x08flashVer\x02\x00\x1fFMLE/3.0 (compatible; FMSc/1.0)"
    b"\x00\x06swfUrl\x02\x00\x15rtmp://localhost/live"
    b"\x00\x05tcUrl\x02\x00\x15rtmp://localhost/live"
    b"\x00\x00\x09"
)
CONNECT_OBJECT: dict[str, AmfValue] = {
    "app": "live",
    "type": "nonprivate",
    "flashVer": "FMLE/3.0 (compatible; FMSc/1.0)",
    "swfUrl": "rtmp://localhost/live",
    "tcUrl": "rtmp://localhost/live",
}

# The server's answer to connect: properties and information objects (RTMP 7.2.1.1).
CONNECT_RESULT = (
    b"\x02\x00\x07_result"
    b"\x00\x3f\xf0\x00\x00\x00\x00\x00\x00"
    b"\x03"
    b"\x00\x06fmsVer\x02\x00\x0dFMS/3,0,1,123"
    b"\x00\x0ccapabilities\x00\x40\x3f\x00\x00\x00\x00\x00\x00"  # 31
    b"\x00\x00\x09"
    b"\x03"
    b"\x00\x05level\x02\x00\x06status"
    b"\x00\x04code\x02\x00\x1dNetConnection.Connect.Success"
    b"\x00\x0bdescription\x02\x00\x15Connection succeeded."
    b"\x00\x0eobjectEncoding\x00\x00\x00\x00\x00\x00\x00\x00\x00"
    b"\x00\x00\x09"
)

# createStream's answer: transaction 4, null command object, stream id 1.
CREATE_STREAM_RESULT = (
    b"\x02\x00\x07_result\x00\x40\x10\x00\x00\x00\x00\x00\x00\x05"
    b"\x00\x3f\xf0\x00\x00\x00\x00\x00\x00"
)

# onStatus for publish (RTMP 7.2.2.6): transaction 0, null, an info object.
ON_STATUS = (
    b"\x02\x00\x08onStatus"
    b"\x00\x00\x00\x00\x00\x00\x00\x00\x00"
    b"\x05"
    b"\x03"
    b"\x00\x05level\x02\x00\x06status"
    b"\x00\x04code\x02\x00\x17NetStream.Publish.Start"
    b"\x00\x0bdescription\x02\x00\x10Start publishing"
    b"\x00\x00\x09"
)

COMMAND_VECTORS: list[tuple[bytes, str, float, list[AmfValue]]] = [
    (CONNECT, "connect", 1.0, [CONNECT_OBJECT]),
    (
        CONNECT_RESULT,
        "_result",
        1.0,
        [
            {"fmsVer": "FMS/3,0,1,123", "capabilities": 31.0},
            {
                "level": "status",
                "code": "NetConnection.Connect.Success",
                "description": "Connection succeeded.",
                "objectEncoding": 0.0,
            },
        ],
    ),
    (CREATE_STREAM_RESULT, "_result", 4.0, [None, 1.0]),
    (
        ON_STATUS,
        "onStatus",
        0.0,
        [
            None,
            {
                "level": "status",
                "code": "NetStream.Publish.Start",
                "description": "Start publishing",
            },
        ],
    ),
]


@pytest.mark.parametrize(("data", "name", "tid", "args"), COMMAND_VECTORS)
def test_command_vectors(data: bytes, name: str, tid: float, args: list[AmfValue]) -> None:
    assert decode_command(data) == (name, tid, args)
    assert encode_command(name, tid, *args) == data
    assert encode_command(name, int(tid), *args) == data  # an int transaction id is fine
    # The same values as a type 17 message: a 0x00 format byte in front.
    assert decode_command(b"\x00" + data, amf3=True) == (name, tid, args)


def test_amf3_command_with_switched_values() -> None:
    payload = (
        b"\x00"  # type 17 format byte
        b"\x11\x06\x0fconnect"  # name as an AMF3 string
        b"\x11\x04\x01"  # transaction id as an AMF3 integer
        b"\x11\x0a\x0b\x01\x07app\x06\x09live\x01"  # {app: "live"} as an AMF3 object
        b"\x05"  # an AMF0 null
    )
    assert decode_command(payload, amf3=True) == ("connect", 1.0, [{"app": "live"}, None])


@pytest.mark.parametrize(
    ("payload", "amf3", "reason"),
    [
        (b"", False, "no values"),
        (b"", True, "AMF3 command message is empty"),
        (b"\x02\x00\x07connect", True, "format byte 0x02, expected 0x00"),
        (b"\x00" + f64(1.0), False, "command name must be a string, got float"),
        (b"\x06\x00" + f64(1.0), False, "command name must be a string, got undefined"),
        (b"\x02\x00\x01x", False, "command 'x' has no transaction id"),
        (b"\x02\x00\x01x\x02\x00\x011", False, "transaction id must be a number, got str"),
        (b"\x02\x00\x01x\x01\x01", False, "transaction id must be a number, got bool"),
        (b"\x02\x00\x01x\x05", False, "transaction id must be a number, got NoneType"),
        (
            b"\x02\x00\x01x\x00" + f64(1.0) + b"\x02\x00\x05ab",
            False,
            r"truncated string at offset 16",
        ),
    ],
)
def test_command_errors(payload: bytes, amf3: bool, reason: str) -> None:
    with pytest.raises(AmfError, match=reason):
        decode_command(payload, amf3=amf3)


# -- references ------------------------------------------------------------------------------


def test_amf0_reference_to_a_finished_object() -> None:
    obj = b"\x03\x00\x01a\x00" + f64(1.0) + b"\x00\x00\x09"
    values = decode_all(obj + b"\x0a\x00\x00\x00\x01\x07\x00\x00")
    assert values == [{"a": 1.0}, [{"a": 1.0}]]
    assert values[1][0] is values[0]  # type: ignore[index]


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\x07\x00\x00", r"reference 0 at offset 0 points past the 0 objects"),
        (b"\x03\x00\x01a\x07\x00\x00\x00\x00\x09", r"reference 0 at offset 4 is cyclic"),
        (b"\x0a\x00\x00\x00\x01\x07\x00\x01", r"reference 1 at offset 5 points past"),
    ],
)
def test_amf0_bad_references(data: bytes, reason: str) -> None:
    with pytest.raises(AmfError, match=reason):
        decode(data)


def test_amf3_object_reference() -> None:
    # [obj, ref-to-obj]: the array is object 0, the inner object is object 1.
    data = b"\x11\x09\x05\x01\x0a\x0b\x01\x03a\x04\x01\x01\x0a\x02"
    value, _ = decode(data)
    assert isinstance(value, list) and value == [{"a": 1.0}, {"a": 1.0}]
    assert value[1] is value[0]


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\x11\x09\x03\x01\x09\x00", r"AMF3 object reference 0 at offset 5 is cyclic"),
        (b"\x11\x0a\x02", r"AMF3 object reference 1 at offset 2 points past the 0"),
        (b"\x11\x06\x02", r"AMF3 string reference 1 at offset 2 points past the 0 strings"),
        (b"\x11\x0a\x05", r"AMF3 traits reference 1 at offset 2 points past the 0 traits"),
        (b"\x11\x0c\x00", r"AMF3 object reference 0 at offset 2 points past"),
    ],
)
def test_amf3_bad_references(data: bytes, reason: str) -> None:
    with pytest.raises(AmfError, match=reason):
        decode(data)


def test_each_avmplus_switch_starts_fresh_amf3_tables() -> None:
    # The second value refers to string 0 of the first switch's table: not visible there.
    with pytest.raises(AmfError, match="string reference 0"):
        decode_all(b"\x11\x06\x07abc\x11\x06\x00")


# -- the size budget -------------------------------------------------------------------------


def tree_size(value: object) -> int:
    """The size the budget bounds, by walking the value as a tree (shared nodes again)."""
    if isinstance(value, str | bytes):
        return 1 + len(value)
    if isinstance(value, dict):
        return 1 + sum(len(k) + tree_size(v) for k, v in value.items())
    if isinstance(value, list):
        return 1 + sum(tree_size(v) for v in value)
    return 1


def u29(n: int) -> bytes:
    """AMF3 1.3.1, up to 21 bits (all these tests need)."""
    if n < 0x80:
        return bytes((n,))
    if n < 0x4000:
        return bytes((0x80 | n >> 7, n & 0x7F))
    return bytes((0x80 | n >> 14, 0x80 | (n >> 7) & 0x7F, n & 0x7F))


def amf0_reference_bomb(levels: int) -> bytes:
    """The hostile `connect` of issue 12 (app is `levels` of shared references)."""
    return shared_reference_connect(levels)


def amf3_reference_bomb(levels: int) -> bytes:
    """The same through the avmplus switch: a dense array [o0, o1, ...] where o(k) has the
    dynamic members a and b, both references to o(k-1) (AMF3 object table: the array is
    entry 0, o(k) is entry k + 1)."""
    body = b"\x11\x09" + u29((levels + 1) << 1 | 1) + b"\x01"
    body += b"\x0a\x0b\x01\x01"  # o0 = {} (dynamic, anonymous, no sealed members)
    for k in range(1, levels + 1):
        ref = u29(k << 1)  # the reference bit clear: object entry k
        body += b"\x0a\x0b\x01\x03a\x0a" + ref + b"\x03b\x0a" + ref + b"\x01"
    return body


def test_a_shared_reference_bomb_is_refused_by_the_budget() -> None:
    bomb = amf0_reference_bomb(40)
    assert len(bomb) < 1024  # the attack of issue 12: under 1 KB
    with pytest.raises(AmfError, match=rf"decoded size pass max_size={MAX_DECODED_SIZE}"):
        decode_command(bomb)
    with pytest.raises(AmfError, match="max_size"):
        decode_command(b"\x00" + bomb, amf3=True)


def test_an_amf3_reference_bomb_is_refused_by_the_budget() -> None:
    with pytest.raises(AmfError, match=r"offset \d+ makes the decoded size pass max_size"):
        decode(amf3_reference_bomb(60))


@pytest.mark.parametrize("levels", [0, 1, 5, 12])
@pytest.mark.parametrize("bomb", [amf0_reference_bomb, amf3_reference_bomb])
def test_budget_boundary_is_the_size_of_the_tree(bomb: Callable[[int], bytes],
                                                 levels: int) -> None:
    data = bomb(levels)
    values = decode_all(data)
    size = sum(tree_size(v) for v in values)
    assert decode_all(data, max_size=size) == values  # exactly the budget: accepted
    with pytest.raises(AmfError, match=f"max_size={size - 1}"):
        decode_all(data, max_size=size - 1)


def test_string_references_count_their_length_each_time() -> None:
    # A 1,000-character string and 300 AMF3 references to it: 300,000 characters as text.
    data = (b"\x11\x09" + u29(603 << 1 | 1) + b"\x01"  # a dense array of 603 entries
            + b"\x06" + u29(1000 << 1 | 1) + b"s" * 1000  # the string, inline
            + b"\x06\x00" * 602)  # string reference 0, 602 times
    assert len(data) < 2400
    with pytest.raises(AmfError, match="max_size"):
        decode(data)
    value, _ = decode(data, max_size=1 + 603 * 1001)
    assert isinstance(value, list) and len(value) == 603


def test_traits_references_count_the_member_names_of_each_instance() -> None:
    # One sealed member with a 60,000-character name, then 9 instances by traits reference.
    name = "n" * 60_000
    first = b"\x0a\x13\x01" + u29(60_000 << 1 | 1) + name.encode() + b"\x01"
    again = b"\x0a\x01\x01"  # traits reference 0, member value null
    data = b"\x11\x09\x15\x01" + first + again * 9
    assert decode(data, max_size=1 + 10 * (1 + 60_001))[0] == [{name: None}] * 10
    with pytest.raises(AmfError, match="max_size"):
        decode(data)


def test_budget_spans_all_values_of_one_message() -> None:
    values = ["x" * 99] * 3  # 100 each
    assert decode_all(encode(*values), max_size=300) == values
    with pytest.raises(AmfError, match="max_size=299"):
        decode_all(encode(*values), max_size=299)


# -- unsupported and malformed input ---------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\x04", r"unsupported AMF0 marker 0x04 \(movieclip\) at offset 0"),
        (b"\x09", r"unsupported AMF0 marker 0x09 \(object-end\) at offset 0"),
        (b"\x0d", r"unsupported AMF0 marker 0x0d \(unsupported\) at offset 0"),
        (b"\x0e", r"unsupported AMF0 marker 0x0e \(recordset\) at offset 0"),
        (b"\x05\x12", r"unsupported AMF0 marker 0x12 \(unknown\) at offset 1"),
        (b"\x11\x0d\x03\x00", r"unsupported AMF3 marker 0x0d \(vector-int\) at offset 1"),
        (b"\x11\x11\x03\x00", r"unsupported AMF3 marker 0x11 \(dictionary\) at offset 1"),
        (b"\x11\x0a\x07\x07Foo", r"externalizable object of class 'Foo' at offset 1"),
        (b"\x02\x00\x02\xc3\x28", r"string at offset 3 is not valid UTF-8"),
        (b"\x03\x00\x01\xff\x05\x00\x00\x09", r"object key at offset 3 is not valid UTF-8"),
        (b"\x0b" + f64(math.nan) + b"\x00\x00", r"date at offset 1 is nan milliseconds"),
        (b"\x0b" + f64(1e300) + b"\x00\x00", r"date at offset 1 .* is out of range"),
        (b"\x03\x00\x01a", r"truncated object member marker at offset 4"),
    ],
)
def test_malformed_input(data: bytes, reason: str) -> None:
    with pytest.raises(AmfError, match=reason):
        decode_all(data)


def test_huge_declared_counts_fail_before_any_work() -> None:
    with pytest.raises(AmfError, match="declares 4294967295 elements, only 3 bytes left"):
        decode(b"\x0a\xff\xff\xff\xff\x05\x05\x05")
    with pytest.raises(AmfError, match="declares 268435455 elements, only 1 bytes left"):
        decode(b"\x11\x09\xff\xff\xff\xff\x01\x05")  # AMF3 dense count 2**28-1
    with pytest.raises(AmfError, match="declares 16777215 elements, only 0 bytes left"):
        decode(b"\x11\x0a\xbf\xff\xff\xf3\x01")  # AMF3 sealed member count 2**24-1
    with pytest.raises(AmfError, match="truncated long string at offset 5: needs 4294967295"):
        decode(b"\x0c\xff\xff\xff\xffab")
    with pytest.raises(AmfError, match="truncated AMF3 byte array at offset 6: needs 134217727"):
        decode(b"\x11\x0c\xbf\xff\xff\xff")


def nested_lists(depth: int, leaf: AmfValue = None) -> AmfValue:
    value = leaf
    for _ in range(depth):
        value = [value]
    return value


def test_nesting_bound() -> None:
    deepest = nested_lists(MAX_DEPTH)
    assert decode(encode(deepest))[0] == deepest
    with pytest.raises(AmfError, match=f"nests deeper than {MAX_DEPTH}"):
        encode(nested_lists(MAX_DEPTH + 1))
    too_deep = b"\x0a\x00\x00\x00\x01" * (MAX_DEPTH + 1) + b"\x05"
    with pytest.raises(AmfError, match=rf"marker 0x0a at offset {5 * MAX_DEPTH} nests deeper"):
        decode(too_deep)
    objects = b"\x03\x00\x01k" * (MAX_DEPTH + 1)
    with pytest.raises(AmfError, match=r"marker 0x03 .* nests deeper"):
        decode(objects)
    amf3 = b"\x11" + b"\x09\x03\x01" * (MAX_DEPTH + 1) + b"\x01"
    with pytest.raises(AmfError, match=r"AMF3 marker 0x09 .* nests deeper"):
        decode(amf3)
    # The avmplus switch for a byte array at the deepest level is not a level of its own.
    deepest_bytes = nested_lists(MAX_DEPTH, b"x")
    assert decode(encode(deepest_bytes))[0] == deepest_bytes


def test_cycles_are_refused_when_encoding() -> None:
    cyclic: list[AmfValue] = []
    cyclic.append(cyclic)
    with pytest.raises(AmfError, match="nests deeper"):
        encode(cyclic)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ({1: "a"}, r"object key 1 is a int, not a string"),
        ({"k": {1, 2}}, r"cannot encode a set as AMF0"),
        (object(), r"cannot encode a object as AMF0"),
        ("\ud800", r"string cannot be encoded as UTF-8"),
        ({"\ud800": 1}, r"object key cannot be encoded as UTF-8"),
        ({"k" * 65536: 1}, r"object key of 65536 bytes is longer than 65535"),
        (dt.datetime(2024, 1, 1), r"naive; pass a timezone-aware datetime"),
        (10**400, r"too large for an AMF number"),
    ],
)
def test_unencodable_values(value: object, reason: str) -> None:
    with pytest.raises(AmfError, match=reason):
        encode(value)  # type: ignore[arg-type]


def test_undefined_is_a_falsy_singleton() -> None:
    assert Undefined() is UNDEFINED
    assert pickle.loads(pickle.dumps(UNDEFINED)) is UNDEFINED
    assert copy.deepcopy([UNDEFINED])[0] is UNDEFINED
    assert not UNDEFINED
    assert repr(UNDEFINED) == "UNDEFINED"
    assert repr(EcmaArray({"a": 1.0})) == "EcmaArray({'a': 1.0})"


def test_ints_encode_as_numbers_and_tuples_as_strict_arrays() -> None:
    assert encode(7) == encode(7.0)
    assert encode((1, "a")) == encode([1.0, "a"])  # type: ignore[arg-type]  # runtime leniency
    assert encode(dt.datetime(1970, 1, 1, 1, tzinfo=dt.timezone(dt.timedelta(hours=1)))) == (
        b"\x0b" + bytes(8) + b"\x00\x00"
    )


# -- Hypothesis ------------------------------------------------------------------------------

ms_datetimes = st.datetimes(
    min_value=dt.datetime(1, 1, 1), max_value=dt.datetime(9999, 12, 31), timezones=st.just(UTC)
).map(lambda d: d.replace(microsecond=d.microsecond // 1000 * 1000))  # AMF dates carry ms

scalars = (
    st.none()
    | st.just(UNDEFINED)
    | st.booleans()
    | st.floats(allow_nan=False)
    | st.integers(min_value=-(2**53), max_value=2**53)
    | st.text()
    | st.binary(max_size=64)
    | ms_datetimes
)

amf_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=5)
        | st.dictionaries(st.text(max_size=8), children, max_size=5)
        | st.dictionaries(st.text(max_size=8), children, max_size=5).map(EcmaArray)
    ),
    max_leaves=20,
)


def canonical(value: object) -> object:
    """A form where equality also means same AMF type, same key order, same sign of zero."""
    if isinstance(value, bool) or value is None or value is UNDEFINED:
        return (type(value).__name__, value)
    if isinstance(value, int | float):
        return ("number", float(value), math.copysign(1.0, float(value)))
    if isinstance(value, EcmaArray):
        return ("ecma", [(k, canonical(v)) for k, v in value.items()])
    if isinstance(value, dict):
        return ("object", [(k, canonical(v)) for k, v in value.items()])
    if isinstance(value, list | tuple):
        return ("array", [canonical(v) for v in value])
    if isinstance(value, dt.datetime):
        return ("date", value.timestamp())
    return (type(value).__name__, value)


def same(a: object, b: object) -> bool:
    return canonical(a) == canonical(b)


@given(amf_values)
def test_round_trip(value: AmfValue) -> None:
    data = encode(value)
    decoded, end = decode(data)
    assert end == len(data)
    assert same(decoded, value)
    assert encode(decoded) == data


@given(amf_values)
def test_without_references_the_budget_is_the_tree_size_and_never_the_length(
        value: AmfValue) -> None:
    data = encode(value)
    size = tree_size(decode(data)[0])
    assert size <= len(data)  # so a budget of the message length never refuses it
    assert same(decode(data, max_size=size)[0], value)
    with pytest.raises(AmfError, match="max_size"):
        decode(data, max_size=size - 1)


@given(st.lists(amf_values, max_size=4), st.binary(max_size=16))
def test_round_trip_sequences_and_commands(values: list[AmfValue], tail: bytes) -> None:
    assert same(decode_all(encode(*values)), values)
    data = encode_command("cmd", 3, *values)
    name, tid, args = decode_command(data)
    assert (name, tid) == ("cmd", 3.0) and same(args, values)
    assert decode_command(b"\x00" + data, amf3=True)[2] == args


@settings(max_examples=300)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_decode_or_fail_cleanly(data: bytes) -> None:
    check_decodes_or_fails_cleanly(data)


@settings(max_examples=300)
@given(amf_values, st.data())
def test_damaged_encodings_decode_or_fail_cleanly(value: AmfValue, data: st.DataObject) -> None:
    encoded = bytearray(encode(value))
    for _ in range(data.draw(st.integers(min_value=1, max_value=3))):
        position = data.draw(st.integers(min_value=0, max_value=len(encoded) - 1))
        encoded[position] = data.draw(st.integers(min_value=0, max_value=255))
    cut = data.draw(st.integers(min_value=0, max_value=len(encoded)))
    check_decodes_or_fails_cleanly(bytes(encoded[:cut]))


def check_decodes_or_fails_cleanly(data: bytes) -> None:
    for attempt in (decode_all, decode_command, lambda d: decode_command(d, amf3=True)):
        try:
            attempt(data)
        except AmfError as exc:
            assert str(exc) and "\n" not in str(exc)
