"""The `relay` command: `relay serve`, `relay token create|list|revoke`, `relay webhooks test`."""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import gc
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final, TypeVar

import uvloop

import relay._no_pydantic_v1  # before FastAPI's first route: see the module
import relay._uvicorn_core  # noqa: F401  (before relay.app's `import uvicorn`: see the module)
from relay import __version__
from relay.app import RelayServer, StartupError, open_store, prepare_data_dir
from relay.config import (
    SERVE_OPTIONS,
    STORE_OPTIONS,
    WEBHOOK_TEST_OPTIONS,
    ConfigError,
    Settings,
    add_options,
    parse_webhook_url,
    settings_from,
)
from relay.logs import configure_logging, peer_text
from relay.store import Store
from relay.webhooks.delivery import DEFAULT_ATTEMPT_TIMEOUT, AttemptOutcome, post_signed
from relay.webhooks.signing import check_envelope, encode_body
from relay.workers import die_with_parent, supervise

if TYPE_CHECKING:
    import httpx

log = logging.getLogger("relay")

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="relay",
        description="Relay: a self-hosted live-streaming ingest edge with a "
                    "Mux-compatible live-streams API.",
        epilog="Every option also reads the env var shown beside it; a flag wins over its "
               "env var.")
    parser.add_argument("--version", action="version", version=f"relay {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    serve = commands.add_parser(
        "serve", help="run the server",
        description="Run Relay: the API, playback and metrics listeners on one event loop. "
                    "When RELAY_TOKEN_ID and RELAY_TOKEN_SECRET are both set, that access "
                    "token is created (or its secret updated) before serving. "
                    "SIGTERM or Ctrl-C stops it cleanly (exit 0).",
        epilog="Exit status: 0 after a clean stop, 1 when it cannot start (port taken, "
               "data dir or database unusable), 2 for a bad option.")
    add_options(serve, SERVE_OPTIONS)
    # Given by the supervisor of --workers N to each worker it starts (relay.workers).
    serve.add_argument("--worker-index", type=int, default=None, help=argparse.SUPPRESS)
    serve.set_defaults(handler=_serve)

    token = commands.add_parser("token", help="manage API access tokens",
                                description="Manage the access tokens of the API.")
    token_commands = token.add_subparsers(dest="token_command", metavar="ACTION",
                                          required=True)
    create = token_commands.add_parser(
        "create", help="create an access token and print it as JSON",
        description='Create an access token and print {"id": ..., "secret": ...} as JSON. '
                    "Use the id as the user name and the secret as the password of HTTP "
                    "Basic auth (the Mux SDKs call them token id and token secret). Only a "
                    "hash of the secret is stored: keep the printed secret.")
    add_options(create, STORE_OPTIONS)
    create.set_defaults(handler=_token_create)
    listing = token_commands.add_parser(
        "list", help="print every access token's id and creation time as JSON",
        description='Print [{"id": ..., "created_at": ...}, ...] as JSON, oldest first, '
                    "with created_at in ISO-8601 UTC. Secrets cannot be shown: only their "
                    "hashes are stored.")
    add_options(listing, STORE_OPTIONS)
    listing.set_defaults(handler=_token_list)
    revoke = token_commands.add_parser(
        "revoke", help="delete an access token; requests using it fail at once",
        description="Delete the access token ID: a running relay serve refuses it from its "
                    "next request on. A token seeded from RELAY_TOKEN_ID/RELAY_TOKEN_SECRET "
                    "comes back when relay serve starts with them set.",
        epilog="Exit status: 0 when revoked, 1 when there is no such token or the store "
               "cannot be opened.")
    revoke.add_argument("token_id", metavar="ID", help="the token id, as token list shows it")
    add_options(revoke, STORE_OPTIONS)
    revoke.set_defaults(handler=_token_revoke)

    webhooks = commands.add_parser("webhooks", help="check webhook delivery",
                                   description="Check webhook delivery.")
    webhook_commands = webhooks.add_subparsers(dest="webhooks_command", metavar="ACTION",
                                               required=True)
    test = webhook_commands.add_parser(
        "test", help="send a signed test event to URL and print the answer",
        description="POST one event of type relay.webhooks.test to URL, signed with "
                    "--webhook-secret as relay serve signs every webhook, and print the "
                    "receiver's status line and body.",
        epilog="Exit status: 0 when the receiver answered 2xx, 1 otherwise.")
    test.add_argument("url", metavar="URL", help="the receiver, http:// or https://")
    add_options(test, WEBHOOK_TEST_OPTIONS)
    test.set_defaults(handler=_webhooks_test)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    options = {"serve": SERVE_OPTIONS, "webhooks": WEBHOOK_TEST_OPTIONS}.get(
        args.command, STORE_OPTIONS)
    try:
        settings = settings_from(args, options)
    except ConfigError as exc:
        parser.exit(EXIT_USAGE, f"relay: error: {exc}\n")
    configure_logging(settings.log_level, settings.log_format)
    # What the workers of `relay serve --workers N` are started with (relay.workers).
    given = list(sys.argv[1:] if argv is None else argv)
    args.argv = given[given.index(args.command) + 1:]
    code: int = args.handler(settings, args)
    return code


#: Container allocations between young-generation collections (CPython's default is 700).
#: Relay's per-frame objects are short-lived and free of cycles: collecting that often finds
#: next to nothing and, with hundreds of sessions, runs dozens of times a second.
GC_YOUNG_THRESHOLD = 50_000


def tune_gc() -> None:
    """Once `relay serve` is up: move everything allocated so far (modules, the apps, the
    store) out of the collector's reach with `gc.freeze()`, so full collections only walk
    what the sessions allocate, and collect the young generation less often. With 800
    publishers of 600 kbit/s on one core the collector's share of it fell from 0.167 to
    0.016 (`benchmarks/ingest_probe.py`; benchmarks/README.md, history)."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)


#: Allocations of at least this many bytes get a mapping of their own from glibc's malloc,
#: unmapped when freed (its M_MMAP_THRESHOLD, here fixed; see `tune_malloc`). Above the
#: largest LL-HLS part and keyframe message of common bitrates (about 0.1 to 1 MB), which
#: come from the heap; larger buffers keep mappings of their own.
MALLOC_MMAP_THRESHOLD: Final = 4 * 1024 * 1024
#: Free memory at the heap's top beyond this many bytes goes back to the system (glibc's
#: M_TRIM_THRESHOLD, its default, which the raised mmap threshold had doubled with it).
MALLOC_TRIM_THRESHOLD: Final = 128 * 1024
_M_TRIM_THRESHOLD: Final = -1  # glibc's malloc.h
_M_MMAP_THRESHOLD: Final = -3
#: An operator's own setting of the threshold, which `tune_malloc` leaves alone.
MALLOC_MMAP_ENV: Final = "MALLOC_MMAP_THRESHOLD_"


def tune_malloc(libc: Any = None) -> bool:
    """Fix glibc malloc's mmap and trim thresholds (MALLOC_MMAP_THRESHOLD,
    MALLOC_TRIM_THRESHOLD); True when they were set.

    By default glibc raises the threshold to the size of each mapped chunk that is freed
    (up to 32 MiB), after which every large buffer comes from the heap, which keeps the
    memory it leaves behind; a fixed threshold bounds that. It is no longer 128 KiB: a part
    (100 to 250 KB each at 6 Mbit/s) that the heap's top could not hold got a mapping of
    its own, written page by page and unmapped when freed. Served from the heap, the
    window's freed parts are reused by the next ones: the packager's work per part cut
    240-255 -> 96-115 us of thread CPU time (one ffmpeg push), for 0.7-0.8 MiB more RSS per
    6 Mbit/s stream at 4 and 16 streams (benchmarks/README.md, history). The trim
    threshold still returns a heap top freed beyond 128 KiB. Nothing is done on another C
    library (no `mallopt`) or when the operator set MALLOC_MMAP_THRESHOLD_ (glibc read it
    at start-up)."""
    if MALLOC_MMAP_ENV in os.environ:
        return False
    try:
        mallopt = (libc if libc is not None else ctypes.CDLL(None)).mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, MALLOC_MMAP_THRESHOLD)
                and mallopt(_M_TRIM_THRESHOLD, MALLOC_TRIM_THRESHOLD))


def trim_malloc(libc: Any = None) -> bool:
    """Once `relay serve` is up (after `tune_gc`'s collection): give the free memory inside
    glibc's heap back to the system (`malloc_trim(0)`), True when done. What start-up
    allocated and freed (the imports' and the migrations' temporaries) otherwise stays
    resident below live allocations, where the trim threshold does not reach: 86.7 -> 85.9
    MiB for a fresh relay (`benchmarks/idle_memory.py`, three runs each, alternating), for
    one walk of the heap at start-up.
    Nothing is done on another C library (no `malloc_trim`)."""
    try:
        malloc_trim = (libc if libc is not None else ctypes.CDLL(None)).malloc_trim
    except (OSError, AttributeError):
        return False
    malloc_trim(0)
    return True


def _serve(settings: Settings, args: argparse.Namespace) -> int:
    if settings.workers > 1 and settings.worker_index is None:
        return supervise(settings, args.argv)
    if settings.worker_index is not None:
        die_with_parent()
    tune_malloc()
    return uvloop.run(_serve_until_signalled(settings))


async def _serve_until_signalled(settings: Settings) -> int:
    server = RelayServer(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await server.start()
    except StartupError as exc:
        log.error("cannot start: %s", exc)
        return EXIT_FAILURE
    tune_gc()
    trim_malloc()
    if settings.worker_index is None:
        log.info("relay %s ready", __version__)
    else:  # the supervisor's cue (relay.workers.WORKER_READY)
        log.info("worker %d (node %s) ready", settings.worker_index, server.node_id)
    await stop.wait()
    log.info("stopping: no new connections; finishing in-flight work")
    await server.stop()
    log.info("stopped")
    return EXIT_OK


T = TypeVar("T")


def _with_store(settings: Settings, use: Callable[[Store], Awaitable[T]]) -> T:
    """Open the store of `settings`, run `use` on it and close it (StartupError if it
    cannot be opened)."""
    async def run() -> T:
        prepare_data_dir(settings.data_dir)
        store = await open_store(settings.resolved_database_url)
        try:
            return await use(store)
        finally:
            await store.close()

    return asyncio.run(run())


def _token_create(settings: Settings, _args: argparse.Namespace) -> int:
    try:
        token_id, secret = _with_store(settings, lambda store: store.create_access_token())
    except StartupError as exc:
        log.error("cannot create a token: %s", exc)
        return EXIT_FAILURE
    json.dump({"id": token_id, "secret": secret}, sys.stdout)
    sys.stdout.write("\n")
    return EXIT_OK


def _token_list(settings: Settings, _args: argparse.Namespace) -> int:
    try:
        tokens = _with_store(settings, lambda store: store.list_access_tokens())
    except StartupError as exc:
        log.error("cannot list the tokens: %s", exc)
        return EXIT_FAILURE
    json.dump([{"id": t.id, "created_at": _iso(t.created_at)} for t in tokens], sys.stdout)
    sys.stdout.write("\n")
    return EXIT_OK


def _token_revoke(settings: Settings, args: argparse.Namespace) -> int:
    token_id: str = args.token_id
    try:
        revoked = _with_store(settings, lambda store: store.revoke_access_token(token_id))
    except StartupError as exc:
        log.error("cannot revoke the token: %s", exc)
        return EXIT_FAILURE
    if not revoked:
        log.error("no access token has the id '%s'; `relay token list` shows the ids",
                  peer_text(token_id))
        return EXIT_FAILURE
    log.info("revoked access token %s", token_id)
    return EXIT_OK


#: Characters of the receiver's answer printed by `relay webhooks test`.
MAX_ANSWER_CHARS = 2000


def _webhooks_test(settings: Settings, args: argparse.Namespace) -> int:
    url: str = args.url
    try:
        parse_webhook_url(url)
    except ValueError as exc:
        log.error("URL '%s' is not valid: %s", peer_text(url), exc)
        return EXIT_USAGE
    if settings.webhook_secret is None:
        log.error("no secret to sign with: give --webhook-secret or set RELAY_WEBHOOK_SECRET")
        return EXIT_USAGE
    secret = settings.webhook_secret
    body = encode_body(check_envelope(time.time()))
    import httpx  # this command's only: `relay serve` without webhooks never loads it

    async def send() -> tuple[AttemptOutcome, httpx.Response | None]:
        async with httpx.AsyncClient(timeout=DEFAULT_ATTEMPT_TIMEOUT) as client:
            return await post_signed(client, url, secret, body, time.time())

    outcome, response = asyncio.run(send())
    if response is None:
        print(f"no answer from {peer_text(url)}: {outcome.error}")
        return EXIT_FAILURE
    print(f"HTTP {response.status_code} {response.reason_phrase}")
    print(peer_text(response.text, MAX_ANSWER_CHARS))
    return EXIT_OK if outcome.delivered else EXIT_FAILURE


def _iso(unix_seconds: int) -> str:
    return datetime.fromtimestamp(unix_seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
