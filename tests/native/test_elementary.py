"""relay._native.elementary: Annex-B to length-prefixed conversion and ADTS frame splitting,
checked against small pure-Python models of the two byte formats."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relay._native.elementary import (
    ADTS_MAX_FRAME_SIZE,
    AnnexBError,
    annexb_to_length_prefixed,
    split_adts,
)
from tests.media.helpers.bitreader import add_emulation_prevention


@st.composite
def nal_unit(draw: st.DrawFn, hevc: bool) -> bytes:
    nal_type = draw(st.integers(0, 63 if hevc else 31))
    header = bytes(((nal_type << 1), 1)) if hevc else bytes((draw(st.integers(0, 3)) << 5
                                                             | nal_type,))
    body = draw(st.binary(max_size=40))
    # rbsp_trailing_bits: the NAL unit's last byte is never 0x00.
    return header + add_emulation_prevention(body + b"\x80")


@st.composite
def access_unit(draw: st.DrawFn) -> tuple[bool, list[bytes], bytes]:
    hevc = draw(st.booleans())
    nals = draw(st.lists(nal_unit(hevc), min_size=1, max_size=12))
    stream = bytearray(b"\x00" * draw(st.integers(0, 3)))  # leading_zero_8bits
    for nal in nals:
        stream += draw(st.sampled_from([b"\x00\x00\x01", b"\x00\x00\x00\x01"]))
        stream += nal
        stream += b"\x00" * draw(st.integers(0, 2))  # trailing_zero_8bits
    return hevc, nals, bytes(stream)


def nal_type(nal: bytes, hevc: bool) -> int:
    return (nal[0] >> 1) & 0x3F if hevc else nal[0] & 0x1F


@given(access_unit(), st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1))
def test_annexb_conversion_matches_model(case: tuple[bool, list[bytes], bytes], drop: int,
                                         copy: int) -> None:
    hevc, nals, stream = case
    sample, types, copies = annexb_to_length_prefixed(stream, hevc, drop, copy, 64)
    kept = [nal for nal in nals if not drop >> nal_type(nal, hevc) & 1]
    assert sample == b"".join(len(nal).to_bytes(4, "big") + nal for nal in kept)
    assert types == sum({1 << nal_type(nal, hevc) for nal in nals})
    assert copies == [nal for nal in nals if copy >> nal_type(nal, hevc) & 1]
    # Any buffer works, and the input is not changed.
    assert annexb_to_length_prefixed(memoryview(bytearray(stream)), hevc, drop, copy, 64)[0] \
        == sample


def test_emulation_prevention_bytes_stay() -> None:
    nal = b"\x65\x00\x00\x03\x01\x88"
    sample, _, _ = annexb_to_length_prefixed(b"\x00\x00\x00\x01" + nal, False, 0, 0, 8)
    assert sample == b"\x00\x00\x00\x06" + nal


def test_empty_nal_units_are_skipped() -> None:
    stream = b"\x00\x00\x01\x00\x00\x01\x09\xf0\x00\x00\x00\x01\x00\x00\x01\x65\x88"
    sample, types, _ = annexb_to_length_prefixed(stream, False, 0, 0, 8)
    assert sample == b"\x00\x00\x00\x02\x09\xf0\x00\x00\x00\x02\x65\x88"
    assert types == (1 << 9) | (1 << 5)


@pytest.mark.parametrize(("stream", "hevc", "reason"), [
    (b"", False, "no start code"),
    (b"\x65\x88\x99", False, "no start code"),
    (b"\x00\x07\x00\x00\x01\x65", False, "byte 1 is 0x07"),
    (b"\x00\x00\x01\xe5\x88", False, "forbidden_zero_bit"),
    (b"\x00\x00\x01\x26", True, "shorter than its 2-byte header"),
])
def test_annexb_errors(stream: bytes, hevc: bool, reason: str) -> None:
    with pytest.raises(AnnexBError, match=reason):
        annexb_to_length_prefixed(stream, hevc, 0, 0, 8)


def test_nal_unit_limit() -> None:
    stream = b"\x00\x00\x01\x06\x80" * 9
    assert len(annexb_to_length_prefixed(stream, False, 0, 0, 9)[0]) == 9 * 6
    with pytest.raises(AnnexBError, match="more than 8 NAL units"):
        annexb_to_length_prefixed(stream, False, 0, 0, 8)


# -- ADTS -------------------------------------------------------------------------------

def adts_frame(payload: bytes, *, crc: bool = False, profile: int = 1, sampling_index: int = 3,
               channels: int = 2, blocks: int = 0) -> bytes:
    """ISO 13818-7 6.2 adts_fixed_header + adts_variable_header (+ crc_check) + payload."""
    header_size = 9 if crc else 7
    length = header_size + len(payload)
    bits = (0xFFF << 44 | 0 << 43 | 0 << 41 | (0 if crc else 1) << 40 | profile << 38
            | sampling_index << 34 | channels << 30 | length << 13 | 0x7FF << 2 | blocks)
    return bits.to_bytes(7, "big") + (b"\x12\x34" if crc else b"") + payload


def packed(profile: int = 1, sampling_index: int = 3, channels: int = 2, blocks: int = 0) -> int:
    return profile << 9 | sampling_index << 5 | channels << 2 | blocks


def test_adts_frames_and_tail() -> None:
    one = adts_frame(b"\x21" * 10)
    two = adts_frame(b"\x22" * 5, crc=True, channels=1, sampling_index=4)
    three = adts_frame(b"\x23" * 30)
    data = one + two + three[:12]
    frames, consumed, skipped = split_adts(data)
    assert frames == [(0, 7, 17, packed()),
                      (17, 26, 31, packed(channels=1, sampling_index=4))]
    assert (consumed, skipped) == (31, 0)
    frames, consumed, skipped = split_adts(data[consumed:] + three[12:])
    assert frames == [(0, 7, 37, packed())] and consumed == 37


@pytest.mark.parametrize("tail", [b"\xff", b"\xff\xf1", b"\xff\xf1\x4c\x80\x02"])
def test_adts_partial_header_is_kept(tail: bytes) -> None:
    frames, consumed, skipped = split_adts(adts_frame(b"\x01") + tail)
    assert len(frames) == 1 and consumed == 8 and skipped == 0


def test_adts_resynchronises_over_garbage() -> None:
    frame = adts_frame(b"\x55" * 20)
    bad_rate = adts_frame(b"\x55", sampling_index=13)  # reserved index: not a header
    bad_layer = b"\xff\xf6\x4c\x80\x01\x5f\xfc"
    not_followed = adts_frame(b"\x55\x55\x55") + b"\x00"  # no syncword after it
    garbage = b"\x00\xff\x12" + bad_layer + bad_rate + not_followed
    frames, consumed, skipped = split_adts(garbage + frame + b"\xff\xf1")
    assert frames == [(len(garbage), len(garbage) + 7, len(garbage) + 27, packed())]
    assert consumed == len(garbage) + len(frame)  # the next header's start is kept
    assert skipped == len(garbage)
    # Bytes after a frame that cannot start the next one unmask a false header: the frame
    # is not taken, and its bytes are skipped.
    frames, consumed, skipped = split_adts(frame + b"\x01\x02")
    assert frames == [] and consumed == skipped == len(frame) + 2


@given(st.lists(st.binary(min_size=1, max_size=60), max_size=8), st.binary(max_size=30),
       st.integers(0, 400))
def test_adts_split_anywhere(payloads: list[bytes], garbage: bytes, cut: int) -> None:
    stream = garbage.replace(b"\xff", b"\x00") + b"".join(adts_frame(p) for p in payloads)
    cut = min(cut, len(stream))
    found: list[bytes] = []
    frames, consumed, _ = split_adts(stream[:cut])
    found += [stream[start:end] for _, start, end, _ in frames]
    held = stream[consumed:cut]
    assert len(held) <= ADTS_MAX_FRAME_SIZE
    rest = held + stream[cut:]
    frames, consumed, _ = split_adts(rest)
    found += [rest[start:end] for _, start, end, _ in frames]
    assert found == payloads
    assert consumed == len(rest)
