"""The README's configuration table names every option of `relay serve`, with its env var
and its default, so a new limit cannot land undocumented."""

from __future__ import annotations

from pathlib import Path

import pytest

from relay.config import SERVE_OPTIONS, Option

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


@pytest.mark.parametrize("option", SERVE_OPTIONS, ids=lambda option: option.flag)
def test_the_readme_table_has_the_option(option: Option) -> None:
    # A row may document a pair of options: "| `--tls-cert`, `--tls-key` | ...".
    rows = [line for line in README.splitlines()
            if line.startswith("| `--") and f"`--{option.flag}`" in line.split("|")[1]]
    assert len(rows) == 1, f"README has {len(rows)} rows for --{option.flag}"
    cells = [cell.strip() for cell in rows[0].strip("|").split("|")]
    assert f"`{option.env}`" in cells[1]
    if option.default is None:
        return  # described in words ("none", "SQLite in the data dir")
    shown = cells[2].strip("`")
    if isinstance(option.default, float):
        assert float(shown) == option.default, (option.flag, shown)
    else:
        assert shown == str(option.default), (option.flag, shown)
