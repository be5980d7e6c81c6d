"""What test_store.py shares with other test modules: kept here so no test module imports
another."""

from __future__ import annotations

from relay.store import (
    NewLiveStream,
)


def spec(**overrides: object) -> NewLiveStream:
    values: dict[str, object] = dict(
        latency_mode="standard", reconnect_window=60.0, max_continuous_duration=43200,
        audio_only=False, use_slate_for_standard_latency=False, test=False,
        new_asset_settings={"playback_policies": ["public"]}, playback_policies=("public",))
    values.update(overrides)
    return NewLiveStream(**values)  # type: ignore[arg-type]
