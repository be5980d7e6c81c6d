"""/readyz names the check that failed, never an exception's text (it is unauthenticated)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from sqlalchemy.exc import OperationalError

import relay.app
from relay.app import RelayServer, redact_url
from relay.config import Settings
from relay.logs import LogLimiter

pytestmark = pytest.mark.anyio

URL = "postgresql+asyncpg://relay:S3cret-pa55word@db.internal.example:5432/relay"


class FailingStore:
    def __init__(self, error: BaseException | None) -> None:
        self.error = error

    async def ping(self) -> None:
        if self.error is None:
            await asyncio.Event().wait()  # never answers
        raise self.error


def server_with(store: Any) -> RelayServer:
    server = RelayServer(Settings(database_url=URL))
    server._store = store
    return server


async def test_store_failure_is_named_without_its_text(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(relay.app, "_READINESS_LOG", LogLimiter(logging.getLogger("relay")))
    error = OperationalError(
        "SELECT 1", None, OSError(f"connection to {URL} refused at 10.1.2.3:5432"))
    with caplog.at_level(logging.WARNING):
        problems = await server_with(FailingStore(error)).readiness_problems()
    assert problems == ["store: unreachable"]
    # The detail goes to the operator's log, with the password taken out.
    assert "10.1.2.3" in caplog.text
    assert "S3cret-pa55word" not in caplog.text and "relay:***@" in caplog.text


async def test_a_store_that_does_not_answer_is_not_ready(monkeypatch: pytest.MonkeyPatch,
                                                         ) -> None:
    monkeypatch.setattr(relay.app, "READINESS_STORE_TIMEOUT", 0.01)
    problems = await server_with(FailingStore(None)).readiness_problems()
    assert problems == ["store: no answer within 0.01s"]


def test_redacted_urls() -> None:
    assert redact_url(URL) == "'postgresql+asyncpg://relay:***@db.internal.example:5432/relay'"
    assert "pa55" not in redact_url("relay:pa55@host")
