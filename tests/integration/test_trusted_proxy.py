"""`relay serve --trusted-proxy` behind nginx, the load balancer the README shows: its
`stream` module with `proxy_protocol on` in front of RTMP, its `http` module with
X-Forwarded-For in front of the API. Loopback is all of 127/8 on Linux: clients connect to
nginx from 127.0.0.2.. and nginx passes their real source on; nginx's own upstream
connections come from 127.0.0.1 (trusted) or, with `proxy_bind`, from 127.0.0.9 (not)."""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from relay.rtmp.handshake import HANDSHAKE_SIZE
from testkit.peers import NginxProxy, Route, host_port, metric
from testkit.relay_process import RelayProcess, free_tcp_port, wait_for
from testkit.tls import self_signed

pytestmark = pytest.mark.skipif(not NginxProxy.available(),
                                reason="nginx with its stream module is not installed")

PER_IP = 3
CLIENTS = [f"127.0.0.{n}" for n in range(2, 2 + PER_IP + 2)]  # more than the cap
UNTRUSTED_BALANCER = "127.0.0.9"


class Setup:
    def __init__(self, relay: RelayProcess, nginx: NginxProxy, ports: dict[str, int]) -> None:
        self.relay, self.nginx, self.ports = relay, nginx, ports

    @property
    def metrics_url(self) -> str:
        return self.relay.urls["metrics"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    folder = tmp_path_factory.mktemp("trusted-proxy")
    cert, key = self_signed(folder)
    relay = RelayProcess(folder / "data", token=("proxytest", "s" * 40), extra_args=[
        "--trusted-proxy", "127.0.0.1/32", "--rtmp-max-connections-per-ip", str(PER_IP),
        "--log-repeat-interval", "0.1", "--rtmps-port", "0", "--tls-cert", str(cert),
        "--tls-key", str(key)]).start()
    rtmp = host_port(relay.urls["rtmp"])[1]
    rtmps = host_port(relay.urls["rtmps"])[1]
    http = host_port(relay.http_url)[1]
    ports = {name: free_tcp_port() for name in ("proxied", "plain", "untrusted", "http",
                                                "http_untrusted", "rtmps")}
    nginx = NginxProxy(folder / "nginx", streams={
        ports["proxied"]: Route(rtmp),
        ports["rtmps"]: Route(rtmps),  # TLS passes through nginx to Relay
        ports["plain"]: Route(rtmp, proxy_protocol=False, bind=UNTRUSTED_BALANCER),
        ports["untrusted"]: Route(rtmp, bind=UNTRUSTED_BALANCER),
    }, http={
        ports["http"]: Route(http),
        ports["http_untrusted"]: Route(http, bind=UNTRUSTED_BALANCER),
    }).start()
    try:
        yield Setup(relay, nginx, ports)
    finally:
        nginx.stop()
        assert relay.stop() == 0, relay.log


def rtmp_handshake(port: int, source: str, *, tls: bool = False) -> socket.socket | None:
    """Connect to `port` from `source` and send C0 C1: the socket once S0 S1 S2 came back
    (admitted, waiting for C2), None when the server closed it instead (refused)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10,
                                    source_address=(source, 0))
    if tls:
        context = ssl.create_default_context()
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        try:
            sock = context.wrap_socket(sock, server_hostname="localhost")
        except (ssl.SSLError, ConnectionError):
            sock.close()
            return None
    sock.sendall(b"\x03" + bytes(HANDSHAKE_SIZE))
    received = 0
    try:
        while received < 1 + 2 * HANDSHAKE_SIZE:
            data = sock.recv(65536)
            if not data:
                break
            received += len(data)
    except (ConnectionError, ssl.SSLError):
        pass
    if received < 1 + 2 * HANDSHAKE_SIZE:
        sock.close()
        return None
    return sock


def close_and_wait(setup: Setup, held: list[socket.socket]) -> None:
    """Close the test's connections and wait until Relay has let their slots go, so the
    next test starts from none."""
    for sock in held:
        sock.close()
    wait_for(lambda: metric(setup.metrics_url, "relay_rtmp_open_connections") == 0)


def refused_per_ip(setup: Setup) -> float:
    return metric(setup.metrics_url, "relay_rtmp_connections_refused_per_ip_total")


def test_rtmp_clients_behind_nginx_count_by_the_address_nginx_states(setup: Setup) -> None:
    before = refused_per_ip(setup)
    held: list[socket.socket] = []
    try:
        # One per client, more clients than the per-address cap: all admitted.
        for source in CLIENTS:
            sock = rtmp_handshake(setup.ports["proxied"], source)
            assert sock is not None, f"{source} was refused:\n{setup.relay.log}"
            held.append(sock)
        # The cap applies to each stated address: 127.0.0.2 gets PER_IP, no more.
        for _ in range(PER_IP - 1):
            sock = rtmp_handshake(setup.ports["proxied"], CLIENTS[0])
            assert sock is not None
            held.append(sock)
        assert rtmp_handshake(setup.ports["proxied"], CLIENTS[0]) is None
        assert refused_per_ip(setup) == before + 1
        assert f"refused: {CLIENTS[0]} holds {PER_IP} connections" in setup.relay.log
    finally:
        close_and_wait(setup, held)


def test_rtmps_clients_behind_nginx_too(setup: Setup) -> None:
    # nginx passes TLS through: Relay reads the PROXY header, then does the TLS handshake.
    held: list[socket.socket] = []
    try:
        for source in CLIENTS:
            sock = rtmp_handshake(setup.ports["rtmps"], source, tls=True)
            assert sock is not None, f"{source} was refused:\n{setup.relay.log}"
            held.append(sock)
    finally:
        close_and_wait(setup, held)


def test_without_the_trust_every_client_is_the_balancer(setup: Setup) -> None:
    before = refused_per_ip(setup)
    held: list[socket.socket] = []
    try:
        # The same clients through a balancer Relay does not trust (no PROXY header):
        # they all count as 127.0.0.9, and only PER_IP of them get in.
        answers = []
        for source in CLIENTS:
            sock = rtmp_handshake(setup.ports["plain"], source)
            answers.append(sock is not None)
            if sock is not None:
                held.append(sock)
        assert answers == [True] * PER_IP + [False] * (len(CLIENTS) - PER_IP)
        assert refused_per_ip(setup) == before + len(CLIENTS) - PER_IP
        assert f"refused: {UNTRUSTED_BALANCER} holds {PER_IP}" in setup.relay.log
    finally:
        close_and_wait(setup, held)


def test_a_proxy_header_from_an_untrusted_peer_is_refused(setup: Setup) -> None:
    refused, errors = ("relay_rtmp_proxy_headers_refused_total",
                       "relay_rtmp_proxy_header_errors_total")
    before = metric(setup.metrics_url, refused), metric(setup.metrics_url, errors)
    assert rtmp_handshake(setup.ports["untrusted"], CLIENTS[1]) is None
    # The log line may follow the close by a moment (and the log reader runs in a thread).
    wait_for(lambda: "a PROXY header from a peer that is not a trusted proxy"
             in setup.relay.log)
    # A trusted peer that sends no header (a direct connection from 127.0.0.1) is closed.
    assert rtmp_handshake(host_port(setup.relay.urls["rtmp"])[1], "127.0.0.1") is None
    wait_for(lambda: "without a valid PROXY header" in setup.relay.log)
    after = metric(setup.metrics_url, refused), metric(setup.metrics_url, errors)
    assert (after[0] - before[0], after[1] - before[1]) == (1, 1)


async def failed_auths(url: str, sources: list[str],
                       forwarded: list[str] | None = None) -> list[int]:
    """Requests with a wrong token, all at once, one from each source address (with an
    X-Forwarded-For header each, when given): their status codes."""
    async def one(index: int, source: str) -> int:
        transport = httpx.AsyncHTTPTransport(local_address=source)
        headers = {"x-forwarded-for": forwarded[index]} if forwarded else {}
        async with httpx.AsyncClient(transport=transport, timeout=30) as client:
            response = await client.get(f"{url}/video/v1/live-streams",
                                        auth=("proxytest", "wrong"), headers=headers)
            return response.status_code
    return list(await asyncio.gather(*(one(i, s) for i, s in enumerate(sources))))


# Auth failures wait their turn per address (AUTH_MAX_SLOWED_PER_ADDRESS = 4 at once); one
# more from the same address while four wait is answered 429 at once.
FIVE = CLIENTS[:5]


def test_x_forwarded_for_from_nginx_names_each_client(setup: Setup) -> None:
    url = f"http://127.0.0.1:{setup.ports['http']}"
    assert sorted(asyncio.run(failed_auths(url, FIVE))) == [401] * 5


def test_x_forwarded_for_from_an_untrusted_peer_is_ignored(setup: Setup) -> None:
    # Through a balancer Relay does not trust: its X-Forwarded-For is not read, all five
    # are 127.0.0.9, and the fifth is refused.
    url = f"http://127.0.0.1:{setup.ports['http_untrusted']}"
    assert sorted(asyncio.run(failed_auths(url, FIVE))) == [401] * 4 + [429]
    # A client that writes the header itself, straight to Relay, is one client too.
    forged = [f"198.51.100.{n}" for n in range(5)]
    codes = asyncio.run(failed_auths(setup.relay.http_url, ["127.0.0.3"] * 5, forged))
    assert sorted(codes) == [401] * 4 + [429]
    assert "ignored X-Forwarded-For" in setup.relay.log


def test_without_the_option_no_peer_is_trusted(tmp_path: Path) -> None:
    # uvicorn on its own trusts X-Forwarded-For from 127.0.0.1; Relay trusts nobody unless
    # told, so a local process cannot pose as many clients.
    relay = RelayProcess(tmp_path / "data", token=("proxytest", "s" * 40)).start()
    try:
        forged = [f"198.51.100.{n}" for n in range(5)]
        codes = asyncio.run(failed_auths(relay.http_url, ["127.0.0.1"] * 5, forged))
        assert sorted(codes) == [401] * 4 + [429]
    finally:
        assert relay.stop() == 0, relay.log
