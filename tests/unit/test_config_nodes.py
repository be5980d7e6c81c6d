"""The node options (issue 19): defaults, env vars, flags, bounds, and the default node id
and advertised URL."""

from __future__ import annotations

import pytest

from relay.cluster import default_advertise_url, default_node_id
from relay.config import (
    NODE_ID_PATTERN,
    ConfigError,
)
from tests.unit.helpers.config import settings


def test_defaults() -> None:
    s = settings()
    assert (s.node_id, s.advertise_url, s.node_timeout) == (None, None, 10.0)


def test_env_and_flags() -> None:
    s = settings("--node-id", "edge-1", RELAY_NODE_ID="ignored",
                 RELAY_ADVERTISE_URL="http://10.0.0.5:8080/", RELAY_NODE_TIMEOUT="4.5")
    assert (s.node_id, s.advertise_url, s.node_timeout) == (
        "edge-1", "http://10.0.0.5:8080", 4.5)


@pytest.mark.parametrize("argv", [
    ("--node-id", "has space"), ("--node-id", "x" * 65), ("--node-id", "caf\u00e9"),
    ("--advertise-url", "10.0.0.5:8080"), ("--advertise-url", "ftp://host/"),
    ("--node-timeout", "0.5"), ("--node-timeout", "301"),
])
def test_bad_values_name_the_option(argv: tuple[str, str]) -> None:
    with pytest.raises(ConfigError, match=argv[0]):
        settings(*argv)


def test_default_node_id_is_host_and_pid_and_valid() -> None:
    assert default_node_id("edge-3.example", 4242) == "edge-3.example-4242"
    assert default_node_id("host name/with:odd", 7) == "host-name-with-odd-7"
    long = default_node_id("h" * 100, 123456)
    assert len(long) == 64 and long.endswith("-123456")
    assert NODE_ID_PATTERN.fullmatch(default_node_id())


def test_default_advertise_url_is_the_http_listener() -> None:
    assert default_advertise_url("127.0.0.1", 8080) == "http://127.0.0.1:8080"
    assert default_advertise_url("::1", 8080) == "http://[::1]:8080"
    assert default_advertise_url("0.0.0.0", 8081, hostname="edge-3") == "http://edge-3:8081"
    assert default_advertise_url("::", 8081, hostname="edge-3") == "http://edge-3:8081"
