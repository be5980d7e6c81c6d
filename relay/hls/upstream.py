"""Playback from any node: a live stream's playlists and media fetched from the node that owns it.

Theory of operation: a live stream is packaged in memory by the one node its encoder reached
(issue 19, "Playback from any node"). Any other node answers a viewer's request for it by
asking the owner for the same path and query over HTTP/1.1 and answering with what it got.
Three things keep that cheap for the owner and quick for the viewer:

- one keep-alive client per owner (`httpx.AsyncClient`, bounded connections), so a part
  costs one request on a warm connection, not a TCP handshake;
- coalescing: requests with the same owner, path, query (and, for a signed playback id, the
  same Referer and User-Agent, which the owner's restriction checks read) share one upstream
  request; every waiter gets the same bytes. A blocking playlist reload (`_HLS_msn`,
  `_HLS_part`, `_HLS_skip`: rfc8216bis 6.2.5.2, 6.2.5.1) is forwarded with its query, so the
  owner does the holding, and the N viewers released by one part cost the owner one request;
- a bounded LRU of the immutable answers (parts and segments: `Cache-Control: immutable`)
  to requests without a query (a public playback id's media), so a viewer who asks for a
  part after the first wave still does not go upstream. Init sections are coalesced but not
  kept: the owner marks them `no-cache`, since their numbers restart with each session of
  the stream and may then name other tracks.

A request to the owner carries `HOP_HEADER`; a node never forwards such a request again, so
two nodes that disagree about the owner (a lease changing hands) answer 404, not a loop.

The query is forwarded unchanged, so signed playback (`?token=`, `?session=`) is decided by
the owner, whose session secret made the session values its playlists carry. Playlists are
asked for with `Accept-Encoding: gzip` (the owner keeps one gzip form per revision) and
decompressed here, once per fetched answer, for a viewer who does not take gzip.

An owner that cannot be reached or does not answer in time is answered 503 (with
Retry-After) or 502 in the Mux error envelope, and logged once per owner per interval. Every
bound is an `UpstreamLimits` field with its default below.

The pure parts (which headers pass, what is immutable, the error answers, the cache) do no
I/O; `UpstreamFetcher` is the one place that talks to the network. It is made only on a
shared database (one node has no owner to ask), and it imports httpx when it is made, at
start-up: a single node never loads it (`tests/unit/test_startup_imports.py`).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import logging
import time
import zlib
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from relay.logs import LogLimiter, peer_text

if TYPE_CHECKING:
    import httpx

log = logging.getLogger("relay.hls.upstream")

#: Who owns a live stream: the owner's playback base URL (`NodeRef.advertise_url`, e.g.
#: "http://10.0.0.2:8080"), or None when it is this node or nobody.
OwnerLookup = Callable[[str], Awaitable[str | None]]

#: Seconds to open a connection to an owner.
UPSTREAM_CONNECT_TIMEOUT: Final = 2.0
#: Seconds an answer may take once asked: above the owner's own hold of a blocking reload
#: or a hinted part (3 x TARGETDURATION, `relay.hls.blocking.hold_timeout`, 12 s for a
#: 4 s target), so the owner's 503 reaches the viewer rather than our timeout.
UPSTREAM_READ_TIMEOUT: Final = 20.0
#: Connections to one owner at once (each held reload of a distinct query needs one).
MAX_CONNECTIONS_PER_OWNER: Final = 100
#: Idle keep-alive connections kept per owner.
MAX_KEEPALIVE_PER_OWNER: Final = 20
#: Seconds an idle upstream connection is kept.
UPSTREAM_KEEPALIVE_SECONDS: Final = 30.0
#: Owners with a client kept (the least recently used is closed beyond this).
MAX_OWNERS: Final = 64
#: Distinct upstream requests in flight at once, all owners together; beyond it a request
#: is answered 503 with Retry-After at once.
MAX_IN_FLIGHT: Final = 1000
#: Bytes of one upstream answer at most (a segment at 20 Mbit/s and 6 s is 15 MB), after
#: decompression too.
MAX_UPSTREAM_BODY_BYTES: Final = 32 * 1024 * 1024
#: Immutable answers (parts, segments) kept, and the bytes they may hold.
CACHE_MAX_ENTRIES: Final = 4096
CACHE_MAX_BYTES: Final = 64 * 1024 * 1024
#: Seconds an owner lookup is reused (as `relay.hls.routes.LOOKUP_TTL`), and how many are.
OWNER_LOOKUP_TTL: Final = 2.0
MAX_CACHED_OWNERS: Final = 10_000
#: Seconds between log lines about one owner's failures.
UPSTREAM_LOG_INTERVAL: Final = 10.0
#: Retry-After (seconds) of a 503 for an unreachable owner: the stream may move to another
#: node, or the owner may be back, within a heartbeat.
UNREACHABLE_RETRY_AFTER: Final = 1

#: The request header a node sends to the owner. A request that carries it is answered from
#: what is live on the node it reaches, never fetched from yet another one: two nodes that
#: each think the other owns a stream (a lease changing hands) answer 404 instead of passing
#: the request back and forth.
HOP_HEADER: Final = "x-relay-hop"

# Statuses of the owner passed on as they are; any other is the owner misbehaving: 502.
# 429: the owner's image rate limit (`relay.images.pool.ClientRates`), with its Retry-After.
_PASSED_STATUSES: Final = frozenset({200, 400, 403, 404, 429, 503})
# Response fields that describe the representation (RFC 9110) and pass; everything else,
# hop-by-hop fields included (RFC 9110 7.6.1: Connection, Keep-Alive, Transfer-Encoding,
# TE, Trailer, Upgrade, Proxy-*), is dropped; Content-Length and Date are our own.
PASSED_HEADERS: Final = ("content-type", "cache-control", "content-encoding", "vary",
                         "retry-after", "age", "etag", "last-modified",
                         "access-control-allow-origin")
_ERROR_HEADERS: Final = (("access-control-allow-origin", "*"), ("cache-control", "no-store"),
                         ("content-type", "application/json"))


@dataclass(frozen=True, slots=True)
class UpstreamLimits:
    """The bounds of fetching from owners (module constants as defaults)."""

    connect_timeout: float = UPSTREAM_CONNECT_TIMEOUT
    read_timeout: float = UPSTREAM_READ_TIMEOUT
    max_connections_per_owner: int = MAX_CONNECTIONS_PER_OWNER
    max_keepalive_per_owner: int = MAX_KEEPALIVE_PER_OWNER
    keepalive_seconds: float = UPSTREAM_KEEPALIVE_SECONDS
    max_owners: int = MAX_OWNERS
    max_in_flight: int = MAX_IN_FLIGHT
    max_body_bytes: int = MAX_UPSTREAM_BODY_BYTES
    cache_max_entries: int = CACHE_MAX_ENTRIES
    cache_max_bytes: int = CACHE_MAX_BYTES


@dataclass(slots=True)
class UpstreamCounters:
    """Plain counters (read at scrape time, never per request by anything else)."""

    requests: int = 0  # requests sent to owners
    coalesced: int = 0  # viewer requests that joined one already in flight
    cache_hits: int = 0  # viewer requests answered from the immutable cache
    unreachable: int = 0  # could not connect (503)
    timeouts: int = 0  # connected, no whole answer in time (502)
    bad_answers: int = 0  # an unexpected status, an oversized or undecodable body (502)
    busy: int = 0  # refused at MAX_IN_FLIGHT, or no connection free in time (503)
    received_bytes: int = 0  # body bytes received from owners (as sent: gzip counts gzipped)


#: What identifies one upstream request: (owner base URL, path, query, referer, user agent).
UpstreamKey = tuple[str, str, str, str, str]


class Fetched:
    """One upstream answer, shared by every viewer that asked for it. `failed` marks our own
    answers about an owner we could not reach (the caller looks the owner up afresh)."""

    __slots__ = ("_blocks", "_plain", "body", "failed", "headers", "status")

    def __init__(self, status: int, headers: tuple[tuple[str, str], ...], body: bytes, *,
                 failed: bool = False) -> None:
        self.status = status
        self.headers = headers  # lower-case names, in PASSED_HEADERS
        self.body = body
        self.failed = failed
        self._plain: bytes | None = None
        self._blocks: dict[bool, bytes] = {}

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None

    @property
    def gzipped(self) -> bool:
        return (self.header("content-encoding") or "").strip().lower() == "gzip"

    @property
    def immutable(self) -> bool:
        """Whether any later viewer may get these bytes (rfc8246 `immutable`: the owner's
        parts and segments; not init sections, whose numbers restart with each session)."""
        cache_control = self.header("cache-control") or ""
        return self.status == 200 and "immutable" in cache_control.lower()

    def answer(self, accepts_gzip: bool) -> tuple[tuple[tuple[str, str], ...], bytes]:
        """(headers, body) for a viewer: gzip as fetched when the viewer takes it, else the
        plain bytes (decompressed once, then shared)."""
        if accepts_gzip or not self.gzipped:
            return self.headers, self.body
        if self._plain is None:
            self._plain = gunzip(self.body, MAX_UPSTREAM_BODY_BYTES)
        return tuple(h for h in self.headers if h[0] != "content-encoding"), self._plain

    def keep_plain(self, plain: bytes) -> None:
        """The inflated form of a gzip body, found when it was checked."""
        self._plain = plain

    def header_block(self, accepts_gzip: bool) -> bytes:
        """`answer`'s headers as HTTP/1.1 field lines (`relay.hls.http1.Response`)."""
        key = accepts_gzip or not self.gzipped
        block = self._blocks.get(key)
        if block is None:
            headers, _ = self.answer(accepts_gzip)
            block = self._blocks[key] = b"".join(
                b"%s: %s\r\n" % (name.encode("latin-1"), value.encode("latin-1"))
                for name, value in headers)
        return block


def gunzip(data: bytes, limit: int) -> bytes:
    """`data` decompressed, refusing more than `limit` bytes (an answer is bounded after
    decompression as before it)."""
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)  # gzip framing (rfc1952)
    plain = inflater.decompress(data, limit)
    if inflater.unconsumed_tail:
        raise ValueError(f"the owner's gzip answer inflates past {limit} bytes")
    return plain


def kept_headers(pairs: list[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    """The owner's response fields a viewer gets (names lower-cased)."""
    return tuple((name.lower(), value) for name, value in pairs
                 if name.lower() in PASSED_HEADERS)


def error_answer(status: int, message: str, *, retry_after: int | None = None) -> Fetched:
    """Our own answer when the owner cannot give one: the Mux error envelope, as the API's
    (`relay.api.errors`): 502 "bad_gateway", 503 "service_unavailable"."""
    error_type = "service_unavailable" if status == 503 else "bad_gateway"
    body = json.dumps({"error": {"type": error_type, "messages": [message]}},
                      separators=(",", ":")).encode()
    headers: tuple[tuple[str, str], ...] = _ERROR_HEADERS
    if retry_after is not None:
        headers = (*headers, ("retry-after", str(retry_after)))
    return Fetched(status, headers, body, failed=True)


class ImmutableCache:
    """The immutable answers fetched from owners: LRU, bounded in entries and bytes."""

    def __init__(self, max_entries: int = CACHE_MAX_ENTRIES,
                 max_bytes: int = CACHE_MAX_BYTES) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.bytes = 0
        self._entries: OrderedDict[UpstreamKey, Fetched] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: UpstreamKey) -> Fetched | None:
        found = self._entries.get(key)
        if found is not None:
            self._entries.move_to_end(key)
        return found

    def put(self, key: UpstreamKey, fetched: Fetched) -> None:
        size = len(fetched.body)
        if size > self.max_bytes or self.max_entries <= 0 or key in self._entries:
            return
        self._entries[key] = fetched
        self.bytes += size
        while len(self._entries) > self.max_entries or self.bytes > self.max_bytes:
            _, old = self._entries.popitem(last=False)
            self.bytes -= len(old.body)


class UpstreamFetcher:
    """GETs from owner nodes: one keep-alive client per owner, identical requests in flight
    coalesced, immutable answers cached. `get` never raises for the owner's failures: it
    answers them (`error_answer`)."""

    def __init__(self, limits: UpstreamLimits | None = None, *,
                 counters: UpstreamCounters | None = None) -> None:
        # Now, at start-up, rather than on the event loop at the first viewer's request.
        importlib.import_module("httpx")
        self.limits = limits if limits is not None else UpstreamLimits()
        self.counters = counters if counters is not None else UpstreamCounters()
        self.cache = ImmutableCache(self.limits.cache_max_entries, self.limits.cache_max_bytes)
        self._clients: OrderedDict[str, httpx.AsyncClient] = OrderedDict()
        self._in_flight: dict[UpstreamKey, asyncio.Future[Fetched]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._log = LogLimiter(log, interval=UPSTREAM_LOG_INTERVAL,
                               max_causes=4 * self.limits.max_owners)

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    async def get(self, owner: str, path: str, query: str = "", *, referer: str = "",
                  user_agent: str = "") -> Fetched:
        """The owner's answer to GET `path`?`query` (`referer` and `user_agent` are sent,
        and part of what is coalesced, when given: a signed playback id's requests)."""
        key: UpstreamKey = (owner, path, query, referer, user_agent)
        cached = self.cache.get(key)
        if cached is not None:
            self.counters.cache_hits += 1
            return cached
        future = self._in_flight.get(key)
        if future is None:
            if len(self._in_flight) >= self.limits.max_in_flight:
                self.counters.busy += 1
                return error_answer(
                    503, f"this node is already waiting for {self.limits.max_in_flight} "
                    "answers from the nodes that own streams; retry shortly",
                    retry_after=UNREACHABLE_RETRY_AFTER)
            future = asyncio.get_running_loop().create_future()
            self._in_flight[key] = future
            task = asyncio.create_task(self._fetch(key, future))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        else:
            self.counters.coalesced += 1
        # shield: a viewer who leaves does not cancel the request the others wait for.
        return await asyncio.shield(future)

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        clients = list(self._clients.values())
        self._clients.clear()
        for client in clients:
            await client.aclose()

    # -- the one network part --------------------------------------------------------------

    async def _fetch(self, key: UpstreamKey, future: asyncio.Future[Fetched]) -> None:
        try:
            fetched = await self._request(key)
        except BaseException:
            if not future.done():
                future.set_result(error_answer(502, "the fetch from the owner node stopped"))
            raise
        finally:
            self._in_flight.pop(key, None)
        # Only a request without a query: a signed id's media carry a session value, which
        # the owner checks (its expiry too) on every request.
        if fetched.immutable and not key[2]:
            self.cache.put(key, fetched)
        if not future.done():
            future.set_result(fetched)

    async def _request(self, key: UpstreamKey) -> Fetched:
        import httpx  # loaded by __init__

        owner, path, query, referer, user_agent = key
        headers = {"accept-encoding": "gzip", HOP_HEADER: "1"}
        if referer:
            headers["referer"] = referer
        if user_agent:
            headers["user-agent"] = user_agent
        client = self._client(owner)
        url = owner.rstrip("/") + path + ("?" + query if query else "")
        limits = self.limits
        self.counters.requests += 1
        try:
            async with asyncio.timeout(limits.connect_timeout + limits.read_timeout):
                request = client.build_request("GET", url, headers=headers)
                response = await client.send(request, stream=True)
                try:
                    body = bytearray()
                    async for chunk in response.aiter_raw():
                        body += chunk
                        self.counters.received_bytes += len(chunk)
                        if len(body) > limits.max_body_bytes:
                            return self._bad(owner, f"answered more than "
                                             f"{limits.max_body_bytes} bytes for one resource")
                finally:
                    await response.aclose()
        except httpx.PoolTimeout:
            # Our own bound, not the owner's failure: every connection to it is busy.
            self.counters.busy += 1
            self._log.warning(f"pool {owner}", "playback: all %d connections to the owner "
                              "node %s stayed busy for %g s (MAX_CONNECTIONS_PER_OWNER)",
                              limits.max_connections_per_owner, peer_text(owner),
                              limits.connect_timeout)
            return error_answer(503, f"this node has {limits.max_connections_per_owner} "
                                "requests open to the node that owns this stream; retry "
                                "shortly", retry_after=UNREACHABLE_RETRY_AFTER)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            self.counters.unreachable += 1
            self._log.warning(f"unreachable {owner}", "playback: the owner node %s is "
                              "unreachable (%s); its streams answer 503 here until it is "
                              "back or they move", peer_text(owner), type(exc).__name__)
            return error_answer(503, f"the node that owns this stream ({owner}) is "
                                "unreachable; retry shortly",
                                retry_after=UNREACHABLE_RETRY_AFTER)
        except (TimeoutError, httpx.TimeoutException):
            self.counters.timeouts += 1
            self._log.warning(f"timeout {owner}", "playback: the owner node %s did not "
                              "answer within %g s (UPSTREAM_READ_TIMEOUT)", peer_text(owner),
                              limits.read_timeout)
            return error_answer(502, f"the node that owns this stream ({owner}) did not "
                                f"answer within {limits.read_timeout:g} s")
        except httpx.HTTPError as exc:
            return self._bad(owner, f"broke off its answer ({type(exc).__name__})")
        if response.status_code not in _PASSED_STATUSES:
            return self._bad(owner, f"answered status {response.status_code}")
        fetched = Fetched(response.status_code, kept_headers(list(response.headers.items())),
                          bytes(body))
        if fetched.gzipped:
            try:  # checked here, so that a viewer without gzip is never the one to find out
                fetched.keep_plain(gunzip(fetched.body, limits.max_body_bytes))
            except (ValueError, zlib.error) as exc:
                return self._bad(owner, f"sent a gzip body that does not inflate ({exc})")
        return fetched

    def _bad(self, owner: str, what: str) -> Fetched:
        self.counters.bad_answers += 1
        self._log.warning(f"bad {owner}", "playback: the owner node %s %s", peer_text(owner),
                          what)
        return error_answer(502, f"the node that owns this stream ({owner}) {what}")

    def _client(self, owner: str) -> httpx.AsyncClient:
        import httpx  # loaded by __init__

        client = self._clients.get(owner)
        if client is not None:
            self._clients.move_to_end(owner)
            return client
        limits = self.limits
        client = httpx.AsyncClient(
            timeout=httpx.Timeout(limits.read_timeout, connect=limits.connect_timeout,
                                  pool=limits.connect_timeout),
            limits=httpx.Limits(max_connections=limits.max_connections_per_owner,
                                max_keepalive_connections=limits.max_keepalive_per_owner,
                                keepalive_expiry=limits.keepalive_seconds),
            # No proxy from the environment, no redirects: one hop to the owner.
            trust_env=False, follow_redirects=False,
            headers={"user-agent": "relay-playback-proxy"})
        self._clients[owner] = client
        while len(self._clients) > limits.max_owners:
            _, old = self._clients.popitem(last=False)
            task = asyncio.create_task(old.aclose())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return client


class OwnerProxy:
    """What the playback servers call for a live playback id not live here: who owns it
    (`lookup`, cached `OWNER_LOOKUP_TTL`, concurrent lookups of one id shared), and the
    owner's answer (`fetcher`)."""

    def __init__(self, lookup: OwnerLookup, fetcher: UpstreamFetcher | None = None, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.lookup = lookup
        self.fetcher = fetcher if fetcher is not None else UpstreamFetcher()
        self.clock = clock
        self._owners: dict[str, tuple[float, str | None]] = {}  # id -> (expires, owner)
        self._looking: dict[str, asyncio.Future[str | None]] = {}
        self._log = LogLimiter(log, interval=UPSTREAM_LOG_INTERVAL)

    async def owner(self, playback_id: str) -> str | None:
        cached = self._owners.get(playback_id)
        if cached is not None and cached[0] > self.clock():
            return cached[1]
        pending = self._looking.get(playback_id)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
        self._looking[playback_id] = future
        try:
            owner = await self.lookup(playback_id)
        except Exception as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: a lookup nobody else waited for logs nothing
            raise
        except BaseException:
            future.cancel()
            raise
        finally:
            self._looking.pop(playback_id, None)
        if len(self._owners) >= MAX_CACHED_OWNERS:
            self._owners.clear()
        self._owners[playback_id] = (self.clock() + OWNER_LOOKUP_TTL, owner)
        future.set_result(owner)
        return owner

    async def fetch(self, playback_id: str, path: str, query: str, *, signed: bool,
                    referer: str = "", user_agent: str = "") -> Fetched | None:
        """The owner's answer to `path`?`query`, or None when no other node owns the
        stream (the caller answers 404). Referer and User-Agent go along for a signed
        playback id only: the owner's restrictions read them; a public one's answer is the
        same for everyone, so they would only split what is coalesced."""
        try:
            owner = await self.owner(playback_id)
        except Exception as exc:  # the store: as the API answers its failures
            self._log.warning("lookup", "playback: could not find which node owns a live "
                              "stream (%s: %s)", type(exc).__name__, peer_text(str(exc)))
            return error_answer(503, "could not find which node serves this stream; retry "
                                "shortly", retry_after=UNREACHABLE_RETRY_AFTER)
        if owner is None:
            return None
        if signed:
            fetched = await self.fetcher.get(owner, path, query, referer=referer,
                                             user_agent=user_agent)
        else:
            fetched = await self.fetcher.get(owner, path, query)
        if fetched.failed:
            self._owners.pop(playback_id, None)  # it may have moved: ask again next time
        return fetched

    async def aclose(self) -> None:
        await self.fetcher.aclose()


__all__ = ["CACHE_MAX_BYTES", "CACHE_MAX_ENTRIES", "HOP_HEADER", "MAX_CONNECTIONS_PER_OWNER",
           "MAX_IN_FLIGHT", "MAX_OWNERS", "MAX_UPSTREAM_BODY_BYTES", "OWNER_LOOKUP_TTL",
           "PASSED_HEADERS", "UPSTREAM_CONNECT_TIMEOUT", "UPSTREAM_READ_TIMEOUT", "Fetched",
           "ImmutableCache", "OwnerLookup", "OwnerProxy", "UpstreamCounters",
           "UpstreamFetcher", "UpstreamLimits", "error_answer", "gunzip", "kept_headers"]
