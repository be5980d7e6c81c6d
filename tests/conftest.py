"""Shared fixtures: an event-loop backend for async tests and a store in a temp dir."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from relay.store import Store
from testkit.postgres import PostgresCluster, running_cluster


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def sqlite_url(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path}"


# `RELAY_TEST_DATABASE=postgresql` puts every test's `store` on PostgreSQL (the store's own
# tests run on both databases regardless: `any_store`).
DEFAULT_TEST_DATABASE = os.environ.get("RELAY_TEST_DATABASE", "sqlite")


@pytest.fixture
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    if DEFAULT_TEST_DATABASE == "postgresql":
        cluster: PostgresCluster = request.getfixturevalue("postgres")
        url = cluster.create_database()
    else:
        url = sqlite_url(tmp_path / "relay.db")
    opened = await Store.open(url)
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresCluster]:
    """A throwaway PostgreSQL cluster for this test process (testkit/postgres.py)."""
    yield from running_cluster()


# The databases the store runs on: every store test runs on each.
DATABASES = ("sqlite", "postgresql")


@pytest.fixture(params=DATABASES)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A new empty database: a SQLite file, or a database of the session's PostgreSQL."""
    if request.param == "sqlite":
        return sqlite_url(tmp_path / "relay.db")
    cluster: PostgresCluster = request.getfixturevalue("postgres")
    return cluster.create_database()


@pytest.fixture
async def any_store(database_url: str) -> AsyncIterator[Store]:
    """A store on each of DATABASES: a module runs its `store` tests on both by overriding
    `store` with a fixture that returns this one (tests/unit/test_store.py)."""
    opened = await Store.open(database_url)
    try:
        yield opened
    finally:
        await opened.close()
