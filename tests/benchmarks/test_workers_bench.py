"""benchmarks/workers.py runs, briefly, so it cannot rot (no figure asserted: those come from
full runs, quoted with their command in benchmarks/README.md)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent.parent


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs ffmpeg")
def test_workers_benchmark_runs(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "benchmarks/workers.py", "--steps", "4",
                             "--seconds", "2", "--budget", "240",
                             "--json", str(tmp_path / "workers.json")],
                            cwd=ROOT, capture_output=True, text=True, timeout=280, check=False)
    assert result.returncode == 0, result.stderr
    assert "600 kbit/s publishers real-time: --workers 1:" in result.stdout, result.stdout
    measured = json.loads((tmp_path / "workers.json").read_text())
    one, two = measured["workers_1"]["steps"], measured["workers_2"]["steps"]
    # Every publisher was connected to a worker, one worker's metrics or the other's.
    assert one[0]["publishers"] == 4 and sum(one[0]["per_worker_connections"]) == 4, one
    assert len(two[0]["per_worker_connections"]) == 2, two
    assert sum(two[0]["per_worker_connections"]) == 4, two
