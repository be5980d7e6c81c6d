"""The SRT receivers under test: Relay and one `srt-live-transmit` per stream."""

from __future__ import annotations

import secrets
import shutil
import subprocess
import time
from pathlib import Path

from benchmarks.peers.processes import srt_caller_url, terminate, wait_udp_port
from benchmarks.peers.rtmp import RelayServer
from testkit.relay_process import free_udp_port

#: Receiver latency (ms) given to srt-live-transmit: Relay's --srt-latency default, so both
#: receivers keep the same buffer and answer losses in the same time.
SRT_LATENCY_MS = 120
#: How long Relay's playlists may take to answer after an SRT measurement window (seconds);
#: the first segment is complete about one GOP (2 s) after the first keyframe.
SRT_OUTPUT_WAIT = 10.0


def srt_live_transmit() -> str | None:
    return shutil.which("srt-live-transmit")


def written_bytes(pid: int) -> int:
    """Bytes the process passed to write() and kin (`wchar`), /dev/null included."""
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("wchar:"):
            return int(line.split()[1])
    return 0


class SrtReceiver:
    """An SRT ingest under test: takes `count` encrypted streams, measured over all its
    processes."""

    name = ""

    def start(self, work: Path, count: int) -> list[str]:
        """Start; the caller URLs of `count` streams."""
        raise NotImplementedError

    @property
    def pids(self) -> list[int]:
        raise NotImplementedError

    def written(self) -> int | None:
        """Bytes written out so far, where that is the received stream (None: not known)."""
        return None

    def check_output(self, count: int) -> str:
        """"" when every stream produced what it should, else what is missing."""
        return ""

    def stop(self) -> None:
        raise NotImplementedError


class RelaySrt(SrtReceiver):
    """`relay serve` with `low` streams (LL-HLS and recording on), pushed to over SRT."""

    name = "relay"

    def __init__(self) -> None:
        self.server = RelayServer()

    def start(self, work: Path, count: int) -> list[str]:
        self.server.start(work)
        return self.server.srt_publish_urls(count)

    @property
    def pids(self) -> list[int]:
        return [self.server.pid]

    def check_output(self, count: int) -> str:
        deadline = time.monotonic() + SRT_OUTPUT_WAIT
        while (problem := self.server.check_output(count)) and time.monotonic() < deadline:
            time.sleep(0.25)
        return problem

    def stop(self) -> None:
        self.server.stop()


class SrtLiveTransmitPeer(SrtReceiver):
    """One `srt-live-transmit` (Debian's srt-tools) listener per stream, with a passphrase as
    Relay's streams have, writing the TS it receives to stdout on /dev/null: libsrt's receive
    path alone, no demuxing, no packaging."""

    name = "srt-live-transmit"

    def __init__(self) -> None:
        self.processes: list[subprocess.Popen[bytes]] = []

    @staticmethod
    def available() -> str:
        if srt_live_transmit() is None:
            return "srt-live-transmit is not installed (Debian's srt-tools; make installs it)"
        return ""

    def start(self, work: Path, count: int) -> list[str]:
        program = srt_live_transmit()
        assert program is not None
        urls = []
        for index in range(count):
            port = free_udp_port()
            passphrase = secrets.token_hex(16)
            process = subprocess.Popen(
                [program, "-q", f"srt://127.0.0.1:{port}?mode=listener&passphrase={passphrase}"
                 f"&latency={SRT_LATENCY_MS}", "file://con"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            self.processes.append(process)
            wait_udp_port(port, process)
            urls.append(srt_caller_url(f"srt://127.0.0.1:{port}", f"stream{index}", passphrase))
        return urls

    @property
    def pids(self) -> list[int]:
        return [process.pid for process in self.processes]

    def written(self) -> int | None:
        return sum(written_bytes(pid) for pid in self.pids)

    def check_output(self, count: int) -> str:
        exited = sum(process.poll() is not None for process in self.processes)
        return f"{exited} srt-live-transmit process(es) exited" if exited else ""

    def stop(self) -> None:
        for process in self.processes:
            terminate(process)
        self.processes = []

