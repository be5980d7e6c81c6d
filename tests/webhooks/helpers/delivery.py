"""What test_delivery.py shares with other test modules: kept here so no test module imports
another."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import AsyncIterator, Callable

import httpx
import pytest

from relay.store import NewLiveStream, Store
from relay.webhooks import WebhookDeliverer, WebhookLimits

URL, OTHER = "http://receiver.test/hook", "http://other.test/hook"


SECRET = "s3cret"


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def clocked_store(database_url: str, clock: Clock) -> AsyncIterator[Store]:
    """On SQLite and on PostgreSQL: the outbox's queries run on both."""
    opened = await Store.open(database_url, clock=clock)
    try:
        yield opened
    finally:
        await opened.close()


def spec() -> NewLiveStream:
    return NewLiveStream(
        latency_mode="standard", reconnect_window=60.0, max_continuous_duration=43200,
        audio_only=False, use_slate_for_standard_latency=False, test=False,
        new_asset_settings={}, playback_policies=("public",))


class Receiver:
    """Answers with `answer(body)`, keeping each request's parsed body."""

    def __init__(self, answer: Callable[[dict[str, object]], int] = lambda _: 200) -> None:
        self.answer = answer
        self.seen: list[dict[str, object]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = request.content
        t, v1 = (part.split("=", 1)[1] for part in request.headers["Mux-Signature"].split(","))
        expected = hmac.new(SECRET.encode(), f"{t}.".encode() + body,
                            hashlib.sha256).hexdigest()
        assert hmac.compare_digest(v1, expected)
        parsed = json.loads(body)
        parsed["_host"] = request.url.host
        self.seen.append(parsed)
        return httpx.Response(self.answer(parsed), text="no thanks")


def deliverer(store: Store, clock: Clock, *urls: str, **limits: object) -> WebhookDeliverer:
    return WebhookDeliverer(store, urls, SECRET, clock=clock, draw=lambda: 0.5,
                            limits=WebhookLimits(**limits))  # type: ignore[arg-type]


async def run(d: WebhookDeliverer, url: str, receiver: Receiver) -> int:
    async with httpx.AsyncClient(transport=httpx.MockTransport(receiver)) as client:
        return await d.work_once(url, client)
