"""Waiting for state that settles in the background, never with a fixed sleep."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


async def eventually(condition: Callable[[], object], what: str, timeout: float = 5.0) -> None:
    """Poll ``condition`` every 10 ms until it holds; fail with ``what`` after ``timeout`` s.

    For state that settles in the background (a client acting on an answer the server has
    already recorded, a context closing after a capture): never a fixed sleep."""
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            raise AssertionError(f"not within {timeout:g} s: {what}")
        await asyncio.sleep(0.01)
