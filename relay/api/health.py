"""`/healthz` (the process answers) and `/readyz` (it can do its work)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from relay.api.errors import error_responses
from relay.api.responses import HealthStatus, Readiness

# Returns the reasons the server is not ready; an empty list means ready. Each reason names
# the check that failed, never an exception's text (which can carry addresses, paths or a
# database URL): /readyz is not authenticated.
ReadinessCheck = Callable[[], Awaitable[list[str]]]

# A body over the limit is refused on every path (BodyLimitMiddleware), these included.
router = APIRouter(tags=["health"], responses=error_responses(413))


@router.get("/healthz", response_model=None,
            responses={200: {"model": HealthStatus, "description": "Serving"}},
            summary="Liveness: the process is serving HTTP")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", response_model=None,
            responses={200: {"model": Readiness, "description": "Ready"},
                       503: {"model": Readiness,
                             "description": "Not ready; `problems` names the failed checks"}},
            summary="Readiness: store reachable and every listener up")
async def readyz(request: Request) -> JSONResponse:
    check: ReadinessCheck = request.app.state.readiness
    problems = await check()
    if problems:
        return JSONResponse({"status": "unavailable", "problems": problems}, status_code=503)
    return JSONResponse({"status": "ok"})
