"""Signing keys and playback restrictions: what signed playback is checked against (issue 17).

`/system/v1/signing-keys` (mux-python `SigningKeysApi`) and the older `/video/v1/signing-keys`
(`URLSigningKeysApi`) are one set of keys under two paths, as at Mux. Creating one makes an
RSA 2048 key pair and answers with the private key (base64 of its PEM) once; Relay keeps only
the public key, so a lost private key cannot be recovered, only replaced. Every change is
told to the running playback checks (`PlaybackAccess`), so a deleted key stops its tokens at
once.
"""

from __future__ import annotations

import asyncio
import base64
from typing import Any

from fastapi import APIRouter, Depends, Request, Response

from relay.api.deps import (
    API_ERRORS,
    Limit,
    Page,
    StoreDep,
    answers,
    basic_auth_doc,
    envelope,
    no_content,
)
from relay.api.errors import ApiError, not_found
from relay.api.responses import (
    NewSigningKeyResponse,
    PlaybackRestrictionListResponse,
    PlaybackRestrictionResponse,
    SigningKeyListResponse,
    SigningKeyResponse,
)
from relay.api.schemas import CreatePlaybackRestrictionRequest, ReferrerRule, UserAgentRule
from relay.playback.access import PlaybackAccess
from relay.playback.tokens import load_libraries
from relay.store.records import PlaybackRestriction

#: Most signing keys kept at once: a few per application (one per environment, plus one
#: being rotated in) is the use; every key is held in memory to verify tokens with.
MAX_SIGNING_KEYS = 100
#: Most playback restrictions kept at once; each is held in memory for the playback checks.
MAX_PLAYBACK_RESTRICTIONS = 1000
#: Size of the RSA keys made (Mux's).
SIGNING_KEY_BITS = 2048
#: RSA public exponent (rfc8017 recommends 65537; the only one the `cryptography` package
#: suggests).
RSA_PUBLIC_EXPONENT = 65537

Body = dict[str, Any]


def _access(request: Request) -> PlaybackAccess | None:
    access: PlaybackAccess | None = getattr(request.app.state, "playback_access", None)
    return access


def new_key_pair() -> tuple[str, str]:
    """(base64 of the private key's PEM, the public key's PEM) of a new RSA key. Run in a
    thread: making a 2048-bit key takes tens of milliseconds, and the first one loads
    cryptography and PyJWT (`relay.playback.tokens.load_libraries`), with which the key is
    then read and its tokens checked on the event loop."""
    load_libraries()
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    private = rsa.generate_private_key(public_exponent=RSA_PUBLIC_EXPONENT,
                                       key_size=SIGNING_KEY_BITS)
    # PKCS#1 "RSA PRIVATE KEY", as Mux returns it; PyJWT and the Mux SDKs take it.
    private_pem = private.private_bytes(serialization.Encoding.PEM,
                                        serialization.PrivateFormat.TraditionalOpenSSL,
                                        serialization.NoEncryption())
    public_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(private_pem).decode("ascii"), public_pem.decode("ascii")


def _signing_key_router(prefix: str, tag: str) -> APIRouter:
    router = APIRouter(prefix=prefix, tags=[tag], dependencies=[Depends(basic_auth_doc)],
                       responses=API_ERRORS)

    @router.post("/signing-keys",
                 **answers(201, NewSigningKeyResponse,
                           "The new key, with its private key (returned only here)", 400),
                 summary="Create a signing key")
    async def create_signing_key(request: Request, store: StoreDep) -> Body:
        private_b64, public_pem = await asyncio.to_thread(new_key_pair)
        key = await store.create_signing_key(public_pem, max_keys=MAX_SIGNING_KEYS)
        if key is None:
            raise ApiError(400, f"signing keys: {MAX_SIGNING_KEYS} exist, the most Relay "
                                "keeps (MAX_SIGNING_KEYS); delete one you no longer use")
        access = _access(request)
        if access is not None:
            access.key_added(key)
        return envelope({**key.to_api(), "private_key": private_b64})

    @router.get("/signing-keys",
                **answers(200, SigningKeyListResponse, "One page of signing keys", 400),
                summary="List signing keys, newest first")
    async def list_signing_keys(store: StoreDep, limit: Limit = 25, page: Page = 1) -> Body:
        keys = await store.list_signing_keys(limit=limit, page=page)
        return envelope([k.to_api() for k in keys])

    @router.get("/signing-keys/{signing_key_id}",
                **answers(200, SigningKeyResponse, "The signing key (no private key)", 404),
                summary="Get a signing key")
    async def get_signing_key(signing_key_id: str, store: StoreDep) -> Body:
        key = await store.get_signing_key(signing_key_id)
        if key is None:
            raise not_found("signing key")
        return envelope(key.to_api())

    @router.delete("/signing-keys/{signing_key_id}", **answers(204, None, "Deleted", 404),
                   summary="Delete a signing key: its tokens stop working at once")
    async def delete_signing_key(signing_key_id: str, request: Request,
                                 store: StoreDep) -> Response:
        if not await store.delete_signing_key(signing_key_id):
            raise not_found("signing key")
        access = _access(request)
        if access is not None:
            access.key_deleted(signing_key_id)
        return no_content()

    return router


system_router = _signing_key_router("/system/v1", "signing keys")
video_router = _signing_key_router("/video/v1", "signing keys (older path)")

restrictions_router = APIRouter(prefix="/video/v1/playback-restrictions",
                                tags=["playback restrictions"],
                                dependencies=[Depends(basic_auth_doc)], responses=API_ERRORS)


@restrictions_router.post(
    "", **answers(201, PlaybackRestrictionResponse, "The new playback restriction", 400),
    summary="Create a playback restriction")
async def create_playback_restriction(body: CreatePlaybackRestrictionRequest,
                                      request: Request, store: StoreDep) -> Body:
    user_agent = body.user_agent or UserAgentRule()
    created = await store.create_playback_restriction(
        allowed_domains=body.referrer.allowed_domains,
        allow_no_referrer=body.referrer.allow_no_referrer,
        allow_no_user_agent=user_agent.allow_no_user_agent,
        allow_high_risk_user_agent=user_agent.allow_high_risk_user_agent,
        max_restrictions=MAX_PLAYBACK_RESTRICTIONS)
    if created is None:
        raise ApiError(400, f"playback restrictions: {MAX_PLAYBACK_RESTRICTIONS} exist, the "
                            "most Relay keeps (MAX_PLAYBACK_RESTRICTIONS); delete one first")
    access = _access(request)
    if access is not None:
        access.restriction_changed(created)
    return envelope(created.to_api())


@restrictions_router.get(
    "", **answers(200, PlaybackRestrictionListResponse, "One page of playback restrictions",
                  400),
    summary="List playback restrictions, newest first")
async def list_playback_restrictions(store: StoreDep, limit: Limit = 25,
                                     page: Page = 1) -> Body:
    found = await store.list_playback_restrictions(limit=limit, page=page)
    return envelope([r.to_api() for r in found])


@restrictions_router.get(
    "/{playback_restriction_id}",
    **answers(200, PlaybackRestrictionResponse, "The playback restriction", 404),
    summary="Get a playback restriction")
async def get_playback_restriction(playback_restriction_id: str, store: StoreDep) -> Body:
    found = await store.get_playback_restriction(playback_restriction_id)
    if found is None:
        raise not_found("playback restriction")
    return envelope(found.to_api())


@restrictions_router.delete(
    "/{playback_restriction_id}", **answers(204, None, "Deleted", 404),
    summary="Delete a playback restriction: tokens naming it stop working")
async def delete_playback_restriction(playback_restriction_id: str, request: Request,
                                      store: StoreDep) -> Response:
    if not await store.delete_playback_restriction(playback_restriction_id):
        raise not_found("playback restriction")
    access = _access(request)
    if access is not None:
        access.restriction_deleted(playback_restriction_id)
    return no_content()


@restrictions_router.put(
    "/{playback_restriction_id}/referrer",
    **answers(200, PlaybackRestrictionResponse, "The restriction with its new referrer rule",
              400, 404),
    summary="Replace the referrer rule of a playback restriction")
async def update_referrer(playback_restriction_id: str, body: ReferrerRule,
                          request: Request, store: StoreDep) -> Body:
    changed = await store.update_playback_restriction(
        playback_restriction_id, referrer=(body.allowed_domains, body.allow_no_referrer))
    return _changed(request, changed)


@restrictions_router.put(
    "/{playback_restriction_id}/user_agent",
    **answers(200, PlaybackRestrictionResponse,
              "The restriction with its new user-agent rule", 400, 404),
    summary="Replace the user-agent rule of a playback restriction")
async def update_user_agent(playback_restriction_id: str, body: UserAgentRule,
                            request: Request, store: StoreDep) -> Body:
    changed = await store.update_playback_restriction(
        playback_restriction_id,
        user_agent=(body.allow_no_user_agent, body.allow_high_risk_user_agent))
    return _changed(request, changed)


def _changed(request: Request, changed: PlaybackRestriction | None) -> Body:
    if changed is None:
        raise not_found("playback restriction")
    access = _access(request)
    if access is not None:
        access.restriction_changed(changed)
    return envelope(changed.to_api())
