"""`/healthz` (the process answers) and `/readyz` (it can do its work)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

# Returns the reasons the server is not ready; an empty list means ready.
ReadinessCheck = Callable[[], Awaitable[list[str]]]

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="Liveness: the process is serving HTTP")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", summary="Readiness: store reachable and every listener up")
async def readyz(request: Request) -> JSONResponse:
    check: ReadinessCheck = request.app.state.readiness
    problems = await check()
    if problems:
        return JSONResponse({"status": "unavailable", "problems": problems}, status_code=503)
    return JSONResponse({"status": "ok"})
