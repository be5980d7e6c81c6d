"""TsDemuxer: ffmpeg's TS against ffprobe, splits, resync, continuity, PSI, PES bounds, misuse."""

from __future__ import annotations

import json
import subprocess
from collections import defaultdict
from functools import cache
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relay._native.mpegts import (
    DEFAULT_MAX_BUFFERED,
    DEFAULT_MAX_PES_SIZE,
    MAX_STREAMS,
    PesPacket,
    ProgramChanged,
    TsDemuxer,
    TsError,
)
from tests.native.ts_writer import (
    AAC_ADTS,
    AUDIO_ID,
    AUDIO_PID,
    H264,
    HEVC,
    PACKET,
    PAT_PID,
    PMT_PID,
    TIMESTAMP_WRAP,
    VIDEO_ID,
    VIDEO_PID,
    TsWriter,
    av_program,
    packet,
    pat_section,
    pes,
    pmt_section,
)

VECTORS = Path(__file__).parent.parent / "vectors" / "mpegts"
H264_TS = VECTORS / "h264_aac.ts"
HEVC_TS = VECTORS / "hevc_aac.ts"

Event = PesPacket | ProgramChanged


def demux(data: bytes, *pieces: int, demuxer: TsDemuxer | None = None) -> tuple[
        list[Event], TsDemuxer]:
    """Feed data cut after each offset in pieces (whole when none), then flush."""
    demuxer = demuxer or TsDemuxer()
    events: list[Event] = []
    last = 0
    for cut in (*pieces, len(data)):
        events += demuxer.feed(data[last:cut])
        last = cut
    events += demuxer.flush()
    return events, demuxer


def pes_of(events: list[Event], pid: int | None = None) -> list[PesPacket]:
    return [e for e in events if isinstance(e, PesPacket) and (pid is None or e.pid == pid)]


@cache
def vector(path: Path) -> bytes:
    return path.read_bytes()


@cache
def ffprobe_packets(path: Path) -> dict[int, list[tuple[int, int, int]]]:
    """(pts, dts, size) per stream index, as ffmpeg's own demuxer reads the file."""
    out = subprocess.run(["ffprobe", "-v", "error", "-show_packets", "-show_entries",
                          "packet=stream_index,pts,dts,size", "-of", "json", str(path)],
                         capture_output=True, text=True, check=True, timeout=60).stdout
    found: dict[int, list[tuple[int, int, int]]] = defaultdict(list)
    for p in json.loads(out)["packets"]:
        found[p["stream_index"]].append((int(p["pts"]), int(p["dts"]), int(p["size"])))
    return found


# --- against an independent reference ----------------------------------------------------------


@pytest.mark.parametrize(("path", "video_type"), [(H264_TS, H264), (HEVC_TS, HEVC)])
def test_ffmpeg_vectors_match_ffprobe(path: Path, video_type: int) -> None:
    events, demuxer = demux(vector(path))
    assert events[0] == ProgramChanged(((VIDEO_PID, video_type), (AUDIO_PID, AAC_ADTS)))
    assert [e for e in events if isinstance(e, ProgramChanged)] == events[:1]
    assert (demuxer.resyncs, demuxer.cc_errors, demuxer.pes_dropped, demuxer.section_errors,
            demuxer.errored_packets) == (0, 0, 0, 0, 0)
    assert demuxer.packets == len(vector(path)) // PACKET
    assert demuxer.bytes_fed == len(vector(path))
    reference = ffprobe_packets(path)
    # Video: one PES per frame, so ffprobe's packets are the PES one for one (their sizes may
    # move a start code's zero_byte between neighbours: ffmpeg's HEVC parser re-cuts frames).
    video = pes_of(events, VIDEO_PID)
    assert [(p.pts, p.dts) for p in video] == [(r[0], r[1]) for r in reference[0]]
    assert sum(len(p.data) for p in video) == sum(r[2] for r in reference[0])
    assert video[0].random_access and all(p.data[:3] in (b"\0\0\1", b"\0\0\0") for p in video)
    # Audio: ffmpeg packs several ADTS frames per PES and its parser splits them; each PES's
    # PTS is its first frame's and its bytes are its frames'.
    audio = pes_of(events, AUDIO_PID)
    frames = reference[1]
    assert len(audio) < len(frames)
    for index, packet_ in enumerate(audio):
        end = audio[index + 1].pts if index + 1 < len(audio) else 1 << 40
        inside = [f for f in frames if packet_.pts <= f[0] < end]
        assert inside[0][0] == packet_.pts == packet_.dts
        assert sum(f[2] for f in inside) == len(packet_.data)
        assert packet_.data[:2] in (b"\xff\xf1", b"\xff\xf9")  # ADTS syncword
    assert not any(p.discontinuity for p in video + audio)


def test_fed_whole_bytewise_and_with_a_trailing_partial_packet() -> None:
    data = vector(H264_TS)
    whole, _ = demux(data)
    demuxer = TsDemuxer()
    bytewise: list[Event] = []
    for index in range(len(data)):
        bytewise += demuxer.feed(data[index : index + 1])
    assert bytewise + demuxer.flush() == whole
    # A partial packet stays buffered until the rest arrives.
    demuxer = TsDemuxer()
    head = demuxer.feed(data[: 100 * PACKET + 77])
    assert demuxer.buffered >= 77
    assert head + demuxer.feed(data[100 * PACKET + 77 :]) + demuxer.flush() == whole
    # A trailing partial packet is dropped by flush(), not parsed.
    events, demuxer = demux(data + data[:100])
    assert events == whole and demuxer.packets == len(data) // PACKET


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.integers(min_value=0, max_value=len(vector(HEVC_TS))), max_size=40))
def test_any_split_gives_the_same_events(cuts: list[int]) -> None:
    data = vector(HEVC_TS)
    assert demux(data, *sorted(cuts))[0] == demux(data)[0]


# --- sync ------------------------------------------------------------------------------------


@pytest.mark.parametrize("garbage", [
    b"\x00" * 50, b"\x12" + b"\x47" * 3 + b"\x12" * 200, bytes(range(1, 256)) * 3, b"x" * 187,
    b"x" * 188, b"x" * 189])
def test_garbage_before_and_between_packets_resyncs(garbage: bytes) -> None:
    data = vector(H264_TS)
    whole, _ = demux(data)
    cut = 200 * PACKET
    dirty = garbage + data[:cut] + garbage + data[cut:]
    for pieces in ((), tuple(range(0, len(dirty), 97))):
        events, demuxer = demux(dirty, *pieces)
        assert demuxer.resyncs == 2 and demuxer.cc_errors == 0
        assert demuxer.packets == len(data) // PACKET
        assert [(p.pid, p.pts, p.data) for p in pes_of(events)] == \
            [(p.pid, p.pts, p.data) for p in pes_of(whole)]
        # The PES in progress when sync was lost may have lost packets: it is marked.
        marked = [p for p in pes_of(events) if p.discontinuity]
        assert 1 <= len(marked) <= 2


@pytest.mark.parametrize("garbage", [b"\x47", b"\x47" * 200, b"\x47" + bytes(187) + b"\x47"])
def test_the_first_sync_byte_must_be_confirmed_188_bytes_later(garbage: bytes) -> None:
    events, demuxer = demux(garbage + vector(H264_TS))
    assert (demuxer.resyncs, demuxer.cc_errors) == (1, 0)
    assert events == demux(vector(H264_TS))[0]


def test_a_lone_last_packet_is_read_at_flush() -> None:
    writer = TsWriter()
    demuxer = TsDemuxer()
    assert demuxer.feed(writer.psi(PAT_PID, pat_section())) == []
    assert demuxer.flush() == [] and demuxer.packets == 1 and demuxer.resyncs == 0


def test_a_stream_that_starts_mid_packet_syncs_on_the_next_one() -> None:
    data = vector(H264_TS)[PACKET * 3 + 10 :]
    events, demuxer = demux(data)
    assert demuxer.resyncs == 1 and demuxer.packets == len(data) // PACKET
    assert len(pes_of(events)) > 60


# --- continuity ------------------------------------------------------------------------------


def test_a_dropped_packet_counts_a_gap_and_marks_its_pes() -> None:
    writer = TsWriter()
    frames = [bytes([i]) * 3000 for i in range(4)]
    units = [writer.pes(VIDEO_PID, pes(VIDEO_ID, f, pts=9000 * i, unbounded=True))
             for i, f in enumerate(frames)]
    stream = av_program(writer) + b"".join(units)
    start = len(av_program(TsWriter())) + len(units[0]) + 5 * PACKET  # inside frame 1
    events, demuxer = demux(stream[:start] + stream[start + PACKET :])
    video = pes_of(events)
    assert demuxer.cc_errors == 1
    assert [p.discontinuity for p in video] == [False, True, False, False]
    assert len(video[1].data) == 3000 - 184 and video[2].data == frames[2]


def test_a_duplicate_packet_is_discarded_without_an_error() -> None:
    writer = TsWriter()
    head = av_program(writer)
    packets = writer.packets(VIDEO_PID, pes(VIDEO_ID, b"v" * 1000, pts=0, unbounded=True))
    events, demuxer = demux(head + packets[0] + packets[1] + packets[1] + b"".join(packets[2:]))
    assert demuxer.cc_errors == 0
    assert pes_of(events)[0].data == b"v" * 1000 and not pes_of(events)[0].discontinuity
    # A third copy is not a duplicate any more.
    events, demuxer = demux(head + packets[0] + packets[1] * 3 + b"".join(packets[2:]))
    assert demuxer.cc_errors >= 1 and pes_of(events)[0].discontinuity


def test_discontinuity_indicator_allows_a_counter_jump() -> None:
    writer = TsWriter()
    head = av_program(writer)
    body = pes(AUDIO_ID, b"a" * 100, pts=1)
    jump = packet(AUDIO_PID, 9, body, start=True, discontinuity=True)
    events, demuxer = demux(head + writer.pes(AUDIO_PID, body) + jump)
    assert demuxer.cc_errors == 0 and len(pes_of(events)) == 2


def test_adaptation_field_only_packets_keep_the_counter() -> None:
    writer = TsWriter()
    head = av_program(writer)
    packets = writer.packets(VIDEO_PID, pes(VIDEO_ID, b"v" * 500, pts=0, unbounded=True), True)
    counter = writer.counters[VIDEO_PID]
    pcr_only = packet(VIDEO_PID, counter, b"")  # adaptation_field_control '10'
    events, demuxer = demux(head + b"".join(packets) + pcr_only
                            + writer.pes(VIDEO_PID, pes(VIDEO_ID, b"w", pts=1, unbounded=True)))
    assert demuxer.cc_errors == 0
    assert [(p.data, p.random_access) for p in pes_of(events)] == [(b"v" * 500, True),
                                                                   (b"w", False)]


def test_transport_error_packets_are_counted_and_skipped() -> None:
    writer = TsWriter()
    head = av_program(writer)
    packets = writer.packets(VIDEO_PID, pes(VIDEO_ID, b"v" * 1000, pts=0, unbounded=True))
    bad = bytearray(packets[2])
    bad[1] |= 0x80
    events, demuxer = demux(head + b"".join(packets[:2]) + bytes(bad) + b"".join(packets[3:]))
    assert demuxer.errored_packets == 1 and demuxer.cc_errors == 1
    assert pes_of(events)[0].discontinuity


# --- PSI -------------------------------------------------------------------------------------


def test_nit_entry_is_skipped_and_only_listed_pids_give_pes() -> None:
    writer = TsWriter()
    early = writer.pes(VIDEO_PID, pes(VIDEO_ID, b"too early", pts=0))
    program = writer.psi(PAT_PID, pat_section(nit_first=True)) + writer.psi(
        PMT_PID, pmt_section([(VIDEO_PID, H264)]))
    other = writer.pes(0x300, pes(VIDEO_ID, b"not listed", pts=0))
    mine = writer.pes(VIDEO_PID, pes(VIDEO_ID, b"listed", pts=5))
    events, _ = demux(early + program + other + mine)
    assert events == [ProgramChanged(((VIDEO_PID, H264),)),
                      PesPacket(VIDEO_PID, H264, 5, 5, False, False, b"listed")]


def test_pmt_change_is_announced_again_and_repeats_are_not() -> None:
    writer = TsWriter()
    first = av_program(writer)
    a1 = writer.pes(AUDIO_PID, pes(AUDIO_ID, b"one", pts=1))
    again = av_program(writer)
    changed = writer.program([(VIDEO_PID, HEVC), (0x102, AAC_ADTS)], version=1)
    a2 = writer.pes(AUDIO_PID, pes(AUDIO_ID, b"old pid", pts=2))
    a3 = writer.pes(0x102, pes(AUDIO_ID, b"new pid", pts=3))
    events, _ = demux(first + a1 + again + changed + a2 + a3)
    assert [(type(e).__name__, getattr(e, "data", getattr(e, "streams", None))) for e in events] \
        == [("ProgramChanged", ((VIDEO_PID, H264), (AUDIO_PID, AAC_ADTS))),
            ("PesPacket", b"one"),
            ("ProgramChanged", ((VIDEO_PID, HEVC), (0x102, AAC_ADTS))),
            ("PesPacket", b"new pid")]


def test_a_removed_stream_ends_its_pes_before_the_change() -> None:
    writer = TsWriter()
    head = av_program(writer)
    video = writer.pes(VIDEO_PID, pes(VIDEO_ID, b"v" * 400, pts=7, unbounded=True))
    changed = writer.program([(AUDIO_PID, AAC_ADTS)], version=1)
    events, demuxer = demux(head + video + changed)
    assert [type(e).__name__ for e in events] == ["ProgramChanged", "PesPacket",
                                                  "ProgramChanged"]
    assert demuxer.program == ((AUDIO_PID, AAC_ADTS),)


def test_a_pmt_with_a_bad_crc_is_ignored_and_counted() -> None:
    writer = TsWriter()
    good = pmt_section([(VIDEO_PID, H264)])
    bad = good[:-1] + bytes([good[-1] ^ 1])
    stream = writer.psi(PAT_PID, pat_section()) + writer.psi(PMT_PID, bad)
    events, demuxer = demux(stream)
    assert events == [] and demuxer.section_errors == 1
    events, demuxer = demux(stream + writer.psi(PMT_PID, good), demuxer=demuxer)
    assert events == [ProgramChanged(((VIDEO_PID, H264),))]


def test_a_pmt_spanning_packets_with_a_pointer_field() -> None:
    streams = [(0x100 + i, H264 if i == 0 else AAC_ADTS) for i in range(MAX_STREAMS + 4)]
    section = pmt_section(streams, es_info=b"\x0a\x04eng\x00" + b"\x05\x04TEST" * 3)
    assert len(section) > 2 * 184
    writer = TsWriter()
    # The PMT starts mid-packet: pointer_field skips the tail of a (lost) previous section.
    unit = b"\x03abc" + section
    unit += b"\xff" * (-len(unit) % 184)
    stream = writer.psi(PAT_PID, pat_section()) + b"".join(writer.packets(PMT_PID, unit))
    events, demuxer = demux(stream, *range(0, len(stream), 50))
    assert events == [ProgramChanged(tuple(streams[:MAX_STREAMS]))]
    assert demuxer.section_errors == 0


def test_two_sections_in_one_packet() -> None:
    writer = TsWriter()
    pat = pat_section()
    both = b"\x00" + pat_section(version=3) + pat
    stream = b"".join(writer.packets(PAT_PID, both + b"\xff" * (184 - len(both))))
    stream += writer.psi(PMT_PID, pmt_section([(VIDEO_PID, H264)]))
    events, demuxer = demux(stream)
    assert events == [ProgramChanged(((VIDEO_PID, H264),))] and demuxer.section_errors == 0


# --- PES -------------------------------------------------------------------------------------


def test_a_bounded_pes_completes_as_soon_as_its_length_arrives() -> None:
    writer = TsWriter()
    demuxer = TsDemuxer()
    assert len(demuxer.feed(av_program(writer))) == 1
    events = demuxer.feed(writer.pes(AUDIO_PID, pes(AUDIO_ID, b"a" * 700, pts=90)))
    assert events == [PesPacket(AUDIO_PID, AAC_ADTS, 90, 90, False, False, b"a" * 700)]
    video = demuxer.feed(writer.pes(VIDEO_PID, pes(VIDEO_ID, b"v" * 700, pts=1, unbounded=True)))
    assert video == []  # unbounded: waits for the next start or flush()
    assert [p.data for p in pes_of(demuxer.flush())] == [b"v" * 700]


def test_a_bounded_pes_cut_short_is_marked() -> None:
    writer = TsWriter()
    head = av_program(writer)
    whole = pes(AUDIO_ID, b"a" * 700, pts=90)
    short = b"".join(writer.packets(AUDIO_PID, whole)[:2])
    events, _ = demux(head + short + writer.pes(AUDIO_PID, pes(AUDIO_ID, b"b", pts=91)))
    assert [(len(p.data), p.discontinuity) for p in pes_of(events)] == [(368 - 14, True),
                                                                        (1, False)]


@pytest.mark.parametrize(("pts", "dts"), [
    (TIMESTAMP_WRAP - 1, TIMESTAMP_WRAP - 3003), (0, TIMESTAMP_WRAP - 1), (1 << 32, 1 << 32),
    (TIMESTAMP_WRAP - 1, None)])
def test_33_bit_timestamps_near_the_wrap(pts: int, dts: int | None) -> None:
    writer = TsWriter()
    events, _ = demux(av_program(writer) + writer.pes(VIDEO_PID, pes(VIDEO_ID, b"x", pts, dts)))
    [found] = pes_of(events)
    assert (found.pts, found.dts) == (pts, pts if dts is None else dts)


def test_no_pts_gives_minus_one() -> None:
    writer = TsWriter()
    events, _ = demux(av_program(writer) + writer.pes(AUDIO_PID, pes(AUDIO_ID, b"x")))
    assert [(p.pts, p.dts) for p in pes_of(events)] == [(-1, -1)]


@pytest.mark.parametrize("unbounded", [True, False])
def test_a_pes_over_max_pes_size_is_dropped_and_counted(unbounded: bool) -> None:
    writer = TsWriter()
    big = writer.pes(VIDEO_PID, pes(VIDEO_ID, b"v" * 5000, pts=0, unbounded=unbounded))
    small = writer.pes(VIDEO_PID, pes(VIDEO_ID, b"s" * 500, pts=1, unbounded=unbounded))
    events, demuxer = demux(av_program(writer) + big + small,
                            demuxer=TsDemuxer(max_pes_size=1000))
    assert demuxer.pes_dropped == 1
    assert [p.data for p in pes_of(events)] == [b"s" * 500]


def test_max_buffered_bounds_the_pes_held_across_streams() -> None:
    writer = TsWriter()
    head = av_program(writer)
    video = writer.packets(VIDEO_PID, pes(VIDEO_ID, b"v" * 3000, pts=0, unbounded=True))
    audio = writer.packets(AUDIO_PID, pes(AUDIO_ID, b"a" * 3000, pts=0, unbounded=True))
    interleaved = b"".join(v + a for v, a in zip(video, audio, strict=True))
    demuxer = TsDemuxer(max_pes_size=4000, max_buffered=4000)
    events = demuxer.feed(head + interleaved)
    assert demuxer.pes_dropped == 1 and demuxer.buffered <= 4000
    assert [p.pid for p in pes_of(events + demuxer.flush())] == [VIDEO_PID]


@pytest.mark.parametrize("header", [
    b"\x00\x00\x02\xe0\x00\x00\x80\x80\x05",  # no start code
    b"\x00\x00\x01\xe0\x00\x00\x80\x80\x20",  # header_data_length past the end
    b"\x00\x00\x01\xe0\x00\x00\x80\x80\x02",  # PTS flag but a header too short for it
    b"\x00\x00\x01\xe0\x00\x00\x40\x00\x00",  # not the '10' marker of the optional header
    b"\x00\x00\x01",  # shorter than the fixed header
])
def test_a_malformed_pes_header_is_dropped_and_counted(header: bytes) -> None:
    writer = TsWriter()
    head = av_program(writer)
    bad = writer.pes(VIDEO_PID, header + (b"" if len(header) < 9 else b"\x21" * 6))
    good = writer.pes(VIDEO_PID, pes(VIDEO_ID, b"ok", pts=3, unbounded=True))
    events, demuxer = demux(head + bad + good)
    assert demuxer.pes_dropped == 1 and [p.data for p in pes_of(events)] == [b"ok"]


def test_section_stream_types_are_listed_but_not_reassembled() -> None:
    writer = TsWriter()
    head = writer.program([(VIDEO_PID, H264), (0x1F0, 0x86)])  # SCTE 35
    events, demuxer = demux(head + writer.psi(0x1F0, b"\xfc\x30\x11" + bytes(17)))
    assert events == [ProgramChanged(((VIDEO_PID, H264), (0x1F0, 0x86)))]
    assert demuxer.pes_dropped == 0


# --- hostile input -----------------------------------------------------------------------------


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_corrupted_dropped_and_duplicated_packets_never_raise(data: st.DataObject) -> None:
    source = bytearray(vector(H264_TS)[: 120 * PACKET])
    for _ in range(data.draw(st.integers(0, 30))):
        at = data.draw(st.integers(0, len(source) - 1))
        source[at] = data.draw(st.integers(0, 255))
    packets = [bytes(source[i : i + PACKET]) for i in range(0, len(source), PACKET)]
    for _ in range(data.draw(st.integers(0, 5))):
        at = data.draw(st.integers(0, len(packets) - 1))
        if data.draw(st.booleans()):
            del packets[at]
        else:
            packets.insert(at, packets[at])
    stream = b"".join(packets)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=8)))
    demuxer = TsDemuxer(max_pes_size=20000, max_buffered=30000)
    events, _ = demux(stream, *cuts, demuxer=demuxer)
    assert all(len(p.data) <= 20000 for p in pes_of(events))
    assert all(-1 <= p.pts < TIMESTAMP_WRAP and -1 <= p.dts < TIMESTAMP_WRAP
               for p in pes_of(events))
    assert demuxer.buffered == 0 and demuxer.packets <= len(stream) // PACKET
    assert events == demux(stream, demuxer=TsDemuxer(max_pes_size=20000,
                                                     max_buffered=30000))[0]


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=3000))
def test_random_bytes_never_raise(data: bytes) -> None:
    demux(b"\x47" + data)
    demux(data, *range(0, len(data), 7))


# --- the API -----------------------------------------------------------------------------------


def test_defaults_and_misuse() -> None:
    demuxer = TsDemuxer()
    assert (demuxer.max_pes_size, demuxer.max_buffered) == (DEFAULT_MAX_PES_SIZE,
                                                            DEFAULT_MAX_BUFFERED)
    assert demuxer.feed(b"") == [] and demuxer.flush() == [] and demuxer.program == ()
    assert demuxer.feed(memoryview(vector(H264_TS))[:PACKET * 40])
    assert demuxer.feed(bytearray(vector(H264_TS)[PACKET * 40 : PACKET * 400]))
    with pytest.raises(TsError, match="max_pes_size must be 188"):
        TsDemuxer(max_pes_size=0)
    with pytest.raises(TsError, match="max_buffered must be an int"):
        TsDemuxer(max_buffered="1")  # type: ignore[arg-type]
    with pytest.raises(TsError, match="bytes-like"):
        demuxer.feed("text")  # type: ignore[arg-type]
    with pytest.raises(TsError, match="contiguous"):
        demuxer.feed(memoryview(b"abcdef")[::2])
    assert "data=<3 bytes>" in repr(PesPacket(1, 2, 3, 4, True, False, b"abc"))
    assert repr(ProgramChanged(((256, 0x1B),))) == "ProgramChanged(streams=((256, 0x1b)))"


def test_a_pat_moving_the_pmt_onto_a_stream_pid_clears_the_program() -> None:
    writer = TsWriter()
    head = av_program(writer)
    video = writer.pes(VIDEO_PID, pes(VIDEO_ID, b"v" * 300, pts=1, unbounded=True))
    moved = writer.psi(PAT_PID, pat_section(pmt_pid=VIDEO_PID, version=1))
    new_pmt = writer.psi(VIDEO_PID, pmt_section([(AUDIO_PID, AAC_ADTS)]))
    events, demuxer = demux(head + video + moved + new_pmt)
    assert [e.streams if isinstance(e, ProgramChanged) else e.data for e in events] == [
        ((VIDEO_PID, H264), (AUDIO_PID, AAC_ADTS)), b"v" * 300, (),
        ((AUDIO_PID, AAC_ADTS),)]
    assert demuxer.program == ((AUDIO_PID, AAC_ADTS),)
