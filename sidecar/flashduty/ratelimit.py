"""Exact sliding-window rate limiting with a priority wait queue and a shared 429 gate.

Flashduty enforces "5/s AND 50/min" (uploads), "100/s AND 1000/min" (pushes) and "50/s AND
1000/min" (Open API) as rolling windows: a request is refused when the last second (minute)
already holds the limit. :class:`SlidingWindowLimiter` guarantees that the server never sees
more than ``limit`` requests in ANY rolling window, for every window at once:

* every admitted request holds a slot while it is in flight, and its timestamp is taken when
  the request *completes* (answer, error or timeout), not when it starts. The server counted
  the request somewhere between send and completion, so the next request, admitted only once
  that completion stamp is ``window`` old, reaches the server at least ``window`` later,
  whatever the network latency. (A log stamped at send time lets two requests arrive less
  than a window apart when the first one was slow on the wire.)
* waiters are served by priority (lower number first: ``model.PRIORITY`` Ok 0, Critical 1,
  Warning 2, Info 3) and FIFO within a priority. The head of the queue blocks the rest: with
  a single quota nobody behind it could be admitted anyway.
* one gate per quota: after a 429 no request to that quota starts before ``gate_until``
  (``Retry-After`` honoured, capped at 60 s; otherwise exponential backoff with full jitter,
  base 1 s, cap 30 s; the attempt counter resets on the next success).
* ``time_scale`` divides every duration (windows, Retry-After, backoff): 20 turns 1 s / 60 s
  windows into 50 ms / 3 s, matching a sandbox started with the same factor.

Waking is done with one ``loop.call_later`` timer owned by the limiter (no task, no thread);
``close()`` cancels it and fails the remaining waiters.

Why not pyrate-limiter (4.5.1, read and probed): its ``InMemoryBucket`` is an exact sliding
log, but (1) it stamps an item when it is admitted, as integer milliseconds, and keeps items
sorted by that stamp, so "stamp at completion" cannot be expressed; (2) async waiters queue
on one ``asyncio.Lock`` and poll with ``asyncio.sleep(wait + buffer_ms)``: FIFO only, no
priority, and a default 50 ms slack (measured: 5 admitted, then the next 5 at 1.053 s) that
is as long as a whole scaled window; (3) building a ``Limiter`` starts a daemon "Leaker"
thread that runs its own event loop and survives ``Limiter.close()`` (measured: still alive
0.5 s after close; it sleeps out its 10 s leak interval) unless the factory is built with
``schedule_leak=False``; (4) the clock is a private class attribute (``AbstractBucket._clock``).
A 429 gate and a priority queue would have to be written around it anyway; the window log
itself is thirty lines, so we own it.
"""

from __future__ import annotations

import asyncio
import heapq
import math
import random
import time
from bisect import bisect_right
from collections.abc import Callable, Sequence

from .answers import RETRY_AFTER_CAP

__all__ = [
    "LimiterClosed",
    "Permit",
    "RateLimitTimeout",
    "SlidingWindowLimiter",
]

Clock = Callable[[], float]

BACKOFF_BASE = 1.0
BACKOFF_CAP = 30.0


class RateLimitTimeout(Exception):
    """The deadline passed before a slot was free. ``retry_after``: seconds until the 429 gate
    opens, when a gate is what blocks."""

    def __init__(self, name: str, retry_after: float | None) -> None:
        self.retry_after = retry_after
        hint = f" (quota expected back in {retry_after:.1f}s)" if retry_after else ""
        super().__init__(f"{name}: deadline passed while waiting for the rate limit{hint}")


class LimiterClosed(Exception):
    """The limiter was closed while a request waited for it."""


class Permit:
    """One admitted request. Call exactly one of :meth:`release` (it was sent; stamps the
    window at completion) or :meth:`abort` (it was never sent)."""

    __slots__ = ("_done", "_limiter")

    def __init__(self, limiter: SlidingWindowLimiter) -> None:
        self._limiter = limiter
        self._done = False

    def release(self) -> None:
        if not self._done:
            self._done = True
            self._limiter._finish(stamp=True)

    def abort(self) -> None:
        if not self._done:
            self._done = True
            self._limiter._finish(stamp=False)


class SlidingWindowLimiter:
    """``limit`` requests per ``seconds`` for every ``(limit, seconds)`` in ``windows``, at once.

    ``clock`` must be monotonic and in seconds; with a fake clock, call :meth:`poke` after
    moving it (the wake-up timer itself runs on the event loop's clock).
    """

    def __init__(
        self,
        name: str,
        windows: Sequence[tuple[int, float]],
        *,
        time_scale: float = 1.0,
        clock: Clock = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        if not windows or any(limit < 1 or seconds <= 0 for limit, seconds in windows):
            raise ValueError(f"{name}: windows must be (limit ≥ 1, seconds > 0) pairs, got {windows!r}")
        if time_scale <= 0:
            raise ValueError("time_scale must be > 0")
        self.name = name
        self.time_scale = time_scale
        self.windows: tuple[tuple[int, float], ...] = tuple(
            sorted((limit, seconds / time_scale) for limit, seconds in windows)
        )
        self._longest = max(span for _, span in self.windows)
        self._clock = clock
        self._rng = rng or random.Random()
        self._stamps: list[float] = []  # completion times, ascending (clock is monotonic)
        self._in_flight = 0
        self._waiters: list[tuple[int, int, asyncio.Future[Permit]]] = []
        self._seq = 0
        self._gate_until = -math.inf
        self._backoff_attempt = 0
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False

    # ------------------------------------------------------------------ public API

    @property
    def gate_until(self) -> float:
        """Clock time before which no request starts (after a 429); -inf when open."""
        return self._gate_until

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def waiting(self) -> int:
        return sum(1 for _, _, fut in self._waiters if not fut.done())

    def used(self) -> list[tuple[int, float, int]]:
        """``(limit, seconds, used)`` per window now: requests done within it plus in flight."""
        now = self._clock()
        return [(lim, span, self._in_flight + len(self._stamps) - bisect_right(self._stamps, now - span))
                for lim, span in self.windows]  # fmt: skip

    def capacity(self, seconds: float) -> int:
        """About how many more requests could start within ``seconds`` from now, after the ones
        already waiting: for each window, the free slots now, plus the stamps that leave it by
        then, plus a whole limit per window span that fits; the smallest of the windows."""
        now = self._clock()
        horizon = now + max(seconds, 0.0)
        if self._gate_until >= horizon:
            return 0
        best = math.inf
        for limit, span in self.windows:
            first = bisect_right(self._stamps, now - span)
            held = self._in_flight + len(self._stamps) - first
            leaving = bisect_right(self._stamps, horizon - span) - first
            best = min(best, max(0, limit - held) + max(0, leaving) + limit * int(seconds // span))
        return max(0, int(best) - self.waiting)

    async def acquire(self, priority: int = 2, *, deadline: float | None = None) -> Permit:
        """Wait for a slot (priority order, FIFO within a priority) and return its permit.

        Raises :class:`RateLimitTimeout` when ``deadline`` (same clock) passes first.
        """
        if self._closed:
            raise LimiterClosed(f"{self.name}: limiter closed")
        loop = asyncio.get_running_loop()
        self._loop = loop
        fut: asyncio.Future[Permit] = loop.create_future()
        self._seq += 1
        heapq.heappush(self._waiters, (priority, self._seq, fut))
        self._dispatch()
        granted = False
        try:
            if deadline is None:
                permit = await fut
            else:
                remaining = deadline - self._clock()
                if remaining <= 0 and not fut.done():
                    raise TimeoutError
                async with asyncio.timeout(max(remaining, 0.0)):
                    permit = await fut
            granted = True
            return permit
        except TimeoutError:
            gate = self._gate_until - self._clock()
            raise RateLimitTimeout(self.name, gate if gate > 0 else None) from None
        finally:
            if not granted:
                if fut.done() and not fut.cancelled() and fut.exception() is None:
                    fut.result().abort()  # admitted, but the caller went away before using it
                else:
                    fut.cancel()
                    self._dispatch()  # we may have been the head that blocked the others

    def on_rate_limited(self, retry_after: float | None) -> float:
        """Record a 429: close the gate for ``retry_after`` (already parsed and capped) or, when
        absent, a full-jitter exponential backoff. Returns the (scaled) delay applied."""
        if retry_after is None:
            ceiling = min(BACKOFF_CAP, BACKOFF_BASE * 2.0**self._backoff_attempt)
            delay = self._rng.uniform(0.0, ceiling)
        else:
            delay = min(max(retry_after, 0.0), RETRY_AFTER_CAP)
        self._backoff_attempt = min(self._backoff_attempt + 1, 32)
        delay /= self.time_scale
        self._gate_until = max(self._gate_until, self._clock() + delay)
        self._dispatch()
        return delay

    def on_success(self) -> None:
        """A request got through: the next 429 starts the backoff from the beginning again."""
        self._backoff_attempt = 0

    def poke(self) -> None:
        """Re-check the queue now (only needed with an injected fake clock)."""
        self._dispatch()

    def close(self) -> None:
        """Cancel the wake-up timer and fail every waiter with :class:`LimiterClosed`."""
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self._waiters:
            _, _, fut = heapq.heappop(self._waiters)
            if not fut.done():
                fut.set_exception(LimiterClosed(f"{self.name}: limiter closed"))
                fut.exception()  # mark retrieved: the awaiting task re-raises it itself

    # ------------------------------------------------------------------ internals

    def _finish(self, *, stamp: bool) -> None:
        self._in_flight -= 1
        if stamp:
            self._stamps.append(self._clock())
        self._dispatch()

    def _blocked_for(self, now: float) -> float:
        """Seconds until the next request may start: 0 = now, inf = when an in-flight one ends."""
        wait = max(self._gate_until - now, 0.0)
        horizon = bisect_right(self._stamps, now - self._longest)
        if horizon:
            del self._stamps[:horizon]
        for limit, span in self.windows:
            first = bisect_right(self._stamps, now - span)  # stamps > now - span are in the window
            stamped = len(self._stamps) - first
            excess = self._in_flight + stamped - limit + 1  # slots that must free up first
            if excess <= 0:
                continue
            if excess > stamped:
                return math.inf
            wait = max(wait, self._stamps[first + excess - 1] + span - now)
        return wait

    def _dispatch(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._closed:
            return
        now = self._clock()
        while self._waiters:
            fut = self._waiters[0][2]
            if fut.done():
                heapq.heappop(self._waiters)
                continue
            wait = self._blocked_for(now)
            if wait > 0:
                if wait != math.inf and self._loop is not None:
                    self._timer = self._loop.call_later(wait, self._dispatch)
                return
            heapq.heappop(self._waiters)
            self._in_flight += 1
            fut.set_result(Permit(self))
