"""Signed playback on the playback routes: the one decision both HTTP servers share.

A playback id whose policy is `signed` plays only for a request that proves it may
(issue 17, Mux's "secure video playback"):

- its playlists (multivariant and media) take `?token=<JWT>` (aud `v`), or the session
  value a playlist put on their URI (`?session=`, `relay.playback.sessions`);
- its init sections, segments, parts and recorded media files take the session value only:
  the player got those URIs from a playlist that carried it.

A public playback id ignores both. Everything a check needs is in the request (its query,
`Referer`, `User-Agent`), so the lean server and the Starlette routes call the same
`PlaybackGate.check` and answer its `Refusal` with the same 403.

The playlists of a signed id carry the session value on every URI, so a player signs once:
`sign_playlist` appends `?session=VALUE` to each of them. It works on the bytes the renderers
cache per playlist revision (the plain form: the public path stays exactly as it was), by
`bytes.replace` of the endings only URIs have: every URI Relay writes ends in `.m4s`, `.mp4`
or `.m3u8` (`relay.hls.model`), followed by the closing quote of a `URI="..."` attribute
(EXT-X-MAP, EXT-X-PART, EXT-X-PRELOAD-HINT, EXT-X-RENDITION-REPORT) or by the end of its
line (a segment, a variant's media playlist), and no tag line ends so.

LL-HLS blocking reloads and delta updates keep working: the player appends `_HLS_msn`,
`_HLS_part` and `_HLS_skip` to a URI that already has a query, and the renderers' cached
revisions are shared by every viewer as before; only the viewer's query is put in.

Gzip is the one cost that cannot be shared between viewers with different session values:
the signed gzip form is kept in a small LRU keyed by (plain body, query), so viewers that
share a token (one token per stream, say) released together by one part share one
compression; a viewer with a token of their own pays one compression per reload.

Measured (`.venv/bin/python benchmarks/signed_playlists.py`, on the shared 2-core test
machine, a live LL-HLS playlist of 27 URIs, 1820 bytes plain, 4088 signed): checking a
session value 7.0 us, a token already verified 6.0 us, `sign_playlist` 11.4 us, the gzip of
the signed body 17 us on a miss and 0.2 us on a hit; a public request's cached bytes 0.2 us.
"""

from __future__ import annotations

import gzip
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final

from relay.hls.packager import HlsCounters
from relay.hls.playlist import GZIP_LEVEL
from relay.hls.recorded import GZIP_MIN_BYTES
from relay.logs import LogLimiter, peer_text
from relay.playback.access import PlaybackAccess
from relay.playback.sessions import SESSION_PARAMETER
from relay.playback.tokens import Audience, RefusalReason, TokenRefused

log = logging.getLogger("relay.playback")

#: The query parameter of a playlist URL that carries the application's token (Mux's name).
TOKEN_PARAMETER: Final = "token"
#: Signed playlists kept in their gzip form (the LRU's entries).
SIGNED_GZIP_CACHE_ENTRIES: Final = 256
#: Bytes those entries may hold, counting the plain body each is keyed by (a live playlist
#: is a few kilobytes, a 12-hour recording's about 1.7 MB).
SIGNED_GZIP_CACHE_BYTES: Final = 16 * 1024 * 1024
#: The Mux error type of a refused playback request (errors.py's ERROR_TYPES[403]).
FORBIDDEN_TYPE: Final = "forbidden"

# Endings only URIs have in the playlists Relay writes (see the module's docstring).
_URI_ENDINGS: Final = (b".m4s\n", b'.m4s"', b'.mp4"', b".m3u8\n", b'.m3u8"')


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a request for a signed playback id is refused: `reason` goes to the client and
    the log, `detail` (never the token, no peer value whole) to both as well."""

    reason: RefusalReason
    detail: str

    def messages(self) -> list[str]:
        return [self.reason.value, self.detail] if self.detail else [self.reason.value]


def session_query(value: str) -> bytes:
    """The query a signed playlist puts on each URI."""
    return b"?%s=%s" % (SESSION_PARAMETER.encode(), value.encode("ascii"))


def sign_playlist(body: bytes, query: bytes) -> bytes:
    """`body` (a playlist Relay rendered) with `query` after each of its URIs."""
    for ending in _URI_ENDINGS:
        body = body.replace(ending, ending[:-1] + query + ending[-1:])
    return body


class SignedGzipCache:
    """The gzip forms of signed playlists, keyed by (plain body, query): LRU, bounded in
    entries and bytes. A bytes object keeps its hash once computed, so a key of a cached
    revision's body costs one hash of the query per look-up."""

    def __init__(self, *, max_entries: int = SIGNED_GZIP_CACHE_ENTRIES,
                 max_bytes: int = SIGNED_GZIP_CACHE_BYTES) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.bytes = 0
        self.hits = 0
        self.misses = 0
        self._entries: OrderedDict[tuple[bytes, bytes], bytes] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def gzipped(self, plain: bytes, query: bytes, signed: bytes) -> bytes:
        """The gzip form of `signed`, which is `sign_playlist(plain, query)`."""
        key = (plain, query)
        cached = self._entries.get(key)
        if cached is not None:
            self.hits += 1
            self._entries.move_to_end(key)
            return cached
        self.misses += 1
        compressed = gzip.compress(signed, compresslevel=GZIP_LEVEL, mtime=0)
        size = len(plain) + len(compressed)
        if size <= self.max_bytes and self.max_entries > 0:
            self._entries[key] = compressed
            self.bytes += size
            while len(self._entries) > self.max_entries or self.bytes > self.max_bytes:
                (old_plain, _), old = self._entries.popitem(last=False)
                self.bytes -= len(old_plain) + len(old)
        return compressed


class PlaybackGate:
    """Decides requests for signed playback ids (both servers ask it), counts and logs the
    refusals, and keeps the signed playlists' gzip forms. Without a `PlaybackAccess`
    (tests, tools), signed ids do not play at all (the servers answer 404)."""

    def __init__(self, access: PlaybackAccess | None, *,
                 counters: HlsCounters | None = None,
                 clock: Callable[[], float] = time.time,
                 gzip_cache: SignedGzipCache | None = None) -> None:
        self.access = access
        self.clock = clock
        self.gzip_cache = gzip_cache if gzip_cache is not None else SignedGzipCache()
        #: Refusals so far, by reason (`RefusalReason` names in lower case, as the metric's
        #: label): the counters' when given, which the metrics read.
        self.refusals = counters.playback_refused if counters is not None else {}
        for reason in RefusalReason:
            self.refusals.setdefault(reason.name.lower(), 0)
        self._log = LogLimiter(log)

    @property
    def enabled(self) -> bool:
        return self.access is not None

    def check(self, playback_id: str, query: Mapping[str, str], *, playlist: bool,
              referer: str | None, user_agent: str | None, client: str = ""
              ) -> bytes | Refusal:
        """For a request of a signed `playback_id`: the query its playlist's URIs carry
        (`?session=...`; for media, which carries none, b""), or the `Refusal` to answer.

        A playlist request is decided by its token when it has one, else by its session
        value; a media request by its session value only."""
        access = self.access
        if access is None:
            return self._refused(TokenRefused(RefusalReason.UNKNOWN_KEY, "signed playback "
                                              "is not set up on this server"),
                                 playback_id, client)
        now = self.clock()
        try:
            token = query.get(TOKEN_PARAMETER) if playlist else None
            if token:
                grant = access.authorize(token, playback_id=playback_id, audience="v",
                                         now=now, referer=referer, user_agent=user_agent)
                return session_query(access.session_value(grant))
            session = query.get(SESSION_PARAMETER)
            access.check_session(session, playback_id=playback_id, audience="v", now=now,
                                 referer=referer, user_agent=user_agent)
        except TokenRefused as refused:
            return self._refused(refused, playback_id, client)
        assert session is not None  # check_session refuses a missing one
        return session_query(session) if playlist else b""

    def check_image(self, playback_id: str, token: str | None, *, audience: Audience,
                    referer: str | None, user_agent: str | None, client: str = ""
                    ) -> Refusal | None:
        """For an image of a signed `playback_id` (`audience` t, g or s): None when its
        `?token=` grants it, else the `Refusal` to answer. Images carry no session value:
        each image URL is signed, as with Mux."""
        access = self.access
        if access is None:
            return self._refused(TokenRefused(RefusalReason.UNKNOWN_KEY, "signed playback "
                                              "is not set up on this server"),
                                 playback_id, client)
        try:
            access.authorize(token, playback_id=playback_id, audience=audience,
                             now=self.clock(), referer=referer, user_agent=user_agent)
        except TokenRefused as refused:
            return self._refused(refused, playback_id, client)
        return None

    def signed_body(self, plain: bytes, query: bytes, accepts_gzip: bool
                    ) -> tuple[bytes, bool]:
        """The playlist `plain` as answered to a viewer with `query`, and whether it is
        gzipped: when the client takes gzip and it is long enough, as a public one."""
        signed = sign_playlist(plain, query)
        if accepts_gzip and len(signed) >= GZIP_MIN_BYTES:
            return self.gzip_cache.gzipped(plain, query, signed), True
        return signed, False

    def _refused(self, refused: TokenRefused, playback_id: str, client: str) -> Refusal:
        reason = refused.reason
        self.refusals[reason.name.lower()] += 1
        # The cause is one of a fixed set of names; the token never reaches the log, the
        # detail holds no peer value whole (`TokenRefused`).
        self._log.info(f"playback-refused-{reason.name.lower()}",
                       "playback: refused %s of signed playback id %s: %s%s",
                       peer_text(client) or "a request", peer_text(playback_id),
                       reason.value, f" ({refused.detail})" if refused.detail else "")
        return Refusal(reason, refused.detail)


__all__ = ["FORBIDDEN_TYPE", "TOKEN_PARAMETER", "PlaybackGate", "Refusal", "SignedGzipCache",
           "session_query", "sign_playlist"]
