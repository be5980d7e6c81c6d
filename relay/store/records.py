"""What the store holds, as immutable records, and their Mux wire shape.

The API objects of Relay are the Mux Video objects (see MUX-API.md), so a record knows how it
looks on the wire: `to_api()` gives the `data` of an API response, where `created_at` is a
string of Unix seconds, and `to_event_data()` gives the `data` of a webhook event, where it is
an integer. Optional fields that are unset are left out, as Mux leaves them out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

LiveStreamStatus = Literal["idle", "active", "disabled"]
#: A live stream's `latency_mode` (MUX-API.md): "low" is LL-HLS (short segments made of
#: parts), "reduced" short segments without parts, "standard" longer segments. The one
#: definition: the API validates it, the store keeps it, the HLS segmenter is cut by it.
LatencyMode = Literal["low", "reduced", "standard"]
PlaybackPolicy = Literal["public", "signed"]
PlaybackObjectType = Literal["live_stream", "asset"]
IngestProtocol = Literal["rtmp", "srt"]
AssetStatus = Literal["preparing", "ready", "errored"]
SimulcastTargetStatus = Literal["idle", "starting", "broadcasting", "errored"]
SimulcastErrorSeverity = Literal["normal", "fatal"]

JSONDict = dict[str, Any]


@dataclass(frozen=True, slots=True)
class AccessTokenInfo:
    """What may be shown of an access token: never its secret (only a hash is stored)."""

    id: str
    created_at: int  # Unix seconds


@dataclass(frozen=True, slots=True)
class PlaybackId:
    id: str
    policy: PlaybackPolicy
    object_type: PlaybackObjectType
    object_id: str

    def to_api(self) -> JSONDict:
        return {"id": self.id, "policy": self.policy}

    def to_lookup(self) -> JSONDict:
        """Shape of `GET /video/v1/playback-ids/{id}`: the id and what it plays."""
        return {
            "id": self.id,
            "policy": self.policy,
            "object": {"type": self.object_type, "id": self.object_id},
        }


@dataclass(frozen=True, slots=True)
class SimulcastTarget:
    id: str
    live_stream_id: str
    url: str
    stream_key: str | None
    passthrough: str | None
    status: SimulcastTargetStatus = "idle"
    error_severity: SimulcastErrorSeverity | None = None

    def to_api(self) -> JSONDict:
        data: JSONDict = {"id": self.id, "url": self.url, "status": self.status}
        if self.stream_key is not None:
            data["stream_key"] = self.stream_key
        if self.passthrough is not None:
            data["passthrough"] = self.passthrough
        if self.error_severity is not None:
            data["error_severity"] = self.error_severity
        return data


@dataclass(frozen=True, slots=True)
class LiveStream:
    id: str
    created_at: int
    stream_key: str
    status: LiveStreamStatus
    latency_mode: LatencyMode
    reconnect_window: float
    max_continuous_duration: int
    audio_only: bool
    use_slate_for_standard_latency: bool
    test: bool
    srt_passphrase: str
    new_asset_settings: JSONDict
    passthrough: str | None = None
    reconnect_slate_url: str | None = None
    meta: JSONDict | None = None
    active_asset_id: str | None = None
    active_ingest_protocol: IngestProtocol | None = None
    playback_ids: tuple[PlaybackId, ...] = ()
    simulcast_targets: tuple[SimulcastTarget, ...] = ()
    recent_asset_ids: tuple[str, ...] = ()

    def to_api(self) -> JSONDict:
        data: JSONDict = {
            "id": self.id,
            "created_at": str(self.created_at),
            "stream_key": self.stream_key,
            "status": self.status,
            "playback_ids": [p.to_api() for p in self.playback_ids],
            "new_asset_settings": self.new_asset_settings,
            "audio_only": self.audio_only,
            "latency_mode": self.latency_mode,
            # Deprecated booleans that older SDKs and apps still read.
            "reduced_latency": self.latency_mode == "reduced",
            "low_latency": self.latency_mode == "low",
            "reconnect_window": self.reconnect_window,
            "use_slate_for_standard_latency": self.use_slate_for_standard_latency,
            "max_continuous_duration": self.max_continuous_duration,
            "simulcast_targets": [t.to_api() for t in self.simulcast_targets],
            "recent_asset_ids": list(self.recent_asset_ids),
            "srt_passphrase": self.srt_passphrase,
            "test": self.test,
        }
        optional: JSONDict = {
            "passthrough": self.passthrough,
            "reconnect_slate_url": self.reconnect_slate_url,
            "meta": self.meta,
            "active_asset_id": self.active_asset_id,
            # Only while a session is live (MUX-API.md).
            "active_ingest_protocol": (
                self.active_ingest_protocol if self.status == "active" else None
            ),
        }
        data.update({k: v for k, v in optional.items() if v is not None})
        return data

    def to_event_data(self) -> JSONDict:
        return _event_data(self.to_api(), self.created_at)


@dataclass(frozen=True, slots=True)
class RecordingTime:
    started_at: float
    duration: float
    type: Literal["content", "slate"] = "content"

    def to_api(self) -> JSONDict:
        started = datetime.fromtimestamp(self.started_at, tz=UTC)
        return {
            "started_at": started.isoformat().replace("+00:00", "Z"),
            "duration": self.duration,
            "type": self.type,
        }


@dataclass(frozen=True, slots=True)
class RecordedMedia:
    """What a finished recording holds, as the packager measured it."""

    duration: float  # seconds of media
    #: Mux asset track objects without their ids, e.g. {"type": "video", "max_width": 1280,
    #: "max_height": 720, "max_frame_rate": 30.0} and {"type": "audio", "max_channels": 2}.
    tracks: tuple[JSONDict, ...] = ()
    #: Wall-clock start of the media (epoch seconds), when the recording times may lack it:
    #: a crash loses the open connection's interval, which is then rebuilt from the media.
    started_at: float | None = None


@dataclass(frozen=True, slots=True)
class Asset:
    id: str
    created_at: int
    status: AssetStatus
    is_live: bool
    test: bool
    live_stream_id: str | None = None
    duration: float | None = None
    passthrough: str | None = None
    ingest_type: Literal["live_rtmp", "live_srt"] | None = None
    recording_times: tuple[RecordingTime, ...] = ()
    tracks: tuple[JSONDict, ...] = ()
    settings: JSONDict = field(default_factory=dict)
    playback_ids: tuple[PlaybackId, ...] = ()

    def to_api(self) -> JSONDict:
        data: JSONDict = {
            "id": self.id,
            "created_at": str(self.created_at),
            "status": self.status,
            "playback_ids": [p.to_api() for p in self.playback_ids],
            "is_live": self.is_live,
            "recording_times": [r.to_api() for r in self.recording_times],
            "tracks": list(self.tracks),
            "mp4_support": self.settings.get("mp4_support", "none"),
            "master_access": self.settings.get("master_access", "none"),
            "test": self.test,
        }
        optional: JSONDict = {
            "duration": self.duration,
            "live_stream_id": self.live_stream_id,
            "passthrough": self.passthrough,
            "ingest_type": self.ingest_type,
            "video_quality": self.settings.get("video_quality"),
            "meta": self.settings.get("meta"),
        }
        data.update({k: v for k, v in optional.items() if v is not None})
        return data

    def to_event_data(self) -> JSONDict:
        return _event_data(self.to_api(), self.created_at)


@dataclass(frozen=True, slots=True)
class Event:
    """A row of the outbox: what happened, and the object as it was then."""

    id: str
    type: str
    object_type: str
    object_id: str
    data: JSONDict
    created_at: float


def _event_data(api_object: JSONDict, created_at: int) -> JSONDict:
    # Inside webhook `data`, `created_at` is an integer (MUX-API.md).
    return {**api_object, "created_at": created_at}


WebhookDeliveryStatus = Literal["pending", "delivered", "failed"]


@dataclass(frozen=True, slots=True)
class WebhookDelivery:
    """One event on its way to one endpoint, and how that has gone so far."""

    seq: int
    endpoint: str
    event: Event
    status: WebhookDeliveryStatus
    attempts: int
    created_at: float  # when it was queued for the endpoint
    next_attempt_at: float
    first_attempt_at: float | None = None  # the retry window starts here
    last_error: str | None = None
    delivered_at: float | None = None
    #: The last few tries (Mux's `attempts` objects), oldest first.
    attempt_log: tuple[JSONDict, ...] = ()
    #: The token of the claim a deliverer holds on it while trying it (None: unclaimed).
    claim: str | None = None


@dataclass(frozen=True, slots=True)
class SigningKey:
    """A signing key as Relay keeps it: the public half only. The private key exists once,
    in the answer to its creation (`private_key` there), and nowhere in Relay after."""

    id: str
    created_at: int
    public_key: str  # SubjectPublicKeyInfo PEM

    def to_api(self) -> JSONDict:
        return {"id": self.id, "created_at": str(self.created_at)}


@dataclass(frozen=True, slots=True)
class PlaybackRestriction:
    """Rules a token naming this restriction (`playback_restriction_id`) is held to: which
    sites may embed the player (`Referer`) and which clients may play (`User-Agent`)."""

    id: str
    created_at: int
    updated_at: int
    allowed_domains: tuple[str, ...]
    allow_no_referrer: bool
    allow_no_user_agent: bool = True
    allow_high_risk_user_agent: bool = True

    def to_api(self) -> JSONDict:
        return {
            "id": self.id,
            "created_at": str(self.created_at),
            "updated_at": str(self.updated_at),
            "referrer": {"allowed_domains": list(self.allowed_domains),
                         "allow_no_referrer": self.allow_no_referrer},
            "user_agent": {"allow_no_user_agent": self.allow_no_user_agent,
                           "allow_high_risk_user_agent": self.allow_high_risk_user_agent},
        }


@dataclass(frozen=True, slots=True)
class NodeRef:
    """Where another node is reached: its id and the internal HTTP base URL it advertises
    (`--advertise-url`), e.g. for fetching a live stream's playlists from its owner."""

    node_id: str
    advertise_url: str


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """A node's row: `started_at` and `last_seen` are Unix seconds (its heartbeat writes
    `last_seen`; silent longer than the node timeout, the node is dead)."""

    node_id: str
    advertise_url: str
    started_at: float
    last_seen: float


@dataclass(frozen=True, slots=True)
class LeaseGrant:
    """What `Store.acquire_stream_lease` did.

    `acquired`: the node holds the stream's lease now; when not, `previous_owner` is the
    node that holds it. When acquired, `previous_owner` is the node whose expired lease it
    took over (None when the lease was free or already its own): that node died with a
    session open (`open_session`, recording into `open_asset_id` if it had started), which
    the new owner must finish before starting its own."""

    acquired: bool
    previous_owner: str | None = None
    open_session: bool = False
    open_asset_id: str | None = None
