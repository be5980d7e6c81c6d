"""Peer processes: free ports, the URLs publishers push to, waiting until a peer listens,
stopping it."""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(port: int, process: subprocess.Popen[bytes], timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


def wait_udp_port(port: int, process: subprocess.Popen[bytes], timeout: float = 15) -> None:
    """Until a socket is bound to UDP `port` (/proc/net/udp lists it), or fail."""
    wanted = f":{port:04X}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the SRT receiver exited with {process.returncode}")
        for table in ("/proc/net/udp", "/proc/net/udp6"):
            lines = Path(table).read_text().splitlines()[1:]
            if any(line.split()[1].endswith(wanted) for line in lines):
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing bound UDP port {port} after {timeout} s")


def terminate(process: subprocess.Popen[Any] | None) -> None:
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)


def srt_caller_url(base: str, streamid: str, passphrase: str) -> str:
    """What an encoder pushes to (`base` is srt://HOST:PORT): ffmpeg's srt protocol passes
    the streamid and passphrase to libsrt as written; 1316 bytes = 7 TS packets per datagram."""
    return f"{base}?streamid={streamid}&passphrase={passphrase}&pkt_size=1316"

