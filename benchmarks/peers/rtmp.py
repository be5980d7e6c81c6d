"""The RTMP servers under test (Relay, nginx-rtmp with `hls on`, pyrtmp) and the
nginx-rtmp that the simulcast scenario pushes to (`RtmpSink`)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import httpx

from benchmarks.peers.processes import free_port, srt_caller_url, terminate, wait_port
from testkit.relay_process import RelayProcess

ROOT = Path(__file__).resolve().parents[2]
PYRTMP_PYTHON = ROOT / ".make" / "pyrtmp-venv" / "bin" / "python"
NGINX = Path("/usr/sbin/nginx")
NGINX_RTMP_MODULE = Path("/usr/lib/nginx/modules/ngx_rtmp_module.so")
TOKEN = ("bench-suite", "bench-suite-secret-0123456789-abcdefghij")


class Server:
    """A server under test: started, given publish URLs, measured by pid, stopped."""

    name = ""

    def start(self, work: Path) -> None:
        raise NotImplementedError

    @property
    def pid(self) -> int:
        raise NotImplementedError

    def publish_urls(self, count: int) -> list[str]:
        raise NotImplementedError

    def rtmp_address(self) -> tuple[str, int]:
        raise NotImplementedError

    def stream_keys(self, count: int) -> list[str]:
        return [f"stream{i}" for i in range(count)]

    def check_output(self, count: int) -> str:
        """"" when every stream produced what it should (HLS), else what is missing."""
        return ""

    def stop(self) -> None:
        raise NotImplementedError

    def window_bytes(self) -> int | None:
        """Media bytes held in memory for live playlists (None: the server keeps none)."""
        return None


class RelayServer(Server):
    name = "relay"

    def __init__(self) -> None:
        self.process: RelayProcess | None = None
        self.streams: list[dict[str, Any]] = []

    def start(self, work: Path) -> None:
        self.process = RelayProcess(work / "relay-data", token=TOKEN,
                                    extra_args=["--rtmp-max-connections", "100000",
                                                # every publisher is on 127.0.0.1
                                                "--rtmp-max-connections-per-ip", "100000",
                                                ]).start()
        self.streams = []

    @property
    def pid(self) -> int:
        assert self.process is not None and self.process._proc is not None
        return self.process._proc.pid

    def rtmp_address(self) -> tuple[str, int]:
        assert self.process is not None
        host, port = self.process.urls["rtmp"].removeprefix("rtmp://").split("/")[0].rsplit(
            ":", 1)
        return host, int(port)

    def create_streams(self, count: int) -> list[dict[str, Any]]:
        """`count` more `low` streams, recorded, through the API."""
        assert self.process is not None
        created = []
        with httpx.Client(base_url=self.process.http_url, auth=TOKEN, timeout=15) as api:
            for _ in range(count):
                created.append(api.post("/video/v1/live-streams", json={
                    "playback_policies": ["public"],
                    "new_asset_settings": {"playback_policies": ["public"]},
                    "latency_mode": "low"}).json()["data"])
        self.streams += created
        return created

    def publish_urls(self, count: int) -> list[str]:
        assert self.process is not None
        return [f"{self.process.urls['rtmp']}/{s['stream_key']}"
                for s in self.create_streams(count)]

    def srt_publish_urls(self, count: int) -> list[str]:
        """SRT caller URLs as Mux documents them, with each stream's own passphrase."""
        assert self.process is not None
        return [srt_caller_url(self.process.urls["srt"], s["stream_key"], s["srt_passphrase"])
                for s in self.create_streams(count)]

    def stream_keys(self, count: int) -> list[str]:
        return [url.rsplit("/", 1)[1] for url in self.publish_urls(count)]

    def check_output(self, count: int) -> str:
        assert self.process is not None
        try:
            with httpx.Client(base_url=self.process.http_url, timeout=15) as client:
                missing = [s["id"] for s in self.streams[:count]
                           if client.get(f"/{s['playback_ids'][0]['id']}/rendition.m3u8")
                           .status_code != 200]
        except httpx.HTTPError as exc:
            return f"playlists did not answer in time ({type(exc).__name__})"
        return f"{len(missing)} stream(s) without a playlist" if missing else ""

    def window_bytes(self) -> int | None:
        assert self.process is not None
        text = httpx.get(self.process.urls["metrics"], timeout=15).text
        for line in text.splitlines():
            if line.startswith("relay_hls_live_window_bytes "):
                return int(float(line.split()[1]))
        return None

    def stop(self) -> None:
        if self.process is not None:
            # A clean stop ends every session and finalizes its recording: give thousands
            # of sessions the time that takes.
            self.process.stop(timeout=300)
            self.process = None


class PeerProcess(Server):
    """A peer server run as a plain subprocess on a free port; streams are named streamN."""

    def __init__(self) -> None:
        self.process: subprocess.Popen[bytes] | None = None
        self.port = 0

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def rtmp_address(self) -> tuple[str, int]:
        return "127.0.0.1", self.port

    def publish_urls(self, count: int) -> list[str]:
        return [f"rtmp://127.0.0.1:{self.port}/app/stream{i}" for i in range(count)]

    def stop(self) -> None:
        terminate(self.process)
        self.process = None


class NginxServer(PeerProcess):
    name = "nginx-rtmp"

    def __init__(self) -> None:
        super().__init__()
        self.hls_dir = Path()

    @staticmethod
    def available() -> str:
        if not NGINX.exists() or not NGINX_RTMP_MODULE.exists():
            return "nginx with its RTMP module is not installed (make bench installs it)"
        return ""

    def start(self, work: Path) -> None:
        prefix = work / "nginx"
        self.hls_dir = prefix / "hls"
        self.hls_dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        # HLS as Relay's reduced mode would be: 2 s fragments, a 30 s playlist.
        self.process = start_nginx(prefix, f"""
    listen 127.0.0.1:{self.port};
    chunk_size 4096;
    application app {{
      live on;
      record off;
      hls on;
      hls_path {self.hls_dir};
      hls_fragment 2s;
      hls_playlist_length 30s;
    }}""", connections=8192)
        wait_port(self.port, self.process)


    def check_output(self, count: int) -> str:
        missing = [i for i in range(count) if not (self.hls_dir / f"stream{i}.m3u8").exists()]
        return f"{len(missing)} stream(s) without a playlist" if missing else ""


class PyrtmpServer(PeerProcess):
    name = "pyrtmp"

    @staticmethod
    def available() -> str:
        if not PYRTMP_PYTHON.exists():
            return f"pyrtmp's venv {PYRTMP_PYTHON.parent.parent} is missing (make bench makes it)"
        return ""

    def start(self, work: Path) -> None:
        self.port = free_port()
        self.process = subprocess.Popen(
            [str(PYRTMP_PYTHON), str(ROOT / "benchmarks" / "peers" / "pyrtmp_server.py"),
             str(self.port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port, self.process)


def start_nginx(prefix: Path, rtmp_server: str, http: str = "", *,
                 connections: int = 1024) -> subprocess.Popen[bytes]:
    """nginx with the RTMP module as one process (no master, so that its CPU and RSS are
    the server's) with `rtmp_server` inside `rtmp { server { ... } }`."""
    prefix.mkdir(parents=True, exist_ok=True)
    conf = prefix / "nginx.conf"
    conf.write_text(f"""
load_module {NGINX_RTMP_MODULE};
daemon off;
master_process off;
worker_processes 1;
error_log {prefix}/error.log warn;
pid {prefix}/nginx.pid;
events {{ worker_connections {connections}; }}
rtmp {{
  server {{
{rtmp_server}
  }}
}}
{http}
""")
    return subprocess.Popen([str(NGINX), "-p", str(prefix), "-c", str(conf)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


class RtmpSink:
    """The targets' server: nginx-rtmp taking every push (application `live`, nothing kept),
    with its stat page (`rtmp_stat all`) telling what each stream name has received."""

    def __init__(self) -> None:
        self.process: subprocess.Popen[bytes] | None = None
        self.port = self.stat_port = 0

    def start(self, work: Path) -> None:
        self.port, self.stat_port = free_port(), free_port()
        self.process = start_nginx(
            work / "sink", f"    listen 127.0.0.1:{self.port};\n    chunk_size 4096;\n"
            "    application live { live on; }",
            f"http {{ access_log off; server {{ listen 127.0.0.1:{self.stat_port}; "
            "location /stat { rtmp_stat all; } } }")
        wait_port(self.port, self.process)
        wait_port(self.stat_port, self.process)

    def url(self, name: str) -> str:
        return f"rtmp://127.0.0.1:{self.port}/live/{name}"

    def bytes_in(self) -> dict[str, int]:
        """Bytes received so far per stream name being published now."""
        xml = httpx.get(f"http://127.0.0.1:{self.stat_port}/stat", timeout=10).text
        return {name: int(count) for name, count in re.findall(
            r"<stream>\s*<name>([^<]*)</name>.*?<bytes_in>(\d+)</bytes_in>", xml, re.S)}

    def stop(self) -> None:
        terminate(self.process)
        self.process = None

