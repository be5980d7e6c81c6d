"""The token core without I/O: each refusal reason, the cache, restrictions, session values.

Keys are made by the API's own key maker (`relay.api.signing.new_key_pair`), whose private
half is what `POST /system/v1/signing-keys` returns; tokens are signed with PyJWT as an
application would (or by hand, for the forgeries PyJWT will not make).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import stat
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import jwt
import pytest
from hypothesis import given
from hypothesis import strategies as st

from relay.api.signing import new_key_pair
from relay.playback import sessions
from relay.playback.access import PlaybackAccess
from relay.playback.restrictions import (
    MAX_REFERER_LENGTH,
    check_restriction,
    domain_allowed,
    normalize_allowed_domain,
)
from relay.playback.sessions import (
    SESSION_SECRET_BYTES,
    check_session_value,
    load_session_secret,
    make_session_value,
)
from relay.playback.tokens import (
    CLOCK_SKEW_SECONDS,
    MAX_TOKEN_LENGTH,
    RefusalReason,
    SigningKeySet,
    TokenRefused,
    TokenVerifier,
)
from relay.store.records import PlaybackRestriction

NOW = 1_800_000_000
KID, OTHER_KID = "K" * 40, "O" * 40


@pytest.fixture(scope="module")
def pairs() -> dict[str, tuple[bytes, str]]:
    made = {}
    for kid in (KID, OTHER_KID):
        private_b64, public_pem = new_key_pair()
        made[kid] = (base64.b64decode(private_b64), public_pem)
    return made


@pytest.fixture
def verifier(pairs: dict[str, tuple[bytes, str]]) -> TokenVerifier:
    keys = SigningKeySet()
    for kid, (_, public) in pairs.items():
        keys.add(kid, public)
    return TokenVerifier(keys)


def sign(pairs: dict[str, tuple[bytes, str]], *, kid: str | None = KID,
         key_of: str = KID, kid_in_payload: bool = False, **claims: Any) -> str:
    payload = {"sub": "PID", "aud": "v", "exp": NOW + 300, **claims}
    headers = {}
    if kid is not None:
        if kid_in_payload:
            payload["kid"] = kid
        else:
            headers["kid"] = kid
    return jwt.encode({k: v for k, v in payload.items() if v is not None},
                      pairs[key_of][0], algorithm="RS256", headers=headers)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def refusal(verifier: TokenVerifier, token: str, *, playback_id: str = "PID",
            audience: Any = "v", now: float = NOW) -> RefusalReason:
    with pytest.raises(TokenRefused) as refused:
        verifier.verify(token, playback_id=playback_id, audience=audience, now=now)
    assert len(token) < 4 or token not in str(refused.value)  # never carries the token
    return refused.value.reason


def test_a_valid_token_with_kid_in_header_or_payload(verifier: TokenVerifier,
                                                     pairs: Any) -> None:
    for token in (sign(pairs), sign(pairs, kid_in_payload=True)):
        grant = verifier.verify(token, playback_id="PID", audience="v", now=NOW)
        assert (grant.playback_id, grant.audience, grant.key_id) == ("PID", "v", KID)
        assert grant.expires_at == NOW + 300 and grant.restriction_id is None
    grant = verifier.verify(sign(pairs, aud=["t", "s"], playback_restriction_id="R1"),
                            playback_id="PID", audience="s", now=NOW)
    assert grant.audience == "s" and grant.restriction_id == "R1"


def test_expiry_has_a_small_allowance(verifier: TokenVerifier, pairs: Any) -> None:
    token = sign(pairs, exp=NOW)
    verifier.verify(token, playback_id="PID", audience="v", now=NOW + CLOCK_SKEW_SECONDS)
    assert refusal(verifier, token, now=NOW + CLOCK_SKEW_SECONDS + 1) is \
        RefusalReason.EXPIRED
    assert refusal(verifier, sign(pairs, exp=NOW - 3600)) is RefusalReason.EXPIRED
    assert refusal(verifier, sign(pairs, exp=None)) is RefusalReason.MISSING_EXP
    assert refusal(verifier, sign(pairs, nbf=NOW + 3600)) is RefusalReason.NOT_YET_VALID
    assert refusal(verifier, sign(pairs, exp="soon")) is RefusalReason.MALFORMED


def test_a_nan_exp_is_not_forever(verifier: TokenVerifier, pairs: Any) -> None:
    # Python's JSON reader takes NaN; PyJWT signs bytes as given.
    token = jwt.api_jws.PyJWS().encode(b'{"sub":"PID","aud":"v","exp":NaN}', pairs[KID][0],
                                       algorithm="RS256", headers={"kid": KID})
    assert refusal(verifier, token) is RefusalReason.MALFORMED


def test_wrong_audience_and_playback_id(verifier: TokenVerifier, pairs: Any) -> None:
    assert refusal(verifier, sign(pairs, aud="t")) is RefusalReason.WRONG_AUDIENCE
    assert refusal(verifier, sign(pairs, aud=None)) is RefusalReason.WRONG_AUDIENCE
    assert refusal(verifier, sign(pairs), audience="g") is RefusalReason.WRONG_AUDIENCE
    assert refusal(verifier, sign(pairs, sub="OTHER")) is RefusalReason.WRONG_PLAYBACK_ID
    assert refusal(verifier, sign(pairs), playback_id="OTHER") is \
        RefusalReason.WRONG_PLAYBACK_ID


def test_alg_none_is_refused(verifier: TokenVerifier) -> None:
    header = b64url(json.dumps({"alg": "none", "typ": "JWT", "kid": KID}).encode())
    payload = b64url(json.dumps({"sub": "PID", "aud": "v", "exp": NOW + 300}).encode())
    for token in (f"{header}.{payload}.", f"{header}.{payload}.AAAA"):
        assert refusal(verifier, token) is RefusalReason.BAD_SIGNATURE


def test_hs256_signed_with_the_public_key_is_refused(verifier: TokenVerifier,
                                                     pairs: Any) -> None:
    # The algorithm-confusion forgery: the public PEM (which anyone may have) as HMAC secret.
    header = b64url(json.dumps({"alg": "HS256", "typ": "JWT", "kid": KID}).encode())
    payload = b64url(json.dumps({"sub": "PID", "aud": "v", "exp": NOW + 300}).encode())
    signing_input = f"{header}.{payload}".encode()
    mac = hmac.new(pairs[KID][1].encode(), signing_input, hashlib.sha256).digest()
    assert refusal(verifier, f"{header}.{payload}.{b64url(mac)}") is \
        RefusalReason.BAD_SIGNATURE
    # RS256 claimed over an HS256 signature fails the RSA check too.
    header_rs = b64url(json.dumps({"alg": "RS256", "kid": KID}).encode())
    forged = hmac.new(pairs[KID][1].encode(), f"{header_rs}.{payload}".encode(),
                      hashlib.sha256).digest()
    assert refusal(verifier, f"{header_rs}.{payload}.{b64url(forged)}") is \
        RefusalReason.BAD_SIGNATURE


def test_keys(verifier: TokenVerifier, pairs: Any) -> None:
    assert refusal(verifier, sign(pairs, kid="nope")) is RefusalReason.UNKNOWN_KEY
    assert refusal(verifier, sign(pairs, kid=None)) is RefusalReason.UNKNOWN_KEY
    # Signed with one key, naming the other.
    assert refusal(verifier, sign(pairs, kid=OTHER_KID, key_of=KID)) is \
        RefusalReason.BAD_SIGNATURE
    assert refusal(verifier, sign(pairs, kid="x" * 65)) is RefusalReason.MALFORMED


def test_a_deleted_key_stops_its_tokens_at_once(verifier: TokenVerifier,
                                                pairs: Any) -> None:
    mine, other = sign(pairs), sign(pairs, kid=OTHER_KID, key_of=OTHER_KID)
    for token in (mine, mine, other):
        verifier.verify(token, playback_id="PID", audience="v", now=NOW)
    assert verifier.cached == 2 and verifier.cache_hits == 1
    assert verifier.remove_key(KID)
    assert verifier.cached == 1
    assert refusal(verifier, mine) is RefusalReason.UNKNOWN_KEY
    verifier.verify(other, playback_id="PID", audience="v", now=NOW)
    # Removed behind the verifier's back (the key set alone): still refused, not cached.
    verifier.keys.remove(OTHER_KID)
    assert refusal(verifier, other) is RefusalReason.UNKNOWN_KEY
    assert verifier.cached == 0


def test_malformed(verifier: TokenVerifier, pairs: Any) -> None:
    for token in ("", "abc", "a.b.c", "é" * 10, "a" * (MAX_TOKEN_LENGTH + 1),
                  sign(pairs)[:-1] + "!"):
        assert refusal(verifier, token) in (RefusalReason.MALFORMED,
                                            RefusalReason.BAD_SIGNATURE)
    assert refusal(verifier, "a" * (MAX_TOKEN_LENGTH + 1)) is RefusalReason.MALFORMED


def test_the_cache_is_bounded_and_checks_each_request(pairs: Any) -> None:
    keys = SigningKeySet()
    keys.add(KID, pairs[KID][1])
    verifier = TokenVerifier(keys, cache_entries=2)
    tokens = [sign(pairs, sub=f"P{n}") for n in range(3)]
    for n, token in enumerate(tokens):
        verifier.verify(token, playback_id=f"P{n}", audience="v", now=NOW)
    assert verifier.signature_checks == 3 and verifier.cached == 2
    verifier.verify(tokens[2], playback_id="P2", audience="v", now=NOW)
    assert verifier.signature_checks == 3  # remembered
    verifier.verify(tokens[0], playback_id="P0", audience="v", now=NOW)
    assert verifier.signature_checks == 4  # evicted as the least recently used
    # A remembered token is still held to the request and the clock.
    assert refusal(verifier, tokens[2], playback_id="P1") is RefusalReason.WRONG_PLAYBACK_ID
    assert refusal(verifier, tokens[2], playback_id="P2", audience="t") is \
        RefusalReason.WRONG_AUDIENCE
    assert refusal(verifier, tokens[2], playback_id="P2", now=NOW + 3600) is \
        RefusalReason.EXPIRED
    assert verifier.cached == 1  # an expired token is forgotten
    verifier.verify(tokens[2], playback_id="P2", audience="v", now=NOW)
    assert verifier.signature_checks == 5
    # A refused token is never remembered.
    expired = sign(pairs, exp=NOW - 3600)
    refusal(verifier, expired)
    refusal(verifier, expired)
    assert verifier.signature_checks == 7


def test_a_key_must_be_rsa_2048(pairs: Any) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    keys = SigningKeySet()
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024).public_key()
    ec_key = ec.generate_private_key(ec.SECP256R1()).public_key()
    for key in (small, ec_key):
        pem = key.public_bytes(serialization.Encoding.PEM,
                               serialization.PublicFormat.SubjectPublicKeyInfo).decode()
        with pytest.raises(ValueError):
            keys.add("k", pem)
    assert len(keys) == 0


# -- restrictions --------------------------------------------------------------------------

def restriction(*domains: str, allow_no_referrer: bool = False,
                allow_no_user_agent: bool = True,
                allow_high_risk_user_agent: bool = True) -> PlaybackRestriction:
    return PlaybackRestriction(
        id="R1", created_at=NOW, updated_at=NOW,
        allowed_domains=tuple(normalize_allowed_domain(d) for d in domains),
        allow_no_referrer=allow_no_referrer, allow_no_user_agent=allow_no_user_agent,
        allow_high_risk_user_agent=allow_high_risk_user_agent)


@pytest.mark.parametrize(("domains", "referer", "admitted"), [
    (("*.example.com",), "https://a.example.com/", True),
    (("*.example.com",), "https://b.a.example.com/watch?x=1", True),
    (("*.example.com",), "https://A.EXAMPLE.COM./", True),
    (("*.example.com",), "https://a.example.com:8443/", True),
    (("*.example.com",), "https://example.com/", False),
    (("*.example.com", "example.com"), "https://example.com/", True),
    (("*.example.com",), "https://evil.test/", False),
    (("*.example.com",), "https://evilexample.com/", False),
    (("*.example.com",), "https://a.example.com.evil.test/", False),
    (("*.example.com",), "https://.example.com/", False),
    (("*.example.com",), "not a url", False),
    (("example.com",), "https://www.example.com/", False),
    (("*",), "https://anything.test/", True),
    ((), "https://a.example.com/", False),
    (("*.example.com",), None, False),
    (("*",), None, False),
])
def test_referrer(domains: tuple[str, ...], referer: str | None, admitted: bool) -> None:
    rule = restriction(*domains)
    if admitted:
        check_restriction(rule, referer=referer, user_agent="Mozilla/5.0")
    else:
        with pytest.raises(TokenRefused) as refused:
            check_restriction(rule, referer=referer, user_agent="Mozilla/5.0")
        assert refused.value.reason is RefusalReason.REFERRER_NOT_ALLOWED


def test_no_referrer_and_user_agents() -> None:
    check_restriction(restriction(allow_no_referrer=True), referer=None, user_agent=None)
    check_restriction(restriction(allow_no_referrer=True), referer="", user_agent="curl/8")
    strict = restriction(allow_no_referrer=True, allow_no_user_agent=False,
                         allow_high_risk_user_agent=False)
    check_restriction(strict, referer=None, user_agent="Mozilla/5.0 (X11; Linux) Chrome/120")
    for agent in (None, "", "curl/8.5.0", "python-requests/2.31"):
        with pytest.raises(TokenRefused) as refused:
            check_restriction(strict, referer=None, user_agent=agent)
        assert refused.value.reason is RefusalReason.USER_AGENT_NOT_ALLOWED


def test_access_checks_the_named_restriction(pairs: Any) -> None:
    access = PlaybackAccess()
    access.verifier.keys.add(KID, pairs[KID][1])
    access.restriction_changed(restriction("*.example.com"))
    token = sign(pairs, playback_restriction_id="R1")
    access.authorize(token, playback_id="PID", audience="v", now=NOW,
                     referer="https://a.example.com/")
    with pytest.raises(TokenRefused) as refused:
        access.authorize(token, playback_id="PID", audience="v", now=NOW,
                         referer="https://evil.test/")
    assert refused.value.reason is RefusalReason.REFERRER_NOT_ALLOWED
    access.restriction_deleted("R1")
    with pytest.raises(TokenRefused) as refused:
        access.authorize(token, playback_id="PID", audience="v", now=NOW,
                         referer="https://a.example.com/")
    assert refused.value.reason is RefusalReason.UNKNOWN_RESTRICTION
    with pytest.raises(TokenRefused) as refused:
        access.authorize(None, playback_id="PID", audience="v", now=NOW)
    assert refused.value.reason is RefusalReason.MISSING_TOKEN


# -- session values ------------------------------------------------------------------------

SECRET = b"s" * SESSION_SECRET_BYTES


def test_session_value_round_trip_and_binding() -> None:
    value = make_session_value(SECRET, playback_id="PID", audience="v", expires_at=NOW + 60,
                               key_id=KID, restriction_id="R1")
    assert check_session_value(SECRET, value, playback_id="PID", audience="v", now=NOW) == \
        (NOW + 60, KID, "R1")
    plain = make_session_value(SECRET, playback_id="PID", audience="v", expires_at=NOW + 60,
                               key_id=KID)
    assert check_session_value(SECRET, plain, playback_id="PID", audience="v",
                               now=NOW)[2] is None
    exp, kid, rid, mac = value.split(".")
    cases = {
        RefusalReason.BAD_SIGNATURE: [
            (value, "OTHER", "v", SECRET), (value, "PID", "t", SECRET),
            (value, "PID", "v", b"t" * SESSION_SECRET_BYTES),
            (f"{int(exp) + 3600}.{kid}.{rid}.{mac}", "PID", "v", SECRET),
            (f"{exp}.{OTHER_KID}.{rid}.{mac}", "PID", "v", SECRET),
            (f"{exp}.{kid}..{mac}", "PID", "v", SECRET),
        ],
        RefusalReason.MALFORMED: [
            ("", "PID", "v", SECRET), ("x" * 500, "PID", "v", SECRET),
            (f"{exp}.{kid}.{rid}.{mac}!", "PID", "v", SECRET),
            (f"-1.{kid}.{rid}.{mac}", "PID", "v", SECRET),
        ],
    }
    for reason, tries in cases.items():
        for candidate, pid, aud, secret in tries:
            with pytest.raises(TokenRefused) as refused:
                check_session_value(secret, candidate, playback_id=pid, audience=aud,
                                    now=NOW)
            assert refused.value.reason is reason, candidate
    with pytest.raises(TokenRefused) as refused:
        check_session_value(SECRET, value, playback_id="PID", audience="v", now=NOW + 61)
    assert refused.value.reason is RefusalReason.EXPIRED


def test_sessions_end_with_their_key(pairs: Any) -> None:
    access = PlaybackAccess()
    access.verifier.keys.add(KID, pairs[KID][1])
    grant = access.authorize(sign(pairs), playback_id="PID", audience="v", now=NOW)
    value = access.session_value(grant)
    assert access.check_session(value, playback_id="PID", audience="v", now=NOW) == \
        grant.expires_at
    access.key_deleted(KID)
    with pytest.raises(TokenRefused) as refused:
        access.check_session(value, playback_id="PID", audience="v", now=NOW)
    assert refused.value.reason is RefusalReason.UNKNOWN_KEY


def test_the_session_secret_is_kept_private(tmp_path: Path) -> None:
    path = tmp_path / "session.key"
    made = load_session_secret(path)
    assert len(made) == SESSION_SECRET_BYTES
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_session_secret(path) == made
    path.write_bytes(b"short")
    with pytest.raises(ValueError, match="delete the file"):
        load_session_secret(path)


def test_nodes_starting_together_share_one_session_secret(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another process (a node on the same data dir) writes the secret while this one makes
    its own: this one takes the other's, whole, and leaves no file of its own behind."""
    path = tmp_path / "session.key"
    theirs = b"t" * SESSION_SECRET_BYTES
    made = sessions.new_session_secret

    def racing() -> bytes:
        path.write_bytes(theirs)  # the other node, between our read and our write
        return made()

    monkeypatch.setattr(sessions, "new_session_secret", racing)
    assert load_session_secret(path) == theirs
    assert path.read_bytes() == theirs
    assert [p.name for p in tmp_path.iterdir()] == ["session.key"]


def test_nodes_starting_at_once_agree_on_the_session_secret(tmp_path: Path) -> None:
    path = tmp_path / "session.key"
    with ProcessPoolExecutor(4) as pool:
        secrets = set(pool.map(load_session_secret, [path] * 16))
    assert secrets == {path.read_bytes()}


def test_a_referer_past_the_limit_is_refused() -> None:
    rule = restriction("*")
    check_restriction(rule, referer="https://a.test/" + "x" * 100, user_agent=None)
    with pytest.raises(TokenRefused) as refused:
        check_restriction(rule, referer="https://a.test/" + "x" * MAX_REFERER_LENGTH,
                          user_agent=None)
    assert refused.value.reason is RefusalReason.REFERRER_NOT_ALLOWED


_labels = st.lists(st.sampled_from(["a", "b", "example", "com", "xcom", "x-y", "0"]),
                   min_size=1, max_size=4)


@given(allowed=_labels, host=_labels, wildcard=st.booleans())
def test_domain_matching_agrees_with_a_label_by_label_reading(
        allowed: list[str], host: list[str], wildcard: bool) -> None:
    # The reference reads names as label lists: an exact entry equals the host; `*.` + d
    # admits a host with more labels than d whose last labels are d's (rfc4592 2.1.1).
    entry = ("*." if wildcard else "") + ".".join(allowed)
    expected = (len(host) > len(allowed) and host[-len(allowed):] == allowed) if wildcard \
        else host == allowed
    assert domain_allowed(".".join(host), (entry,)) is expected


def test_a_bad_session_secret_stops_start_up_with_the_fix(tmp_path: Path) -> None:
    from relay.app import StartupError, session_secret
    path = tmp_path / "secret"
    path.write_bytes(b"short")
    with pytest.raises(StartupError, match="delete it to have a new one made"):
        session_secret(path)
    with pytest.raises(StartupError, match="cannot read or make"):
        session_secret(tmp_path / "missing-dir" / "secret")
