"""Cost of one SRT admission decision (relay.srt.admission), and of the key cache behind it.

Usage: .venv/bin/python benchmarks/srt_admission.py [--streams N] [--calls N]

Fills an IngestRegistry's key cache with N streams (real id, key and passphrase lengths),
then times `SrtAdmission.decide` as libsrt's listen callback would call it: an accepted plain
key from IPv4, an accepted `#!::r=KEY,m=publish` from a bracketed IPv6 "[addr]:port", and a
refusal of a penalised address (the key is not read). Prints microseconds per call (median of
5 runs) and the cache's traced memory per stream.
"""

from __future__ import annotations

import argparse
import statistics
import timeit
import tracemalloc
from typing import cast

from relay.ids import new_object_id, new_srt_passphrase, new_stream_key
from relay.srt.admission import SrtAdmission
from relay.store import Store
from relay.streams.registry import IngestRegistry
from relay.streams.throttle import AuthThrottle


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=100_000)
    parser.add_argument("--calls", type=int, default=50_000)
    args = parser.parse_args()

    throttle = AuthThrottle(free_failures=0, base_delay=3600, max_delay=3600)
    registry = IngestRegistry(cast(Store, object()), throttle=throttle)  # no store needed
    rows = [(new_object_id(), new_stream_key(), new_srt_passphrase())
            for _ in range(args.streams)]
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for stream_id, key, passphrase in rows:
        # Copies of the id and passphrase: the cache keeps its own, the rows go.
        registry._remember(stream_id.encode().decode(), key, "idle",
                           passphrase.encode().decode())
    per_stream = (tracemalloc.get_traced_memory()[0] - before) / args.streams
    tracemalloc.stop()
    print(f"key cache: {per_stream:.0f} bytes per stream ({args.streams:,} streams)")

    admission = SrtAdmission(registry, defer=lambda callback: callback())
    key = rows[len(rows) // 2][1]
    admission.decide("wrong", "192.0.2.99")  # penalises 192.0.2.99 for an hour
    cases = [("accept, plain key, IPv4", key, "192.0.2.1"),
             ("accept, #!::r=KEY,m=publish, [IPv6]:port", f"#!::r={key},m=publish",
              "[2001:db8::1]:5000"),
             ("refuse, penalised address", key, "192.0.2.99")]
    for label, streamid, address in cases:
        runs = [timeit.timeit(lambda: admission.decide(streamid, address),  # noqa: B023
                              number=args.calls) for _ in range(5)]
        print(f"{label}: {statistics.median(runs) / args.calls * 1e6:.1f} us per decide")


if __name__ == "__main__":
    main()
