"""What the harnesses share: the finding type, the error-text check, fuzzer-chosen input
splits, growth feedback."""

from __future__ import annotations

from collections.abc import Callable, Iterator

#: An error text a peer can cause is logged (as a close reason, or the first malformed media
#: of a session): longer than this, it carries more of the peer's bytes than a log line should.
MAX_REASON = 512


class Finding(AssertionError):
    """A parser misbehaved without raising: a harness's own check on its result failed."""


def check_reason(exc: BaseException) -> None:
    """Raise `Finding` unless `exc`'s text is one line of at most MAX_REASON characters."""
    reason = str(exc)
    growth_feedback(len(reason))  # a longer text is new coverage: climb toward the bound
    if len(reason) > MAX_REASON:
        raise Finding(f"{type(exc).__name__} reason is {len(reason)} characters "
                      f"(over {MAX_REASON}): {reason[:120]!r}...")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in reason):
        raise Finding(f"{type(exc).__name__} reason has a control character: {reason[:120]!r}")


def split_input(data: bytes) -> tuple[int, list[int], bytes]:
    """Split a harness input into (flags, piece lengths, stream).

    Layout: one flags byte; one byte N (only its low 4 bits count); N piece-length bytes; the
    stream. A seed made as `b"\\0\\0" + stream` feeds `stream` whole with no flags set.
    """
    if len(data) < 2:
        return (data[0] if data else 0), [], b""
    count = data[1] & 0x0F
    lengths = [byte + 1 for byte in data[2 : 2 + count]]  # 1..256 bytes per piece
    return data[0], lengths, data[2 + count :]


#: Pieces cut by `pieces` before the rest of the stream goes in whole: enough to put cuts
#: inside the first dozens of headers and messages, without spending each execution on
#: thousands of one-byte calls.
MAX_PIECES = 64


def pieces(stream: bytes, lengths: list[int]) -> Iterator[bytes]:
    """`stream` cut into pieces of `lengths` (cycled), at most MAX_PIECES of them, then the
    rest whole; whole when `lengths` is empty."""
    pos = 0
    if lengths:
        for turn in range(MAX_PIECES):
            if pos >= len(stream):
                return
            size = lengths[turn % len(lengths)]
            yield stream[pos : pos + size]
            pos += size
    if pos < len(stream):
        yield stream[pos:]


def growth_feedback(amount: int) -> None:
    """Give each power of two of `amount` a branch of its own.

    Coverage-guided fuzzing keeps an input only when it reaches new code; amplification (an
    output or a structure growing much faster than the input) reaches no new code by itself.
    Under atheris's instrumentation each `if` below is a separate branch, so an input that
    makes `amount` cross the next power of two counts as new coverage and is kept: the fuzzer
    climbs toward blow-ups instead of finding them only by chance.
    """
    if amount >= 1 << 2:
        pass
    if amount >= 1 << 4:
        pass
    if amount >= 1 << 6:
        pass
    if amount >= 1 << 8:
        pass
    if amount >= 1 << 10:
        pass
    if amount >= 1 << 12:
        pass
    if amount >= 1 << 14:
        pass
    if amount >= 1 << 16:
        pass
    if amount >= 1 << 18:
        pass
    if amount >= 1 << 20:
        pass
    if amount >= 1 << 22:
        pass
    if amount >= 1 << 24:
        pass


def copy_in(get_buffer: Callable[[int], memoryview], buffer_updated: Callable[[int], object],
            piece: bytes) -> None:
    """Hand `piece` to a buffered protocol the way asyncio does: into the buffers it offers
    (`get_buffer`), announced with `buffer_updated`, for as many reads as that takes."""
    offset = 0
    while offset < len(piece):
        view = get_buffer(len(piece) - offset)
        n = min(len(view), len(piece) - offset)
        if n == 0:
            raise Finding("get_buffer offered 0 bytes without raising")
        view[:n] = piece[offset : offset + n]
        view.release()
        buffer_updated(n)
        offset += n
