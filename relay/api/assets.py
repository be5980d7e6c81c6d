"""`/video/v1/assets`: the recordings of live streams, and `/video/v1/playback-ids`."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Response

from relay.api.deps import (
    API_ERRORS,
    AssetFilesDep,
    Limit,
    Page,
    StoreDep,
    answers,
    basic_auth_doc,
    envelope,
    no_content,
)
from relay.api.errors import not_found
from relay.api.responses import (
    AssetListResponse,
    AssetResponse,
    PlaybackIdLookupResponse,
    PlaybackIdResponse,
)
from relay.api.schemas import CreatePlaybackIdRequest

router = APIRouter(prefix="/video/v1", tags=["assets"], dependencies=[Depends(basic_auth_doc)],
                   responses=API_ERRORS)

Body = dict[str, Any]


@router.get("/assets", **answers(200, AssetListResponse, "One page of assets", 400),
            summary="List assets, newest first")
async def list_assets(
    store: StoreDep,
    limit: Limit = 25,
    page: Page = 1,
    live_stream_id: Annotated[str | None, Query(max_length=64)] = None,
) -> Body:
    found = await store.list_assets(limit=limit, page=page, live_stream_id=live_stream_id)
    return envelope([a.to_api() for a in found])


@router.get("/assets/{asset_id}", **answers(200, AssetResponse, "The asset", 404),
            summary="Get an asset")
async def get_asset(asset_id: str, store: StoreDep) -> Body:
    asset = await store.get_asset(asset_id)
    if asset is None:
        raise not_found("asset")
    return envelope(asset.to_api())


@router.delete("/assets/{asset_id}", **answers(204, None, "Deleted", 404),
               summary="Delete an asset")
async def delete_asset(asset_id: str, store: StoreDep, files: AssetFilesDep) -> Response:
    if not await store.delete_asset(asset_id):
        raise not_found("asset")
    if files is not None:
        await files.delete(asset_id)
    return no_content()


@router.post("/assets/{asset_id}/playback-ids",
             **answers(201, PlaybackIdResponse, "The new playback id", 400, 404),
             summary="Add a playback id to an asset")
async def create_asset_playback_id(
    asset_id: str, body: CreatePlaybackIdRequest, store: StoreDep
) -> Body:
    pid = await store.create_playback_id("asset", asset_id, body.policy)
    if pid is None:
        raise not_found("asset")
    return envelope(pid.to_api())


@router.get("/assets/{asset_id}/playback-ids/{playback_id}",
            **answers(200, PlaybackIdResponse, "The playback id", 404),
            summary="Get a playback id of an asset")
async def get_asset_playback_id(asset_id: str, playback_id: str, store: StoreDep) -> Body:
    pid = await store.get_playback_id(playback_id, "asset", asset_id)
    if pid is None:
        raise not_found("playback id")
    return envelope(pid.to_api())


@router.delete("/assets/{asset_id}/playback-ids/{playback_id}",
               **answers(204, None, "Deleted", 404),
               summary="Delete a playback id of an asset")
async def delete_asset_playback_id(asset_id: str, playback_id: str,
                                   store: StoreDep) -> Response:
    if not await store.delete_playback_id("asset", asset_id, playback_id):
        raise not_found("playback id")
    return no_content()


@router.get("/playback-ids/{playback_id}", tags=["playback ids"],
            **answers(200, PlaybackIdLookupResponse, "The playback id and what it plays",
                      404),
            summary="Which live stream or asset a playback id plays")
async def lookup_playback_id(playback_id: str, store: StoreDep) -> Body:
    pid = await store.get_playback_id(playback_id)
    if pid is None:
        raise not_found("playback id")
    return envelope(pid.to_lookup())
