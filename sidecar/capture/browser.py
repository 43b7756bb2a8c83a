"""``BrowserManager``: one warm Chromium, its context pool, relaunched on crash, recycled, and how
long it has been unavailable.

Each capture borrows a context with ``async with manager.lease(options, prepare, reset=...) as
lease``; ``lease.run`` stops page work at once if the browser dies (``lease``). Contexts come
from the browser's pool (``pool``: spares, reuse, trim); launching is ``launcher``'s.

The browser is relaunched when it disconnects (crash, OOM kill) and recycled gracefully —
in-flight captures finish on the old one, then it is closed — after ``capture.recycle_after``
captures or when the memory of all its processes (PSS, see ``proc.process_memory_bytes``)
exceeds ``capture.max_browser_rss_mb`` (sampled after a browser's first capture, then at most
once a second in the background). Every launch is counted in
``browser_restarts_total{reason=start|crash|recycle_count|recycle_rss}``.

A browser that cannot be launched is not a start-up error (the sidecar shares the pod with
Grafana: its readiness never depends on the browser): the failure is logged once, the launch is
retried in the background — as is the relaunch of a browser that keeps dying before it finishes
a capture — with a growing delay (2, 4, … 30 s), and captures fail at once meanwhile
(``browser unavailable: …``). ``down_for()`` says for how long; past ``capture.liveness_grace``
the daemon's liveness fails so Kubernetes restarts the sidecar container. Start-up errors are
only those no retry can fix: Playwright itself does not start, or ``capture.browser_path`` names
no executable file.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from playwright.async_api import Playwright, async_playwright

from sidecar.capture.errors import CaptureError, first_line
from sidecar.capture.launcher import CLOSE_TIMEOUT, Chromium, find_browser, is_executable_file, launch, shut_down
from sidecar.capture.lease import Lease
from sidecar.capture.pool import ContextPool, OptionSets, Prepare, Reset, options_key, trim_idle
from sidecar.capture.proc import chromium_processes, process_memory_bytes
from sidecar.config import CaptureConfig
from sidecar.metrics import Metrics

__all__ = ["BrowserManager"]

T = TypeVar("T")
R = TypeVar("R")

log = logging.getLogger("sidecar.capture")

RSS_SAMPLE_EVERY = 1.0  # seconds between two background memory samples of one browser
MAX_BACKOFF = 30.0  # longest wait between two launch attempts


@dataclass(eq=False)
class _Instance:
    """One launched browser and the manager's bookkeeping of it."""

    chromium: Chromium
    pool: ContextPool = field(init=False)
    captures: int = 0
    in_flight: int = 0
    retired: str = ""  # reason, once retired
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    gone: asyncio.Event = field(default_factory=asyncio.Event)  # the process died or was closed
    sampling: bool = False
    sampled_at: float = float("-inf")


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
        self._sandbox = sandbox and os.geteuid() != 0
        self._executable: str | None = None  # resolved by start()
        self._playwright: Playwright | None = None
        self._current: _Instance | None = None
        self._all: set[_Instance] = set()
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._option_sets = OptionSets()
        self._closing = False
        self._stop = asyncio.Event()  # set by close(): cuts a relaunch back-off short
        self._next_reason = "start"
        self._crash_streak = 0  # browsers in a row that died before finishing a capture, or failed to launch
        self._launch_error: str | None = None  # why the last launch failed, until one succeeds
        self._down_since: float | None = None  # when the browser became unavailable (clock)
        self._relaunching: asyncio.Task[None] | None = None
        self._janitor: asyncio.Task[None] | None = None  # shrinks pools that are not used
        self.launches = 0
        self.contexts_opened = 0
        self.rss_bytes = 0

    # ----------------------------------------------------------------- public

    @property
    def connected(self) -> bool:
        inst = self._current
        return inst is not None and not inst.retired and inst.chromium.browser.is_connected()

    @property
    def pid(self) -> int | None:
        return self._current.chromium.pid if self._current is not None else None

    @property
    def open_contexts(self) -> int:
        """Contexts open on the current browser: captures in flight, spares, contexts closing."""
        inst = self._current
        browser = inst.chromium.browser if inst is not None else None
        return len(browser.contexts) if browser is not None and browser.is_connected() else 0

    @property
    def markers(self) -> list[str]:
        """Strings that identify this manager's Chromium processes in ``/proc/*/cmdline``."""
        return [m for inst in self._all for m in inst.chromium.markers]

    def down_for(self) -> float:
        """Seconds the browser has been unavailable without a break (launches failing, or
        disconnected and not relaunched yet); 0.0 while one is connected, before ``start``."""
        if self._down_since is None or self.connected:
            return 0.0
        return max(0.0, self._clock() - self._down_since)

    def check_available(self) -> None:
        """``CaptureError`` at once while the browser cannot be launched (retried in the background)."""
        if self._launch_error is not None:
            raise CaptureError(f"browser unavailable: {self._launch_error}")

    async def start(self) -> None:
        """Start Playwright and launch the browser. ``CaptureError`` only when Playwright cannot
        start or ``capture.browser_path`` is not an executable file; a launch that fails is
        retried in the background."""
        explicit = self._cfg.browser_path
        if explicit and not is_executable_file(explicit):
            raise CaptureError(f"capture.browser_path: {explicit} is not an executable file")
        self._executable = find_browser(explicit or None)
        self._closing = False
        self._stop.clear()
        if self._playwright is None:
            try:
                self._playwright = await async_playwright().start()
            except Exception as e:
                raise CaptureError(f"cannot start Playwright: {first_line(e)}") from None
        with contextlib.suppress(CaptureError):  # logged, and retried in the background
            await self._ensure()
        if self._janitor is None or self._janitor.done():
            self._janitor = asyncio.get_running_loop().create_task(trim_idle(self._current_pool, self._stop))

    async def close(self) -> None:
        """Close every browser, then Playwright. Captures still running fail (class ``error``)."""
        self._closing = True  # no launch starts from now on
        self._stop.set()
        async with self._lock:
            pass  # a launch in progress finishes and is registered, so it is closed below
        if self._janitor is not None:
            self._janitor.cancel()
            await asyncio.gather(self._janitor, return_exceptions=True)
            self._janitor = None
        for inst in self._all:  # nobody will take them: closing the browser closes what opened
            inst.pool.drop(cancel=True)
        # background work: relaunches return at once now, spares and closes of contexts and
        # retired browsers complete (a finishing capture may still hand over a context to close)
        for _ in range(3):
            if not self._tasks:
                break
            _done, stuck = await asyncio.wait(list(self._tasks), timeout=CLOSE_TIMEOUT)
            for task in stuck:  # a hung browser: closing it below ends what it was doing
                task.cancel()
        self._current = None
        self._option_sets.clear()
        for inst in list(self._all):
            await self._close_instance(inst)
        self._next_reason = "start"
        self._launch_error = self._down_since = None
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

        The context comes from the pool of these options (same ``pool.options_key``) when one
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
        pool = self._current_pool()
        if pool is not None:
            pool.keep_spare(key)

    # ----------------------------------------------------------------- lifecycle

    def _current_pool(self) -> ContextPool | None:
        inst = self._current
        return inst.pool if inst is not None and not inst.retired and not self._closing else None

    def _serves(self, inst: _Instance) -> bool:
        """``inst`` takes contexts back and gets spares: it is current and nothing is closing."""
        return not self._closing and not inst.retired and inst is self._current

    async def _acquire(self) -> _Instance:
        if self._closing or self._playwright is None:
            raise CaptureError("the capture service is not running")
        self.check_available()  # a launch is retried in the background: do not wait for it
        inst = await self._ensure()
        inst.in_flight += 1
        return inst

    async def _ensure(self) -> _Instance:
        """The current browser, launching one if there is none (or it died)."""
        async with self._lock:
            if self._closing:
                raise CaptureError("the capture service is closing")
            inst = self._current
            if inst is not None and not inst.retired and not inst.chromium.browser.is_connected():
                self._retire(inst, "crash")
                inst = None
            if inst is None or inst.retired:
                inst = await self._launch(self._next_reason)
                self._current = inst
            return inst

    async def _release(self, inst: _Instance) -> None:
        inst.in_flight -= 1
        inst.captures += 1
        if inst is self._current and not inst.retired:
            if inst.captures >= self._cfg.recycle_after:
                self._retire(inst, "recycle_count")
            elif not inst.sampling and self._clock() - inst.sampled_at >= RSS_SAMPLE_EVERY:
                inst.sampling = True  # then in the background: scanning /proc is not free
                self._spawn(self._check_memory(inst))
        if inst.retired and inst.in_flight == 0 and not inst.closed.is_set():
            self._spawn(self._close_instance(inst))

    async def _check_memory(self, inst: _Instance) -> None:
        inst.sampling = True
        try:
            rss = await asyncio.to_thread(self._sample_rss, inst)
        finally:
            inst.sampling = False
            inst.sampled_at = self._clock()
        if rss > self._cfg.max_browser_rss_mb * 1024 * 1024 and inst is self._current and not inst.retired:
            log.info("browser memory %d MiB over the limit: recycling", rss // (1024 * 1024))
            self._retire(inst, "recycle_rss")

    def _sample_rss(self, inst: _Instance) -> int:
        rss = process_memory_bytes(chromium_processes(inst.chromium.markers))
        self.rss_bytes = rss
        self._metrics.browser_rss.set(rss)
        return rss

    def _retire(self, inst: _Instance, reason: str) -> None:
        """Stop giving out ``inst``; it closes once its in-flight captures are done."""
        if inst.retired:
            return
        inst.retired = reason
        inst.pool.drop()
        if inst is self._current:
            self._current = None
            self._next_reason = reason
            if reason == "crash" and self._down_since is None:
                self._down_since = self._clock()
            self._relaunch_soon()
        if inst.in_flight == 0:
            self._spawn(self._close_instance(inst))

    def _relaunch_soon(self) -> None:
        if not self._closing and (self._relaunching is None or self._relaunching.done()):
            self._relaunching = self._spawn(self._relaunch())

    async def _relaunch(self) -> None:
        """Launch the replacement now, so the next capture finds a warm browser, and retry until
        one runs: after the second browser in a row that died before finishing a capture or
        failed to launch, with a growing delay (2, 4, … 30 s) instead of in a tight loop."""
        while not self._closing:
            if self._crash_streak > 1:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), min(MAX_BACKOFF, 2.0 ** (self._crash_streak - 1)))
            if self._closing:
                return
            try:
                inst = await self._ensure()
            except CaptureError:  # logged by _launch; the streak makes the next wait longer
                continue
            for key in self._option_sets:  # the spares the old one had
                inst.pool.keep_spare(key)
            return

    def _on_disconnected(self, inst: _Instance) -> None:
        inst.gone.set()
        if self._closing or inst.retired:
            return
        log.warning("browser disconnected (pid %s): relaunching", inst.chromium.pid)
        self._crash_streak = self._crash_streak + 1 if inst.captures == 0 else 1
        self._retire(inst, "crash")

    async def _launch(self, reason: str) -> _Instance:
        """Launch a browser (under the lock); a failure is recorded, logged once and retried."""
        assert self._playwright is not None
        try:
            chromium = await launch(self._playwright, executable=self._executable, sandbox=self._sandbox)
        except Exception as e:
            error = e if isinstance(e, CaptureError) else CaptureError(f"cannot launch Chromium: {first_line(e)}")
            self._launch_failed(str(error))
            raise error from None
        inst = _Instance(chromium)
        inst.pool = ContextPool(
            chromium.browser,
            inst.gone,
            capture=self._cfg,
            option_sets=self._option_sets,
            live=lambda: self._serves(inst),
            spawn=self._spawn,
            opened=self._context_opened,
            clock=self._clock,
        )
        self._all.add(inst)
        chromium.browser.on("disconnected", lambda _b: self._on_disconnected(inst))
        self.launches += 1
        self._metrics.browser_restarts.labels(reason=reason).inc()
        if self._launch_error is not None:
            log.info("browser available again after %.0f s", self.down_for())
        self._launch_error = self._down_since = None
        log.info(
            "browser launched (%s, pid %s, Chromium %s, %s)",
            reason,
            chromium.pid,
            chromium.browser.version,
            self._executable or "Playwright's own",
        )
        return inst

    def _launch_failed(self, reason: str) -> None:
        first = self._launch_error is None
        self._launch_error = reason
        if self._down_since is None:
            self._down_since = self._clock()
        self._crash_streak += 1
        if first:
            log.warning("%s; retrying in the background, captures fail until it is back", reason)
        else:
            log.debug("%s (still)", reason)
        self._relaunch_soon()

    def _context_opened(self) -> None:
        self.contexts_opened += 1

    async def _close_instance(self, inst: _Instance) -> None:
        if inst.closed.is_set():
            return
        inst.closed.set()
        if not inst.retired:
            inst.retired = "close"
        inst.pool.drop(cancel=True)  # closing the browser closes them
        await shut_down(inst.chromium)
        self._all.discard(inst)
        if self._current is inst:
            self._current = None

    def _spawn(self, coro: Coroutine[Any, Any, R]) -> asyncio.Task[R]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task
