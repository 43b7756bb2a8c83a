"""What a capture holds while it uses a browser context, and how its page work is cut short.

A ``Lease`` is handed out by ``BrowserManager.lease``: what ``prepare`` made of a pooled context
(the capture's page and its request tracking: ``run.prepare_page``) plus ``run``, which awaits page work but fails at
once with ``CaptureError`` when the browser dies or the page crashes (``unless_gone``).
Playwright fails pending calls when the browser goes away, but a crashed page can leave them
waiting until the deadline; this reports either at once, whatever call the capture was waiting in.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from playwright.async_api import BrowserContext

from sidecar.capture.errors import CaptureError

__all__ = ["Lease", "Prepare", "Reset", "unless_gone"]

T = TypeVar("T")
R = TypeVar("R")
Prepare = Callable[[BrowserContext], Awaitable[T]]  # makes a fresh context ready for any capture
Reset = Callable[[T], Awaitable[None]]  # brings what ``prepare`` made back to that state


async def unless_gone(coro: Awaitable[T], gone: asyncio.Event, crashed: asyncio.Event | None = None) -> T:
    """Await ``coro``; if the browser dies (``gone``) or the page crashes (``crashed``) first,
    cancel it and raise ``CaptureError``."""
    events = [gone] if crashed is None else [gone, crashed]
    work = asyncio.ensure_future(coro)
    watches = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait({work, *watches}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (work, *watches):
            task.cancel()
        await asyncio.gather(work, *watches, return_exceptions=True)
    failed = any(event.is_set() for event in events)
    if work.done() and not work.cancelled() and (work.exception() is None or not failed):
        return work.result()
    if gone.is_set():
        raise CaptureError("the browser crashed during the capture")
    raise CaptureError("the browser page crashed while Grafana was loading")


@dataclass(frozen=True)
class Lease(Generic[T]):
    """What ``prepare`` made of a browser context (fresh, or reset after earlier captures), and a
    way to run page work that stops if the browser dies or the page crashes."""

    prepared: T
    _gone: asyncio.Event
    _crashed: asyncio.Event

    async def run(self, coro: Coroutine[Any, Any, R]) -> R:
        """Await ``coro``; raise ``CaptureError`` at once if the browser dies or the page crashes first."""
        return await unless_gone(coro, self._gone, self._crashed)
