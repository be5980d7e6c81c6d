"""The SRT options: defaults, env vars, flags and their bounds."""

from __future__ import annotations

import pytest

from relay.config import (
    MAX_SRT_LATENCY,
    MIN_SRT_LATENCY,
    ConfigError,
)
from tests.unit.helpers.config import settings


def test_defaults() -> None:
    s = settings()
    assert (s.srt_port, s.srt_latency, s.srt_max_connections, s.srt_max_connections_per_ip,
            s.srt_idle_timeout) == (6001, 120, 1000, 20, 30.0)


def test_env_and_flags() -> None:
    s = settings("--srt-latency", "500", RELAY_SRT_PORT="0", RELAY_SRT_LATENCY="200",
                 RELAY_SRT_MAX_CONNECTIONS="50", RELAY_SRT_MAX_CONNECTIONS_PER_IP="5",
                 RELAY_SRT_IDLE_TIMEOUT="12.5")
    assert (s.srt_port, s.srt_latency, s.srt_max_connections, s.srt_max_connections_per_ip,
            s.srt_idle_timeout) == (0, 500, 50, 5, 12.5)
    assert settings(f"--srt-latency={MIN_SRT_LATENCY}").srt_latency == MIN_SRT_LATENCY
    assert settings(f"--srt-latency={MAX_SRT_LATENCY}").srt_latency == MAX_SRT_LATENCY


@pytest.mark.parametrize(("env", "value"), [
    ("RELAY_SRT_LATENCY", str(MIN_SRT_LATENCY - 1)),
    ("RELAY_SRT_LATENCY", str(MAX_SRT_LATENCY + 1)),
    ("RELAY_SRT_LATENCY", "0.5"),
    ("RELAY_SRT_PORT", "65536"),
    ("RELAY_SRT_MAX_CONNECTIONS", "0"),
    ("RELAY_SRT_MAX_CONNECTIONS_PER_IP", "0"),
    ("RELAY_SRT_IDLE_TIMEOUT", "0"),
])
def test_out_of_bounds_is_refused_naming_the_variable(env: str, value: str) -> None:
    with pytest.raises(ConfigError, match=env):
        settings(**{env: value})
