"""Drive one Playwright page through a capture: auth routing, navigation, readiness, screenshot.

The pieces that need a browser; the Grafana knowledge they apply lives in
``sidecar.capture.grafana``. Every step is timed into the ``steps`` dict it is given.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit

from playwright.async_api import BrowserContext, Page, Request, Response, Route
from playwright.async_api import Error as PlaywrightError
from playwright.async_api import TimeoutError as PlaywrightTimeout

from sidecar.capture.grafana import (
    PROBE_JS,
    CaptureClass,
    CaptureError,
    CaptureTimeout,
    PageFacts,
    Probe,
    Readiness,
    auth_url_pattern,
    base_path,
    classify,
    origin_of,
    terminal_class,
)

__all__ = ["NetworkTracker", "Shot", "install_auth", "shoot", "timed"]

log = logging.getLogger("sidecar.capture")

POLL_INTERVAL = 0.1
_UNTRACKED = frozenset({"websocket", "eventsource"})
_QUERY_PATHS = ("/api/ds/query", "/api/tsdb/query", "/api/datasources/proxy/")
_NET_ERROR = re.compile(r"net::ERR_[A-Z0-9_]+")


@contextlib.contextmanager
def timed(steps: dict[str, float], name: str, clock: Callable[[], float] = time.monotonic) -> Iterator[None]:
    """Record how long the block took in ``steps[name]`` (seconds), even when it raises."""
    start = clock()
    try:
        yield
    finally:
        steps[name] = round(steps.get(name, 0.0) + clock() - start, 4)


class NetworkTracker:
    """Counts in-flight HTTP requests of a page and watches Grafana's answers.

    WebSocket and EventSource requests are not counted (Grafana Live keeps them open).
    """

    def __init__(self, grafana_url: str) -> None:
        self._origin = origin_of(grafana_url)
        self._api = base_path(grafana_url) + "/api/"
        self.inflight: set[Request] = set()
        self.query_seen = False
        self.document_status: int | None = None
        self.auth_failure: str | None = None
        self.fetch_error: str | None = None  # why Grafana could not be fetched (safe words)
        self.requests = 0

    def attach(self, page: Page) -> None:
        page.on("request", self._on_request)
        page.on("requestfinished", self._on_done)
        page.on("requestfailed", self._on_done)
        page.on("response", self._on_response)

    def _on_request(self, request: Request) -> None:
        if request.resource_type in _UNTRACKED:
            return
        self.requests += 1
        self.inflight.add(request)
        if any(p in request.url for p in _QUERY_PATHS):
            self.query_seen = True

    def _on_done(self, request: Request) -> None:
        self.inflight.discard(request)

    def _on_response(self, response: Response) -> None:
        request = response.request
        try:
            main_document = request.is_navigation_request() and request.frame.parent_frame is None
        except PlaywrightError:  # a worker's request has no frame
            main_document = False
        if main_document:
            self.document_status = response.status
            return
        if origin_of(response.url) != self._origin:
            return
        path = urlsplit(response.url).path
        if not path.startswith(self._api):
            return
        if response.status == 401 or (response.status == 403 and path.startswith(self._api + "dashboards/")):
            self.auth_failure = f"HTTP {response.status} on {path}"


async def install_auth(
    context: BrowserContext,
    *,
    grafana_url: str,
    authorization: str | None,
    tracker: NetworkTracker | None = None,
) -> None:
    """Add ``Authorization`` to requests for Grafana's origin only (never to other hosts).

    Static files (``<sub-path>/public/``) need no credentials and are not intercepted (see
    ``auth_url_pattern``). Other
    requests are fetched by Playwright without following redirects and handed to the page, so a
    redirect to another origin (an SSO proxy, say) is followed by the browser *without* the header;
    ``route.continue_(headers=...)`` would keep the header across such redirects.
    """
    if not authorization:
        return
    # A page handed over by Playwright has no IP address space, so Chromium's Local Network
    # Access check would block its requests to loopback/private hosts (plugins, images), which a
    # browser next to Grafana is allowed to make: grant that to Grafana's origin.
    parts = urlsplit(grafana_url)
    await context.grant_permissions(["local-network-access"], origin=f"{parts.scheme}://{parts.netloc}")

    async def handle(route: Route) -> None:
        headers = {**route.request.headers, "authorization": authorization}
        try:
            response = await route.fetch(headers=headers, max_redirects=0, timeout=0)
            await route.fulfill(response=response)
        except Exception as e:  # the context closed mid-request, or Grafana is unreachable
            # never log the exception: Playwright's call log lists the request headers
            if tracker is not None and tracker.fetch_error is None:
                tracker.fetch_error = _fetch_failure(e)
            with contextlib.suppress(Exception):
                await route.abort("failed")

    await context.route(auth_url_pattern(grafana_url), handle)


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
    crashed: list[bool] = []
    page.on("crash", lambda _page: crashed.append(True))
    with timed(steps, "navigate", clock):
        await _navigate(page, url, deadline, clock, tracker)
    facts = PageFacts(url=page.url, document_status=tracker.document_status, auth_failure=tracker.auth_failure)
    early = terminal_class(facts)
    if early is not None:
        return Shot(early[0], early[1], None)
    with timed(steps, "wait_ready", clock):
        probe, early = await _wait_ready(page, tracker, url, whole_dashboard, deadline, clock, crashed)
    if early is not None:
        return Shot(early[0], early[1], None)
    facts = PageFacts(page.url, tracker.document_status, tracker.auth_failure, probe)
    cls, detail = classify(facts)
    with timed(steps, "screenshot", clock):
        png = await _screenshot(page, deadline, clock)
    return Shot(cls, detail, png)


async def _navigate(page: Page, url: str, deadline: float, clock: Callable[[], float], tracker: NetworkTracker) -> None:
    remaining = deadline - clock()
    if remaining <= 0:
        raise CaptureTimeout("navigate", url, "time to start")
    try:
        await page.goto(url, wait_until="domcontentloaded", timeout=remaining * 1000)
    except PlaywrightTimeout:
        raise CaptureTimeout("navigate", url, "the page to load") from None
    except PlaywrightError as e:
        if tracker.fetch_error:
            raise CaptureError(f"cannot load the page from Grafana ({tracker.fetch_error})") from None
        m = _NET_ERROR.search(str(e).splitlines()[0] if str(e) else "")
        if m:
            raise CaptureError(f"cannot load the page from Grafana ({m.group(0)})") from None
        raise CaptureError(_browser_failure(e)) from None


async def _wait_ready(
    page: Page,
    tracker: NetworkTracker,
    url: str,
    whole_dashboard: bool,
    deadline: float,
    clock: Callable[[], float],
    crashed: list[bool],
) -> tuple[Probe, tuple[CaptureClass, str] | None]:
    readiness = Readiness(whole_dashboard=whole_dashboard, started=clock())
    while True:
        if crashed:
            raise CaptureError("the browser page crashed while Grafana was loading")
        remaining = deadline - clock()
        if remaining <= 0:
            raise CaptureTimeout("wait_ready", url, readiness.waiting_for)
        probe = await _probe(page, remaining)
        if probe is None:
            continue  # the evaluation ran into the deadline: the loop reports the timeout
        facts = PageFacts(page.url, tracker.document_status, tracker.auth_failure, probe)
        early = terminal_class(facts)
        if early is not None:
            return probe, early
        if readiness.update(probe, inflight=len(tracker.inflight), query_seen=tracker.query_seen, now=clock()):
            return probe, None
        await asyncio.sleep(min(POLL_INTERVAL, max(deadline - clock(), 0)))


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


async def _screenshot(page: Page, deadline: float, clock: Callable[[], float]) -> bytes:
    viewport = page.viewport_size or {"width": 1000, "height": 500}
    # park the pointer just outside the viewport's bottom-right corner, as grafana-image-renderer
    # does: the panel never sees a hover (no header menu, no tooltip, no crosshair)
    await page.mouse.move(viewport["width"], viewport["height"])
    timeout = max(deadline - clock(), 1.0) * 1000
    try:
        return await page.screenshot(
            type="png",
            animations="disabled",
            caret="hide",
            style="*, *::before, *::after { cursor: none !important; }",
            timeout=timeout,
        )
    except PlaywrightTimeout:
        raise CaptureTimeout("screenshot", page.url, "the screenshot") from None


_FETCH_FAILURES = (
    ("ECONNREFUSED", "connection refused"),
    ("ENOTFOUND", "host not found"),
    ("EAI_AGAIN", "host not found"),
    ("ETIMEDOUT", "connection timed out"),
    ("ECONNRESET", "connection reset"),
    ("EHOSTUNREACH", "host unreachable"),
    ("CERT", "TLS certificate error"),
    ("closed", "the capture ended first"),
)


def _fetch_failure(e: BaseException) -> str:
    """A few safe words for why Playwright could not fetch a Grafana request."""
    first = str(e).splitlines()[0] if str(e) else ""
    return next((words for code, words in _FETCH_FAILURES if code in first), "request failed")


def _browser_failure(e: BaseException) -> str:
    """One safe sentence for a Playwright error (its call log may hold request headers)."""
    first = str(e).splitlines()[0].lower() if str(e) else ""
    if "closed" in first or "crash" in first or "disconnected" in first:
        return "the browser crashed or closed during the capture"
    return "the browser failed during the capture"
