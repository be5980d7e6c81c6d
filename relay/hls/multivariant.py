"""The multivariant playlist (rfc8216bis 4.4.6): one EXT-X-STREAM-INF per variant, naming
its media playlist (`relay.hls.playlist`). Relay has one variant per stream (it does not
transcode); the packager measures its bit rates and frame rate (`LivePackager.variant`)
and the recording keeps them for the asset (`relay.hls.recording`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from relay.hls.model import MEDIA_PLAYLIST_URI


@dataclass(frozen=True, slots=True)
class VariantInfo:
    """One EXT-X-STREAM-INF (rfc8216bis 4.4.6.2); the caller measures the bit rates."""

    bandwidth: int  # peak bits per second
    codecs: tuple[str, ...]  # RFC 6381 strings, e.g. ("avc1.64001f", "mp4a.40.2")
    average_bandwidth: int | None = None  # bits per second
    resolution: tuple[int, int] | None = None  # width, height; None for audio only
    frame_rate: float | None = None
    path: str = ""  # prefix of the variant's MEDIA_PLAYLIST_URI, e.g. "{PLAYBACK_ID}/"


def render_multivariant(variants: Sequence[VariantInfo]) -> str:
    """The multivariant playlist naming each variant's media playlist."""
    if not variants:
        raise ValueError("a multivariant playlist needs at least one variant")
    lines = ["#EXTM3U", "#EXT-X-INDEPENDENT-SEGMENTS"]
    for variant in variants:
        lines.append(_stream_inf(variant))
        lines.append(f"{variant.path}{MEDIA_PLAYLIST_URI}")
    return "\n".join(lines) + "\n"


def _stream_inf(variant: VariantInfo) -> str:
    if variant.bandwidth <= 0:
        raise ValueError(f"BANDWIDTH must be positive, got {variant.bandwidth}")
    if not variant.codecs or not all(_is_codec(codec) for codec in variant.codecs):
        raise ValueError(f"CODECS must be RFC 6381 strings, got {variant.codecs!r}")
    if any(char in variant.path for char in '"\r\n '):
        raise ValueError(f"a variant path cannot hold quotes or whitespace: {variant.path!r}")
    attributes = [f"BANDWIDTH={variant.bandwidth}"]
    if variant.average_bandwidth is not None:
        if not 0 < variant.average_bandwidth <= variant.bandwidth:
            raise ValueError(f"AVERAGE-BANDWIDTH {variant.average_bandwidth} must be positive "
                             f"and at most BANDWIDTH {variant.bandwidth}")
        attributes.append(f"AVERAGE-BANDWIDTH={variant.average_bandwidth}")
    attributes.append(f'CODECS="{",".join(variant.codecs)}"')
    if variant.resolution is not None:
        width, height = variant.resolution
        if width <= 0 or height <= 0:
            raise ValueError(f"RESOLUTION must be positive, got {width}x{height}")
        attributes.append(f"RESOLUTION={width}x{height}")
    if variant.frame_rate is not None:
        if not variant.frame_rate > 0:
            raise ValueError(f"FRAME-RATE must be positive, got {variant.frame_rate}")
        attributes.append(f"FRAME-RATE={variant.frame_rate:.3f}")
    return "#EXT-X-STREAM-INF:" + ",".join(attributes)


def _is_codec(codec: str) -> bool:
    return bool(codec) and all(char.isalnum() or char in ".-" for char in codec) \
        and codec.isascii()
