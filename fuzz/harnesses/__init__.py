"""The harnesses, by name, with the libFuzzer limits each runs under.

Each harness module has a `check(data: bytes) -> None` that raises only for a finding (see
the module's docstring for what it allows and what it checks).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Harness:
    name: str
    #: "module:function" of the function libFuzzer calls with each input.
    entry: str
    #: Longest input libFuzzer makes (-max_len): room for the seeds and a bit more.
    max_len: int
    #: Seconds one input may take before it counts as a hang (-timeout).
    timeout: int = 10
    #: Resident memory, MB, beyond which the run counts as out-of-memory (-rss_limit_mb).
    rss_limit_mb: int = 2048
    #: It exercises relay._native, so it runs on the instrumented build when there is one.
    native: bool = False
    #: Executions in the short run the test suite makes (a few seconds each on a shared core;
    #: the fast pure-Python parsers get more).
    short_runs: int = 2000
    #: A canary for the runner's own tests: not part of `all`.
    canary: bool = False


HARNESSES: dict[str, Harness] = {h.name: h for h in (
    Harness("chunk", "fuzz.harnesses.chunk:check", max_len=8192, native=True),
    Harness("handshake", "fuzz.harnesses.handshake:check", max_len=8192, short_runs=10000),
    Harness("amf", "fuzz.harnesses.amf:check", max_len=4096, short_runs=20000),
    Harness("session", "fuzz.harnesses.session:check", max_len=8192, native=True),
    Harness("ts", "fuzz.harnesses.ts:check", max_len=16384, native=True, short_runs=5000),
    Harness("flv", "fuzz.harnesses.flv:check", max_len=4096, short_runs=20000),
    Harness("codec", "fuzz.harnesses.codec:check", max_len=4096, short_runs=20000),
    Harness("elementary", "fuzz.harnesses.elementary:check", max_len=16384, native=True),
    Harness("hls", "fuzz.harnesses.hls:check", max_len=1024, short_runs=20000),
    Harness("proxy_protocol", "fuzz.harnesses.proxy_protocol:check", max_len=2048,
            short_runs=20000),
    Harness("api_json", "fuzz.harnesses.api_json:check", max_len=4096, short_runs=500),
    Harness("api_query", "fuzz.harnesses.api_query:check", max_len=1024, short_runs=500),
    Harness("canary_crash", "fuzz.harnesses.canary:crash", max_len=64, canary=True),
    Harness("canary_hang", "fuzz.harnesses.canary:hang", max_len=64, timeout=2, canary=True),
    Harness("canary_oom", "fuzz.harnesses.canary:oom", max_len=64, rss_limit_mb=300,
            canary=True),
)}

#: What `all` means: every real harness.
ALL = tuple(name for name, harness in HARNESSES.items() if not harness.canary)
