"""Small fMP4 test media made in-process with PyAV (libx264): a frame's red level is its
number times 8, so a decoded picture tells which frame it is."""

from __future__ import annotations

import io
from typing import Any

import av
from PIL import Image


def fragmented_mp4(frames: int = 60, gop: int = 30, size: tuple[int, int] = (64, 48),
                   fps: int = 30) -> bytes:
    """An init segment and one fragment per GOP, as one file (what init + segment are)."""
    buffer = io.BytesIO()
    out: Any = av.open(buffer, "w", format="mp4",
                       options={"movflags": "frag_keyframe+empty_moov+default_base_moof"})
    stream = out.add_stream("libx264", rate=fps)
    stream.width, stream.height = size
    stream.pix_fmt = "yuv420p"
    stream.options = {"g": str(gop), "bf": "0", "preset": "ultrafast"}
    for number in range(frames):
        frame = av.VideoFrame.from_image(Image.new("RGB", size, (number * 8 % 256, 0, 0)))
        frame.pts = number
        for packet in stream.encode(frame):
            out.mux(packet)
    for packet in stream.encode(None):
        out.mux(packet)
    out.close()
    return buffer.getvalue()


def red_frame_number(image: Image.Image) -> int:
    red = image.convert("RGB").getpixel((image.width // 2, image.height // 2))
    assert isinstance(red, tuple)
    return round(red[0] / 8)
