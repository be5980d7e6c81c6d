"""Which peers may state another client's address (`--trusted-proxy CIDR`), and what they state.

Behind a load balancer every connection comes from the balancer, so per-address limits (RTMP
slots, HTTP rate limits, the image limit per client, slowed auth failures) would count all
clients as one and logs would name the balancer. A balancer says who the client is: in a
PROXY header before the bytes of a TCP connection (`relay.proxy_protocol`), or in the
`X-Forwarded-For` header of an HTTP request. Only a peer inside a trusted network may say so;
from anyone else such a statement is refused (a PROXY header: the connection is closed) or
ignored (an HTTP header: the socket's address counts), and logged.

X-Forwarded-For is a comma-separated list each proxy appends its own peer to, so its entries
on the left were written by whoever sent the request and only those on the right by the
proxies Relay trusts. The client is the right-most entry that is not itself a trusted proxy
(what nginx's `real_ip_recursive on` and uvicorn's `--forwarded-allow-ips` take); anything to
its left is the client's own claim and is never read.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any, Final

from relay.logs import LogLimiter, peer_text

log = logging.getLogger("relay.proxy")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

#: X-Forwarded-For entries read at most, from the right: more proxies than this in a row are
#: not a deployment, and the header can hold thousands of entries.
MAX_FORWARDED_HOPS: Final = 16


def parse_trusted_proxy(text: str) -> Network:
    """A `--trusted-proxy` value: an address or a network in CIDR notation."""
    try:
        return ipaddress.ip_network(text.strip(), strict=True)
    except ValueError as exc:
        raise ValueError(f"{exc}; give an address (10.0.0.5) or a network with its host bits "
                         f"zero (10.0.0.0/24, fd00::/64)") from None


def parse_address(text: str) -> Address | None:
    """An address as a socket or a proxy writes it (an IPv6 zone index and an IPv4-mapped
    IPv6 form are reduced to the address), or None."""
    try:
        address = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _forwarded_entry(text: str) -> Address | None:
    # Proxies write a bare address; some add a port ("192.0.2.1:4711", "[2001:db8::1]:4711").
    text = text.strip()
    if text.startswith("["):
        text = text[1:].split("]", 1)[0]
    elif text.count(":") == 1:
        text = text.split(":", 1)[0]
    return parse_address(text)


class TrustedProxies:
    """The networks of `--trusted-proxy`; empty: nobody may state another address."""

    def __init__(self, networks: Iterable[Network] = ()) -> None:
        self.networks: tuple[Network, ...] = tuple(networks)
        self.log_limiter = LogLimiter(log)
        self.ignored_statements = 0  # X-Forwarded-For / PROXY headers from untrusted peers

    def __bool__(self) -> bool:
        return bool(self.networks)

    def trusts(self, host: str) -> bool:
        """Whether the socket peer `host` may state another client's address."""
        if not self.networks:
            return False
        address = parse_address(host)
        return address is not None and any(address in net for net in self.networks)

    def forwarded_client(self, values: Iterable[str]) -> str | None:
        """The client an X-Forwarded-For header (its field values, in order) names: the
        right-most entry not itself trusted, the left-most when all are (a request from
        inside), or None when an entry that is not an address comes first (a proxy that
        writes something else: the socket's address counts)."""
        entries = ",".join(values).split(",")
        client: Address | None = None
        for text in reversed(entries[-MAX_FORWARDED_HOPS:]):
            address = _forwarded_entry(text)
            if address is None:
                return None
            client = address
            if not any(address in net for net in self.networks):
                break
        return str(client) if client is not None else None

    def client_of(self, peer: str, forwarded: list[str], what: str) -> str:
        """The client address of a request whose socket peer is `peer` and whose
        X-Forwarded-For field values are `forwarded`: the stated one from a trusted peer,
        the peer itself otherwise (logged, rate-limited, when it stated one)."""
        if not forwarded:
            return peer
        if self.trusts(peer):
            return self.forwarded_client(forwarded) or peer
        self.ignored_statements += 1
        self.log_limiter.info(
            "forwarded-untrusted", "%s: ignored X-Forwarded-For %s from %s: not a trusted "
            "proxy (--trusted-proxy)", what, peer_text(",".join(forwarded), 80),
            peer_text(peer))
        return peer


Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]


class ForwardedClientMiddleware:
    """ASGI: `scope["client"]` becomes the client a trusted proxy names in X-Forwarded-For,
    so everything below (auth failure throttling, the image limit per client, viewer counts,
    logs) sees the client, not the balancer. From an untrusted peer the header is ignored."""

    def __init__(self, app: App, trusted: TrustedProxies) -> None:
        self.app = app
        self.trusted = trusted

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope.get("client"):
            forwarded = [value.decode("latin-1") for name, value in scope["headers"]
                         if name == b"x-forwarded-for"]
            if forwarded:
                host = scope["client"][0]
                client = self.trusted.client_of(str(host), forwarded, "http")
                if client != host:
                    scope = dict(scope)
                    scope["client"] = (client, 0)
        await self.app(scope, receive, send)
