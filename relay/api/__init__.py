"""The HTTP API: Mux-compatible `/video/v1` routes plus health checks."""

from __future__ import annotations

from fastapi import FastAPI

from relay import __version__
from relay.api import assets, health, live_streams
from relay.api.deps import StreamChangeListener
from relay.api.errors import install_error_handlers
from relay.api.health import ReadinessCheck
from relay.api.middleware import BasicAuthMiddleware, BodyLimitMiddleware
from relay.store import Store
from relay.store.asset_files import AssetFiles
from relay.streams.registry import StreamChange

# Mux's API takes small JSON documents; anything larger is a mistake or an attack.
MAX_BODY_BYTES = 1024 * 1024


def _ignore_change(_stream_id: str, _change: StreamChange) -> None:
    pass


def create_api(
    store: Store,
    readiness: ReadinessCheck,
    on_stream_change: StreamChangeListener = _ignore_change,
    asset_files: AssetFiles | None = None,
) -> FastAPI:
    """Build the ASGI app that serves the API with `store` as its data; `on_stream_change`
    hears of completes, disables, deletes and key resets so live sessions can act on them;
    `asset_files`, when given, has each deleted asset's media removed with it."""
    app = FastAPI(
        title="Relay",
        version=__version__,
        summary="Live-streaming ingest edge with a Mux Video compatible live-streams API",
    )
    app.state.store = store
    app.state.readiness = readiness
    app.state.on_stream_change = on_stream_change
    app.state.asset_files = asset_files
    install_error_handlers(app)
    app.include_router(live_streams.router)
    app.include_router(assets.router)
    app.include_router(health.router)
    # Added last, so it runs first: auth, then the body limit, then routing.
    app.add_middleware(BodyLimitMiddleware, max_bytes=MAX_BODY_BYTES)
    app.add_middleware(BasicAuthMiddleware, verify=store.verify_access_token)
    return app


__all__ = ["MAX_BODY_BYTES", "create_api"]
