"""The HTTP API: Mux-compatible `/video/v1` routes plus health checks."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from relay import __version__
from relay.api import assets, health, live_streams, signing, webhook_events
from relay.api.auth import AuthLimits
from relay.api.deps import StreamChangeListener
from relay.api.errors import install_error_handlers
from relay.api.health import ReadinessCheck
from relay.api.middleware import BasicAuthMiddleware, BodyLimitMiddleware
from relay.playback.access import PlaybackAccess
from relay.store import Store
from relay.store.asset_files import AssetFiles
from relay.store.records import LiveStream
from relay.streams.registry import StreamChange

# Mux's API takes small JSON documents; anything larger is a mistake or an attack.
MAX_BODY_BYTES = 1024 * 1024


def _ignore_change(stream_id: str, change: StreamChange,
                   stream: LiveStream | None = None) -> None:
    pass


class _RelayApi(FastAPI):
    """FastAPI whose OpenAPI document lists the answers Relay really gives.

    FastAPI adds a 422 with its own validation-error shape to every operation that takes
    parameters or a body; Relay answers those with 400 and the Mux envelope (errors.py), which
    each route documents, so the 422s and their schemas are taken out."""

    def openapi(self) -> dict[str, Any]:
        if self.openapi_schema is None:
            document = super().openapi()
            for operations in document.get("paths", {}).values():
                for operation in operations.values():
                    operation.get("responses", {}).pop("422", None)
            schemas = document.get("components", {}).get("schemas", {})
            for name in ("HTTPValidationError", "ValidationError"):
                schemas.pop(name, None)
            self.openapi_schema = document
        return self.openapi_schema


def create_api(
    store: Store,
    readiness: ReadinessCheck,
    on_stream_change: StreamChangeListener = _ignore_change,
    asset_files: AssetFiles | None = None,
    auth_limits: AuthLimits | None = None,
    playback_access: PlaybackAccess | None = None,
) -> FastAPI:
    """Build the ASGI app that serves the API with `store` as its data; `on_stream_change`
    hears of every change to a stream (creates, updates, completes, disables, enables,
    deletes, key resets) so live sessions and the stream-key cache can act on them;
    `asset_files`, when given, has each deleted asset's media removed with it;
    `auth_limits` says how failed authentications are slowed (auth.py's defaults);
    `playback_access`, when given, is told of every signing key and playback restriction
    the API creates, changes or deletes (the playback routes check tokens with it)."""
    app = _RelayApi(
        title="Relay",
        version=__version__,
        summary="Live-streaming ingest edge with a Mux Video compatible live-streams API",
    )
    app.state.store = store
    app.state.readiness = readiness
    app.state.on_stream_change = on_stream_change
    app.state.asset_files = asset_files
    app.state.playback_access = playback_access
    install_error_handlers(app)
    app.include_router(live_streams.router)
    app.include_router(assets.router)
    app.include_router(webhook_events.router)
    app.include_router(signing.system_router)
    app.include_router(signing.video_router)
    app.include_router(signing.restrictions_router)
    app.include_router(health.router)
    # Added last, so it runs first: auth, then the body limit, then routing.
    app.add_middleware(BodyLimitMiddleware, max_bytes=MAX_BODY_BYTES)
    app.add_middleware(BasicAuthMiddleware, verify=store.verify_access_token,
                       limits=auth_limits)
    return app


__all__ = ["MAX_BODY_BYTES", "AuthLimits", "create_api"]
