"""The Mux error envelope: `{"error": {"type": ..., "messages": [...]}}`.

Every error the API returns goes through here, including the framework's own (unknown
route, wrong method, request validation), so no client ever sees another shape.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

# The `type` Mux uses for each status Relay returns.
ERROR_TYPES = {
    400: "invalid_parameters",
    401: "unauthorized",
    404: "not_found",
    405: "invalid_request",
    413: "request_too_large",
    429: "too_many_requests",
    503: "service_unavailable",
}


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


def validation_messages(errors: list[Any]) -> list[str]:
    """One message per bad field, each starting with the field's name and saying what was sent."""
    messages: dict[str, str] = {}
    for err in errors:
        loc = [p for p in err.get("loc", ()) if p not in ("body", "query", "path")]
        if err.get("type") == "json_invalid":
            messages.setdefault("<json>", f"request body is not valid JSON: {err.get('msg')}")
            continue
        field = _field_path(loc) or "body"
        detail = str(err.get("msg", "invalid value"))
        if "input" in err and field != "body":
            detail += f" (got {err['input']!r})"
        messages.setdefault(field, f"{field}: {detail}")
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


def install_error_handlers(app: FastAPI) -> None:
    async def on_api_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ApiError)
        return error_response(exc.status, exc.messages, exc.error_type)

    async def on_validation_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return error_response(400, validation_messages(list(exc.errors())))

    async def on_http_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        message = "no such resource" if exc.status_code == 404 else str(exc.detail)
        headers = dict(exc.headers) if exc.headers else None
        return error_response(exc.status_code, [message], headers=headers)

    app.add_exception_handler(ApiError, on_api_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
