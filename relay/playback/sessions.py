"""The session value the playlists of a signed playback id put on their media URIs.

A player is given one tokenised URL (`/{PLAYBACK_ID}.m3u8?token=JWT`) and then follows the
URIs in the playlists it gets; with Mux, those URIs carry what makes them work, so a player
signs once. Relay's playlists carry a session value instead of the token: an HMAC-SHA256
(rfc2104) with a server secret over the playback id, the audience, the expiry (the token's
`exp`), the signing key id and the token's playback restriction id, so that it opens only
that playback id, only until the token would have expired, only while the signing key exists
and only under the same restriction. It checks with one HMAC instead of an RSA verification
and leaks no token.

The value is `EXP.KID.RESTRICTION.MAC`: EXP in Unix seconds, KID the signing key id,
RESTRICTION the restriction id or empty, MAC the first SESSION_MAC_BYTES of the HMAC in
unpadded base64url (rfc4648 5). Ids are alphanumeric, as Relay makes them.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import secrets
from pathlib import Path

from relay.playback.tokens import Audience, RefusalReason, TokenRefused

#: Bytes of a server secret (HMAC-SHA256 takes up to its block size, 64).
SESSION_SECRET_BYTES = 32
#: Bytes of the HMAC kept in a value: 128 bits, beyond guessing within any expiry.
SESSION_MAC_BYTES = 16
#: Longest value read at all.
MAX_SESSION_VALUE_LENGTH = 192
#: The file in the data dir that keeps the server secret across restarts.
SESSION_SECRET_FILE = "playback-session.key"
#: The query parameter of media URIs that carries the value.
SESSION_PARAMETER = "session"

_VALUE = re.compile(
    r"([0-9]{1,12})\.([A-Za-z0-9]{1,64})\.([A-Za-z0-9]{0,64})\.([A-Za-z0-9_-]{22})")
_ID = re.compile(r"[A-Za-z0-9]{1,64}")
_DOMAIN = b"relay playback session v1"  # keeps these MACs apart from any other use of the key


def new_session_secret() -> bytes:
    return secrets.token_bytes(SESSION_SECRET_BYTES)


def load_session_secret(path: Path) -> bytes:
    """The secret kept in `path` (made, readable by its owner only, when missing), so that
    the session values of players keep working across a restart of Relay."""
    try:
        secret = path.read_bytes()
    except FileNotFoundError:
        secret = _make_session_secret(path)
    if len(secret) != SESSION_SECRET_BYTES:
        raise ValueError(f"{path} holds {len(secret)} bytes; a session secret is "
                         f"{SESSION_SECRET_BYTES} (delete the file to make a new one)")
    return secret


def _make_session_secret(path: Path) -> bytes:
    """Write a new secret to `path` whole, or return the one another process wrote there
    first: nodes sharing a data dir start at the same moment (`relay serve --workers`). The
    secret is written to a file of this process's own and linked into place, which fails
    if `path` exists, so no process ever reads a half-written secret or replaces another's."""
    secret = new_session_secret()
    partial = path.with_name(f"{path.name}.{os.getpid()}.new")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(secret)
            out.flush()
            os.fsync(out.fileno())
        try:
            os.link(partial, path)
        except FileExistsError:
            return path.read_bytes()
    finally:
        partial.unlink(missing_ok=True)
    return secret


def _mac(secret: bytes, playback_id: str, audience: Audience, expires_at: int,
         key_id: str, restriction_id: str) -> str:
    # Length-prefixed fields: no two different tuples give the same message.
    fields = [playback_id, audience, str(expires_at), key_id, restriction_id]
    message = _DOMAIN + b"".join(b"%d:%s" % (len(f.encode()), f.encode()) for f in fields)
    digest = hmac.new(secret, message, hashlib.sha256).digest()[:SESSION_MAC_BYTES]
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def make_session_value(secret: bytes, *, playback_id: str, audience: Audience,
                       expires_at: int, key_id: str,
                       restriction_id: str | None = None) -> str:
    """The value media URIs of `playback_id` carry until `expires_at` (Unix seconds), for a
    token signed with `key_id` naming `restriction_id`."""
    if not 0 <= expires_at < 10**12:
        raise ValueError(f"expires_at must be Unix seconds (got {expires_at})")
    rid = restriction_id or ""
    for name, value in (("key_id", key_id), ("restriction_id", rid or "x")):
        if _ID.fullmatch(value) is None:
            raise ValueError(f"{name} must be 1 to 64 letters and digits")
    mac = _mac(secret, playback_id, audience, expires_at, key_id, rid)
    return f"{expires_at}.{key_id}.{rid}.{mac}"


def check_session_value(secret: bytes, value: str, *, playback_id: str,
                        audience: Audience, now: float) -> tuple[int, str, str | None]:
    """(expires_at, key id, restriction id or None) of a good value for `playback_id` (the
    caller checks that the key still exists); otherwise
    TokenRefused: malformed, bad signature (another playback id, audience or secret, or
    altered), or expired. No clock-skew allowance: Relay made the value with its own clock."""
    match = _VALUE.fullmatch(value) if len(value) <= MAX_SESSION_VALUE_LENGTH else None
    if match is None:
        raise TokenRefused(RefusalReason.MALFORMED, "the session value is not one Relay made")
    expires_at, key_id, rid = int(match[1]), match[2], match[3]
    expected = _mac(secret, playback_id, audience, expires_at, key_id, rid)
    if not hmac.compare_digest(expected, match[4]):
        raise TokenRefused(RefusalReason.BAD_SIGNATURE,
                           "the session value was not made for this playback id")
    if now > expires_at:
        raise TokenRefused(RefusalReason.EXPIRED, f"the session ended at {expires_at}")
    return expires_at, key_id, rid or None
