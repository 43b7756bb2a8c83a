"""``CaptureService``: the one entry point for panel pictures (delivery pipeline, CLI, demo).

A capture is a list of named, timed steps — ``queue`` (waiting for a slot), ``slug`` (dashboard
lookup, first time per dashboard), ``context`` (a browser context from the pool, prepared ahead:
see ``pool``), ``navigate``, ``wait_ready``, ``screenshot``, ``encode``. While the browser cannot be
launched, a capture fails at once (class ``error``, ``browser unavailable: …``).
Identical concurrent captures share one run (singleflight) and a usable result is reused for
``capture.cache_ttl``. ``capture()`` never raises for a failed capture: it returns a
``CaptureResult`` whose ``cls`` says what happened and whose ``detail`` says why, in one sentence
without secrets. Only cancellation propagates.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from playwright.async_api import BrowserContext, Page
from playwright.async_api import Error as PlaywrightError

from sidecar.capture.auth import auth_header
from sidecar.capture.browser import BrowserManager
from sidecar.capture.dashboards import DashboardDirectory
from sidecar.capture.errors import CaptureClass, CaptureError, CaptureTimeout
from sidecar.capture.images import MAX_IMAGE_BYTES, encode, usable_as_is
from sidecar.capture.page import NetworkTracker, install_auth, shoot, timed
from sidecar.capture.urls import panel_url
from sidecar.config import CaptureConfig, Config, GrafanaConfig
from sidecar.metrics import Metrics
from sidecar.model import PanelCapture

__all__ = [
    "CaptureClass",
    "CaptureResult",
    "CaptureService",
    "capture_once",
    "request_from_config",
]

log = logging.getLogger("sidecar.capture")

CACHEABLE = frozenset({CaptureClass.OK, CaptureClass.NO_DATA, CaptureClass.PANEL_ERROR})
_STALL_GRACE = 5.0  # beyond the capture timeout, a hung browser call is cut off
_CACHE_MAX = 128
_CACHE_MAX_BYTES = 64 * 1024 * 1024  # pictures can be MBs each (whole dashboards, scale 2)
_LOOKUP_TIMEOUT = 5.0


@dataclass(frozen=True)
class CaptureResult:
    """One capture's outcome. ``image`` is set for ``ok``, ``no_data`` and ``panel_error``."""

    request: PanelCapture
    cls: CaptureClass
    image: bytes | None
    content_type: str | None
    url: str
    steps: dict[str, float]  # seconds per named step
    detail: str  # one human sentence; never contains secrets
    title: str = ""  # the panel's (or dashboard's) title in Grafana, when it was looked up

    @property
    def usable(self) -> bool:
        """An image exists (``timeout``, ``login``, ``not_found`` and ``error`` have none)."""
        return self.image is not None

    @property
    def alt(self) -> str:
        """``images[].alt``: the configured title, else Grafana's title, else ``dashboard/panel``."""
        return self.request.title or self.title or self.request.alt

    @property
    def duration(self) -> float:
        return round(sum(v for k, v in self.steps.items() if k != "queue"), 4)


class CaptureService:
    """Warm browser + singleflight + short cache + bounded concurrency + metrics + one log line."""

    def __init__(
        self,
        *,
        grafana: GrafanaConfig,
        capture: CaptureConfig,
        metrics: Metrics,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._grafana = grafana
        self._cfg = capture
        self._metrics = metrics
        self._clock = clock
        self._browser = BrowserManager(capture=capture, metrics=metrics, clock=clock)
        self._directory = DashboardDirectory(grafana=grafana, clock=clock)
        self._auth = auth_header(grafana)
        self._slots = asyncio.Semaphore(capture.concurrency)
        self._inflight: dict[str, asyncio.Task[CaptureResult]] = {}
        self._cache: OrderedDict[str, tuple[float, CaptureResult]] = OrderedDict()
        self._tasks: set[asyncio.Task[CaptureResult]] = set()
        self._by_class: dict[str, int] = {c.value: 0 for c in CaptureClass}
        self._lookups = {"hit": 0, "shared": 0, "miss": 0}
        self._running = 0

    # ----------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        """Launch the warm browser and open a context ahead for the configured size, scale,
        theme and time zone. A browser that fails to launch does not make this raise: it is
        relaunched in the background and captures fail fast meanwhile (``browser_down_for``).
        ``CaptureError`` only when Playwright cannot start or ``capture.browser_path`` is not an
        executable file."""
        await self._browser.start()
        default = PanelCapture(
            dashboard="",
            panel=None,
            time_from="now-1h",
            time_to="now",
            width=self._cfg.width,
            height=self._cfg.height,
            scale=self._cfg.scale,
            theme=self._grafana.theme,
            timezone=self._grafana.timezone,
        )
        self._browser.prewarm(_context_options(default), self._prepare)

    async def close(self) -> None:
        """Cancel running captures, close contexts, the browser and Playwright."""
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self._browser.close()
        await self._directory.close()
        self._cache.clear()

    @property
    def browser_connected(self) -> bool:
        return self._browser.connected

    def browser_down_for(self) -> float:
        """Seconds the browser has been unavailable without a break (launches failing, or
        disconnected and not relaunched yet), on the service's clock; 0.0 while one is connected.
        For liveness: past ``capture.liveness_grace`` the sidecar container should be restarted."""
        return self._browser.down_for()

    @property
    def settings(self) -> CaptureConfig:
        """The capture settings in force (``reconfigure`` replaces them)."""
        return self._cfg

    def reconfigure(self, *, capture: CaptureConfig, grafana: GrafanaConfig) -> None:
        """A config reload: quality, cache TTL and the browser's pool and recycling settings apply
        to captures from now on (what a capture draws comes with its request); the Grafana
        connection (url, org, credentials) and the browser path and concurrency need a restart."""
        self._cfg, self._grafana = capture, grafana
        self._browser.reconfigure(capture)

    @property
    def browser(self) -> BrowserManager:
        return self._browser

    def stats(self) -> dict[str, Any]:
        return {
            "captures": sum(self._by_class.values()),
            "by_class": dict(self._by_class),
            "cache": dict(self._lookups),
            "cached": len(self._cache),
            "in_flight": self._running,
            "launches": self._browser.launches,
            "browser_connected": self._browser.connected,
            "browser_pid": self._browser.pid,
            "rss_bytes": self._browser.rss_bytes,
        }

    # ----------------------------------------------------------------- URLs and titles

    def panel_url(self, req: PanelCapture) -> str:
        """The Grafana page for ``req`` (with the slug once the dashboard was looked up)."""
        info = self._directory.cached(req.dashboard)
        return panel_url(self._grafana, req, info.slug if info else None)

    async def alt_for(self, req: PanelCapture, *, timeout: float = _LOOKUP_TIMEOUT) -> str:
        """``images[].alt`` for ``req``: its title, else Grafana's panel title, else ``dash/panel``."""
        if req.title:
            return req.title
        lookup = await self._directory.lookup(req.dashboard, timeout=timeout)
        title = lookup.info.title_for(req.panel) if lookup.info else ""
        return title or req.alt

    # ----------------------------------------------------------------- capture

    async def capture(self, req: PanelCapture, *, timeout: float | None = None) -> CaptureResult:
        """Capture ``req`` (or reuse an identical capture running now or done within the TTL).

        Concurrent identical requests share the first one's run, including its ``timeout``.
        """
        key = req.cache_key()
        hit = self._cache.get(key)
        if hit is not None and hit[0] > self._clock():
            self._count_lookup("hit")
            return dataclasses.replace(hit[1], request=req)
        task = self._inflight.get(key)
        if task is not None:
            self._count_lookup("shared")
            return dataclasses.replace(await asyncio.shield(task), request=req)
        self._count_lookup("miss")
        task = asyncio.get_running_loop().create_task(self._run(req, timeout))
        self._inflight[key] = task
        self._tasks.add(task)
        task.add_done_callback(lambda t: self._finished(key, t))
        return await asyncio.shield(task)

    def _count_lookup(self, result: str) -> None:
        self._lookups[result] += 1
        self._metrics.capture_cache.labels(result=result).inc()

    def _finished(self, key: str, task: asyncio.Task[CaptureResult]) -> None:
        self._tasks.discard(task)
        if self._inflight.get(key) is task:
            del self._inflight[key]
        if task.cancelled() or task.exception() is not None:
            return
        result = task.result()
        if result.cls in CACHEABLE and self._cfg.cache_ttl > 0:
            self._cache[key] = (self._clock() + self._cfg.cache_ttl, result)
            self._cache.move_to_end(key)
            self._prune()

    def _prune(self) -> None:
        now = self._clock()
        for k in [k for k, (exp, _) in self._cache.items() if exp <= now]:
            del self._cache[k]
        while len(self._cache) > _CACHE_MAX:
            self._cache.popitem(last=False)
        size = sum(len(r.image or b"") for _, r in self._cache.values())
        while size > _CACHE_MAX_BYTES and len(self._cache) > 1:
            _, (_, oldest) = self._cache.popitem(last=False)
            size -= len(oldest.image or b"")

    async def _run(self, req: PanelCapture, timeout: float | None) -> CaptureResult:
        steps: dict[str, float] = {}
        with timed(steps, "queue", self._clock):
            await self._slots.acquire()
        self._running += 1
        self._metrics.captures_in_flight.inc()
        try:
            result = await self._capture_now(req, timeout or self._cfg.timeout, steps)
        finally:
            self._running -= 1
            self._metrics.captures_in_flight.dec()
            self._slots.release()
        self._record(result)
        return result

    async def _capture_now(self, req: PanelCapture, limit: float, steps: dict[str, float]) -> CaptureResult:
        """Run the steps; every failure becomes a classified result."""
        deadline = self._clock() + limit
        state: dict[str, str] = {"url": self.panel_url(req), "title": ""}
        what = "dashboard" if req.panel is None else "panel"
        try:
            async with asyncio.timeout(limit + _STALL_GRACE):
                return await self._steps(req, deadline, steps, state)
        except CaptureTimeout as e:
            waiting = f"; waiting for {e.waiting_for}" if e.waiting_for else ""
            detail = f"{what} still loading after {limit:g}s (timeout in {e.step}{waiting})"
            return self._result(req, CaptureClass.TIMEOUT, detail, steps, state)
        except CaptureError as e:
            return self._result(req, e.cls, str(e), steps, state)
        except TimeoutError:
            detail = f"{what} capture stalled for more than {limit + _STALL_GRACE:g}s (timeout)"
            return self._result(req, CaptureClass.TIMEOUT, detail, steps, state)
        except PlaywrightError as e:
            gone = not self._browser.connected
            detail = "the browser crashed during the capture" if gone else "the browser failed during the capture"
            log.debug("capture failed: %s", type(e).__name__)  # never the message: it may list headers
            return self._result(req, CaptureClass.ERROR, detail, steps, state)
        except Exception as e:
            log.exception("capture of %s failed unexpectedly", req.dashboard)
            return self._result(req, CaptureClass.ERROR, f"capture failed ({type(e).__name__})", steps, state)

    async def _steps(
        self, req: PanelCapture, deadline: float, steps: dict[str, float], state: dict[str, str]
    ) -> CaptureResult:
        self._browser.check_available()  # before the lookup: no capture can run now
        info = self._directory.cached(req.dashboard)
        if info is None:
            with timed(steps, "slug", self._clock):
                budget = min(_LOOKUP_TIMEOUT, max(deadline - self._clock(), 0.1) / 4)
                lookup = await self._directory.lookup(req.dashboard, timeout=budget)
            if lookup.status == 404:
                detail = f"dashboard {req.dashboard} not found (HTTP 404 from Grafana's dashboard API)"
                return self._result(req, CaptureClass.NOT_FOUND, detail, steps, state)
            info = lookup.info
        if info is not None:
            state["url"] = panel_url(self._grafana, req, info.slug)
            state["title"] = info.title_for(req.panel)
        url = state["url"]
        options = _context_options(req)
        async with contextlib.AsyncExitStack() as stack:
            with timed(steps, "context", self._clock):
                lease = await stack.enter_async_context(self._browser.lease(options, self._prepare, reset=self._reset))
                page, tracker = lease.prepared
                if page.viewport_size != options["viewport"]:  # opened, or last used, at another size
                    await lease.run(page.set_viewport_size(options["viewport"]))
            shot = await lease.run(
                shoot(
                    page,
                    tracker,
                    url=url,
                    whole_dashboard=req.panel is None,
                    deadline=deadline,
                    steps=steps,
                    clock=self._clock,
                )
            )
        if shot.png is None:
            return self._result(req, shot.cls, shot.detail, steps, state)
        with timed(steps, "encode", self._clock):
            if usable_as_is(shot.png, req.format, MAX_IMAGE_BYTES):
                image, content_type = shot.png, "image/png"
            else:
                image, content_type = await asyncio.to_thread(
                    encode, shot.png, req.format, self._cfg.quality, MAX_IMAGE_BYTES
                )
        return self._result(req, shot.cls, shot.detail, steps, state, image, content_type)

    async def _prepare(self, context: BrowserContext) -> tuple[Page, NetworkTracker]:
        """What every capture needs before navigating: auth routes, a page, its listeners."""
        tracker = NetworkTracker(self._grafana.url)
        await install_auth(context, grafana_url=self._grafana.url, authorization=self._auth, tracker=tracker)
        page = await context.new_page()
        tracker.attach(page)
        return page, tracker

    async def _reset(self, prepared: tuple[Page, NetworkTracker]) -> None:
        """Ready a used page for the next capture: leave Grafana's page (its scripts, timers and
        sockets stop, its memory is freed), then forget its requests."""
        page, tracker = prepared
        await page.goto("about:blank")
        tracker.reset()

    def _result(
        self,
        req: PanelCapture,
        cls: CaptureClass,
        detail: str,
        steps: dict[str, float],
        state: dict[str, str],
        image: bytes | None = None,
        content_type: str | None = None,
    ) -> CaptureResult:
        return CaptureResult(
            request=req,
            cls=cls,
            image=image,
            content_type=content_type,
            url=state["url"],
            steps=dict(steps),
            detail=detail,
            title=state["title"],
        )

    def _record(self, result: CaptureResult) -> None:
        """Metrics and the one log line of a capture."""
        cls = result.cls.value
        self._by_class[cls] += 1
        self._metrics.captures.labels(cls=cls).inc()
        self._metrics.capture_seconds.labels(cls=cls).observe(result.duration)
        for step, seconds in result.steps.items():
            self._metrics.capture_step_seconds.labels(step=step).observe(seconds)
        req = result.request
        panel = req.panel if req.panel is not None else "-"
        ms = round(result.duration * 1000)
        level = logging.INFO if result.cls in (CaptureClass.OK, CaptureClass.NO_DATA) else logging.WARNING
        log.log(
            level,
            "capture %s/%s: %s in %d ms (%s)",
            req.dashboard,
            panel,
            cls,
            ms,
            result.detail,
            extra={
                "dashboard": req.dashboard,
                "panel": req.panel,
                "cls": cls,
                "steps": {k: round(v * 1000) for k, v in result.steps.items()},
                "duration_ms": ms,
            },
        )


def _context_options(req: PanelCapture) -> dict[str, Any]:
    """The context a capture needs: the panel's size, scale, time zone and colour scheme."""
    options: dict[str, Any] = {
        "viewport": {"width": req.width, "height": req.height},
        "device_scale_factor": req.scale,
        "locale": "en-US",
        "color_scheme": "light" if req.theme == "light" else "dark",
        "reduced_motion": "reduce",
        "service_workers": "block",
    }
    if req.timezone and req.timezone != "browser":
        options["timezone_id"] = req.timezone
    return options


def request_from_config(
    cfg: Config,
    *,
    dashboard: str,
    panel: str | None = None,
    time_from: str = "now-1h",
    time_to: str = "now",
    vars: Iterable[tuple[str, str]] = (),
) -> PanelCapture:
    """A ``PanelCapture`` with size, scale, theme, time zone and format from the config."""
    return PanelCapture(
        dashboard=dashboard,
        panel=panel,
        time_from=time_from,
        time_to=time_to,
        vars=tuple(vars),
        width=cfg.capture.width,
        height=cfg.capture.height,
        scale=cfg.capture.scale,
        theme=cfg.grafana.theme,
        timezone=cfg.grafana.timezone,
        format=cfg.capture.format,
    )


async def capture_once(cfg: Config, req: PanelCapture, out_path: str) -> CaptureResult:
    """Start a service, capture ``req``, write the picture to ``out_path`` (if any), close.

    Never raises for a failed capture, not even when Chromium cannot start (class ``error``).
    """
    service = CaptureService(grafana=cfg.grafana, capture=cfg.capture, metrics=Metrics())
    try:
        try:
            await service.start()
        except CaptureError as e:
            result = CaptureResult(req, CaptureClass.ERROR, None, None, service.panel_url(req), {}, str(e))
        else:
            result = await service.capture(req)
    finally:
        await service.close()
    if result.image is not None:
        await asyncio.to_thread(Path(out_path).write_bytes, result.image)
    return result
