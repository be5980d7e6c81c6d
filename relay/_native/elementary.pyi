"""Typed stubs for relay._native.elementary (built from native/elementary.pyx)."""

from typing import Final

from typing_extensions import Buffer

__all__ = [
    "ADTS_MAX_FRAME_SIZE",
    "LENGTH_SIZE",
    "AnnexBError",
    "annexb_to_length_prefixed",
    "split_adts",
]

#: Bytes of the length field before each NAL unit in a converted sample.
LENGTH_SIZE: Final[int]
#: aac_frame_length is 13 bits: the longest ADTS frame, header included.
ADTS_MAX_FRAME_SIZE: Final[int]

class AnnexBError(ValueError):
    """An access unit that is not a valid Annex-B byte stream; str(exc) names what and where."""

def annexb_to_length_prefixed(
    data: Buffer, hevc: bool, drop_types: int, copy_types: int, max_nal_units: int
) -> tuple[bytes, int, list[bytes]]:
    """(length-prefixed sample without `drop_types`, mask of NAL types seen, copies of the NAL
    units of `copy_types`); raises AnnexBError."""

def split_adts(data: Buffer) -> tuple[list[tuple[int, int, int, int]], int, int]:
    """([(frame offset, payload start, payload end, packed header)], consumed, skipped)."""
