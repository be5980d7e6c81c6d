"""A lean HTTP/1.1 server protocol for playback: GET and HEAD, answered from bytes in memory.

Theory of operation: LL-HLS viewers make many small requests (a held playlist reload and a
part per part-target each), and most of them are released together when a part is cut.
Through uvicorn and Starlette each costs about 0.45 ms of CPU; here a request is one head
parse (a few regular expressions over the bytes, no per-header callback), one call of the
handler, and one `transport.writelines((head, body))` of bytes the handler already holds
(a playlist encoded once per revision, a part as the packager keeps it).

A request the handler holds (a blocking playlist reload, a part still being cut) is a
`Held` answer: the connection files it with `relay.hls.holding.HeldRequests`, which
releases it by a plain call when the stream changes (or at its timeout); `Held.complete`
then builds the response and it is written at once. So the requests a part releases are
answered in one pass, without a task or a future each. What really awaits (a directory
lookup, a proxied fetch, a read from disk) is an awaitable answer, run as a task.

    waiting   for a request line and headers: complete within `header_timeout` of the
              connection opening or the previous response's end (after a response with
              nothing more received, an idle connection is closed after `keep_alive`)
    busy      the handler works (a held request may take a segment or three); bytes that
              arrive meanwhile are kept, up to `MAX_PIPELINED_BYTES`, then reading pauses:
              pipelined requests are answered in order, one at a time
    writing   the transport's buffer is over its high-water mark (`pause_writing`): no
              further request is read or answered until it drains, and a peer that reads
              nothing for `send_timeout` is cut off

Only what the handler serves is handled here. A request this protocol does not answer
(another method, a body, an unusual request target, a path the handler declines) is handed,
with every byte received so far, to the fallback protocol (uvicorn's, with the same limits),
which keeps the connection from then on. So the API and the rare paths stay exactly as
they were, and the hot paths skip the ASGI stack.

The connection caps, the per-address cap and the timeouts are `relay.http_limits`'
(`HttpLimits`, one `ConnectionTable` shared with the fallback). Header bounds: a head over
`MAX_HEAD_BYTES` (h11's default, which uvicorn used for this listener) is refused with 431,
a request line over `MAX_REQUEST_LINE_BYTES` with 414, more than `MAX_HEADERS` headers with
431 (RFC 6585 5, RFC 9110 15.5.15).
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Final, Protocol, cast

from relay.addresses import address_group
from relay.hls.holding import ChangeSource, HeldRequests, HoldOutcome
from relay.http_limits import (
    Admission,
    ConnectionTable,
    Evictable,
    HttpLimits,
    LimitedH11Protocol,
    check_node_head,
    count_send_timeout,
    refuse_connection,
)
from relay.logs import LogLimiter, peer_text

log = logging.getLogger("relay.http")

#: Bytes of a request head (request line and headers) at most: h11's default, which the
#: uvicorn protocol this replaces enforced (there with a 400).
MAX_HEAD_BYTES: Final = 16 * 1024
#: Bytes of a request line at most (a playlist URL with its directives is under 200).
MAX_REQUEST_LINE_BYTES: Final = 8 * 1024
#: Header fields in one request at most.
MAX_HEADERS: Final = 100
#: Bytes received ahead of the request being answered (pipelined requests) before reading
#: pauses until the current response is out.
MAX_PIPELINED_BYTES: Final = 64 * 1024
#: Seconds an idle keep-alive connection stays open after a response (uvicorn's default,
#: which this listener had).
KEEP_ALIVE_TIMEOUT: Final = 5.0

_TOKEN: Final = rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_REQUEST_LINE: Final = re.compile(rb"(" + _TOKEN + rb") ([^ \x00-\x20\x7f]+) HTTP/1\.([01])")
# The field lines after the request line, each after its CRLF, checked in one match: no
# obs-fold, no control characters other than HTAB in a value.
_FIELD_LINES: Final = re.compile(rb"(?:\r\n" + _TOKEN + rb":[ \t]*(?:[\x21-\x7e\x80-\xff]"
                                 rb"[ \t\x21-\x7e\x80-\xff]*)?)*")
# The fields a request's handling reads (any other is skipped after one dict lookup).
_HOST, _ACCEPT_ENCODING, _REFERER, _USER_AGENT, _HOP, _FORWARDED, _CONNECTION, \
    _CONTENT_LENGTH, _FRAMING = range(9)
_FIELD_NAMES: Final = {
    b"host": _HOST, b"accept-encoding": _ACCEPT_ENCODING, b"referer": _REFERER,
    b"user-agent": _USER_AGENT, b"x-relay-hop": _HOP, b"x-forwarded-for": _FORWARDED,
    b"connection": _CONNECTION, b"content-length": _CONTENT_LENGTH,
    # a body, or a protocol change: the fallback frames it
    b"transfer-encoding": _FRAMING, b"upgrade": _FRAMING, b"expect": _FRAMING}
# An origin-form target this protocol routes itself: a plain path (no percent-encoding,
# which the fallback decodes as Starlette does) and an optional query.
_TARGET: Final = re.compile(rb"(/[A-Za-z0-9._~!$&'()*+,;=:@/-]*)(?:\?([^#]*))?")

_REASONS: Final = {200: b"OK", 400: b"Bad Request", 403: b"Forbidden", 404: b"Not Found",
                   414: b"URI Too Long", 431: b"Request Header Fields Too Large",
                   500: b"Internal Server Error", 502: b"Bad Gateway",
                   503: b"Service Unavailable"}
_STATUS_LINES: Final = {status: b"HTTP/1.1 %d %s\r\n" % (status, reason)
                        for status, reason in _REASONS.items()}
_CLOSE: Final = b"connection: close\r\n"
# A timer may fire this early (the loop's clock resolution): not a reason to re-arm.
_TIMER_SLACK: Final = 0.005


@dataclass(slots=True)
class Request:
    """What the handler reads of a request (header values as latin-1 text)."""

    head: bool  # HEAD: the response's headers without its body
    path: str
    query: str  # after "?", undecoded ("" without one)
    accept_encoding: str
    # The peer's address as the socket gives it, or the client a trusted proxy names in
    # X-Forwarded-For (relay.trusted_proxies).
    client: str
    # As received (b"" when absent), decoded only for what needs them: the checks of a
    # signed playback id's restriction (`relay.hls.signed`).
    referer: bytes = b""
    user_agent: bytes = b""
    # Sent by another Relay node fetching from this one (`relay.hls.upstream.HOP_HEADER`):
    # never forwarded again, so two nodes that each think the other owns a stream do not
    # pass a request back and forth.
    hop: bool = False


@dataclass(slots=True)
class Response:
    """A complete response: `headers` are field lines each ending in CRLF, without
    Content-Length (added from the body); `kind` names the resource for counters."""

    status: int
    headers: bytes
    body: bytes | memoryview
    kind: str


class Held:
    """The handler's answer for a request to hold until `satisfied()` holds on `source`
    (`relay.hls.holding`), at most `timeout` seconds: `complete(outcome)` then builds the
    response (an awaitable one only for what must still be read, such as media on disk).
    `complete` is also called with REFUSED, when a cap leaves no room to hold it."""

    __slots__ = ("_connection", "_consumed", "_request", "complete", "holds", "satisfied",
                 "source", "timeout")

    def __init__(self, holds: HeldRequests, source: ChangeSource, timeout: float,
                 satisfied: Callable[[], bool],
                 complete: Callable[[HoldOutcome], Response | Awaitable[Response]]) -> None:
        self.holds = holds
        self.source = source
        self.timeout = timeout
        self.satisfied = satisfied
        self.complete = complete
        # Set by the connection that holds it.
        self._connection: Http1Protocol | None = None
        self._request: Request | None = None
        self._consumed = 0

    def release(self, outcome: HoldOutcome | Exception) -> None:
        """`relay.hls.holding.Waiter.release`: answer the connection's request."""
        connection, self._connection = self._connection, None
        if connection is not None:
            connection._released(self, outcome)

    async def waited(self) -> Response:
        """The same hold on the coroutine path, for a handler that awaited already."""
        outcome = await self.holds.hold(self.source, self.timeout, self.satisfied)
        answer = self.complete(outcome)
        return answer if isinstance(answer, Response) else await answer


#: The handler's answer: a response now, one later (held, or awaited), or None to hand the
#: request (and the connection) to the fallback.
Answer = Response | Held | Awaitable[Response | None] | None


class Handler(Protocol):
    def handle(self, request: Request) -> Answer: ...

    def answered(self, request: Request, response: Response) -> None:
        """Called once per response this protocol writes (counters go here)."""


def text_response(status: int, text: str, headers: bytes = b"", kind: str = "error") -> Response:
    """A plain-text answer, as Starlette's `Response(..., media_type="text/plain")`."""
    return Response(status, headers + b"content-type: text/plain; charset=utf-8\r\n",
                    text.encode(), kind)


class Http1Protocol(asyncio.Protocol):
    """One connection of the lean server. `bound_protocol` makes the class for a listener."""

    table: ClassVar[ConnectionTable]
    limits: ClassVar[HttpLimits]
    handler: ClassVar[Handler]
    log_limiter: ClassVar[LogLimiter]
    #: HTTPS (relay.https): the slot the connection held in its TLS handshake, given up for
    #: its own in `connection_made`.
    handshake_slot: Evictable | None = None

    def __init__(self, fallback: Callable[[], asyncio.Protocol] | None = None,
                 loop: asyncio.AbstractEventLoop | None = None) -> None:
        self._fallback = fallback
        self._loop = loop or asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._admitted = False
        self._address = ""  # address group, for the table and log lines
        self._client = ""
        self._buffer = bytearray()
        self._busy = False  # a request is being answered
        self._task: asyncio.Future[Response | None] | None = None
        self._held: Held | None = None  # the request being held (`HeldRequests`)
        self._writing_paused = False
        self._reading_paused = False
        self._close_after = False  # the current response is the connection's last
        self._answered_any = False
        self._idle = False  # waiting with nothing received since a response
        # One timer per connection, re-armed lazily: a request moves the deadlines (plain
        # floats) and the timer, when it fires early, re-arms for the deadline then due.
        self._timer: asyncio.TimerHandle | None = None
        self._deadline_at = 0.0  # when the header timeout of the waiting phase ends
        self._idle_at = 0.0  # when an idle keep-alive connection is closed
        self._stall: asyncio.TimerHandle | None = None
        # Admitted over the per-address cap as a node's (Admission.ADMITTED_AS_NODE): its
        # first request must carry the hop header.
        self._node_unchecked = False
        self._hop = False  # the last request's hop header, for the fallback it is handed to

    # -- what the transport calls ----------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        stream = cast(asyncio.Transport, transport)  # uvloop's does not subclass asyncio's
        peer = transport.get_extra_info("peername")
        host = str(peer[0]) if isinstance(peer, tuple) and peer else ""
        self._client = host
        self._address = address_group(host)
        if self.handshake_slot is not None:
            self.table.close(self.handshake_slot)
        admission = self.table.open(self, self._address,
                                    per_address=not self.table.proxies.trusts(host))
        if admission not in (Admission.ADMITTED, Admission.ADMITTED_AS_NODE):
            self._refuse(stream, admission)
            return
        self._node_unchecked = admission is Admission.ADMITTED_AS_NODE
        self._admitted = True
        self._transport = stream
        self._waiting()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timers()
        if not self._admitted:
            return
        self._admitted = False
        self.table.close(self)
        self._transport = None
        if self._task is not None:
            self._task.cancel()  # a held request frees its slot at once
            self._task = None
        held, self._held = self._held, None
        if held is not None:
            held._connection = None
            held.holds.cancel(held, held.source)  # and so does one held directly

    def data_received(self, data: bytes) -> None:
        if not self._admitted:
            return
        if self._idle:
            # The first byte of a request: the idle keep-alive wait becomes the header
            # timeout, counted from the previous response's end.
            self._idle = False  # the header deadline is later: the timer re-arms for it
        self._buffer += data
        if self._busy or self._writing_paused:
            if len(self._buffer) > MAX_PIPELINED_BYTES:
                self._pause_reading()
            return
        self._next()

    def eof_received(self) -> bool | None:
        if self._busy:
            self._close_after = True  # answer the request in progress, then close
            return True
        return False  # the transport closes itself

    def pause_writing(self) -> None:
        self._writing_paused = True
        self._pause_reading()  # a peer that reads nothing gets nothing more read either
        if self._stall is None:
            self._stall = self._loop.call_later(self.limits.send_timeout, self._stalled)

    def resume_writing(self) -> None:
        self._writing_paused = False
        if self._stall is not None:
            self._stall.cancel()
            self._stall = None
        if not self._busy:
            self._resume_reading()
            self._next()

    # -- what the table and the server call ------------------------------------------------

    def evict(self) -> None:
        self.log_limiter.info("http-evicted", "http: closed a connection from %s that was "
                              "waiting for a request, to make room for a new one "
                              "(--http-max-connections %d)", peer_text(self._address),
                              self.table.max_connections)
        self._abort()

    def shutdown(self) -> None:
        """Close once the request in progress (if any) is answered."""
        if self._busy:
            self._close_after = True
        elif self._transport is not None:
            self._transport.close()

    # -- requests --------------------------------------------------------------------------

    def _next(self) -> None:
        """Answer the next complete request in the buffer, if any and if free to."""
        while (not self._busy and not self._writing_paused and self._transport is not None
               and not self._transport.is_closing()):
            buffer = self._buffer
            start = 0
            while buffer.startswith(b"\r\n", start):  # RFC 9112 2.2: empty lines before it
                start += 2
            if start:
                del buffer[:start]  # dropped, so a stream of them cannot fill the buffer
                start = 0
            end = buffer.find(b"\r\n\r\n", start)
            if end < 0:
                line_end = buffer.find(b"\r\n", start)
                if (line_end < 0 and len(buffer) - start > MAX_REQUEST_LINE_BYTES) or (
                        line_end - start > MAX_REQUEST_LINE_BYTES):
                    self._fail(414, "the request line is longer than "
                               f"{MAX_REQUEST_LINE_BYTES} bytes")
                elif len(buffer) - start > MAX_HEAD_BYTES:
                    self._fail(431, f"the request head is longer than {MAX_HEAD_BYTES} bytes")
                elif len(buffer) > MAX_PIPELINED_BYTES:
                    self._pause_reading()
                else:
                    self._resume_reading()
                return
            if end - start > MAX_HEAD_BYTES:
                self._fail(431, f"the request head is longer than {MAX_HEAD_BYTES} bytes")
                return
            request = self._parse(bytes(buffer[start:end]))
            if request is None:
                return  # answered (400, 414, 431) or handed to the fallback
            self._begin(request, end + 4)

    def _parse(self, head: bytes) -> Request | None:
        lines = head.split(b"\r\n")
        if len(lines[0]) > MAX_REQUEST_LINE_BYTES:
            self._fail(414, f"the request line is longer than {MAX_REQUEST_LINE_BYTES} bytes")
            return None
        if len(lines) - 1 > MAX_HEADERS:
            self._fail(431, f"the request has more than {MAX_HEADERS} header fields")
            return None
        first = _REQUEST_LINE.fullmatch(lines[0])
        if first is None:
            self._fail(400, "malformed request line")
            return None
        method, target, minor = first.groups()
        accept_encoding = referer = user_agent = b""
        hop = False
        hosts = 0
        forwarded: list[str] = []
        keep_alive = minor == b"1"
        ours = method in (b"GET", b"HEAD")  # else the fallback answers (405 and the API)
        if _FIELD_LINES.fullmatch(head, len(lines[0])) is None:
            self._fail(400, "malformed header field")
            return None
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            field = _FIELD_NAMES.get(name.lower())
            if field is None:
                continue
            value = value.lstrip(b" \t")
            if field == _HOST:
                hosts += 1
            elif field == _ACCEPT_ENCODING:
                accept_encoding = value if not accept_encoding else accept_encoding + b"," + value
            elif field == _REFERER:
                referer = value
            elif field == _USER_AGENT:
                user_agent = value
            elif field == _HOP:
                hop = True
            elif field == _FORWARDED:
                forwarded.append(value.decode("latin-1"))
            elif field == _CONNECTION:
                tokens = value.lower()
                if b"close" in tokens:
                    keep_alive = False
                elif b"upgrade" in tokens:
                    ours = False
            elif field == _CONTENT_LENGTH:
                ours = ours and value == b"0"
            else:
                ours = False
        self._hop = hop
        if self._node_unchecked:
            self._node_unchecked = False
            if not check_node_head(head, self.table):
                self._busy = True  # nothing more is read or answered
                assert self._transport is not None
                self._refuse(self._transport, Admission.REFUSED_PER_ADDRESS)
                return None
        if minor == b"1" and hosts != 1:
            self._fail(400, "an HTTP/1.1 request needs exactly one Host header")
            return None
        if not ours:
            self._hand_off()
            return None
        target_match = _TARGET.fullmatch(target)
        if target_match is None:
            self._hand_off()  # percent-encoding, absolute-form, "*": the fallback's
            return None
        path, query = target_match.groups()
        self._close_after = self._close_after or not keep_alive
        client = (self.table.proxies.client_of(self._client, forwarded, "http") if forwarded
                  else self._client)
        return Request(method == b"HEAD", path.decode("ascii"),
                       query.decode("latin-1") if query is not None else "",
                       accept_encoding.decode("latin-1"), client, referer, user_agent, hop)

    def _begin(self, request: Request, consumed: int) -> None:
        self._busy = True
        self._idle = False
        self.table.busy(self)
        try:
            answer = self.handler.handle(request)
        except Exception:
            log.exception("http: the playback handler failed")
            answer = text_response(500, "Internal Server Error")
        self._answer(request, consumed, answer)

    def _answer(self, request: Request, consumed: int, answer: Answer) -> None:
        if answer is None:
            self._busy = False
            self._hand_off()
        elif isinstance(answer, Response):
            del self._buffer[:consumed]
            self._respond(request, answer)
        elif isinstance(answer, Held):
            self._hold(request, consumed, answer)
        else:
            task = asyncio.ensure_future(answer)
            self._task = task
            self._pause_reading_if_full()
            task.add_done_callback(lambda done: self._finished(request, consumed, done))

    def _hold(self, request: Request, consumed: int, held: Held) -> None:
        outcome: HoldOutcome | Exception | None
        try:
            outcome = held.holds.admit(held.source, held.timeout, held)
        except Exception as exc:  # the condition, checked at once
            outcome = exc
        if outcome is not None:
            self._answer(request, consumed, _completed(held, outcome))
            return
        held._connection = self
        held._request = request
        held._consumed = consumed
        self._held = held
        self._pause_reading_if_full()

    def _released(self, held: Held, outcome: HoldOutcome | Exception) -> None:
        """`HeldRequests` let go of the held request: answer it, then what follows it."""
        if self._held is not held:
            return
        self._held = None
        request = held._request
        assert request is not None
        self._answer(request, held._consumed, _completed(held, outcome))
        if not self._busy:
            self._next()

    def _finished(self, request: Request, consumed: int,
                  done: asyncio.Future[Response | None]) -> None:
        if self._task is not done:
            return  # the connection was lost and the task cancelled
        self._task = None
        if done.cancelled():  # from outside (the loop's end): nothing to answer with
            self._abort()
            return
        try:
            answer = done.result()
        except Exception:
            log.exception("http: the playback handler failed")
            answer = text_response(500, "Internal Server Error")
        if answer is None:
            self._busy = False
            self._hand_off()
            return
        del self._buffer[:consumed]
        self._respond(request, answer)
        if not self._busy:
            self._next()

    def _respond(self, request: Request, response: Response) -> None:
        transport = self._transport
        if transport is None:
            return
        body = response.body
        head = b"%s%s%scontent-length: %d\r\n%s\r\n" % (
            _STATUS_LINES[response.status], self._date(), response.headers, len(body),
            _CLOSE if self._close_after else b"")
        # The one place each answered request's kind and status are known.
        self.handler.answered(request, response)
        if request.head:
            transport.write(head)
        else:
            transport.writelines((head, body))
        self._answered_any = True
        self._busy = False
        if self._close_after:
            transport.close()
            return
        self._waiting()
        if not self._writing_paused:
            self._resume_reading()

    def _date(self) -> bytes:
        return b""

    def _fail(self, status: int, reason: str) -> None:
        """Answer a malformed request and close: what follows it cannot be framed."""
        self.log_limiter.info(f"http-refused-{status}", "http: answered %d to %s: %s",
                              status, peer_text(self._address), reason)
        transport = self._transport
        if transport is None:
            return
        body = reason.encode() + b"\n"
        transport.write(b"%scontent-type: text/plain; charset=utf-8\r\ncontent-length: %d\r\n"
                        b"connection: close\r\n\r\n%s" % (_STATUS_LINES[status], len(body),
                                                           body))
        self._busy = True  # nothing more is read or answered
        transport.close()

    def _hand_off(self) -> None:
        """Give the connection, and every byte of it not yet answered, to the fallback."""
        transport = self._transport
        if self._fallback is None or transport is None:
            self._fail(400, "this listener serves GET and HEAD of playback paths only")
            return
        self._cancel_timers()
        self.table.close(self)
        self._admitted = False
        self._transport = None
        self._busy = True
        protocol = self._fallback()
        if isinstance(protocol, LimitedH11Protocol):
            # A hop request from a node's address over the cap need not show it again.
            protocol.node_checked = self._hop
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        data = bytes(self._buffer)
        self._buffer.clear()
        if self._reading_paused:
            self._reading_paused = False
            transport.resume_reading()
        if data:
            protocol.data_received(data)

    # -- the bounds ------------------------------------------------------------------------

    def _waiting(self) -> None:
        """Between requests: the connection may be evicted; the header timeout starts."""
        self.table.waiting(self)
        now = self._loop.time()
        self._deadline_at = now + self.limits.header_timeout
        self._idle_at = now + KEEP_ALIVE_TIMEOUT
        self._idle = self._answered_any and not self._buffer and \
            self._idle_at < self._deadline_at
        due = self._idle_at if self._idle else self._deadline_at
        timer = self._timer
        if timer is None or timer.when() > due:
            if timer is not None:
                timer.cancel()
            self._timer = self._loop.call_at(due, self._late)

    def _late(self) -> None:
        self._timer = None
        if self._busy or self._transport is None:
            return  # re-armed when the connection waits again
        due = self._idle_at if self._idle else self._deadline_at
        if due - self._loop.time() > _TIMER_SLACK:
            self._timer = self._loop.call_at(due, self._late)
            return
        if not self._idle:
            self.table.counters.header_timeouts += 1
            self.log_limiter.info(
                "http-header-timeout", "http: closed a connection from %s: no complete "
                "request line and headers within %g s (--http-header-timeout)",
                peer_text(self._address), self.limits.header_timeout)
            self._abort()
        elif self._transport is not None:
            self._transport.close()  # an idle keep-alive: a normal end

    def _stalled(self) -> None:
        self._stall = None
        count_send_timeout(self.table, self._address, self.limits, self.log_limiter)
        self._abort()

    def _pause_reading_if_full(self) -> None:
        if len(self._buffer) > MAX_PIPELINED_BYTES:
            self._pause_reading()

    def _pause_reading(self) -> None:
        if not self._reading_paused and self._transport is not None:
            self._reading_paused = True
            self._transport.pause_reading()

    def _resume_reading(self) -> None:
        if self._reading_paused and self._transport is not None:
            self._reading_paused = False
            self._transport.resume_reading()

    def _abort(self) -> None:
        # abort, not close: close would wait to flush a buffer the peer may never read.
        if self._transport is not None and not self._transport.is_closing():
            self._transport.abort()

    def _cancel_deadline(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _cancel_timers(self) -> None:
        self._cancel_deadline()
        if self._stall is not None:
            self._stall.cancel()
            self._stall = None

    def _refuse(self, transport: asyncio.Transport, admission: Admission) -> None:
        refuse_connection(transport, admission, self.table, self._address, self.log_limiter)


def _completed(held: Held, outcome: HoldOutcome | Exception
               ) -> Response | Awaitable[Response]:
    """A held request's answer for its outcome (500 when its condition raised)."""
    if isinstance(outcome, Exception):
        log.error("http: a held request's condition failed", exc_info=outcome)
        return text_response(500, "Internal Server Error")
    try:
        return held.complete(outcome)
    except Exception:
        log.exception("http: the playback handler failed")
        return text_response(500, "Internal Server Error")


def bound_protocol(limits: HttpLimits, table: ConnectionTable, handler: Handler,
                   base: type[Http1Protocol] = Http1Protocol, **extra: Any
                   ) -> type[Http1Protocol]:
    """A protocol class for one listener: its table of connections (shared with the
    fallback's), its limits, its handler and its rate-limited log lines."""
    return type(base.__name__, (base,), {
        "table": table, "limits": limits, "handler": handler,
        "log_limiter": LogLimiter(log), **extra})
