"""``BrowserManager``: one warm Chromium and its context pool, relaunched on crash, recycled.

Each capture borrows a context with ``async with manager.lease(options, prepare, reset=...) as
lease``; ``lease.run`` stops page work at once if the browser dies (``lease``). Contexts come
from the browser's pool (``pool``: spares, reuse, trim; ``options``: which pool fits, which
option sets get spares); which browser is current, and its relaunch after a crash or a failed
launch, is the ``supervisor``'s; launching is ``launcher``'s.

The manager recycles the browser gracefully — in-flight captures finish on the old one, then it
is closed — after ``capture.recycle_after`` captures or when the memory of all its processes
(PSS, see ``proc.process_memory_bytes``) exceeds ``capture.max_browser_rss_mb`` (sampled after a
browser's first capture, then at most once a second in the background).

A browser that cannot be launched is retried in the background and captures fail at once
meanwhile; ``down_for()`` says for how long (``outage``). Start-up errors are only those no retry
can fix: Playwright itself does not start, or ``capture.browser_path`` names no executable file.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping
from typing import Any, TypeVar

from playwright.async_api import Playwright, async_playwright

from sidecar.capture.errors import CaptureError, first_line
from sidecar.capture.launcher import CLOSE_TIMEOUT, configured_browser, find_browser, is_executable_file
from sidecar.capture.lease import Lease, Prepare, Reset
from sidecar.capture.options import OptionSets, options_key
from sidecar.capture.pool import ContextPool, trim_idle
from sidecar.capture.proc import chromium_processes, process_memory_bytes
from sidecar.capture.supervisor import Instance, Supervisor
from sidecar.config import CaptureConfig
from sidecar.metrics import Metrics

__all__ = ["BrowserManager"]

T = TypeVar("T")
R = TypeVar("R")

log = logging.getLogger("sidecar.capture")

RSS_SAMPLE_EVERY = 1.0  # seconds between two background memory samples of one browser


class BrowserManager:
    """The warm browser. ``start`` launches it, ``close`` leaves no Chromium process behind."""

    def __init__(
        self,
        *,
        capture: CaptureConfig,
        metrics: Metrics,
        sandbox: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._cfg = capture
        self._metrics = metrics
        self._clock = clock
        self._playwright: Playwright | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._option_sets = OptionSets()
        self._sup = Supervisor(
            capture=capture,
            metrics=metrics,
            option_sets=self._option_sets,
            spawn=self._spawn,
            clock=clock,
            sandbox=sandbox and os.geteuid() != 0,
        )
        self._janitor: asyncio.Task[None] | None = None  # shrinks pools that are not used
        self.rss_bytes = 0

    # ----------------------------------------------------------------- public

    @property
    def settings(self) -> CaptureConfig:
        """The capture settings in force (``reconfigure`` replaces them)."""
        return self._cfg

    def reconfigure(self, capture: CaptureConfig) -> None:
        """A config reload: ``context_reuse``, ``recycle_after`` and ``max_browser_rss_mb`` apply
        from now on; ``browser_path`` and ``concurrency`` need a restart (see ``sidecar.reload``)."""
        self._cfg = capture
        self._sup.reconfigure(capture)

    @property
    def connected(self) -> bool:
        inst = self._sup.current
        return inst is not None and not inst.retired and inst.chromium.browser.is_connected()

    @property
    def pid(self) -> int | None:
        inst = self._sup.current
        return inst.chromium.pid if inst is not None else None

    @property
    def open_contexts(self) -> int:
        """Contexts open on the current browser: captures in flight, spares, contexts closing."""
        inst = self._sup.current
        browser = inst.chromium.browser if inst is not None else None
        return len(browser.contexts) if browser is not None and browser.is_connected() else 0

    @property
    def markers(self) -> list[str]:
        """Strings that identify this manager's Chromium processes in ``/proc/*/cmdline``."""
        return [m for inst in self._sup.all for m in inst.chromium.markers]

    @property
    def launches(self) -> int:
        return self._sup.launches

    @property
    def version(self) -> str | None:
        """The current browser's version (``Chromium 120…`` as Playwright reports it), once launched."""
        inst = self._sup.current
        return inst.chromium.browser.version if inst is not None else None

    @property
    def contexts_opened(self) -> int:
        return self._sup.contexts_opened

    def down_for(self) -> float:
        """Seconds the browser has been unavailable without a break (launches failing, or
        disconnected and not relaunched yet); 0.0 while one is connected, before ``start``."""
        return 0.0 if self.connected else self._sup.outage.down_for()

    def check_available(self) -> None:
        """``CaptureError`` at once while the browser cannot be launched (retried in the background)."""
        self._sup.outage.check()

    async def start(self) -> None:
        """Start Playwright and launch the browser. ``CaptureError`` only when Playwright cannot
        start or ``capture.browser_path`` (else ``$SIDECAR_BROWSER_PATH``) is not an executable
        file; a launch that fails is retried in the background."""
        asked = configured_browser(self._cfg.browser_path)
        if asked and not is_executable_file(asked[0]):
            raise CaptureError(f"{asked[1]}: {asked[0]} is not an executable file")
        if self._playwright is None:
            try:
                self._playwright = await async_playwright().start()
            except Exception as e:
                raise CaptureError(f"cannot start Playwright: {first_line(e)}") from None
        self._sup.open(self._playwright, find_browser(asked[0] if asked else None))
        with contextlib.suppress(CaptureError):  # logged, and retried in the background
            await self._sup.ensure()
        if self._janitor is None or self._janitor.done():
            self._janitor = asyncio.get_running_loop().create_task(trim_idle(self._serving_pool, self._sup.stop))

    async def close(self) -> None:
        """Close every browser, then Playwright. Captures still running fail (class ``error``)."""
        await self._sup.begin_close()  # a launch in progress is registered, so it is closed below
        if self._janitor is not None:
            self._janitor.cancel()
            await asyncio.gather(self._janitor, return_exceptions=True)
            self._janitor = None
        for inst in self._sup.all:  # nobody will take them: closing the browser closes what opened
            inst.pool.drop(cancel=True)
        # background work: relaunches return at once now, spares and closes of contexts and
        # retired browsers complete (a finishing capture may still hand over a context to close)
        for _ in range(3):
            if not self._tasks:
                break
            _done, stuck = await asyncio.wait(list(self._tasks), timeout=CLOSE_TIMEOUT)
            for task in stuck:  # a hung browser: closing it below ends what it was doing
                task.cancel()
        self._option_sets.clear()
        await self._sup.close_all()
        if self._playwright is not None:
            with contextlib.suppress(Exception):
                await self._playwright.stop()
            self._playwright = None

    @contextlib.asynccontextmanager
    async def lease(
        self,
        options: Mapping[str, Any],
        prepare: Prepare[T],
        *,
        reset: Reset[T] | None = None,
    ) -> AsyncIterator[Lease[T]]:
        """A context with ``options``, ``prepare`` already run on it, for the block.

        The context comes from the pool of these options (same ``options.options_key``) when one
        is idle, else it is opened now. After the block it goes back to the pool (``reset`` run
        on it) when the block raised nothing, ``reset`` is given and it has served fewer than
        ``capture.context_reuse`` captures; otherwise it is closed and, unless the lease was
        cancelled, a spare opened in the background in its place. ``prepare`` must leave a
        context ready for any capture with these options, ``reset`` must bring it back to that
        state. ``CaptureError`` at once while the browser cannot be launched.
        """
        key = options_key(options)
        inst = await self._acquire()
        pool = inst.pool
        opened = None
        clean = cancelled = False
        try:
            opened = await pool.checkout(key, options, prepare)
            yield Lease(opened.prepared, inst.gone, opened.crashed)
            clean = True
        except asyncio.CancelledError:
            cancelled = True
            raise
        finally:
            pooled = pool.checkin(key, options, prepare, opened, reset if clean else None)
            await self._release(inst)
            if not pooled and not cancelled:
                # the next capture's context, opened now rather than while this capture was
                # loading its page (a new page competes with a navigation for the browser thread)
                pool.keep_spare(key, replace=True)

    def prewarm(self, options: Mapping[str, Any], prepare: Prepare[Any]) -> None:
        """Keep a spare for ``options`` (e.g. the config's defaults, at start), now if a browser
        runs, else once one is launched."""
        key = options_key(options)
        self._option_sets.remember(key, options, prepare)
        pool = self._serving_pool()
        if pool is not None:
            pool.keep_spare(key)

    # ----------------------------------------------------------------- leases and recycling

    def _serving_pool(self) -> ContextPool | None:
        inst = self._sup.serving()
        return inst.pool if inst is not None else None

    async def _acquire(self) -> Instance:
        if self._sup.closing or self._playwright is None:
            raise CaptureError("the capture service is not running")
        self.check_available()  # a launch is retried in the background: do not wait for it
        inst = await self._sup.ensure()
        inst.in_flight += 1
        return inst

    async def _release(self, inst: Instance) -> None:
        inst.in_flight -= 1
        inst.captures += 1
        if inst is self._sup.current and not inst.retired:
            if inst.captures >= self._cfg.recycle_after:
                self._sup.retire(inst, "recycle_count")
            elif not inst.sampling and self._clock() - inst.sampled_at >= RSS_SAMPLE_EVERY:
                inst.sampling = True  # then in the background: scanning /proc is not free
                self._spawn(self._check_memory(inst))
        if inst.retired and inst.in_flight == 0 and not inst.closed.is_set():
            self._spawn(self._sup.close_instance(inst))

    async def _check_memory(self, inst: Instance) -> None:
        inst.sampling = True
        try:
            rss = await asyncio.to_thread(self._sample_rss, inst)
        finally:
            inst.sampling = False
            inst.sampled_at = self._clock()
        if rss > self._cfg.max_browser_rss_mb * 1024 * 1024 and inst is self._sup.current and not inst.retired:
            log.info("browser memory %d MiB over the limit: recycling", rss // (1024 * 1024))
            self._sup.retire(inst, "recycle_rss")

    def _sample_rss(self, inst: Instance) -> int:
        rss = process_memory_bytes(chromium_processes(inst.chromium.markers))
        self.rss_bytes = rss
        self._metrics.browser_rss.set(rss)
        return rss

    def _spawn(self, coro: Coroutine[Any, Any, R]) -> asyncio.Task[R]:
        """Background work of the manager (spares, closes, relaunches, memory samples): tracked
        until it ends (``close`` waits for it); a failure is logged and counted, never lost."""
        task = asyncio.get_running_loop().create_task(coro, name=f"browser {getattr(coro, '__name__', 'job')}")
        self._tasks.add(task)
        task.add_done_callback(self._spawned_done)
        return task

    def _spawned_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (e := task.exception()) is not None:
            self._metrics.background_errors.labels(job="browser").inc()
            log.error("%s failed: %s", task.get_name(), e, exc_info=e)
