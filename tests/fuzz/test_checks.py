"""The harnesses' own checks flag what they are meant to, shown on parsers made to misbehave
(monkeypatched), so that a harness that finds nothing has looked."""

from __future__ import annotations

from typing import Any

import pytest

from fuzz.common import MAX_REASON, Finding, check_reason, pieces, split_input
from fuzz.harnesses import amf
from relay.rtmp import amf0


def test_an_error_text_is_one_bounded_line() -> None:
    check_reason(ValueError("x" * MAX_REASON))
    with pytest.raises(Finding, match=f"reason is {MAX_REASON + 1} characters"):
        check_reason(ValueError("x" * (MAX_REASON + 1)))
    with pytest.raises(Finding, match="control character"):
        check_reason(ValueError("bad\nline"))


def test_input_layout_and_pieces() -> None:
    assert split_input(b"\x03\x02\x00\x04abcdefgh") == (3, [1, 5], b"abcdefgh")
    assert list(pieces(b"abcdefgh", [1, 5])) == [b"a", b"bcdef", b"g", b"h"]
    assert list(pieces(b"abc", [])) == [b"abc"]
    assert list(pieces(b"x" * 100, [1])) == [b"x"] * 64 + [b"x" * 36]


def _shared(levels: int) -> Any:
    node: dict[str, Any] = {}
    for _ in range(levels):
        node = {"a": node, "b": node}
    return node


def test_amf_flags_a_value_that_shared_references_blow_up(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(amf0, "decode_all", lambda _data: [_shared(30)])
    with pytest.raises(Finding, match="expand to over 1000000 nodes"):
        amf.check(b"\x00anything")
    monkeypatch.setattr(amf0, "decode_all", lambda _data: [_shared(10)])
    amf.check(b"\x00anything")  # 2**11 nodes: sharing as such is no finding


def test_amf_flags_a_value_that_does_not_survive_a_round_trip(
        monkeypatch: pytest.MonkeyPatch) -> None:
    decode_all = amf0.decode_all
    calls = iter([[1.0], [2.0]])
    monkeypatch.setattr(amf0, "decode_all", lambda _data: next(calls))
    with pytest.raises(Finding, match="changed through encode and decode"):
        amf.check(b"\x00anything")
    monkeypatch.setattr(amf0, "decode_all", decode_all)
    amf.check(b"\x00" + amf0.encode(float("nan"), {"k": [None, "v"]}))  # NaN compares equal
