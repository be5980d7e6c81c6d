"""What test_images.py shares with other test modules: kept here so no test module imports
another."""

from __future__ import annotations

import io

import httpx
from PIL import Image

BITS = 10


BOX = 32


# Box k is white when bit k of the frame number n is set.
FRAME_CODE = ",".join(
    ["drawbox=x=0:y=0:w=320:h=32:color=black:t=fill"]
    + [f"drawbox=x={k * BOX}:y=0:w={BOX}:h={BOX}:color=white:t=fill:"
       f"enable='eq(mod(floor(n/{1 << k}),2),1)'" for k in range(BITS)])


def frame_number(image: Image.Image) -> int:
    """The burnt-in frame number of a picture at the source's 320x240 orientation (any
    size: the boxes are read at their centres, scaled)."""
    rgb = image.convert("RGB")
    scale = rgb.width / 320
    number = 0
    for k in range(BITS):
        x, y = int((k * BOX + BOX / 2) * scale), int(BOX / 2 * scale)
        if sum(rgb.getpixel((x, y))) / 3 > 128:  # type: ignore[arg-type]
            number |= 1 << k
    return number


def image(response: httpx.Response) -> Image.Image:
    assert response.status_code == 200, (response.status_code, response.text)
    return Image.open(io.BytesIO(response.content))
