"""The API over an in-process ASGI transport, on the test's `store` (a module may override
`store`, e.g. with `any_store` to run on SQLite and PostgreSQL)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from relay.api import AuthLimits, create_api
from relay.store import Store


async def ready() -> list[str]:
    return []


@pytest.fixture
async def client(store: Store) -> AsyncIterator[httpx.AsyncClient]:
    """A client with a valid access token. Failed authentications are answered at once here;
    test_api_auth.py tests the delay."""
    token_id, secret = await store.create_access_token()
    app = create_api(store, ready, auth_limits=AuthLimits(failure_delay=0))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://relay", auth=(token_id, secret)) as http:
        yield http
