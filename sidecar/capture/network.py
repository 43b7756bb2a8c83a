"""A capture page's network: which requests are in flight, what Grafana answered, and the
credentials on Grafana's requests.

``NetworkTracker`` counts the page's HTTP requests in flight (what ``readiness`` waits for),
notes whether a query was sent, the main document's status, and a refusal on Grafana's API (a
401, or a 403 on the dashboard API or the app platform API ``/apis/``, where 12.x loads
dashboards: the capture is ``login``). ``install_auth`` adds ``Authorization`` to Grafana's
requests only (which ones: ``urls.auth_url_pattern``) and, when one cannot be fetched, tells the
tracker why in a few safe words (``fetch_error``). ``install_rewrite`` sends the page's requests
under Grafana's ``appSubUrl`` to where Grafana answers (``serve_from_sub_path = false`` behind a
prefix-stripping proxy, ``grafana_info``). A page is reused for several captures: ``reset`` and
``generation`` keep one capture's news out of the next.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from urllib.parse import urlsplit

from playwright.async_api import BrowserContext, Page, Request, Response, Route
from playwright.async_api import Error as PlaywrightError

from sidecar.capture.urls import auth_url_pattern, base_path, origin_of

__all__ = ["NetworkTracker", "install_auth", "install_rewrite"]

# WebSocket and EventSource stay open (Grafana Live); a beacon (``sendBeacon``, ``<a ping>``) is
# fire-and-forget: the page never sees its answer, so it cannot change what is drawn
_UNTRACKED = frozenset({"websocket", "eventsource", "ping"})
_ASSETS = frozenset({"script", "stylesheet"})
_QUERY_PATHS = ("/api/ds/query", "/api/tsdb/query", "/api/datasources/proxy/")


class NetworkTracker:
    """Counts in-flight HTTP requests of a page and watches Grafana's answers.

    WebSocket and EventSource requests are not counted (Grafana Live keeps them open).
    """

    def __init__(self, grafana_url: str) -> None:
        self._origin = origin_of(grafana_url)
        self._prefixes = {base_path(grafana_url)}  # and the appSubUrl of a rewrite
        self.rewrite: tuple[str, str] | None = None  # installed on this page's context
        self.inflight: set[Request] = set()
        self.query_seen = False
        self.document_status: int | None = None
        self.auth_failure: str | None = None
        self.fetch_error: str | None = None  # why Grafana could not be fetched (safe words)
        self.asset_failure: str | None = None  # the first script or style sheet Grafana did not serve
        self.drained = asyncio.Event()  # set when the last request in flight finishes
        self.generation = 0  # one per capture on this page: late news of an earlier one is ignored

    def reset(self) -> None:
        """Forget the previous capture (a reused page): nothing in flight, nothing seen."""
        self.generation += 1
        self.inflight = set()
        self.query_seen = False
        self.document_status = None
        self.auth_failure = None
        self.fetch_error = None
        self.asset_failure = None
        self.drained.clear()

    def attach(self, page: Page) -> None:
        page.on("request", self._on_request)
        page.on("requestfinished", self._on_done)
        page.on("requestfailed", self._on_done)
        page.on("response", self._on_response)

    def _on_request(self, request: Request) -> None:
        if request.resource_type in _UNTRACKED:
            return
        self.inflight.add(request)
        if any(p in request.url for p in _QUERY_PATHS):
            self.query_seen = True

    def _on_done(self, request: Request) -> None:
        if request in self.inflight:
            self.inflight.discard(request)
            if not self.inflight:
                self.drained.set()

    def _on_response(self, response: Response) -> None:
        request = response.request
        try:
            main_document = request.is_navigation_request() and request.frame.parent_frame is None
        except PlaywrightError:  # a worker's request has no frame
            main_document = False
        if main_document:
            self.document_status = response.status
            return
        if request not in self.inflight:  # a request of an earlier capture on this page
            return
        if origin_of(response.url) != self._origin:
            return
        path = urlsplit(response.url).path
        if response.status >= 400 and request.resource_type in _ASSETS and self.asset_failure is None:
            self.asset_failure = f"HTTP {response.status} on {path}"
        for prefix in self._prefixes:
            if not path.startswith(prefix + "/"):
                continue
            rest = path[len(prefix) :]
            if not rest.startswith(("/api/", "/apis/")):
                continue
            denied = response.status == 403 and rest.startswith(("/api/dashboards/", "/apis/"))
            if response.status == 401 or denied:
                self.auth_failure = f"HTTP {response.status} on {path}"
            return

    def add_prefix(self, prefix: str) -> None:
        self._prefixes.add(prefix.rstrip("/"))


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
        generation = tracker.generation if tracker is not None else 0
        try:
            response = await route.fetch(headers=headers, max_redirects=0, timeout=0)
            await route.fulfill(response=response)
        except Exception as e:  # the context closed mid-request, or Grafana is unreachable
            # never log the exception: Playwright's call log lists the request headers
            if tracker is not None and tracker.fetch_error is None and tracker.generation == generation:
                tracker.fetch_error = _fetch_failure(e)
            with contextlib.suppress(Exception):
                await route.abort("failed")

    await context.route(auth_url_pattern(grafana_url), handle)


async def install_rewrite(
    context: BrowserContext, *, rewrite: tuple[str, str], authorization: str | None, tracker: NetworkTracker
) -> None:
    """Fetch the page's requests for ``rewrite[0]…`` from ``rewrite[1]…`` (with ``Authorization``
    except for static files): Grafana's pages load everything from its ``appSubUrl`` while Grafana
    answers without it. Registered after ``install_auth``'s route, so it wins for those URLs."""
    src, dst = rewrite
    parts = urlsplit(src)
    port = f"(?::{parts.port})?" if parts.port in (None, 80, 443) else f":{parts.port}"
    pattern = re.compile(f"^{re.escape(parts.scheme)}://{re.escape(parts.hostname or '')}{port}{re.escape(parts.path)}")
    public = urlsplit(dst).path + "public/"
    tracker.add_prefix(parts.path)
    # fulfilled responses have no IP address space: see install_auth
    await context.grant_permissions(["local-network-access"], origin=f"{parts.scheme}://{parts.netloc}")

    async def handle(route: Route) -> None:
        request = route.request
        m = pattern.match(request.url)
        url = dst + request.url[m.end() :] if m else request.url
        headers = dict(request.headers)
        if authorization and not urlsplit(url).path.startswith(public):
            headers["authorization"] = authorization
        generation = tracker.generation
        try:
            response = await route.fetch(url=url, headers=headers, max_redirects=0, timeout=0)
            await route.fulfill(response=response)
        except Exception as e:  # never log it: Playwright's call log lists the request headers
            if tracker.fetch_error is None and tracker.generation == generation:
                tracker.fetch_error = _fetch_failure(e)
            with contextlib.suppress(Exception):
                await route.abort("failed")

    await context.route(pattern, handle)
    tracker.rewrite = rewrite


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
