"""The image routes on the playback listener, as `image.mux.com` serves them.

    GET /{PLAYBACK_ID}/thumbnail.{jpg,png,webp}   time, width, height, rotate, fit_mode,
                                                  flip_v, flip_h
    GET /{PLAYBACK_ID}/animated.{gif,webp}        start, end, width, height, fps
    GET /{PLAYBACK_ID}/storyboard.vtt             format (of the sheet it names)
    GET /{PLAYBACK_ID}/storyboard.{jpg,png,webp}

A thin adapter: parse the query (`relay.images.params`: a bad value is a 400 in the Mux
envelope naming the field), resolve the playback id like the HLS routes do (unknown: 404,
one body whatever the reason), take the media's snapshot and version (`relay.images.media`),
with a `PlaybackGate`, answer a signed id only with a `?token=` of the route's audience
(`t`, `g`, `s`; else 403 in the Mux envelope, as the HLS routes), charge the client for a
new decode (`ClientRates`: 429), and await the image from the
`DecodePool` (queue bound: 503 with Retry-After; a time outside the media: 400; a worker
process that crashed or hung on it: 500, the worker replaced). These routes
must come before the HLS routes' `/{playback_id}/{name}`, which would take their paths.

A live stream another node owns (issue 19) is drawn by that node: with an `OwnerProxy`, the
request (path and query as they came) is answered with the owner's answer, its status,
Cache-Control and body, as the HLS routes do. The node still parses the query (a bad value
is its own 400), charges the client (`ClientRates`, 429) for each fetch it starts, and
counts the fetches in flight against the pool's queue bound (`DecodePool.share`, 503);
identical requests at once share one fetch. A request that came from another node
(`HOP_HEADER`) is never sent on; from the address of a live node (`nodes`), it is not
charged to that address's rate either: the node charged its own viewer, and all of a node's
viewers share its one address.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Final, Protocol, TypeVar

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from relay.addresses import address_group
from relay.api.errors import error_response
from relay.hls.packager import LivePackager
from relay.hls.routes import CORS, Target, accepts_gzip, forbidden
from relay.hls.signed import TOKEN_PARAMETER, PlaybackGate
from relay.hls.upstream import HOP_HEADER, OwnerProxy
from relay.images.jobs import (
    Rendered,
    render_animated,
    render_live,
    render_recorded,
    render_storyboard,
    render_storyboard_vtt,
    render_thumbnail,
)
from relay.images.media import (
    MediaGone,
    MediaReader,
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
from relay.images.worker import ImageJob, ImageWorkerFailed
from relay.playback.tokens import Audience

R = TypeVar("R", bound=Hashable)

#: Cache-Control of a live stream's images (its window moves every part) and of an asset's
#: (a recording still growing moves the default thumbnail's middle and the storyboard).
LIVE_IMAGE_CACHE: Final = "public, max-age=1"
RECORDED_IMAGE_CACHE: Final = "public, max-age=60"

class PlaybackResolver(Protocol):
    """What the routes need of `relay.hls.routes.PlaybackDirectory`."""

    async def resolve_signed(self, playback_id: str) -> tuple[Target, bool]: ...

    def live_elsewhere(self, playback_id: str) -> bool:
        """Whether the id, just resolved, is a live stream not live here (asked only with
        a proxy)."""
        ...


def _not_found() -> Response:
    return error_response(404, ["not found"], headers={**CORS, "Cache-Control": "no-store"})


def _refused(status: int, message: str, retry_after: int) -> Response:
    return error_response(status, [message], headers={
        **CORS, "Cache-Control": "no-store", "Retry-After": str(retry_after)})


def _with_token(vtt: bytes, sheet: str, token: str) -> bytes:
    """A signed storyboard's WebVTT with `?token=` on each sheet URL (the sheet has the
    WebVTT's audience, `s`): a player fetches the sheet as the WebVTT names it. The token
    was verified, so it is a JWT of URL-safe characters."""
    return vtt.replace(b"%s#xywh=" % sheet.encode(),
                       b"%s?%s=%s#xywh=" % (sheet.encode(), TOKEN_PARAMETER.encode(),
                                           token.encode("ascii")))


def _bad(exc: ImageParamError) -> Response:
    return error_response(400, [str(exc)], headers={**CORS, "Cache-Control": "no-store"})


def image_routes(directory: PlaybackResolver, *, pool: DecodePool,
                 rates: ClientRates | None = None,
                 gate: PlaybackGate | None = None,
                 proxy: OwnerProxy | None = None,
                 nodes: Callable[[str], bool] | None = None) -> list[Route]:
    """The image routes; add them before `relay.hls.routes.playback_routes`.
    `pool` makes the images (its owner closes it: its worker processes end). With `gate`,
    signed playback ids are answered to their tokens (audience t, g or s); without one, or
    without its access, they are 404s as on the HLS routes. With `proxy`, a live stream
    another node owns is answered by that node; `nodes` says which client addresses (as
    `relay.addresses.address_group` gives them) are live nodes'."""

    decodes = pool
    clients = rates if rates is not None else ClientRates()

    async def serve(request: Request, audience: Audience, kind: str, parsed: R,
                    make: Callable[[Timeline, MediaReader, R], Rendered], *,
                    sheet: str | None = None) -> Response:
        """`sheet`: the WebVTT names that storyboard sheet (see `_with_token`)."""
        playback_id: str = request.path_params["playback_id"]
        token: str | None = None  # a signed id's, once accepted
        target, signed = await directory.resolve_signed(playback_id)
        if (target is None and proxy is not None and HOP_HEADER not in request.headers
                and directory.live_elsewhere(playback_id)):
            return await relayed(request, playback_id, signed, proxy)
        if target is None or (signed and (gate is None or not gate.enabled)):
            return _not_found()
        if signed:
            assert gate is not None
            token = request.query_params.get(TOKEN_PARAMETER) or None
            refusal = gate.check_token(
                playback_id, token,
                audience=audience, referer=request.headers.get("referer"),
                user_agent=request.headers.get("user-agent"),
                client=request.client.host if request.client else "")
            if refusal is not None:
                return forbidden(refusal)
        # The job goes to a worker process: `make` by name, the live window's timeline (its
        # bytes are read from this process as the worker needs them), or the recording's
        # directory and version (the worker reads its files).
        job: ImageJob
        if isinstance(target, LivePackager):
            snapshot = live_snapshot(target)
            if snapshot is None:
                return _not_found()
            version = snapshot.version
            job = ImageJob(render_live, (make, snapshot.timeline, parsed), snapshot.reader)
            cache = LIVE_IMAGE_CACHE
        else:
            recording: Path = target
            found = await asyncio.to_thread(recording_version, recording)
            if found is None:
                return _not_found()
            version = found
            job = ImageJob(render_recorded, (make, recording, found, parsed))
            cache = RECORDED_IMAGE_CACHE
        key = (playback_id, kind, parsed, version)
        try:
            if not decodes.has(key) and not from_node(request):
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
        except ImageWorkerFailed as exc:  # a crashed or hung decoder, or a bug
            return error_response(500, [str(exc)],
                                  headers={**CORS, "Cache-Control": "no-store"})
        body = result.body
        if token is not None:
            # A shared cache must not hand a signed id's image to a viewer without a token.
            cache = cache.replace("public", "private")
            if sheet is not None:
                body = _with_token(body, sheet, token)
        return Response(body, media_type=result.media_type,
                        headers={**CORS, "Cache-Control": cache})

    def from_node(request: Request) -> bool:
        """A proxied request of a live node's (see the module docstring)."""
        return (nodes is not None and HOP_HEADER in request.headers
                and request.client is not None and nodes(address_group(request.client.host)))

    async def relayed(request: Request, playback_id: str, signed: bool,
                      proxy: OwnerProxy) -> Response:
        """The owner's answer (None from the proxy: no other node owns it, 404). The owner
        decides a signed id's token, and reads Referer and User-Agent for its restrictions:
        those go along, and are part of what is shared, for a signed id only."""
        path, query = request.url.path, request.url.query
        referer = request.headers.get("referer", "") if signed else ""
        user_agent = request.headers.get("user-agent", "") if signed else ""
        key = ("owner", path, query, referer, user_agent)
        try:
            if not decodes.has(key):
                clients.take(request.client.host if request.client else "")
            fetched = await decodes.share(key, lambda: proxy.fetch(
                playback_id, path, query, signed=signed, referer=referer,
                user_agent=user_agent))
        except RateLimited as exc:
            decodes.counters.rate_limited += 1
            return _refused(429, str(exc), exc.retry_after)
        except ImageBusy as exc:
            return _refused(503, str(exc), exc.retry_after)
        if fetched is None:
            return _not_found()
        headers, body = fetched.answer(accepts_gzip(request.headers.get("accept-encoding", "")))
        return Response(body, status_code=fetched.status, headers=dict(headers))

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
            return await serve(request, "s", "storyboard.vtt", parsed, render_storyboard_vtt,
                               sheet=f"storyboard.{parsed.format.value}")
        return await serve(request, "s", "storyboard", parsed, render_storyboard)

    return [
        Route("/{playback_id}/thumbnail.{ext}", thumbnail, methods=["GET"]),
        Route("/{playback_id}/animated.{ext}", animated, methods=["GET"]),
        Route("/{playback_id}/storyboard.{ext}", storyboard, methods=["GET"]),
    ]


def _query(request: Request) -> dict[str, list[str]]:
    params = request.query_params
    return {name: params.getlist(name) for name in params}
