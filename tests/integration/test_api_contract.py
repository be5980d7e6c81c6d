"""The OpenAPI document tells the truth: a contract fuzzer finds no answer it does not describe.

schemathesis reads `/openapi.json` from a real `relay serve` and sends every operation valid
and invalid requests (query parameters past their ranges, bodies of the wrong shape, methods
a path does not serve), checking each answer's status code, body schema, content type and
headers against the document, that none is a 5xx, that valid requests are accepted and
invalid ones refused. The settings are in schemathesis.toml beside this file (including why
wrong tokens are left to tests/api/test_api.py); the run is bounded by its max-examples per
operation (about 20 s here).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from testkit.relay_process import RelayProcess

TOKEN = ("contract-test", "contract-test-secret-0123456789-abcdef")
CONFIG = Path(__file__).with_name("schemathesis.toml")


def schemathesis_command() -> list[str]:
    beside_python = Path(sys.executable).with_name("schemathesis")
    found = str(beside_python) if beside_python.exists() else shutil.which("schemathesis")
    if found is None:
        pytest.fail("schemathesis is not installed: pip install -e '.[test]'")
    return [found]


def test_schemathesis_finds_nothing(tmp_path: Path) -> None:
    with RelayProcess(tmp_path / "data", token=TOKEN) as relay:
        with urllib.request.urlopen(f"{relay.http_url}/openapi.json", timeout=10) as answer:
            document = json.load(answer)
        operations = sum(len(methods) for methods in document["paths"].values())
        result = subprocess.run(
            [*schemathesis_command(), "--no-color", "--config-file", str(CONFIG), "run",
             f"{relay.http_url}/openapi.json", "--auth", ":".join(TOKEN)],
            capture_output=True, text=True, timeout=240, cwd=tmp_path)
        problems = [line for line in relay.lines if " error " in line or "Traceback" in line]
    report = result.stdout[-20_000:] + result.stderr[-5_000:]
    assert result.returncode == 0, report
    assert f"Tested: {operations}" in result.stdout, report  # every operation, none skipped
    assert not problems, "\n".join(problems)
