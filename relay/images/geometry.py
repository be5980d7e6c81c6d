"""Fit modes as arithmetic: where a picture of one size goes on a canvas of another.

`layout(source, width, height, fit)` answers with the canvas (the output's size), the size
the picture is scaled to, and where its top-left corner lands on the canvas: negative
offsets cut it (crop), positive ones leave black bars (pad). With one of width/height, the
other follows the source's aspect ratio, whatever the fit mode; with neither, the output is
the source's size. `source` is the picture as it will be shown: after a rotation by 90 or
270 degrees its width and height are swapped (`oriented`).
"""

from __future__ import annotations

from dataclasses import dataclass

from relay.images.params import FitMode


@dataclass(frozen=True, slots=True)
class Layout:
    canvas: tuple[int, int]  # output width, height
    scaled: tuple[int, int]  # the picture's size on it
    offset: tuple[int, int]  # the picture's top-left corner on the canvas

    @property
    def fills(self) -> bool:
        """Whether the scaled picture is the whole canvas (nothing to crop or pad)."""
        return self.canvas == self.scaled and self.offset == (0, 0)


def oriented(size: tuple[int, int], rotate: int) -> tuple[int, int]:
    """The size of a `size` picture after a clockwise rotation by `rotate` degrees."""
    return (size[1], size[0]) if rotate in (90, 270) else size


def _at_least_one(value: float) -> int:
    return max(1, round(value))


def layout(source: tuple[int, int], width: int | None, height: int | None,
           fit: FitMode) -> Layout:
    source_w, source_h = source
    if source_w < 1 or source_h < 1:
        raise ValueError(f"source size must be positive, got {source_w}x{source_h}")
    if width is None and height is None:
        return Layout(source, source, (0, 0))
    if height is None:
        assert width is not None
        size = (width, _at_least_one(width * source_h / source_w))
        return Layout(size, size, (0, 0))
    if width is None:
        size = (_at_least_one(height * source_w / source_h), height)
        return Layout(size, size, (0, 0))
    if fit is FitMode.STRETCH:
        return Layout((width, height), (width, height), (0, 0))
    shrink = min(width / source_w, height / source_h)
    if fit is FitMode.PRESERVE:
        size = (_at_least_one(source_w * shrink), _at_least_one(source_h * shrink))
        return Layout(size, size, (0, 0))
    # CROP and SMARTCROP fill the canvas (the larger scale); PAD fits inside (the smaller).
    scale = shrink if fit is FitMode.PAD else max(width / source_w, height / source_h)
    scaled = (_at_least_one(source_w * scale), _at_least_one(source_h * scale))
    if fit is FitMode.PAD:  # rounding must not push the picture past the canvas
        scaled = (min(scaled[0], width), min(scaled[1], height))
    else:
        scaled = (max(scaled[0], width), max(scaled[1], height))
    return Layout((width, height), scaled,
                  ((width - scaled[0]) // 2, (height - scaled[1]) // 2))
