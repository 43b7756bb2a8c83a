"""Waiting for state that settles in the background, never with a fixed sleep."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TypeVar

from sidecar.model import AlertEvent

T = TypeVar("T")


async def eventually(condition: Callable[[], object], what: str, timeout: float = 5.0) -> None:
    """Poll ``condition`` every 10 ms until it holds; fail with ``what`` after ``timeout`` s.

    For state that settles in the background (a client acting on an answer the server has
    already recorded, a context closing after a capture): never a fixed sleep."""
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            raise AssertionError(f"not within {timeout:g} s: {what}")
        await asyncio.sleep(0.01)


async def wait_for(pred: Callable[[], T], timeout: float, what: str) -> T:
    """Poll ``pred`` every 0.2 s until it returns something truthy, and return that; fail with
    ``what`` after ``timeout`` s. For whole-daemon tests, where the value is what is asserted on."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := pred():
            return value
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


async def wait_event(events: list[AlertEvent], pred: Callable[[AlertEvent], bool], timeout: float) -> AlertEvent:
    """The first of ``events`` (a list a rule scheduler appends to) matching ``pred``, polled."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for e in events:
            if pred(e):
                return e
        await asyncio.sleep(0.1)
    raise AssertionError(f"no matching event within {timeout}s; got {[(e.status, e.title) for e in events]}")
