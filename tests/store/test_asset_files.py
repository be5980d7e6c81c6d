"""Asset media directories: deletion, and ids that would leave the root."""

from __future__ import annotations

from pathlib import Path

import pytest

from relay.store.asset_files import AssetFiles

pytestmark = pytest.mark.anyio


async def test_delete_removes_the_directory_and_tolerates_absence(tmp_path: Path) -> None:
    files = AssetFiles(tmp_path)
    directory = files.directory("abc123")
    (directory / "sub").mkdir(parents=True)
    (directory / "0.m4s").write_bytes(b"x")
    (tmp_path / "other").mkdir()
    await files.delete("abc123")
    assert not directory.exists()
    assert (tmp_path / "other").exists()
    await files.delete("abc123")  # already gone: nothing to do, no error


@pytest.mark.parametrize("bad", ["", "..", "../x", "a/b", "a.b", "x" * 65, "é", "abc\n"])
def test_ids_that_are_not_asset_ids_are_refused(tmp_path: Path, bad: str) -> None:
    with pytest.raises(ValueError, match="not an asset id"):
        AssetFiles(tmp_path).directory(bad)
