"""benchmarks/proxy_parts.py runs, briefly, so it cannot rot (no timing asserted: the figures
come from full runs, quoted with their command)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent.parent


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs ffmpeg")
def test_proxy_parts_runs(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "benchmarks/proxy_parts.py", "--seconds", "3",
                             "--viewers", "3", "--json", str(tmp_path / "proxy.json")],
                            cwd=ROOT, capture_output=True, text=True, timeout=240, check=False)
    assert result.returncode == 0, result.stderr
    assert "added by the node per part and viewer, p50 / p99" in result.stdout
    measured = json.loads((tmp_path / "proxy.json").read_text())
    assert measured["parts"] > 0 and measured["added_part"]["samples"] == 3 * measured["parts"]
    # The node's three viewers of each part cost the owner one request per part.
    assert measured["owner_part_requests_per_part_from_node"] == 1.0
    assert measured["node_upstream"]["coalesced"] + measured["node_upstream"]["cache_hits"] > 0
