"""One capture's run, once it has a slot: the named, timed steps, and what a capture leaves behind.

The steps after ``queue`` (the service's): ``slug`` (which Grafana: version and sub path, see
``grafana_info``; then the dashboard lookup, first time per org and dashboard: an HTTP 404 from the
API means ``not_found``, a 401 in an org other than ``grafana.org_id`` means ``org_access``; a
panel reference this Grafana version cannot show is an ``error`` naming the panel), ``context`` (a browser context from the pool,
prepared ahead: see ``pool``), ``navigate``, ``wait_ready``, ``screenshot`` (``page.shoot``),
``encode`` (``images``, under the size cap). While the browser cannot be launched, a capture
fails at once (class ``error``, ``browser unavailable: …``). Every failure becomes a classified
``CaptureResult`` with one sentence without secrets: past the capture timeout a step raises
``CaptureTimeout``; a browser call still hung ``_STALL_GRACE`` later is cut off; a Playwright
error is never quoted (its call log may list request headers).

What a pooled context holds for its captures is ``prepare_page``'s (auth routes, a page, its
listeners); ``reset_page`` readies it for the next one. ``record`` writes a finished capture's
metrics and its one log line.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass

from playwright.async_api import BrowserContext, Page
from playwright.async_api import Error as PlaywrightError

from sidecar.capture.browser import BrowserManager
from sidecar.capture.dashboards import DashboardDirectory
from sidecar.capture.errors import CaptureClass, CaptureError, CaptureTimeout
from sidecar.capture.grafana_info import GrafanaInfo, GrafanaProbe
from sidecar.capture.images import encode, usable_as_is
from sidecar.capture.lease import Prepare
from sidecar.capture.network import NetworkTracker, install_auth, install_rewrite
from sidecar.capture.options import context_options
from sidecar.capture.page import shoot, timed
from sidecar.capture.readiness import not_loaded_detail
from sidecar.capture.result import CaptureResult
from sidecar.capture.urls import panel_url
from sidecar.config import GrafanaConfig
from sidecar.flashduty.api import MAX_IMAGE_BYTES
from sidecar.metrics import Metrics
from sidecar.model import PanelCapture

__all__ = ["LOOKUP_TIMEOUT", "CaptureRun", "Prepared", "prepare_page", "record", "reset_page"]

log = logging.getLogger("sidecar.capture")

Prepared = tuple[Page, NetworkTracker]
_STALL_GRACE = 5.0  # beyond the capture timeout, a hung browser call is cut off
LOOKUP_TIMEOUT = 5.0  # the most a dashboard lookup may take


async def prepare_page(context: BrowserContext, *, grafana_url: str, authorization: str | None) -> Prepared:
    """What every capture needs before navigating: auth routes, a page, its listeners."""
    tracker = NetworkTracker(grafana_url)
    await install_auth(context, grafana_url=grafana_url, authorization=authorization, tracker=tracker)
    page = await context.new_page()
    tracker.attach(page)
    return page, tracker


async def reset_page(prepared: Prepared) -> None:
    """Ready a used page for the next capture: leave Grafana's page (its scripts, timers and
    sockets stop, its memory is freed), then forget its requests."""
    page, tracker = prepared
    await page.goto("about:blank")
    tracker.reset()


@dataclass
class CaptureRun:
    """The steps of one capture of ``req`` into ``steps``; ``url`` and ``title`` as known so far
    (the slug and Grafana's title come with the lookup)."""

    req: PanelCapture
    steps: dict[str, float]
    grafana: GrafanaConfig
    quality: int
    browser: BrowserManager
    directory: DashboardDirectory
    prepare: Prepare[Prepared]
    clock: Callable[[], float]
    url: str
    grafana_probe: GrafanaProbe
    authorization: str | None = None
    title: str = ""

    async def run(self, limit: float) -> CaptureResult:
        """Run the steps; every failure becomes a classified result."""
        req = self.req
        deadline = self.clock() + limit
        what = "dashboard" if req.panel is None else "panel"
        try:
            async with asyncio.timeout(limit + _STALL_GRACE):
                return await self._steps(deadline)
        except CaptureTimeout as e:
            waiting = f"; waiting for {e.waiting_for}" if e.waiting_for else ""
            detail = f"{what} still loading after {limit:g}s (timeout in {e.step}{waiting})"
            return self._result(CaptureClass.TIMEOUT, detail)
        except CaptureError as e:
            self.grafana_probe.forget()  # Grafana unreachable or changed: detect it again next time
            return self._result(e.cls, str(e))
        except TimeoutError:
            detail = f"{what} capture stalled for more than {limit + _STALL_GRACE:g}s (timeout)"
            return self._result(CaptureClass.TIMEOUT, detail)
        except PlaywrightError as e:
            gone = not self.browser.connected
            detail = "the browser crashed during the capture" if gone else "the browser failed during the capture"
            log.debug("capture failed: %s", type(e).__name__)  # never the message: it may list headers
            return self._result(CaptureClass.ERROR, detail)
        except Exception as e:
            log.exception("capture of %s failed unexpectedly", req.dashboard)
            return self._result(CaptureClass.ERROR, f"capture failed ({type(e).__name__})")

    async def _steps(self, deadline: float) -> CaptureResult:
        req, steps, clock = self.req, self.steps, self.clock
        self.browser.check_available()  # before the lookup: no capture can run now
        org = req.org_id or self.grafana.org_id
        with timed(steps, "slug", clock):
            budget = min(LOOKUP_TIMEOUT, max(deadline - clock(), 0.1) / 4)
            grafana = await self.grafana_probe.current(timeout=budget)
            if self.grafana_probe.no_grafana:  # e.g. serve_from_sub_path and grafana.url without the sub path
                return self._result(CaptureClass.NOT_LOADED, not_loaded_detail(self.grafana_probe.no_grafana))
            try:
                panel_id = grafana.panel_param(req.panel) if req.panel is not None else None
            except ValueError as e:
                return self._result(CaptureClass.ERROR, f"dashboard {req.dashboard}: {e}")
            info = self.directory.cached(req.dashboard, org)
            if info is None:
                lookup = await self.directory.lookup(
                    req.dashboard, timeout=budget, org_id=org, base_url=grafana.serve_url
                )
                if lookup.status == 404:
                    detail = f"dashboard {req.dashboard} not found in org {org} (HTTP 404 from Grafana's dashboard API)"
                    return self._result(CaptureClass.NOT_FOUND, detail)
                if lookup.status == 401 and org != self.grafana.org_id:
                    detail = (
                        f"the Grafana credentials cannot use org {org} (HTTP 401 from the dashboard API): a service "
                        "account token belongs to one org; use basic_auth of a user in that org"
                    )
                    return self._result(CaptureClass.ORG_ACCESS, detail)
                info = lookup.info
        slug = info.slug if info is not None else None
        self.url = panel_url(
            self.grafana, req, slug, base_url=grafana.serve_url, panel_id=panel_id, hide_logo=grafana.solo_logo
        )
        if info is not None:
            self.title = info.title_for(req.panel)
        options = context_options(req)
        async with contextlib.AsyncExitStack() as stack:
            with timed(steps, "context", clock):
                lease = await stack.enter_async_context(self.browser.lease(options, self.prepare, reset=reset_page))
                page, tracker = lease.prepared
                if page.viewport_size != options["viewport"]:  # opened, or last used, at another size
                    await lease.run(page.set_viewport_size(options["viewport"]))
                await self._sub_path(page, tracker, grafana)
            shot = await lease.run(
                shoot(
                    page,
                    tracker,
                    url=self.url,
                    whole_dashboard=req.panel is None,
                    deadline=deadline,
                    steps=steps,
                    clock=clock,
                )
            )
        if shot.png is None:
            if shot.cls is CaptureClass.NOT_LOADED:
                self.grafana_probe.forget()  # Grafana may have been reconfigured: detect again
            return self._result(shot.cls, shot.detail)
        with timed(steps, "encode", clock):
            if usable_as_is(shot.png, req.format, MAX_IMAGE_BYTES):
                image, content_type = shot.png, "image/png"
            else:
                image, content_type = await asyncio.to_thread(
                    encode, shot.png, req.format, self.quality, MAX_IMAGE_BYTES
                )
        return self._result(shot.cls, shot.detail, image, content_type)

    async def _sub_path(self, page: Page, tracker: NetworkTracker, grafana: GrafanaInfo) -> None:
        """Route the page's requests under Grafana's ``appSubUrl`` to where Grafana answers (once
        per pooled context)."""
        rewrite = grafana.rewrite
        if rewrite is not None and tracker.rewrite != rewrite:
            await install_rewrite(page.context, rewrite=rewrite, authorization=self.authorization, tracker=tracker)

    def _result(
        self, cls: CaptureClass, detail: str, image: bytes | None = None, content_type: str | None = None
    ) -> CaptureResult:
        return CaptureResult(
            request=self.req,
            cls=cls,
            image=image,
            content_type=content_type,
            url=self.url,
            steps=dict(self.steps),
            detail=detail,
            title=self.title,
        )


def record(result: CaptureResult, metrics: Metrics) -> None:
    """Metrics and the one log line of a capture."""
    cls = result.cls.value
    metrics.captures.labels(cls=cls).inc()
    metrics.capture_seconds.labels(cls=cls).observe(result.duration)
    for step, seconds in result.steps.items():
        metrics.capture_step_seconds.labels(step=step).observe(seconds)
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
