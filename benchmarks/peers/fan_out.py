"""The simulcast fan-out servers under test: Relay with simulcast targets and nginx-rtmp
with `push` lines."""

from __future__ import annotations

import subprocess
from pathlib import Path

import httpx

from benchmarks.peers.processes import free_port, terminate, wait_port
from benchmarks.peers.rtmp import TOKEN, RelayServer, start_nginx


class FanOut:
    """A server under test that takes one publisher and pushes it to `count` targets."""

    name = ""

    def start(self, work: Path, targets: list[str]) -> str:
        """Start, pushing to each of `targets` (rtmp://.../live/NAME); the publish URL."""
        raise NotImplementedError

    @property
    def pid(self) -> int:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError


class RelayFanOut(FanOut):
    """`relay serve` with one `low` stream (LL-HLS and recording on) whose simulcast targets
    are the sink's stream names."""

    name = "relay"

    def __init__(self) -> None:
        self.server = RelayServer()

    def start(self, work: Path, targets: list[str]) -> str:
        self.server.start(work)
        process = self.server.process
        assert process is not None
        with httpx.Client(base_url=process.http_url, auth=TOKEN, timeout=15) as api:
            stream = api.post("/video/v1/live-streams", json={
                "playback_policies": ["public"],
                "new_asset_settings": {"playback_policies": ["public"]},
                "latency_mode": "low", "reconnect_window": 1,
                "simulcast_targets": [{"url": url.rsplit("/", 1)[0],
                                       "stream_key": url.rsplit("/", 1)[1]}
                                      for url in targets]}).json()["data"]
        return f"{process.urls['rtmp']}/{stream['stream_key']}"

    @property
    def pid(self) -> int:
        return self.server.pid

    def stop(self) -> None:
        self.server.stop()


class NginxFanOut(FanOut):
    """nginx-rtmp doing the same fan-out itself: an application (`live on`, no HLS) with one
    `push rtmp://...` line per target."""

    name = "nginx-rtmp"

    def __init__(self) -> None:
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, work: Path, targets: list[str]) -> str:
        port = free_port()
        pushes = "".join(f"      push {url};\n" for url in targets)
        self.process = start_nginx(
            work / "nginx-fan-out", f"    listen 127.0.0.1:{port};\n    chunk_size 4096;\n"
            f"    application app {{\n      live on;\n{pushes}    }}")
        wait_port(port, self.process)
        return f"rtmp://127.0.0.1:{port}/app/stream0"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def stop(self) -> None:
        terminate(self.process)
        self.process = None

