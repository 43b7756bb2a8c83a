"""Exact sliding-window rate limits, as the Flashduty sandbox enforces them.

A window of width ``w`` that ends at ``now`` is the half-open interval ``(now - w, now]``: a
request leaves the window exactly ``w`` seconds after it was accepted. Each scope (the account,
or one integration) keeps a deque of accepted timestamps per window, so the limit is exact, not
a token-bucket approximation. A request over either limit is rejected and is *not* recorded.

``time_scale`` divides every window width and keeps the counts: ``time_scale=10`` turns
"5/s and 50/min" into "5 per 0.1 s and 50 per 6 s", i.e. every limit ×10, for fast tests and
benchmarks.

Besides deciding, each scope records what it saw, for tests to assert on: the largest number of
accepted requests in any rolling window (can never exceed the limit: a check of the limiter
itself) and the largest number of requests that *reached* the limiter in any rolling window,
rejected ones included (a client that paces itself correctly keeps this within the limit too).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

SECOND = 1.0
MINUTE = 60.0


@dataclass(frozen=True)
class Limit:
    per_second: int
    per_minute: int

    def __post_init__(self) -> None:
        if self.per_second < 1 or self.per_minute < 1:
            raise ValueError(f"rate limits must be >= 1 (got {self.per_second}/s, {self.per_minute}/min)")


class RollingWindow:
    """Timestamps inside ``(now - width, now]``, and the largest count ever held."""

    def __init__(self, width: float) -> None:
        self.width = width
        self.peak = 0
        self._stamps: deque[float] = deque()

    def count(self, now: float) -> int:
        while self._stamps and now - self._stamps[0] >= self.width:
            self._stamps.popleft()
        return len(self._stamps)

    def add(self, now: float) -> None:
        self.count(now)
        self._stamps.append(now)
        self.peak = max(self.peak, len(self._stamps))


class ScopeLimiter:
    """Admission for one scope, with its observations."""

    def __init__(self, limit: Limit, time_scale: float) -> None:
        self.limit = limit
        self.accepted = 0
        self.rejected = 0
        self._second = RollingWindow(SECOND / time_scale)
        self._minute = RollingWindow(MINUTE / time_scale)
        self._seen = (RollingWindow(SECOND / time_scale), RollingWindow(MINUTE / time_scale))

    def admit(self, now: float) -> bool:
        for window in self._seen:
            window.add(now)
        if self._second.count(now) >= self.limit.per_second or self._minute.count(now) >= self.limit.per_minute:
            self.rejected += 1
            return False
        self._second.add(now)
        self._minute.add(now)
        self.accepted += 1
        return True

    def snapshot(self) -> dict[str, int]:
        return {
            "accepted": self.accepted,
            "rejected": self.rejected,
            "max_accepted_in_second": self._second.peak,
            "max_accepted_in_minute": self._minute.peak,
            "max_requests_in_second": self._seen[0].peak,
            "max_requests_in_minute": self._seen[1].peak,
        }


class RateLimiter:
    """One ``ScopeLimiter`` per scope name, all with the same limit and clock."""

    def __init__(self, limit: Limit, *, time_scale: float, clock: Callable[[], float]) -> None:
        if time_scale <= 0:
            raise ValueError(f"time_scale must be > 0 (got {time_scale})")
        self.limit = limit
        self.time_scale = time_scale
        self._clock = clock
        self._scopes: dict[str, ScopeLimiter] = {}

    def admit(self, scope: str) -> bool:
        limiter = self._scopes.get(scope)
        if limiter is None:
            limiter = self._scopes[scope] = ScopeLimiter(self.limit, self.time_scale)
        return limiter.admit(self._clock())

    def describe(self) -> str:
        return (
            f"{self.limit.per_second} requests per {SECOND / self.time_scale:g}s and "
            f"{self.limit.per_minute} per {MINUTE / self.time_scale:g}s"
        )

    def snapshot(self) -> dict[str, Any]:
        return {
            "per_second": self.limit.per_second,
            "per_minute": self.limit.per_minute,
            "second_window_seconds": SECOND / self.time_scale,
            "minute_window_seconds": MINUTE / self.time_scale,
            "scopes": {name: scope.snapshot() for name, scope in self._scopes.items()},
        }
