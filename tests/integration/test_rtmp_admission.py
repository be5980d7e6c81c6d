"""Hostile peers against `relay serve` over real sockets: idle connections (plain and stuck in
their TLS handshake) from one address or from many, floods of refused connections, and wrong
stream keys; an honest ffmpeg encoder must still get in, at once. Small caps via flags keep
these fast. Loopback is all of 127/8 on Linux, so other "addresses" are 127.0.0.x; ffmpeg
reaches the relay from one of those through testkit/peers.Forwarder."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from testkit.encoders import ffmpeg_publish, finish, needs_ffmpeg
from testkit.peers import (
    TLS_HELLO_START,
    close_all,
    forwarded,
    idle_connections,
    metric,
    try_publish,
)
from testkit.relay_process import RelayProcess
from testkit.tls import self_signed
from tests.integration.helpers.rtmp_ingest import (
    create_stream,
    start_relay,
    wait_status,
    wait_until,
)

pytestmark = needs_ffmpeg


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture(scope="module")
def tls_args(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """RTMPS with a self-signed certificate (ffmpeg does not verify it by default)."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = self_signed(folder)
    return ["--rtmps-port", "0", "--tls-cert", str(cert), "--tls-key", str(key)]


@pytest.fixture
def relays() -> Iterator[list[RelayProcess]]:
    started: list[RelayProcess] = []
    yield started
    for relay in started:
        assert relay.stop() == 0, relay.log


def counter(relay: RelayProcess, name: str) -> float:
    return metric(relay.urls["metrics"], name)


def test_idle_connections_from_one_address_leave_room_for_another(
        data_dir: Path, tls_args: list[str], relays: list[RelayProcess]) -> None:
    relay = start_relay(data_dir, *tls_args, "--rtmp-max-connections", "100",
                        "--rtmp-max-connections-per-ip", "40")
    relays.append(relay)
    stream = create_stream(relay)
    # 300 idle connections from 127.0.0.1: first half stuck in their TLS handshake (counted
    # from accept like the rest), then plain ones that never send a byte.
    held = idle_connections(relay.urls["rtmps"], 150, first_bytes=TLS_HELLO_START)
    held += idle_connections(relay.urls["rtmp"], 150)
    try:
        wait_until(lambda: counter(relay, "relay_rtmp_connections_refused_per_ip_total")
                   == 260, what="260 refusals over the per-address cap")
        assert counter(relay, "relay_rtmp_open_connections") == 40
        with forwarded(relay.urls["rtmp"], "127.0.0.2") as url:
            encoder = ffmpeg_publish(f"{url}/{stream['stream_key']}", seconds=4)
            wait_status(relay, stream["id"], "active")
            code, err = finish(encoder)
        assert code == 0, err
        assert "rtmp connected from 127.0.0.2" in relay.log
        assert counter(relay, "relay_rtmp_connections_refused_total") == 0
    finally:
        close_all(held)


def test_many_addresses_filling_every_slot_make_room_for_a_newcomer(
        data_dir: Path, tls_args: list[str], relays: list[RelayProcess]) -> None:
    """The per-address cap alone cannot help when many addresses fill the global cap: then
    the newcomer takes the slot of the oldest idle connection of the biggest holder."""
    relay = start_relay(data_dir, *tls_args, "--rtmp-max-connections", "30",
                        "--rtmp-max-connections-per-ip", "10")
    relays.append(relay)
    stream = create_stream(relay)
    held = []
    try:
        for source in ("127.0.0.1", "127.0.0.2", "127.0.0.3"):
            held += idle_connections(relay.urls["rtmps"], 5, source=source,
                                     first_bytes=TLS_HELLO_START)
            held += idle_connections(relay.urls["rtmp"], 5, source=source)
        wait_until(lambda: counter(relay, "relay_rtmp_open_connections") == 30,
                   what="all 30 slots taken")
        # One more from a full address is refused; every slot is taken.
        held += idle_connections(relay.urls["rtmp"], 1, source="127.0.0.3")
        wait_until(lambda: counter(relay, "relay_rtmp_connections_refused_per_ip_total") == 1,
                   what="a refusal over the per-address cap")
        # The encoder, over RTMPS, from an address holding nothing: it displaces one idle
        # connection (the idle ones would hold their slots for 10 s) and publishes.
        with forwarded(relay.urls["rtmps"], "127.0.0.9") as url:
            encoder = ffmpeg_publish(f"{url}/{stream['stream_key']}", seconds=4)
            wait_status(relay, stream["id"], "active")
            code, err = finish(encoder)
        assert code == 0, err
        assert "connected from 127.0.0.9" in relay.log  # through the RTMPS port
        assert counter(relay, "relay_rtmp_connections_evicted_total") >= 1
        assert counter(relay, "relay_rtmp_connections_refused_total") == 0
    finally:
        close_all(held)


def test_a_flood_of_refused_connections_writes_a_bounded_log(
        data_dir: Path, relays: list[RelayProcess]) -> None:
    relay = start_relay(data_dir, "--rtmp-max-connections-per-ip", "2",
                        "--log-repeat-interval", "2")
    relays.append(relay)
    held = idle_connections(relay.urls["rtmp"], 2)
    try:
        held += idle_connections(relay.urls["rtmp"], 200)
        wait_until(lambda: counter(relay, "relay_rtmp_connections_refused_per_ip_total")
                   == 200, what="200 refusals")
        time.sleep(2.5)  # one repeat interval: the next refusal is written, with the count
        held += idle_connections(relay.urls["rtmp"], 1)
        wait_until(lambda: "more like it" in relay.log, what="the line with the count")
        lines = [line for line in relay.log.splitlines() if "refused: 127.0.0.1 holds" in line]
        assert 2 <= len(lines) <= 4, lines  # the burst may straddle one interval
        held_back = sum(int(n) for n in re.findall(r"and (\d+) more like it",
                                                   "\n".join(lines)))
        assert len(lines) + held_back == 201, lines
        assert counter(relay, "relay_rtmp_log_lines_suppressed_total") == held_back
    finally:
        close_all(held)


def test_wrong_keys_do_not_delay_a_right_key_from_the_same_address(
        data_dir: Path, relays: list[RelayProcess]) -> None:
    """A NAT or proxy is one address for many encoders: a neighbour's wrong keys slow down
    (or go unanswered) but an honest encoder behind the same address publishes at once,
    well inside the 10 s it has from connecting to publishing."""
    relay = start_relay(data_dir)
    relays.append(relay)
    stream = create_stream(relay)

    async def guess() -> list[str]:
        return list(await asyncio.gather(*(try_publish(relay.urls["rtmp"], f"wrong-{n}",
                                                       within=2) for n in range(12))))

    outcomes = asyncio.run(guess())
    assert "published" not in outcomes
    assert "refused: unknown stream key" in outcomes  # the first few, at once
    assert "closed" in outcomes  # beyond the waiting ones: no answer at all
    assert counter(relay, "relay_ingest_auth_failures_total") == 12
    assert counter(relay, "relay_ingest_unanswered_refusals_total") >= 1
    # Twelve failures: before, the next attempt from 127.0.0.1 waited 30 s, key or no key.
    encoder = ffmpeg_publish(f"{relay.urls['rtmp']}/{stream['stream_key']}", seconds=4)
    wait_status(relay, stream["id"], "active")
    code, err = finish(encoder)
    assert code == 0, err
    assert "rtmp connected from 127.0.0.1" in relay.log
    refusal_lines = [line for line in relay.log.splitlines() if "publish refused" in line]
    assert 1 <= len(refusal_lines) <= 4, refusal_lines  # one per cause per 10 s
