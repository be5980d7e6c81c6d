"""Coverage-guided fuzzing of every parser that reads a peer's bytes (issue 12).

`fuzz/harnesses/` holds one harness per parser: a `check(data)` function that feeds the bytes
to the parser and raises only when the parser misbehaves (an exception other than its
documented error, or a broken invariant, raised as `Finding`). `python -m fuzz.harness NAME`
runs one harness under atheris (libFuzzer); `python -m fuzz.run` runs harnesses with limits
and records executions, coverage and findings in `fuzz/results.json`. Seeds come from the
captured vectors in `tests/vectors/` (`fuzz.seeds`). See `fuzz/README.md`.
"""
