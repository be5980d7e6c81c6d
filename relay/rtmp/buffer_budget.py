"""A process-wide bound on the memory held for RTMP connections that have not published yet.

Each connection's own bounds (max_command_size, max_buffered_before_publish) keep one peer
cheap, but not a thousand of them: without a shared bound, the connections that have not
authenticated could together hold max_connections times their own limit. Every connection
that has not published charges what it holds now (unread input, partial messages, unsent
replies) to one `BufferBudget` shared by every listener of the process; a connection whose
charge would take the total past the limit is closed instead. Honest encoders hold almost
nothing before they publish (a connect is a few hundred bytes, handled at once), so the
budget only ever binds on peers that keep partial messages open.
"""

from __future__ import annotations

from typing import Final

# 64 MiB: what a thousand connections holding 64 KiB each, or 256 at the per-connection
# bound, add up to; far above what honest encoders hold before they publish.
DEFAULT_PRE_PUBLISH_BUFFER_BUDGET: Final = 64 * 1024 * 1024


class BufferBudget:
    """Bytes charged by connections that have not published, against one limit."""

    __slots__ = ("limit", "used")

    def __init__(self, limit: int = DEFAULT_PRE_PUBLISH_BUFFER_BUDGET) -> None:
        if limit < 1:
            raise ValueError(f"a buffer budget must be at least 1 byte, got {limit}")
        self.limit = limit
        self.used = 0

    def charge(self, held: int, holding: int) -> bool:
        """Move one connection's charge from `held` bytes to `holding` bytes.

        Returns False, and changes nothing, when that would take the total past the limit
        (the caller then closes the connection and releases `held`). Shrinking always
        succeeds."""
        if holding > held and self.used - held + holding > self.limit:
            return False
        self.used += holding - held
        return True

    def release(self, held: int) -> None:
        """A connection published or closed: its charge is returned."""
        self.used -= held
