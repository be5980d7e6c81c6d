"""Which client addresses are Relay nodes: the hosts of the live nodes' advertise URLs,
resolved, as the per-address connection caps count them (`relay.addresses.address_group`).

Why: a node playing a stream another node owns sends all its viewers' requests to the owner
from its one address (`relay.hls.upstream`), so the owner's per-address cap
(`--http-max-connections-per-ip`) would refuse it first. The owner lets a connection from a
node's address past that cap when its request carries the proxy's hop header
(`relay.http_limits.ConnectionTable.nodes`); a stranger sending the header is not a node's
address and gets nothing. This assumes a node reaches other nodes from the address it
advertises (one address per node, the usual case; a node behind NAT or with several
addresses should advertise the one its requests leave from).

Bounds: at most `MAX_NODE_HOSTS` hosts; a host name is resolved at most once per
`NODE_NAME_TTL` seconds and each resolution given `NODE_RESOLVE_TIMEOUT`; a name that does
not resolve keeps its previous addresses (none at first) until it is tried again, a TTL
later. Refreshed with every heartbeat
(`relay.cluster.ClusterNode`) from the live nodes the store lists.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Final
from urllib.parse import urlsplit

from relay.addresses import address_group
from relay.logs import LogLimiter, peer_text

log = logging.getLogger("relay.cluster")

#: Distinct node hosts kept at most (the store's live nodes are capped as well:
#: `relay.cluster.node.MAX_LIVE_NODES_SEEN`).
MAX_NODE_HOSTS: Final = 1000
#: Seconds a resolved host name's addresses are used before it is resolved again.
NODE_NAME_TTL: Final = 60.0
#: Seconds one host name may take to resolve.
NODE_RESOLVE_TIMEOUT: Final = 2.0

#: host -> its IP addresses (a stand-in for `loop.getaddrinfo` in tests).
Resolver = Callable[[str], Awaitable[list[str]]]


async def resolve_host(host: str) -> list[str]:
    """The IP addresses `host` resolves to (TCP)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


def url_host(url: str) -> str | None:
    """The host of an advertise URL, without brackets; None when it has none."""
    try:
        return urlsplit(url).hostname
    except ValueError:
        return None


class NodeAddresses:
    """The address groups of the live nodes (see the module docstring). `address in nodes`
    is a set lookup: the connection caps ask it on accept."""

    def __init__(self, resolve: Resolver = resolve_host, *,
                 clock: Callable[[], float] = time.monotonic,
                 max_hosts: int = MAX_NODE_HOSTS, name_ttl: float = NODE_NAME_TTL,
                 resolve_timeout: float = NODE_RESOLVE_TIMEOUT) -> None:
        self._resolve = resolve
        self._clock = clock
        self.max_hosts = max_hosts
        self.name_ttl = name_ttl
        self.resolve_timeout = resolve_timeout
        self._groups: frozenset[str] = frozenset()
        self._names: dict[str, tuple[float, frozenset[str]]] = {}  # name -> (until, groups)
        self._log = LogLimiter(log)

    def __contains__(self, address: object) -> bool:
        return address in self._groups

    def __len__(self) -> int:
        return len(self._groups)

    async def refresh(self, advertise_urls: Iterable[str]) -> None:
        """Take the live nodes' advertise URLs: the addresses become theirs."""
        hosts: list[str] = []
        for url in advertise_urls:
            host = url_host(url)
            if host and host not in hosts:
                hosts.append(host)
            if len(hosts) >= self.max_hosts:
                break
        groups: set[str] = set()
        names: dict[str, tuple[float, frozenset[str]]] = {}
        now = self._clock()
        for host in hosts:
            try:
                groups.add(address_group(str(ipaddress.ip_address(host.split("%", 1)[0]))))
                continue
            except ValueError:
                pass  # a name
            cached = self._names.get(host)
            if cached is None or cached[0] <= now:
                resolved = await self._resolved(host)
                kept = cached[1] if cached is not None else frozenset()
                cached = (now + self.name_ttl, resolved if resolved is not None else kept)
            names[host] = cached
            groups.update(cached[1])
        self._names = names  # names of nodes no longer live are forgotten
        self._groups = frozenset(groups)

    async def _resolved(self, host: str) -> frozenset[str] | None:
        try:
            async with asyncio.timeout(self.resolve_timeout):
                found = await self._resolve(host)
        except (OSError, TimeoutError) as exc:
            self._log.warning(f"resolve {host}", "node address %s does not resolve (%s); "
                              "its requests count under --http-max-connections-per-ip as "
                              "any client's until it does", peer_text(host),
                              type(exc).__name__)
            return None
        return frozenset(address_group(address) for address in found)


__all__ = ["MAX_NODE_HOSTS", "NODE_NAME_TTL", "NODE_RESOLVE_TIMEOUT", "NodeAddresses",
           "resolve_host", "url_host"]
