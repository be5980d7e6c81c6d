"""The operator interface of DESIGN.md: help, env vars, tokens, start-up errors, signals."""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import mux_python as mux
import pytest

from relay.config import (
    MIN_TOKEN_SECRET_LENGTH,
    SERVE_OPTIONS,
    STORE_OPTIONS,
    ConfigError,
    seed_token_from,
)
from testkit.relay_process import RelayProcess


def relay_cli(*args: str, env: dict[str, str] | None = None,
              timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "relay", *args], capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, **(env or {})})


def test_help_documents_every_option() -> None:
    top = relay_cli("--help")
    assert top.returncode == 0 and "serve" in top.stdout and "token" in top.stdout
    serve = relay_cli("serve", "--help").stdout
    for option in SERVE_OPTIONS:
        assert f"--{option.flag}" in serve and option.env in serve
    for action in ("create", "list", "revoke"):
        helped = relay_cli("token", action, "--help").stdout
        for option in STORE_OPTIONS:
            assert f"--{option.flag}" in helped, action
    assert relay_cli("token", "--help").returncode == 0
    assert relay_cli("--version").stdout.startswith("relay ")


def test_token_create_prints_a_working_token(tmp_path: Path) -> None:
    made = relay_cli("token", "create", "--data-dir", str(tmp_path))
    assert made.returncode == 0, made.stderr
    token = json.loads(made.stdout)
    assert set(token) == {"id", "secret"}
    with RelayProcess(tmp_path) as relay:
        config = mux.Configuration()
        config.host, config.username, config.password = (relay.http_url, token["id"],
                                                          token["secret"])
        assert mux.LiveStreamsApi(mux.ApiClient(config)).list_live_streams().data == []
        # Paths nobody serves keep the API's error envelope, beside the playback routes.
        request = urllib.request.Request(f"{relay.http_url}/video/v1/no-such-thing")
        request.add_header("Authorization", "Basic " + base64.b64encode(
            f"{token['id']}:{token['secret']}".encode()).decode())
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(request, timeout=10)
        assert missing.value.code == 404
        assert json.loads(missing.value.read())["error"]["type"] == "not_found"
    # The secret itself is never stored.
    assert token["secret"].encode() not in (tmp_path / "relay.db").read_bytes()


def test_taken_port_is_one_clear_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        result = relay_cli("serve", "--host", "127.0.0.1", "--http-port", port,
                           "--metrics-port", "0", "--data-dir", str(tmp_path))
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if "error" in line]
    assert len(errors) == 1, result.stderr
    assert "already in use" in errors[0] and "--http-port" in errors[0] and port in errors[0]


def test_unusable_data_dir(tmp_path: Path) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    result = relay_cli("serve", "--host", "127.0.0.1", "--http-port", "0",
                       "--metrics-port", "0", "--data-dir", str(not_a_dir / "sub"))
    assert result.returncode == 1
    assert "data dir" in result.stderr and "--data-dir" in result.stderr


def test_corrupt_database_is_reported(tmp_path: Path) -> None:
    (tmp_path / "relay.db").write_bytes(b"this is not a database" * 100)
    result = relay_cli("serve", "--host", "127.0.0.1", "--http-port", "0",
                       "--metrics-port", "0", "--data-dir", str(tmp_path))
    assert result.returncode == 1
    assert "cannot open the database" in result.stderr


@pytest.mark.parametrize(("env", "named"), [
    ({"RELAY_HTTP_PORT": "eighty"}, "RELAY_HTTP_PORT"),
    ({"RELAY_METRICS_PORT": "70000"}, "RELAY_METRICS_PORT"),
    ({"RELAY_LOG_LEVEL": "loud"}, "RELAY_LOG_LEVEL"),
    ({"RELAY_TOKEN_ID": "only-the-id"}, "RELAY_TOKEN_SECRET"),
    ({"RELAY_TOKEN_ID": "id", "RELAY_TOKEN_SECRET": "short"}, "RELAY_TOKEN_SECRET"),
    ({"RELAY_TOKEN_ID": "id", "RELAY_TOKEN_SECRET": "x" * 31}, "RELAY_TOKEN_SECRET"),
])
def test_bad_settings_exit_2_naming_the_variable(env: dict[str, str], named: str) -> None:
    result = relay_cli("serve", env=env)
    assert result.returncode == 2
    assert named in result.stderr


def test_seeded_secrets_need_32_characters() -> None:
    assert MIN_TOKEN_SECRET_LENGTH == 32
    env = {"RELAY_TOKEN_ID": "app"}
    assert seed_token_from({**env, "RELAY_TOKEN_SECRET": "s" * 32}) is not None
    with pytest.raises(ConfigError, match="at least 32"):
        seed_token_from({**env, "RELAY_TOKEN_SECRET": "s" * 31})


def basic_get(url: str, token: tuple[str, str]) -> int:
    request = urllib.request.Request(url)
    request.add_header("Authorization", "Basic " + base64.b64encode(
        ":".join(token).encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return error.code


def test_token_list_and_revoke(tmp_path: Path) -> None:
    made = [json.loads(relay_cli("token", "create", "--data-dir", str(tmp_path)).stdout)
            for _ in range(2)]
    listed = relay_cli("token", "list", "--data-dir", str(tmp_path))
    assert listed.returncode == 0, listed.stderr
    tokens = json.loads(listed.stdout)
    assert sorted(t["id"] for t in tokens) == sorted(t["id"] for t in made)
    assert all(set(t) == {"id", "created_at"} for t in tokens)
    assert all(t["created_at"].endswith("Z") and "T" in t["created_at"] for t in tokens)
    for token in made:  # never a secret, on either stream
        assert token["secret"] not in listed.stdout + listed.stderr
    kept, revoked = (made[0]["id"], made[0]["secret"]), (made[1]["id"], made[1]["secret"])
    with RelayProcess(tmp_path) as relay:
        url = f"{relay.http_url}/video/v1/live-streams"
        assert basic_get(url, revoked) == 200
        result = relay_cli("token", "revoke", revoked[0], "--data-dir", str(tmp_path))
        assert result.returncode == 0, result.stderr
        # The running server refuses it from the next request on; the other one still works.
        assert basic_get(url, revoked) == 401
        assert basic_get(url, kept) == 200
    assert [t["id"] for t in json.loads(
        relay_cli("token", "list", "--data-dir", str(tmp_path)).stdout)] == [kept[0]]


def test_revoking_an_unknown_token_fails_clearly(tmp_path: Path) -> None:
    result = relay_cli("token", "revoke", "no-such-token", "--data-dir", str(tmp_path))
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if "error" in line]
    assert len(errors) == 1, result.stderr
    assert "no-such-token" in errors[0] and "relay token list" in errors[0]
    assert relay_cli("token", "revoke", "--data-dir", str(tmp_path)).returncode == 2  # no ID


SECRET_PASSWORD = "S3cret-pa55word"


@pytest.mark.parametrize("url", [
    f"postgresql+asyncpg://relay:{SECRET_PASSWORD}@127.0.0.1:1/relay",
    f"sqlite+aiosqlite://relay:{SECRET_PASSWORD}@/no/such/dir/relay.db",
    f"relay:{SECRET_PASSWORD}@localhost/not-a-url",
])
@pytest.mark.parametrize("command", [("serve", "--http-port", "0", "--metrics-port", "0",
                                      "--rtmp-port", "0"), ("token", "list")])
def test_database_password_is_never_shown(tmp_path: Path, url: str,
                                          command: tuple[str, ...]) -> None:
    result = relay_cli(*command, "--data-dir", str(tmp_path), "--database-url", url)
    assert result.returncode == 1
    assert "cannot open the database" in result.stderr
    assert SECRET_PASSWORD not in result.stderr + result.stdout
    if "://" in url:
        assert "relay:***@" in result.stderr  # the rest of the URL helps the operator


def test_data_dir_and_database_are_private(tmp_path: Path) -> None:
    data_dir = tmp_path / "new" / "data"
    assert relay_cli("token", "create", "--data-dir", str(data_dir)).returncode == 0
    assert data_dir.stat().st_mode & 0o777 == 0o700
    assert (data_dir / "relay.db").stat().st_mode & 0o777 == 0o600
    # A database left readable by an older Relay is tightened, and SQLite's WAL files
    # follow the database's mode while the server runs.
    (data_dir / "relay.db").chmod(0o644)
    with RelayProcess(data_dir) as relay:
        with urllib.request.urlopen(relay.http_url + "/readyz", timeout=10):
            pass
        companions = [p for p in data_dir.iterdir() if p.name.startswith("relay.db")]
        assert {p.name for p in companions} >= {"relay.db", "relay.db-wal", "relay.db-shm"}
        for path in companions:
            assert path.stat().st_mode & 0o777 == 0o600, path


def test_flag_beats_env_and_sigint_stops_cleanly(tmp_path: Path) -> None:
    # RELAY_HTTP_PORT would collide with nothing, but the flag (port 0) must win anyway.
    relay = RelayProcess(tmp_path, env={"RELAY_HTTP_PORT": "1"}).start()
    try:
        assert not relay.http_url.endswith(":1")
        with urllib.request.urlopen(relay.http_url + "/healthz", timeout=5) as response:
            assert json.load(response) == {"status": "ok"}
        with urllib.request.urlopen(relay.http_url + "/readyz", timeout=5) as response:
            assert json.load(response) == {"status": "ok"}
        with urllib.request.urlopen(relay.urls["metrics"], timeout=5) as response:
            assert b'relay_build_info{version="' in response.read()
    finally:
        code = relay.stop(signal.SIGINT)
    assert code == 0
    assert any("stopped" in line for line in relay.lines)
    # http, metrics, rtmp, srt
    assert len([line for line in relay.lines if "listening on" in line]) == 4


def test_import_without_native_build_fails_clearly() -> None:
    code = ("import sys; sys.modules['relay._native.buffers'] = None\n"
            "import relay")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode != 0
    assert "native extension" in result.stderr and "pip install ." in result.stderr
