"""The connection slot table: per-address and global caps, and whom a newcomer displaces."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from relay.rtmp.slots import ConnectionSlots, SlotDecision

ADMITTED, PER_ADDRESS, FULL = (SlotDecision.ADMITTED, SlotDecision.REFUSED_PER_ADDRESS,
                               SlotDecision.REFUSED_FULL)


def test_per_address_cap_counts_ipv6_per_64_and_mapped_ipv4_as_ipv4() -> None:
    slots: ConnectionSlots[str] = ConnectionSlots(max_connections=100, max_per_address=2)
    assert slots.admit("a", "2001:db8::1").decision is ADMITTED
    assert slots.admit("b", "2001:db8::ffff:2").decision is ADMITTED
    refused = slots.admit("c", "2001:db8::3")
    assert refused.decision is PER_ADDRESS
    assert (refused.group, refused.held) == ("2001:db8::/64", 2)
    assert slots.admit("d", "2001:db8:0:1::1").decision is ADMITTED  # the next /64
    assert slots.admit("e", "192.0.2.1").decision is ADMITTED
    assert slots.admit("f", "::ffff:192.0.2.1").decision is ADMITTED
    assert slots.admit("g", "192.0.2.1").decision is PER_ADDRESS
    assert slots.held_by("::ffff:192.0.2.1") == 2
    slots.release("a")
    slots.release("a")  # twice: harmless
    assert slots.admit("c", "2001:db8::3").decision is ADMITTED
    assert slots.total == 5 and slots.groups == 3


def test_when_full_a_newcomer_displaces_the_oldest_idle_of_the_biggest_holder() -> None:
    slots: ConnectionSlots[str] = ConnectionSlots(max_connections=5, max_per_address=3)
    for name in ("x1", "x2", "x3"):
        slots.admit(name, "10.0.0.1")
    slots.admit("y1", "10.0.0.2")
    slots.admit("y2", "10.0.0.2")
    slots.settle("x1")  # publishing: never evicted
    admission = slots.admit("n1", "10.0.0.9")
    assert admission.decision is ADMITTED and admission.evicted == "x2"
    assert slots.total == 5 and slots.held_by("10.0.0.1") == 2
    # 10.0.0.1 (x1 publishing, x3 idle) and 10.0.0.2 (y1, y2 idle) hold 2 each: a tie goes
    # to the group that has held that many longest (10.0.0.1 came down to 2 just now).
    assert slots.admit("n2", "10.0.0.10").evicted == "y1"
    assert slots.admit("n3", "10.0.0.11").evicted == "x3"
    # Every group holds one now; 10.0.0.9 has held one longest.
    assert slots.admit("n4", "10.0.0.12").evicted == "n1"
    assert slots.held_by("10.0.0.1") == 1  # x1, publishing, untouched


def test_publishers_and_equal_holders_are_not_displaced() -> None:
    slots: ConnectionSlots[str] = ConnectionSlots(max_connections=3, max_per_address=3)
    for name in ("p1", "p2"):
        slots.admit(name, "10.0.0.1")
        slots.settle(name)
    slots.admit("q1", "10.0.0.2")
    # 10.0.0.1 holds the most, but only publishers: the idle q1 of 10.0.0.2 makes way for
    # an address holding nothing, and that one's idle connection for the next.
    assert slots.admit("q2", "10.0.0.3").evicted == "q1"
    assert slots.admit("q3", "10.0.0.4").evicted == "q2"
    # A newcomer whose address holds as many as the biggest idle holder does not swap.
    assert slots.admit("q4", "10.0.0.4").decision is FULL
    slots.settle("q3")
    assert slots.admit("q5", "10.0.0.5").decision is FULL  # all three publish now
    slots.release("p1")
    assert slots.admit("q5", "10.0.0.5").decision is ADMITTED


@given(st.lists(st.tuples(st.sampled_from(["admit", "settle", "release"]),
                          st.integers(0, 30), st.integers(0, 6)), max_size=200))
def test_invariants_under_any_sequence(ops: list[tuple[str, int, int]]) -> None:
    slots: ConnectionSlots[int] = ConnectionSlots(max_connections=8, max_per_address=3)
    open_: dict[int, str] = {}
    publishing: set[int] = set()
    for op, conn, host in ops:
        address = f"10.0.0.{host}"
        if op == "admit" and conn not in open_:
            admission = slots.admit(conn, address)
            if admission.evicted is not None:
                assert admission.evicted not in publishing
                del open_[admission.evicted]
            if admission.decision is ADMITTED:
                open_[conn] = address
        elif op == "settle" and conn in open_:
            slots.settle(conn)
            publishing.add(conn)
        elif op == "release":
            slots.release(conn)
            open_.pop(conn, None)
            publishing.discard(conn)
        assert slots.total == len(open_) <= 8
        for held_address in set(open_.values()):
            held = sum(1 for a in open_.values() if a == held_address)
            assert slots.held_by(held_address) == held <= 3
