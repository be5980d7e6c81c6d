"""AudioSpecificConfig (ISO 14496-3 1.6.2.1), from ffmpeg's bytes and built field by field."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relay.media.aac import (
    SAMPLING_FREQUENCIES,
    aac_audio_config,
    parse_audio_specific_config,
)
from relay.media.units import Codec, MediaFormatError
from tests.media.helpers.bitreader import BitWriter


def asc(aot: int, rate_index: int, channels: int, *, explicit_rate: int | None = None,
        ga: str = "000") -> BitWriter:
    """The start of an AudioSpecificConfig, with a GASpecificConfig of `ga` bits."""
    w = BitWriter()
    write_aot(w, aot)
    w.u(4, rate_index)
    if rate_index == 15:
        assert explicit_rate is not None
        w.u(24, explicit_rate)
    w.u(4, channels)
    return w.bits(ga)


def write_aot(w: BitWriter, aot: int) -> None:
    if aot >= 32:
        w.u(5, 31).u(6, aot - 32)
    else:
        w.u(5, aot)


def padded(w: BitWriter) -> bytes:
    return w.u(-w.size % 8, 0).to_bytes()


# (name, config bytes, audio object type, sample rate, channels, sbr, ps)
CASES = [
    ("ffmpeg 48 kHz stereo LC", bytes.fromhex("1190"), 2, 48000, 2, False, False),
    ("ffmpeg 44.1 kHz mono LC", bytes.fromhex("1208"), 2, 44100, 1, False, False),
    # What ffmpeg's aac encoder really sends: the 0x2b7 sync extension saying "no SBR".
    ("ffmpeg with SBR-absent sync extension", bytes.fromhex("119056e500"), 2, 48000, 2, False,
     False),
    ("AAC Main 96 kHz 5.1", padded(asc(1, 0, 6)), 1, 96000, 6, False, False),
    ("7350 Hz, 7.1 (channelConfiguration 7)", padded(asc(2, 12, 7)), 2, 7350, 8, False, False),
    ("channelConfiguration 11 is 6.1", padded(asc(2, 3, 11)), 2, 48000, 7, False, False),
    ("channelConfiguration 13 is 22.2", padded(asc(2, 3, 13)), 2, 48000, 24, False, False),
    ("explicit 24-bit frequency", padded(asc(2, 15, 2, explicit_rate=12345)), 2, 12345, 2,
     False, False),
    ("explicit HE-AAC (object type 5)",
     padded(asc(5, 6, 2, ga="").u(4, 3).u(5, 2).bits("000")), 5, 48000, 2, True, False),
    ("explicit HE-AAC v2 (object type 29), mono core",
     padded(asc(29, 7, 1, ga="").u(4, 4).u(5, 2).bits("000")), 29, 44100, 2, True, True),
    ("explicit SBR with an explicit extension frequency",
     padded(asc(5, 8, 1, ga="").u(4, 15).u(24, 32001).u(5, 2).bits("000")), 5, 32001, 1,
     True, False),
    ("backward-compatible SBR",
     padded(asc(2, 6, 2).u(11, 0x2B7).u(5, 5).u(1, 1).u(4, 3)), 2, 48000, 2, True, False),
    ("backward-compatible SBR and PS",
     padded(asc(2, 6, 1).u(11, 0x2B7).u(5, 5).u(1, 1).u(4, 3).u(11, 0x548).u(1, 1)), 2,
     48000, 2, True, True),
    ("sync extension with another type is ignored",
     padded(asc(2, 6, 2).u(11, 0x123).u(5, 5).u(1, 1).u(4, 3)), 2, 24000, 2, False, False),
    ("dependsOnCoreCoder delay", padded(asc(2, 3, 2, ga="0" + "1" + "0" * 14 + "0")
                                        .u(11, 0x2B7).u(5, 5).u(1, 1).u(4, 0)),
     2, 96000, 2, True, False),
    ("ER AAC LC extension flags", padded(asc(17, 4, 2, ga="001" + "111" + "0")), 17, 44100,
     2, False, False),
    ("AAC scalable layerNr", padded(asc(6, 4, 1, ga="000" + "101")), 6, 44100, 1, False,
     False),
    ("ER BSAC extension", padded(asc(22, 4, 2, ga="001" + "1" * 16 + "0")), 22, 44100, 2,
     False, False),
    ("escaped object type 42 (USAC)", padded(asc(42, 3, 2, ga="")), 42, 48000, 2, False,
     False),
]


@pytest.mark.parametrize(("config", "aot", "rate", "channels", "sbr", "ps"),
                         [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_audio_specific_config(config: bytes, aot: int, rate: int, channels: int, sbr: bool,
                               ps: bool) -> None:
    parsed = parse_audio_specific_config(config)
    assert (parsed.audio_object_type, parsed.sample_rate, parsed.channels) == (aot, rate,
                                                                               channels)
    assert (parsed.sbr, parsed.ps) == (sbr, ps)
    audio = aac_audio_config(config)
    assert audio.codec is Codec.AAC and audio.record == config
    assert (audio.sample_rate, audio.channels, audio.codecs) == (rate, channels,
                                                                 f"mp4a.40.{aot}")


def program_config_element(front: list[bool], side: list[bool], back: list[bool], lfe: int,
                           comment: bytes, start_bits: int) -> tuple[BitWriter, int]:
    """A PCE (4.4.1.1) that starts `start_bits` into the AudioSpecificConfig, and the bits of
    its byte_alignment(); each element is True for a channel pair, False for one channel."""
    w = BitWriter().u(4, 0).u(2, 1).u(4, 3)
    w.u(4, len(front)).u(4, len(side)).u(4, len(back)).u(2, lfe).u(3, 1).u(4, 2)
    w.bits("1" "0110" "1" "0101" "1" "01" "1")  # mono, stereo and matrix mixdowns present
    for is_cpe in (*front, *side, *back):
        w.flag(is_cpe).u(4, 0)
    w.u(4 * lfe, 0).u(4, 0).u(5 * 2, 0)  # lfe tags, one assoc data tag, two cc elements
    alignment = -(start_bits + w.size) % 8
    w.u(alignment, 0)  # byte_alignment()
    w.u(8, len(comment))
    for byte in comment:
        w.u(8, byte)
    return w, alignment


def test_channels_from_a_program_config_element() -> None:
    head = asc(2, 3, 0)  # channelConfiguration 0, then GASpecificConfig 000, then the PCE
    pce, alignment = program_config_element([False, True], [True], [True], 1, b"relay",
                                            head.size)
    assert alignment != 0
    config = padded(head.append(pce))
    parsed = parse_audio_specific_config(config)
    assert parsed.channels == 1 + 2 + 2 + 2 + 1
    assert parsed.sample_rate == 48000


def test_program_config_element_then_sync_extension() -> None:
    # The sync extension after a PCE is only found if the PCE was skipped to the exact bit.
    head = asc(2, 6, 0)
    pce, alignment = program_config_element([True], [], [], 1, b"x" * 3, head.size)
    assert alignment != 0
    head.append(pce).u(11, 0x2B7).u(5, 5).u(1, 1).u(4, 3)
    parsed = parse_audio_specific_config(padded(head))
    assert (parsed.channels, parsed.sample_rate, parsed.sbr) == (3, 48000, True)


@pytest.mark.parametrize(("config", "message"), [
    (b"", "AudioSpecificConfig is truncated"),
    (b"\x11", "AudioSpecificConfig is truncated"),
    (padded(asc(0, 3, 2)), "audio object type 0 \\(null\\) is not a codec"),
    (padded(asc(2, 13, 2)), "samplingFrequencyIndex 13 is reserved"),
    (padded(asc(2, 14, 2)), "samplingFrequencyIndex 14 is reserved"),
    (padded(asc(2, 15, 2, explicit_rate=0)), "explicit sampling frequency is 0"),
    (padded(asc(2, 3, 8)), "channelConfiguration 8 is reserved"),
    (padded(asc(2, 3, 15)), "channelConfiguration 15 is reserved"),
    (padded(asc(5, 3, 2, ga="").u(4, 13).u(5, 2).bits("000")),
     "extensionSamplingFrequencyIndex 13 is reserved"),
    (padded(asc(42, 3, 0, ga="")), r"no channels \(channelConfiguration 0, audio object type "
                                   r"42\)"),
    (padded(asc(2, 3, 0)), "AudioSpecificConfig is truncated"),  # PCE missing
])
def test_bad_config(config: bytes, message: str) -> None:
    with pytest.raises(MediaFormatError, match=message):
        parse_audio_specific_config(config)


def test_every_sampling_frequency_index() -> None:
    for index, rate in enumerate(SAMPLING_FREQUENCIES):
        assert parse_audio_specific_config(padded(asc(2, index, 2))).sample_rate == rate
    assert len(SAMPLING_FREQUENCIES) == 13


@given(st.binary(max_size=12))
def test_any_bytes_parse_or_raise_media_format_error(data: bytes) -> None:
    try:
        parsed = parse_audio_specific_config(data)
    except MediaFormatError:
        return
    assert parsed.sample_rate > 0 and parsed.channels > 0
