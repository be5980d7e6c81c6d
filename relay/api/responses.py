"""What each API answer looks like, for the OpenAPI document.

The routes build their bodies from the records' `to_api()` (relay/store/records.py); these
models only describe them, so that `/openapi.json` tells the truth about every answer. They
forbid unknown fields, which makes a schema check of real answers (tests/integration/
test_api_contract.py runs schemathesis with response schema conformance) fail as soon as a
record grows a field that is not described here. Enums and ranges are those the Mux SDKs
check in responses (MUX-API.md).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from relay.api.schemas import (
    MAX_CONTINUOUS_DURATION,
    MAX_RECONNECT_WINDOW,
    MIN_CONTINUOUS_DURATION,
)
from relay.store.records import (
    AssetStatus,
    IngestProtocol,
    LatencyMode,
    LiveStreamStatus,
    PlaybackObjectType,
    PlaybackPolicy,
)

# `created_at` in API objects: Unix seconds as a string ("1527110899").
UnixSecondsText = Field(pattern=r"^[0-9]+$", description="Unix seconds, as a string")


class _Described(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PlaybackIdData(_Described):
    id: str
    policy: PlaybackPolicy


class PlaybackIdObject(_Described):
    type: PlaybackObjectType
    id: str


class PlaybackIdLookupData(_Described):
    id: str
    policy: PlaybackPolicy
    object: PlaybackIdObject


class SimulcastTargetData(_Described):
    id: str
    url: str
    status: Literal["idle", "starting", "broadcasting", "errored"]
    stream_key: str | None = None
    passthrough: str | None = None
    error_severity: Literal["normal", "fatal"] | None = None


class ObjectMeta(_Described):
    title: str | None = None
    creator_id: str | None = None
    external_id: str | None = None


class LiveStreamData(_Described):
    id: str
    created_at: str = UnixSecondsText
    stream_key: str
    status: LiveStreamStatus
    playback_ids: list[PlaybackIdData]
    new_asset_settings: dict[str, Any] = Field(
        description="Settings of the recordings (assets) the live stream makes")
    audio_only: bool
    latency_mode: LatencyMode
    reduced_latency: bool = Field(description="Deprecated: latency_mode is reduced")
    low_latency: bool = Field(description="Deprecated: latency_mode is low")
    reconnect_window: float = Field(ge=0, le=MAX_RECONNECT_WINDOW)
    use_slate_for_standard_latency: bool
    max_continuous_duration: int = Field(ge=MIN_CONTINUOUS_DURATION,
                                         le=MAX_CONTINUOUS_DURATION)
    simulcast_targets: list[SimulcastTargetData]
    recent_asset_ids: list[str] = Field(description="Newest recordings, newest last")
    srt_passphrase: str
    test: bool
    passthrough: str | None = None
    reconnect_slate_url: str | None = None
    meta: ObjectMeta | None = None
    active_asset_id: str | None = None
    active_ingest_protocol: IngestProtocol | None = Field(
        default=None, description="Only while a session is live")


class RecordingTimeData(_Described):
    started_at: str = Field(description="ISO-8601 time in UTC")
    duration: float
    type: Literal["content", "slate"]


class AssetData(_Described):
    id: str
    created_at: str = UnixSecondsText
    status: AssetStatus
    playback_ids: list[PlaybackIdData]
    is_live: bool
    recording_times: list[RecordingTimeData]
    tracks: list[dict[str, Any]]
    mp4_support: str
    master_access: str
    test: bool
    duration: float | None = None
    live_stream_id: str | None = None
    passthrough: str | None = None
    ingest_type: Literal["live_rtmp", "live_srt"] | None = None
    video_quality: str | None = None
    meta: ObjectMeta | None = None


class EmptyData(_Described):
    pass


# The `{"data": ...}` envelope of each answer.

class LiveStreamResponse(_Described):
    data: LiveStreamData


class LiveStreamListResponse(_Described):
    data: list[LiveStreamData]


class AssetResponse(_Described):
    data: AssetData


class AssetListResponse(_Described):
    data: list[AssetData]


class PlaybackIdResponse(_Described):
    data: PlaybackIdData


class PlaybackIdLookupResponse(_Described):
    data: PlaybackIdLookupData


class SimulcastTargetResponse(_Described):
    data: SimulcastTargetData


class EmptyResponse(_Described):
    data: EmptyData


class HealthStatus(_Described):
    status: Literal["ok"]


class Readiness(_Described):
    status: Literal["ok", "unavailable"]
    problems: list[str] | None = Field(
        default=None, description="Which checks failed (only when unavailable)")


class WebhookEventObject(_Described):
    type: str
    id: str


class WebhookEventData(_Described):
    id: str = Field(description="The event id, the same in every delivery of it")
    type: str
    object: WebhookEventObject
    created_at: str = Field(description="When it happened, ISO-8601 UTC")
    endpoint: str = Field(description="The --webhook-url it is delivered to")
    status: Literal["pending", "delivered", "failed"]
    attempts: int = Field(ge=0, description="Tries so far")
    last_error: str | None = Field(description="What the last failed try met")
    next_attempt_at: str | None = Field(description="When it is tried next, while pending")
    delivered_at: str | None = None


class WebhookEventListResponse(_Described):
    data: list[WebhookEventData]


# -- signed playback (issue 17) ------------------------------------------------------------

class SigningKeyData(_Described):
    id: str
    created_at: str = UnixSecondsText


class NewSigningKeyData(_Described):
    id: str
    created_at: str = UnixSecondsText
    private_key: str = Field(
        description="Base64 of the RSA 2048 private key's PEM; returned only here, once: "
                    "Relay keeps the public key alone")


class SigningKeyResponse(_Described):
    data: SigningKeyData


class NewSigningKeyResponse(_Described):
    data: NewSigningKeyData


class SigningKeyListResponse(_Described):
    data: list[SigningKeyData]


class ReferrerRuleData(_Described):
    allowed_domains: list[str] = Field(
        description="[] admits no site, [\"*\"] any, otherwise host names or *.wildcards")
    allow_no_referrer: bool


class UserAgentRuleData(_Described):
    allow_no_user_agent: bool
    allow_high_risk_user_agent: bool


class PlaybackRestrictionData(_Described):
    id: str
    created_at: str = UnixSecondsText
    updated_at: str = UnixSecondsText
    referrer: ReferrerRuleData
    user_agent: UserAgentRuleData


class PlaybackRestrictionResponse(_Described):
    data: PlaybackRestrictionData


class PlaybackRestrictionListResponse(_Described):
    data: list[PlaybackRestrictionData]
