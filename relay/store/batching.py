"""Group commit: many callers' writes in one transaction.

Theory of operation: a caller `submit`s one item and awaits its result. The first item finds
no batch being written and starts the writer task; the writer lets the loop run once (so
the items submitted in the same turn of the loop, thousands of sessions ending at a stop,
join it), then takes up to `max_batch` queued items and writes them with one call of
`write_many` (one transaction). Items submitted while that call runs wait for the next
batch. So a lone write costs what it cost before, and a burst costs a few transactions
instead of one per item.

One failing item must not fail the others: when `write_many` raises for a batch of more than
one item, each item of it is written again on its own, and only the items that fail then
get the exception. A caller that stops waiting (cancelled) does not stop its item from
being written. Order: the items of a batch are written in the order submitted; a caller that
awaits each item before it submits the next (as a session does) keeps its own order.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


class GroupCommit(Generic[Item, Result]):
    """Batches `submit`ted items into calls of `write_many`; see the module's theory."""

    def __init__(self, write_many: Callable[[Sequence[Item]], Awaitable[Sequence[Result]]],
                 max_batch: int) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        self._write_many = write_many
        self.max_batch = max_batch
        self._queue: deque[tuple[Item, asyncio.Future[Result]]] = deque()
        self._writer: asyncio.Task[None] | None = None
        self.batches = 0  # calls of write_many that succeeded
        self.items = 0  # items they wrote

    async def submit(self, item: Item) -> Result:
        """Write `item` in the next batch; its result, or the exception its write raised."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Result] = loop.create_future()
        self._queue.append((item, future))
        if self._writer is None:
            self._writer = loop.create_task(self._drain(), name="relay-group-commit")
        return await future

    async def _drain(self) -> None:
        batch: list[tuple[Item, asyncio.Future[Result]]] = []
        try:
            await asyncio.sleep(0)  # the rest of this turn's items join the first batch
            while self._queue:
                batch = [self._queue.popleft()
                         for _ in range(min(self.max_batch, len(self._queue)))]
                await self._write(batch)
                batch = []
        except BaseException as exc:
            # The loop is going away (cancelled): nobody writes these; say so to whoever
            # still waits instead of leaving them hanging.
            for _, future in [*batch, *self._queue]:
                if not future.done():
                    future.set_exception(exc if isinstance(exc, Exception)
                                         else RuntimeError("the write was abandoned"))
            self._queue.clear()
            raise
        finally:
            self._writer = None

    async def _write(self, batch: list[tuple[Item, asyncio.Future[Result]]]) -> None:
        try:
            results = await self._write_many([item for item, _ in batch])
        except Exception as exc:
            if len(batch) == 1:
                _settle(batch[0][1], exc)
                return
            for item, future in batch:  # find the failing one(s); the rest are written
                try:
                    result = (await self._write_many([item]))[0]
                except Exception as alone:
                    _settle(future, alone)
                else:
                    self.batches += 1
                    self.items += 1
                    _settle(future, result)
            return
        self.batches += 1
        self.items += len(batch)
        for (_, future), result in zip(batch, results, strict=True):
            _settle(future, result)


def _settle(future: asyncio.Future[Result], outcome: Result | Exception) -> None:
    if future.done():
        return  # the caller stopped waiting
    if isinstance(outcome, Exception):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)
