"""The MPEG-TS demuxer (native/mpegts.pyx `TsDemuxer`), fed in fuzzer-chosen splits.

Input: `common.split_input` layout. Flag bit 0 selects small limits (max_pes_size 2048,
max_buffered 3000, so the PES bounds are reached with short inputs) instead of the production
defaults; bit 1 feeds memoryviews of a bytearray instead of bytes. The same stream is also fed
whole to a second demuxer, and both are flushed.

Allowed: nothing (a peer's bytes never raise; TsError is for misuse only). Findings: any
exception; a PES over max_pes_size or with a PTS/DTS outside -1..2**33-1; `buffered` over
max_buffered plus one packet, or not 0 after flush(); more packets counted than were fed; a
ProgramChanged that lists more than MAX_STREAMS streams, a PID outside 0x0010..0x1FFE or twice,
or that repeats the program before it; a PES on a PID the current program does not list; and a
split that changes the events or the counters.
"""

from __future__ import annotations

from fuzz.common import Finding, pieces, split_input
from relay._native.mpegts import (
    DEFAULT_MAX_BUFFERED,
    DEFAULT_MAX_PES_SIZE,
    MAX_STREAMS,
    PACKET_SIZE,
    PesPacket,
    ProgramChanged,
    TsDemuxer,
)

SMALL_MAX_PES_SIZE = 2048
SMALL_MAX_BUFFERED = 3000
TIMESTAMP_LIMIT = 1 << 33

Event = PesPacket | ProgramChanged


def _check_events(events: list[Event], program: tuple[tuple[int, int], ...],
                  max_pes_size: int) -> tuple[tuple[int, int], ...]:
    for event in events:
        if isinstance(event, ProgramChanged):
            pids = [pid for pid, _ in event.streams]
            if len(pids) > MAX_STREAMS or len(set(pids)) != len(pids) \
                    or not all(0x10 <= pid < 0x1FFF for pid in pids):
                raise Finding(f"ProgramChanged lists {event.streams!r}")
            if event.streams == program and program:
                raise Finding(f"ProgramChanged repeats the program {program!r}")
            program = event.streams
            continue
        if len(event.data) > max_pes_size:
            raise Finding(f"a PES of {len(event.data)} bytes passed max_pes_size={max_pes_size}")
        if not (-1 <= event.pts < TIMESTAMP_LIMIT and -1 <= event.dts < TIMESTAMP_LIMIT):
            raise Finding(f"PTS {event.pts} / DTS {event.dts} outside 33 bits")
        if (event.pts == -1) != (event.dts == -1):
            raise Finding(f"PTS {event.pts} with DTS {event.dts}")
        if (event.pid, event.stream_type) not in program:
            raise Finding(f"a PES on PID {event.pid} (type {event.stream_type}) outside the "
                          f"program {program!r}")
    return program


def _demux(stream_pieces: list[bytes], max_pes_size: int, max_buffered: int,
           as_views: bool) -> tuple[list[Event], tuple[int, ...]]:
    demuxer = TsDemuxer(max_pes_size, max_buffered=max_buffered)
    events: list[Event] = []
    program: tuple[tuple[int, int], ...] = ()
    fed = 0
    for piece in stream_pieces:
        found = demuxer.feed(memoryview(bytearray(piece)) if as_views else piece)
        fed += len(piece)
        program = _check_events(found, program, max_pes_size)
        events += found
        if demuxer.buffered > max_buffered + PACKET_SIZE:
            raise Finding(f"buffered {demuxer.buffered} > max_buffered {max_buffered} + 188")
    found = demuxer.flush()
    _check_events(found, program, max_pes_size)
    events += found
    if demuxer.buffered != 0:
        raise Finding(f"{demuxer.buffered} bytes still buffered after flush()")
    if demuxer.bytes_fed != fed or demuxer.packets > fed // PACKET_SIZE:
        raise Finding(f"{demuxer.packets} packets and bytes_fed {demuxer.bytes_fed} "
                      f"counted from {fed} bytes")
    counters = (demuxer.packets, demuxer.resyncs, demuxer.cc_errors, demuxer.pes_dropped,
                demuxer.section_errors, demuxer.errored_packets)
    return events, counters


def outcome_feedback(events: list[Event], counters: tuple[int, ...]) -> None:
    """A branch per outcome the demuxer reached, so that the fuzzer keeps inputs that reach a
    new one even when the native code is not instrumented (a plain build gives no feedback
    from inside it)."""
    packets, resyncs, cc_errors, pes_dropped, section_errors, errored_packets = counters
    if packets > 0:
        pass
    if resyncs > 0:
        pass
    if cc_errors > 0:
        pass
    if pes_dropped > 0:
        pass
    if section_errors > 0:
        pass
    if errored_packets > 0:
        pass
    for event in events:
        if isinstance(event, ProgramChanged):
            if not event.streams:
                pass
            continue
        if event.pts < 0:
            pass
        if event.dts != event.pts:
            pass
        if event.random_access:
            pass
        if event.discontinuity:
            pass
        if not event.data:
            pass


def check(data: bytes) -> None:
    flags, lengths, stream = split_input(data)
    small = bool(flags & 1)
    max_pes_size = SMALL_MAX_PES_SIZE if small else DEFAULT_MAX_PES_SIZE
    max_buffered = SMALL_MAX_BUFFERED if small else DEFAULT_MAX_BUFFERED
    split = _demux(list(pieces(stream, lengths)), max_pes_size, max_buffered, bool(flags & 2))
    whole = _demux([stream], max_pes_size, max_buffered, False)
    outcome_feedback(*whole)
    if split[0] != whole[0]:
        raise Finding(f"the split changed the events: {len(split[0])} in pieces, "
                      f"{len(whole[0])} whole")
    if split[1] != whole[1]:
        raise Finding(f"the split changed the counters: {split[1]} vs {whole[1]}")
