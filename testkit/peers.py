"""Hostile and honest RTMP peers for tests against `relay serve`: idle sockets, TLS handshakes
that never finish, publishes with wrong keys, and a forwarder that lets ffmpeg connect from
another loopback address (ffmpeg 5.1 has no option to choose its source address)."""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import subprocess
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from relay.rtmp.client import ClientSession, Published, Refused

# The first bytes of a TLS record carrying a ClientHello (RFC 8446 5.1): the server waits
# for the rest, so the connection stays in its TLS handshake.
TLS_HELLO_START = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"


def host_port(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None, url
    return parts.hostname, parts.port


def idle_connections(url: str, count: int, *, source: str = "127.0.0.1",
                     first_bytes: bytes = b"") -> list[socket.socket]:
    """Open `count` connections from `source` to the listener of `url` and send at most
    `first_bytes` on each; the server may close any of them at once (a refusal)."""
    target = host_port(url)
    opened = []
    for _ in range(count):
        sock = socket.create_connection(target, timeout=10, source_address=(source, 0))
        if first_bytes:
            with contextlib.suppress(OSError):
                sock.sendall(first_bytes)
        opened.append(sock)
    return opened


def close_all(sockets: list[socket.socket]) -> None:
    for sock in sockets:
        sock.close()


def metric(metrics_url: str, name: str) -> float:
    """One sample of /metrics, by its full name (counters end in _total)."""
    text = httpx.get(metrics_url, timeout=10).text
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    assert match is not None, f"{name} not in /metrics"
    return float(match.group(1))


async def try_publish(url: str, key: str, *, source: str = "127.0.0.1",
                      within: float = 30) -> str:
    """Publish on `key` with Relay's own client; say what came of it: "published",
    "refused: <description>", "closed" (the server hung up without an answer) or "waiting"
    (no answer `within` seconds)."""
    host, port = host_port(url)
    reader, writer = await asyncio.open_connection(host, port, local_addr=(source, 0))
    client = ClientSession(tc_url=url, stream_key=key)
    writer.write(client.initial_bytes())
    try:
        async with asyncio.timeout(within):
            while True:
                try:
                    data = await reader.read(65536)
                except ConnectionError:
                    data = b""
                if not data:
                    return "closed"
                client.receive_data(data)
                writer.write(client.data_to_send())
                event = client.next_event()
                if isinstance(event, Published):
                    return "published"
                if isinstance(event, Refused):
                    return f"refused: {event.description}"
    except TimeoutError:
        return "waiting"
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


class Forwarder:
    """A TCP forwarder on 127.0.0.1 whose upstream connections leave from `source`, so that
    a client that cannot choose its source address (ffmpeg) reaches `target` from there."""

    def __init__(self, target: tuple[str, int], source: str) -> None:
        self.target, self.source = target, source
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []

    def _run(self) -> None:
        self._loop.run_until_complete(self._start())
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(self._shutdown())
        self._loop.close()

    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._forward, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _shutdown(self) -> None:
        assert self._server is not None
        self._server.close()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for writer in self._writers:
            writer.close()
        await self._server.wait_closed()

    async def _forward(self, reader: asyncio.StreamReader,
                       writer: asyncio.StreamWriter) -> None:
        self._writers.append(writer)
        try:
            up_reader, up_writer = await asyncio.open_connection(
                *self.target, local_addr=(self.source, 0))
        except OSError:
            writer.close()
            return
        self._writers.append(up_writer)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except ConnectionError:
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    def url(self, scheme: str, path: str) -> str:
        return f"{scheme}://127.0.0.1:{self.port}{path}"

    def __enter__(self) -> Forwarder:
        self._thread.start()
        assert self._ready.wait(10), "the forwarder did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


@contextlib.contextmanager
def forwarded(url: str, source: str) -> Iterator[str]:
    """`url` (rtmp[s]://HOST:PORT/app) as reached through a forwarder leaving from `source`."""
    parts = urlsplit(url)
    with Forwarder(host_port(url), source) as forwarder:
        yield forwarder.url(parts.scheme, parts.path)


NGINX = "/usr/sbin/nginx"
NGINX_RTMP_MODULE = "/usr/lib/nginx/modules/ngx_rtmp_module.so"


def start_nginx(prefix: Path, conf: Path, ports: Iterable[int],
                extra_args: Sequence[str] = ()) -> subprocess.Popen[bytes]:
    """Run nginx on `conf` (its stderr into `prefix`/stderr.log) and wait until it listens
    on each TCP port of `ports`: until the port can no longer be bound, since a test
    connection would be passed on to the upstream behind it."""
    with open(prefix / "stderr.log", "wb") as stderr:
        process = subprocess.Popen([NGINX, "-p", str(prefix), "-c", str(conf), *extra_args],
                                   stdout=subprocess.DEVNULL, stderr=stderr)
    deadline = time.monotonic() + 15
    for port in ports:
        while _port_free(port):
            if process.poll() is not None or time.monotonic() > deadline:
                stop_nginx(process)
                raise AssertionError("nginx did not start: " + nginx_log(prefix))
            time.sleep(0.05)
    return process


def stop_nginx(process: subprocess.Popen[bytes] | None, *, kill: bool = False) -> None:
    """SIGTERM (SIGKILL when `kill`, or after 10 s) and reap."""
    if process is None:
        return
    if not kill:
        process.terminate()
        try:
            process.wait(10)
            return
        except subprocess.TimeoutExpired:
            pass
    process.kill()
    process.wait(10)


def nginx_log(prefix: Path) -> str:
    """What nginx wrote under `prefix`: its stderr, then its error log."""
    logs = [prefix / "stderr.log", prefix / "error.log"]
    return "".join(log.read_text() for log in logs if log.exists())


def _port_free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


class NginxRtmp:
    """nginx with Debian's RTMP module as an RTMP server the tests push to: its own config
    and prefix under `prefix`, one application `live` that records every stream it receives
    (`record all`, one FLV per stream name in `records`), on 127.0.0.1:`port`."""

    def __init__(self, prefix: Path, port: int) -> None:
        self.prefix = prefix
        self.port = port
        self.records = prefix / "rec"
        self.process: subprocess.Popen[bytes] | None = None

    @staticmethod
    def available() -> bool:
        return Path(NGINX).exists() and Path(NGINX_RTMP_MODULE).exists()

    @property
    def url(self) -> str:
        return f"rtmp://127.0.0.1:{self.port}/live"

    def start(self) -> NginxRtmp:
        self.records.mkdir(parents=True, exist_ok=True)
        conf = self.prefix / "nginx.conf"
        conf.write_text(f"""
load_module {NGINX_RTMP_MODULE};
daemon off;
master_process off;
worker_processes 1;
error_log {self.prefix}/error.log info;
pid {self.prefix}/nginx.pid;
events {{ worker_connections 64; }}
rtmp {{
  server {{
    listen 127.0.0.1:{self.port};
    chunk_size 4096;
    application live {{
      live on;
      record all;
      record_path {self.records};
      record_unique on;
    }}
  }}
}}
""")
        self.process = start_nginx(self.prefix, conf, [self.port])
        return self

    def kill(self) -> None:
        stop_nginx(self.process, kill=True)
        self.process = None

    def stop(self) -> None:
        stop_nginx(self.process)
        self.process = None

    def recordings(self) -> list[Path]:
        return sorted(self.records.glob("*.flv"))


NGINX_STREAM_MODULE = "/usr/lib/nginx/modules/ngx_stream_module.so"


def _bind(route: Route) -> str:
    return f"\n    proxy_bind {route.bind};" if route.bind else ""


@dataclass(frozen=True)
class Route:
    """One server of `NginxProxy`: where it passes connections or requests on, whether a
    stream server writes a PROXY header first, and the source address of its upstream
    connections (`proxy_bind`; nginx's default is 127.0.0.1)."""

    upstream: int
    proxy_protocol: bool = True
    bind: str | None = None


class NginxProxy:
    """nginx as the load balancer in front of Relay: its `stream` module passing TCP
    connections on (with `proxy_protocol on`, each upstream connection starts with a PROXY
    v1 line stating the client's address), and its `http` module passing requests on with
    `X-Forwarded-For: $proxy_add_x_forwarded_for`. Its own config and prefix under `prefix`;
    `streams` and `http` map a listening port on 127.0.0.1 to its `Route`."""

    def __init__(self, prefix: Path, *, streams: dict[int, Route],
                 http: dict[int, Route] | None = None) -> None:
        self.prefix = prefix
        self.streams = streams
        self.http = http or {}
        self.process: subprocess.Popen[bytes] | None = None

    @staticmethod
    def available() -> bool:
        return Path(NGINX).exists() and Path(NGINX_STREAM_MODULE).exists()

    def start(self) -> NginxProxy:
        self.prefix.mkdir(parents=True, exist_ok=True)
        conf = self.prefix / "nginx.conf"
        streams = "".join(f"""
  server {{
    listen 127.0.0.1:{port};
    proxy_pass 127.0.0.1:{route.upstream};
    proxy_protocol {"on" if route.proxy_protocol else "off"};{_bind(route)}
  }}""" for port, route in self.streams.items())
        http = "".join(f"""
  server {{
    listen 127.0.0.1:{port};
    location / {{
      proxy_pass http://127.0.0.1:{route.upstream};
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;{_bind(route)}
    }}
  }}""" for port, route in self.http.items())
        conf.write_text(f"""
load_module {NGINX_STREAM_MODULE};
daemon off;
master_process off;
worker_processes 1;
error_log {self.prefix}/error.log info;
pid {self.prefix}/nginx.pid;
events {{ worker_connections 256; }}
stream {{{streams}
}}
http {{
  access_log off;
  client_body_temp_path {self.prefix}/body;
  proxy_temp_path {self.prefix}/proxy;
  fastcgi_temp_path {self.prefix}/fastcgi;
  uwsgi_temp_path {self.prefix}/uwsgi;
  scgi_temp_path {self.prefix}/scgi;{http}
}}
""")
        self.process = start_nginx(self.prefix, conf, [*self.streams, *self.http])
        return self

    def stop(self) -> None:
        stop_nginx(self.process)
        self.process = None


BALANCER_CONF = Path(__file__).resolve().parent.parent / "deploy" / "nginx" / "relay-balancer.conf"
# The listen ports and node addresses the README's balancer config is written with.
BALANCED_PORTS = {"rtmp": 5222, "rtmps": 443, "srt": 6001, "http": 8080}
EXAMPLE_NODES = ("10.0.0.11", "10.0.0.12")


class NginxBalancer:
    """nginx with the config of deploy/nginx/relay-balancer.conf, as the README gives it,
    in front of `nodes` (each a dict of BALANCED_PORTS' names to its host:port): only its
    example node addresses and listen ports are replaced, and its logs and pid go under
    `prefix`. Listens on 127.0.0.1 on free ports (`ports`, by the names of BALANCED_PORTS)."""

    def __init__(self, prefix: Path, nodes: list[dict[str, str]], ports: dict[str, int]):
        assert len(nodes) == len(EXAMPLE_NODES), "the example config names two nodes"
        self.prefix = prefix
        self.nodes = nodes
        self.ports = ports
        self.process: subprocess.Popen[bytes] | None = None

    @staticmethod
    def available() -> bool:
        return Path(NGINX).exists() and Path(NGINX_STREAM_MODULE).exists()

    def config(self) -> str:
        text = BALANCER_CONF.read_text()
        for example, node in zip(EXAMPLE_NODES, self.nodes, strict=True):
            for name, port in BALANCED_PORTS.items():
                before = f"server {example}:{port};"
                assert before in text, f"{before} not in {BALANCER_CONF}"
                text = text.replace(before, f"server {node[name]};")
        for name, port in BALANCED_PORTS.items():
            udp = " udp" if name == "srt" else ""
            before = f"listen {port}{udp};"
            assert before in text, f"{before} not in {BALANCER_CONF}"
            text = text.replace(before, f"listen 127.0.0.1:{self.ports[name]}{udp};")
        text = text.replace("worker_processes auto;", "worker_processes 1;")
        return text.replace("http {", f"http {{\n    access_log {self.prefix}/access.log;", 1)

    def start(self) -> NginxBalancer:
        self.prefix.mkdir(parents=True, exist_ok=True)
        conf = self.prefix / "nginx.conf"
        conf.write_text(self.config())
        globals_ = (f"daemon off; master_process off; pid {self.prefix}/nginx.pid; "
                    f"error_log {self.prefix}/error.log info;")
        self.process = start_nginx(self.prefix, conf,
                                   [self.ports["rtmp"], self.ports["rtmps"], self.ports["http"]],
                                   ["-g", globals_])
        return self

    @property
    def error_log(self) -> str:
        return nginx_log(self.prefix)

    def kill(self) -> None:
        stop_nginx(self.process, kill=True)
        self.process = None
