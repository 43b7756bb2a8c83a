"""Drive one Playwright page through a capture: navigation, readiness, screenshot (``shoot``).

The pieces that need a browser; the Grafana knowledge they apply lives in ``readiness`` (when a
page is ready, what it shows) and ``urls``; what the page's requests are doing, and their
credentials, is ``network``'s (``NetworkTracker``, ``install_auth``). Every step is timed into
the ``steps`` dict it is given (``timed``).

Readiness polls the page (``PROBE_JS``) and feeds ``Readiness``: every ``POLL_INTERVAL`` while
requests are in flight (the page cannot be ready then; the polls only look for a login or
"not found" page), every ``SETTLE_INTERVAL`` once the network is idle, and at once when the last
request in flight finishes. The picture is taken *between* the two polls that must agree: when
a poll finds the page settled, the screenshot is taken, then the next poll (at least
``SETTLE_INTERVAL`` later) decides — same DOM and still settled: that picture is the capture;
anything changed: it is dropped and the wait goes on. So the picture is bracketed by two
identical settled states, and the screenshot's own duration is the stability window.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from playwright.async_api import Error as PlaywrightError
from playwright.async_api import Page
from playwright.async_api import TimeoutError as PlaywrightTimeout

from sidecar.capture.errors import CaptureClass, CaptureError, CaptureTimeout
from sidecar.capture.network import NetworkTracker
from sidecar.capture.readiness import PROBE_JS, PageFacts, Probe, Readiness, classify, terminal_class

__all__ = ["Shot", "shoot", "timed"]

log = logging.getLogger("sidecar.capture")

POLL_INTERVAL = 0.1  # while requests are in flight
SETTLE_INTERVAL = 0.03  # once the network is idle; also the least time between two agreeing polls
_NET_ERROR = re.compile(r"net::ERR_[A-Z0-9_]+")


@contextlib.contextmanager
def timed(steps: dict[str, float], name: str, clock: Callable[[], float] = time.monotonic) -> Iterator[None]:
    """Record how long the block took in ``steps[name]`` (seconds), even when it raises."""
    start = clock()
    try:
        yield
    finally:
        steps[name] = round(steps.get(name, 0.0) + clock() - start, 4)


@dataclass
class Shot:
    """Outcome of driving a page: the class, why, and the PNG when one was taken."""

    cls: CaptureClass
    detail: str
    png: bytes | None


async def shoot(
    page: Page,
    tracker: NetworkTracker,
    *,
    url: str,
    whole_dashboard: bool,
    deadline: float,
    steps: dict[str, float],
    clock: Callable[[], float] = time.monotonic,
) -> Shot:
    """navigate → wait_ready → screenshot. Raises ``CaptureTimeout`` / ``CaptureError``."""
    with timed(steps, "navigate", clock):
        await _navigate(page, url, deadline, clock, tracker)
    early = terminal_class(_facts(page, tracker))
    if early is not None:
        return Shot(early[0], early[1], None)
    # park the pointer just outside the viewport's bottom-right corner, as grafana-image-renderer
    # does: the panel never sees a hover (no header menu, no tooltip, no crosshair)
    parked = asyncio.ensure_future(_park_pointer(page))
    try:
        waiting = _Waiting(page, tracker, url, deadline, clock, parked, steps)
        probe, png, early = await waiting.run(Readiness(whole_dashboard=whole_dashboard, started=clock()))
    finally:
        if not parked.done():
            parked.cancel()
        await asyncio.gather(parked, return_exceptions=True)
    if early is not None:
        return Shot(early[0], early[1], None)
    cls, detail = classify(_facts(page, tracker, probe))
    return Shot(cls, detail, png)


def _facts(page: Page, tracker: NetworkTracker, probe: Probe | None = None) -> PageFacts:
    return PageFacts(
        url=page.url,
        document_status=tracker.document_status,
        auth_failure=tracker.auth_failure,
        probe=probe,
        asset_failure=tracker.asset_failure,
    )


async def _navigate(page: Page, url: str, deadline: float, clock: Callable[[], float], tracker: NetworkTracker) -> None:
    remaining = deadline - clock()
    if remaining <= 0:
        raise CaptureTimeout("navigate", url, "time to start")
    try:
        # "commit": the document's answer is in; the readiness polls take it from there
        await page.goto(url, wait_until="commit", timeout=remaining * 1000)
    except PlaywrightTimeout:
        raise CaptureTimeout("navigate", url, "the page to load") from None
    except PlaywrightError as e:
        if tracker.fetch_error:
            raise CaptureError(f"cannot load the page from Grafana ({tracker.fetch_error})") from None
        m = _NET_ERROR.search(str(e).splitlines()[0] if str(e) else "")
        if m:
            raise CaptureError(f"cannot load the page from Grafana ({m.group(0)})") from None
        raise CaptureError(_browser_failure(e)) from None


@dataclass
class _Waiting:
    """The wait_ready/screenshot loop of one capture (see the module docstring)."""

    page: Page
    tracker: NetworkTracker
    url: str
    deadline: float
    clock: Callable[[], float]
    parked: asyncio.Future[None]
    steps: dict[str, float]

    async def run(self, readiness: Readiness) -> tuple[Probe, bytes | None, tuple[CaptureClass, str] | None]:
        started = self.clock()
        shot_seconds = 0.0  # the screenshot that is kept (dropped ones count as waiting)
        png: bytes | None = None
        settled_at = 0.0
        try:
            while True:
                remaining = self.deadline - self.clock()
                if remaining <= 0:
                    raise CaptureTimeout("wait_ready", self.url, readiness.waiting_for)
                self.tracker.drained.clear()
                probe = await _probe(self.page, remaining)
                if probe is None:
                    continue  # the evaluation ran into the deadline: the loop reports the timeout
                early = terminal_class(_facts(self.page, self.tracker, probe))
                now = self.clock()
                if early is None:
                    early = readiness.gave_up(probe, now)
                if early is not None:
                    return probe, None, early
                inflight = len(self.tracker.inflight)
                if readiness.update(probe, inflight=inflight, query_seen=self.tracker.query_seen, now=now):
                    if png is None:  # not bracketed (cannot happen: a settled poll came first)
                        png, shot_seconds = await self._screenshot()
                    return probe, png, None
                png, shot_seconds = None, 0.0  # a picture taken before a change is dropped
                if readiness.settled:  # the next poll decides; take the picture in between
                    settled_at = now
                    png, shot_seconds = await self._screenshot()
                    await asyncio.sleep(max(0.0, settled_at + SETTLE_INTERVAL - self.clock()))
                    continue
                await self._pause(POLL_INTERVAL if inflight else SETTLE_INTERVAL)
        finally:
            total = self.clock() - started
            self.steps["wait_ready"] = round(self.steps.get("wait_ready", 0.0) + total - shot_seconds, 4)
            if shot_seconds:
                self.steps["screenshot"] = round(self.steps.get("screenshot", 0.0) + shot_seconds, 4)

    async def _pause(self, seconds: float) -> None:
        """Sleep ``seconds`` (never past the deadline), or until the last request in flight ends."""
        seconds = min(seconds, max(self.deadline - self.clock(), 0.0))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self.tracker.drained.wait()

    async def _screenshot(self) -> tuple[bytes, float]:
        start = self.clock()
        await self.parked
        png = await _screenshot(self.page, self.deadline, self.clock)
        return png, self.clock() - start


async def _probe(page: Page, remaining: float) -> Probe | None:
    """One evaluation of ``PROBE_JS`` (None: it hit the deadline); a page in the middle of
    navigating gives an empty probe."""
    try:
        async with asyncio.timeout(remaining):
            return Probe.from_js(await page.evaluate(PROBE_JS))
    except TimeoutError:
        return None
    except PlaywrightError as e:
        if page.is_closed() or "closed" in str(e).splitlines()[0].lower():
            raise CaptureError(_browser_failure(e)) from None
        return Probe()  # "Execution context was destroyed": navigation in progress


async def _park_pointer(page: Page) -> None:
    viewport = page.viewport_size or {"width": 1000, "height": 500}
    with contextlib.suppress(PlaywrightError):  # a closed or crashed page fails the next call anyway
        await page.mouse.move(viewport["width"], viewport["height"])


async def _screenshot(page: Page, deadline: float, clock: Callable[[], float]) -> bytes:
    timeout = max(deadline - clock(), 1.0) * 1000
    try:
        # headless screenshots never show the mouse cursor; "initial" leaves the caret alone
        # (no style sheet is injected and removed around each picture)
        return await page.screenshot(type="png", animations="disabled", caret="initial", timeout=timeout)
    except PlaywrightTimeout:
        raise CaptureTimeout("screenshot", page.url, "the screenshot") from None


def _browser_failure(e: BaseException) -> str:
    """One safe sentence for a Playwright error (its call log may hold request headers)."""
    first = str(e).splitlines()[0].lower() if str(e) else ""
    if "closed" in first or "crash" in first or "disconnected" in first:
        return "the browser crashed or closed during the capture"
    return "the browser failed during the capture"
