"""Typed stubs for relay._native.mpegts (built from native/mpegts.pyx)."""

from typing import Final, final

from typing_extensions import Buffer

__all__ = [
    "DEFAULT_MAX_BUFFERED",
    "DEFAULT_MAX_PES_SIZE",
    "MAX_STREAMS",
    "PACKET_SIZE",
    "PesPacket",
    "ProgramChanged",
    "TsDemuxer",
    "TsError",
]

PACKET_SIZE: Final[int]
DEFAULT_MAX_PES_SIZE: Final[int]
DEFAULT_MAX_BUFFERED: Final[int]
MAX_STREAMS: Final[int]

class TsError(ValueError):
    """The demuxer was misused (a bad argument); peer bytes never raise it."""

@final
class PesPacket:
    """One PES packet (13818-1 2.4.3.6) of an elementary stream of the program."""

    def __init__(
        self, pid: int, stream_type: int, pts: int, dts: int, random_access: bool,
        discontinuity: bool, data: bytes
    ) -> None: ...
    @property
    def pid(self) -> int: ...
    @property
    def stream_type(self) -> int: ...
    @property
    def pts(self) -> int:
        """33-bit PTS in 90 kHz units, -1 when absent."""
    @property
    def dts(self) -> int:
        """33-bit DTS in 90 kHz units, == pts when only PTS is sent, -1 when absent."""
    @property
    def random_access(self) -> bool: ...
    @property
    def discontinuity(self) -> bool: ...
    @property
    def data(self) -> bytes: ...
    def __eq__(self, other: object) -> bool: ...
    def __hash__(self) -> int: ...

@final
class ProgramChanged:
    """The first program's elementary streams ((pid, stream_type), PMT order)."""

    def __init__(self, streams: tuple[tuple[int, int], ...]) -> None: ...
    @property
    def streams(self) -> tuple[tuple[int, int], ...]: ...
    def __eq__(self, other: object) -> bool: ...
    def __hash__(self) -> int: ...

@final
class TsDemuxer:
    """Demuxes an MPEG transport stream into the first program's PES packets (13818-1 2.4)."""

    def __init__(self, max_pes_size: int = ..., *, max_buffered: int = ...) -> None: ...
    def feed(self, data: Buffer) -> list[PesPacket | ProgramChanged]: ...
    def flush(self) -> list[PesPacket | ProgramChanged]: ...
    @property
    def max_pes_size(self) -> int: ...
    @property
    def max_buffered(self) -> int: ...
    @property
    def buffered(self) -> int: ...
    @property
    def program(self) -> tuple[tuple[int, int], ...]: ...
    @property
    def packets(self) -> int: ...
    @property
    def resyncs(self) -> int: ...
    @property
    def cc_errors(self) -> int: ...
    @property
    def pes_dropped(self) -> int: ...
    @property
    def bytes_fed(self) -> int: ...
    @property
    def section_errors(self) -> int: ...
    @property
    def errored_packets(self) -> int: ...
