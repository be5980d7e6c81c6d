"""`/video/v1/live-streams`: streams, their playback ids and simulcast targets."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Response

from relay.api.deps import (
    API_ERRORS,
    ChangesDep,
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
    EmptyResponse,
    LiveStreamListResponse,
    LiveStreamResponse,
    PlaybackIdResponse,
    SimulcastTargetResponse,
)
from relay.api.schemas import (
    CreateLiveStreamRequest,
    CreatePlaybackIdRequest,
    CreateSimulcastTargetRequest,
    UpdateLiveStreamRequest,
    live_stream_changes,
    new_live_stream,
)
from relay.store.records import LiveStream, LiveStreamStatus
from relay.streams.registry import StreamChange

router = APIRouter(prefix="/video/v1/live-streams", tags=["live streams"],
                   dependencies=[Depends(basic_auth_doc)], responses=API_ERRORS)

Body = dict[str, Any]


async def _stream(store: StoreDep, live_stream_id: str) -> LiveStream:
    stream = await store.get_live_stream(live_stream_id)
    if stream is None:
        raise not_found("live stream")
    return stream


def _require_no_session(stream: LiveStream, done: str, fix: str) -> None:
    """Targets change only while the stream is idle, as Mux has it: a live session pushes
    to the targets it started with. Live means active, and also connected with media
    (recording) or waiting out its reconnect window, which `active_asset_id` shows."""
    if stream.status == "active" or stream.active_asset_id is not None:
        raise ApiError(400, f"simulcast targets can only be {done} while the live stream "
                            f"is idle; {fix}")


@router.post("", **answers(201, LiveStreamResponse, "The new live stream", 400),
             summary="Create a live stream")
async def create_live_stream(body: CreateLiveStreamRequest, store: StoreDep,
                             changed: ChangesDep) -> Body:
    targets = [t.to_new() for t in body.simulcast_targets or ()]
    stream = await store.create_live_stream(new_live_stream(body), targets)
    # The new key publishes at once, over SRT too (whose admission reads the key cache).
    changed(stream.id, StreamChange.CREATED, stream)
    return envelope(stream.to_api())


@router.get("", **answers(200, LiveStreamListResponse, "One page of live streams", 400),
            summary="List live streams, newest first")
async def list_live_streams(
    store: StoreDep,
    limit: Limit = 25,
    page: Page = 1,
    status: Annotated[LiveStreamStatus | None, Query()] = None,
    stream_key: Annotated[str | None, Query(max_length=64)] = None,
) -> Body:
    streams = await store.list_live_streams(limit=limit, page=page, status=status,
                                            stream_key=stream_key)
    return envelope([s.to_api() for s in streams])


@router.get("/{live_stream_id}", **answers(200, LiveStreamResponse, "The live stream", 404),
            summary="Get a live stream")
async def get_live_stream(live_stream_id: str, store: StoreDep) -> Body:
    return envelope((await _stream(store, live_stream_id)).to_api())


@router.patch("/{live_stream_id}",
              **answers(200, LiveStreamResponse, "The updated live stream", 400, 404),
              summary="Update a live stream")
async def update_live_stream(
    live_stream_id: str, body: UpdateLiveStreamRequest, store: StoreDep, changed: ChangesDep
) -> Body:
    current = await _stream(store, live_stream_id)
    updated = await store.update_live_stream(
        live_stream_id, live_stream_changes(body, current.new_asset_settings))
    if updated is None:
        raise not_found("live stream")
    changed(live_stream_id, StreamChange.UPDATED, updated)
    return envelope(updated.to_api())


@router.delete("/{live_stream_id}", **answers(204, None, "Deleted", 404),
               summary="Delete a live stream (ends its session)")
async def delete_live_stream(
    live_stream_id: str, store: StoreDep, changed: ChangesDep
) -> Response:
    if not await store.delete_live_stream(live_stream_id):
        raise not_found("live stream")
    changed(live_stream_id, StreamChange.DELETED)
    return no_content()


@router.post("/{live_stream_id}/reset-stream-key",
             **answers(201, LiveStreamResponse, "The live stream with its new key", 404),
             summary="Replace the stream key")
async def reset_stream_key(live_stream_id: str, store: StoreDep, changed: ChangesDep) -> Body:
    stream = await store.reset_stream_key(live_stream_id)
    if stream is None:
        raise not_found("live stream")
    # The old key stops working at once, for the encoder using it too.
    changed(live_stream_id, StreamChange.KEY_RESET, stream)
    return envelope(stream.to_api())


@router.put("/{live_stream_id}/complete", **answers(200, EmptyResponse, "Done", 404),
            summary="End the current recording now")
async def complete_live_stream(
    live_stream_id: str, store: StoreDep, changed: ChangesDep
) -> Body:
    # Without a session there is no recording to end; with one, it ends now.
    stream = await _stream(store, live_stream_id)
    changed(live_stream_id, StreamChange.COMPLETED, stream)
    return envelope({})


@router.put("/{live_stream_id}/disable", **answers(200, EmptyResponse, "Done", 404),
            summary="Refuse publishes and end the current one")
async def disable_live_stream(
    live_stream_id: str, store: StoreDep, changed: ChangesDep
) -> Body:
    stream = await store.set_live_stream_enabled(live_stream_id, enabled=False)
    if stream is None:
        raise not_found("live stream")
    changed(live_stream_id, StreamChange.DISABLED, stream)
    return envelope({})


@router.put("/{live_stream_id}/enable", **answers(200, EmptyResponse, "Done", 404),
            summary="Accept publishes again")
async def enable_live_stream(live_stream_id: str, store: StoreDep,
                             changed: ChangesDep) -> Body:
    stream = await store.set_live_stream_enabled(live_stream_id, enabled=True)
    if stream is None:
        raise not_found("live stream")
    changed(live_stream_id, StreamChange.ENABLED, stream)
    return envelope({})


@router.post("/{live_stream_id}/playback-ids",
             **answers(201, PlaybackIdResponse, "The new playback id", 400, 404),
             summary="Add a playback id")
async def create_playback_id(
    live_stream_id: str, body: CreatePlaybackIdRequest, store: StoreDep
) -> Body:
    pid = await store.create_playback_id("live_stream", live_stream_id, body.policy)
    if pid is None:
        raise not_found("live stream")
    return envelope(pid.to_api())


@router.get("/{live_stream_id}/playback-ids/{playback_id}",
            **answers(200, PlaybackIdResponse, "The playback id", 404),
            summary="Get a playback id")
async def get_playback_id(live_stream_id: str, playback_id: str, store: StoreDep) -> Body:
    pid = await store.get_playback_id(playback_id, "live_stream", live_stream_id)
    if pid is None:
        raise not_found("playback id")
    return envelope(pid.to_api())


@router.delete("/{live_stream_id}/playback-ids/{playback_id}",
               **answers(204, None, "Deleted", 404), summary="Delete a playback id")
async def delete_playback_id(live_stream_id: str, playback_id: str,
                             store: StoreDep) -> Response:
    if not await store.delete_playback_id("live_stream", live_stream_id, playback_id):
        raise not_found("playback id")
    return no_content()


@router.post("/{live_stream_id}/simulcast-targets",
             **answers(201, SimulcastTargetResponse, "The new simulcast target", 400, 404),
             summary="Add a simulcast target (only while the stream is idle)")
async def create_simulcast_target(
    live_stream_id: str, body: CreateSimulcastTargetRequest, store: StoreDep
) -> Body:
    _require_no_session(await _stream(store, live_stream_id), "added",
                        "add it before the encoder connects")
    target = await store.create_simulcast_target(live_stream_id, body.to_new())
    if target is None:
        raise not_found("live stream")
    return envelope(target.to_api())


@router.get("/{live_stream_id}/simulcast-targets/{simulcast_target_id}",
            **answers(200, SimulcastTargetResponse, "The simulcast target", 404),
            summary="Get a simulcast target")
async def get_simulcast_target(
    live_stream_id: str, simulcast_target_id: str, store: StoreDep
) -> Body:
    target = await store.get_simulcast_target(live_stream_id, simulcast_target_id)
    if target is None:
        raise not_found("simulcast target")
    return envelope(target.to_api())


@router.delete("/{live_stream_id}/simulcast-targets/{simulcast_target_id}",
               **answers(204, None, "Deleted", 400, 404),
               summary="Delete a simulcast target (only while the stream is idle)")
async def delete_simulcast_target(
    live_stream_id: str, simulcast_target_id: str, store: StoreDep
) -> Response:
    _require_no_session(await _stream(store, live_stream_id), "deleted",
                        "delete it once the stream is idle again")
    if not await store.delete_simulcast_target(live_stream_id, simulcast_target_id):
        raise not_found("simulcast target")
    return no_content()
