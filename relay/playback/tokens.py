"""Verifying playback tokens: RS256 JSON Web Tokens with Mux's claims.

An application signs a token with the private key `POST /system/v1/signing-keys` returned;
Relay keeps only the public key (`SigningKeySet`). A token carries (MUX-API.md, Mux's
"secure video playback" guide):
- `kid`, the signing key id, in the JOSE header (rfc7515 4.1.4) or, as Mux also accepts, in
  the payload;
- `sub`, the playback id; `aud`, what it opens: `v` video, `t` thumbnail, `g` animated GIF,
  `s` storyboard (rfc7519 4.1.3 allows one string or a list of them);
- `exp`, required (rfc7519 4.1.4), in Unix seconds; `nbf`, when present, is honoured;
- optionally `playback_restriction_id`, the restriction whose rules the request must meet.

Only RS256 is accepted, decided before any key is touched: an `alg: none` token or an HS256
token "signed" with the public key's PEM as an HMAC secret (the classic algorithm-confusion
forgery) is refused, whatever the library would do with it. PyJWT is told the algorithm list
too, so the check holds twice.

An RSA signature check and two JSON parses cost about a hundred times a dictionary look-up;
a player reloading an LL-HLS playlist several times a second would pay them on every request,
so verified tokens are remembered (LRU, bounded) until they expire. What depends on the
request (expiry against `now`, `aud`, `sub`) is checked on every use, cached or not; a cached
token whose key was deleted is refused at once.

PyJWT and the cryptography package (with its own OpenSSL) are about 9 MiB of a relay's
memory and tens of milliseconds to import, and only signed playback needs them: they are
imported by `load_libraries`, which the relay runs off the event loop (or before it serves)
once a signing key exists (the store's at start-up, the API's new one) or a signed playback
id is looked up (`relay.hls.routes.PlaybackDirectory`), so a token is never checked, nor a
key read, before they are loaded, and a relay that has neither never loads them
(`tests/unit/test_startup_imports.py`).
"""

from __future__ import annotations

import importlib
import math
import threading
from collections import OrderedDict
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Final, Literal, get_args

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey

Audience = Literal["v", "t", "g", "s"]
AUDIENCES: tuple[Audience, ...] = get_args(Audience)

#: Seconds a token is still taken after its `exp` (and before its `nbf`): clocks of the
#: application that signs and of Relay differ a little (rfc7519 4.1.4 "some small leeway").
CLOCK_SKEW_SECONDS = 10
#: Longest token read at all: a Mux token is under 1000 characters; anything far longer is
#: refused as malformed before it is parsed.
MAX_TOKEN_LENGTH = 4096
#: Verified tokens remembered (LRU); each costs about one token's length of memory.
TOKEN_CACHE_ENTRIES = 10_000
#: Smallest RSA modulus a signing key may have (Relay makes 2048-bit keys).
MIN_RSA_KEY_BITS = 2048
#: Longest key id or restriction id taken from a token (Relay's ids are 40 characters).
MAX_CLAIM_ID_LENGTH = 64

ALGORITHM = "RS256"

#: What `load_libraries` imports.
LIBRARIES: Final = ("jwt", "cryptography.hazmat.primitives.asymmetric.rsa",
                    "cryptography.hazmat.primitives.serialization")
_LOADED: Final = threading.Event()


def load_libraries() -> None:
    """Import PyJWT and cryptography (see the module's docstring). Blocking: the relay calls
    it in a thread, or before it serves; a no-op once done."""
    if not _LOADED.is_set():
        for name in LIBRARIES:
            importlib.import_module(name)
        _LOADED.set()


def libraries_loaded() -> bool:
    """Whether `load_libraries` has run to its end (an import under way in another thread
    is not: the caller would wait for it)."""
    return _LOADED.is_set()


class RefusalReason(StrEnum):
    """Why a request for a signed playback id is refused (the 403's message). A token that
    is not RS256 (`alg: none`, HS256) is refused as a bad signature: none that holds."""

    MALFORMED = "malformed token"
    UNKNOWN_KEY = "unknown key"
    BAD_SIGNATURE = "bad signature"
    MISSING_EXP = "missing exp"
    EXPIRED = "expired"
    NOT_YET_VALID = "not yet valid"
    WRONG_AUDIENCE = "wrong audience"
    WRONG_PLAYBACK_ID = "wrong playback id"
    UNKNOWN_RESTRICTION = "unknown playback restriction"
    REFERRER_NOT_ALLOWED = "referrer not allowed"
    USER_AGENT_NOT_ALLOWED = "user agent not allowed"
    MISSING_TOKEN = "missing token"


class TokenRefused(Exception):
    """A token (or session value) does not open what was asked. `reason` is safe to show
    the client; `detail` says more and never holds the token or any peer value whole."""

    def __init__(self, reason: RefusalReason, detail: str = "") -> None:
        super().__init__(f"{reason.value}: {detail}" if detail else reason.value)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Grant:
    """What a verified token opens, for the request it was checked against."""

    playback_id: str
    audience: Audience
    key_id: str
    expires_at: int  # the token's exp, Unix seconds
    restriction_id: str | None = None


@dataclass(frozen=True, slots=True)
class _Verified:
    # What a token's signature vouches for, independent of any request.
    subject: str
    audiences: frozenset[str]
    key_id: str
    expires_at: int
    not_before: float | None
    restriction_id: str | None


class SigningKeySet:
    """The public keys tokens are verified with, by key id."""

    def __init__(self) -> None:
        self._keys: dict[str, RSAPublicKey] = {}

    def add(self, key_id: str, public_key_pem: str) -> None:
        """Take the key `POST .../signing-keys` made (or the store kept); ValueError when the
        PEM is not an RSA public key of at least MIN_RSA_KEY_BITS. The relay has run
        `load_libraries` before (off the event loop); without it, they load here."""
        load_libraries()
        from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
        from cryptography.hazmat.primitives.serialization import load_pem_public_key

        key = load_pem_public_key(public_key_pem.encode("ascii"))
        if not isinstance(key, RSAPublicKey):
            raise ValueError(f"signing key {key_id}: not an RSA public key")
        if key.key_size < MIN_RSA_KEY_BITS:
            raise ValueError(f"signing key {key_id}: RSA key of {key.key_size} bits; at "
                             f"least {MIN_RSA_KEY_BITS} are needed")
        self._keys[key_id] = key

    def remove(self, key_id: str) -> bool:
        return self._keys.pop(key_id, None) is not None

    def get(self, key_id: str) -> RSAPublicKey | None:
        return self._keys.get(key_id)

    def __contains__(self, key_id: object) -> bool:
        return key_id in self._keys

    def __len__(self) -> int:
        return len(self._keys)


class TokenVerifier:
    """Verifies tokens against a `SigningKeySet`, remembering verified ones (LRU) until they
    expire. Not thread-safe: used from the event loop only."""

    def __init__(self, keys: SigningKeySet | None = None, *,
                 cache_entries: int = TOKEN_CACHE_ENTRIES,
                 leeway: float = CLOCK_SKEW_SECONDS) -> None:
        if cache_entries < 0:
            raise ValueError(f"cache_entries must be 0 or more (got {cache_entries})")
        self.keys = keys if keys is not None else SigningKeySet()
        self.cache_entries = cache_entries
        self.leeway = leeway
        self._cache: OrderedDict[str, _Verified] = OrderedDict()
        self.cache_hits = 0
        self.signature_checks = 0

    @property
    def cached(self) -> int:
        return len(self._cache)

    def remove_key(self, key_id: str) -> bool:
        """Forget a deleted signing key and every remembered token it signed, so they stop
        working at once (a hit checks the key too; this frees their memory now)."""
        removed = self.keys.remove(key_id)
        for token in [t for t, v in self._cache.items() if v.key_id == key_id]:
            del self._cache[token]
        return removed

    def verify(self, token: str, *, playback_id: str, audience: Audience,
               now: float) -> Grant:
        """The grant `token` gives for `audience` of `playback_id` at `now`, or TokenRefused
        naming why not."""
        verified = self._cache.get(token)
        if verified is not None and verified.key_id in self.keys:
            self._cache.move_to_end(token)
            self.cache_hits += 1
        else:
            if verified is not None:  # its key was deleted
                del self._cache[token]
            verified = self._verify_signature(token)
        try:
            grant = self._grant(verified, playback_id=playback_id, audience=audience,
                                now=now)
        except TokenRefused as refused:
            if refused.reason is RefusalReason.EXPIRED:
                self._cache.pop(token, None)  # it will never be good again
            raise
        # Remembered only once it has been good for a request; an expired one never is.
        if self.cache_entries and token not in self._cache:
            self._cache[token] = verified
            while len(self._cache) > self.cache_entries:
                self._cache.popitem(last=False)
        return grant

    def _grant(self, verified: _Verified, *, playback_id: str, audience: Audience,
               now: float) -> Grant:
        if now > verified.expires_at + self.leeway:
            raise TokenRefused(RefusalReason.EXPIRED,
                               f"exp {verified.expires_at} is {now - verified.expires_at:.0f}"
                               f" s ago (allowance {self.leeway:g} s)")
        if verified.not_before is not None and now + self.leeway < verified.not_before:
            raise TokenRefused(RefusalReason.NOT_YET_VALID,
                               f"nbf {verified.not_before:.0f} is in the future")
        if audience not in verified.audiences:
            raise TokenRefused(RefusalReason.WRONG_AUDIENCE,
                               f"this request needs aud '{audience}'")
        if verified.subject != playback_id:
            raise TokenRefused(RefusalReason.WRONG_PLAYBACK_ID,
                               "the token's sub is another playback id")
        return Grant(playback_id=playback_id, audience=audience, key_id=verified.key_id,
                     expires_at=verified.expires_at,
                     restriction_id=verified.restriction_id)

    def _verify_signature(self, token: str) -> _Verified:
        import jwt  # loaded before any signing key or signed playback id (module docstring)

        if not token or len(token) > MAX_TOKEN_LENGTH or not token.isascii():
            raise TokenRefused(RefusalReason.MALFORMED,
                               f"a token is 1 to {MAX_TOKEN_LENGTH} ASCII characters "
                               f"(got {len(token)})")
        try:
            header = jwt.get_unverified_header(token)
            # Read unverified only to find the key; nothing here is trusted until the
            # signature over it has been checked below.
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError as exc:
            raise TokenRefused(RefusalReason.MALFORMED, type(exc).__name__) from None
        if header.get("alg") != ALGORITHM:
            alg = header.get("alg")
            shown = alg[:16] if isinstance(alg, str) else type(alg).__name__
            raise TokenRefused(RefusalReason.BAD_SIGNATURE,
                               f"alg '{shown}' is not accepted; tokens are {ALGORITHM}")
        key_id = _claim_id(header.get("kid", unverified.get("kid")), "kid")
        if key_id is None:
            raise TokenRefused(RefusalReason.UNKNOWN_KEY,
                               "no kid in the token's header or payload")
        key = self.keys.get(key_id)
        if key is None:
            raise TokenRefused(RefusalReason.UNKNOWN_KEY,
                               "no signing key has the token's kid (deleted, or never made)")
        self.signature_checks += 1
        try:
            # exp, nbf and aud are checked by _grant against the caller's clock and request.
            claims: dict[str, Any] = jwt.decode(
                token, key, algorithms=[ALGORITHM],
                options={"verify_exp": False, "verify_nbf": False, "verify_iat": False,
                         "verify_aud": False, "verify_iss": False})
        except jwt.InvalidSignatureError:
            raise TokenRefused(RefusalReason.BAD_SIGNATURE,
                               "the signature does not match the signing key") from None
        except jwt.InvalidAlgorithmError:
            raise TokenRefused(RefusalReason.BAD_SIGNATURE,
                               f"tokens are {ALGORITHM}") from None
        except jwt.PyJWTError as exc:
            raise TokenRefused(RefusalReason.MALFORMED, type(exc).__name__) from None
        return _verified_claims(claims, key_id)


def _claim_id(value: Any, name: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value or len(value) > MAX_CLAIM_ID_LENGTH:
        raise TokenRefused(RefusalReason.MALFORMED,
                           f"{name} must be a string of 1 to {MAX_CLAIM_ID_LENGTH} characters")
    return value


def _number(value: Any) -> bool:
    # Python's JSON reader takes NaN and Infinity; a NaN exp would compare as never expired.
    return isinstance(value, int | float) and not isinstance(value, bool) and \
        math.isfinite(value)


def _verified_claims(claims: dict[str, Any], key_id: str) -> _Verified:
    exp = claims.get("exp")
    if exp is None:
        raise TokenRefused(RefusalReason.MISSING_EXP,
                           "a token must carry exp (Unix seconds when it stops working)")
    if not _number(exp):
        raise TokenRefused(RefusalReason.MALFORMED, "exp must be a number of Unix seconds")
    nbf = claims.get("nbf")
    if nbf is not None and not _number(nbf):
        raise TokenRefused(RefusalReason.MALFORMED, "nbf must be a number of Unix seconds")
    aud = claims.get("aud")
    audiences = [aud] if isinstance(aud, str) else aud
    if not isinstance(audiences, list) or not all(isinstance(a, str) for a in audiences):
        raise TokenRefused(RefusalReason.WRONG_AUDIENCE,
                           f"aud must be one of {', '.join(AUDIENCES)} (or a list of them)")
    subject = claims.get("sub")
    if not isinstance(subject, str):
        raise TokenRefused(RefusalReason.WRONG_PLAYBACK_ID,
                           "sub must be the playback id, a string")
    return _Verified(
        subject=subject, audiences=frozenset(audiences), key_id=key_id,
        expires_at=int(exp), not_before=None if nbf is None else float(nbf),
        restriction_id=_claim_id(claims.get("playback_restriction_id"),
                                 "playback_restriction_id"))
