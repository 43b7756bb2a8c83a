"""SlidingWindowLimiter: exact windows, completion stamps, priority queue, 429 gate.

Most tests drive a fake clock and call ``poke()`` after moving it, so they do not sleep.
"""

from __future__ import annotations

import asyncio
import email.utils
import random
import time

import pytest

from sidecar.flashduty.answers import parse_retry_after
from sidecar.flashduty.ratelimit import (
    LimiterClosed,
    Permit,
    RateLimitTimeout,
    SlidingWindowLimiter,
)


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


async def test_admits_up_to_each_limit_then_waits_exactly_one_window(clock: FakeClock) -> None:
    lim = SlidingWindowLimiter("t", [(2, 1.0), (3, 10.0)], clock=clock)
    for _ in range(2):
        (await lim.acquire()).release()  # stamped at t=1000
    third = asyncio.ensure_future(lim.acquire())
    await settle()
    assert not third.done()
    clock.t = 1000.999
    lim.poke()
    await settle()
    assert not third.done()
    clock.t = 1001.0  # the first two leave the 1 s window
    lim.poke()
    await settle()
    (await third).release()  # stamped at 1001: three in the 10 s window now
    fourth = asyncio.ensure_future(lim.acquire())
    clock.t = 1009.99
    lim.poke()
    await settle()
    assert not fourth.done()
    clock.t = 1010.0
    lim.poke()
    await settle()
    assert fourth.done()
    (await fourth).release()
    lim.close()


async def test_in_flight_requests_hold_their_slot_and_stamp_at_completion(clock: FakeClock) -> None:
    lim = SlidingWindowLimiter("t", [(1, 1.0)], clock=clock)
    slow = await lim.acquire()
    waiter = asyncio.ensure_future(lim.acquire())
    clock.t += 100.0  # however long the request takes, the slot stays taken
    lim.poke()
    await settle()
    assert not waiter.done()
    slow.release()  # completes at 1100: the window runs from here
    clock.t += 0.5
    lim.poke()
    await settle()
    assert not waiter.done()
    clock.t += 0.5
    lim.poke()
    await settle()
    assert waiter.done()
    (await waiter).abort()
    lim.close()


async def test_abort_frees_the_slot_without_a_stamp(clock: FakeClock) -> None:
    lim = SlidingWindowLimiter("t", [(1, 1.0)], clock=clock)
    (await lim.acquire()).abort()
    permit = await asyncio.wait_for(lim.acquire(), 1)  # no wait: nothing was sent
    permit.release()
    permit.release()  # idempotent
    assert lim.in_flight == 0
    lim.close()


async def test_priority_order_then_fifo(clock: FakeClock) -> None:
    lim = SlidingWindowLimiter("t", [(1, 1.0)], clock=clock)
    blocker = await lim.acquire()
    order: list[str] = []

    async def want(name: str, priority: int) -> None:
        permit = await lim.acquire(priority)
        order.append(name)
        permit.abort()  # hand the slot straight to the next waiter

    tasks = [asyncio.ensure_future(want(f"info{i}", 3)) for i in range(3)]
    await settle()
    tasks.append(asyncio.ensure_future(want("critical", 1)))
    tasks.append(asyncio.ensure_future(want("warning", 2)))
    tasks.append(asyncio.ensure_future(want("ok", 0)))
    await settle()
    assert lim.waiting == 6
    blocker.abort()
    await asyncio.gather(*tasks)
    assert order == ["ok", "critical", "warning", "info0", "info1", "info2"]
    lim.close()


async def test_deadline_raises_and_the_abandoned_waiter_does_not_block_others() -> None:
    lim = SlidingWindowLimiter("t", [(1, 60.0)])
    blocker = await lim.acquire()
    head = asyncio.ensure_future(lim.acquire(0, deadline=time.monotonic() + 0.05))
    behind = asyncio.ensure_future(lim.acquire(3))
    with pytest.raises(RateLimitTimeout):
        await head
    assert lim.waiting == 1
    blocker.abort()
    (await asyncio.wait_for(behind, 1)).abort()
    lim.close()


async def test_cancelled_waiter_that_was_already_granted_gives_the_slot_back(clock: FakeClock) -> None:
    lim = SlidingWindowLimiter("t", [(1, 1.0)], clock=clock)
    blocker = await lim.acquire()
    task = asyncio.ensure_future(lim.acquire())
    await settle()
    blocker.abort()  # grants `task` its permit...
    task.cancel()  # ...but it is cancelled before it runs
    with pytest.raises(asyncio.CancelledError):
        await task
    assert lim.in_flight == 0
    lim.close()


async def test_gate_blocks_everyone_until_retry_after(clock: FakeClock) -> None:
    lim = SlidingWindowLimiter("t", [(100, 1.0)], clock=clock)
    assert lim.on_rate_limited(2.0) == 2.0
    waiters = [asyncio.ensure_future(lim.acquire(p)) for p in (0, 3)]
    clock.t += 1.99
    lim.poke()
    await settle()
    assert not any(w.done() for w in waiters)
    clock.t += 0.01
    lim.poke()
    await settle()
    assert all(w.done() for w in waiters)
    for w in waiters:
        (await w).abort()
    lim.close()


def test_retry_after_is_capped_and_scaled(clock: FakeClock) -> None:
    assert SlidingWindowLimiter("t", [(1, 1.0)], clock=clock).on_rate_limited(1000.0) == 60.0
    assert SlidingWindowLimiter("t", [(1, 1.0)], clock=clock, time_scale=10).on_rate_limited(2.0) == 0.2
    assert SlidingWindowLimiter("t", [(1, 1.0)], clock=clock).on_rate_limited(-3.0) == 0.0


class CeilingRng(random.Random):
    """Full jitter draws from [0, ceiling]; this one always draws the ceiling."""

    def uniform(self, a: float, b: float) -> float:
        return b


def test_backoff_is_exponential_capped_and_resets_on_success(clock: FakeClock) -> None:
    lim = SlidingWindowLimiter("t", [(1, 1.0)], clock=clock, rng=CeilingRng())
    assert [lim.on_rate_limited(None) for _ in range(7)] == [1, 2, 4, 8, 16, 30, 30]
    lim.on_success()
    assert lim.on_rate_limited(None) == 1
    scaled = SlidingWindowLimiter("t", [(1, 1.0)], clock=clock, rng=CeilingRng(), time_scale=10)
    assert [scaled.on_rate_limited(None) for _ in range(2)] == [0.1, 0.2]


def test_backoff_is_jittered(clock: FakeClock) -> None:
    lim = SlidingWindowLimiter("t", [(1, 1.0)], clock=clock, rng=random.Random(7))
    delays = []
    for _ in range(50):
        lim.on_success()
        delays.append(lim.on_rate_limited(None))
    assert all(0 <= d <= 1 for d in delays) and len(set(delays)) == 50


def test_gate_only_moves_forward(clock: FakeClock) -> None:
    lim = SlidingWindowLimiter("t", [(1, 1.0)], clock=clock)
    lim.on_rate_limited(10.0)
    lim.on_rate_limited(1.0)
    assert lim.gate_until == clock.t + 10.0


async def test_close_fails_waiters_and_refuses_new_ones(clock: FakeClock) -> None:
    lim = SlidingWindowLimiter("t", [(1, 1.0)], clock=clock)
    held = await lim.acquire()
    waiter = asyncio.ensure_future(lim.acquire())
    await settle()
    lim.close()
    with pytest.raises(LimiterClosed):
        await waiter
    with pytest.raises(LimiterClosed):
        await lim.acquire()
    held.release()  # harmless after close


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        ("", None),
        ("soon", None),
        ("2", 2.0),
        ("1.5", 1.5),
        ("-5", 0.0),
        ("86400", 60.0),
        ("nan", None),
    ],
)
def test_parse_retry_after_seconds(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value) == expected


def test_parse_retry_after_http_date() -> None:
    now = 1_700_000_000.0
    assert parse_retry_after(email.utils.formatdate(now + 30, usegmt=True), now=now) == 30.0
    assert parse_retry_after(email.utils.formatdate(now - 30, usegmt=True), now=now) == 0.0
    assert parse_retry_after(email.utils.formatdate(now + 3600, usegmt=True), now=now) == 60.0


def test_rejects_bad_windows() -> None:
    with pytest.raises(ValueError):
        SlidingWindowLimiter("t", [])
    with pytest.raises(ValueError):
        SlidingWindowLimiter("t", [(0, 1.0)])
    with pytest.raises(ValueError):
        SlidingWindowLimiter("t", [(1, 1.0)], time_scale=0)


async def test_simulated_traffic_never_exceeds_any_window_as_the_server_sees_it(clock: FakeClock) -> None:
    """Random latencies, random priorities: every request reaches the 'server' at a random
    moment between its send and its completion; no rolling window may hold more than the limit."""
    rng = random.Random(42)
    windows = [(3, 1.0), (7, 5.0)]
    lim = SlidingWindowLimiter("t", windows, clock=clock)
    arrivals: list[float] = []

    async def request() -> None:
        permit: Permit = await lim.acquire(rng.randint(0, 3))
        start, latency = clock.t, rng.uniform(0.0, 0.4)
        arrivals.append(start + rng.uniform(0.0, latency))
        while clock.t < start + latency:
            await asyncio.sleep(0)
        permit.release()

    tasks = [asyncio.ensure_future(request()) for _ in range(40)]
    while not all(t.done() for t in tasks):
        clock.t += 0.01
        lim.poke()
        await settle()
    await asyncio.gather(*tasks)
    lim.close()
    for limit, span in windows:
        for a in arrivals:
            assert sum(1 for b in arrivals if a - span < b <= a) <= limit
    # and it is not needlessly slow: 40 requests at 7 per 5 s take under ~6 windows of 5 s
    assert max(arrivals) - 1000.0 < 6 * 5.0 + 1.0
