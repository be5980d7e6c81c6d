"""Every finding of the fuzz harnesses, replayed: each input under tests/vectors/fuzz/HARNESS/
goes through its harness's `check` (in process, without atheris), which raises on the
finding. tests/vectors/fuzz/README.md tells each vector's story.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from fuzz.harnesses import HARNESSES
from fuzz.harnesses.api_app import close_api

VECTORS = Path(__file__).resolve().parent.parent / "vectors" / "fuzz"


CASES = [
    pytest.param("amf", "command_name_whole_in_error.bin"),
    pytest.param("api_json", "lone_surrogate_in_a_string.bin"),
    pytest.param("hls", "resource_name_with_leading_zero.bin"),
    pytest.param("hls", "playback_id_with_final_newline.bin"),
    pytest.param("hls", "skip_value_whole_in_400_reason.bin"),
    pytest.param("proxy_protocol", "bare_cr_before_crlf_split.bin"),
    pytest.param("session", "chunk_error_raised_by_buffer_updated.bin"),
]


@pytest.mark.parametrize(("harness", "name"), CASES)
def test_fuzz_vector(harness: str, name: str) -> None:
    module, _, function = HARNESSES[harness].entry.partition(":")
    check = getattr(importlib.import_module(module), function)
    try:
        check((VECTORS / harness / name).read_bytes())
    finally:
        # The API harnesses' app, store and loop, kept for a fuzzing process's whole run:
        # not for the rest of this one's tests.
        close_api()


def test_every_vector_is_replayed() -> None:
    on_disk = {(path.parent.name, path.name) for path in VECTORS.glob("*/*.bin")}
    listed = {tuple(case.values) for case in CASES}
    assert on_disk == listed
