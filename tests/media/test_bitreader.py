"""BitReader and nal_to_rbsp, and `BitWriter`, the test-side writer the SPS tests build with."""

from __future__ import annotations

import tracemalloc

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relay.media.bitreader import BitReader, nal_to_rbsp
from relay.media.units import MediaFormatError
from tests.media.helpers.bitreader import BitWriter, add_emulation_prevention

# -- BitReader --

UE_TABLE = [(0, "1"), (1, "010"), (2, "011"), (3, "00100"), (4, "00101"), (6, "00111"),
            (7, "0001000"), (254, "000000011111111")]
SE_TABLE = [(0, "1"), (1, "010"), (-1, "011"), (2, "00100"), (-2, "00101"), (3, "00110")]


@pytest.mark.parametrize(("value", "code"), UE_TABLE)
def test_ue_codes_from_h264_table_9_2(value: int, code: str) -> None:
    data = BitWriter().bits(code).trailing_bits().to_bytes()
    reader = BitReader(data, "test")
    assert reader.ue() == value
    assert reader.position == len(code)


@pytest.mark.parametrize(("value", "code"), SE_TABLE)
def test_se_codes_from_h264_table_9_3(value: int, code: str) -> None:
    reader = BitReader(BitWriter().bits(code).trailing_bits().to_bytes(), "test")
    assert reader.se() == value


def test_fixed_width_fields_are_msb_first() -> None:
    reader = BitReader(bytes([0b10110001, 0xFF]), "test")
    assert reader.u(1) == 1
    assert reader.u(3) == 0b011
    assert reader.flag() is False
    assert reader.u(7) == 0b0011111
    assert reader.bits_left == 4
    reader.skip(4)
    assert reader.bits_left == 0


def test_u0_reads_nothing() -> None:
    reader = BitReader(b"\x80", "test")
    assert reader.u(0) == 0
    assert reader.position == 0


def test_reading_past_the_end_names_the_structure_and_position() -> None:
    reader = BitReader(b"\xff", "H.264 SPS")
    reader.u(6)
    with pytest.raises(MediaFormatError, match=r"H\.264 SPS is truncated: needed 3 more bits "
                                               r"at bit 6 of 8"):
        reader.u(3)


def test_exp_golomb_without_stop_bit_is_truncated() -> None:
    reader = BitReader(b"\x00\x00", "SPS")
    with pytest.raises(MediaFormatError, match="no stop bit"):
        reader.ue()


def test_exp_golomb_with_its_suffix_cut_off_is_truncated() -> None:
    reader = BitReader(bytes([0b00001000]), "SPS")  # 4 zeros, the 1, then 3 of 4 suffix bits
    with pytest.raises(MediaFormatError, match="truncated"):
        reader.ue()


def test_exp_golomb_longer_than_32_bits_is_rejected() -> None:
    data = BitWriter().u(32, 0).u(1, 1).u(32, 0).trailing_bits().to_bytes()
    with pytest.raises(MediaFormatError, match="32 leading zeros"):
        BitReader(data, "SPS").ue()


def test_an_exp_golomb_code_costs_the_same_however_much_input_follows_it() -> None:
    # Each code used to mask all of the input left after it: an input-sized integer per code,
    # so a 64 KiB parameter set with a few thousand codes cost ~100 ms. Measured in memory
    # (deterministic), not time: the largest object made while reading codes.
    reader = BitReader(b"\xff" * 65536, "SPS")
    tracemalloc.start()
    try:
        assert [reader.ue() for _ in range(64)] == [0] * 64
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4096


def test_largest_32_bit_exp_golomb_value() -> None:
    data = BitWriter().ue(2**32 - 2).trailing_bits().to_bytes()
    assert BitReader(data, "SPS").ue() == 2**32 - 2


def test_ue_max_and_se_range_name_the_field() -> None:
    data = BitWriter().ue(32).se(-9).trailing_bits().to_bytes()
    reader = BitReader(data, "H.264 SPS")
    with pytest.raises(MediaFormatError,
                       match=r"H\.264 SPS: seq_parameter_set_id = 32 is out of range 0\.\.31"):
        reader.ue_max(31, "seq_parameter_set_id")
    with pytest.raises(MediaFormatError, match=r"delta = -9 is out of range -8\.\.8"):
        reader.se_range(-8, 8, "delta")


@given(st.lists(st.tuples(st.sampled_from(["u", "ue", "se"]), st.integers(0, 2**20)),
                max_size=40))
def test_writer_and_reader_round_trip(fields: list[tuple[str, int]]) -> None:
    writer = BitWriter()
    expected = []
    for kind, raw in fields:
        if kind == "u":
            writer.u(21, raw)
            expected.append(raw)
        elif kind == "ue":
            writer.ue(raw)
            expected.append(raw)
        else:
            value = raw - 2**19
            writer.se(value)
            expected.append(value)
    reader = BitReader(writer.trailing_bits().to_bytes(), "test")
    got = [reader.u(21) if kind == "u" else reader.ue() if kind == "ue" else reader.se()
           for kind, _ in fields]
    assert got == expected


# -- emulation prevention --

@pytest.mark.parametrize(("nal", "rbsp"), [
    (b"\x67\x42\x00\x1e", b"\x67\x42\x00\x1e"),
    (b"\x00\x00\x03\x01", b"\x00\x00\x01"),
    (b"\x00\x00\x03\x00\x00\x03\x00", b"\x00\x00\x00\x00\x00"),
    (b"\x10\x00\x00\x03", b"\x10\x00\x00"),  # cabac_zero_word style trailing 0x03
    (b"\x00\x00\x03\x03", b"\x00\x00\x03"),  # the byte after a dropped 0x03 is data
])
def test_nal_to_rbsp(nal: bytes, rbsp: bytes) -> None:
    assert nal_to_rbsp(nal) == rbsp


@given(st.binary(max_size=64))
def test_emulation_prevention_round_trip(rbsp: bytes) -> None:
    assert nal_to_rbsp(add_emulation_prevention(rbsp)) == rbsp
