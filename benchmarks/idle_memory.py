"""What a freshly started `relay serve` holds in memory, and where.

    .venv/bin/python benchmarks/idle_memory.py [--runs 3] [--settle 7] [--maps 25]

Starts `relay serve` as the benchmarks do (`benchmarks.peers.rtmp.RelayServer`: SQLite
store, default options, SRT on), waits `--settle` seconds (7: the 2 + 5 s after which
`ingest_probe.py` reads its "RSS idle"), then reads /proc/PID/status (VmRSS and its split
into RssAnon and RssFile, the thread count) and stops it; one line per run, then the
median. `--maps N` also prints, for the last run, the N mappings that hold the most of it
(/proc/PID/smaps: Rss per file, anonymous memory summed as "[anon]") and each thread's name.

Anonymous memory is mostly Python's: its 1 MiB object arenas and the malloc heap hold the
modules' code, classes and functions, so what `relay serve` imports at start-up is most of
what it holds idle; the shared libraries' Rss is the pages of them touched (their code and
data), which grows with each library loaded.
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.peers.rtmp import RelayServer  # noqa: E402

STATUS_FIELDS = ("VmRSS", "RssAnon", "RssFile", "Threads")
_MAPPING = re.compile(r"^[0-9a-f]+-[0-9a-f]+ \S+ \S+ \S+ \S+\s*(.*)$")


def status(pid: int) -> dict[str, int]:
    """The STATUS_FIELDS of /proc/PID/status (kB, or a count for Threads)."""
    found = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in STATUS_FIELDS:
            found[name] = int(value.split()[0])
    return found


def mappings(pid: int) -> Counter[str]:
    """Rss (kB) per mapped file; anonymous mappings (Python's arenas, malloc's mappings,
    thread stacks) under "[anon]", the brk heap under "[heap]"."""
    rss: Counter[str] = Counter()
    name = ""
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        match = _MAPPING.match(line)
        if match:
            name = match.group(1) or "[anon]"
        elif line.startswith("Rss:"):
            rss[name] += int(line.split()[1])
    return rss


def threads(pid: int) -> list[str]:
    return [(task / "comm").read_text().strip()
            for task in sorted(Path(f"/proc/{pid}/task").iterdir())]


def measure(settle: float, maps: int) -> dict[str, int]:
    server = RelayServer()
    with tempfile.TemporaryDirectory(prefix="relay-idle-") as work:
        server.start(Path(work))
        try:
            time.sleep(settle)
            found = status(server.pid)
            if "VmRSS" not in found:  # a zombie's status has no memory lines
                assert server.process is not None
                raise RuntimeError("relay serve ended before it was measured:\n"
                                   + server.process.log)
            if maps:
                for name, kib in mappings(server.pid).most_common(maps):
                    print(f"  {kib / 1024:6.1f} MiB  {name}")
                print("  threads: " + ", ".join(threads(server.pid)))
        finally:
            server.stop()
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--settle", type=float, default=7.0,
                        help="seconds between ready and the reading")
    parser.add_argument("--maps", type=int, default=0,
                        help="print the N largest mappings of the last run")
    args = parser.parse_args()
    runs = []
    for run in range(args.runs):
        found = measure(args.settle, args.maps if run == args.runs - 1 else 0)
        runs.append(found)
        print(f"run {run + 1}: VmRSS {found['VmRSS'] / 1024:.1f} MiB (RssAnon "
              f"{found['RssAnon'] / 1024:.1f}, RssFile {found['RssFile'] / 1024:.1f}), "
              f"{found['Threads']} threads", flush=True)
    medians = {name: statistics.median(run[name] for run in runs) / 1024
               for name in ("VmRSS", "RssAnon", "RssFile")}
    print(f"median of {len(runs)}: VmRSS {medians['VmRSS']:.1f} MiB (RssAnon "
          f"{medians['RssAnon']:.1f}, RssFile {medians['RssFile']:.1f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
