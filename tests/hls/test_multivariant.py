"""The multivariant playlist (rfc8216bis 4.4.6): golden texts, checked by the playlist checker,
and the values it refuses."""

from __future__ import annotations

import pytest

from relay.hls.multivariant import VariantInfo, render_multivariant
from tests.hls.playlist_checker import check_multivariant


def test_multivariant_golden() -> None:
    text = render_multivariant([
        VariantInfo(bandwidth=2_500_000, average_bandwidth=2_000_000,
                    codecs=("avc1.64001f", "mp4a.40.2"), resolution=(1280, 720),
                    frame_rate=29.97, path="abc123/"),
    ])
    assert text == (
        "#EXTM3U\n#EXT-X-INDEPENDENT-SEGMENTS\n"
        '#EXT-X-STREAM-INF:BANDWIDTH=2500000,AVERAGE-BANDWIDTH=2000000,'
        'CODECS="avc1.64001f,mp4a.40.2",RESOLUTION=1280x720,FRAME-RATE=29.970\n'
        "abc123/rendition.m3u8\n")
    check_multivariant(text)


def test_multivariant_audio_only_variant_has_no_resolution() -> None:
    text = render_multivariant([VariantInfo(bandwidth=140_000, codecs=("mp4a.40.2",))])
    assert text.splitlines()[2:] == ['#EXT-X-STREAM-INF:BANDWIDTH=140000,CODECS="mp4a.40.2"',
                                     "rendition.m3u8"]
    check_multivariant(text)


@pytest.mark.parametrize("variant", [
    VariantInfo(bandwidth=0, codecs=("mp4a.40.2",)),
    VariantInfo(bandwidth=1000, codecs=()),
    VariantInfo(bandwidth=1000, codecs=('avc1"',)),
    VariantInfo(bandwidth=1000, codecs=("mp4a.40.2",), average_bandwidth=2000),
    VariantInfo(bandwidth=1000, codecs=("avc1.64001f",), resolution=(0, 720)),
    VariantInfo(bandwidth=1000, codecs=("avc1.64001f",), frame_rate=0.0),
    VariantInfo(bandwidth=1000, codecs=("mp4a.40.2",), path="a b/"),
])
def test_multivariant_refuses_bad_values(variant: VariantInfo) -> None:
    with pytest.raises(ValueError):
        render_multivariant([variant])
    with pytest.raises(ValueError):
        render_multivariant([])
