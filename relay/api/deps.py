"""Shared pieces of the route modules: the store dependency, paging, envelopes."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Query, Request, Response
from fastapi.security import HTTPBasic

from relay.store import Store

# Declares HTTP Basic in the OpenAPI document so /docs offers "Authorize"; the check
# itself is BasicAuthMiddleware, which runs before routing.
basic_auth_doc = HTTPBasic(auto_error=False, description="Access token id and secret")

MAX_PAGE_SIZE = 100


def _store(request: Request) -> Store:
    store: Store = request.app.state.store
    return store


StoreDep = Annotated[Store, Depends(_store)]
Limit = Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE, description="Items per page")]
Page = Annotated[int, Query(ge=1, description="Page number, from 1")]


def envelope(data: Any) -> dict[str, Any]:
    """Every response body is `{"data": ...}` (MUX-API.md)."""
    return {"data": data}


def no_content() -> Response:
    """DELETE answers 204 with an empty body."""
    return Response(status_code=204)
