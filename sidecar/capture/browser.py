"""One warm Chromium, pooled contexts (prepared ahead, reused a bounded number of times),
relaunched on crash, recycled.

``BrowserManager`` owns Playwright and the browser process. Each capture borrows a context with
``async with manager.lease(options, prepare, reset=...) as lease``; ``lease.run`` stops page work
at once if the browser dies.

Why contexts are pooled: opening a context and its first page costs a renderer process and, in
Chromium's new headless mode, a browser window — about a CPU-second on a 2-core machine, more
than the rest of a capture — and a fresh context starts with an empty HTTP cache, so a real
Grafana page downloads its JavaScript again. All captures use the same Grafana credentials, so
nothing is gained by isolating them from each other (grafana-image-renderer's
``contextPerRenderKey`` mode reuses a context per user the same way).

The rules:

* after a lease that ended without an exception, the context goes back to the pool of its
  option set once ``reset`` has run on what ``prepare`` made (the service's: the page goes to
  ``about:blank``, its request tracking starts over); a failing ``reset`` closes it instead, as
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
* pools are kept for the two most recent option sets, each at most ``capture.concurrency``
  contexts; closing happens in the background, tracked (``close()`` waits for it).

The browser is relaunched when it disconnects (crash, OOM kill) and recycled gracefully —
in-flight captures finish on the old one, then it is closed — after ``capture.recycle_after``
captures or when the memory of all its processes (PSS, see ``proc.process_memory_bytes``)
exceeds ``capture.max_browser_rss_mb`` (sampled after a browser's first capture, then at most
once a second in the background). Every launch is counted in
``browser_restarts_total{reason=start|crash|recycle_count|recycle_rss}``.

Chromium gets a private temp directory (XDG config/cache, TMPDIR, crash dumps) so it runs on a
read-only root filesystem; the directory path doubles as the marker that finds its processes in
``/proc`` (``proc.py``): to measure memory and to make sure none is left after ``close()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from playwright.async_api import Browser, BrowserContext, Playwright, async_playwright
from playwright.async_api import Error as PlaywrightError

from sidecar.capture.grafana import CaptureError
from sidecar.capture.proc import chromium_processes, find_browser_process, process_memory_bytes, reap
from sidecar.config import CaptureConfig
from sidecar.metrics import Metrics

__all__ = ["BrowserManager", "Lease", "chromium_processes", "process_memory_bytes"]

T = TypeVar("T")
R = TypeVar("R")
Prepare = Callable[[BrowserContext], Awaitable[T]]
Reset = Callable[[T], Awaitable[None]]

log = logging.getLogger("sidecar.capture")

CHROMIUM_ARGS = (
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
    "--disable-default-apps",
    "--mute-audio",
)
_CLOSE_TIMEOUT = 10.0
SPARE_OPTION_SETS = 2  # pools are kept for this many distinct option sets (most recent first)
_RESET_TIMEOUT = 5.0  # longest a context may take to get ready for its next capture
POOL_IDLE_S = 30.0  # a pool unused this long keeps a single idle context
RSS_SAMPLE_EVERY = 1.0  # seconds between two background memory samples of one browser


# --------------------------------------------------------------------------- the manager


@dataclass(eq=False)
class _Opened(Generic[T]):
    """A context, what ``prepare`` made of it (a page, its listeners), and its captures so far."""

    context: BrowserContext
    prepared: T
    uses: int = 0
    crashed: asyncio.Event = field(default_factory=asyncio.Event)  # a page of the context crashed

    def usable(self) -> bool:
        pages = self.context.pages
        return not self.crashed.is_set() and bool(pages) and not any(page.is_closed() for page in pages)


@dataclass(eq=False)
class _Instance:
    browser: Browser
    workdir: str
    pid: int | None
    user_data_dir: str | None
    captures: int = 0
    in_flight: int = 0
    retired: str = ""  # reason, once retired
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    gone: asyncio.Event = field(default_factory=asyncio.Event)  # the process died or was closed
    # idle contexts by option set (LRU), each a task: still opening, resetting, or ready
    spares: dict[str, list[asyncio.Task[_Opened[Any] | None]]] = field(default_factory=dict)
    used_at: dict[str, float] = field(default_factory=dict)  # by option set: last lease start or end
    sampling: bool = False
    sampled_at: float = float("-inf")

    @property
    def markers(self) -> list[str]:
        return [m for m in (self.workdir, self.user_data_dir) if m]


async def _unless_gone(coro: Awaitable[T], gone: asyncio.Event, crashed: asyncio.Event | None = None) -> T:
    """Await ``coro``; if the browser dies (``gone``) or the page crashes (``crashed``) first,
    cancel it and raise ``CaptureError``.

    Playwright fails pending calls when the browser goes away, but a crashed page can leave
    them waiting until the deadline; this reports either at once, whatever call the capture
    was waiting in.
    """
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
        return await _unless_gone(coro, self._gone, self._crashed)


def options_key(options: Mapping[str, Any]) -> str:
    """Which spare fits: every context option except the viewport (a page can change that)."""
    return json.dumps({k: v for k, v in options.items() if k != "viewport"}, sort_keys=True, default=str)


class BrowserManager:
    """The warm browser. ``start`` launches it, ``close`` leaves no Chromium process behind."""

    def __init__(
        self,
        *,
        capture: CaptureConfig,
        metrics: Metrics,
        executable_path: str | None = None,
        sandbox: bool = False,
    ) -> None:
        self._cfg = capture
        self._metrics = metrics
        self._executable = executable_path or capture.browser_path or None
        self._sandbox = sandbox and os.geteuid() != 0
        self._playwright: Playwright | None = None
        self._current: _Instance | None = None
        self._all: set[_Instance] = set()
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._recent: dict[str, tuple[dict[str, Any], Prepare[Any]]] = {}  # option sets with spares, LRU
        self._closing = False
        self._stop = asyncio.Event()  # set by close(): cuts a relaunch back-off short
        self._next_reason = "start"
        self._crash_streak = 0  # browsers in a row that died before finishing a capture
        self._janitor: asyncio.Task[None] | None = None  # shrinks pools that are not used
        self.launches = 0
        self.contexts_opened = 0
        self.rss_bytes = 0

    # ----------------------------------------------------------------- public

    @property
    def connected(self) -> bool:
        inst = self._current
        return inst is not None and not inst.retired and inst.browser.is_connected()

    @property
    def pid(self) -> int | None:
        return self._current.pid if self._current is not None else None

    @property
    def open_contexts(self) -> int:
        """Contexts open on the current browser: captures in flight, spares, contexts closing."""
        inst = self._current
        return len(inst.browser.contexts) if inst is not None and inst.browser.is_connected() else 0

    @property
    def markers(self) -> list[str]:
        """Strings that identify this manager's Chromium processes in ``/proc/*/cmdline``."""
        return [m for inst in self._all for m in inst.markers]

    async def start(self) -> None:
        """Start Playwright and launch the browser; ``CaptureError`` when either fails."""
        self._closing = False
        self._stop.clear()
        if self._playwright is None:
            try:
                self._playwright = await async_playwright().start()
            except Exception as e:
                raise CaptureError(f"cannot start Playwright: {_first_line(e)}") from None
        await self._ensure()
        if self._janitor is None or self._janitor.done():
            self._janitor = asyncio.get_running_loop().create_task(self._trim_idle_pools())

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
            for tasks in inst.spares.values():
                for task in tasks:
                    task.cancel()
        # background work: relaunches return at once now, spares and closes of contexts and
        # retired browsers complete (a finishing capture may still hand over a context to close)
        for _ in range(3):
            if not self._tasks:
                break
            _done, stuck = await asyncio.wait(list(self._tasks), timeout=_CLOSE_TIMEOUT)
            for task in stuck:  # a hung browser: closing it below ends what it was doing
                task.cancel()
        self._current = None
        self._recent.clear()
        for inst in list(self._all):
            await self._close_instance(inst)
        self._next_reason = "start"
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

        The context comes from the pool of these options (same ``options_key``) when one is idle, else it is opened now. After the block it
        goes back to the pool (``reset`` run on it) when the block raised nothing, ``reset`` is
        given and it has served fewer than ``capture.context_reuse`` captures; otherwise it is
        closed and, unless the lease was cancelled, a spare opened in the background in its
        place. ``prepare`` must leave a context ready for any capture with these options,
        ``reset`` must bring it back to that state.
        """
        spare_key = options_key(options)
        inst = await self._acquire()
        inst.used_at[spare_key] = time.monotonic()
        opened: _Opened[T] | None = None
        clean = cancelled = False
        try:
            opened = await self._take_spare(inst, spare_key)
            if opened is None:
                opened = await self._open(inst, options, prepare)
            opened.uses += 1
            yield Lease(opened.prepared, inst.gone, opened.crashed)
            clean = True
        except asyncio.CancelledError:
            cancelled = True
            raise
        finally:
            inst.used_at[spare_key] = time.monotonic()
            self._remember(spare_key, options, prepare)
            pooled = False
            if opened is not None:
                if clean and reset is not None and opened.uses < self._cfg.context_reuse:
                    pooled = self._pool(inst, spare_key, opened, reset)
                if not pooled:
                    self._spawn(self._close_context(opened.context))
            await self._release(inst)
            if not pooled and not cancelled:
                # the next capture's context, opened now rather than while this capture was
                # loading its page (a new page competes with a navigation for the browser thread)
                self._keep_spare(inst, spare_key, replace=True)

    def prewarm(self, options: Mapping[str, Any], prepare: Prepare[Any]) -> None:
        """Open a spare for ``options`` now (e.g. the config's defaults, at start)."""
        inst = self._current
        if inst is not None and not inst.retired:
            spare_key = options_key(options)
            self._remember(spare_key, options, prepare)
            self._keep_spare(inst, spare_key)

    # ----------------------------------------------------------------- contexts and spares

    async def _open(self, inst: _Instance, options: Mapping[str, Any], prepare: Prepare[T]) -> _Opened[T]:
        try:
            ctx = await inst.browser.new_context(**options)
        except PlaywrightError:
            if not inst.browser.is_connected():
                raise CaptureError("the browser crashed before the capture started") from None
            raise
        self.contexts_opened += 1
        try:
            prepared = await _unless_gone(prepare(ctx), inst.gone)
        except BaseException:
            self._spawn(self._close_context(ctx))
            raise
        opened = _Opened(ctx, prepared)

        def on_crash(_page: Any) -> None:
            opened.crashed.set()

        for page in ctx.pages:
            page.on("crash", on_crash)
        return opened

    async def _take_spare(self, inst: _Instance, key: str) -> _Opened[Any] | None:
        """An idle context for ``key`` — a ready one, else the first to get ready (opening or
        resetting) — or None when the pool is empty or nothing in it could be used."""
        while tasks := inst.spares.get(key):
            ready = [t for t in tasks if t.done()]
            if not ready:
                # if this capture is cancelled meanwhile, the tasks simply stay in the pool
                await asyncio.wait(list(tasks), return_when=asyncio.FIRST_COMPLETED)
                continue
            task = ready[0]
            tasks.remove(task)
            if not tasks:
                inst.spares.pop(key, None)
            opened = None if task.cancelled() or task.exception() is not None else task.result()
            if opened is None:
                continue  # it failed to open or to reset (and was closed)
            if opened.usable():
                return opened
            log.debug("idle context unusable (its page crashed or closed): closing it")
            self._spawn(self._close_context(opened.context))
        return None

    def _remember(self, key: str, options: Mapping[str, Any], prepare: Prepare[Any]) -> None:
        """Keep ``key``'s options and ``prepare`` (to open its spares) as the most recent set."""
        known = self._recent.pop(key, None)
        self._recent[key] = known or (dict(options), prepare)
        while len(self._recent) > SPARE_OPTION_SETS:
            self._recent.pop(next(iter(self._recent)))

    def _add_idle(self, inst: _Instance, key: str, task: asyncio.Task[_Opened[Any] | None]) -> None:
        """Put ``task`` in the pool of ``key`` (most recently used); trim pools and option sets."""
        tasks = inst.spares.pop(key, [])
        tasks.append(task)
        inst.spares[key] = tasks
        while len(tasks) > self._cfg.concurrency:
            self._discard(tasks.pop(0))
        while len(inst.spares) > SPARE_OPTION_SETS:
            for old in inst.spares.pop(next(iter(inst.spares))):
                self._discard(old)

    def _keep_spare(self, inst: _Instance, key: str, *, replace: bool = False) -> None:
        """Make sure a context for ``key`` (one of the remembered option sets) is idle or opening
        on ``inst``; with ``replace`` (a context was just closed) open one unless the pool is full."""
        recent = self._recent.get(key)
        if recent is None or self._closing or inst.retired or inst is not self._current:
            return
        tasks = inst.spares.get(key, [])
        if not tasks or (replace and len(tasks) < self._cfg.concurrency):
            options, prepare = recent
            self._add_idle(inst, key, self._spawn(self._open_spare(inst, options, prepare)))
        else:
            inst.spares[key] = inst.spares.pop(key)  # most recently used

    def _pool(self, inst: _Instance, key: str, opened: _Opened[T], reset: Reset[T]) -> bool:
        """Return ``opened`` to the pool of ``key`` after ``reset``; False when it cannot be kept."""
        if self._closing or inst.retired or inst is not self._current or not inst.browser.is_connected():
            return False
        if not opened.usable():
            return False
        self._add_idle(inst, key, self._spawn(self._reset_for_reuse(inst, key, opened, reset)))
        return True

    async def _reset_for_reuse(
        self, inst: _Instance, key: str, opened: _Opened[T], reset: Reset[T]
    ) -> _Opened[T] | None:
        try:
            async with asyncio.timeout(_RESET_TIMEOUT):
                await _unless_gone(reset(opened.prepared), inst.gone)
        except Exception as e:  # the page is stuck or the browser died: a fresh one instead
            log.debug("context not reusable: %s", _first_line(e))
            await self._close_context(opened.context)
            self._keep_spare(inst, key, replace=True)
            return None
        return opened

    async def _trim_idle_pools(self) -> None:
        """Every third of ``POOL_IDLE_S``: pools unused for ``POOL_IDLE_S`` keep one idle context."""
        while not self._closing:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), POOL_IDLE_S / 3)
            inst = self._current
            if self._closing or inst is None or inst.retired:
                continue
            now = time.monotonic()
            for key, tasks in list(inst.spares.items()):
                if len(tasks) > 1 and now - inst.used_at.get(key, float("-inf")) >= POOL_IDLE_S:
                    keep = next((t for t in reversed(tasks) if t.done()), tasks[-1])
                    for task in [t for t in tasks if t is not keep]:
                        tasks.remove(task)
                        self._discard(task)
                    log.debug("pool unused for %gs: trimmed to one idle context", POOL_IDLE_S)

    async def _open_spare(self, inst: _Instance, options: dict[str, Any], prepare: Prepare[T]) -> _Opened[T] | None:
        try:
            return await self._open(inst, options, prepare)
        except Exception as e:  # the browser died or is closing: the next capture opens its own
            log.debug("no spare context: %s", _first_line(e))
            return None

    def _discard(self, task: asyncio.Task[_Opened[Any] | None]) -> None:
        """Close a spare nobody will use, once it is open."""

        async def close_when_open() -> None:
            opened = await asyncio.shield(task)
            if opened is not None:
                await self._close_context(opened.context)

        self._spawn(close_when_open())

    async def _close_context(self, ctx: BrowserContext) -> None:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(_CLOSE_TIMEOUT):
                await ctx.close()

    # ----------------------------------------------------------------- lifecycle

    async def _acquire(self) -> _Instance:
        if self._closing or self._playwright is None:
            raise CaptureError("the capture service is not running")
        inst = await self._ensure()
        inst.in_flight += 1
        return inst

    async def _ensure(self) -> _Instance:
        """The current browser, launching one if there is none (or it died)."""
        async with self._lock:
            if self._closing:
                raise CaptureError("the capture service is closing")
            inst = self._current
            if inst is not None and not inst.retired and not inst.browser.is_connected():
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
            elif not inst.sampling and time.monotonic() - inst.sampled_at >= RSS_SAMPLE_EVERY:
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
            inst.sampled_at = time.monotonic()
        if rss > self._cfg.max_browser_rss_mb * 1024 * 1024 and inst is self._current and not inst.retired:
            log.info("browser memory %d MiB over the limit: recycling", rss // (1024 * 1024))
            self._retire(inst, "recycle_rss")

    def _sample_rss(self, inst: _Instance) -> int:
        rss = process_memory_bytes(chromium_processes(inst.markers))
        self.rss_bytes = rss
        self._metrics.browser_rss.set(rss)
        return rss

    def _retire(self, inst: _Instance, reason: str) -> None:
        """Stop giving out ``inst``; it closes once its in-flight captures are done."""
        if inst.retired:
            return
        inst.retired = reason
        for tasks in inst.spares.values():
            for task in tasks:
                self._discard(task)
        inst.spares.clear()
        if inst is self._current:
            self._current = None
            self._next_reason = reason
            if not self._closing:
                self._spawn(self._warm_up())
        if inst.in_flight == 0:
            self._spawn(self._close_instance(inst))

    async def _warm_up(self) -> None:
        """Launch the replacement now, so the next capture finds a warm browser.

        A browser that keeps dying before it finishes a capture is relaunched with a growing
        delay (2, 4, … 30 s) instead of in a tight loop; a capture arriving meanwhile launches it.
        """
        if self._crash_streak > 1:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), min(30.0, 2.0 ** (self._crash_streak - 1)))
        if self._closing:
            return
        try:
            inst = await self._ensure()
        except Exception as e:  # the next capture retries the launch and reports it
            log.warning("browser relaunch failed: %s", _first_line(e))
            return
        for key in list(self._recent):  # the spares the old one had
            self._keep_spare(inst, key)

    def _on_disconnected(self, inst: _Instance) -> None:
        inst.gone.set()
        if self._closing or inst.retired:
            return
        log.warning("browser disconnected (pid %s): relaunching", inst.pid)
        self._crash_streak = self._crash_streak + 1 if inst.captures == 0 else 1
        self._retire(inst, "crash")

    async def _launch(self, reason: str) -> _Instance:
        assert self._playwright is not None
        workdir = tempfile.mkdtemp(prefix="sidecar-chromium-")
        try:
            return await self._launch_in(workdir, reason)
        except BaseException:  # failed or cancelled: leave no directory behind
            shutil.rmtree(workdir, ignore_errors=True)
            raise

    async def _launch_in(self, workdir: str, reason: str) -> _Instance:
        assert self._playwright is not None
        for sub in ("config", "cache", "tmp", "crash"):
            os.makedirs(os.path.join(workdir, sub), exist_ok=True)
        args = [*CHROMIUM_ARGS, f"--crash-dumps-dir={workdir}/crash", f"--disk-cache-dir={workdir}/cache"]
        if not self._sandbox:
            args.append("--no-sandbox")
        env: dict[str, str | float | bool] = {
            **_passed_environment(),
            "XDG_CONFIG_HOME": f"{workdir}/config",
            "XDG_CACHE_HOME": f"{workdir}/cache",
            "TMPDIR": f"{workdir}/tmp",
        }
        try:
            browser = await self._playwright.chromium.launch(
                executable_path=self._executable,
                headless=True,
                chromium_sandbox=self._sandbox,
                args=args,
                env=env,
                handle_sigint=False,
                handle_sigterm=False,
                handle_sighup=False,
            )
        except PlaywrightError as e:
            raise CaptureError(f"cannot launch Chromium: {_first_line(e)}") from None
        pid, udd = await asyncio.to_thread(find_browser_process, workdir)
        inst = _Instance(browser=browser, workdir=workdir, pid=pid, user_data_dir=udd)
        self._all.add(inst)
        browser.on("disconnected", lambda _b: self._on_disconnected(inst))
        self.launches += 1
        self._metrics.browser_restarts.labels(reason=reason).inc()
        log.info("browser launched (%s, pid %s, Chromium %s)", reason, pid, browser.version)
        return inst

    async def _close_instance(self, inst: _Instance) -> None:
        if inst.closed.is_set():
            return
        inst.closed.set()
        if not inst.retired:
            inst.retired = "close"
        inst.spares.clear()  # closing the browser closes them
        with contextlib.suppress(Exception):
            async with asyncio.timeout(_CLOSE_TIMEOUT):
                await inst.browser.close()
        await asyncio.to_thread(reap, inst.markers)
        await asyncio.to_thread(shutil.rmtree, inst.workdir, True)
        self._all.discard(inst)
        if self._current is inst:
            self._current = None

    def _spawn(self, coro: Coroutine[Any, Any, R]) -> asyncio.Task[R]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task


# What Chromium may see of our environment: locale, time zone, fonts, proxies, certificates —
# never the sidecar's secrets (Flashduty keys, Grafana token), which also live in the environment.
_PASSED_ENV = frozenset(
    {
        "PATH", "HOME", "USER", "LANG", "LANGUAGE", "TZ", "LD_LIBRARY_PATH",
        "FONTCONFIG_FILE", "FONTCONFIG_PATH", "SSL_CERT_FILE", "SSL_CERT_DIR",
        "http_proxy", "https_proxy", "no_proxy", "all_proxy",
        "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY",
    }
)  # fmt: skip


def _passed_environment() -> dict[str, str]:
    """The subset of this process's environment handed to Chromium (see ``_PASSED_ENV``)."""
    return {k: v for k, v in os.environ.items() if k in _PASSED_ENV or k.startswith("LC_")}


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:200] if text else type(e).__name__
