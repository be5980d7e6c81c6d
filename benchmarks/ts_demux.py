"""Throughput of the MPEG-TS demuxer (relay._native.mpegts) on one core.

Usage: .venv/bin/python benchmarks/ts_demux.py [--seconds N] [--input FILE]

Without --input it makes, once, with ffmpeg, what an SRT encoder sends for the suite's 6 Mbit/s
clip: 10 s of 1280x720 testsrc2 at 30 fps in H.264 (libx264 veryfast, 6 Mbit/s, 2 s GOP) with
AAC 128 kbit/s, muxed by ffmpeg into MPEG-TS, kept under benchmarks/media/ (ignored by git).
--input takes any transport stream instead.

The demuxer is fed as an SRT listener feeds it: one feed() per 1316-byte SRT payload (seven
188-byte packets, what SRT encoders send per datagram in live mode), then per 64 KiB (a batch
of payloads joined); each feed's events are counted, and flush() ends each pass. Each run
demuxes the whole stream (several times over if it is small) and the median run is reported,
in MB/s of TS input (1 MB = 10**6 bytes).
"""

from __future__ import annotations

import argparse
import functools
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.chunk_demux import describe, timed_runs  # noqa: E402
from relay._native.mpegts import PesPacket, TsDemuxer  # noqa: E402

MEDIA_DIR = ROOT / "benchmarks" / "media"
SRT_PAYLOAD = 7 * 188  # SRT live mode's default payload size (SRTO_PAYLOADSIZE 1316)
BATCH = 65536


def make_clip(seconds: int = 10) -> Path:
    """The 6 Mbit/s 720p H.264 + AAC transport stream, made once with ffmpeg."""
    path = MEDIA_DIR / f"6mbps-{seconds}s.ts"
    if not path.exists():
        MEDIA_DIR.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".part.ts")
        subprocess.run(
            ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=30",
             "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-t", str(seconds),
             "-c:v", "libx264", "-preset", "veryfast", "-b:v", "6000k", "-maxrate", "6000k",
             "-bufsize", "12000k", "-g", "60", "-keyint_min", "60", "-sc_threshold", "0",
             "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "128k", "-f", "mpegts",
             str(partial)], check=True, timeout=600)
        partial.rename(path)
    return path


def demux_all(stream: bytes, piece: int) -> tuple[int, int, TsDemuxer]:
    """Demux stream fed in pieces of `piece` bytes; return (PES, payload bytes, demuxer)."""
    demuxer = TsDemuxer()
    feed = demuxer.feed
    view = memoryview(stream)
    count = payload = 0
    for offset in range(0, len(stream), piece):
        for event in feed(view[offset : offset + piece]):
            if isinstance(event, PesPacket):
                count += 1
                payload += len(event.data)
    for event in demuxer.flush():
        if isinstance(event, PesPacket):
            count += 1
            payload += len(event.data)
    return count, payload, demuxer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0,
                        help="measuring time for each feed size (default 5)")
    parser.add_argument("--input", type=Path, help="a transport stream to demux instead")
    args = parser.parse_args(argv)
    path = args.input if args.input is not None else make_clip()
    stream = path.read_bytes()
    count, payload, demuxer = demux_all(stream, SRT_PAYLOAD)
    if count == 0:
        print(f"{path}: no PES packets found (resyncs {demuxer.resyncs}, "
              f"section errors {demuxer.section_errors}): not a transport stream",
              file=sys.stderr)
        return 1
    print(f"input: {path} ({len(stream):,} bytes, {demuxer.packets} packets); {count} PES, "
          f"{payload:,} payload bytes; cc errors {demuxer.cc_errors}, resyncs "
          f"{demuxer.resyncs}, dropped {demuxer.pes_dropped}")
    for piece, name in ((SRT_PAYLOAD, "1316-byte feeds"), (BATCH, "65536-byte feeds")):
        rates = timed_runs(functools.partial(demux_all, stream, piece), len(stream),
                           args.seconds)
        print(f"demux ({name}): {describe(rates)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
