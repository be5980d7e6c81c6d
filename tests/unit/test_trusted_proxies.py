"""`--trusted-proxy` (relay/trusted_proxies.py): who may state the client, which
X-Forwarded-For entry names it, and the ASGI middleware that applies it."""

from __future__ import annotations

import argparse
import ipaddress
import logging
from typing import Any

import pytest

from relay.config import SERVE_OPTIONS, ConfigError, add_options, settings_from
from relay.trusted_proxies import (
    MAX_FORWARDED_HOPS,
    ForwardedClientMiddleware,
    TrustedProxies,
    parse_trusted_proxy,
)

pytestmark = pytest.mark.anyio

TRUSTED = TrustedProxies([ipaddress.ip_network("10.0.0.0/8"),
                          ipaddress.ip_network("fd00::/64"),
                          ipaddress.ip_network("127.0.0.1/32")])


def settings(argv: list[str], environ: dict[str, str] | None = None) -> Any:
    parser = argparse.ArgumentParser()
    add_options(parser, SERVE_OPTIONS)
    return settings_from(parser.parse_args(argv), SERVE_OPTIONS, environ or {})


def test_the_option_flag_repeats_and_the_env_var_takes_commas() -> None:
    assert settings([]).trusted_proxy == ()
    given = settings(["--trusted-proxy", "10.0.0.0/8", "--trusted-proxy", "::1"])
    assert given.trusted_proxy == (ipaddress.ip_network("10.0.0.0/8"),
                                   ipaddress.ip_network("::1/128"))
    env = settings([], {"RELAY_TRUSTED_PROXY": "10.1.0.0/16, 192.0.2.7"})
    assert env.trusted_proxy == (ipaddress.ip_network("10.1.0.0/16"),
                                 ipaddress.ip_network("192.0.2.7/32"))
    with pytest.raises(ConfigError, match="host bits"):
        settings(["--trusted-proxy", "10.0.0.1/8"])
    with pytest.raises(ValueError, match=r"10\.0\.0\.0/24"):
        parse_trusted_proxy("nginx")


def test_who_is_trusted() -> None:
    assert TRUSTED.trusts("10.2.3.4") and TRUSTED.trusts("fd00::5") and TRUSTED.trusts(
        "::ffff:127.0.0.1")  # a dual-stack socket's form of an IPv4 peer
    assert not TRUSTED.trusts("127.0.0.2") and not TRUSTED.trusts("fd00:0:0:1::5")
    assert not TRUSTED.trusts("?") and not TRUSTED.trusts("")
    assert not TrustedProxies().trusts("127.0.0.1")  # the default: nobody


@pytest.mark.parametrize(("values", "client"), [
    (["203.0.113.9"], "203.0.113.9"),
    (["203.0.113.9, 10.0.0.2"], "203.0.113.9"),  # through a second trusted proxy
    (["6.6.6.6, 203.0.113.9"], "203.0.113.9"),  # the client's own claim on the left: unread
    (["6.6.6.6", "203.0.113.9, 10.0.0.3"], "203.0.113.9"),  # several fields: one list
    (["10.0.0.7, 10.0.0.3"], "10.0.0.7"),  # all trusted: a request from inside
    (["[2001:db8::1]:4711"], "2001:db8::1"),
    (["198.51.100.1:4711"], "198.51.100.1"),
    (["::ffff:198.51.100.1"], "198.51.100.1"),
    (["unknown"], None),  # not an address: the socket's counts
    (["203.0.113.9, _hidden, 10.0.0.3"], None),
    (["garbage, 203.0.113.9"], "203.0.113.9"),  # left of the client: never read
    ([""], None),
])
def test_the_right_most_untrusted_entry_is_the_client(values: list[str],
                                                      client: str | None) -> None:
    assert TRUSTED.forwarded_client(values) == client


def test_only_the_last_hops_are_read() -> None:
    hops = ["203.0.113.9"] + [f"10.0.0.{n}" for n in range(1, MAX_FORWARDED_HOPS + 1)]
    assert TRUSTED.forwarded_client([", ".join(hops)]) == "10.0.0.1"
    assert TRUSTED.forwarded_client([", ".join(hops[1:])]) == "10.0.0.1"
    assert TRUSTED.forwarded_client([", ".join(hops[2:])]) == "10.0.0.2"


def test_a_statement_from_an_untrusted_peer_is_ignored_and_logged(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "relay.proxy")
    proxies = TrustedProxies([ipaddress.ip_network("10.0.0.0/8")])
    assert proxies.client_of("10.0.0.1", ["203.0.113.9"], "http") == "203.0.113.9"
    assert proxies.client_of("198.51.100.1", ["203.0.113.9\x1b[2J"], "http") == "198.51.100.1"
    assert proxies.client_of("198.51.100.1", ["203.0.113.8"], "http") == "198.51.100.1"
    assert proxies.ignored_statements == 2
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1  # rate-limited: one line per interval
    assert "not a trusted proxy" in lines[0] and "\x1b" not in lines[0]


async def test_the_middleware_rewrites_the_client_of_trusted_peers_only() -> None:
    seen: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope["client"])

    middleware = ForwardedClientMiddleware(app, TRUSTED)

    async def call(client: tuple[str, int], headers: list[tuple[bytes, bytes]]) -> Any:
        scope = {"type": "http", "client": client, "headers": headers}
        await middleware(scope, None, None)  # type: ignore[arg-type]
        return seen[-1]

    forwarded = [(b"x-forwarded-for", b"6.6.6.6, 203.0.113.9")]
    assert await call(("10.9.9.9", 5000), forwarded) == ("203.0.113.9", 0)
    assert await call(("198.51.100.1", 5000), forwarded) == ("198.51.100.1", 5000)
    assert await call(("10.9.9.9", 5000), []) == ("10.9.9.9", 5000)


def test_a_trusted_peers_connections_are_counted_but_not_capped_per_address() -> None:
    from relay.http_limits import Admission, ConnectionTable

    class Conn:
        def evict(self) -> None:
            pass

    table = ConnectionTable(3, 1)
    first = Conn()
    assert table.open(first, "10.0.0.1") is Admission.ADMITTED
    table.busy(first)
    assert table.open(Conn(), "10.0.0.1") is Admission.REFUSED_PER_ADDRESS
    busy = [Conn(), Conn()]
    for conn in busy:
        assert table.open(conn, "10.0.0.1", per_address=False) is Admission.ADMITTED
        table.busy(conn)
    assert table.from_address("10.0.0.1") == 3
    # The total cap still holds: every connection busy, a fourth is refused.
    assert table.open(Conn(), "10.0.0.2", per_address=False) is Admission.REFUSED_FULL
