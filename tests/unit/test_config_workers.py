"""`--workers` and `--worker-http-port` (issue 19): defaults, bounds, the refusal on SQLite,
the URL each worker advertises, and the node ids the supervisor gives its workers."""

from __future__ import annotations

import dataclasses
from collections import deque

import pytest

from relay.app import advertise_url
from relay.config import (
    NODE_ID_PATTERN,
    ConfigError,
    Settings,
)
from relay.workers import (
    MAX_RESTART_DELAY,
    MAX_RESTARTS_PER_MINUTE,
    RESTART_DELAY,
    restart_delay,
    worker_node_id,
)
from tests.unit.helpers.config import settings

POSTGRES = "postgresql+asyncpg://relay:secret@db.example/relay"


def test_defaults_are_one_worker_on_any_database() -> None:
    s = settings()
    assert (s.workers, s.worker_http_port, s.worker_index) == (1, 0, None)
    assert settings("--workers", "1").workers == 1  # SQLite is fine for one


def test_workers_from_flag_and_env_on_postgresql() -> None:
    assert settings("--workers", "4", "--database-url", POSTGRES).workers == 4
    s = settings(RELAY_WORKERS="2", RELAY_DATABASE_URL=POSTGRES,
                 RELAY_WORKER_HTTP_PORT="9100")
    assert (s.workers, s.worker_http_port) == (2, 9100)


@pytest.mark.parametrize("environ", [{}, {"RELAY_DATABASE_URL": "sqlite+aiosqlite:///x.db"}])
def test_several_workers_refuse_sqlite_naming_the_database_url(environ: dict[str, str],
                                                               ) -> None:
    with pytest.raises(ConfigError, match=r"--workers 2 needs PostgreSQL.*--database-url"):
        settings("--workers", "2", **environ)


@pytest.mark.parametrize("argv", [("--workers", "0"), ("--workers", "65"),
                                  ("--worker-http-port", "70000")])
def test_bad_values_name_the_option(argv: tuple[str, str]) -> None:
    with pytest.raises(ConfigError, match=argv[0]):
        settings(*argv, "--database-url", POSTGRES)


def test_a_worker_advertises_its_own_listener() -> None:
    base = Settings(host="127.0.0.1")
    assert advertise_url(base, 41000, worker=True) == "http://127.0.0.1:41000"
    assert advertise_url(base, 8080, worker=False) == "http://127.0.0.1:8080"
    given = dataclasses.replace(base, advertise_url="https://edge-1.example:8080")
    # Given by the operator: kept as it is for one process; a worker's is its own plain-HTTP
    # listener at that host (the shared port, or a proxy in front, reaches any worker).
    assert advertise_url(given, 8080, worker=False) == "https://edge-1.example:8080"
    assert advertise_url(given, 9101, worker=True) == "http://edge-1.example:9101"
    v6 = dataclasses.replace(base, advertise_url="http://[fd00::5]:8080")
    assert advertise_url(v6, 9100, worker=True) == "http://[fd00::5]:9100"


def test_worker_node_ids_are_new_for_each_restart_and_valid() -> None:
    assert [worker_node_id("host-12", i, 0) for i in range(2)] == ["host-12-0", "host-12-1"]
    assert worker_node_id("host-12", 1, 3) == "host-12-1.3"
    long = worker_node_id("x" * 64, 9, 12)
    assert len(long) == 64 and long.endswith("-9.12") and NODE_ID_PATTERN.fullmatch(long)


def test_restarts_back_off_and_are_bounded_per_minute() -> None:
    restarts: deque[float] = deque()
    delays = [restart_delay(restarts, 100.0 + i) for i in range(MAX_RESTARTS_PER_MINUTE)]
    assert delays == [min(MAX_RESTART_DELAY, RESTART_DELAY * 2 ** i)
                      for i in range(MAX_RESTARTS_PER_MINUTE)]
    assert delays[0] == RESTART_DELAY
    # One more within the minute: give up.
    assert restart_delay(restarts, 100.0 + MAX_RESTARTS_PER_MINUTE) is None
    # A minute after the first restarts they no longer count: the first delay again.
    assert restart_delay(restarts, 100.0 + 60 + MAX_RESTARTS_PER_MINUTE) == RESTART_DELAY
