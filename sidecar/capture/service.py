"""``CaptureService``: the one entry point for panel pictures (delivery pipeline, CLI, demo).

The facade over a warm browser (``browser``), the dashboard directory (``dashboards``) and the
picture cache (``cache``): start, close, reload, stats, URLs and titles, and ``capture()``.
Identical concurrent captures share one run (singleflight) and a usable result is reused for
``capture.cache_ttl``; at most ``capture.concurrency`` captures run at a time, waiting ones served
by ``rank`` (``sidecar.priority``: an ``Ok``'s pictures, then Critical, Warning, Info; FIFO within
one), and the wait for a slot is the ``queue`` step. The other steps — ``slug``, ``context``, ``navigate``,
``wait_ready``, ``screenshot``, ``encode`` — are one capture's run (``run.CaptureRun``).
``capture()`` never raises for a failed capture: it returns a ``CaptureResult`` whose ``cls``
says what happened and whose ``detail`` says why, in one sentence without secrets. Only
cancellation propagates.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import Callable
from typing import Any

from playwright.async_api import BrowserContext

from sidecar.capture.auth import auth_header
from sidecar.capture.browser import BrowserManager
from sidecar.capture.cache import PictureCache
from sidecar.capture.dashboards import DashboardDirectory
from sidecar.capture.errors import CaptureClass
from sidecar.capture.grafana_info import GrafanaInfo, GrafanaProbe
from sidecar.capture.options import context_options
from sidecar.capture.result import CaptureResult
from sidecar.capture.run import LOOKUP_TIMEOUT, CaptureRun, Prepared, prepare_page, record
from sidecar.capture.urls import human_link, panel_url
from sidecar.config import CaptureConfig, GrafanaConfig
from sidecar.metrics import Metrics
from sidecar.model import PanelCapture
from sidecar.priority import DEFAULT_PICTURE_RANK, PrioritySlots

__all__ = ["CaptureService"]


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
        self._probe = GrafanaProbe(str(grafana.url), clock=clock)
        self._auth = auth_header(grafana)
        self._slots = PrioritySlots(capture.concurrency)
        self._inflight: dict[str, asyncio.Task[CaptureResult]] = {}
        self._cache = PictureCache(clock)
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
        self._browser.prewarm(context_options(default), self._prepare)

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

    @property
    def grafana_info(self) -> GrafanaInfo | None:
        """The Grafana detected so far (version, where it answers, ``appSubUrl``), if any."""
        return self._probe.cached()

    def link(self, render_url: str) -> str:
        """The link a picture carries: the panel in Grafana's UI (``human_link``), under the address
        Grafana says people open it at (its ``appUrl``, i.e. ``root_url``) once detected."""
        grafana = self._probe.cached()
        link = human_link(render_url)
        return grafana.public_link(link) if grafana is not None else link

    def panel_url(self, req: PanelCapture) -> str:
        """The Grafana page for ``req`` (with the slug once the dashboard was looked up, and as
        the detected Grafana version takes it)."""
        info = self._directory.cached(req.dashboard, req.org_id)
        grafana = self._probe.cached()
        if grafana is None:
            return panel_url(self._grafana, req, info.slug if info else None)
        try:
            panel_id = grafana.panel_param(req.panel) if req.panel is not None else None
        except ValueError:
            panel_id = None
        return panel_url(
            self._grafana,
            req,
            info.slug if info else None,
            base_url=grafana.serve_url,
            panel_id=panel_id,
            hide_logo=grafana.solo_logo,
        )

    async def alt_for(self, req: PanelCapture, *, timeout: float = LOOKUP_TIMEOUT) -> str:
        """``images[].alt`` for ``req``: its title, else Grafana's panel title, else ``dash/panel``."""
        if req.title:
            return req.title
        grafana = await self._probe.current(timeout=timeout)
        lookup = await self._directory.lookup(
            req.dashboard, timeout=timeout, org_id=req.org_id, base_url=grafana.serve_url
        )
        title = lookup.info.title_for(req.panel) if lookup.info else ""
        return title or req.alt

    # ----------------------------------------------------------------- capture

    async def capture(
        self, req: PanelCapture, *, timeout: float | None = None, rank: int = DEFAULT_PICTURE_RANK
    ) -> CaptureResult:
        """Capture ``req`` (or reuse an identical capture running now or done within the TTL).

        Concurrent identical requests share the first one's run, including its ``timeout`` and
        its place in the queue (``rank``).
        """
        key = req.cache_key()
        hit = self._cache.get(key)
        if hit is not None:
            self._count_lookup("hit")
            return dataclasses.replace(hit, request=req)
        task = self._inflight.get(key)
        if task is not None:
            self._count_lookup("shared")
            return dataclasses.replace(await asyncio.shield(task), request=req)
        self._count_lookup("miss")
        task = asyncio.get_running_loop().create_task(self._run(req, timeout, rank))
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
        self._cache.put(key, task.result(), self._cfg.cache_ttl)

    async def _run(self, req: PanelCapture, timeout: float | None, rank: int) -> CaptureResult:
        steps: dict[str, float] = {}
        queued = self._clock()
        async with self._slots.acquire(rank):
            steps["queue"] = round(self._clock() - queued, 4)
            self._running += 1
            self._metrics.captures_in_flight.inc()
            try:
                result = await self._capture_now(req, timeout or self._cfg.timeout, steps)
            finally:
                self._running -= 1
                self._metrics.captures_in_flight.dec()
        self._by_class[result.cls.value] += 1
        record(result, self._metrics)
        return result

    async def _capture_now(self, req: PanelCapture, limit: float, steps: dict[str, float]) -> CaptureResult:
        """The steps after ``queue`` (``run.CaptureRun``), with the settings in force now."""
        run = CaptureRun(
            req,
            steps,
            grafana=self._grafana,
            quality=self._cfg.quality,
            browser=self._browser,
            directory=self._directory,
            prepare=self._prepare,
            clock=self._clock,
            url=self.panel_url(req),
            grafana_probe=self._probe,
            authorization=self._auth,
        )
        return await run.run(limit)

    async def _prepare(self, context: BrowserContext) -> Prepared:
        """A pooled context made ready for any capture (``run.prepare_page``), for this Grafana."""
        return await prepare_page(context, grafana_url=self._grafana.url, authorization=self._auth)
