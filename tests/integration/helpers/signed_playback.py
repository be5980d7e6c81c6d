"""What test_signed_playback.py shares with other test modules: kept here so no test module imports
another."""

from __future__ import annotations

import base64
import time
from typing import Any

import jwt


def token_for(key: dict[str, Any], playback_id: str, **claims: Any) -> str:
    payload = {"sub": playback_id, "aud": "v", "exp": int(time.time()) + 600, **claims}
    return jwt.encode(payload, base64.b64decode(key["private_key"]), algorithm="RS256",
                      headers={"kid": key["id"]})
