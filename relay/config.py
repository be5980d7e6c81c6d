"""Settings of `relay serve` and the other commands: flags, `RELAY_*` env vars, defaults.

Every option is declared once in `SERVE_OPTIONS` with its flag, env var, default and help;
the CLI, the README's configuration table and the tests read that one table. A flag given
on the command line wins over the env var, which wins over the default.
"""

# Settings' defaults are calls (`_default`) that read the option table once, at import;
# the values are immutable, which is what RUF009 guards against.
# ruff: noqa: RUF009

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from relay.limits import (
    DEFAULT_IMAGE_WORKERS,
    DEFAULT_NODE_TIMEOUT,
    MAX_FRAME_SIZE,
    MAX_IMAGE_WORKERS,
    MAX_SESSION_SECONDS,
)
from relay.trusted_proxies import Network, parse_trusted_proxy


class ConfigError(ValueError):
    """A setting has an unusable value; the message names it and says what is expected."""


@dataclass(frozen=True, slots=True)
class Option:
    flag: str  # long flag without the dashes, e.g. "http-port"
    parse: Callable[[str], Any]  # turns the text of a flag or env var into a value
    default: Any
    help: str
    metavar: str
    #: Given more than once (the flag repeated, or the env var with values split by
    #: whitespace); the setting is then a tuple, empty by default.
    repeat: bool = False
    #: What separates the values of a repeated option in its env var (None: whitespace).
    env_separator: str | None = None

    @property
    def dest(self) -> str:
        return self.flag.replace("-", "_")

    @property
    def env(self) -> str:
        return "RELAY_" + self.dest.upper()


def parse_port(text: str) -> int:
    if not text.isdigit() or not 0 <= int(text) <= 65535:
        raise ValueError("expected a port number from 0 to 65535 (0 picks a free port)")
    return int(text)


def parse_choice(*choices: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text.lower() not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}")
        return text.lower()
    return parse


def parse_nonempty(text: str) -> str:
    if not text.strip():
        raise ValueError("expected a non-empty value")
    return text


def parse_int_range(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        if not text.isdigit() or not low <= int(text) <= high:
            raise ValueError(f"expected a whole number from {low} to {high}")
        return int(text)
    return parse


def parse_seconds(low: float, high: float) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = float("nan")
        if not low <= value <= high:
            raise ValueError(f"expected seconds from {low:g} to {high:g}")
        return value
    return parse


def parse_webhook_url(text: str) -> str:
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("expected an http:// or https:// URL with a host")
    return text


#: What --node-id accepts (and what a default node id is made of): it is stored as an id.
NODE_ID_PATTERN: Final = re.compile(r"[A-Za-z0-9._-]{1,64}")


def parse_node_id(text: str) -> str:
    if not NODE_ID_PATTERN.fullmatch(text):
        raise ValueError("expected 1 to 64 letters, digits or . _ -")
    return text


def parse_base_url(text: str) -> str:
    """An http(s) URL that paths are appended to: kept without its trailing slash."""
    return parse_webhook_url(text).rstrip("/")


def parse_file(text: str) -> Path:
    path = Path(text)
    if not path.is_file():
        raise ValueError("no such file")
    return path


#: Most --workers: a worker is a process of its own with its own database connections.
MAX_WORKERS = 64

#: Bounds of --srt-latency in ms: below 20 a single retransmission rarely fits even on a LAN;
#: above 8000 the receiver buffer holds seconds of media per connection for no live use.
MIN_SRT_LATENCY = 20
MAX_SRT_LATENCY = 8000

DATA_DIR = Option("data-dir", Path, Path("relay-data"),
                  "directory for the SQLite database and recorded media", "DIR")
DATABASE_URL = Option(
    "database-url", parse_nonempty, None,
    "SQLAlchemy async URL of the control database (default: SQLite in the data dir, "
    "sqlite+aiosqlite:///DIR/relay.db)", "URL")
LOG_LEVEL = Option("log-level", parse_choice("debug", "info", "warning", "error"), "info",
                   "least severe log level written to stderr", "LEVEL")
LOG_FORMAT = Option("log-format", parse_choice("text", "json"), "text",
                    "log line format: key=value text or one JSON object per line", "FORMAT")

WEBHOOK_URL = Option(
    "webhook-url", parse_webhook_url, None,
    "endpoint that receives every event as a signed Mux webhook; repeat the flag for "
    "several (the env var takes URLs separated by spaces)", "URL", repeat=True)
WEBHOOK_SECRET = Option(
    "webhook-secret", parse_nonempty, None,
    "key of the Mux-Signature HMAC on each webhook; required with --webhook-url",
    "SECRET")

SERVE_OPTIONS: tuple[Option, ...] = (
    Option("host", parse_nonempty, "0.0.0.0", "address every listener binds to", "ADDR"),
    Option("http-port", parse_port, 8080,
           "TCP port of the API, HLS playback and the player page", "PORT"),
    Option("https-port", parse_port, 8443,
           "TCP port of the same routes over HTTPS (also for the stream. and image. host "
           "names of Mux Player's custom-domain); only opened when --tls-cert and --tls-key "
           "are given; 0 turns it off", "PORT"),
    Option("http-max-connections", parse_int_range(1, 1_000_000), 4000,
           "most HTTP connections open at once; at the limit a new connection replaces the "
           "one that has waited longest for a request, or is refused with 503 when all are "
           "busy", "N"),
    Option("http-max-connections-per-ip", parse_int_range(1, 1_000_000), 1000,
           "most HTTP connections open at once from one address (IPv6: one /64); more are "
           "refused with 503; raise it behind a proxy or a large NAT", "N"),
    Option("http-header-timeout", parse_seconds(1, 300), 10.0,
           "close an HTTP connection whose request line and headers are not complete this "
           "many seconds after it opened or after its previous response", "SECONDS"),
    Option("http-body-timeout", parse_seconds(1, 3600), 30.0,
           "close an HTTP connection whose request body is not complete this many seconds "
           "after its headers", "SECONDS"),
    Option("http-send-timeout", parse_seconds(1, 3600), 30.0,
           "close an HTTP connection whose client reads nothing of a response for this many "
           "seconds", "SECONDS"),
    Option("playback-server", parse_choice("lean", "asgi"), "lean",
           "what serves playlists and media on the HTTP port: lean (Relay's own HTTP/1.1 "
           "protocol, from bytes in memory) or asgi (uvicorn and Starlette, as the API)",
           "lean|asgi"),
    Option("hls-max-held-requests", parse_int_range(1, 1_000_000), 3000,
           "most LL-HLS requests held at once waiting for a part or segment (blocking "
           "reloads, hinted parts), all streams together; more are answered 503 with "
           "Retry-After", "N"),
    Option("hls-max-held-requests-per-stream", parse_int_range(1, 1_000_000), 1500,
           "most LL-HLS requests held at once for one stream; more are answered 503 with "
           "Retry-After", "N"),
    Option("metrics-port", parse_port, 9464,
           "TCP port of the Prometheus endpoint /metrics", "PORT"),
    Option("rtmp-port", parse_port, 5222,
           "TCP port where encoders publish over RTMP (rtmp://HOST:PORT/app/STREAM_KEY)",
           "PORT"),
    Option("rtmps-port", parse_port, 443,
           "TCP port of RTMP over TLS; only opened when --tls-cert and --tls-key are given",
           "PORT"),
    Option("tls-cert", parse_file, None,
           "PEM certificate chain for RTMPS and HTTPS (with --tls-key)", "FILE"),
    Option("tls-key", parse_file, None,
           "PEM private key for RTMPS and HTTPS (with --tls-cert)", "FILE"),
    Option("simulcast-ca-file", parse_file, None,
           "PEM bundle of CA certificates trusted for rtmps:// simulcast targets, in "
           "addition to the system store (e.g. a target with a private CA)", "FILE"),
    Option("rtmp-max-connections", parse_int_range(1, 1_000_000), 1000,
           "most RTMP(S) connections open at once; when all are taken, a newcomer takes the "
           "slot of the oldest not-yet-publishing connection of the address holding the most "
           "(if it holds more than the newcomer's), else it is closed on accept", "N"),
    Option("rtmp-max-connections-per-ip", parse_int_range(1, 1_000_000), 20,
           "most RTMP(S) connections from one address (IPv6: one /64; counted from accept, "
           "TLS handshakes included); more are closed on accept", "N"),
    Option("rtmp-idle-timeout", parse_seconds(1, 3600), 30.0,
           "close a publishing connection that sends nothing for this many seconds", "SECONDS"),
    Option("rtmp-max-message-size", parse_int_range(64 * 1024, 256 * 1024 * 1024),
           MAX_FRAME_SIZE,
           "largest RTMP message (one video frame) accepted, in bytes; larger closes the "
           "connection", "BYTES"),
    Option("log-repeat-interval", parse_seconds(0.1, 3600), 10.0,
           "lines about what peers do (refused connections, timeouts, protocol errors, "
           "refused publishes) are written at most once per cause per this many seconds, "
           "with a count of those held back", "SECONDS"),
    Option("rtmp-pre-publish-buffer-budget", parse_int_range(1024 * 1024, 64 * 1024 ** 3),
           64 * 1024 * 1024,
           "bytes that all RTMP(S) connections not yet publishing may hold together "
           "(partial messages, unsent replies); a connection that would pass it is closed",
           "BYTES"),
    Option("srt-port", parse_port, 6001,
           "UDP port where encoders publish over SRT "
           "(srt://HOST:PORT?streamid=STREAM_KEY&passphrase=SRT_PASSPHRASE); 0 turns SRT off",
           "PORT"),
    Option("srt-latency", parse_int_range(MIN_SRT_LATENCY, MAX_SRT_LATENCY), 120,
           "SRT receiver latency in milliseconds (how long lost packets may be resent for); "
           "the larger of the encoder's and this one applies", "MS"),
    Option("srt-max-connections", parse_int_range(1, 1_000_000), 1000,
           "most SRT connections open at once; more are refused in the handshake "
           "(rejection 1429)", "N"),
    Option("srt-max-connections-per-ip", parse_int_range(1, 1_000_000), 20,
           "most SRT connections from one address (IPv6: one /64); more are refused in the "
           "handshake (rejection 1429)", "N"),
    Option("srt-idle-timeout", parse_seconds(1, 3600), 30.0,
           "close a publishing SRT connection that sends nothing for this many seconds (its "
           "first track must come within 10 s of the handshake)", "SECONDS"),
    Option("part-target", parse_seconds(0.1, 1.0), 0.3,
           "LL-HLS PART-TARGET in seconds for streams with latency_mode low", "SECONDS"),
    Option("max-session-duration", parse_seconds(1, MAX_SESSION_SECONDS),
           float(MAX_SESSION_SECONDS),
           "upper bound on any live session in seconds; a stream's max_continuous_duration "
           "applies when smaller", "SECONDS"),
    Option("disk-threads", parse_int_range(1, 64), 8,
           "threads that write the recordings; one hung write holds one of them, and a stop "
           "finalizes this many recordings at a time", "N"),
    Option("image-workers", parse_int_range(1, MAX_IMAGE_WORKERS), DEFAULT_IMAGE_WORKERS,
           "processes that decode and encode images (thumbnails, animated images, "
           "storyboards) at a low priority, each one image at a time and ~70 MB; started "
           "when the first images are asked", "N"),
    Option("recording-max-backlog", parse_int_range(1024 * 1024, 1024 * 1024 * 1024),
           64 * 1024 * 1024,
           "bytes of one recording that may wait for a slow disk; past it that recording "
           "ends (what it wrote is kept and finalized) while live playback goes on", "BYTES"),
    WEBHOOK_URL,
    WEBHOOK_SECRET,
    Option("webhook-retention", parse_seconds(60, 365 * 86400), 604_800.0,
           "seconds a delivered or failed webhook event is kept (for "
           "/system/v1/webhook-events) before it is pruned", "SECONDS"),
    Option("node-id", parse_node_id, None,
           "this process's id among the nodes sharing one database (default: HOSTNAME-PID, "
           "new for each process)", "ID"),
    Option("advertise-url", parse_base_url, None,
           "HTTP base URL other nodes reach this node's playback at (default: "
           "http://HOST:HTTP_PORT of the HTTP listener, this machine's host name when "
           "--host listens on every address)", "URL"),
    Option("node-timeout", parse_seconds(1, 300), DEFAULT_NODE_TIMEOUT,
           "seconds a node may go without a heartbeat (written every third of it) before "
           "the others count it dead; its live streams' leases last as long", "SECONDS"),
    Option("trusted-proxy", parse_trusted_proxy, None,
           "address or CIDR network of a load balancer allowed to state the client's address "
           "(a PROXY protocol header on RTMP(S), X-Forwarded-For on HTTP); repeat the flag "
           "for several (the env var: comma-separated); from any other peer such statements "
           "are refused or ignored", "CIDR", repeat=True, env_separator=","),
    Option("workers", parse_int_range(1, MAX_WORKERS), 1,
           "worker processes sharing the RTMP(S), SRT and HTTP(S) ports (SO_REUSEPORT), "
           "each a node of the database, restarted when one dies; more than 1 needs a "
           "PostgreSQL --database-url", "N"),
    Option("worker-http-port", parse_port, 0,
           "with --workers, worker I (from 0) also serves HTTP on --host at this port + I: "
           "the URL it advertises to the other nodes (0: a free port each)", "PORT"),
    DATA_DIR,
    DATABASE_URL,
    LOG_LEVEL,
    LOG_FORMAT,
)

#: Options of `relay webhooks test`.
WEBHOOK_TEST_OPTIONS: tuple[Option, ...] = (WEBHOOK_SECRET, LOG_LEVEL, LOG_FORMAT)

# Options of the commands that only touch the store (`relay token create`).
STORE_OPTIONS: tuple[Option, ...] = (DATA_DIR, DATABASE_URL, LOG_LEVEL, LOG_FORMAT)

# An access token id is the user name of HTTP Basic auth: no colon, printable, bounded.
_TOKEN_ID = re.compile(r"[A-Za-z0-9._~-]{1,64}")
#: Shortest RELAY_TOKEN_SECRET accepted (a generated secret has 48 characters): random, 32
#: characters are out of reach of guessing, failed-auth delay or not.
MIN_TOKEN_SECRET_LENGTH = 32


@dataclass(frozen=True, slots=True)
class SeedToken:
    """An access token that `relay serve` makes sure exists (RELAY_TOKEN_ID/SECRET)."""

    id: str
    secret: str


def _default(dest: str) -> Any:
    """The default of the option whose setting is `dest`: a repeatable option's is ()."""
    option = _OPTIONS_BY_DEST[dest]
    return () if option.repeat else option.default


_OPTIONS_BY_DEST: Final = {option.dest: option for option in SERVE_OPTIONS}


@dataclass(frozen=True, slots=True)
class Settings:
    """What `relay serve` runs with. Each default is its option's (`_default`): one home."""

    data_dir: Path = _default("data_dir")
    database_url: str | None = _default("database_url")
    host: str = _default("host")
    http_port: int = _default("http_port")
    https_port: int = _default("https_port")  # 0: HTTPS off
    http_max_connections: int = _default("http_max_connections")
    http_max_connections_per_ip: int = _default("http_max_connections_per_ip")
    http_header_timeout: float = _default("http_header_timeout")
    http_body_timeout: float = _default("http_body_timeout")
    http_send_timeout: float = _default("http_send_timeout")
    playback_server: str = _default("playback_server")
    hls_max_held_requests: int = _default("hls_max_held_requests")
    hls_max_held_requests_per_stream: int = _default("hls_max_held_requests_per_stream")
    metrics_port: int = _default("metrics_port")
    rtmp_port: int = _default("rtmp_port")
    rtmps_port: int = _default("rtmps_port")
    tls_cert: Path | None = _default("tls_cert")
    tls_key: Path | None = _default("tls_key")
    simulcast_ca_file: Path | None = _default("simulcast_ca_file")
    rtmp_max_connections: int = _default("rtmp_max_connections")
    rtmp_max_connections_per_ip: int = _default("rtmp_max_connections_per_ip")
    rtmp_idle_timeout: float = _default("rtmp_idle_timeout")
    rtmp_max_message_size: int = _default("rtmp_max_message_size")
    rtmp_pre_publish_buffer_budget: int = _default("rtmp_pre_publish_buffer_budget")
    srt_port: int = _default("srt_port")  # 0: SRT off
    srt_latency: int = _default("srt_latency")  # ms
    srt_max_connections: int = _default("srt_max_connections")
    srt_max_connections_per_ip: int = _default("srt_max_connections_per_ip")
    srt_idle_timeout: float = _default("srt_idle_timeout")
    max_session_duration: float = _default("max_session_duration")
    part_target: float = _default("part_target")
    log_repeat_interval: float = _default("log_repeat_interval")
    disk_threads: int = _default("disk_threads")
    recording_max_backlog: int = _default("recording_max_backlog")
    image_workers: int = _default("image_workers")
    webhook_url: tuple[str, ...] = _default("webhook_url")
    webhook_secret: str | None = _default("webhook_secret")
    webhook_retention: float = _default("webhook_retention")
    node_id: str | None = _default("node_id")  # None: HOSTNAME-PID (relay.cluster)
    advertise_url: str | None = _default("advertise_url")  # None: from the HTTP listener
    node_timeout: float = _default("node_timeout")
    trusted_proxy: tuple[Network, ...] = _default("trusted_proxy")
    workers: int = _default("workers")
    worker_http_port: int = _default("worker_http_port")  # 0: a free port per worker
    #: Set (hidden --worker-index) in the processes `relay serve --workers N` starts: this
    #: one's index from 0; None in a process that is no worker.
    worker_index: int | None = None
    log_level: str = _default("log_level")
    log_format: str = _default("log_format")
    seed_token: SeedToken | None = None

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{self.data_dir.resolve() / 'relay.db'}"


def add_options(parser: argparse.ArgumentParser, options: tuple[Option, ...]) -> None:
    """Add each option as `--flag`, documenting its env var and default in the help."""
    for option in options:
        default = "none" if option.default is None else option.default
        parser.add_argument(
            f"--{option.flag}", dest=option.dest, metavar=option.metavar, default=None,
            action="append" if option.repeat else "store",
            help=f"{option.help} [env {option.env}, default {default}]")


def settings_from(
    args: argparse.Namespace,
    options: tuple[Option, ...],
    environ: Mapping[str, str] = os.environ,
) -> Settings:
    """Resolve flag > env var > default for each option, then the seed token from env."""
    values: dict[str, Any] = {}
    for option in options:
        given = getattr(args, option.dest, None)
        source, text = (f"--{option.flag}", given) if given is not None else (
            option.env, environ.get(option.env))
        if text is None:
            values[option.dest] = () if option.repeat else option.default
            continue
        if not option.repeat:
            values[option.dest] = _parse(option, source, text)
            continue
        texts = text if isinstance(text, list) else [
            t for t in text.split(option.env_separator) if t.strip()]
        values[option.dest] = tuple(_parse(option, source, t) for t in texts)
    index = getattr(args, "worker_index", None)
    settings = Settings(**values, seed_token=seed_token_from(environ),
                        worker_index=index if isinstance(index, int) else None)
    if settings.webhook_url and settings.webhook_secret is None:
        raise ConfigError("--webhook-url needs --webhook-secret (RELAY_WEBHOOK_SECRET): the "
                          "key receivers check each webhook's Mux-Signature with")
    if (settings.tls_cert is None) != (settings.tls_key is None):
        raise ConfigError("--tls-cert and --tls-key go together; give both to serve RTMPS")
    # A URL that does not parse is left to the store's own error.
    if settings.workers > 1 and _backend(settings.resolved_database_url) not in (
            "postgresql", None):
        raise ConfigError(
            f"--workers {settings.workers} needs PostgreSQL: the workers are nodes sharing "
            "one database, and SQLite is one process's; give --database-url (or "
            "RELAY_DATABASE_URL) postgresql+asyncpg://USER:PASSWORD@HOST/DB, or run one "
            "worker")
    return settings


def _backend(url: str) -> str | None:
    """The database kind of a SQLAlchemy URL ("sqlite", "postgresql"), None if no URL."""
    try:
        return make_url(url).get_backend_name()
    except ArgumentError:
        return None


def _parse(option: Option, source: str, text: str) -> Any:
    try:
        return option.parse(text)
    except ValueError as exc:
        raise ConfigError(f"{source}={text!r} is not valid: {exc}") from None


def seed_token_from(environ: Mapping[str, str]) -> SeedToken | None:
    token_id, secret = environ.get("RELAY_TOKEN_ID"), environ.get("RELAY_TOKEN_SECRET")
    if token_id is None and secret is None:
        return None
    if token_id is None or secret is None:
        missing = "RELAY_TOKEN_SECRET" if secret is None else "RELAY_TOKEN_ID"
        raise ConfigError(f"RELAY_TOKEN_ID and RELAY_TOKEN_SECRET go together; {missing} "
                          "is not set")
    if not _TOKEN_ID.fullmatch(token_id):
        raise ConfigError(f"RELAY_TOKEN_ID={token_id!r} is not valid: use 1-64 letters, "
                          "digits or . _ ~ -")
    if len(secret) < MIN_TOKEN_SECRET_LENGTH:
        raise ConfigError(f"RELAY_TOKEN_SECRET is too short ({len(secret)} characters); "
                          f"use at least {MIN_TOKEN_SECRET_LENGTH} random characters, e.g. "
                          "the secret `relay token create` prints")
    return SeedToken(token_id, secret)
