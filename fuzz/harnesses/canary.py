"""Harnesses that misbehave on purpose, so the tests can show that the runner notices: a
parser that raises an undocumented exception, one that hangs, one that takes too much memory.
They are not part of `all`."""

from __future__ import annotations

import time


def crash(data: bytes) -> None:
    if data.startswith(b"boom"):
        raise KeyError("the canary's parser broke")


def hang(data: bytes) -> None:
    if data.startswith(b"hang"):
        time.sleep(60)


def oom(data: bytes) -> None:
    if data.startswith(b"grow"):
        held = b"x" * (400 << 20)  # touched, so it counts in RSS (bytes(n) might not)
        time.sleep(5)  # libFuzzer samples RSS once a second
        del held
