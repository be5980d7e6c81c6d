"""Random ids and secrets: length, alphabet, and every symbol about equally likely."""

from __future__ import annotations

import string
from collections import Counter

from relay.ids import OBJECT_ID_LENGTH, new_object_id, random_token


def test_tokens_have_their_length_and_only_alphanumeric_symbols() -> None:
    for length in (1, 10, 40, 100):
        token = random_token(length)
        assert len(token) == length and set(token) <= set(string.ascii_letters + string.digits)
    assert len(new_object_id()) == OBJECT_ID_LENGTH
    assert len({new_object_id() for _ in range(1000)}) == 1000


def test_every_symbol_is_about_equally_likely() -> None:
    counts = Counter("".join(random_token(40) for _ in range(25_000)))  # 1,000,000 symbols
    assert len(counts) == 62
    expected = 1_000_000 / 62  # 16,129; a modulo bias would put some symbols 25 % higher
    assert all(abs(count - expected) < 0.05 * expected for count in counts.values()), counts
