"""Relay's compiled core (built from `native/` by `pip install .`).

There is no pure-Python fallback: the byte paths are only fast when compiled, so a missing
build is an installation error, reported once here with what to do about it.
"""

try:
    from relay._native import buffers
except ImportError as exc:  # pragma: no cover - exercised by a subprocess test
    raise ImportError(
        "Relay's native extension (relay._native.buffers) is not built: "
        "install Relay with `pip install .` (or `make run`) so that Cython compiles native/. "
        f"Underlying error: {exc}"
    ) from exc

__all__ = ["buffers"]
