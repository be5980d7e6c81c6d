"""Fit-mode geometry: canvas, scaled size and offset for each mode, and its invariants."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relay.images.geometry import Layout, layout, oriented
from relay.images.params import FitMode

HD = (1280, 720)


@pytest.mark.parametrize(("width", "height", "fit", "expected"), [
    (None, None, FitMode.CROP, Layout((1280, 720), (1280, 720), (0, 0))),
    (640, None, FitMode.PAD, Layout((640, 360), (640, 360), (0, 0))),
    (None, 90, FitMode.STRETCH, Layout((160, 90), (160, 90), (0, 0))),
    (400, 400, FitMode.PRESERVE, Layout((400, 225), (400, 225), (0, 0))),
    (400, 400, FitMode.STRETCH, Layout((400, 400), (400, 400), (0, 0))),
    (400, 400, FitMode.CROP, Layout((400, 400), (711, 400), (-156, 0))),
    (400, 400, FitMode.SMARTCROP, Layout((400, 400), (711, 400), (-156, 0))),
    (400, 400, FitMode.PAD, Layout((400, 400), (400, 225), (0, 87))),
    (100, 300, FitMode.PAD, Layout((100, 300), (100, 56), (0, 122))),
    (100, 300, FitMode.CROP, Layout((100, 300), (533, 300), (-217, 0))),
    (2560, 1440, FitMode.PRESERVE, Layout((2560, 1440), (2560, 1440), (0, 0))),  # upscale
])
def test_each_fit_mode(width: int | None, height: int | None, fit: FitMode,
                       expected: Layout) -> None:
    assert layout(HD, width, height, fit) == expected


def test_rotation_swaps_the_source_sides() -> None:
    assert oriented(HD, 90) == (720, 1280) == oriented(HD, 270)
    assert oriented(HD, 180) == HD == oriented(HD, 0)
    assert layout(oriented(HD, 90), 360, None, FitMode.PRESERVE).canvas == (360, 640)


def test_a_tiny_side_is_at_least_one_pixel() -> None:
    assert layout((4000, 10), 100, None, FitMode.PRESERVE).canvas == (100, 1)
    assert layout((4000, 10), 100, 100, FitMode.PAD).scaled == (100, 1)


def test_a_degenerate_source_is_refused() -> None:
    with pytest.raises(ValueError, match="source size must be positive"):
        layout((0, 720), 100, 100, FitMode.CROP)


sides = st.integers(min_value=1, max_value=4000)


@given(sides, sides, sides, sides, st.sampled_from(list(FitMode)))
def test_invariants(source_w: int, source_h: int, width: int, height: int,
                    fit: FitMode) -> None:
    placed = layout((source_w, source_h), width, height, fit)
    canvas_w, canvas_h = placed.canvas
    scaled_w, scaled_h = placed.scaled
    x, y = placed.offset
    if fit is FitMode.PRESERVE:
        assert canvas_w <= width and canvas_h <= height
        assert canvas_w == width or canvas_h == height
        assert placed.fills
        return
    assert placed.canvas == (width, height)  # exactly the asked size
    if fit is FitMode.STRETCH:
        assert placed.fills
    elif fit is FitMode.PAD:  # inside the canvas, centred, touching two opposite sides
        assert x >= 0 and x + scaled_w <= width and y >= 0 and y + scaled_h <= height
        assert scaled_w == width or scaled_h == height
        assert abs(x - (width - scaled_w - x)) <= 1 and abs(y - (height - scaled_h - y)) <= 1
    else:  # CROP, SMARTCROP: covers the canvas, centred
        assert x <= 0 and x + scaled_w >= width and y <= 0 and y + scaled_h >= height
        assert scaled_w == width or scaled_h == height
        assert abs(-x - (scaled_w - width + x)) <= 1 and abs(-y - (scaled_h - height + y)) <= 1
