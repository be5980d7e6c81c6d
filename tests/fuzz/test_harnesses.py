"""A short run of every fuzz harness (fuzz/), through the runner, as the suite's part of the
fuzzing: each harness starts from its seeds and runs a few thousand executions (500 for the
API, whose requests go through a real store), and any finding fails its test. `make fuzz`
runs them long.

The runner and each harness run as subprocesses, so a crash cannot take pytest down. The
relay._native build is the installed one here (--native plain): the instrumented build needs
clang, and a short run gains little from native coverage feedback.

RELAY_FUZZ_SEED sets libFuzzer's seed (default 1, so that the suite is repeatable; any
finding is saved under the run's work directory and printed).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from fuzz.harnesses import ALL, HARNESSES

ROOT = Path(__file__).resolve().parent.parent.parent
SEED = os.environ.get("RELAY_FUZZ_SEED", "1")


def run(names: list[str], tmp_path: Path, runs: int, *options: str) -> tuple[
        int, dict[str, Any], str]:
    results = tmp_path / "results.json"
    command = [sys.executable, "-m", "fuzz.run", *names, "--runs", str(runs),
               "--seconds", "120", "--native", "plain", "--seed", SEED,
               "--results", str(results), "--work", str(tmp_path / "work"), *options]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=280)
    recorded = json.loads(results.read_text())["harnesses"] if results.is_file() else {}
    return done.returncode, recorded, done.stdout + done.stderr


@pytest.mark.parametrize("name", ALL)
def test_a_short_run_finds_nothing(name: str, tmp_path: Path) -> None:
    runs = HARNESSES[name].short_runs
    code, recorded, output = run([name], tmp_path, runs)
    result = recorded.get(name, {})
    reports = "\n\n".join(f"{f['kind']} x{f['count']}: {f['artifacts']}\n{f['report']}"
                            for f in result.get("findings", []))
    assert code == 0, f"{name}: the runner exited {code}\n{reports or output[-3000:]}"
    # The run really ran: every execution counted, and the code under test reached.
    assert result["executions"] >= runs, result
    assert result["cov"] > 50 and result["ft"] >= result["cov"], result
    assert result["findings"] == [] and result["crashes"] == 0, result


@pytest.mark.parametrize(("canary", "kind", "count", "seed_input", "said"), [
    ("canary_crash", "crash", "crashes", b"boom", "KeyError: \"the canary's parser broke\""),
    ("canary_hang", "timeout", "timeouts", b"hang", "timeout in hang (canary.py:"),
    ("canary_oom", "out-of-memory", "ooms", b"grow", "out-of-memory"),
])
def test_the_runner_reports_a_finding(canary: str, kind: str, count: str, seed_input: bytes,
                                      said: str, tmp_path: Path) -> None:
    code, recorded, output = run([canary], tmp_path, 100)
    result = recorded[canary]
    assert code == 1, output[-3000:]
    assert result[count] == 1, result
    [finding] = result["findings"]
    assert (finding["kind"], finding["count"]) == (kind, 1), finding
    assert said in finding["signature"] + finding["report"], finding
    assert (ROOT / finding["artifacts"][0]).read_bytes() == seed_input


def test_keep_going_fuzzes_on_after_a_finding(tmp_path: Path) -> None:
    code, recorded, output = run(["canary_crash"], tmp_path, 20000, "--keep-going")
    result = recorded["canary_crash"]
    assert code == 1, output[-3000:]
    assert result["crashes"] >= 1 and result["executions"] >= 20000, result
    assert {f["signature"] for f in result["findings"]} == {
        "KeyError: \"the canary's parser broke\""}, result
