"""What `relay serve` imports: not the libraries only some paths need, and those off the
event loop when a path first needs them.

Each check runs in a fresh interpreter (this test process has imported everything): a
finder on `sys.meta_path` notes which thread first imported each watched module, and the
script prints that with `sys.modules` as JSON on its last line of output. The libraries
kept out are most of what a freshly started relay held before (120 -> 86 MiB VmRSS,
`benchmarks/idle_memory.py`): PyAV and Pillow (the image workers load them), PyJWT and
cryptography (signed playback), httpx (webhook delivery, playback from another node) and
SQLAlchemy's PostgreSQL dialect (a SQLite store's relay). And SQLAlchemy's ORM, which the
store never uses (86 -> 80 MiB, relay.store.async_engine), and pydantic.v1, which FastAPI
imports only to refuse v1 models (relay._no_pydantic_v1), and uvicorn's command line with
click and multiprocessing, which its package's `__init__` imports (relay._uvicorn_core).
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from relay.api.signing import new_key_pair
from testkit.relay_process import free_udp_port

#: Modules a freshly started `relay serve` (SQLite store, default options) must not import.
NOT_AT_START = (
    "av", "PIL", "relay.images.render",  # image decoding: the worker processes' only
    "jwt", "cryptography",  # signed playback: once a key or a signed id exists
    "httpx",  # webhooks (with an endpoint), playback from the owner node (shared database)
    "sqlalchemy.dialects.postgresql", "asyncpg",  # a PostgreSQL store's only
    "sqlalchemy.orm",  # nothing of Relay's: the store is SQLAlchemy Core (async_engine.py)
    "pydantic.v1", "Cython",  # FastAPI's check for v1 models (relay._no_pydantic_v1)
    "uvicorn.main", "click", "multiprocessing",  # uvicorn's command line (_uvicorn_core.py)
)
#: The thread name of an import made on the event loop (the relay's main thread).
LOOP_THREAD = "MainThread"
#: Seconds `relay serve` runs after it said it was ready, before the script stops it.
SERVING_SECONDS = 1.0
SCRIPT_TIMEOUT = 120

WATCH = """
import importlib.abc, json, sys, threading
WATCHED = {"jwt", "cryptography", "httpx", "av", "PIL"}
LOADED_ON = {}  # a watched module -> the name of the thread that imported it
class Watch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name in WATCHED and name not in LOADED_ON:
            LOADED_ON[name] = threading.current_thread().name
        return None
sys.meta_path.insert(0, Watch())
def report(**more):
    print(json.dumps({"modules": sorted(name for name, module in sys.modules.items()
                                        if module is not None),
                      "absent": sorted(name for name, module in sys.modules.items()
                                       if module is None),
                      "loaded_on": LOADED_ON, **more}))
"""

SERVE = WATCH + """
import logging, os, re, signal
from relay.cli import main
class StopOnceReady(logging.Handler):
    def emit(self, record):
        if re.search(r"relay \\S+ ready", record.getMessage()):
            threading.Timer(float(os.environ["SERVING_SECONDS"]), os.kill,
                            (os.getpid(), signal.SIGTERM)).start()
logging.getLogger("relay").addHandler(StopOnceReady())
report(code=main(sys.argv[1:]))
"""

LOOKUP = WATCH + """
import asyncio
from pathlib import Path
from relay.hls.routes import PlaybackDirectory
from relay.store.asset_files import AssetFiles
from relay.store.records import PlaybackId
class Store:
    async def get_playback_id(self, playback_id):
        return PlaybackId(playback_id, sys.argv[1], "asset", "asset1")
async def resolve():
    directory = PlaybackDirectory(Store(), lambda stream_id: None, AssetFiles(Path("a")))
    return await directory.resolve_signed("playback1")
target, signed = asyncio.run(resolve())
report(signed=signed)
"""

KEYS = WATCH + """
import asyncio, base64, os
from relay.playback.access import PlaybackAccess
from relay.store.records import SigningKey
class Store:
    async def all_signing_keys(self):
        return [SigningKey("key1", 0, base64.b64decode(os.environ["PUBLIC_KEY"]).decode())]
    async def all_playback_restrictions(self):
        return []
access = PlaybackAccess(session_secret=bytes(32))
asyncio.run(access.load(Store()))
report(keys=len(access.verifier.keys))
"""

NEW_KEY = WATCH + """
import asyncio
from relay.api.signing import new_key_pair
from relay.playback.access import PlaybackAccess
from relay.store.records import SigningKey
async def create():
    # As POST /system/v1/signing-keys does: the pair in a thread, the key taken on the loop.
    _, public_pem = await asyncio.to_thread(new_key_pair)
    access = PlaybackAccess(session_secret=bytes(32))
    access.key_added(SigningKey("key1", 0, public_pem))
    return len(access.verifier.keys)
report(keys=asyncio.run(create()))
"""


def run_script(script: str, *args: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    """The JSON a script printed last, run in a fresh interpreter (from this directory, as
    `testkit.relay_process` starts `relay serve`, so it imports the same `relay`)."""
    done = subprocess.run([sys.executable, "-c", script, *args], capture_output=True,
                          text=True, timeout=SCRIPT_TIMEOUT, env={**os.environ, **(env or {})})
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    assert lines, done.stderr[-3000:]
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def serve(tmp_path: Path, *extra: str) -> dict[str, Any]:
    """`relay serve` started (SRT on, as by default), serving for SERVING_SECONDS, stopped."""
    return run_script(SERVE, "serve", "--host", "127.0.0.1", "--http-port", "0",
                      "--metrics-port", "0", "--rtmp-port", "0", "--https-port", "0",
                      "--srt-port", str(free_udp_port()), "--data-dir", str(tmp_path / "data"),
                      *extra, env={"SERVING_SECONDS": str(SERVING_SECONDS)})


def test_relay_serve_starts_and_serves_without_the_libraries_only_some_paths_need(
        tmp_path: Path) -> None:
    found = serve(tmp_path)
    assert found["code"] == 0
    modules = set(found["modules"])
    # It did start: the server, the SRT listener and the SQLite store's dialect are there.
    assert {"relay.app", "relay.srt.listener", "sqlalchemy.dialects.sqlite",
            "uvicorn.server", "uvicorn.protocols.http.h11_impl"} <= modules
    assert [name for name in NOT_AT_START if name in modules] == []
    # Marked absent by relay.cli, and FastAPI's routes were declared all the same.
    assert "pydantic.v1" in found["absent"]


def test_a_webhook_endpoint_loads_httpx_at_start_up_before_it_is_ready(tmp_path: Path) -> None:
    # The check above can see an import: with an endpoint, httpx is there, loaded by the
    # start-up (not by the deliverer's first try on a serving loop).
    found = serve(tmp_path, "--webhook-url", "http://127.0.0.1:9/hook",
                  "--webhook-secret", "a-secret-of-the-test")
    assert found["code"] == 0
    assert "httpx" in found["modules"]
    # click too where httpx's command line can be imported (its extra, in this venv).
    assert [name for name in NOT_AT_START
            if name in found["modules"] and name != "click"] == ["httpx"]


@pytest.mark.parametrize("policy", ["public", "signed"])
def test_the_first_signed_playback_id_looked_up_loads_the_token_libraries_in_a_thread(
        policy: str) -> None:
    found = run_script(LOOKUP, policy)
    assert found["signed"] is (policy == "signed")
    if policy == "public":
        assert found["loaded_on"] == {}
        return
    # The viewer's token is then checked on the loop without an import there.
    assert set(found["loaded_on"]) == {"jwt", "cryptography"}
    assert LOOP_THREAD not in found["loaded_on"].values()


def test_signing_keys_in_the_store_load_the_token_libraries_in_a_thread() -> None:
    _, public_pem = new_key_pair()
    found = run_script(KEYS, env={"PUBLIC_KEY": base64.b64encode(public_pem.encode()).decode()})
    assert found["keys"] == 1
    assert set(found["loaded_on"]) == {"jwt", "cryptography"}
    assert LOOP_THREAD not in found["loaded_on"].values()


def test_a_new_signing_key_loads_the_token_libraries_with_its_pair_in_a_thread() -> None:
    found = run_script(NEW_KEY)
    assert found["keys"] == 1
    assert set(found["loaded_on"]) == {"jwt", "cryptography"}
    assert LOOP_THREAD not in found["loaded_on"].values()


ASYNC_PACKAGE = """
import asyncio, json, sys
from relay.store import Store
async def open_store():
    store = await Store.open("sqlite+aiosqlite://")
    try:
        return store, await store.schema_version()
    finally:
        await store.close()
store, version = asyncio.run(open_store())
before = "sqlalchemy.orm" in sys.modules
# What a plain import of the package gives, once something asks for more than the engine.
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
import sqlalchemy.ext.asyncio
print(json.dumps({"version": version, "orm_before": before,
                  "orm_after": "sqlalchemy.orm" in sys.modules,
                  "same_class": isinstance(store._engine, AsyncEngine),
                  "session": AsyncSession.__module__,
                  "package_named": sqlalchemy.ext.asyncio is sys.modules["sqlalchemy.ext.asyncio"],
                  "sessionmaker": async_sessionmaker.__name__}))
"""


def test_the_store_opens_without_the_orm_and_the_async_package_completes_on_first_use() -> None:
    found = run_script(ASYNC_PACKAGE)
    assert found["version"] > 0
    assert found["orm_before"] is False
    # A later `from sqlalchemy.ext.asyncio import ...` of anything gets the whole package,
    # with the classes the store's engine was made of.
    assert found["orm_after"] is True
    assert found["same_class"] is True
    assert found["session"] == "sqlalchemy.ext.asyncio.session"
    assert found["package_named"] is True
    assert found["sessionmaker"] == "async_sessionmaker"
