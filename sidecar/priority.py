"""Who goes first when alerts compete for a scarce resource: one order for every queue.

``model.PRIORITY`` ranks events: ``Ok`` 0 (a recovery never waits behind pictures), then
Critical 1, Warning 2, Info 3. Pictures take the same order with two tiers per status
(``picture_rank``): a storm's shared picture (``shared=True``) before the alerts' own pictures
of that status, so that one upload can give every alert of the storm a picture first. The
capture slots (``capture.concurrency``), the upload quota's wait queue and the push slots
(``delivery.workers``) all serve their waiters in that order, first come first served within
one rank.

``PrioritySlots`` is the slot half of it: at most ``n`` holders, waiters by rank, then FIFO;
resizable live. (The upload quota's queue is the rate limiter's own, ``flashduty.ratelimit``,
ranked with the same numbers.)
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
from collections.abc import AsyncIterator

from sidecar.model import PRIORITY

__all__ = ["DEFAULT_PICTURE_RANK", "PrioritySlots", "picture_rank"]


def picture_rank(priority: int, *, shared: bool = False) -> int:
    """Rank of a picture of an event of ``priority`` (lower first): Ok 0 (shared) / 1 (own),
    Critical 2 / 3, Warning 4 / 5, Info 6 / 7."""
    return 2 * priority + (0 if shared else 1)


DEFAULT_PICTURE_RANK = picture_rank(PRIORITY["Warning"])


class PrioritySlots:
    """At most ``n`` holders at once; waiters are served by rank (lower first), FIFO within one."""

    def __init__(self, n: int) -> None:
        self._n = self._free = n
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    @property
    def waiting(self) -> int:
        return sum(1 for _, _, f in self._waiters if not f.done())

    @property
    def holders(self) -> int:
        return self._n - self._free

    @contextlib.asynccontextmanager
    async def acquire(self, rank: int) -> AsyncIterator[None]:
        if self._free > 0 and not self._waiters:
            self._free -= 1
        else:
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            heapq.heappush(self._waiters, (rank, next(self._seq), fut))
            try:
                await fut
            except asyncio.CancelledError:
                if fut.done() and not fut.cancelled():
                    self._release()  # granted, then cancelled before it could run: hand it on
                raise
        try:
            yield
        finally:
            self._release()

    def resize(self, n: int) -> None:
        """Now at most ``n`` at once; holders already over a smaller ``n`` finish first."""
        self._free += n - self._n
        self._n = n
        self._grant()

    def _release(self) -> None:
        self._free += 1
        self._grant()

    def _grant(self) -> None:
        while self._free > 0 and self._waiters:
            _, _, fut = heapq.heappop(self._waiters)
            if not fut.done():
                self._free -= 1
                fut.set_result(None)
