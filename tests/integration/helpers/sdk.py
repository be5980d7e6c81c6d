"""What test_sdk.py shares with other test modules: kept here so no test module imports
another."""

from __future__ import annotations

import mux_python as mux

TOKEN = ("sdk-test-token", "sdk-test-secret-0123456789-abcdefghijk")


def sdk(url: str, token: tuple[str, str] = TOKEN, *, validate: bool = True) -> mux.ApiClient:
    config = mux.Configuration()
    config.host = url
    config.username, config.password = token
    config.client_side_validation = validate
    return mux.ApiClient(config)
