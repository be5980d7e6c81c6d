"""Typed stubs for relay._native.fmp4 (built from native/fmp4.pyx)."""

from collections.abc import Sequence
from typing import Final, Protocol

from typing_extensions import Buffer

__all__ = ["MAX_FRAGMENT_SIZE", "media_fragment"]

MAX_FRAGMENT_SIZE: Final[int]

class _Sample(Protocol):
    @property
    def duration(self) -> int: ...
    @property
    def keyframe(self) -> bool: ...
    @property
    def composition_offset(self) -> int: ...
    @property
    def data(self) -> Buffer: ...

class _TrackRun(Protocol):
    @property
    def track_id(self) -> int: ...
    @property
    def base_media_decode_time(self) -> int: ...
    @property
    def samples(self) -> Sequence[_Sample]: ...

def media_fragment(sequence_number: int, runs: Sequence[_TrackRun]) -> bytes:
    """moof (mfhd, a traf per run: tfhd, tfdt version 1, trun version 1) + one mdat, as bytes."""
