"""`relay serve` as a subprocess on free ports, for tests that use it as a client would."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

LISTENING = re.compile(r"(\w+) listening on (\S+)")
READY = re.compile(r"relay \S+ ready|cannot start")


class RelayProcess:
    """Starts `relay serve` on 127.0.0.1 with port 0 everywhere, and reads the real URLs
    from its listener log lines."""

    def __init__(self, data_dir: Path, *, token: tuple[str, str] | None = None,
                 extra_args: list[str] | None = None, env: dict[str, str] | None = None):
        self.data_dir = data_dir
        self.token = token
        self.extra_args = extra_args or []
        self.extra_env = env or {}
        self.urls: dict[str, str] = {}
        self.lines: list[str] = []
        self._proc: subprocess.Popen[str] | None = None
        self._ready = threading.Event()
        self._reader: threading.Thread | None = None

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    @property
    def http_url(self) -> str:
        return self.urls["http"]

    def start(self, timeout: float = 30.0) -> RelayProcess:
        env = {**os.environ, **self.extra_env}
        if self.token:
            env["RELAY_TOKEN_ID"], env["RELAY_TOKEN_SECRET"] = self.token
        args = [sys.executable, "-m", "relay", "serve", "--host", "127.0.0.1",
                "--http-port", "0", "--metrics-port", "0", "--rtmp-port", "0",
                "--srt-port", str(free_udp_port()),
                # 0 turns HTTPS off (tests that give --tls-cert for RTMPS would otherwise
                # all bind 8443); a test of HTTPS gives a free_tcp_port.
                "--https-port", "0",
                "--data-dir", str(self.data_dir), *self.extra_args]
        self._proc = subprocess.Popen(args, env=env, stderr=subprocess.PIPE,
                                      stdout=subprocess.DEVNULL, text=True)
        self._reader = threading.Thread(target=self._read_log, daemon=True)
        self._reader.start()
        if not self._ready.wait(timeout):
            self.stop()
            raise AssertionError("relay serve did not become ready:\n" + self.log)
        if self._proc.poll() is not None:
            raise AssertionError(f"relay serve exited {self._proc.returncode}:\n{self.log}")
        return self

    def _read_log(self) -> None:
        assert self._proc is not None and self._proc.stderr is not None
        for line in self._proc.stderr:
            self.lines.append(line.rstrip("\n"))
            match = LISTENING.search(line)
            if match:
                self.urls[match.group(1)] = match.group(2)
            if READY.search(line):
                self._ready.set()
        self._proc.stderr.close()
        self._ready.set()

    @property
    def log(self) -> str:
        return "\n".join(self.lines)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        """Signal the server and return its exit status."""
        assert self._proc is not None
        if self._proc.poll() is None:
            self._proc.send_signal(sig)
        try:
            return self.wait(timeout)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self.wait(timeout)
            raise

    def wait(self, timeout: float = 20.0) -> int:
        """Wait for the exit and for the log reader to drain (and close) stderr."""
        assert self._proc is not None
        status = self._proc.wait(timeout)
        if self._reader is not None:
            self._reader.join(timeout)
        return status

    def __enter__(self) -> RelayProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self.stop()


def free_tcp_port() -> int:
    """A TCP port free at this moment, for `--https-port` (where 0 turns HTTPS off)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def free_udp_port() -> int:
    """A UDP port free at this moment. `--srt-port 0` turns SRT off (it does not ask the
    kernel for a port, since libsrt binds its own socket), so the tests pick one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for(predicate: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(predicate) and predicate():
            return
        time.sleep(0.05)
    raise AssertionError("condition not met in time")
