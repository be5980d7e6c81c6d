"""The Prometheus endpoint, served on its own listener (`--metrics-port`).

Collectors read plain counters at scrape time; nothing is updated per packet. For now the
registry holds the process and runtime collectors and Relay's build info; the ingest,
playback and webhook counters join it as those parts land.
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Info, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from relay import __version__

_build = Info("relay_build", "Relay version")
_build.info({"version": __version__})


async def _metrics(_: Request) -> Response:
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)


def create_metrics_app() -> Starlette:
    return Starlette(routes=[Route("/metrics", _metrics)])
