"""Shared fixtures: an event-loop backend for async tests and a store in a temp dir."""

from __future__ import annotations

import os
import sys
import weakref
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import FrameType

import greenlet  # type: ignore[import-untyped]  # no stubs; SQLAlchemy asyncio needs it
import pytest
from sqlalchemy import event
from sqlalchemy.pool import ConnectionPoolEntry, Pool

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


# -- database connections left open -------------------------------------------------------
# A connection of a store nobody closed, or one a task still held as its store closed and
# gave back later, is garbage collected open: aiosqlite's ResourceWarning (an error here)
# then fails whichever later test of the worker gc happens to run in, naming no culprit.
# Each connection opened during a test must be closed by the end of its teardown; this
# fixture's teardown (autouse: set up first, torn down last) names the test that did not.
# Cheap: one pool event per connection opened, no gc run.

_ROOT = str(Path(__file__).resolve().parent.parent) + os.sep

#: The connections opened during the current test, with where each was opened.
_opened: weakref.WeakKeyDictionary[ConnectionPoolEntry, str] = weakref.WeakKeyDictionary()


@event.listens_for(Pool, "connect")
def _connection_opened(_dbapi_connection: object, record: ConnectionPoolEntry) -> None:
    frame: FrameType | None = sys._getframe(1)
    # SQLAlchemy's async engine connects inside a greenlet; its caller's frames (the
    # store's method, the test) are where the greenlet's parent waits.
    parent = greenlet.getcurrent().parent
    if parent is not None and parent.gr_frame is not None:
        frame = parent.gr_frame
    ours: list[str] = []  # the innermost few of the repository's frames
    while frame is not None and len(ours) < 4:
        if frame.f_code.co_filename.startswith(_ROOT):
            ours.append(f"{frame.f_code.co_filename.removeprefix(_ROOT)}:{frame.f_lineno} "
                        f"{frame.f_code.co_name}")
        frame = frame.f_back
    _opened[record] = " <- ".join(ours) or "outside the repository's code"


@pytest.fixture(autouse=True)
def _no_database_connection_left_open() -> Iterator[None]:
    _opened.clear()
    yield
    left = [opener for record, opener in list(_opened.items())
            if record.dbapi_connection is not None]
    _opened.clear()
    if left:
        pytest.fail(f"{len(left)} database connection(s) opened during this test are still "
                    "open after it (a Store not closed, or a transaction still in flight as "
                    "its store closed); opened by: " + "; ".join(left), pytrace=False)
