"""The context pool of one browser: contexts prepared ahead, reused a bounded number of times,
trimmed when idle.

Why contexts are pooled: opening a context and its first page costs a renderer process and, in
Chromium's new headless mode, a browser window — about a CPU-second on a 2-core machine, more
than the rest of a capture — and a fresh context starts with an empty HTTP cache, so a real
Grafana page downloads its JavaScript again. All captures use the same Grafana credentials, so
nothing is gained by isolating them from each other (grafana-image-renderer's
``contextPerRenderKey`` mode reuses a context per user the same way).

The rules:

* after a lease that ended without an exception, the context goes back to the pool of its
  option set once ``reset`` has run on what ``prepare`` made (``run.reset_page``: the page goes
  to ``about:blank``, its request tracking starts over); a failing ``reset`` closes it instead, as
  does a page that crashed or closed while idle (checked when it is taken). Cookies and storage
  stay: every capture uses the same Grafana credentials;
* a context serves at most ``capture.context_reuse`` captures, then it is closed and a fresh
  one is opened ahead, off the critical path; ``context_reuse: 1`` (or no ``reset``) gives every
  capture a fresh context;
* a lease that raised (timeout, crash, cancelled) closes its context: its page may be stuck;
* whenever a context is closed instead of going back to the pool, a *spare* is opened in its
  place (up to ``capture.concurrency`` per pool), so a capture rarely waits for a context to
  open; one is opened at start and after a relaunch;
* a pool grows with demand up to ``capture.concurrency`` contexts; one that has not been used
  for ``POOL_IDLE_S`` shrinks back to a single idle context (on Debian's ``chromium`` an idle
  context costs about 100 MiB: its window, page and their renderers);
* pools are kept for the two most recent option sets (``options.SPARE_OPTION_SETS``), each at most
  ``capture.concurrency`` contexts; closing happens in the background, tracked by the manager
  (its ``close()`` waits for it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from playwright.async_api import Browser, BrowserContext
from playwright.async_api import Error as PlaywrightError

from sidecar.capture.errors import CaptureError, first_line
from sidecar.capture.launcher import CLOSE_TIMEOUT
from sidecar.capture.lease import Prepare, Reset, unless_gone
from sidecar.capture.options import SPARE_OPTION_SETS, OptionSets
from sidecar.config import CaptureConfig

__all__ = ["POOL_IDLE_S", "ContextPool", "Opened", "trim_idle"]

T = TypeVar("T")
Spawn = Callable[[Coroutine[Any, Any, Any]], "asyncio.Task[Any]"]

log = logging.getLogger("sidecar.capture")

RESET_TIMEOUT = 5.0  # longest a context may take to get ready for its next capture
POOL_IDLE_S = 30.0  # a pool unused this long keeps a single idle context


@dataclass(eq=False)
class Opened(Generic[T]):
    """A context, what ``prepare`` made of it (a page, its listeners), and its captures so far."""

    context: BrowserContext
    prepared: T
    uses: int = 0
    crashed: asyncio.Event = field(default_factory=asyncio.Event)  # a page of the context crashed

    def usable(self) -> bool:
        pages = self.context.pages
        return not self.crashed.is_set() and bool(pages) and not any(page.is_closed() for page in pages)


async def close_context(ctx: BrowserContext) -> None:
    with contextlib.suppress(Exception):
        async with asyncio.timeout(CLOSE_TIMEOUT):
            await ctx.close()


class ContextPool:
    """Idle contexts of one browser by option set (LRU), each a task: opening, resetting or ready.

    ``live()`` says whether the browser still takes contexts back and gets spares (it is the
    manager's current one and nothing is closing); background work goes through ``spawn``.
    """

    def __init__(
        self,
        browser: Browser,
        gone: asyncio.Event,
        *,
        capture: CaptureConfig,
        option_sets: OptionSets,
        live: Callable[[], bool],
        spawn: Spawn,
        opened: Callable[[], None],
        clock: Callable[[], float],
    ) -> None:
        self._browser = browser
        self._gone = gone
        self._cfg = capture
        self._sets = option_sets
        self._live = live
        self._spawn = spawn
        self._count_opened = opened
        self._clock = clock
        self.spares: dict[str, list[asyncio.Task[Opened[Any] | None]]] = {}
        self.used_at: dict[str, float] = {}  # by option set: last lease start or end

    # ----------------------------------------------------------------- a lease's context

    async def checkout(self, key: str, options: Mapping[str, Any], prepare: Prepare[T]) -> Opened[T]:
        """An idle context of ``key``'s pool, else one opened now; counted as one more use."""
        self.used_at[key] = self._clock()
        opened = await self._take(key)
        if opened is None:
            opened = await self.open(options, prepare)
        opened.uses += 1
        return opened

    def reconfigure(self, capture: CaptureConfig) -> None:
        """A config reload: ``context_reuse`` applies from the next lease (concurrency is fixed)."""
        self._cfg = capture

    def checkin(
        self,
        key: str,
        options: Mapping[str, Any],
        prepare: Prepare[T],
        opened: Opened[T] | None,
        reset: Reset[T] | None,
    ) -> bool:
        """After a lease: back to the pool (``reset`` given: the lease ended cleanly) while it has
        served fewer than ``capture.context_reuse`` captures, else closed. True when pooled."""
        self.used_at[key] = self._clock()
        self._sets.remember(key, options, prepare)
        if opened is None:
            return False
        if reset is not None and opened.uses < self._cfg.context_reuse and self._give_back(key, opened, reset):
            return True
        self._spawn(close_context(opened.context))
        return False

    async def open(self, options: Mapping[str, Any], prepare: Prepare[T]) -> Opened[T]:
        try:
            ctx = await self._browser.new_context(**options)
        except PlaywrightError:
            if not self._browser.is_connected():
                raise CaptureError("the browser crashed before the capture started") from None
            raise
        self._count_opened()
        try:
            prepared = await unless_gone(prepare(ctx), self._gone)
        except BaseException:
            self._spawn(close_context(ctx))
            raise
        opened = Opened(ctx, prepared)

        def on_crash(_page: Any) -> None:
            opened.crashed.set()

        for page in ctx.pages:
            page.on("crash", on_crash)
        return opened

    async def _take(self, key: str) -> Opened[Any] | None:
        """An idle context for ``key`` — a ready one, else the first to get ready (opening or
        resetting) — or None when the pool is empty or nothing in it could be used."""
        while tasks := self.spares.get(key):
            ready = [t for t in tasks if t.done()]
            if not ready:
                # if this capture is cancelled meanwhile, the tasks simply stay in the pool
                await asyncio.wait(list(tasks), return_when=asyncio.FIRST_COMPLETED)
                continue
            task = ready[0]
            tasks.remove(task)
            if not tasks:
                self.spares.pop(key, None)
            opened = None if task.cancelled() or task.exception() is not None else task.result()
            if opened is None:
                continue  # it failed to open or to reset (and was closed)
            if opened.usable():
                return opened
            log.debug("idle context unusable (its page crashed or closed): closing it")
            self._spawn(close_context(opened.context))
        return None

    def _give_back(self, key: str, opened: Opened[T], reset: Reset[T]) -> bool:
        if not self._live() or not self._browser.is_connected() or not opened.usable():
            return False
        self._add_idle(key, self._spawn(self._reset_for_reuse(key, opened, reset)))
        return True

    async def _reset_for_reuse(self, key: str, opened: Opened[T], reset: Reset[T]) -> Opened[T] | None:
        try:
            async with asyncio.timeout(RESET_TIMEOUT):
                await unless_gone(reset(opened.prepared), self._gone)
        except Exception as e:  # the page is stuck or the browser died: a fresh one instead
            log.debug("context not reusable: %s", first_line(e))
            await close_context(opened.context)
            self.keep_spare(key, replace=True)
            return None
        return opened

    # ----------------------------------------------------------------- spares

    def keep_spare(self, key: str, *, replace: bool = False) -> None:
        """Make sure a context for ``key`` (one of the remembered option sets) is idle or opening;
        with ``replace`` (a context was just closed) open one unless the pool is full."""
        known = self._sets.get(key)
        if known is None or not self._live():
            return
        tasks = self.spares.get(key, [])
        if not tasks or (replace and len(tasks) < self._cfg.concurrency):
            options, prepare = known
            self._add_idle(key, self._spawn(self._open_spare(options, prepare)))
        else:
            self.spares[key] = self.spares.pop(key)  # most recently used

    def _add_idle(self, key: str, task: asyncio.Task[Opened[Any] | None]) -> None:
        """Put ``task`` in the pool of ``key`` (most recently used); trim pools and option sets."""
        tasks = self.spares.pop(key, [])
        tasks.append(task)
        self.spares[key] = tasks
        while len(tasks) > self._cfg.concurrency:
            self._discard(tasks.pop(0))
        while len(self.spares) > SPARE_OPTION_SETS:
            for old in self.spares.pop(next(iter(self.spares))):
                self._discard(old)

    async def _open_spare(self, options: dict[str, Any], prepare: Prepare[T]) -> Opened[T] | None:
        try:
            return await self.open(options, prepare)
        except Exception as e:  # the browser died or is closing: the next capture opens its own
            log.debug("no spare context: %s", first_line(e))
            return None

    def _discard(self, task: asyncio.Task[Opened[Any] | None]) -> None:
        """Close a spare nobody will use, once it is open."""

        async def close_when_open() -> None:
            opened = await asyncio.shield(task)
            if opened is not None:
                await close_context(opened.context)

        self._spawn(close_when_open())

    def trim(self) -> None:
        """Pools unused for ``POOL_IDLE_S`` keep one idle context (a ready one if any)."""
        now = self._clock()
        for key, tasks in list(self.spares.items()):
            if len(tasks) > 1 and now - self.used_at.get(key, float("-inf")) >= POOL_IDLE_S:
                keep = next((t for t in reversed(tasks) if t.done()), tasks[-1])
                for task in [t for t in tasks if t is not keep]:
                    tasks.remove(task)
                    self._discard(task)
                log.debug("pool unused for %gs: trimmed to one idle context", POOL_IDLE_S)

    def drop(self, *, cancel: bool = False) -> None:
        """Forget every idle context: closed once open, or (``cancel``: the browser is closing
        anyway, which closes what it opened) cancelled."""
        for tasks in self.spares.values():
            for task in tasks:
                if cancel:
                    task.cancel()
                else:
                    self._discard(task)
        self.spares.clear()


async def trim_idle(current: Callable[[], ContextPool | None], stop: asyncio.Event) -> None:
    """Until ``stop``: every third of ``POOL_IDLE_S``, trim the pool ``current()`` gives (if any)."""
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(POOL_IDLE_S / 3):
                await stop.wait()
        pool = current()
        if pool is not None and not stop.is_set():
            pool.trim()
