"""Shared fixtures: an event-loop backend for async tests and a store in a temp dir."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from relay.store import Store


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def sqlite_url(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path}"


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    opened = await Store.open(sqlite_url(tmp_path / "relay.db"))
    try:
        yield opened
    finally:
        await opened.close()
