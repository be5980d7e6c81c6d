"""Which addresses are other nodes' (`relay.cluster.addresses`) and what the connection table
does with them (`ConnectionTable.nodes`), without sockets; the sockets are
tests/hls/test_node_exemption.py's part."""

from __future__ import annotations

import asyncio

import pytest

from relay.cluster.addresses import NodeAddresses, url_host
from relay.http_limits import Admission, ConnectionTable, carries_hop

pytestmark = pytest.mark.anyio


class Conn:
    def evict(self) -> None:
        pass


def test_over_the_per_address_cap_only_a_trusted_address_is_admitted_as_a_node() -> None:
    table = ConnectionTable(max_connections=3, max_per_address=1,
                            nodes=lambda address: address == "10.0.0.2")
    assert table.open(Conn(), "10.0.0.2") is Admission.ADMITTED
    assert table.open(Conn(), "10.0.0.2") is Admission.ADMITTED_AS_NODE
    assert table.open(Conn(), "10.0.0.9") is Admission.ADMITTED
    assert table.open(Conn(), "10.0.0.9") is Admission.REFUSED_PER_ADDRESS
    # The total cap holds for nodes too (every connection busy: nothing to evict).
    for conn in list(table._addresses):
        table.busy(conn)
    assert table.open(Conn(), "10.0.0.2") is Admission.REFUSED_FULL
    assert table.from_address("10.0.0.2") == 2


def test_by_default_no_address_is_trusted() -> None:
    table = ConnectionTable(max_connections=3, max_per_address=1)
    table.open(Conn(), "127.0.0.1")
    assert table.open(Conn(), "127.0.0.1") is Admission.REFUSED_PER_ADDRESS


@pytest.mark.parametrize(("head", "hop"), [
    (b"GET /a.m3u8 HTTP/1.1\r\nHost: x\r\nx-relay-hop: 1", True),
    (b"GET /a.m3u8 HTTP/1.1\r\nX-Relay-Hop:1\r\nHost: x", True),
    (b"GET /a.m3u8 HTTP/1.1\r\nx-relay-hop : 1", True),
    (b"GET /a.m3u8 HTTP/1.1\r\nHost: x", False),
    (b"GET /x-relay-hop: HTTP/1.1\r\nHost: x", False),  # in the target, not a field
    (b"GET / HTTP/1.1\r\nReferer: x\r\n x-relay-hop: 1", False),
    (b"GET / HTTP/1.1\r\nx-relay-hopper: 1", False),
])
def test_the_hop_header_is_found_as_a_field_only(head: bytes, hop: bool) -> None:
    assert carries_hop(head) is hop


def test_url_hosts() -> None:
    assert url_host("http://10.0.0.2:8080") == "10.0.0.2"
    assert url_host("http://[2001:db8::5]:8080/") == "2001:db8::5"
    assert url_host("http://relay-b.internal:8080") == "relay-b.internal"
    assert url_host("not a url") is None


class Clock:
    now = 100.0

    def __call__(self) -> float:
        return self.now


async def test_node_addresses_from_literals_and_resolved_names() -> None:
    asked: list[str] = []
    answers = {"b.internal": ["10.0.0.3"], "c.internal": ["2001:db8::7", "10.0.0.4"]}

    async def resolve(host: str) -> list[str]:
        asked.append(host)
        if host not in answers:
            raise OSError("no such name")
        return answers[host]

    clock = Clock()
    nodes = NodeAddresses(resolve, clock=clock, name_ttl=60)
    await nodes.refresh(["http://10.0.0.2:8080", "http://[2001:db8:1::9]:8080",
                         "http://b.internal:8080", "http://c.internal:8080",
                         "http://c.internal:9090", "http://gone.internal:8080"])
    # An IPv6 address counts as its /64, as the connection caps count it.
    assert all(a in nodes for a in ("10.0.0.2", "2001:db8:1::/64", "10.0.0.3",
                                    "2001:db8::/64", "10.0.0.4"))
    assert len(nodes) == 5 and "10.0.0.9" not in nodes
    assert asked == ["b.internal", "c.internal", "gone.internal"]
    # Within the TTL a name is not resolved again, even when its answer would change.
    answers["b.internal"] = ["10.0.0.30"]
    await nodes.refresh(["http://b.internal:8080"])
    assert asked == ["b.internal", "c.internal", "gone.internal"]
    assert "10.0.0.3" in nodes and "10.0.0.2" not in nodes  # 10.0.0.2's node is gone
    # After it: resolved again.
    clock.now += 61
    await nodes.refresh(["http://b.internal:8080", "http://c.internal:8080"])
    assert "10.0.0.30" in nodes and "10.0.0.3" not in nodes and "10.0.0.4" in nodes
    assert asked[3:] == ["b.internal", "c.internal"]


async def test_a_name_that_stops_resolving_keeps_its_addresses_for_a_ttl() -> None:
    asked: list[str] = []
    answers = {"c.internal": ["10.0.0.4"]}

    async def resolve(host: str) -> list[str]:
        asked.append(host)
        if host not in answers:
            raise OSError("no such name")
        return answers[host]

    clock = Clock()
    nodes = NodeAddresses(resolve, clock=clock, name_ttl=60)
    await nodes.refresh(["http://c.internal:8080"])
    del answers["c.internal"]
    clock.now += 61
    await nodes.refresh(["http://c.internal:8080"])
    assert "10.0.0.4" in nodes and len(asked) == 2
    await nodes.refresh(["http://c.internal:8080"])  # the failure is not retried at once
    assert len(asked) == 2
    await nodes.refresh(["http://other.internal:8080"])  # its node left the list
    assert "10.0.0.4" not in nodes


async def test_node_addresses_are_bounded() -> None:
    async def never(host: str) -> list[str]:
        raise AssertionError("only literals here")

    nodes = NodeAddresses(never, max_hosts=3)
    await nodes.refresh([f"http://10.0.1.{n}:8080" for n in range(10)])
    assert len(nodes) == 3 and "10.0.1.2" in nodes and "10.0.1.3" not in nodes


async def test_a_name_that_does_not_resolve_in_time_is_left_out() -> None:
    async def slow(host: str) -> list[str]:
        await asyncio.sleep(10)
        return ["10.0.0.5"]

    nodes = NodeAddresses(slow, resolve_timeout=0.01)
    await nodes.refresh(["http://slow.internal:8080", "http://10.0.0.6:8080"])
    assert "10.0.0.5" not in nodes and "10.0.0.6" in nodes
