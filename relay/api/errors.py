"""The Mux error envelope: `{"error": {"type": ..., "messages": [...]}}`.

Every error the API returns goes through here, including the framework's own (unknown
route, wrong method, request validation), so no client ever sees another shape.
"""

from __future__ import annotations

import logging
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from relay.logs import LogLimiter, peer_text

log = logging.getLogger("relay.api")

# The `type` Mux uses for each status Relay returns.
ERROR_TYPES = {
    400: "invalid_parameters",
    401: "unauthorized",
    403: "forbidden",  # a signed playback id refused (relay.hls.signed.FORBIDDEN_TYPE)
    404: "not_found",
    405: "invalid_request",
    413: "request_too_large",
    429: "too_many_requests",
    503: "service_unavailable",
}

#: Seconds a client is asked to wait (Retry-After) when the store cannot answer.
STORE_RETRY_AFTER_SECONDS = 1

ErrorType = Literal["invalid_parameters", "unauthorized", "forbidden", "not_found",
                    "invalid_request",
                    "request_too_large", "too_many_requests", "service_unavailable", "error"]


class ErrorDetail(BaseModel):
    model_config = ConfigDict(extra="forbid", title="ErrorDetail")

    type: ErrorType = Field(description="What kind of error, as Mux names it")
    messages: list[str] = Field(
        description="One message per problem; for invalid_parameters one per bad field, "
                    "starting with the field's name")


class ErrorEnvelope(BaseModel):
    """The body of every error answer: `{"error": {"type": ..., "messages": [...]}}`."""

    model_config = ConfigDict(extra="forbid", title="ErrorEnvelope")

    error: ErrorDetail


_ERROR_DESCRIPTIONS = {
    400: "invalid_parameters: a query parameter or body field is missing, malformed or out "
         "of range (one message per field), or the request conflicts with the object's state",
    401: "unauthorized: no valid access token id and secret in HTTP Basic auth",
    404: "not_found: no such object (or it belongs to another object)",
    413: "request_too_large: the request body is over the limit",
    429: "too_many_requests: too many failed authentications from this address are being "
         "slowed down; retry after Retry-After seconds",
    503: "service_unavailable: the store did not answer; retry after Retry-After seconds",
}
_ERROR_HEADERS = {
    401: {"WWW-Authenticate": {"description": "Basic realm=\"Relay\"",
                               "schema": {"type": "string"}}},
    429: {"Retry-After": {"description": "Seconds to wait", "schema": {"type": "integer"}}},
    503: {"Retry-After": {"description": "Seconds to wait", "schema": {"type": "integer"}}},
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries for these error statuses, each with the envelope model."""
    documented: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        entry: dict[str, Any] = {"model": ErrorEnvelope,
                                 "description": _ERROR_DESCRIPTIONS[status]}
        if status in _ERROR_HEADERS:
            entry["headers"] = _ERROR_HEADERS[status]
        documented[status] = entry
    return documented


class ApiError(Exception):
    """An error response: status code, Mux error type and one message per problem."""

    def __init__(self, status: int, *messages: str, error_type: str | None = None) -> None:
        super().__init__(*messages)
        self.status = status
        self.error_type = error_type or ERROR_TYPES.get(status, "error")
        self.messages = list(messages)


def not_found(what: str) -> ApiError:
    return ApiError(404, f"{what} not found")


def error_response(status: int, messages: list[str], error_type: str | None = None,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    body = {"error": {"type": error_type or ERROR_TYPES.get(status, "error"),
                      "messages": messages}}
    return JSONResponse(body, status_code=status, headers=headers)


#: Most messages in one 400: a 1 MiB body of 10,000 bad list items would otherwise be
#: answered with megabytes of messages.
MAX_ERROR_MESSAGES = 20


def validation_messages(errors: list[Any]) -> list[str]:
    """One message per bad field, each starting with the field's name and saying what was
    sent; past MAX_ERROR_MESSAGES, one last message counts the rest."""
    messages: dict[str, str] = {}
    for err in errors[:MAX_ERROR_MESSAGES]:
        loc = [p for p in err.get("loc", ()) if p not in ("body", "query", "path")]
        if err.get("type") == "json_invalid":
            messages.setdefault("<json>", f"request body is not valid JSON: {err.get('msg')}")
            continue
        field = peer_text(_field_path(loc) or "body")
        detail = str(err.get("msg", "invalid value"))
        if "input" in err and field != "body":
            # The value a client sent, cut short and escaped: never whole, never its repr.
            got = err["input"]
            detail += f" (got '{peer_text(got)}')" if isinstance(got, str) else \
                f" (got {peer_text(got)})"
        messages.setdefault(field, f"{field}: {detail}")
    if len(errors) > MAX_ERROR_MESSAGES:
        return [*messages.values(),
                f"... and {len(errors) - MAX_ERROR_MESSAGES} more invalid values not listed"]
    return list(messages.values())


def _field_path(loc: list[Any]) -> str:
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif isinstance(part, str) and ("[" in part or "(" in part):
            continue  # pydantic's name of a union member or a validator, not a field
        else:
            path += f".{part}" if path else str(part)
    return path


#: The methods a 405's Allow header can name (those Relay's routes use, and HEAD).
_METHODS = ("DELETE", "GET", "HEAD", "PATCH", "POST", "PUT")


def _allowed_methods(request: Request) -> str:
    # Starlette answers 405 with the methods of the first route whose path matched; a path
    # served by several routes (GET and POST /video/v1/live-streams) allows all of theirs
    # (rfc9110 15.5.6: Allow lists the methods the resource supports). Each route (or
    # included router) is asked whether it would take the request with each method.
    allowed = [method for method in _METHODS
               if any(route.matches({**request.scope, "method": method})[0] is Match.FULL
                      for route in request.app.router.routes)]
    return ", ".join(allowed)


def install_error_handlers(app: FastAPI) -> None:
    async def on_api_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ApiError)
        return error_response(exc.status, exc.messages, exc.error_type)

    async def on_validation_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return error_response(400, validation_messages(list(exc.errors())))

    async def on_http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        message = "no such resource" if exc.status_code == 404 else str(exc.detail)
        headers = dict(exc.headers) if exc.headers else None
        if exc.status_code == 405:
            headers = {**(headers or {}), "Allow": _allowed_methods(request)}
        return error_response(exc.status_code, [message], headers=headers)

    store_errors = LogLimiter(log)

    async def on_store_error(_: Request, exc: Exception) -> JSONResponse:
        # The exception's text carries SQL and its parameters (peer values, hashes): only
        # the class names reach the log.
        cause = getattr(exc, "orig", None)
        store_errors.warning("api-store-error", "API request failed in the store: %s%s",
                             type(exc).__name__,
                             f" ({type(cause).__name__})" if cause is not None else "")
        return error_response(503, ["the store did not answer; retry shortly"],
                              headers={"Retry-After": str(STORE_RETRY_AFTER_SECONDS)})

    app.add_exception_handler(ApiError, on_api_error)
    # The database is down, locked past its busy timeout, out of disk, or the pool is
    # exhausted: the client may retry. Other store errors are bugs and stay 500s.
    for unavailable in (OperationalError, InterfaceError, PoolTimeoutError):
        app.add_exception_handler(unavailable, on_store_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
