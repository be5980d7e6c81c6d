"""Request bodies of the live-streams API, their validation and their defaults.

Field names, enums and ranges are those of Mux's API (MUX-API.md). Models are strict (no
"yes" for a boolean, no "60" for a number) and ignore unknown fields, as Mux does. The
defaults that depend on other fields (reconnect_window on latency_mode, latency_mode on the
deprecated booleans) are applied in `new_live_stream`, in one place.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from relay.limits import MAX_SESSION_SECONDS
from relay.playback.restrictions import (
    ALLOWED_DOMAIN_PATTERN,
    MAX_ALLOWED_DOMAINS,
    MAX_DOMAIN_LENGTH,
    normalize_allowed_domain,
)
from relay.store import NewLiveStream, NewSimulcastTarget
from relay.store.records import JSONDict, LatencyMode, PlaybackPolicy

MAX_RECONNECT_WINDOW = 1800.0
MIN_CONTINUOUS_DURATION = 60
MAX_CONTINUOUS_DURATION = MAX_SESSION_SECONDS
DEFAULT_STANDARD_RECONNECT_WINDOW = 60.0
#: What a simulcast target may be: Relay pushes over RTMP and RTMP over TLS (issue 14); an
#: srt:// target would be accepted and then never pushed, a failure the user cannot see.
SIMULCAST_SCHEMES = ("rtmp", "rtmps")

# A simulcast target URL, as one regular expression so that the OpenAPI document states the
# rule the validator applies (a contract fuzzer then sends only what is accepted as valid):
# scheme, optional user info, a host name, IPv4 address or bracketed IPv6 address (rfc3986
# 3.2), optional port, then anything printable. Printable ASCII only.
_H16 = "[0-9A-Fa-f]{1,4}"
_IPV6 = "|".join((
    f"(?:{_H16}:){{7}}{_H16}",
    f"(?:{_H16}:){{1,7}}:",
    *(f"(?:{_H16}:){{1,{6 - n}}}(?::{_H16}){{1,{n + 1}}}" for n in range(6)),
    f":(?:(?::{_H16}){{1,7}}|:)",
))
SIMULCAST_URL = (
    f"(?:{'|'.join(SIMULCAST_SCHEMES)})://"
    "(?:[A-Za-z0-9._~%!$&'()*+,;=:-]+@)?"
    f"(?:[A-Za-z0-9._~-]+|\\[(?:{_IPV6})\\])"
    "(?::[0-9]{1,5})?"
    "(?:[/?#][!-~]*)?"
)
_SIMULCAST_URL = re.compile(SIMULCAST_URL)


def _one_or_many(value: Any) -> Any:
    # Mux accepts a policy as a single string or as a list of them.
    return [value] if isinstance(value, str) else value


def _whole_number(value: Any) -> Any:
    # JSON has one number type: 43200.0 is the integer 43200 to JSON Schema (and to the
    # OpenAPI document a client reads), so it is taken as one; 43200.5 and "43200" are not.
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


PolicyList = Annotated[list[PlaybackPolicy], BeforeValidator(_one_or_many)]
ContinuousDuration = Annotated[
    int, Field(ge=MIN_CONTINUOUS_DURATION, le=MAX_CONTINUOUS_DURATION),
    BeforeValidator(_whole_number),
]
Passthrough = Annotated[str, Field(max_length=255)]


def _valid_unicode(value: Any) -> Any:
    """Refuse text that cannot be stored or sent back: JSON may spell a lone UTF-16 surrogate
    (`"\\ud800"`), which Python decodes into a string that has no UTF-8 form, or a NUL
    (`"\\u0000"`), which PostgreSQL refuses in text (other control characters it keeps)."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            if "\x00" in item:
                raise ValueError("a string holds a NUL character (\\u0000), which the "
                                 "database cannot store; leave it out")
            if not item.isascii():
                try:
                    item.encode("utf-8")
                except UnicodeEncodeError:
                    raise ValueError("a string holds a lone UTF-16 surrogate escape; "
                                     "send valid Unicode") from None
        elif isinstance(item, list):
            pending.extend(item)
    return value


class _Body(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")

    @model_validator(mode="before")
    @classmethod
    def _text_is_unicode(cls, data: Any) -> Any:
        # Only the fields this body declares are checked: unknown keys are ignored, as the
        # OpenAPI document allows, so what they hold never reaches the store. An object in a
        # field is a nested body, which checks its own fields.
        if isinstance(data, dict):
            _valid_unicode([value for key, value in data.items() if key in cls.model_fields])
        return data


class Metadata(_Body):
    title: Annotated[str, Field(max_length=512)] | None = None
    creator_id: Annotated[str, Field(max_length=128)] | None = None
    external_id: Annotated[str, Field(max_length=128)] | None = None


class NewAssetSettings(_Body):
    """Settings of the recordings a live stream makes (Mux's CreateAssetRequest subset)."""

    playback_policy: PolicyList | None = None
    playback_policies: PolicyList | None = None
    passthrough: Passthrough | None = None
    mp4_support: Literal["none", "standard", "capped-1080p", "audio-only",
                         "audio-only,capped-1080p"] | None = None
    master_access: Literal["none", "temporary"] | None = None
    normalize_audio: bool | None = None
    test: bool | None = None
    video_quality: Literal["basic", "plus", "premium"] | None = None
    max_resolution_tier: Literal["1080p", "1440p", "2160p"] | None = None
    encoding_tier: Literal["smart", "baseline", "premium"] | None = None
    meta: Metadata | None = None
    copy_overlays: bool | None = None

    def stored(self) -> JSONDict:
        """The settings as kept and returned: unset fields left out, policies as one list."""
        data = self.model_dump(exclude_none=True, exclude={"playback_policy",
                                                           "playback_policies"})
        policies = _policies(self.playback_policies, self.playback_policy)
        if policies:
            data["playback_policies"] = list(policies)
        return data


class UpdateNewAssetSettings(_Body):
    mp4_support: Literal["none", "standard", "capped-1080p", "audio-only",
                         "audio-only,capped-1080p"] | None = None
    master_access: Literal["none", "temporary"] | None = None
    video_quality: Literal["plus", "premium"] | None = None
    meta: Metadata | None = None


class CreateSimulcastTargetRequest(_Body):
    url: Annotated[str, Field(min_length=1, max_length=2048,
                              json_schema_extra={"pattern": f"^{SIMULCAST_URL}$"})]
    stream_key: Annotated[str, Field(max_length=1024)] | None = None
    passthrough: Passthrough | None = None

    @field_validator("url")
    @classmethod
    def _check_url(cls, url: str) -> str:
        if _SIMULCAST_URL.fullmatch(url) is None:
            raise ValueError(
                "must be an rtmp:// or rtmps:// URL with a host, "
                "e.g. rtmps://live.example.com/app")
        return url

    def to_new(self) -> NewSimulcastTarget:
        return NewSimulcastTarget(url=self.url, stream_key=self.stream_key,
                                  passthrough=self.passthrough)


class CreateLiveStreamRequest(_Body):
    playback_policy: PolicyList | None = None
    playback_policies: PolicyList | None = None
    new_asset_settings: NewAssetSettings | None = None
    reconnect_window: Annotated[float, Field(ge=0, le=MAX_RECONNECT_WINDOW)] | None = None
    use_slate_for_standard_latency: bool = False
    reconnect_slate_url: Annotated[str, Field(max_length=2048)] | None = None
    passthrough: Passthrough | None = None
    audio_only: bool = False
    reduced_latency: bool | None = None
    low_latency: bool | None = None
    latency_mode: LatencyMode | None = None
    test: bool = False
    simulcast_targets: list[CreateSimulcastTargetRequest] | None = None
    max_continuous_duration: ContinuousDuration = MAX_CONTINUOUS_DURATION
    meta: Metadata | None = None


class UpdateLiveStreamRequest(_Body):
    passthrough: Passthrough | None = None
    latency_mode: LatencyMode | None = None
    reconnect_window: Annotated[float, Field(ge=0, le=MAX_RECONNECT_WINDOW)] | None = None
    use_slate_for_standard_latency: bool | None = None
    reconnect_slate_url: Annotated[str, Field(max_length=2048)] | None = None
    max_continuous_duration: ContinuousDuration | None = None
    new_asset_settings: UpdateNewAssetSettings | None = None
    meta: Metadata | None = None


class CreatePlaybackIdRequest(_Body):
    policy: PlaybackPolicy = "public"


def default_reconnect_window(latency_mode: LatencyMode) -> float:
    """Mux's default: 60 s for standard latency, 0 for reduced and low."""
    return DEFAULT_STANDARD_RECONNECT_WINDOW if latency_mode == "standard" else 0.0


def new_live_stream(body: CreateLiveStreamRequest) -> NewLiveStream:
    """Turn a validated create request into a stream spec with every default applied."""
    latency_mode: LatencyMode
    if body.latency_mode is not None:
        latency_mode = body.latency_mode
    elif body.low_latency:
        latency_mode = "low"
    elif body.reduced_latency:
        latency_mode = "reduced"
    else:
        latency_mode = "standard"
    reconnect_window = (body.reconnect_window if body.reconnect_window is not None
                        else default_reconnect_window(latency_mode))
    return NewLiveStream(
        latency_mode=latency_mode,
        reconnect_window=reconnect_window,
        max_continuous_duration=body.max_continuous_duration,
        audio_only=body.audio_only,
        use_slate_for_standard_latency=body.use_slate_for_standard_latency,
        test=body.test,
        new_asset_settings=(body.new_asset_settings.stored()
                            if body.new_asset_settings else {}),
        playback_policies=_policies(body.playback_policies, body.playback_policy),
        passthrough=body.passthrough,
        reconnect_slate_url=body.reconnect_slate_url,
        meta=body.meta.model_dump(exclude_none=True) if body.meta else None,
    )


def live_stream_changes(body: UpdateLiveStreamRequest, current_settings: JSONDict) -> JSONDict:
    """The columns a PATCH changes: only the fields the client sent."""
    changes: JSONDict = {}
    for name in body.model_fields_set:
        value = getattr(body, name)
        if name == "new_asset_settings":
            if value is not None:
                changes[name] = {**current_settings, **value.model_dump(exclude_none=True)}
        elif name == "meta":
            changes[name] = value.model_dump(exclude_none=True) if value else None
        elif value is not None or name in ("passthrough", "reconnect_slate_url"):
            changes[name] = value
    return changes


def _policies(*candidates: list[PlaybackPolicy] | None) -> tuple[PlaybackPolicy, ...]:
    # `playback_policies` wins over the deprecated singular `playback_policy`; duplicates
    # collapse, since two public ids for one stream serve no one.
    for policies in candidates:
        if policies:
            return tuple(dict.fromkeys(policies))
    return ()


# -- playback restrictions (signed playback, issue 17) ------------------------------------

AllowedDomain = Annotated[
    str,
    Field(min_length=1, max_length=MAX_DOMAIN_LENGTH,
          json_schema_extra={"pattern": ALLOWED_DOMAIN_PATTERN}),
]


class ReferrerRule(_Body):
    """Mux's referrer restriction (also the body of `PUT .../{id}/referrer`)."""

    allowed_domains: Annotated[list[AllowedDomain], Field(max_length=MAX_ALLOWED_DOMAINS)]
    allow_no_referrer: bool = False

    @field_validator("allowed_domains")
    @classmethod
    def _check_domains(cls, domains: list[str]) -> list[str]:
        return list(dict.fromkeys(normalize_allowed_domain(d) for d in domains))


class UserAgentRule(_Body):
    """Mux's user-agent restriction (also the body of `PUT .../{id}/user_agent`)."""

    allow_no_user_agent: bool = True
    allow_high_risk_user_agent: bool = True


class CreatePlaybackRestrictionRequest(_Body):
    referrer: ReferrerRule
    user_agent: UserAgentRule | None = None
