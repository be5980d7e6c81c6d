"""Shared pieces of the route modules: the store dependency, paging, envelopes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Depends, Query, Request, Response
from fastapi.security import HTTPBasic

from relay.store import Store
from relay.store.asset_files import AssetFiles
from relay.streams.registry import StreamChange

# Told of every API change that matters to a live session (the ingest registry's
# stream_changed in production).
StreamChangeListener = Callable[[str, StreamChange], None]

# Declares HTTP Basic in the OpenAPI document so /docs offers "Authorize"; the check
# itself is BasicAuthMiddleware, which runs before routing.
basic_auth_doc = HTTPBasic(auto_error=False, description="Access token id and secret")

MAX_PAGE_SIZE = 100


def _store(request: Request) -> Store:
    store: Store = request.app.state.store
    return store


def _stream_changes(request: Request) -> StreamChangeListener:
    listener: StreamChangeListener = request.app.state.on_stream_change
    return listener


def _asset_files(request: Request) -> AssetFiles | None:
    files: AssetFiles | None = request.app.state.asset_files
    return files


StoreDep = Annotated[Store, Depends(_store)]
AssetFilesDep = Annotated[AssetFiles | None, Depends(_asset_files)]
ChangesDep = Annotated[StreamChangeListener, Depends(_stream_changes)]
Limit = Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE, description="Items per page")]
Page = Annotated[int, Query(ge=1, description="Page number, from 1")]


def envelope(data: Any) -> dict[str, Any]:
    """Every response body is `{"data": ...}` (MUX-API.md)."""
    return {"data": data}


def no_content() -> Response:
    """DELETE answers 204 with an empty body."""
    return Response(status_code=204)
