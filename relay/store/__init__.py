"""Relay's control data: tokens, live streams, playback ids, targets, assets, events."""

from relay.store.migrations import LATEST_VERSION, SchemaTooNewError
from relay.store.records import LeaseGrant, NodeInfo, NodeRef
from relay.store.store import (
    NewLiveStream,
    NewSimulcastTarget,
    SessionWrite,
    Store,
    StreamKeyRow,
    hash_secret,
)

__all__ = [
    "LATEST_VERSION",
    "LeaseGrant",
    "NewLiveStream",
    "NewSimulcastTarget",
    "NodeInfo",
    "NodeRef",
    "SchemaTooNewError",
    "SessionWrite",
    "Store",
    "StreamKeyRow",
    "hash_secret",
]
