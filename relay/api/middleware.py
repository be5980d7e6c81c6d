"""ASGI middleware that runs before any routing or body parsing.

Authentication comes first so that an unauthenticated client learns nothing about a route
(not even whether its body would be valid); the body limit comes next so that an oversized
upload is refused without being buffered.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import math
from collections.abc import Awaitable, Callable

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from relay.api.auth import AuthLimits, FailedAuthQueue, address_key
from relay.api.errors import error_response
from relay.logs import LogLimiter, peer_text

log = logging.getLogger("relay.api")

# Checks (token id, secret); the store's verify_access_token in production.
TokenVerifier = Callable[[str, str], Awaitable[bool]]
Sleep = Callable[[float], Awaitable[None]]

#: Every route under these needs an access token (`/system/v1`: operators' views).
PROTECTED_PREFIXES = ("/video/v1", "/system/v1")
UNAUTHORIZED = "Unauthorized request: use an access token id and secret with HTTP Basic"


class BasicAuthMiddleware:
    """HTTP Basic auth with an access token on every `/video/v1` and `/system/v1` route;
    failures are answered slowly, per address (auth.py)."""

    def __init__(self, app: ASGIApp, verify: TokenVerifier,
                 limits: AuthLimits | None = None, sleep: Sleep = asyncio.sleep,
                 clock: Callable[[], float] | None = None) -> None:
        self.app = app
        self.verify = verify
        self.failures = FailedAuthQueue(limits or AuthLimits())
        self._sleep = sleep
        self._clock = clock  # the running loop's clock when None
        self._log = LogLimiter(log)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not _is_protected(scope["path"]):
            await self.app(scope, receive, send)
            return
        credentials = _basic_credentials(scope)
        if credentials is None:
            # No guess was made: nothing to slow down.
            await _unauthorized(scope, receive, send)
            return
        if await self.verify(*credentials):
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        key = address_key(client[0] if client else None)
        if self.failures.refuses(key):
            self._log.warning("api-auth-refused", "failed API authentications from %s "
                              "refused at once: %d from it are being slowed",
                              peer_text(key), self.failures.waiting(key))
            retry = max(1, math.ceil(self.failures.limits.failure_delay))
            response = error_response(
                429, ["too many failed authentications from this address; retry later"],
                headers={"Retry-After": str(retry)})
            await response(scope, receive, send)
            return
        now = self._clock() if self._clock else asyncio.get_running_loop().time()
        answer_at = self.failures.failed(key, now)
        self._log.info("api-auth-failed", "API authentication failed from %s; answering "
                       "after %.1fs", peer_text(key), answer_at - now)
        try:
            await self._sleep(answer_at - now)
        finally:
            self.failures.released(key)
        await _unauthorized(scope, receive, send)


async def _unauthorized(scope: Scope, receive: Receive, send: Send) -> None:
    response = error_response(401, [UNAUTHORIZED],
                              headers={"WWW-Authenticate": 'Basic realm="Relay"'})
    await response(scope, receive, send)


def _is_protected(path: str) -> bool:
    return any(path == prefix or path.startswith(prefix + "/")
               for prefix in PROTECTED_PREFIXES)


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
