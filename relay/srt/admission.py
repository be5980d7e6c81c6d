"""Who may publish over SRT: the answer of libsrt's listen callback, decided from memory.

Theory of operation. libsrt calls the listen callback on its own thread while a caller's
handshake is in progress, and the handshake waits for the answer, so the answer must come at
once and without the store. `SrtAdmission.decide(streamid, address)` therefore reads only
memory that the event loop's thread keeps current:

- the registry's complete stream-key cache (`IngestRegistry.peek`: stream, disabled, live,
  SRT passphrase),
- the throttle's penalties (`AuthThrottle.penalty_until`),
- its own counts of open SRT connections, under a `threading.Lock` held for dict operations
  only (`connection_opened`/`connection_closed` are called from the loop's thread).

It never mutates the registry or the throttle: the one write an SRT refusal needs (recording
an unknown key in the throttle) is handed to the loop's thread through `defer`
(`loop.call_soon_threadsafe` in production). An accepted caller still meets two more checks:
libsrt's own passphrase check (the accept carries the stream's passphrase, so a wrong or
missing one fails the handshake), then `IngestRegistry.admit` on the loop, which reads the
store and is authoritative (a key reset or a second publisher racing this answer is settled
there).

Checks, in order; the first that fails answers (codes: SRT's access-control rejection codes,
`SRT_REJC_PREDEFINED` + an HTTP status, srt/access_control.h and
https://github.com/Haivision/srt/blob/master/docs/features/access-control.md):

| check                                                   | code | |
|---|---|---|
| the server is shutting down                             | 1503 | SRT_REJX_DOWN |
| the address group's throttle penalty runs               | 1429 | too many requests |
| an unknown-key refusal of the group is on its way to the loop | 1429 | |
| --srt-max-connections / --srt-max-connections-per-ip reached | 1429 | |
| streamid empty, too long or malformed                   | 1400 | SRT_REJX_BAD_REQUEST |
| streamid names an unsupported key                       | 1001 | SRT_REJX_KEY_NOTSUP |
| streamid asks another mode than publish (m=request)     | 1405 | SRT_REJX_BAD_MODE |
| no stream has the key                                   | 1404 | SRT_REJX_NOTFOUND |
| the stream is disabled                                  | 1403 | SRT_REJX_FORBIDDEN |
| the stream has a publisher already                      | 1409 | SRT_REJX_CONFLICT |
| otherwise: accept, with the stream's passphrase         |      | |

The header names no 429; its SRT_REJX_OVERLOAD is 1402 (HTTP's "payment required"), which says
"out of credit" rather than "slow down", so Relay sends 1429 from the HTTP range the
access-control document adopts; a caller shows it as a number either way.

The unknown-key throttle, and its trade-off. RTMP slows a wrong key by holding the refusal
(relay/streams/throttle.py): the encoder waits, and a correct key from the same address is
never delayed, because the key is looked up first. SRT cannot hold anything: the callback must
answer now. So an unknown-key refusal here *penalises* the caller's address group (an IPv4
address or an IPv6 /64) for the delay the throttle gives it, and while a penalty runs every SRT
attempt from that group is refused with 1429 *without looking at the key*. Looking first would
tell a guesser which of its guesses is right at full speed (a 1429 for the wrong ones, an
accept for the right one). The price: an honest SRT encoder behind the same address as a
guesser (one NAT, one proxy) waits out the penalty too (at most `AuthThrottle.max_delay`,
30 s by default, after the group's free failures). RTMP encoders at that address are not
affected, since RTMP holds only the wrong keys' refusals. For the same reason a second attempt
that arrives while the first's unknown-key record is still on its way to the loop (a burst of
handshakes) is refused with 1429 too: the penalty it would meet is not written yet.

Sans-IO: no socket, no loop; time comes from the injected `clock` (monotonic seconds).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Protocol

from relay.addresses import address_group
from relay.logs import peer_text
from relay.srt.decisions import SrtAccept, SrtReject
from relay.streams.registry import KeyState, Refusal
from relay.streams.throttle import AuthThrottle

log = logging.getLogger("relay.srt")

# Rejection codes (srt/access_control.h: SRT_REJC_PREDEFINED 1000 + an HTTP status).
REJECT_KEY_NOT_SUPPORTED = 1001  # SRT_REJX_KEY_NOTSUP
REJECT_BAD_REQUEST = 1400  # SRT_REJX_BAD_REQUEST
REJECT_FORBIDDEN = 1403  # SRT_REJX_FORBIDDEN: the stream is disabled
REJECT_NOT_FOUND = 1404  # SRT_REJX_NOTFOUND: no stream has the key
REJECT_BAD_MODE = 1405  # SRT_REJX_BAD_MODE: not m=publish
REJECT_CONFLICT = 1409  # SRT_REJX_CONFLICT: the stream has a publisher
REJECT_TOO_MANY = 1429  # HTTP 429 Too Many Requests (see the module's docstring)
REJECT_INTERNAL = 1500  # SRT_REJX_ISE: a bug, answered rather than raised into libsrt
REJECT_DOWN = 1503  # SRT_REJX_DOWN: shutting down

#: Longest streamid read: SRTO_STREAMID holds at most 512 characters (access-control.md), so
#: anything longer did not come from libsrt and is refused unread.
MAX_STREAMID_LENGTH = 512

#: Access-control keys accepted and ignored besides `r` and `m`: user, session id, type
#: and host name (access-control.md "Standard Keys") say nothing Relay acts on.
TOLERATED_KEYS = frozenset({"u", "s", "t", "h"})

# Longest key name or mode a refusal reason shows: the standard ones are a letter and a
# word. A longer one may be a misplaced stream key, a secret, so only its length is shown.
_SHOWN = 16


def _shown(value: str) -> str:
    if len(value) > _SHOWN:
        return f"<{len(value)} characters>"
    return peer_text(value)


class StreamIdError(ValueError):
    """A streamid Relay cannot publish with; `code` is the SRT rejection code to answer."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


def parse_streamid(text: str) -> str:
    """The stream key in an SRT streamid, or StreamIdError.

    Two forms: the plain `STREAM_KEY` (what Mux documents: `srt://HOST:6001?streamid=KEY`),
    and SRT's access-control form `#!::r=STREAM_KEY,m=publish` (comma-separated key=value
    pairs after `#!::`). In the latter, `r` (the resource) is the stream key and `m` (the
    mode) must be `publish` or absent: the document makes `request` the default, but also
    says a listener whose callers only ever send need not ask for `m`, which is Relay's
    case. `u`, `s`, `t` and `h` are tolerated and ignored, as are custom keys in the
    document's `vendor_name` form; any other key is refused, since the document reserves
    every single-letter key and Relay cannot know what an unknown one asks for."""
    if not text:
        raise StreamIdError(REJECT_BAD_REQUEST,
                            "no streamid: publish to srt://HOST:PORT?streamid=STREAM_KEY")
    if len(text) > MAX_STREAMID_LENGTH:
        raise StreamIdError(REJECT_BAD_REQUEST,
                            f"streamid is {len(text)} characters, over SRT's "
                            f"{MAX_STREAMID_LENGTH}")
    if not text.startswith("#!"):
        return text
    if not text.startswith("#!::"):
        # "#!:{" is the nested form the document describes but libsrt's callers do not send.
        raise StreamIdError(REJECT_BAD_REQUEST,
                            "streamid starts with #! but not #!:: (the access-control form "
                            "#!::r=STREAM_KEY,m=publish); use that or the plain STREAM_KEY")
    pairs: dict[str, str] = {}
    for number, pair in enumerate(text[4:].split(","), 1):
        name, equals, value = pair.partition("=")
        if not equals or not name:
            # Not shown: a bare item is likely the stream key itself.
            raise StreamIdError(REJECT_BAD_REQUEST,
                                f"streamid item {number} after #!:: is not key=value; use "
                                "#!::r=STREAM_KEY,m=publish")
        if name in pairs:
            raise StreamIdError(REJECT_BAD_REQUEST, f"streamid names {_shown(name)}= twice")
        pairs[name] = value
    for name in pairs:
        if name not in ("r", "m") and name not in TOLERATED_KEYS and "_" not in name:
            raise StreamIdError(REJECT_KEY_NOT_SUPPORTED,
                                f"streamid key {_shown(name)}= is not supported; "
                                "use #!::r=STREAM_KEY,m=publish")
    mode = pairs.get("m", "publish")
    if mode != "publish":
        raise StreamIdError(REJECT_BAD_MODE,
                            f"streamid asks for m={_shown(mode)}; Relay only takes "
                            "publishers over SRT (m=publish), playback is HLS")
    key = pairs.get("r", "")
    if not key:
        raise StreamIdError(REJECT_BAD_REQUEST,
                            "streamid has no r= (the stream key); use "
                            "#!::r=STREAM_KEY,m=publish")
    return key


class AdmissionRegistry(Protocol):
    """What admission reads of `relay.streams.registry.IngestRegistry`."""

    @property
    def closing(self) -> bool: ...

    @property
    def throttle(self) -> AuthThrottle: ...

    def peek(self, stream_key: str) -> KeyState | None: ...


@dataclass(frozen=True, slots=True)
class SrtAdmissionLimits:
    max_connections: int = 1000  # --srt-max-connections: SRT connections open at once
    max_connections_per_ip: int = 20  # --srt-max-connections-per-ip: per address group


@dataclass(slots=True)
class SrtAdmissionCounters:
    """Plain counters for the metrics collector; written under the admission's lock."""

    accepted: int = 0
    refused_bad_streamid: int = 0
    refused_unknown_key: int = 0
    refused_disabled: int = 0
    refused_live: int = 0
    refused_over_capacity: int = 0  # a connection cap
    refused_throttled: int = 0  # a penalty, or an unknown-key record on its way
    refused_shutting_down: int = 0
    refused_internal: int = 0
    opened: int = 0  # connection_opened answered True
    opened_over_capacity: int = 0  # connection_opened answered False


def host_of(address: str) -> str:
    """The host of a peer address given with or without its port: `192.0.2.1`,
    `192.0.2.1:5000`, `2001:db8::1` and `[2001:db8::1]:5000` all give the bare address.
    A per-address limit that counted "host:port" would count every connection apart."""
    if address.startswith("["):
        host, bracket, _ = address[1:].partition("]")
        return host if bracket else address
    if address.count(":") == 1:
        return address.partition(":")[0]
    return address


class SrtAdmission:
    """The SRT listen callback's policy; see the module's docstring.

    `decide` may be called from any thread (libsrt's); `connection_opened`,
    `connection_closed` and whatever `defer` runs are called on the event loop's thread.
    `defer(callback)` must run `callback` soon on the loop's thread
    (`loop.call_soon_threadsafe`)."""

    def __init__(
        self,
        registry: AdmissionRegistry,
        limits: SrtAdmissionLimits = SrtAdmissionLimits(),
        clock: Callable[[], float] = time.monotonic,
        *,
        defer: Callable[[Callable[[], None]], object],
    ) -> None:
        self.registry = registry
        self.limits = limits
        self.counters = SrtAdmissionCounters()
        self._clock = clock
        self._defer = defer
        # Guards the three dicts/ints below and the counters; held for dict operations
        # only, never across a call out of this object.
        self._lock = threading.Lock()
        self._open_total = 0
        self._open: dict[str, int] = {}  # address group -> open SRT connections
        # address group -> unknown-key records handed to the loop, not yet written.
        self._in_flight: dict[str, int] = {}

    # -- libsrt's thread ---------------------------------------------------------------

    def decide(self, streamid: str, address: str) -> SrtAccept | SrtReject:
        """Accept (with the stream's passphrase) or refuse a caller, at once.

        `streamid` as the caller set it; `address` its host, with or without the port.
        Never raises: a bug is answered 1500 and logged, not thrown into libsrt."""
        try:
            return self._decide(streamid, address)
        except Exception:
            log.exception("SRT admission failed; the caller is refused (1500)")
            with self._lock:
                self.counters.refused_internal += 1
            return SrtReject(REJECT_INTERNAL, "internal error in SRT admission")

    def _decide(self, streamid: str, address: str) -> SrtAccept | SrtReject:
        registry = self.registry
        if registry.closing:
            with self._lock:
                self.counters.refused_shutting_down += 1
            return SrtReject(REJECT_DOWN, Refusal.SHUTTING_DOWN.value)
        group = address_group(host_of(address))
        now = self._clock()
        # The penalty comes before the key is read: see "the unknown-key throttle" above.
        until = registry.throttle.penalty_until(group)
        if until > now:
            with self._lock:
                self.counters.refused_throttled += 1
            return SrtReject(REJECT_TOO_MANY,
                             "too many refused attempts from this address; retry in "
                             f"{math.ceil(until - now)} s")
        with self._lock:
            if self._in_flight.get(group, 0):
                self.counters.refused_throttled += 1
                return SrtReject(REJECT_TOO_MANY,
                                 "too many refused attempts from this address; retry in 1 s")
            refusal = self._over_capacity(group)
            if refusal is not None:
                self.counters.refused_over_capacity += 1
                return refusal
        try:
            stream_key = parse_streamid(streamid)
        except StreamIdError as bad:
            with self._lock:
                self.counters.refused_bad_streamid += 1
            return SrtReject(bad.code, bad.reason)
        state = registry.peek(stream_key)
        if state is None:
            self._record_unknown_key(address, group)
            return SrtReject(REJECT_NOT_FOUND, Refusal.UNKNOWN_KEY.value)
        if state.disabled:
            with self._lock:
                self.counters.refused_disabled += 1
            return SrtReject(REJECT_FORBIDDEN, Refusal.DISABLED.value)
        if state.live:
            with self._lock:
                self.counters.refused_live += 1
            return SrtReject(REJECT_CONFLICT, Refusal.ALREADY_LIVE.value)
        with self._lock:
            self.counters.accepted += 1
        return SrtAccept(state.srt_passphrase)

    def _over_capacity(self, group: str) -> SrtReject | None:
        # Called with the lock held.
        if self._open_total >= self.limits.max_connections:
            return SrtReject(REJECT_TOO_MANY,
                             f"all {self.limits.max_connections} SRT connections are taken "
                             "(--srt-max-connections)")
        held = self._open.get(group, 0)
        if held >= self.limits.max_connections_per_ip:
            return SrtReject(REJECT_TOO_MANY,
                             f"this address holds {held} SRT connections, the most one "
                             "address may (--srt-max-connections-per-ip)")
        return None

    def _record_unknown_key(self, address: str, group: str) -> None:
        with self._lock:
            self.counters.refused_unknown_key += 1
            self._in_flight[group] = self._in_flight.get(group, 0) + 1
        try:
            self._defer(partial(self._penalise, address, group))
        except RuntimeError:  # the loop is closed (shutdown): nothing will record it
            self._release_in_flight(group)

    # -- the event loop's thread ---------------------------------------------------------

    def _penalise(self, address: str, group: str) -> None:
        # The penalty is written before the in-flight mark is released, so no moment
        # lets the group's next attempt through unpenalised.
        try:
            self.registry.throttle.penalise(address, self._clock())
        finally:
            self._release_in_flight(group)

    def _release_in_flight(self, group: str) -> None:
        with self._lock:
            left = self._in_flight.get(group, 0) - 1
            if left > 0:
                self._in_flight[group] = left
            else:
                self._in_flight.pop(group, None)

    def connection_opened(self, address: str) -> bool:
        """Count a connection libsrt accepted; False when it does not fit the caps (the
        caller closes it, and does not call connection_closed for it). Handshakes decided
        before the count caught up can pass decide's check together; this settles them."""
        group = address_group(host_of(address))
        with self._lock:
            if self._over_capacity(group) is not None:
                self.counters.opened_over_capacity += 1
                return False
            self._open_total += 1
            self._open[group] = self._open.get(group, 0) + 1
            self.counters.opened += 1
            return True

    def connection_closed(self, address: str) -> None:
        """Uncount a connection that connection_opened counted."""
        group = address_group(host_of(address))
        with self._lock:
            held = self._open.get(group, 0)
            if held <= 0:
                return  # not counted: nothing to give back
            self._open_total -= 1
            if held > 1:
                self._open[group] = held - 1
            else:
                del self._open[group]

    @property
    def open_connections(self) -> int:
        return self._open_total

    def open_connections_of(self, address: str) -> int:
        """Open SRT connections of the address's group."""
        with self._lock:
            return self._open.get(address_group(host_of(address)), 0)
