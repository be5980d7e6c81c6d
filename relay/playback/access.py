"""`PlaybackAccess`: everything a signed playback request is checked against, kept in step
with the API.

The playback routes call `authorize` (a token) or `check_session` (a session value from a
media URI); both raise TokenRefused with the reason for the 403. The API tells it of every
signing key and restriction it creates, changes or deletes, so that a deleted key stops its
tokens at once without a store query per request; `load` fills it from the store at start.
"""

from __future__ import annotations

import asyncio

from relay.playback.restrictions import check_restriction
from relay.playback.sessions import check_session_value, make_session_value, new_session_secret
from relay.playback.tokens import (
    TOKEN_CACHE_ENTRIES,
    Audience,
    Grant,
    RefusalReason,
    TokenRefused,
    TokenVerifier,
    load_libraries,
)
from relay.store import Store
from relay.store.records import PlaybackRestriction, SigningKey


class PlaybackAccess:
    def __init__(self, *, session_secret: bytes | None = None,
                 cache_entries: int = TOKEN_CACHE_ENTRIES) -> None:
        self.verifier = TokenVerifier(cache_entries=cache_entries)
        self.restrictions: dict[str, PlaybackRestriction] = {}
        self._secret = session_secret if session_secret is not None else new_session_secret()

    async def load(self, store: Store) -> None:
        """Take every signing key and restriction the store holds."""
        keys = await store.all_signing_keys()
        if keys:  # the keys are read and their tokens checked with PyJWT and cryptography
            await asyncio.to_thread(load_libraries)
        for key in keys:
            self.key_added(key)
        for restriction in await store.all_playback_restrictions():
            self.restriction_changed(restriction)

    # -- told by the API --------------------------------------------------------------

    def key_added(self, key: SigningKey) -> None:
        self.verifier.keys.add(key.id, key.public_key)

    def key_deleted(self, key_id: str) -> None:
        self.verifier.remove_key(key_id)

    def restriction_changed(self, restriction: PlaybackRestriction) -> None:
        self.restrictions[restriction.id] = restriction

    def restriction_deleted(self, restriction_id: str) -> None:
        self.restrictions.pop(restriction_id, None)

    # -- asked by the playback routes -------------------------------------------------

    def _check_restriction(self, restriction_id: str | None, *, referer: str | None,
                           user_agent: str | None) -> None:
        if restriction_id is None:
            return
        restriction = self.restrictions.get(restriction_id)
        if restriction is None:
            raise TokenRefused(RefusalReason.UNKNOWN_RESTRICTION,
                               "the token names a playback restriction that does not exist")
        check_restriction(restriction, referer=referer, user_agent=user_agent)

    def authorize(self, token: str | None, *, playback_id: str, audience: Audience,
                  now: float, referer: str | None = None,
                  user_agent: str | None = None) -> Grant:
        """The grant of `?token=` for a request of a signed playback id, its restriction
        (if it names one) met by the request's `Referer` and `User-Agent`."""
        if not token:
            raise TokenRefused(RefusalReason.MISSING_TOKEN,
                               "a signed playback id needs ?token=<JWT>")
        grant = self.verifier.verify(token, playback_id=playback_id, audience=audience,
                                     now=now)
        self._check_restriction(grant.restriction_id, referer=referer, user_agent=user_agent)
        return grant

    def session_value(self, grant: Grant) -> str:
        """The value the playlists answering `grant` put on their media URIs."""
        return make_session_value(self._secret, playback_id=grant.playback_id,
                                  audience=grant.audience, expires_at=grant.expires_at,
                                  key_id=grant.key_id, restriction_id=grant.restriction_id)

    def check_session(self, value: str | None, *, playback_id: str, audience: Audience,
                      now: float, referer: str | None = None,
                      user_agent: str | None = None) -> int:
        """The expiry of a media URI's session value, checked like its token was: a
        deleted signing key ends its sessions at once too."""
        if not value:
            raise TokenRefused(RefusalReason.MISSING_TOKEN,
                               "a signed playback id needs ?token=<JWT>")
        expires_at, key_id, restriction_id = check_session_value(
            self._secret, value, playback_id=playback_id, audience=audience, now=now)
        if key_id not in self.verifier.keys:
            raise TokenRefused(RefusalReason.UNKNOWN_KEY,
                               "the session's signing key was deleted")
        self._check_restriction(restriction_id, referer=referer, user_agent=user_agent)
        return expires_at
