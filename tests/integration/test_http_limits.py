"""HTTP bounds over real sockets against `relay serve` (issue 12, item 7): slowloris sockets
are closed after the header timeout and cannot keep a normal request out, however many there
are; one address gets only its share of connections, unless it is another live node's and its
requests carry the playback proxy's hop header (issue 19); held LL-HLS requests beyond their
caps are answered 503 with Retry-After.

Timing here is only ever bounded generously from above (the server must act before a
deadline many times its timeout) or from below by the timeout itself (a server cannot close
a connection before its own timer fires)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import resource
import select
import socket
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from relay.config import SERVE_OPTIONS, Settings
from relay.hls.holding import DEFAULT_MAX_HELD_REQUESTS, DEFAULT_MAX_HELD_REQUESTS_PER_STREAM
from relay.hls.upstream import HOP_HEADER
from relay.http_limits import HttpLimits
from relay.store import Store
from testkit.encoders import needs_ffmpeg
from testkit.peers import metric
from testkit.postgres import PostgresCluster
from testkit.relay_process import RelayProcess, wait_for
from tests.hls.playlist_checker import parse_media_playlist
from tests.integration.helpers.hls_playback import http, last_msn, pushing
from tests.integration.helpers.rtmp_ingest import TOKEN

#: A request line and the start of a header: what a slowloris sends before it dawdles.
PARTIAL_REQUEST = b"GET /healthz HTTP/1.1\r\nHost: relay\r\nX-Slow: "


@contextlib.contextmanager
def relay_serving(data_dir: Path, *args: str, max_files: int | None = None
                  ) -> Iterator[RelayProcess]:
    """`relay serve` with `args`; with `max_files`, its soft RLIMIT_NOFILE is lowered to
    that once it has started (Linux prlimit on its pid; the test process keeps its own)."""
    process = RelayProcess(data_dir, token=TOKEN, extra_args=list(args)).start()
    if max_files is not None:
        assert process._proc is not None
        _, hard = resource.prlimit(process._proc.pid, resource.RLIMIT_NOFILE)
        resource.prlimit(process._proc.pid, resource.RLIMIT_NOFILE, (max_files, hard))
    try:
        yield process
    finally:
        assert process.stop() == 0, process.log


def address(relay: RelayProcess) -> tuple[str, int]:
    parts = urlsplit(relay.http_url)
    assert parts.hostname is not None and parts.port is not None
    return parts.hostname, parts.port


def open_slow(relay: RelayProcess, count: int, source: str = "127.0.0.1") -> list[socket.socket]:
    """`count` connections that each send the start of a request and then nothing."""
    sockets = []
    for _ in range(count):
        sock = socket.socket()
        sock.bind((source, 0))
        sock.settimeout(10)
        sock.connect(address(relay))
        with contextlib.suppress(OSError):  # an evicted one may be closed already
            sock.sendall(PARTIAL_REQUEST)
        sockets.append(sock)
    return sockets


def is_closed(sock: socket.socket) -> bool:
    """Whether the server has closed `sock` (EOF or reset), without waiting."""
    readable, _, _ = select.select([sock], [], [], 0)
    if not readable:
        return False
    try:
        return sock.recv(65536, socket.MSG_PEEK) == b""
    except OSError:
        return True


def read_response(sock: socket.socket) -> bytes:
    """Everything the server sends before it closes `sock`."""
    sock.settimeout(10)
    data = b""
    with contextlib.suppress(OSError):
        while chunk := sock.recv(65536):
            data += chunk
    return data


def healthz(relay: RelayProcess) -> int:
    with urllib.request.urlopen(f"{relay.http_url}/healthz", timeout=10) as response:
        return int(response.status)


def close_all(sockets: list[socket.socket]) -> None:
    for sock in sockets:
        sock.close()


def test_the_limits_have_one_default_everywhere() -> None:
    options = {option.dest: option.default for option in SERVE_OPTIONS}
    settings, limits = Settings(), HttpLimits()
    assert options["http_max_connections"] == settings.http_max_connections == \
        limits.max_connections
    assert options["http_max_connections_per_ip"] == settings.http_max_connections_per_ip \
        == limits.max_connections_per_address
    assert options["http_header_timeout"] == settings.http_header_timeout == \
        limits.header_timeout
    assert options["http_body_timeout"] == settings.http_body_timeout == limits.body_timeout
    assert options["http_send_timeout"] == settings.http_send_timeout == limits.send_timeout
    assert options["hls_max_held_requests"] == settings.hls_max_held_requests == \
        DEFAULT_MAX_HELD_REQUESTS
    assert options["hls_max_held_requests_per_stream"] == \
        settings.hls_max_held_requests_per_stream == DEFAULT_MAX_HELD_REQUESTS_PER_STREAM


def test_a_slowloris_is_closed_after_the_header_timeout(tmp_path: Path) -> None:
    timeout = 2.0
    with relay_serving(tmp_path / "data", "--http-header-timeout", str(timeout),
                       "--http-body-timeout", str(timeout)) as relay:
        dripping, silent = open_slow(relay, 2)
        opened = time.monotonic()
        closed: dict[str, float] = {}
        while len(closed) < 2 and time.monotonic() - opened < 30:
            with contextlib.suppress(OSError):
                if "dripping" not in closed:
                    dripping.send(b"x")  # one more header byte every 0.2 s
            for name, sock in (("dripping", dripping), ("silent", silent)):
                if name not in closed and is_closed(sock):
                    closed[name] = time.monotonic() - opened
            time.sleep(0.2)
        close_all([dripping, silent])
        assert set(closed) == {"dripping", "silent"}, f"still open after 30 s: {closed}"
        for name, after in closed.items():
            assert timeout * 0.9 <= after < timeout + 20, (name, after)
        assert healthz(relay) == 200
        wait_for(lambda: "--http-header-timeout" in relay.log)

        # Headers in time, but a body that never ends: the body has its own bound.
        credentials = base64.b64encode(f"{TOKEN[0]}:{TOKEN[1]}".encode())
        with socket.create_connection(address(relay), timeout=10) as sock:
            started = time.monotonic()
            sock.sendall(b"POST /video/v1/live-streams HTTP/1.1\r\nHost: relay\r\n"
                         b"Authorization: Basic " + credentials + b"\r\n"
                         b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{")
            assert read_response(sock) == b""  # closed by the body timeout, unanswered
            assert timeout * 0.9 <= time.monotonic() - started < timeout + 20
        wait_for(lambda: "--http-body-timeout" in relay.log)
        metrics = relay.urls["metrics"]
        assert metric(metrics, "relay_http_header_timeouts_total") == 2
        assert metric(metrics, "relay_http_body_timeouts_total") == 1


def test_slow_sockets_beyond_the_connection_limit_do_not_stop_healthz(
        tmp_path: Path) -> None:
    """More silent sockets than the connection limit and than the process's file-descriptor
    limit: without bounds the server runs out of descriptors and cannot accept /healthz."""
    with relay_serving(tmp_path / "data", "--http-max-connections", "100",
                       "--http-header-timeout", "120", max_files=200) as relay:
        sockets = open_slow(relay, 300)
        try:
            for _ in range(5):
                assert healthz(relay) == 200
            wait_for(lambda: sum(map(is_closed, sockets)) >= 200, timeout=30)
            # The newest silent sockets hold the slots; the oldest were closed for them.
            assert not any(is_closed(sock) for sock in sockets[-50:])
        finally:
            close_all(sockets)
        evictions = [line for line in relay.lines if "to make room" in line]
        assert 1 <= len(evictions) <= 5, evictions  # rate-limited: one line per interval


def test_one_address_gets_only_its_share_of_connections(tmp_path: Path) -> None:
    with relay_serving(tmp_path / "data", "--http-max-connections-per-ip", "10",
                       "--http-header-timeout", "120") as relay:
        sockets = open_slow(relay, 10, source="127.0.0.2")
        # Silent ones beyond the share: a request sent at once could meet the close
        # (a reset) before it reads the 503.
        sockets += [socket.create_connection(address(relay), timeout=10,
                                             source_address=("127.0.0.2", 0))
                    for _ in range(20)]
        try:
            refused = [read_response(sock) for sock in sockets[10:]]
            for answer in refused:
                assert answer.startswith(b"HTTP/1.1 503 "), answer
                assert b"\r\nRetry-After: 1\r\n" in answer
            assert not any(is_closed(sock) for sock in sockets[:10])
            assert healthz(relay) == 200  # another address is not held up
        finally:
            close_all(sockets)
        refusals = [line for line in relay.lines if "--http-max-connections-per-ip" in line]
        assert 1 <= len(refusals) <= 3, refusals
        assert metric(relay.urls["metrics"], "relay_http_refused_per_ip_total") == 20


def register_node(url: str, node_id: str, advertise_url: str) -> None:
    async def run() -> None:
        store = await Store.open(url)
        try:
            await store.register_node(node_id, advertise_url)
        finally:
            await store.close()
    asyncio.run(run())


def ask(relay: RelayProcess, source: str, target: str, hop: bool) -> bytes:
    sock = socket.create_connection(address(relay), timeout=10, source_address=(source, 0))
    try:
        sock.sendall(b"GET %s HTTP/1.1\r\nHost: relay\r\n%sConnection: close\r\n\r\n" % (
            target.encode(), f"{HOP_HEADER}: 1\r\n".encode() if hop else b""))
        return read_response(sock)
    finally:
        sock.close()


def test_a_live_nodes_hop_requests_pass_the_per_address_cap(
        postgres: PostgresCluster, tmp_path: Path) -> None:
    url = postgres.create_database()
    # Another node, live for the test's length, advertised at 127.0.0.2: Relay reads the
    # live nodes at start (and with each heartbeat).
    register_node(url, "node-b", "http://127.0.0.2:8080")
    with relay_serving(tmp_path / "data", "--database-url", url, "--node-timeout", "60",
                       "--http-max-connections-per-ip", "2",
                       "--http-header-timeout", "120") as relay:
        sockets = open_slow(relay, 2, source="127.0.0.2") + open_slow(relay, 2,
                                                                     source="127.0.0.3")
        try:
            # The node's address, over its share: a hop request is answered, by the lean
            # server (a playlist) and by the API behind it (/healthz).
            for target, status in (("/NoSuchId1.m3u8", b"404"), ("/healthz", b"200")):
                answer = ask(relay, "127.0.0.2", target, hop=True)
                assert answer.startswith(b"HTTP/1.1 " + status), (target, answer)
            # Without the header: the per-address 503.
            refused = ask(relay, "127.0.0.2", "/healthz", hop=False)
            assert refused.startswith(b"HTTP/1.1 503 "), refused
            # A stranger's hop header: refused on accept.
            stranger = ask(relay, "127.0.0.3", "/healthz", hop=True)
            assert stranger.startswith(b"HTTP/1.1 503 "), stranger
            assert not any(is_closed(sock) for sock in sockets)
        finally:
            close_all(sockets)
        metrics = relay.urls["metrics"]
        assert metric(metrics, "relay_http_node_exemptions_total") == 2
        assert metric(metrics, "relay_http_refused_per_ip_total") == 2
        assert metric(metrics, "relay_node_live_nodes") == 2


@needs_ffmpeg
@pytest.mark.parametrize("flag", ["--hls-max-held-requests",
                                  "--hls-max-held-requests-per-stream"])
def test_held_requests_beyond_a_cap_are_503_with_retry_after(tmp_path: Path,
                                                             flag: str) -> None:
    with relay_serving(tmp_path / "data", flag, "2") as relay, \
            pushing(relay, 60, latency_mode="low") as live, http(relay) as client:
        newest = last_msn(parse_media_playlist(client.get(live.media).text))

        def held() -> tuple[int, str, float]:
            with httpx.Client(base_url=relay.http_url, timeout=30) as own:
                started = time.monotonic()
                response = own.get(live.media, params={"_HLS_msn": str(newest + 2)})
                return (response.status_code, response.headers.get("retry-after", ""),
                        time.monotonic() - started)

        with ThreadPoolExecutor(3) as pool:
            answers = list(pool.map(lambda _: held(), range(3)))
        refused = [a for a in answers if a[:2] == (503, "1")]
        # One was refused, at once; the two held were served (or, if the encoder fell
        # behind, timed out: 503 without Retry-After, after being held).
        assert len(refused) == 1 and refused[0][2] < 2.0, answers
        assert all(a[0] == 200 or (a[0] == 503 and a[1] == "") for a in answers
                   if a is not refused[0]), answers
        assert client.get(live.media).status_code == 200
        assert metric(relay.urls["metrics"], "relay_hls_held_refused_total") == 1
