"""SRT admission, pure: streamid parsing, every refusal, the connection caps and the
unknown-key throttle, with a fake clock, a fake key cache and a hand-run "loop"."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import cast

import pytest

from relay.srt.admission import (
    MAX_STREAMID_LENGTH,
    REJECT_BAD_MODE,
    REJECT_BAD_REQUEST,
    REJECT_CONFLICT,
    REJECT_DOWN,
    REJECT_FORBIDDEN,
    REJECT_INTERNAL,
    REJECT_KEY_NOT_SUPPORTED,
    REJECT_NOT_FOUND,
    REJECT_TOO_MANY,
    SrtAdmission,
    SrtAdmissionLimits,
    StreamIdError,
    host_of,
    parse_streamid,
)
from relay.srt.decisions import SrtAccept, SrtReject
from relay.store import Store
from relay.streams.registry import IngestRegistry, KeyState
from relay.streams.throttle import AuthThrottle

KEY = "k" * 32


# -- streamid ---------------------------------------------------------------------------

@pytest.mark.parametrize(("streamid", "key"), [
    (KEY, KEY),
    ("short", "short"),
    (f"#!::r={KEY},m=publish", KEY),
    (f"#!::m=publish,r={KEY}", KEY),
    (f"#!::r={KEY}", KEY),  # no m: a listener that only takes publishers need not ask
    (f"#!::u=alice,r={KEY},m=publish,s=abc,t=stream,h=relay.example", KEY),
    (f"#!::r={KEY},m=publish,acme_encoder=7", KEY),  # a custom key, the document's form
    ("#!::r=a=b,m=publish", "a=b"),  # the value runs to the comma
    ("x" * MAX_STREAMID_LENGTH, "x" * MAX_STREAMID_LENGTH),
])
def test_streamids_that_publish(streamid: str, key: str) -> None:
    assert parse_streamid(streamid) == key


@pytest.mark.parametrize(("streamid", "code", "says"), [
    ("", REJECT_BAD_REQUEST, "no streamid"),
    ("x" * (MAX_STREAMID_LENGTH + 1), REJECT_BAD_REQUEST, "513 characters"),
    (f"#!:{{r={KEY}}}", REJECT_BAD_REQUEST, "not #!::"),
    (f"#!r={KEY}", REJECT_BAD_REQUEST, "not #!::"),
    ("#!::", REJECT_BAD_REQUEST, "item 1"),
    (f"#!::{KEY}", REJECT_BAD_REQUEST, "item 1"),
    (f"#!::r={KEY},,m=publish", REJECT_BAD_REQUEST, "item 2"),
    (f"#!::r={KEY},=x", REJECT_BAD_REQUEST, "item 2"),
    (f"#!::r={KEY},r=other", REJECT_BAD_REQUEST, "r= twice"),
    ("#!::r=,m=publish", REJECT_BAD_REQUEST, "no r="),
    ("#!::m=publish", REJECT_BAD_REQUEST, "no r="),
    (f"#!::r={KEY},m=request", REJECT_BAD_MODE, "m=request"),
    (f"#!::r={KEY},m=bidirectional", REJECT_BAD_MODE, "m=bidirectional"),
    (f"#!::r={KEY},m=", REJECT_BAD_MODE, "m="),
    (f"#!::r={KEY},x=1", REJECT_KEY_NOT_SUPPORTED, "x= is not supported"),
    (f"#!::r={KEY},R=1", REJECT_KEY_NOT_SUPPORTED, "R= is not supported"),
])
def test_streamids_refused_with_a_reason(streamid: str, code: int, says: str) -> None:
    with pytest.raises(StreamIdError) as refused:
        parse_streamid(streamid)
    assert refused.value.code == code
    assert says in refused.value.reason


@pytest.mark.parametrize("streamid", [
    f"#!::{KEY}",  # the key as a bare item
    f"#!::r=x,{KEY}=1",  # the key as a key name
    f"#!::r=x,m={KEY}",  # the key as the mode
    f"#!::r=x,m=publish\n{KEY}",
])
def test_a_refusal_never_shows_what_may_be_the_key(streamid: str) -> None:
    with pytest.raises(StreamIdError) as refused:
        parse_streamid(streamid)
    assert "k" * 8 not in refused.value.reason
    assert "\n" not in refused.value.reason


def test_control_characters_in_a_shown_name_are_escaped() -> None:
    with pytest.raises(StreamIdError) as refused:
        parse_streamid("#!::r=x,\x1b[2J=1")
    assert "\x1b" not in refused.value.reason and "\\x1b" in refused.value.reason


@pytest.mark.parametrize(("address", "host"), [
    ("192.0.2.1", "192.0.2.1"),
    ("192.0.2.1:5000", "192.0.2.1"),
    ("2001:db8::1", "2001:db8::1"),
    ("[2001:db8::1]:5000", "2001:db8::1"),
    ("[2001:db8::1", "[2001:db8::1"),  # malformed: kept whole, its own group
    ("?", "?"),
])
def test_host_of(address: str, host: str) -> None:
    assert host_of(address) == host


# -- decide -----------------------------------------------------------------------------

@dataclass
class FakeRegistry:
    """The three things admission reads, as plain data the test sets."""

    keys: dict[str, KeyState] = field(default_factory=dict)
    closing: bool = False
    throttle: AuthThrottle = field(default_factory=AuthThrottle)
    peeked: list[str] = field(default_factory=list)

    def peek(self, stream_key: str) -> KeyState | None:
        self.peeked.append(stream_key)
        return self.keys.get(stream_key)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeLoop:
    """What `defer` hands the loop's thread: held until the test runs it."""

    def __init__(self) -> None:
        self.pending: list[Callable[[], None]] = []

    def call_soon_threadsafe(self, callback: Callable[[], None]) -> None:
        self.pending.append(callback)

    def run(self) -> int:
        ran = len(self.pending)
        while self.pending:
            self.pending.pop(0)()
        return ran


def setup(limits: SrtAdmissionLimits | None = None,
          throttle: AuthThrottle | None = None,
          ) -> tuple[SrtAdmission, FakeRegistry, FakeClock, FakeLoop]:
    registry = FakeRegistry(throttle=throttle or AuthThrottle())
    registry.keys[KEY] = KeyState("stream-1", disabled=False, live=False,
                                  srt_passphrase="p" * 32)
    clock, loop = FakeClock(), FakeLoop()
    return (SrtAdmission(registry, limits or SrtAdmissionLimits(), clock,
                         defer=loop.call_soon_threadsafe),
            registry, clock, loop)


def code_of(decision: SrtAccept | SrtReject) -> int:
    assert isinstance(decision, SrtReject), decision
    return decision.code


def test_accept_carries_the_streams_passphrase() -> None:
    admission, _, _, loop = setup()
    assert admission.decide(KEY, "192.0.2.1") == SrtAccept("p" * 32)
    assert admission.decide(f"#!::r={KEY},m=publish", "192.0.2.1:4000") == SrtAccept("p" * 32)
    assert admission.counters.accepted == 2
    assert loop.run() == 0  # nothing for the loop to record


def test_refusals_of_known_keys() -> None:
    admission, registry, _, loop = setup()
    registry.keys["off"] = KeyState("stream-2", disabled=True, live=False, srt_passphrase="x")
    registry.keys["busy"] = KeyState("stream-3", disabled=False, live=True, srt_passphrase="x")
    assert admission.decide("off", "192.0.2.1") == SrtReject(
        REJECT_FORBIDDEN, "live stream is disabled")
    assert admission.decide("busy", "192.0.2.1") == SrtReject(
        REJECT_CONFLICT, "live stream already has a publisher")
    assert code_of(admission.decide(f"#!::r={KEY},m=request", "192.0.2.1")) == REJECT_BAD_MODE
    registry.closing = True
    assert code_of(admission.decide(KEY, "192.0.2.1")) == REJECT_DOWN
    c = admission.counters
    assert (c.refused_disabled, c.refused_live, c.refused_bad_streamid,
            c.refused_shutting_down) == (1, 1, 1, 1)
    # None of these is a wrong key: the throttle hears of none of them.
    assert loop.run() == 0 and registry.throttle.failures_total == 0


def test_an_unknown_key_is_refused_then_recorded_on_the_loop() -> None:
    admission, registry, _, loop = setup()
    assert admission.decide("wrong", "192.0.2.1") == SrtReject(
        REJECT_NOT_FOUND, "unknown stream key")
    # decide wrote nothing to the throttle: the record waits for the loop's thread.
    assert registry.throttle.failures_total == 0
    assert loop.run() == 1
    assert registry.throttle.failures_total == 1
    assert admission.counters.refused_unknown_key == 1


def test_a_penalty_refuses_the_group_without_reading_the_key() -> None:
    throttle = AuthThrottle(free_failures=2, base_delay=4, max_delay=30)
    admission, registry, clock, loop = setup(throttle=throttle)
    for _ in range(3):  # two free failures, then one with a 4 s delay
        assert code_of(admission.decide("wrong", "2001:db8:0:1::1")) == REJECT_NOT_FOUND
        loop.run()
        clock.now += 0.1
    registry.peeked.clear()
    # The correct key from the same /64 is refused unread while the penalty runs...
    refused = admission.decide(KEY, "[2001:db8:0:1::99]:6000")
    assert refused == SrtReject(REJECT_TOO_MANY, "too many refused attempts from this "
                                                 "address; retry in 4 s")
    assert registry.peeked == []
    assert admission.counters.refused_throttled == 1
    # ...another group is not affected...
    assert isinstance(admission.decide(KEY, "2001:db8:0:2::1"), SrtAccept)
    # ...and once it has run out, the key is read again and accepted.
    clock.now += 2.5
    assert "retry in 2 s" in cast(SrtReject, admission.decide(KEY, "2001:db8:0:1::1")).reason
    clock.now += 2
    assert isinstance(admission.decide(KEY, "2001:db8:0:1::1"), SrtAccept)


def test_a_burst_cannot_outrun_the_record_of_its_first_failure() -> None:
    """Many handshakes decided before the loop runs: only the first key is read."""
    admission, registry, _, loop = setup()
    assert code_of(admission.decide("guess-1", "192.0.2.7")) == REJECT_NOT_FOUND
    for n in range(2, 50):
        assert code_of(admission.decide(f"guess-{n}", "192.0.2.7")) == REJECT_TOO_MANY
    assert code_of(admission.decide(KEY, "192.0.2.7")) == REJECT_TOO_MANY
    assert registry.peeked == ["guess-1"]
    assert isinstance(admission.decide(KEY, "192.0.2.8"), SrtAccept)  # another address
    assert loop.run() == 1
    # Recorded (a free failure: no penalty), the group's keys are read again.
    assert isinstance(admission.decide(KEY, "192.0.2.7"), SrtAccept)


def test_a_closed_loop_does_not_lock_the_group_out() -> None:
    registry = FakeRegistry()
    registry.keys[KEY] = KeyState("s", False, False, "p")

    def closed(_callback: Callable[[], None]) -> None:
        raise RuntimeError("Event loop is closed")

    admission = SrtAdmission(registry, defer=closed)
    assert code_of(admission.decide("wrong", "192.0.2.1")) == REJECT_NOT_FOUND
    assert isinstance(admission.decide(KEY, "192.0.2.1"), SrtAccept)


def test_connection_caps_global_and_per_address_group() -> None:
    admission, _, _, _ = setup(SrtAdmissionLimits(max_connections=5, max_connections_per_ip=2))
    assert admission.connection_opened("192.0.2.1:1000")
    assert admission.connection_opened("192.0.2.1:1001")
    refused = admission.decide(KEY, "192.0.2.1")
    assert refused == SrtReject(REJECT_TOO_MANY, "this address holds 2 SRT connections, the "
                                                 "most one address may "
                                                 "(--srt-max-connections-per-ip)")
    # An IPv6 /64 is one group: rotating through it does not help.
    assert admission.connection_opened("2001:db8:0:1::1")
    assert admission.connection_opened("[2001:db8:0:1::2]:9")
    assert code_of(admission.decide(KEY, "2001:db8:0:1::3")) == REJECT_TOO_MANY
    assert admission.open_connections_of("2001:db8:0:1::ffff") == 2
    assert admission.connection_opened("198.51.100.1")
    assert admission.open_connections == 5
    assert admission.decide(KEY, "203.0.113.1") == SrtReject(
        REJECT_TOO_MANY, "all 5 SRT connections are taken (--srt-max-connections)")
    # A handshake decided before the count caught up is settled when it opens.
    assert not admission.connection_opened("203.0.113.1")
    assert admission.counters.opened_over_capacity == 1
    admission.connection_closed("192.0.2.1:1000")
    assert admission.open_connections == 4
    assert isinstance(admission.decide(KEY, "192.0.2.1"), SrtAccept)
    assert admission.counters.refused_over_capacity == 3
    # Closing what was never counted changes nothing.
    admission.connection_closed("203.0.113.1")
    assert admission.open_connections == 4
    for address in ("192.0.2.1", "2001:db8:0:1::1", "2001:db8:0:1::2", "198.51.100.1"):
        admission.connection_closed(address)
    assert admission.open_connections == 0
    assert admission.open_connections_of("192.0.2.1") == 0


def test_a_bug_is_answered_not_raised_into_libsrt(caplog: pytest.LogCaptureFixture) -> None:
    admission, registry, _, _ = setup()

    def broken(_key: str) -> KeyState | None:
        raise KeyError("bug")

    registry.peek = broken  # type: ignore[method-assign]
    with caplog.at_level("ERROR", logger="relay.srt"):
        assert code_of(admission.decide(KEY, "192.0.2.1")) == REJECT_INTERNAL
    assert admission.counters.refused_internal == 1
    assert "SRT admission failed" in caplog.text


def test_decide_from_many_threads_keeps_the_counts_exact() -> None:
    """decide's counters and the loop side's connection counts share one lock."""
    admission, _, _, _ = setup(SrtAdmissionLimits(max_connections=10**6,
                                                  max_connections_per_ip=10**6))
    rounds = 2000

    def caller() -> None:
        for _ in range(rounds):
            admission.decide(KEY, "192.0.2.1")

    def opener() -> None:
        for _ in range(rounds):
            assert admission.connection_opened("192.0.2.2")
            admission.connection_closed("192.0.2.2")

    threads = [threading.Thread(target=caller) for _ in range(3)]
    threads.append(threading.Thread(target=opener))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert admission.counters.accepted == 3 * rounds
    assert admission.counters.opened == rounds
    assert admission.open_connections == 0


# -- with the real registry ---------------------------------------------------------------

def test_the_real_registry_and_throttle_fit() -> None:
    """IngestRegistry is what production passes: its peek, closing and throttle serve."""
    registry = IngestRegistry(cast(Store, object()),
                              throttle=AuthThrottle(free_failures=0, base_delay=10))
    registry._remember("stream-1", KEY, "idle", "secret-passphrase")
    clock, loop = FakeClock(), FakeLoop()
    admission = SrtAdmission(registry, clock=clock, defer=loop.call_soon_threadsafe)
    assert admission.decide(f"#!::r={KEY},m=publish", "192.0.2.1") == SrtAccept(
        "secret-passphrase")
    assert code_of(admission.decide("wrong", "192.0.2.1")) == REJECT_NOT_FOUND
    loop.run()
    assert registry.throttle.penalty_until("192.0.2.1") == clock.now + 10
    assert code_of(admission.decide(KEY, "192.0.2.1")) == REJECT_TOO_MANY
