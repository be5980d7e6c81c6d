"""peer_text (peer values in log lines) and LogLimiter (one line per cause per interval)."""

from __future__ import annotations

import logging

import pytest

from relay.logs import PEER_TEXT_LIMIT, LogLimiter, peer_text


def test_peer_text_keeps_a_plain_string() -> None:
    assert peer_text("live/abc-123") == "live/abc-123"


def test_peer_text_truncates_and_says_how_long() -> None:
    shown = peer_text("x" * 10_000)
    assert shown.startswith("x" * PEER_TEXT_LIMIT)
    assert "x" * (PEER_TEXT_LIMIT + 1) not in shown
    assert shown.endswith("(10000 characters)")


@pytest.mark.parametrize("raw", ["a\nb", "a\rb", "a\x1b[2Jb", "a\u2028b", "a\x85b", "a\x00b"])
def test_peer_text_escapes_what_could_break_a_line(raw: str) -> None:
    shown = peer_text(raw)
    assert shown.startswith("a") and shown.endswith("b")
    assert all(c.isprintable() for c in shown), shown


def test_peer_text_never_walks_a_structure() -> None:
    # A dict that shares one child at every level: printing it whole doubles at each level.
    node: dict[str, object] = {}
    for _ in range(60):
        node = {"a": node, "b": node}
    assert peer_text(node) == "<dict>"
    assert peer_text([node]) == "<list>"
    assert peer_text(b"\x00" * 5) == "<5 bytes>"
    assert peer_text(None) == "None"
    assert peer_text(1.5) == "1.5"


def test_log_limiter_writes_one_line_per_cause_per_interval(
        caplog: pytest.LogCaptureFixture) -> None:
    now = [100.0]
    limiter = LogLimiter(logging.getLogger("relay.test"), interval=10.0, clock=lambda: now[0])
    with caplog.at_level(logging.INFO, logger="relay.test"):
        assert limiter.warning("refused", "refused %s", "one")
        for _ in range(5):
            assert not limiter.warning("refused", "refused %s", "again")
        assert limiter.warning("other", "other cause")  # causes are independent
        now[0] += 10.0
        assert limiter.warning("refused", "refused %s", "later")
    messages = [r.getMessage() for r in caplog.records]
    assert messages == ["refused one", "other cause",
                        "refused later (and 5 more like it in the last 10s)"]
    assert limiter.suppressed_total == 5


def test_log_limiter_bounds_its_table() -> None:
    limiter = LogLimiter(logging.getLogger("relay.test"), max_causes=4, clock=lambda: 0.0)
    for i in range(100):
        limiter.info(f"cause-{i}", "line")
    assert len(limiter._causes) <= 4


@pytest.mark.parametrize("char", ["\x01", "\u2028", "\\"])
def test_peer_text_bounds_what_it_shows_however_it_escapes(char: str) -> None:
    shown = peer_text(char * 1000)
    kept = shown[:shown.index("...(")]
    assert len(kept) <= PEER_TEXT_LIMIT
    assert shown.endswith("(1000 characters)")
    # Whole escapes only: what is kept is a run of complete escapes of `char`.
    escape = char.translate({ord(char): peer_text(char)})
    assert kept == escape * (len(kept) // len(escape))


def test_peer_text_cuts_a_short_string_whose_escapes_are_long() -> None:
    shown = peer_text("\x00" * 150)  # 150 characters, 600 once escaped
    assert shown.startswith("\\x00" * 50) and shown.endswith("...(150 characters)")
