"""Playback over HTTP: playlists, media, the player page (DESIGN.md "HTTP surface").

    GET /{PLAYBACK_ID}.m3u8                    multivariant playlist
    GET /{PLAYBACK_ID}/rendition.m3u8          media playlist (blocking reload, delta updates)
    GET /{PLAYBACK_ID}/{init, segment, part}   media (`relay.hls.model` names them)
    GET /player/{PLAYBACK_ID}                  the player page
    GET /static/{name}                         hls.js for the player page

A playback id resolves (`PlaybackDirectory`) either to a live session's packager, whose
playlist and media are in memory, or to an asset's recording directory, whose playlist and
media are files (an EVENT playlist while the stream is still recording, VOD after). Anything
that does not resolve, or does not exist yet, is a 404 with the same body whatever the
reason, so a 404 tells nobody whether a playback id ever existed.

Held requests (blocking reload, the hinted part) wait with one waiter each
(`relay.hls.holding`), never poll, and give up with 503 after `hold_timeout`
(3 x TARGETDURATION); beyond the caps on held requests (in total and per stream) a request
is answered 503 with Retry-After at once. A recorded playlist is read and encoded once per
version of its file, off the event loop (`relay.hls.recorded`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import gzip
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Final

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, Response
from starlette.routing import Route

from relay.hls.blocking import BadRequest, Wait, decide, hold_timeout, is_satisfied
from relay.hls.disk import STORED_READS
from relay.hls.holding import REFUSED_RETRY_AFTER, HeldRequests, HoldOutcome
from relay.hls.model import MEDIA_PLAYLIST_URI, StoredMedia, parse_resource
from relay.hls.multivariant import render_multivariant
from relay.hls.packager import HlsCounters, LivePackager
from relay.hls.player import STATIC_MEDIA_TYPES, render_player_page_for, static_file
from relay.hls.playlist import GZIP_LEVEL, Availability
from relay.hls.recorded import GZIP_MIN_BYTES, RecordedPlaylists
from relay.hls.recording import RECORDING_PLAYLIST, read_variant
from relay.hls.request_counts import HlsRequestCounters, RequestKind, media_request_kind
from relay.hls.signed import FORBIDDEN_TYPE, PlaybackGate, Refusal
from relay.hls.upstream import HOP_HEADER, OwnerProxy
from relay.logs import LogLimiter
from relay.playback.tokens import libraries_loaded, load_libraries
from relay.store import Store
from relay.store.asset_files import AssetFiles
from relay.store.records import PlaybackId

PLAYLIST_TYPE: Final = "application/vnd.apple.mpegurl"
MP4_TYPE: Final = "video/mp4"
# Cache-Control (LL-HLS.md): playlists change every part, so caches keep them for at most a
# second; media URIs never change meaning (live msns start at the session's start time, so
# a later session of the same stream never reuses one; asset ids are unique).
PLAYLIST_CACHE: Final = "public, max-age=1"
VOD_PLAYLIST_CACHE: Final = "public, max-age=300"
MEDIA_CACHE: Final = "public, max-age=31536000, immutable"
# Init numbers restart with each session and may name other tracks: revalidate.
INIT_CACHE: Final = "no-cache"
CORS: Final = {"Access-Control-Allow-Origin": "*"}

_PLAYBACK_ID: Final = re.compile(r"^[A-Za-z0-9]{1,64}\Z")  # \Z: `$` lets a final "\n" by
_NOT_FOUND = "not found\n"

#: How long a playback id lookup is reused. A deleted playback id keeps playing this long
#: (and, past it, for as long as the lookup that refreshes it takes: see LOOKUP_STALE).
LOOKUP_TTL: Final = 2.0
#: Seconds past LOOKUP_TTL a lookup is still answered from while one request's lookup
#: refreshes it. Without this, the requests a part releases all together (hundreds of
#: viewers' reloads) would each query the store when the lookup has just expired.
LOOKUP_STALE: Final = 1.0
MAX_CACHED_LOOKUPS: Final = 10_000

log = logging.getLogger("relay.hls")


#: What a playback id plays: a live session's packager or an asset's recording directory.
Target = LivePackager | Path | None


class PlaybackDirectory:
    """Resolves playback ids to a live packager or an asset's recording directory.

    Lookups are cached for LOOKUP_TTL; concurrent lookups of one id share one query of the
    store, and a lookup that expired less than LOOKUP_STALE ago is still answered from
    (by `resolve_cached_signed`) while that query refreshes it."""

    def __init__(self, store: Store, live: Callable[[str], LivePackager | None],
                 asset_files: AssetFiles, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._store = store
        self._live = live
        self._asset_files = asset_files
        self._clock = clock
        self._cache: dict[str, tuple[float, PlaybackId | None]] = {}
        self._pending: dict[str, asyncio.Task[PlaybackId | None]] = {}
        self._log = LogLimiter(log)

    async def lookup(self, playback_id: str) -> PlaybackId | None:
        cached = self._cache.get(playback_id)
        if cached is not None and cached[0] > self._clock():
            return cached[1]
        # Shielded: a request that goes away does not cancel the others' lookup.
        return await asyncio.shield(self._refresh(playback_id))

    def _refresh(self, playback_id: str) -> asyncio.Task[PlaybackId | None]:
        """The store query of `playback_id` under way, started if none is."""
        task = self._pending.get(playback_id)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._query(playback_id))
            self._pending[playback_id] = task
            task.add_done_callback(lambda done: self._queried(playback_id, done))
        return task

    async def _query(self, playback_id: str) -> PlaybackId | None:
        now = self._clock()
        found = await self._store.get_playback_id(playback_id)
        if found is not None and found.policy == "signed" and not libraries_loaded():
            # Its requests' tokens are checked with PyJWT: loaded now, off the event loop,
            # before any of them is (relay.playback.tokens).
            await asyncio.to_thread(load_libraries)
        if len(self._cache) >= MAX_CACHED_LOOKUPS:
            self._cache.clear()
        self._cache[playback_id] = (now + LOOKUP_TTL, found)
        return found

    def _queried(self, playback_id: str, done: asyncio.Task[PlaybackId | None]) -> None:
        if self._pending.get(playback_id) is done:
            del self._pending[playback_id]
        if not done.cancelled() and done.exception() is not None:
            # Retrieved here: a refresh nobody awaited would otherwise warn at exit; the
            # requests that awaited it fail with it. A store that keeps failing is retried
            # once per request at most, so the line is rate-limited.
            self._log.log(logging.WARNING, "lookup-failed",
                          "playback: looking up a playback id in the store failed: %s",
                          done.exception())

    async def resolve(self, playback_id: str) -> Target:
        """What a public `playback_id` plays, or None (for a signed one too: callers that
        check tokens use `resolve_signed`)."""
        target, signed = await self.resolve_signed(playback_id)
        return None if signed else target

    def resolve_cached(self, playback_id: str) -> tuple[bool, Target]:
        """`resolve` without waiting, when the lookup is cached: (True, target); else
        (False, None) and the caller awaits `resolve`."""
        found, target, signed = self.resolve_cached_signed(playback_id)
        return found, None if signed else target

    async def resolve_signed(self, playback_id: str) -> tuple[Target, bool]:
        """(what `playback_id` plays, or None; whether it is signed, so that the caller
        answers it only when `PlaybackGate.check` says so)."""
        if not _PLAYBACK_ID.match(playback_id):
            return None, False
        return self._target(await self.lookup(playback_id))

    def resolve_cached_signed(self, playback_id: str) -> tuple[bool, Target, bool]:
        """`resolve_signed` without waiting, when the lookup is cached: (True, target,
        signed); else (False, None, False) and the caller awaits `resolve_signed`."""
        if not _PLAYBACK_ID.match(playback_id):
            return True, None, False
        cached = self._cache.get(playback_id)
        if cached is None:
            return False, None, False
        expired = self._clock() - cached[0]
        if expired >= 0:
            if expired >= LOOKUP_STALE:
                return False, None, False
            self._refresh(playback_id)  # meanwhile, the lookup as it was
        target, signed = self._target(cached[1])
        return True, target, signed

    def live_elsewhere(self, playback_id: str) -> bool:
        """Whether `playback_id`, just resolved (its lookup is cached), names a live stream
        with no session on this node: its owner, if another node, serves it
        (`relay.hls.upstream.OwnerProxy`)."""
        cached = self._cache.get(playback_id)
        found = cached[1] if cached is not None else None
        return (found is not None and found.policy in ("public", "signed")
                and found.object_type == "live_stream" and self._live(found.object_id) is None)

    def _target(self, found: PlaybackId | None) -> tuple[Target, bool]:
        if found is None or found.policy not in ("public", "signed"):
            return None, False
        # A signed id is answered only by `PlaybackGate.check`'s leave (relay.hls.signed).
        signed = found.policy == "signed"
        if found.object_type == "live_stream":
            packager = self._live(found.object_id)
            if packager is None or packager.playlist is None:
                return None, signed
            return packager, signed
        # Whether the recording exists is found out off the event loop, by what reads it.
        return self._asset_files.directory(found.object_id), signed


def _seen(request: Request, packager: LivePackager) -> None:
    # A viewer is a client address (behind a NAT or a CDN, several players are one).
    if request.client is not None:
        packager.viewers.seen(request.client.host, time.monotonic())


def _not_found(counters: HlsCounters) -> Response:
    counters.not_found += 1
    # no-store: what is missing now (a part not cut yet, a stream not live yet) may exist
    # in a moment, so no cache may keep the 404.
    return Response(_NOT_FOUND, status_code=404, media_type="text/plain",
                    headers={**CORS, "Cache-Control": "no-store"})


def accepts_gzip(accept_encoding: str) -> bool:
    """Whether an Accept-Encoding header admits gzip (RFC 9110 12.5.3: `gzip;q=0` refuses
    it; `*` stands for any coding not named)."""
    weights: dict[str, float] = {}
    for item in accept_encoding.split(","):
        coding, _, params = item.strip().partition(";")
        weight = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name.lower() == "q":
                try:
                    weight = float(value)
                except ValueError:
                    weight = 0.0
        if coding:
            weights[coding.strip().lower()] = weight
    if "gzip" in weights:
        return weights["gzip"] > 0
    return weights.get("*", 0.0) > 0


def forbidden_body(refusal: Refusal) -> bytes:
    """The Mux error envelope of a refused playback request (`relay.api.errors`)."""
    return json.dumps({"error": {"type": FORBIDDEN_TYPE, "messages": refusal.messages()}},
                      separators=(",", ":")).encode()


def forbidden(refusal: Refusal) -> Response:
    # no-store: the same URL may play with a fresh token a moment later.
    return Response(forbidden_body(refusal), status_code=403, media_type="application/json",
                    headers={**CORS, "Cache-Control": "no-store"})


def _playlist_response(request: Request, body: bytes, cache: str,
                       compressed: Callable[[], bytes] | None = None, *,
                       gate: PlaybackGate | None = None, signed: bytes = b"") -> Response:
    """A playlist, gzipped when the client accepts it and it is long enough; `compressed`
    gives the gzip form when the caller has it cached. With `signed` (the query of a signed
    playback id's viewer), `gate` puts it on every URI of `body` first."""
    headers = {**CORS, "Cache-Control": cache, "Vary": "Accept-Encoding"}
    if signed and gate is not None:
        body, gzipped = gate.signed_body(
            body, signed, accepts_gzip(request.headers.get("accept-encoding", "")))
        if gzipped:
            headers["Content-Encoding"] = "gzip"
        return Response(body, media_type=PLAYLIST_TYPE, headers=headers)
    if len(body) >= GZIP_MIN_BYTES and accepts_gzip(request.headers.get("accept-encoding", "")):
        body = (compressed() if compressed is not None
                else gzip.compress(body, compresslevel=GZIP_LEVEL))
        headers["Content-Encoding"] = "gzip"
    return Response(body, media_type=PLAYLIST_TYPE, headers=headers)


def _unavailable(reason: str, *, retry_after: int | None = None) -> Response:
    headers = {**CORS, "Cache-Control": "no-store"}
    if retry_after is not None:
        headers["Retry-After"] = str(retry_after)
    return Response(reason + "\n", status_code=503, media_type="text/plain", headers=headers)


def _too_many_held(holds: HeldRequests) -> Response:
    return _unavailable(
        f"too many requests are waiting for this stream or this server (at most "
        f"{holds.max_per_stream} per stream, {holds.max_total} in all); retry shortly",
        retry_after=REFUSED_RETRY_AFTER)


def _counted(requests: HlsRequestCounters, kind_of: Callable[[Request], RequestKind],
             handler: Callable[[Request], Awaitable[Response]]
             ) -> Callable[[Request], Awaitable[Response]]:
    """`handler`, counting each request by kind and the status it is answered with (500
    when the handler raises: Starlette answers that)."""
    async def endpoint(request: Request) -> Response:
        kind = kind_of(request)
        try:
            response = await handler(request)
        except Exception:
            requests.count(kind, 500)
            raise
        requests.count(kind, response.status_code)
        return response
    return endpoint


def _multivariant_kind(request: Request) -> RequestKind:
    name: str = request.path_params["name"]
    return RequestKind.MULTIVARIANT if name.endswith(".m3u8") else RequestKind.OTHER


def _media_kind(request: Request) -> RequestKind:
    return media_request_kind(request.path_params["name"])


def create_playback_app(directory: PlaybackDirectory, counters: HlsCounters | None = None,
                        *, holds: HeldRequests | None = None,
                        recorded: RecordedPlaylists | None = None,
                        gate: PlaybackGate | None = None,
                        proxy: OwnerProxy | None = None) -> Starlette:
    """The playback routes as an ASGI app of their own."""
    return Starlette(routes=playback_routes(directory, counters, holds=holds,
                                            recorded=recorded, gate=gate, proxy=proxy))


def playback_routes(directory: PlaybackDirectory, counters: HlsCounters | None = None, *,
                    holds: HeldRequests | None = None,
                    recorded: RecordedPlaylists | None = None,
                    gate: PlaybackGate | None = None,
                    proxy: OwnerProxy | None = None) -> list[Route]:
    """The playback routes, to add after the API's; `counters` receives request counts,
    `holds` bounds the held requests, `recorded` caches recorded playlists, `gate` decides
    signed playback ids (without one, or without its access, they answer 404), `proxy`
    serves a live stream another node owns from that node."""
    counters = counters if counters is not None else HlsCounters()
    holds = holds if holds is not None else HeldRequests()
    recorded = recorded if recorded is not None else RecordedPlaylists()

    def check(request: Request, playback_id: str, *, playlist: bool) -> bytes | Refusal:
        assert gate is not None
        client = request.client.host if request.client is not None else ""
        return gate.check(playback_id, request.query_params, playlist=playlist,
                          referer=request.headers.get("referer"),
                          user_agent=request.headers.get("user-agent"), client=client)

    async def proxied(request: Request, playback_id: str, path: str,
                      signed: bool) -> Response | None:
        """The owner's answer for a live stream not live here, or None (no other owner).
        The query goes as it came: the owner decides a signed id's token or session."""
        if (proxy is None or HOP_HEADER in request.headers
                or not directory.live_elsewhere(playback_id)):
            return None
        fetched = await proxy.fetch(playback_id, path, request.url.query, signed=signed,
                                    referer=request.headers.get("referer", ""),
                                    user_agent=request.headers.get("user-agent", ""))
        if fetched is None:
            return None
        headers, body = fetched.answer(accepts_gzip(request.headers.get("accept-encoding", "")))
        return Response(body, status_code=fetched.status, headers=dict(headers))

    def resolved(target: Target, signed: bool) -> Target:
        # A signed id without a gate to check it plays for nobody: as before, a 404.
        return None if signed and (gate is None or not gate.enabled) else target

    async def multivariant(request: Request) -> Response:
        name: str = request.path_params["name"]
        if not name.endswith(".m3u8"):
            return _not_found(counters)
        playback_id = name[:-len(".m3u8")]
        target, signed = await directory.resolve_signed(playback_id)
        if target is None:
            answer = await proxied(request, playback_id, f"/{name}", signed)
            if answer is not None:
                return answer
        target = resolved(target, signed)
        query = b""
        if target is not None and signed:
            checked = check(request, playback_id, playlist=True)
            if isinstance(checked, Refusal):
                return forbidden(checked)
            query = checked
        if isinstance(target, LivePackager):
            _seen(request, target)
            variant = target.variant()
            cache = PLAYLIST_CACHE
        elif target is not None:
            variant = await asyncio.to_thread(read_variant, target)
            playlist = await recorded.get(target / RECORDING_PLAYLIST)
            if playlist is None:
                return _not_found(counters)
            cache = VOD_PLAYLIST_CACHE if playlist.finished else PLAYLIST_CACHE
        else:
            return _not_found(counters)
        if variant is None:
            return _not_found(counters)
        counters.playlist_requests += 1
        text = render_multivariant([dataclasses.replace(variant, path=f"{playback_id}/")])
        return _playlist_response(request, text.encode("ascii"), cache, gate=gate,
                                  signed=query)

    async def media(request: Request) -> Response:
        playback_id: str = request.path_params["playback_id"]
        name: str = request.path_params["name"]
        target, signed = await directory.resolve_signed(playback_id)
        if target is None and (name == MEDIA_PLAYLIST_URI or parse_resource(name) is not None):
            answer = await proxied(request, playback_id, f"/{playback_id}/{name}", signed)
            if answer is not None:
                return answer
        target = resolved(target, signed)
        if target is None:
            return _not_found(counters)
        query = b""
        if signed:
            checked = check(request, playback_id, playlist=name == MEDIA_PLAYLIST_URI)
            if isinstance(checked, Refusal):
                return forbidden(checked)
            query = checked
        if isinstance(target, LivePackager):
            _seen(request, target)
            if name == MEDIA_PLAYLIST_URI:
                return await _live_playlist(request, target, query)
            return await _live_resource(target, name)
        return await _recorded(request, target, name, query)

    async def _live_playlist(request: Request, packager: LivePackager,
                             query: bytes) -> Response:
        playlist, renderer = packager.playlist, packager.renderer
        assert playlist is not None and renderer is not None
        counters.playlist_requests += 1
        decision = decide(request.query_params, playlist)
        if isinstance(decision, BadRequest):
            counters.bad_requests += 1
            return Response(decision.reason + "\n", status_code=400, media_type="text/plain",
                            headers=CORS)
        if isinstance(decision, Wait):
            assert playlist.target_duration is not None
            held_at = time.monotonic()
            outcome = await holds.hold(packager, hold_timeout(playlist.target_duration),
                                       lambda: is_satisfied(decision, playlist))
            if outcome is HoldOutcome.REFUSED:
                return _too_many_held(holds)
            counters.reload_wait.observe(time.monotonic() - held_at)
            counters.held_requests += 1
            if outcome is HoldOutcome.TIMED_OUT:
                counters.held_timeouts += 1
                return _unavailable("the playlist did not reach the requested segment or "
                                    "part in time")
        skip = decision.skip
        return _playlist_response(request, renderer.encoded(skip=skip), PLAYLIST_CACHE,
                                  lambda: renderer.encoded(skip=skip, gzipped=True),
                                  gate=gate, signed=query)

    async def _live_resource(packager: LivePackager, name: str) -> Response:
        resource = parse_resource(name)
        playlist = packager.playlist
        if resource is None or playlist is None:
            return _not_found(counters)
        counters.media_requests += 1
        if playlist.availability(resource) is Availability.PENDING:
            assert playlist.target_duration is not None
            outcome = await holds.hold(
                packager, hold_timeout(playlist.target_duration),
                lambda: playlist.availability(resource) is not Availability.PENDING)
            if outcome is HoldOutcome.REFUSED:
                return _too_many_held(holds)
            counters.held_requests += 1
            if outcome is HoldOutcome.TIMED_OUT:
                counters.held_timeouts += 1
                return _unavailable("the part was not complete in time")
        data = packager.resource(resource)
        if isinstance(data, StoredMedia):
            data = await STORED_READS.read(data)
        if data is None:
            return _not_found(counters)
        cache = INIT_CACHE if resource.init is not None else MEDIA_CACHE
        return Response(data, media_type=MP4_TYPE, headers={**CORS, "Cache-Control": cache})

    async def _recorded(request: Request, recording: Path, name: str,
                        query: bytes) -> Response:
        if name == MEDIA_PLAYLIST_URI:
            playlist = await recorded.get(recording / RECORDING_PLAYLIST)
            if playlist is None:
                return _not_found(counters)
            counters.playlist_requests += 1
            gzipped = playlist.gzipped
            return _playlist_response(
                request, playlist.body,
                VOD_PLAYLIST_CACHE if playlist.finished else PLAYLIST_CACHE,
                (lambda: gzipped) if gzipped is not None else None, gate=gate, signed=query)
        if parse_resource(name) is None:
            return _not_found(counters)
        counters.media_requests += 1
        path = recording / name
        if not await asyncio.to_thread(path.is_file):
            return _not_found(counters)
        return FileResponse(path, media_type=MP4_TYPE,
                            headers={**CORS, "Cache-Control": MEDIA_CACHE})

    async def player(request: Request) -> Response:
        playback_id: str = request.path_params["playback_id"]
        if not _PLAYBACK_ID.match(playback_id):
            return _not_found(counters)
        return HTMLResponse(render_player_page_for(playback_id, request.query_params),
                            headers={"Cache-Control": "no-cache"})

    async def static(request: Request) -> Response:
        name: str = request.path_params["name"]
        path = static_file(name)
        if path is None:
            return _not_found(counters)
        return FileResponse(path, media_type=STATIC_MEDIA_TYPES[name],
                            headers={**CORS, "Cache-Control": "public, max-age=86400"})

    requests = counters.requests
    return [
        Route("/player/{playback_id}",
              _counted(requests, lambda _: RequestKind.PLAYER, player), methods=["GET"]),
        Route("/static/{name}",
              _counted(requests, lambda _: RequestKind.STATIC, static), methods=["GET"]),
        Route("/{name}", _counted(requests, _multivariant_kind, multivariant),
              methods=["GET"]),
        Route("/{playback_id}/{name}", _counted(requests, _media_kind, media),
              methods=["GET"]),
    ]
