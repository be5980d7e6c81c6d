"""Shared pieces of the route modules: the store dependency, paging, envelopes."""

from __future__ import annotations

from typing import Annotated, Any, Protocol

from fastapi import Depends, Query, Request, Response
from fastapi.security import HTTPBasic
from pydantic import BaseModel

from relay.api.errors import error_responses
from relay.store import Store
from relay.store.asset_files import AssetFiles
from relay.store.records import LiveStream
from relay.streams.registry import StreamChange


class StreamChangeListener(Protocol):
    """Told of every API change that matters to ingest: a live session or the stream-key
    cache (the ingest registry's stream_changed in production). `stream` is the record as
    the change left it; None for a delete."""

    def __call__(self, stream_id: str, change: StreamChange,
                 stream: LiveStream | None = None) -> None: ...


class _DocumentedBasicAuth(HTTPBasic):
    """Declares HTTP Basic in the OpenAPI document so /docs offers "Authorize". The check
    itself is BasicAuthMiddleware, which runs before routing; this one reads nothing (the
    stock HTTPBasic would refuse a valid secret that is not ASCII a second time)."""

    async def __call__(self, request: Request) -> None:  # type: ignore[override]
        return None


basic_auth_doc = _DocumentedBasicAuth(auto_error=False,
                                      description="Access token id and secret")

#: Most items in one page of a list (`limit`), as Mux allows.
MAX_PAGE_SIZE = 100
#: Highest page number a list accepts (`page`); beyond it the answer is 400. A million
#: pages of 100 are far past any real list, and the offset stays far inside SQL's integers.
MAX_PAGE = 1_000_000

#: Errors every `/video/v1` operation can answer: no or a wrong token (401, or 429 while
#: this address's failures are being slowed), a body over the limit (413, checked on every
#: request), and the store not answering (503).
API_ERRORS = error_responses(401, 413, 429, 503)


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
Page = Annotated[int, Query(ge=1, le=MAX_PAGE,
                            description="Page number, from 1; past the end, an empty list")]


def envelope(data: Any) -> dict[str, Any]:
    """Every response body is `{"data": ...}` (MUX-API.md)."""
    return {"data": data}


def no_content() -> Response:
    """DELETE answers 204 with an empty body."""
    return Response(status_code=204)


def answers(status: int, model: type[BaseModel] | None, description: str,
            *errors: int) -> dict[str, Any]:
    """Route decorator arguments that document the success answer (`model` in `{"data"}`,
    or none for 204) and the errors this route adds to API_ERRORS (400, 404)."""
    success: dict[str, Any] = {"description": description}
    if model is not None:
        success["model"] = model
    documented: dict[str, Any] = {
        "status_code": status,
        # The bodies are the records' to_api() dicts; `model` only describes them.
        "response_model": None,
        "responses": {status: success, **error_responses(*errors)},
    }
    if status == 204:
        documented["response_class"] = Response
    return documented
