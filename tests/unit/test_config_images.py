"""`--image-workers`: its default, flag and env var, and its bounds (relay.limits)."""

from __future__ import annotations

import pytest

from relay.config import ConfigError
from relay.limits import DEFAULT_IMAGE_WORKERS, MAX_IMAGE_WORKERS
from tests.unit.helpers.config import settings


def test_image_workers_default_flag_and_env() -> None:
    assert settings().image_workers == DEFAULT_IMAGE_WORKERS == 2
    assert settings("--image-workers", "4").image_workers == 4
    assert settings(RELAY_IMAGE_WORKERS=str(MAX_IMAGE_WORKERS)).image_workers == 32


@pytest.mark.parametrize("value", ["0", str(MAX_IMAGE_WORKERS + 1), "two"])
def test_image_workers_out_of_bounds_are_refused(value: str) -> None:
    with pytest.raises(ConfigError, match="image-workers"):
        settings("--image-workers", value)
