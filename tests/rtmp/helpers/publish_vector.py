"""What test_publish_vector.py shares with other test modules: kept here so no test module imports
another."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

VECTOR = Path(__file__).resolve().parents[2] / "vectors" / "rtmp" / "ffmpeg_publish_320x240.bin"


DATA = VECTOR.read_bytes()


def whole(data: bytes) -> Iterator[bytes]:
    yield data


def bytewise(data: bytes) -> Iterator[bytes]:
    for i in range(len(data)):
        yield data[i:i + 1]


def random_splits(data: bytes) -> Iterator[bytes]:
    rng = random.Random(len(data))
    i = 0
    while i < len(data):
        n = rng.choice((1, 2, 7, 100, 1400, 4096, 65536))
        yield data[i:i + n]
        i += n
