"""Real processes and peers that both the tests and the benchmarks drive: `relay serve` as a
subprocess (`relay_process`), ffmpeg publishing (`encoders`), headless Chromium with hls.js
(`browser`) and honest or hostile RTMP peers (`peers`).

Lives outside `tests/` so `benchmarks/` can use it without importing the test suite, and
outside `relay/` so it is never shipped: the wheel packages `relay*` only (pyproject.toml)."""
