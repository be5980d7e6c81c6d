"""Playback on the lean HTTP/1.1 protocol (`relay.hls.http1`): the hot paths of routes.py.

Served here, with the same statuses, bodies and headers as the Starlette routes in
`relay.hls.routes` (which stay, on the ASGI side, for everything else and for comparison):

    GET|HEAD /{PLAYBACK_ID}.m3u8             multivariant playlist (live and recorded)
    GET|HEAD /{PLAYBACK_ID}/rendition.m3u8   media playlist (blocking reload, delta updates)
    GET|HEAD /{PLAYBACK_ID}/{init, segment, part}    a live stream's media, from memory
                                             (the live edge) or from disk (older segments,
                                             read in `StoredReads`' threads)
    GET|HEAD /player/{PLAYBACK_ID}           the player page (so the connections a browser
                                             opens for it stay on this server for hls.js)

Handed to the fallback (uvicorn and the FastAPI app, which keeps the connection): the API's
paths (by their first path segment, `reserved`), static files and a recorded asset's media
files (Starlette's FileResponse streams them from disk and answers conditional and Range
requests), and anything unusual (see `relay.hls.http1`).

Costs per request: a playlist's bytes are encoded once per playlist revision and variant
(`_HLS_skip`, gzip) by the renderer, so N held viewers released together share one encoding;
a part or segment is the packager's bytes, written as they are. Whether a client takes gzip
is parsed once per distinct Accept-Encoding value. A viewer is recorded under the seconds
clock this module keeps (`now`), so counting viewers allocates nothing per request.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gzip
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any, Final
from urllib.parse import parse_qsl

from relay.hls.blocking import BadRequest, Wait, decide, hold_timeout, is_satisfied
from relay.hls.disk import STORED_READS, StoredReads
from relay.hls.holding import REFUSED_RETRY_AFTER, HeldRequests, HoldOutcome
from relay.hls.http1 import Answer, Held, Http1Protocol, Request, Response, bound_protocol
from relay.hls.model import MEDIA_PLAYLIST_URI, ResourceName, StoredMedia, parse_resource
from relay.hls.multivariant import render_multivariant
from relay.hls.packager import HlsCounters, LivePackager
from relay.hls.player import render_player_page_for
from relay.hls.playlist import GZIP_LEVEL, Availability
from relay.hls.recorded import GZIP_MIN_BYTES, RecordedPlaylists
from relay.hls.recording import RECORDING_PLAYLIST, read_variant
from relay.hls.request_counts import RequestKind
from relay.hls.routes import (
    _PLAYBACK_ID,
    INIT_CACHE,
    MEDIA_CACHE,
    MP4_TYPE,
    PLAYLIST_CACHE,
    PLAYLIST_TYPE,
    VOD_PLAYLIST_CACHE,
    PlaybackDirectory,
    Target,
    accepts_gzip,
    forbidden_body,
)
from relay.hls.signed import PlaybackGate, Refusal
from relay.hls.upstream import OwnerProxy
from relay.http_limits import ConnectionTable, HttpLimits

log = logging.getLogger("relay.hls")

#: Distinct Accept-Encoding values whose gzip verdict is remembered (then forgotten at once).
MAX_CACHED_ENCODINGS: Final = 256
#: Seconds between ticks of the clock viewers are counted with (their window is 30 s).
CLOCK_SECONDS: Final = 1.0

_CORS: Final = b"access-control-allow-origin: *\r\n"
_TEXT: Final = b"content-type: text/plain; charset=utf-8\r\n"
_NO_STORE: Final = _CORS + b"cache-control: no-store\r\n"


def _playlist_headers(cache: str, gzipped: bool) -> bytes:
    return (_CORS + b"cache-control: %s\r\nvary: Accept-Encoding\r\n%scontent-type: %s\r\n" % (
        cache.encode(), b"content-encoding: gzip\r\n" if gzipped else b"",
        PLAYLIST_TYPE.encode()))


_PLAYLIST_HEADERS: Final = {(cache, gzipped): _playlist_headers(cache, gzipped)
                            for cache in (PLAYLIST_CACHE, VOD_PLAYLIST_CACHE)
                            for gzipped in (False, True)}
_MEDIA_HEADERS: Final = _CORS + b"cache-control: %s\r\ncontent-type: %s\r\n" % (
    MEDIA_CACHE.encode(), MP4_TYPE.encode())
_INIT_HEADERS: Final = _CORS + b"cache-control: %s\r\ncontent-type: %s\r\n" % (
    INIT_CACHE.encode(), MP4_TYPE.encode())
_NOT_FOUND_BODY: Final = b"not found\n"
# As routes.py's HTMLResponse: no CORS (a page, not a resource for other origins).
_PLAYER_HEADERS: Final = b"cache-control: no-cache\r\ncontent-type: text/html; charset=utf-8\r\n"
_PLAYER_PREFIX: Final = "/player/"
# As routes.py's `forbidden`.
_FORBIDDEN_HEADERS: Final = _NO_STORE + b"content-type: application/json\r\n"

#: The kinds a request is counted under (`PlaybackServer.answered`).
KINDS: Final = ("multivariant", "playlist", "init", "segment", "part", "player")
# One shared 404 per kind: answering one allocates nothing.
_NOT_FOUND: Final = {kind: Response(404, _NO_STORE + _TEXT, _NOT_FOUND_BODY, kind)
                     for kind in KINDS}


#: `relay_hls_requests_total`'s kind of each of ours ("error" and anything else: other).
_REQUEST_KINDS: Final = {"multivariant": RequestKind.MULTIVARIANT,
                         "playlist": RequestKind.MEDIA_PLAYLIST, "init": RequestKind.INIT,
                         "segment": RequestKind.SEGMENT, "part": RequestKind.PART,
                         "player": RequestKind.PLAYER}


def query_values(query: str) -> dict[str, str]:
    """A query's names and values, as `dict(parse_qsl(query, keep_blank_values=True))`;
    a query without escapes (a player's `_HLS_msn=9&_HLS_part=2`) is split without
    parse_qsl's decoding of each name and value."""
    if "%" in query or "+" in query:
        return dict(parse_qsl(query, keep_blank_values=True))
    values = {}
    for pair in query.split("&"):
        if pair:
            name, _, value = pair.partition("=")
            values[name] = value
    return values


def _resource_kind(resource: ResourceName) -> str:
    if resource.init is not None:
        return "init"
    return "segment" if resource.part is None else "part"


class PlaybackServer:
    """The handler of `relay.hls.http1` for the playback listener."""

    def __init__(self, directory: PlaybackDirectory, counters: HlsCounters | None = None, *,
                 holds: HeldRequests | None = None, recorded: RecordedPlaylists | None = None,
                 reserved: Iterable[str] = (), gate: PlaybackGate | None = None,
                 proxy: OwnerProxy | None = None, reads: StoredReads = STORED_READS) -> None:
        self.directory = directory
        #: Reads what the live windows serve from disk (`LivePlaylist.store`).
        self.reads = reads
        #: Serves the live streams other nodes own from them (without one: 404s).
        self.proxy = proxy
        #: Decides signed playback ids (without one, or without its access: 404s).
        self.gate = gate if gate is not None and gate.enabled else None
        self.counters = counters if counters is not None else HlsCounters()
        self.holds = holds if holds is not None else HeldRequests()
        self.recorded = recorded if recorded is not None else RecordedPlaylists()
        #: First path segments that belong to the API (and static files).
        self.reserved = frozenset(reserved) | {"static"}
        #: Monotonic seconds, refreshed every CLOCK_SECONDS while requests come.
        self.now = time.monotonic()
        self._clock: asyncio.TimerHandle | None = None
        self._gzip: dict[str, bool] = {}

    def close(self) -> None:
        if self._clock is not None:
            self._clock.cancel()
            self._clock = None

    # -- the handler -----------------------------------------------------------------------

    def answered(self, request: Request, response: Response) -> None:
        """Each answered playback request's kind (`KINDS`, or "error") and status: the one
        place to count them by."""
        self.counters.requests.count(_REQUEST_KINDS.get(response.kind, RequestKind.OTHER),
                                     response.status)

    def handle(self, request: Request) -> Answer:
        if self._clock is None:
            self._tick()
        path = request.path
        if path.startswith(_PLAYER_PREFIX):
            return self._player(path[len(_PLAYER_PREFIX):], request.query)
        slash = path.find("/", 1)
        if slash < 0:
            name = path[1:]
            if not name.endswith(".m3u8") or name in self.reserved:
                return None
            return self._multivariant(request, name[:-len(".m3u8")])
        playback_id, name = path[1:slash], path[slash + 1:]
        if not playback_id or not name or "/" in name or playback_id in self.reserved:
            return None
        if name == MEDIA_PLAYLIST_URI:
            kind = "playlist"
            resource = None
        else:
            resource = parse_resource(name)
            if resource is None:
                return None  # the Starlette route's 404 (or the API's)
            kind = _resource_kind(resource)
        found, target, signed = self.directory.resolve_cached_signed(playback_id)
        if not found:
            return self._resolving(request, playback_id, resource, kind)
        return self._media(request, playback_id, target, signed, resource, kind)

    async def _resolving(self, request: Request, playback_id: str,
                         resource: ResourceName | None, kind: str) -> Response | None:
        target, signed = await self.directory.resolve_signed(playback_id)
        answer = self._media(request, playback_id, target, signed, resource, kind)
        if answer is None or isinstance(answer, Response):
            return answer
        if isinstance(answer, Held):
            return await answer.waited()
        return await answer

    def _media(self, request: Request, playback_id: str, target: Target, signed: bool,
               resource: ResourceName | None, kind: str) -> Answer:
        if target is None and self._elsewhere(request, playback_id):
            return self._proxied(request, playback_id, signed, kind)
        if target is None or (signed and self.gate is None):
            return self._not_found(kind)
        query = b""
        if signed:
            if resource is not None and not isinstance(target, LivePackager):
                return None  # a recorded file: the fallback checks it as it serves it
            checked = self._check(request, playback_id, resource is None)
            if isinstance(checked, Refusal):
                return self._forbidden(checked, kind)
            query = checked
        if isinstance(target, LivePackager):
            target.viewers.seen(request.client, self.now)
            if resource is None:
                return self._live_playlist(request, target, query)
            return self._live_resource(target, resource, kind)
        if resource is None:
            return self._recorded_playlist(request, target, query)
        return None  # a recorded file: the fallback's FileResponse (ranges, streaming)

    def _elsewhere(self, request: Request, playback_id: str) -> bool:
        return (self.proxy is not None and not request.hop
                and self.directory.live_elsewhere(playback_id))

    async def _proxied(self, request: Request, playback_id: str, signed: bool,
                       kind: str) -> Response:
        """The owner's answer for a live stream another node owns (`relay.hls.upstream`),
        or a 404 when none does. The path and query go as they came (the path is one of
        ours, checked by `handle`): the owner decides a signed id's token or session."""
        assert self.proxy is not None
        fetched = await self.proxy.fetch(
            playback_id, request.path, request.query, signed=signed,
            referer=request.referer.decode("latin-1"),
            user_agent=request.user_agent.decode("latin-1"))
        if fetched is None:
            return self._not_found(kind)
        gzipped = self._accepts_gzip(request.accept_encoding)
        _, body = fetched.answer(gzipped)
        return Response(fetched.status, fetched.header_block(gzipped), body, kind)

    def _check(self, request: Request, playback_id: str, playlist: bool) -> bytes | Refusal:
        """`PlaybackGate.check` of a request for a signed playback id."""
        assert self.gate is not None
        query = dict(parse_qsl(request.query, keep_blank_values=True)) if request.query else {}
        return self.gate.check(playback_id, query, playlist=playlist,
                               referer=request.referer.decode("latin-1") or None,
                               user_agent=request.user_agent.decode("latin-1") or None,
                               client=request.client)

    def _forbidden(self, refusal: Refusal, kind: str) -> Response:
        return Response(403, _FORBIDDEN_HEADERS, forbidden_body(refusal), kind)

    def _player(self, playback_id: str, query: str) -> Answer:
        if not playback_id or "/" in playback_id:
            return None  # not the route's path: the API's 404
        if not _PLAYBACK_ID.match(playback_id):
            return self._not_found("player")
        params = dict(parse_qsl(query)) if query else {}
        return Response(200, _PLAYER_HEADERS,
                        render_player_page_for(playback_id, params).encode(), "player")

    def _multivariant(self, request: Request, playback_id: str) -> Answer:
        found, target, signed = self.directory.resolve_cached_signed(playback_id)
        if found and target is None and self._elsewhere(request, playback_id):
            return self._proxied(request, playback_id, signed, "multivariant")
        if found and signed:
            target, query = self._signed_target(request, playback_id, target)
            if isinstance(query, Response):
                return query
        else:
            query = b""
        if found and isinstance(target, LivePackager):
            target.viewers.seen(request.client, self.now)
            return self._variant_response(request, playback_id, target.variant(),
                                          PLAYLIST_CACHE, query)
        if found and target is None:
            return self._not_found("multivariant")
        return self._multivariant_later(request, playback_id)

    def _signed_target(self, request: Request, playback_id: str, target: Target
                       ) -> tuple[Target, bytes | Response]:
        """(target, the query of its URIs or the answer) of a signed multivariant request."""
        if target is None or self.gate is None:
            return None, b""
        checked = self._check(request, playback_id, True)
        if isinstance(checked, Refusal):
            return target, self._forbidden(checked, "multivariant")
        return target, checked

    async def _multivariant_later(self, request: Request, playback_id: str) -> Response:
        target, signed = await self.directory.resolve_signed(playback_id)
        if target is None and self._elsewhere(request, playback_id):
            return await self._proxied(request, playback_id, signed, "multivariant")
        query: bytes | Response = b""
        if signed:
            target, query = self._signed_target(request, playback_id, target)
            if isinstance(query, Response):
                return query
        assert isinstance(query, bytes)
        if isinstance(target, LivePackager):
            target.viewers.seen(request.client, self.now)
            return self._variant_response(request, playback_id, target.variant(),
                                          PLAYLIST_CACHE, query)
        if target is None:
            return self._not_found("multivariant")
        variant = await asyncio.to_thread(read_variant, target)
        playlist = await self.recorded.get(target / RECORDING_PLAYLIST)
        if playlist is None:
            return self._not_found("multivariant")
        return self._variant_response(
            request, playback_id, variant,
            VOD_PLAYLIST_CACHE if playlist.finished else PLAYLIST_CACHE, query)

    def _variant_response(self, request: Request, playback_id: str, variant: Any,
                          cache: str, query: bytes) -> Response:
        if variant is None:
            return self._not_found("multivariant")
        self.counters.playlist_requests += 1
        body = render_multivariant([dataclasses.replace(variant, path=f"{playback_id}/")]
                                   ).encode("ascii")
        return self._playlist(request, body, cache, None, "multivariant", query)

    def _live_playlist(self, request: Request, packager: LivePackager,
                       query: bytes) -> Answer:
        playlist, renderer = packager.playlist, packager.renderer
        assert playlist is not None and renderer is not None
        self.counters.playlist_requests += 1
        directives = query_values(request.query) if request.query else {}
        decision = decide(directives, playlist)
        if isinstance(decision, BadRequest):
            self.counters.bad_requests += 1
            return Response(400, _CORS + _TEXT, (decision.reason + "\n").encode(), "playlist")
        skip = decision.skip
        if isinstance(decision, Wait):
            return self._held_playlist(request, packager, decision, query)
        return self._playlist(request, renderer.encoded(skip=skip), PLAYLIST_CACHE,
                              lambda: renderer.encoded(skip=skip, gzipped=True), "playlist",
                              query)

    def _held_playlist(self, request: Request, packager: LivePackager,
                       wait: Wait, query: bytes) -> Held:
        playlist, renderer = packager.playlist, packager.renderer
        assert playlist is not None and renderer is not None
        assert playlist.target_duration is not None
        held_at = time.monotonic()

        def complete(outcome: HoldOutcome) -> Response:
            if outcome is HoldOutcome.REFUSED:
                return self._too_many_held("playlist")
            counters = self.counters
            counters.reload_wait.observe(time.monotonic() - held_at)
            counters.held_requests += 1
            if outcome is HoldOutcome.TIMED_OUT:
                counters.held_timeouts += 1
                return self._unavailable("the playlist did not reach the requested segment "
                                         "or part in time", "playlist")
            skip = wait.skip
            return self._playlist(request, renderer.encoded(skip=skip), PLAYLIST_CACHE,
                                  lambda: renderer.encoded(skip=skip, gzipped=True),
                                  "playlist", query)

        return Held(self.holds, packager, hold_timeout(playlist.target_duration),
                    lambda: is_satisfied(wait, playlist), complete)

    def _live_resource(self, packager: LivePackager, resource: ResourceName,
                       kind: str) -> Answer:
        playlist = packager.playlist
        if playlist is None:
            return self._not_found(kind)
        self.counters.media_requests += 1
        if playlist.availability(resource) is Availability.PENDING:
            return self._held_resource(packager, resource, kind)
        return self._resource(packager, resource, kind)

    def _held_resource(self, packager: LivePackager, resource: ResourceName,
                       kind: str) -> Held:
        playlist = packager.playlist
        assert playlist is not None and playlist.target_duration is not None

        def complete(outcome: HoldOutcome) -> Response | Awaitable[Response]:
            if outcome is HoldOutcome.REFUSED:
                return self._too_many_held(kind)
            self.counters.held_requests += 1
            if outcome is HoldOutcome.TIMED_OUT:
                self.counters.held_timeouts += 1
                return self._unavailable("the part was not complete in time", kind)
            return self._resource(packager, resource, kind)

        return Held(self.holds, packager, hold_timeout(playlist.target_duration),
                    lambda: playlist.availability(resource) is not Availability.PENDING,
                    complete)

    def _resource(self, packager: LivePackager, resource: ResourceName, kind: str
                  ) -> Response | Awaitable[Response]:
        data = packager.resource(resource)
        if data is None:
            return self._not_found(kind)
        if isinstance(data, StoredMedia):
            return self._stored(data, kind)
        return Response(200, _INIT_HEADERS if resource.init is not None else _MEDIA_HEADERS,
                        data, kind)

    async def _stored(self, stored: StoredMedia, kind: str) -> Response:
        """A segment or part the live window serves from disk (read off the loop)."""
        data = await self.reads.read(stored)
        if data is None:
            return self._not_found(kind)
        return Response(200, _MEDIA_HEADERS, data, kind)

    async def _recorded_playlist(self, request: Request, recording: Path,
                                 query: bytes) -> Response:
        playlist = await self.recorded.get(recording / RECORDING_PLAYLIST)
        if playlist is None:
            return self._not_found("playlist")
        self.counters.playlist_requests += 1
        gzipped = playlist.gzipped
        return self._playlist(request, playlist.body,
                              VOD_PLAYLIST_CACHE if playlist.finished else PLAYLIST_CACHE,
                              (lambda: gzipped) if gzipped is not None else None, "playlist",
                              query)

    # -- answers ---------------------------------------------------------------------------

    def _playlist(self, request: Request, body: bytes, cache: str,
                  compressed: Callable[[], bytes] | None, kind: str,
                  query: bytes = b"") -> Response:
        """A playlist, gzipped when the client accepts it and it is long enough (as
        routes.py's `_playlist_response`); with `query` (a signed playback id's viewer's),
        on every URI."""
        if query and self.gate is not None:
            body, gzipped = self.gate.signed_body(
                body, query, self._accepts_gzip(request.accept_encoding))
            return Response(200, _PLAYLIST_HEADERS[cache, gzipped], body, kind)
        if len(body) >= GZIP_MIN_BYTES and self._accepts_gzip(request.accept_encoding):
            body = (compressed() if compressed is not None
                    else gzip.compress(body, compresslevel=GZIP_LEVEL))
            return Response(200, _PLAYLIST_HEADERS[cache, True], body, kind)
        return Response(200, _PLAYLIST_HEADERS[cache, False], body, kind)

    def _accepts_gzip(self, accept_encoding: str) -> bool:
        verdict = self._gzip.get(accept_encoding)
        if verdict is None:
            if len(self._gzip) >= MAX_CACHED_ENCODINGS:
                self._gzip.clear()
            verdict = self._gzip[accept_encoding] = accepts_gzip(accept_encoding)
        return verdict

    def _not_found(self, kind: str) -> Response:
        self.counters.not_found += 1
        # no-store: what is missing now may exist in a moment (routes.py's `_not_found`).
        return _NOT_FOUND[kind]

    def _unavailable(self, reason: str, kind: str, retry_after: int | None = None
                     ) -> Response:
        headers = _NO_STORE
        if retry_after is not None:
            headers += b"retry-after: %d\r\n" % retry_after
        return Response(503, headers + _TEXT, (reason + "\n").encode(), kind)

    def _too_many_held(self, kind: str) -> Response:
        holds = self.holds
        return self._unavailable(
            f"too many requests are waiting for this stream or this server (at most "
            f"{holds.max_per_stream} per stream, {holds.max_total} in all); retry shortly",
            kind, retry_after=REFUSED_RETRY_AFTER)

    def _tick(self) -> None:
        self.now = time.monotonic()
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._clock = loop.call_later(CLOCK_SECONDS, self._tick)


class UvicornPlaybackProtocol(Http1Protocol):
    """The lean protocol as uvicorn creates its protocols, with uvicorn's (h11, with the
    same limits and table) as the fallback; the Date header is uvicorn's, refreshed by its
    tick once a second."""

    fallback_class: type[asyncio.Protocol]

    def __init__(self, config: Any, server_state: Any, app_state: dict[str, Any],
                 _loop: asyncio.AbstractEventLoop | None = None) -> None:
        super().__init__(self._make_fallback, _loop)
        self._config = config
        self._server_state = server_state
        self._app_state = app_state
        self._headers_seen: object = None
        self._date_line = b""

    def _make_fallback(self) -> asyncio.Protocol:
        self._server_state.connections.discard(self)
        return self.fallback_class(config=self._config,  # type: ignore[call-arg]
                                   server_state=self._server_state,
                                   app_state=self._app_state, _loop=self._loop)

    def connection_made(self, transport: Any) -> None:
        self._server_state.connections.add(self)  # uvicorn's shutdown closes it
        super().connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self._server_state.connections.discard(self)
        super().connection_lost(exc)

    def _date(self) -> bytes:
        headers = self._server_state.default_headers
        if headers is not self._headers_seen:
            self._headers_seen = headers
            self._date_line = b"".join(b"%s: %s\r\n" % (name, value)
                                       for name, value in headers)
        return self._date_line


def playback_protocol(limits: HttpLimits, table: ConnectionTable, server: PlaybackServer,
                      fallback_class: type[asyncio.Protocol]) -> type[Http1Protocol]:
    """The protocol class uvicorn gets (`http=`) for the playback listener."""
    return bound_protocol(limits, table, server, UvicornPlaybackProtocol,
                          fallback_class=fallback_class)


__all__ = ["KINDS", "PlaybackServer", "playback_protocol"]
