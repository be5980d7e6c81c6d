"""ASGI middleware that runs before any routing or body parsing.

Authentication comes first so that an unauthenticated client learns nothing about a route
(not even whether its body would be valid); the body limit comes next so that an oversized
upload is refused without being buffered.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Awaitable, Callable

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from relay.api.errors import error_response

# Checks (token id, secret); the store's verify_access_token in production.
TokenVerifier = Callable[[str, str], Awaitable[bool]]

PROTECTED_PREFIX = "/video/v1"


class BasicAuthMiddleware:
    """HTTP Basic auth with an access token on every `/video/v1` route."""

    def __init__(self, app: ASGIApp, verify: TokenVerifier) -> None:
        self.app = app
        self.verify = verify

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not _is_protected(scope["path"]):
            await self.app(scope, receive, send)
            return
        credentials = _basic_credentials(scope)
        if credentials is None or not await self.verify(*credentials):
            response = error_response(
                401, ["Unauthorized request: use an access token id and secret with HTTP Basic"],
                headers={"WWW-Authenticate": 'Basic realm="Relay"'})
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


def _is_protected(path: str) -> bool:
    return path == PROTECTED_PREFIX or path.startswith(PROTECTED_PREFIX + "/")


def _basic_credentials(scope: Scope) -> tuple[str, str] | None:
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, encoded = value.partition(b" ")
            if scheme.lower() != b"basic":
                return None
            try:
                decoded = base64.b64decode(encoded.strip(), validate=True).decode()
            except (binascii.Error, UnicodeDecodeError):
                return None
            user, sep, password = decoded.partition(":")
            return (user, password) if sep else None
    return None


class BodyLimitMiddleware:
    """Refuse request bodies over `max_bytes` with 413, by header or while streaming."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_large_message = f"request body is larger than the limit of {self.max_bytes} bytes"
        too_large = error_response(413, [too_large_message])
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                await too_large(scope, receive, send)
                return

        received = 0

        async def limited_receive() -> Message:
            # Raised inside the route's body read, so the app's own error handling turns
            # it into the 413 envelope.
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise HTTPException(413, too_large_message)
            return message

        await self.app(scope, limited_receive, send)
