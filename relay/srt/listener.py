"""The SRT listener: one thread of its own runs libsrt, the event loop receives batches.

Theory of operation. libsrt's calls block and its sockets are not file descriptors, so the
event loop cannot watch them. One thread (`SrtListener._run`) waits in `srt_epoll_uwait` on
the listening socket and every accepted one, and does all the libsrt work of the listener:
accepting, receiving, reading stats, closing. It hands what happened to the loop as
events, many at a time: events go into one pending batch under a lock, and only when no
batch is already waiting does the thread call `loop.call_soon_threadsafe` (so a busy loop
gets one wake-up for everything that arrived meanwhile, never one per datagram). The loop
takes the whole batch and passes it to `sink` in order.

Bytes are copied once on the way: `srt_recvmsg` writes each payload straight into a
per-connection receive slab (a bytearray, `recv_slab_bytes` long) at the next free offset;
the loop receives a read-only memoryview of the part filled since the last batch, and the
thread never writes into a part it has handed over (a full slab is left to the views that
still hold it, and a new one is started). Live-mode SRT has no backpressure (the sender
drops what is late: SRTO_TLPKTDROP), so neither can Relay: what waits for the loop
per connection is bounded by `max_pending_bytes`; beyond it payloads are received and
dropped, and counted (`SrtStats.backlog_dropped_bytes`).

Admission happens in libsrt's listen callback, which runs on libsrt's receive thread during
the handshake and must answer at once: it calls `decide(streamid, address)` (which only
reads), sets the stream's passphrase on the new socket for `SrtAccept` (so a caller with a
wrong or missing one fails the handshake, SRTO_ENFORCEDENCRYPTION being on by default) or
the reject reason for `SrtReject` (sent to the caller, who logs it).

Idle cost (issue 16). Two threads would poll while no caller is there: this listener's,
since `srt_epoll_uwait` is a loop inside libsrt that re-checks about every 10 ms whatever
the timeout, and libsrt's receive-queue worker (SRT:RcvQ), which polls the UDP socket with a
~10 ms timeout for as long as the listening socket's multiplexer exists (each ~6 ms of CPU
per second). So libsrt runs only while there is something for it to do. Relay owns the UDP
socket of the port; libsrt gets a duplicate of it (`bind_acquire`) while it is "armed".
With no connection open and no handshake in flight for `handshake_linger_ms` (counted from
the arming, the last handshake and the last open connection), the thread disarms: it closes
the libsrt listener and releases libsrt (srt_cleanup), which drops the multiplexer and its
threads and closes the duplicate. Then the event loop watches the UDP socket
(`loop.add_reader`: no CPU while nothing arrives) and the thread blocks on a
`threading.Event` (no polling). The first datagram (a caller's induction handshake) makes
the loop ask the thread to arm again; it stays in the socket for libsrt, which now and then
drops it all the same (MIN_SRT_HANDSHAKE_LINGER_MS: the caller connects 250 ms later). The
listen callback sets the event when it lets a handshake go on (its socket reaches the accept
queue at once, libsrt's newConnection; one that fails later, a wrong passphrase, or that its
caller abandons never does, hence the linger), as do `close_connection` and `close`.

When something else in the process also keeps libsrt started, srt_cleanup leaves the
multiplexer to libsrt's garbage collector (about 4.5 s after the close, libsrt 1.5.1): the
thread waits for the duplicate to be closed before the loop watches the socket again. A
caller's datagrams that arrive meanwhile are read and dropped by libsrt (no listener):
callers resend their induction every 250 ms until their connect timeout (SRTO_CONNTIMEO,
3 s by default), so such a caller connects late or, at worst, fails once.

Latency (libsrt docs/API/API-socket-options.md, SRTO_RCVLATENCY): the receiver's latency
is negotiated in the handshake as the larger of its own SRTO_RCVLATENCY and the sender's
SRTO_PEERLATENCY (which SRTO_LATENCY, ffmpeg's and srt-live-transmit's `latency`, sets);
`latency_ms` sets the former, so a caller asking for more gets more, never less than
`latency_ms` (tests/srt/test_listener.py checks both ways). The negotiated value is
`SrtStats.latency_ms`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from relay.logs import LogLimiter, peer_text
from relay.srt.binding import (
    SRT_REJECT_CODE_MAX,
    SrtError,
    accept,
    bind_acquire,
    ffi,
    get_str,
    last_error,
    lib,
    libsrt_version,
    set_int,
    set_listen_callback,
    set_str,
    udp_socket,
)
from relay.srt.decisions import SrtAccept, SrtReject

log = logging.getLogger("relay.srt")

#: Longest wait in srt_epoll_uwait: how soon the thread sees close requests and stop.
WAKE_INTERVAL_MS = 100
#: While disarming with libsrt still started by someone else: how often the thread checks
#: whether libsrt's garbage collector has dropped the multiplexer (closed the duplicate).
MUX_GONE_POLL_MS = 100
#: After a failure to arm libsrt (out of descriptors, say): the wait before the loop watches
#: the socket again (a datagram waiting there would otherwise retry at once, forever).
ARM_RETRY_SECONDS = 1.0
#: Sockets read from one srt_epoll_uwait call (more stay ready for the next call).
EPOLL_EVENTS = 64
#: The largest payload of one live-mode packet (srt.h SRT_LIVE_MAX_PLSIZE): every receive
#: gets at least this much room, since a live-mode message is never split.
MAX_PAYLOAD = int(lib.SRT_LIVE_MAX_PLSIZE)
#: Reject reasons sent for Relay's own failures (access_control.h SRT_REJX_ISE, _DOWN).
REJECT_INTERNAL_ERROR = 1500
REJECT_SHUTTING_DOWN = 1503

#: libsrt writes its own log to stderr; only its critical lines (syslog LOG_CRIT) stay on.
#: What a listener needs to say (refusals, broken connections) Relay logs itself.
LIBSRT_LOG_LEVEL = 2

DEFAULT_SRT_LATENCY_MS = 120
DEFAULT_SRT_MAX_PENDING_BYTES = 4 * 1024 * 1024
DEFAULT_SRT_RECV_SLAB_BYTES = 64 * 1024
DEFAULT_SRT_PEER_IDLE_TIMEOUT_MS = 5000
DEFAULT_SRT_LISTEN_BACKLOG = 128
DEFAULT_SRT_STATS_INTERVAL = 1.0
DEFAULT_SRT_HANDSHAKE_LINGER_MS = 2000
#: The datagram that arms libsrt is now and then lost (libsrt's receive thread reads it
#: before srt_listen has made the socket a listener, and drops it; 3 of 20 srt-live-transmit
#: connects on 127.0.0.1): the caller resends its induction 250 ms later (libsrt's
#: connection request interval), which the linger must wait for, with room to spare.
MIN_SRT_HANDSHAKE_LINGER_MS = 500


@dataclass(frozen=True, slots=True)
class SrtLimits:
    """Bounds on what one SRT caller may cost (STYLE.md habit 5)."""

    # Received bytes of one connection waiting for the event loop; beyond, dropped + counted.
    max_pending_bytes: int = DEFAULT_SRT_MAX_PENDING_BYTES
    # One receive buffer (payloads are received into it back to back); >= MAX_PAYLOAD.
    recv_slab_bytes: int = DEFAULT_SRT_RECV_SLAB_BYTES
    # libsrt breaks a connection that has heard nothing from its peer this long.
    peer_idle_timeout_ms: int = DEFAULT_SRT_PEER_IDLE_TIMEOUT_MS
    # Handshakes done and not yet accepted by the listener thread (srt_listen backlog).
    listen_backlog: int = DEFAULT_SRT_LISTEN_BACKLOG
    # Seconds between two stats reports of a connection.
    stats_interval: float = DEFAULT_SRT_STATS_INTERVAL
    # With no connection open, how long libsrt stays armed after it was armed (for the
    # caller's handshake), after the listen callback let a handshake go on (for its
    # accept: one that fails after the callback never gives one) and after the last
    # connection closed (for a reconnect); then it is released.
    handshake_linger_ms: int = DEFAULT_SRT_HANDSHAKE_LINGER_MS
    log_interval: float = 10.0  # at most one line per cause per interval (LogLimiter)

    def __post_init__(self) -> None:
        if self.recv_slab_bytes < MAX_PAYLOAD:
            raise ValueError(f"SRT recv_slab_bytes {self.recv_slab_bytes} is below one "
                             f"live-mode payload ({MAX_PAYLOAD} bytes); raise it")
        if self.max_pending_bytes < MAX_PAYLOAD:
            raise ValueError(f"SRT max_pending_bytes {self.max_pending_bytes} is below one "
                             f"live-mode payload ({MAX_PAYLOAD} bytes); raise it")
        if self.handshake_linger_ms < MIN_SRT_HANDSHAKE_LINGER_MS:
            raise ValueError(f"SRT handshake_linger_ms {self.handshake_linger_ms} is below "
                             f"{MIN_SRT_HANDSHAKE_LINGER_MS} ms: a caller's resent "
                             "induction (250 ms later) would find libsrt released; raise it")


@dataclass(frozen=True, slots=True)
class SrtStats:
    """One connection's receiving side, from srt_bstats (totals since the connection began,
    except the rate and the levels, which are the last interval's)."""

    rtt_ms: float
    receive_rate_mbps: float
    latency_ms: int  # the negotiated receiver latency (TSBPD delay)
    packets_received: int
    packets_lost: int
    packets_retransmitted: int  # retransmitted packets that arrived
    packets_dropped: int  # too late to play, dropped by libsrt
    packets_undecrypted: int
    bytes_received: int
    receive_buffer_ms: int
    receive_buffer_bytes: int
    backlog_dropped_bytes: int  # dropped by Relay: over max_pending_bytes


@dataclass(frozen=True, slots=True)
class ConnectionAccepted:
    handle: int
    peer: str  # "address:port" ("[v6 address]:port")
    streamid: str


@dataclass(frozen=True, slots=True)
class DataReceived:
    handle: int
    data: memoryview  # read-only; valid as long as it is held


@dataclass(frozen=True, slots=True)
class ConnectionClosed:
    handle: int
    reason: str


@dataclass(frozen=True, slots=True)
class StatsReported:
    handle: int
    stats: SrtStats


SrtEvent = ConnectionAccepted | DataReceived | ConnectionClosed | StatsReported
Decide = Callable[[str, str], SrtAccept | SrtReject]
Sink = Callable[[list[SrtEvent]], None]


@dataclass(slots=True)
class SrtCounters:
    """Plain counters, read by the metrics collector at scrape time."""

    connections_open: int = 0
    connections_total: int = 0
    callers_rejected: int = 0  # rejected in the listen callback (decide's SrtReject)
    decide_errors: int = 0  # decide raised or answered nonsense: rejected with 1500
    bytes_received: int = 0
    backlog_dropped_bytes: int = 0
    batches: int = 0  # call_soon_threadsafe wake-ups of the loop
    idle_waits: int = 0  # times libsrt was released and the thread blocked
    arms: int = 0  # times libsrt was started on the port (at start, then per datagram)
    log_lines_suppressed: int = 0


class _Connection:
    """Thread-side state of one accepted socket (touched by the loop only under the lock)."""

    __slots__ = ("backlog_dropped", "data_item", "data_item_batch", "filled", "flushed",
                 "handle", "next_stats", "pending", "retransmitted", "slab", "slab_ptr",
                 "stats_item", "stats_item_batch")

    def __init__(self, handle: int, now: float, interval: float) -> None:
        self.handle = handle
        # No slab until the first payload: a caller that sends nothing costs no buffer.
        self.slab = bytearray()
        self.slab_ptr: Any = None
        self.filled = 0  # bytes of the slab written by srt_recvmsg
        self.flushed = 0  # bytes of the slab already put into a batch
        self.pending = 0  # bytes in batches the loop has not taken (under the lock)
        self.backlog_dropped = 0
        self.retransmitted = 0  # sum of srt_bstats' per-interval pktRcvRetrans
        self.next_stats = now + interval
        # The data / stats item of this connection in the pending batch, still extendable
        # while the batch number matches (a taken batch is never touched again).
        self.data_item: list[Any] | None = None
        self.data_item_batch = -1
        self.stats_item: list[Any] | None = None
        self.stats_item_batch = -1

    def new_slab(self, slab_bytes: int) -> None:
        # The old slab lives on in the views the loop holds; nothing writes to it again.
        self.slab = bytearray(slab_bytes)
        self.slab_ptr = ffi.from_buffer("char[]", self.slab)
        self.filled = self.flushed = 0


# Batch items: [kind, handle, a, b, c]; data: slab, start, end; others: the event.
_DATA, _EVENT = 0, 1


class SrtListener:
    """Accepts SRT callers on one UDP port and hands their events to the loop in batches.

    `decide(streamid, address)` is called on libsrt's thread for every caller (`address` is
    its IP address without the port); it must only read and answer at once. `sink(events)`
    is called on the loop with each batch, in order. Loop-side use: `start()`, then
    `close_connection(handle)` as needed, and `await close()` at the end."""

    def __init__(self, host: str, port: int, *, latency_ms: int = DEFAULT_SRT_LATENCY_MS,
                 decide: Decide, sink: Sink, loop: asyncio.AbstractEventLoop,
                 limits: SrtLimits | None = None, counters: SrtCounters | None = None,
                 reuse_port: bool = False) -> None:
        self.host = host
        #: Share the port with the other workers of `relay serve --workers N`.
        self.reuse_port = reuse_port
        self.requested_port = port
        self.latency_ms = latency_ms
        self.limits = limits or SrtLimits()
        self.counters = counters or SrtCounters()
        self._decide = decide
        self._sink = sink
        self._loop = loop
        self._listener = -1
        self._eid = -1
        self._hook_handle: Any = None
        self._udp: socket.socket | None = None  # the port's socket, Relay's own
        self._udp_id = (0, 0)  # its (st_dev, st_ino)
        self._mux_fd = -1  # the duplicate libsrt has (or had: it closes it)
        self._libsrt_started = False  # srt_startup called, srt_cleanup not yet
        self._arm_requested = False  # set by the loop: a datagram is waiting
        self._watching = False  # the loop's reader is on the socket (loop side only)
        self._started = False
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._thread_done: asyncio.Future[None] | None = None
        self._commands: collections.deque[int] = collections.deque()  # handles to close
        # Set to wake the thread from its idle wait: a handshake, a command, close().
        self._wake = threading.Event()
        # Handshakes the listen callback let go on (written by libsrt's thread only).
        self._handshakes = 0
        self._connections: dict[int, _Connection] = {}  # thread-owned
        self._lock = threading.Lock()  # guards the four below and _Connection.pending
        self._batch: list[list[Any]] = []
        self._batch_number = 0
        self._scheduled = False
        # The hook runs on libsrt's receive thread only, the rest on this listener's thread.
        self._hook_log = LogLimiter(log, interval=self.limits.log_interval)
        self._thread_log = LogLimiter(log, interval=self.limits.log_interval)
        self.port = port

    # -- loop side ---------------------------------------------------------------------

    def start(self) -> None:
        """Bind, listen and start the thread; raises OSError naming the cause."""
        if self._started:
            raise RuntimeError("SrtListener.start() called twice")
        self._started = True
        log.info("libsrt %s", libsrt_version())
        lib.srt_setloglevel(LIBSRT_LOG_LEVEL)
        try:
            self._udp = udp_socket(self.host, self.requested_port, reuse_port=self.reuse_port)
        except OSError as exc:
            raise OSError(f"SRT listener: cannot listen on UDP {self.host}:"
                          f"{self.requested_port}: {exc.strerror or exc}; free the port or "
                          "choose another with --srt-port") from exc
        self.port = int(self._udp.getsockname()[1])
        stat = os.fstat(self._udp.fileno())
        self._udp_id = (stat.st_dev, stat.st_ino)
        try:
            # Armed once here, so that what libsrt refuses is said at start-up; the thread
            # releases it after the linger if no caller comes.
            self._arm()
        except BaseException:
            self._release()
            self._udp.close()
            raise
        self._thread_done = self._loop.create_future()
        self._thread = threading.Thread(target=self._run, name=f"srt-listener-{self.port}",
                                        daemon=True)
        self._thread.start()

    def close_connection(self, handle: int) -> None:
        """Close one connection (from any thread); its ConnectionClosed event follows."""
        self._commands.append(handle)
        self._wake.set()

    async def close(self) -> None:
        """Stop accepting, close every socket, join the thread, release libsrt.

        Every open connection's ConnectionClosed reaches the sink before this returns."""
        self._stopping = True
        self._wake.set()
        self._unwatch()
        if self._thread is None or self._thread_done is None:
            return
        await asyncio.shield(self._thread_done)
        self._thread.join()
        self._deliver()
        self._unwatch()
        if self._udp is not None:
            self._udp.close()

    def _watch(self) -> None:
        """On the loop: watch the port's socket for the next caller (libsrt is released)."""
        if self._stopping or self._udp is None or self._watching:
            return
        self._loop.add_reader(self._udp.fileno(), self._datagram_waiting)
        self._watching = True

    def _unwatch(self) -> None:
        if self._watching and self._udp is not None:
            self._loop.remove_reader(self._udp.fileno())
        self._watching = False

    def _datagram_waiting(self) -> None:
        """On the loop: a datagram came (it stays in the socket for libsrt): arm libsrt."""
        self._unwatch()
        self._arm_requested = True
        self._wake.set()

    def _arm(self) -> None:
        """Start libsrt and listen on a duplicate of the port's socket."""
        if lib.srt_startup() == lib.SRT_ERROR:
            raise SrtError.last("srt_startup")
        self._libsrt_started = True
        self.counters.arms += 1
        self._open_listener()

    def _open_listener(self) -> None:
        assert self._udp is not None
        sock = int(lib.srt_create_socket())
        if sock == lib.SRT_INVALID_SOCK:
            raise SrtError.last("srt_create_socket")
        self._listener = sock
        # Options set on the listener are inherited by every socket it accepts.
        set_int(sock, lib.SRTO_TRANSTYPE, lib.SRTT_LIVE)
        set_int(sock, lib.SRTO_RCVSYN, 0)  # accept/recv return at once: epoll drives them
        set_int(sock, lib.SRTO_RCVLATENCY, self.latency_ms)
        set_int(sock, lib.SRTO_PEERIDLETIMEO, self.limits.peer_idle_timeout_ms)
        self._hook_handle = set_listen_callback(sock, self._listen_hook)
        try:
            self._mux_fd = bind_acquire(sock, self._udp)
            if lib.srt_listen(sock, self.limits.listen_backlog) == lib.SRT_ERROR:
                raise SrtError.last("srt_listen")
        except SrtError as exc:
            raise OSError(f"SRT listener: cannot listen on UDP {self.host}:"
                          f"{self.requested_port}: {exc.text}; free the port or choose "
                          "another with --srt-port") from exc
        self._eid = int(lib.srt_epoll_create())
        if self._eid < 0:
            raise SrtError.last("srt_epoll_create")
        events = ffi.new("int *", lib.SRT_EPOLL_IN | lib.SRT_EPOLL_ERR)
        if lib.srt_epoll_add_usock(self._eid, sock, events) == lib.SRT_ERROR:
            raise SrtError.last("srt_epoll_add_usock")

    def _deliver(self) -> None:
        """On the loop: take the pending batch and give it to the sink."""
        with self._lock:
            batch, self._batch = self._batch, []
            self._batch_number += 1
            self._scheduled = False
            events: list[SrtEvent] = []
            for item in batch:
                if item[0] == _DATA:
                    conn: _Connection = item[1]
                    start, end = item[3], item[4]
                    conn.pending -= end - start
                    events.append(DataReceived(
                        conn.handle, memoryview(item[2])[start:end].toreadonly()))
                else:
                    events.append(item[1])
        if events:
            self._sink(events)

    # -- libsrt's receive thread -------------------------------------------------------

    def _listen_hook(self, sock: int, peer: tuple[str, int] | None, streamid: str) -> int:
        """libsrt's listen callback: 0 lets the handshake go on, -1 rejects the caller."""
        address = peer[0] if peer is not None else "?"
        if self._stopping:
            lib.srt_setrejectreason(sock, REJECT_SHUTTING_DOWN)
            return -1
        try:
            decision = self._decide(streamid, address)
        except Exception as exc:
            self.counters.decide_errors += 1
            self._hook_warning("srt-decide-error", "SRT caller %s rejected: the admission "
                               "check failed (%s: %s)", peer_text(address),
                               type(exc).__name__, peer_text(str(exc)))
            lib.srt_setrejectreason(sock, REJECT_INTERNAL_ERROR)
            return -1
        if isinstance(decision, SrtAccept):
            if decision.passphrase:
                try:
                    set_str(sock, lib.SRTO_PASSPHRASE, decision.passphrase)
                except SrtError as exc:
                    # libsrt takes 10..79 characters; anything else is a bad stored value.
                    self.counters.decide_errors += 1
                    self._hook_warning("srt-passphrase", "SRT caller %s rejected: the "
                                       "stream's passphrase was refused by libsrt (%s); it "
                                       "must be 10 to 79 characters", peer_text(address),
                                       exc.text)
                    lib.srt_setrejectreason(sock, REJECT_INTERNAL_ERROR)
                    return -1
            # The handshake goes on: the listener thread waits for its accept. (Rejected
            # callers never reach the accept queue, so they need not wake it.)
            self._handshakes += 1
            self._wake.set()
            return 0
        if isinstance(decision, SrtReject):
            self.counters.callers_rejected += 1
            code = reject_code(decision.code)
            self._hook_info("srt-rejected", "SRT caller %s rejected (%d): %s",
                            peer_text(address), code, decision.reason)
            lib.srt_setrejectreason(sock, code)
            return -1
        self.counters.decide_errors += 1
        self._hook_warning("srt-decide-error", "SRT caller %s rejected: decide() answered "
                           "a %s, not SrtAccept or SrtReject", peer_text(address),
                           type(decision).__name__)
        lib.srt_setrejectreason(sock, REJECT_INTERNAL_ERROR)
        return -1

    def _hook_warning(self, cause: str, msg: str, *args: object) -> None:
        if not self._hook_log.warning(cause, msg, *args):
            self.counters.log_lines_suppressed += 1

    def _hook_info(self, cause: str, msg: str, *args: object) -> None:
        if not self._hook_log.info(cause, msg, *args):
            self.counters.log_lines_suppressed += 1

    # -- the listener's own thread -----------------------------------------------------

    def _run(self) -> None:
        try:
            self._serve()
        except Exception:
            log.exception("SRT listener thread failed; SRT ingest stops")
        finally:
            self._shutdown()
            self._schedule()  # the closes; close() delivers them too if the loop is slow
            with contextlib.suppress(RuntimeError):  # the loop is already closed
                self._loop.call_soon_threadsafe(self._thread_finished)

    @property
    def serving(self) -> bool:
        """Started and its thread still running (for /readyz)."""
        return self._thread_done is not None and not self._thread_done.done()

    def _thread_finished(self) -> None:
        if self._thread_done is not None and not self._thread_done.done():
            self._thread_done.set_result(None)

    def _serve(self) -> None:
        ready = ffi.new("SRT_EPOLL_EVENT[]", EPOLL_EVENTS)
        scratch = bytearray(MAX_PAYLOAD)
        scratch_ptr = ffi.from_buffer("char[]", scratch)
        uwait = lib.srt_epoll_uwait
        linger = self.limits.handshake_linger_ms / 1000
        handshakes_seen = 0
        linger_until = time.monotonic() + linger  # with no connection, stay armed until then
        while not self._stopping:
            handshakes = self._handshakes
            if handshakes != handshakes_seen or self._connections:
                # Also counted from the last open connection: an encoder that reconnects
                # at once finds libsrt armed, and its handshake is not cut in two.
                handshakes_seen = handshakes
                linger_until = time.monotonic() + linger
            elif time.monotonic() >= linger_until:
                self._idle()
                linger_until = time.monotonic() + linger
                continue
            count = int(uwait(self._eid, ready, EPOLL_EVENTS, WAKE_INTERVAL_MS))
            if count < 0:
                code, text = last_error()
                if code != lib.SRT_ETIMEOUT:
                    raise SrtError("srt_epoll_uwait", code, text)
                count = 0
            for index in range(min(count, EPOLL_EVENTS)):
                sock, flags = int(ready[index].fd), int(ready[index].events)
                if sock == self._listener:
                    self._accept_all()
                    continue
                conn = self._connections.get(sock)
                if conn is not None:
                    self._receive(conn, scratch_ptr)
                    if flags & lib.SRT_EPOLL_ERR and sock in self._connections:
                        self._close_if_broken(conn)
            while self._commands:
                conn = self._connections.get(self._commands.popleft())
                if conn is not None:
                    self._close(conn, "closed by Relay")
            self._report_stats()
            self._schedule()

    def _idle(self) -> None:
        """Release libsrt, let the loop watch the port, block until the loop asks to arm
        again (a datagram came) or `close` stops the thread; then arm."""
        while not self._stopping:
            self._release()
            self._commands.clear()  # with no connection open, each names a closed one
            self._wake.clear()
            while not self._mux_gone():
                self._wake.wait(MUX_GONE_POLL_MS / 1000)
                if self._stopping:
                    return
            self._arm_requested = False
            try:
                self._loop.call_soon_threadsafe(self._watch)
            except RuntimeError:  # the loop is closed: nobody is left to serve
                self._stopping = True
                return
            self.counters.idle_waits += 1
            # The loop sets the flag, then the event: a set after the clear above is seen.
            while not self._arm_requested and not self._stopping:
                self._wake.wait()
                self._wake.clear()
            if self._stopping:
                return
            try:
                self._arm()
                return
            except OSError as exc:  # SrtError, or os.dup out of descriptors
                if not self._thread_log.warning(
                        "srt-arm", "SRT listener: cannot start libsrt on UDP port %d (%s); "
                        "trying again at the next datagram after %gs", self.port, exc,
                        ARM_RETRY_SECONDS):
                    self.counters.log_lines_suppressed += 1
                self._wake.wait(ARM_RETRY_SECONDS)

    def _mux_gone(self) -> bool:
        """Whether libsrt has closed its duplicate of the port's socket, which it does when
        it drops the multiplexer (and its threads). The number may name another file by
        now: compared by identity, not by being open."""
        if self._mux_fd < 0:
            return True
        try:
            stat = os.fstat(self._mux_fd)
        except OSError:
            gone = True
        else:
            gone = (stat.st_dev, stat.st_ino) != self._udp_id
        if gone:
            self._mux_fd = -1
        return gone

    def _accept_all(self) -> None:
        while True:
            try:
                accepted = accept(self._listener)
            except SrtError as exc:
                if not self._thread_log.warning("srt-accept", "SRT accept failed: %s",
                                                exc.text):
                    self.counters.log_lines_suppressed += 1
                return
            if accepted is None:
                return
            sock, peer = accepted
            try:
                streamid = get_str(sock, lib.SRTO_STREAMID)
            except SrtError:
                streamid = ""
            events = ffi.new("int *", lib.SRT_EPOLL_IN | lib.SRT_EPOLL_ERR)
            if lib.srt_epoll_add_usock(self._eid, sock, events) == lib.SRT_ERROR:
                lib.srt_close(sock)
                continue
            conn = _Connection(sock, time.monotonic(), self.limits.stats_interval)
            self._connections[sock] = conn
            self.counters.connections_open += 1
            self.counters.connections_total += 1
            self._queue_event(ConnectionAccepted(sock, _peer_string(peer), streamid))

    def _receive(self, conn: _Connection, scratch_ptr: Any) -> None:
        """Receive everything ready on `conn`; close it when libsrt says it is broken."""
        recvmsg, limit, sock = lib.srt_recvmsg, self.limits.max_pending_bytes, conn.handle
        slab_bytes = self.limits.recv_slab_bytes
        received = 0
        while True:
            if conn.pending + conn.filled - conn.flushed + MAX_PAYLOAD > limit:
                # The loop is behind: drain libsrt anyway (live mode cannot wait), count.
                size = recvmsg(sock, scratch_ptr, MAX_PAYLOAD)
                if size > 0:
                    conn.backlog_dropped += size
                    self.counters.backlog_dropped_bytes += size
                    continue
            else:
                if len(conn.slab) - conn.filled < MAX_PAYLOAD:
                    self._flush_data(conn)
                    conn.new_slab(slab_bytes)
                size = recvmsg(sock, conn.slab_ptr + conn.filled, slab_bytes - conn.filled)
                if size > 0:
                    conn.filled += size
                    received += size
                    continue
            if size == lib.SRT_ERROR:
                code, text = last_error()
                if code != lib.SRT_EASYNCRCV:
                    self.counters.bytes_received += received
                    self._flush_data(conn)
                    self._close(conn, text)
                    return
            break
        self.counters.bytes_received += received
        self._flush_data(conn)

    def _close_if_broken(self, conn: _Connection) -> None:
        """An error event that receiving did not explain: close unless libsrt says the
        socket is still connected (epoll would otherwise report it on every wait)."""
        state = int(lib.srt_getsockstate(conn.handle))
        if state != lib.SRTS_CONNECTED:
            self._close(conn, "connection broken (socket state "
                        f"{_SOCKET_STATES.get(state, str(state))})")

    def _flush_data(self, conn: _Connection) -> None:
        """Put the slab's bytes received since the last flush into the pending batch."""
        start, end = conn.flushed, conn.filled
        if end == start:
            return
        conn.flushed = end
        with self._lock:
            conn.pending += end - start
            item = conn.data_item
            if (item is not None and conn.data_item_batch == self._batch_number
                    and item[2] is conn.slab and item[4] == start):
                item[4] = end  # the batch has not been taken: extend its view
                return
            conn.data_item = [_DATA, conn, conn.slab, start, end]
            conn.data_item_batch = self._batch_number
            self._batch.append(conn.data_item)

    def _queue_event(self, event: SrtEvent) -> None:
        with self._lock:
            self._batch.append([_EVENT, event])

    def _close(self, conn: _Connection, reason: str) -> None:
        lib.srt_epoll_remove_usock(self._eid, conn.handle)
        lib.srt_close(conn.handle)
        del self._connections[conn.handle]
        self.counters.connections_open -= 1
        with self._lock:
            conn.data_item = conn.stats_item = None
            self._batch.append([_EVENT, ConnectionClosed(conn.handle, reason)])

    def _report_stats(self) -> None:
        now = time.monotonic()
        interval = self.limits.stats_interval
        perf = None
        for conn in self._connections.values():
            if now < conn.next_stats:
                continue
            conn.next_stats = now + interval
            if perf is None:
                perf = ffi.new("SRT_TRACEBSTATS *")
            # clear=1: the per-interval fields (rate, pktRcvRetrans) restart each report.
            if lib.srt_bstats(conn.handle, perf, 1) == lib.SRT_ERROR:
                continue
            conn.retransmitted += perf.pktRcvRetrans
            stats = SrtStats(
                rtt_ms=float(perf.msRTT),
                receive_rate_mbps=float(perf.mbpsRecvRate),
                latency_ms=int(perf.msRcvTsbPdDelay),
                packets_received=int(perf.pktRecvTotal),
                packets_lost=int(perf.pktRcvLossTotal),
                packets_retransmitted=conn.retransmitted,
                packets_dropped=int(perf.pktRcvDropTotal),
                packets_undecrypted=int(perf.pktRcvUndecryptTotal),
                bytes_received=int(perf.byteRecvTotal),
                receive_buffer_ms=int(perf.msRcvBuf),
                receive_buffer_bytes=int(perf.byteRcvBuf),
                backlog_dropped_bytes=conn.backlog_dropped,
            )
            with self._lock:
                item = conn.stats_item
                if item is not None and conn.stats_item_batch == self._batch_number:
                    item[1] = StatsReported(conn.handle, stats)  # replace the unsent one
                    continue
                conn.stats_item = [_EVENT, StatsReported(conn.handle, stats)]
                conn.stats_item_batch = self._batch_number
                self._batch.append(conn.stats_item)

    def _schedule(self) -> None:
        """Wake the loop for the pending batch, unless a wake-up is already on its way."""
        with self._lock:
            if not self._batch or self._scheduled:
                return
            self._scheduled = True
        self.counters.batches += 1
        try:
            self._loop.call_soon_threadsafe(self._deliver)
        except RuntimeError:  # the loop is closed: nobody is left to deliver to
            self._stopping = True

    def _shutdown(self) -> None:
        """On the thread, at its end: close everything; the loop delivers the rest."""
        if self._listener >= 0:
            lib.srt_close(self._listener)
            self._listener = -1
        for conn in list(self._connections.values()):
            self._close(conn, "the SRT listener is closing")
        self._release()

    def _release(self) -> None:
        if self._listener >= 0:
            lib.srt_close(self._listener)
            self._listener = -1
        if self._eid >= 0:
            lib.srt_epoll_release(self._eid)
            self._eid = -1
        if self._libsrt_started:
            # The last user's srt_cleanup drops every multiplexer and thread at once.
            lib.srt_cleanup()
            self._libsrt_started = False


def reject_code(code: int) -> int:
    """The reject reason sent for `SrtReject.code`: an HTTP-like code (403) becomes
    SRT_REJC_PREDEFINED + code (1403); a code already in 1000..2999 is sent as it is;
    anything else is sent as 1500 (internal error)."""
    predefined = int(lib.SRT_REJC_PREDEFINED)
    if 0 < code < predefined:
        return predefined + code
    if predefined <= code <= SRT_REJECT_CODE_MAX:
        return code
    return REJECT_INTERNAL_ERROR


_SOCKET_STATES = {
    int(lib.SRTS_BROKEN): "broken", int(lib.SRTS_CLOSING): "closing",
    int(lib.SRTS_CLOSED): "closed", int(lib.SRTS_NONEXIST): "gone",
}


def _peer_string(peer: tuple[str, int] | None) -> str:
    if peer is None:
        return "?"
    host, port = peer
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


__all__ = [
    "ConnectionAccepted",
    "ConnectionClosed",
    "DataReceived",
    "Decide",
    "Sink",
    "SrtCounters",
    "SrtEvent",
    "SrtLimits",
    "SrtListener",
    "SrtStats",
    "StatsReported",
    "reject_code",
]
