"""One warm Chromium, a fresh context per capture, relaunched on crash, recycled on age or memory.

``BrowserManager`` owns Playwright and the browser process. Each capture borrows a context with
``async with manager.context(**options) as lease`` (closed in ``finally``; ``lease.run``
stops page work at once if the browser dies). The browser is
relaunched when it disconnects (crash, OOM kill) and recycled gracefully — in-flight captures
finish on the old one, then it is closed — after ``capture.recycle_after`` captures or when the
memory of all its processes (PSS, see ``process_memory_bytes``) exceeds
``capture.max_browser_rss_mb``. Every launch is counted in
``browser_restarts_total{reason=start|crash|recycle_count|recycle_rss}``.

Chromium gets a private temp directory (XDG config/cache, TMPDIR, crash dumps) so it runs on a
read-only root filesystem; the directory path doubles as the marker that finds its processes in
``/proc`` (no psutil): to measure memory and to make sure none is left after ``close()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import tempfile
import time
from collections.abc import AsyncIterator, Coroutine, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from playwright.async_api import Browser, BrowserContext, Playwright, async_playwright
from playwright.async_api import Error as PlaywrightError

from sidecar.capture.grafana import CaptureError
from sidecar.config import CaptureConfig
from sidecar.metrics import Metrics

__all__ = ["BrowserManager", "Lease", "chromium_processes", "process_memory_bytes"]

T = TypeVar("T")

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


# --------------------------------------------------------------------------- /proc helpers


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def chromium_processes(markers: Iterable[str]) -> list[int]:
    """PIDs of live processes whose command line contains one of ``markers``."""
    wanted = [m for m in markers if m]
    if not wanted:
        return []
    me = os.getpid()
    found = []
    try:
        entries = os.listdir("/proc")
    except OSError:  # not Linux: nothing to measure or reap
        return []
    for entry in entries:
        if not entry.isdigit() or int(entry) == me:
            continue
        cmd = _cmdline(int(entry))
        if cmd and any(m in cmd for m in wanted):
            found.append(int(entry))
    return found


def process_memory_bytes(pids: Iterable[int]) -> int:
    """Memory of ``pids`` together: the sum of their PSS (processes that are gone count 0).

    PSS splits shared pages between the processes that map them. Summing ``VmRSS`` instead
    counts Chromium's binary and libraries once per process: about 2.6× too much for an idle
    browser (880 MB of VmRSS for 340 MB of PSS), which would recycle a healthy browser. Kernels
    without ``smaps_rollup`` (< 4.14) fall back to ``VmRSS``.
    """
    total = 0
    for pid in pids:
        value = _read_kb(f"/proc/{pid}/smaps_rollup", "Pss:")
        if value is None:
            value = _read_kb(f"/proc/{pid}/status", "VmRSS:")
        total += (value or 0) * 1024
    return total


def _read_kb(path: str, key: str) -> int | None:
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith(key):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def _find_browser_process(marker: str) -> tuple[int | None, str | None]:
    """The main browser process (no ``--type=``) carrying ``marker``, and its user-data-dir."""
    for pid in chromium_processes([marker]):
        args = _cmdline(pid).split(" ")
        if any(a.startswith("--type=") for a in args) or "crashpad" in args[0]:
            continue
        udd = next((a.split("=", 1)[1] for a in args if a.startswith("--user-data-dir=")), None)
        return pid, udd
    return None, None


# --------------------------------------------------------------------------- the manager


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

    @property
    def markers(self) -> list[str]:
        return [m for m in (self.workdir, self.user_data_dir) if m]


@dataclass(frozen=True)
class Lease:
    """A fresh browser context, and a way to run page work that stops if the browser dies."""

    context: BrowserContext
    _gone: asyncio.Event

    async def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Await ``coro``; if the browser dies first, cancel it and raise ``CaptureError``.

        Playwright normally fails pending calls when the browser goes away; this makes sure a
        crash is reported at once, whatever call the capture was waiting in.
        """
        work = asyncio.ensure_future(coro)
        watch = asyncio.ensure_future(self._gone.wait())
        try:
            await asyncio.wait({work, watch}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (work, watch):
                task.cancel()
            await asyncio.gather(work, watch, return_exceptions=True)
        if work.done() and not work.cancelled() and (work.exception() is None or not self._gone.is_set()):
            return work.result()
        raise CaptureError("the browser crashed during the capture")


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
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = False
        self._stop = asyncio.Event()  # set by close(): cuts a relaunch back-off short
        self._next_reason = "start"
        self._crash_streak = 0  # browsers in a row that died before finishing a capture
        self.launches = 0
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

    async def close(self) -> None:
        """Close every browser, then Playwright. Captures still running fail (class ``error``)."""
        self._closing = True  # no launch starts from now on
        self._stop.set()
        async with self._lock:
            pass  # a launch in progress finishes and is registered, so it is closed below
        # background work: relaunches return at once now, closes of retired browsers complete
        await asyncio.gather(*list(self._tasks), return_exceptions=True)
        self._current = None
        for inst in list(self._all):
            await self._close_instance(inst)
        self._next_reason = "start"
        if self._playwright is not None:
            with contextlib.suppress(Exception):
                await self._playwright.stop()
            self._playwright = None

    @contextlib.asynccontextmanager
    async def context(self, **options: Any) -> AsyncIterator[Lease]:
        """A fresh browser context on the current browser, closed when the block exits."""
        inst = await self._acquire()
        ctx: BrowserContext | None = None
        try:
            try:
                ctx = await inst.browser.new_context(**options)
            except PlaywrightError:
                if not inst.browser.is_connected():
                    raise CaptureError("the browser crashed before the capture started") from None
                raise
            yield Lease(ctx, inst.gone)
        finally:
            if ctx is not None:
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(_CLOSE_TIMEOUT):
                        await ctx.close()
            await self._release(inst)

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
            else:
                rss = await asyncio.to_thread(self._sample_rss, inst)
                if rss > self._cfg.max_browser_rss_mb * 1024 * 1024 and inst is self._current:
                    log.info("browser memory %d MiB over the limit: recycling", rss // (1024 * 1024))
                    self._retire(inst, "recycle_rss")
        if inst.retired and inst.in_flight == 0 and not inst.closed.is_set():
            self._spawn(self._close_instance(inst))

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
            await self._ensure()
        except Exception as e:  # the next capture retries the launch and reports it
            log.warning("browser relaunch failed: %s", _first_line(e))

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
        pid, udd = await asyncio.to_thread(_find_browser_process, workdir)
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
        with contextlib.suppress(Exception):
            async with asyncio.timeout(_CLOSE_TIMEOUT):
                await inst.browser.close()
        await asyncio.to_thread(_reap, inst.markers)
        await asyncio.to_thread(shutil.rmtree, inst.workdir, True)
        self._all.discard(inst)
        if self._current is inst:
            self._current = None

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


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


def _reap(markers: list[str], grace: float = 1.0, wait: float = 2.0) -> None:
    """Wait ``grace`` for a closed browser's processes to exit, then SIGKILL what is left
    (renderers, zygotes, crashpad handlers) and wait until it is gone."""
    start = time.monotonic()
    left = chromium_processes(markers)
    while left and time.monotonic() - start < grace + wait:
        if time.monotonic() - start >= grace:
            for pid in left:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)
        left = chromium_processes(markers)
    if left:
        log.warning("%d Chromium process(es) did not exit: %s", len(left), left)


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:200] if text else type(e).__name__
