"""The image routes on the playback listener, as `image.mux.com` serves them.

    GET /{PLAYBACK_ID}/thumbnail.{jpg,png,webp}   time, width, height, rotate, fit_mode,
                                                  flip_v, flip_h
    GET /{PLAYBACK_ID}/animated.{gif,webp}        start, end, width, height, fps
    GET /{PLAYBACK_ID}/storyboard.vtt             format (of the sheet it names)
    GET /{PLAYBACK_ID}/storyboard.{jpg,png,webp}

A thin adapter: parse the query (`relay.images.params`: a bad value is a 400 in the Mux
envelope naming the field), resolve the playback id like the HLS routes do (unknown: 404,
one body whatever the reason), take the media's snapshot and version (`relay.images.media`),
charge the client for a new decode (`ClientRates`: 429), and await the image from the
`DecodePool` (queue bound: 503 with Retry-After; a time outside the media: 400). These routes
must come before the HLS routes' `/{playback_id}/{name}`, which would take their paths.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Final, Protocol, TypeVar
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from relay.api.errors import error_response
from relay.hls.packager import LivePackager
from relay.hls.routes import CORS, forbidden
from relay.hls.signed import TOKEN_PARAMETER, PlaybackGate
from relay.images.media import (
    MediaGone,
    MediaReader,
    RecordingIndex,
    RecordingReader,
    Timeline,
    live_snapshot,
    recording_version,
)
from relay.images.params import (
    ImageParamError,
    parse_animated,
    parse_storyboard,
    parse_thumbnail,
)
from relay.images.pool import ClientRates, DecodePool, ImageBusy, RateLimited
from relay.images.render import (
    Rendered,
    render_animated,
    render_storyboard,
    render_storyboard_vtt,
    render_thumbnail,
)
from relay.playback.tokens import Audience

R = TypeVar("R", bound=Hashable)

#: Cache-Control of a live stream's images (its window moves every part) and of an asset's
#: (a recording still growing moves the default thumbnail's middle and the storyboard).
LIVE_IMAGE_CACHE: Final = "public, max-age=1"
RECORDED_IMAGE_CACHE: Final = "public, max-age=60"

class PlaybackResolver(Protocol):
    """What the routes need of `relay.hls.routes.PlaybackDirectory`."""

    async def resolve_signed(self, playback_id: str
                             ) -> tuple[LivePackager | Path | None, bool]: ...


def _not_found() -> Response:
    return error_response(404, ["not found"], headers={**CORS, "Cache-Control": "no-store"})


def _refused(status: int, message: str, retry_after: int) -> Response:
    return error_response(status, [message], headers={
        **CORS, "Cache-Control": "no-store", "Retry-After": str(retry_after)})


def _bad(exc: ImageParamError) -> Response:
    return error_response(400, [str(exc)], headers={**CORS, "Cache-Control": "no-store"})


def image_routes(directory: PlaybackResolver, *, pool: DecodePool | None = None,
                 rates: ClientRates | None = None, index: RecordingIndex | None = None,
                 gate: PlaybackGate | None = None) -> list[Route]:
    """The image routes; add them before `relay.hls.routes.playback_routes`. `gate`
    decides signed playback ids by their `?token=` (audience t, g or s); without one, or
    without its access, they answer 404 as the HLS routes do."""
    decodes = pool if pool is not None else DecodePool()
    clients = rates if rates is not None else ClientRates()
    recordings = index if index is not None else RecordingIndex()

    async def serve(request: Request, audience: Audience, kind: str, parsed: R,
                    make: Callable[[Timeline, MediaReader, R], Rendered]) -> Response:
        playback_id: str = request.path_params["playback_id"]
        target, signed = await directory.resolve_signed(playback_id)
        if target is None or (signed and (gate is None or not gate.enabled)):
            return _not_found()
        private = False
        if signed:
            assert gate is not None
            refusal = gate.check_image(
                playback_id, request.query_params.get(TOKEN_PARAMETER), audience=audience,
                referer=request.headers.get("referer"),
                user_agent=request.headers.get("user-agent"),
                client=request.client.host if request.client is not None else "")
            if refusal is not None:
                return forbidden(refusal)
            private = True  # a shared cache must not hand it to a viewer without a token
        job: Callable[[], Rendered]
        if isinstance(target, LivePackager):
            snapshot = live_snapshot(target)
            if snapshot is None:
                return _not_found()
            version = snapshot.version
            timeline, reader = snapshot.timeline, snapshot.reader

            def job() -> Rendered:
                return make(timeline, reader, parsed)
            cache = LIVE_IMAGE_CACHE
        else:
            recording: Path = target
            found = await asyncio.to_thread(recording_version, recording)
            if found is None:
                return _not_found()
            version = found

            def job() -> Rendered:
                return make(recordings.timeline(recording, found), RecordingReader(recording),
                            parsed)
            cache = RECORDED_IMAGE_CACHE
        key = (playback_id, kind, parsed, version)
        try:
            if not decodes.has(key):
                clients.take(request.client.host if request.client else "")
            result = await decodes.run(key, job)
        except RateLimited as exc:
            decodes.counters.rate_limited += 1
            return _refused(429, str(exc), exc.retry_after)
        except ImageBusy as exc:
            return _refused(503, str(exc), exc.retry_after)
        except ImageParamError as exc:  # a time outside the media
            return _bad(exc)
        except MediaGone:
            return _not_found()
        body = result.body
        if private:
            cache = cache.replace("public", "private")
            if kind == "storyboard.vtt":
                # The cues name the sheet, which needs the token too (audience s, as this
                # one): the viewer's own token goes on each cue's URL.
                token = quote(request.query_params.get(TOKEN_PARAMETER, ""), safe="")
                body = body.replace(b"#xywh=", b"?%s=%s#xywh=" % (
                    TOKEN_PARAMETER.encode(), token.encode("ascii")))
        return Response(body, media_type=result.media_type,
                        headers={**CORS, "Cache-Control": cache})

    async def thumbnail(request: Request) -> Response:
        try:
            parsed = parse_thumbnail(request.path_params["ext"], _query(request))
        except ImageParamError as exc:
            return _bad(exc)
        return await serve(request, "t", "thumbnail", parsed, render_thumbnail)

    async def animated(request: Request) -> Response:
        try:
            parsed = parse_animated(request.path_params["ext"], _query(request))
        except ImageParamError as exc:
            return _bad(exc)
        return await serve(request, "g", "animated", parsed, render_animated)

    async def storyboard(request: Request) -> Response:
        try:
            vtt, parsed = parse_storyboard(request.path_params["ext"], _query(request))
        except ImageParamError as exc:
            return _bad(exc)
        if vtt:
            return await serve(request, "s", "storyboard.vtt", parsed, render_storyboard_vtt)
        return await serve(request, "s", "storyboard", parsed, render_storyboard)

    return [
        Route("/{playback_id}/thumbnail.{ext}", thumbnail, methods=["GET"]),
        Route("/{playback_id}/animated.{ext}", animated, methods=["GET"]),
        Route("/{playback_id}/storyboard.{ext}", storyboard, methods=["GET"]),
    ]


def _query(request: Request) -> dict[str, list[str]]:
    params = request.query_params
    return {name: params.getlist(name) for name in params}
