"""What a capture must know about Grafana: URLs, auth, dashboard lookup, readiness, classes.

Everything here is pure (no browser) except ``DashboardDirectory``, which asks Grafana's HTTP API
for a dashboard's slug and titles. ``sidecar.capture.page`` drives the browser with these pieces.
See docs/grafana.md: A.1 (URL shape), A.3 (layered readiness of grafana-image-renderer v5) and C
(what goes wrong: spinners, login pages, timeouts).

Errors::

    CaptureError        a capture failed; ``cls`` says how, ``str()`` is one safe sentence
    └── CaptureTimeout  a step did not finish before the deadline (``step``, ``url``)
"""

from __future__ import annotations

import asyncio
import base64
import enum
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

import aiohttp

from sidecar.config import GrafanaConfig
from sidecar.model import PanelCapture

__all__ = [
    "PROBE_JS",
    "CaptureClass",
    "CaptureError",
    "CaptureTimeout",
    "DashboardDirectory",
    "DashboardInfo",
    "PageFacts",
    "Probe",
    "Readiness",
    "auth_header",
    "auth_url_pattern",
    "classify",
    "origin_of",
    "panel_url",
    "terminal_class",
]


class CaptureClass(enum.StrEnum):
    """Outcome of one capture. ``ok``, ``no_data`` and ``panel_error`` keep their picture."""

    OK = "ok"
    TIMEOUT = "timeout"
    LOGIN = "login"
    NOT_FOUND = "not_found"
    PANEL_ERROR = "panel_error"
    NO_DATA = "no_data"
    ERROR = "error"


class CaptureError(Exception):
    """A capture failed. The message is one sentence without secrets (it reaches logs)."""

    def __init__(self, message: str, cls: CaptureClass = CaptureClass.ERROR) -> None:
        super().__init__(message)
        self.cls = cls


class CaptureTimeout(CaptureError):
    """``step`` (navigate, wait_ready, ...) did not finish before the capture's deadline."""

    def __init__(self, step: str, url: str, waiting_for: str = "") -> None:
        self.step = step
        self.url = url
        self.waiting_for = waiting_for
        super().__init__(f"{step} did not finish in time", CaptureClass.TIMEOUT)


# --------------------------------------------------------------------------- URLs and auth


def origin_of(url: str) -> str:
    """``scheme://host:port`` with the default port made explicit, lower-cased."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    port = parts.port or (443 if scheme == "https" else 80)
    host = (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"
    return f"{scheme}://{host}:{port}"


def base_path(url: str) -> str:
    """Sub-path Grafana is served from (``""`` or ``/grafana``), without a trailing slash."""
    return urlsplit(url).path.rstrip("/")


def auth_url_pattern(grafana_url: str) -> re.Pattern[str]:
    """The request URLs that get Grafana's credentials: Grafana's origin, minus static files.

    A regular expression (not a Python callable) so Playwright matches it in the driver and the
    many requests that do not match never make a round trip through this process.
    """
    parts = urlsplit(grafana_url)
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"
    default = 443 if scheme == "https" else 80
    port = parts.port or default
    port_re = f"(?::{port})?" if port == default else f":{port}"
    sub = base_path(grafana_url).strip("/")
    public = (sub + "/" if sub else "") + "public/"
    return re.compile(f"^{scheme}://{re.escape(host)}{port_re}/(?!{re.escape(public)})")


def auth_header(cfg: GrafanaConfig) -> str | None:
    """The ``Authorization`` value for Grafana: the service-account token, else basic auth."""
    if cfg.token is not None and cfg.token.get_secret_value():
        return "Bearer " + cfg.token.get_secret_value()
    if cfg.basic_auth is not None:
        raw = f"{cfg.basic_auth.username}:{cfg.basic_auth.password.get_secret_value()}"
        return "Basic " + base64.b64encode(raw.encode()).decode("ascii")
    return None


def panel_url(cfg: GrafanaConfig, req: PanelCapture, slug: str | None = None) -> str:
    """The page Grafana's own renderer would load (docs/grafana.md A.1, fact 1).

    A panel: ``/d-solo/<uid>[/<slug>]?orgId&panelId&from&to&tz&theme&var-*&render=1``;
    the whole dashboard (``panel`` None): ``/d/<uid>[/<slug>]?orgId&from&to&tz&theme&var-*&kiosk&render=1``.
    """
    kind = "d" if req.panel is None else "d-solo"
    path = f"{cfg.url.rstrip('/')}/{kind}/{quote(req.dashboard, safe='')}"
    if slug:
        path += "/" + quote(slug, safe="")
    params: list[tuple[str, str]] = [("orgId", str(cfg.org_id))]
    if req.panel is not None:
        params.append(("panelId", req.panel))
    params += [("from", req.time_from), ("to", req.time_to)]
    if req.timezone and req.timezone != "browser":
        params.append(("tz", req.timezone))
    params.append(("theme", req.theme))
    params += [(f"var-{k}", v) for k, v in req.vars]
    query = urlencode(params, quote_via=quote, safe="/:")
    if req.panel is None:
        query += "&kiosk"
    return f"{path}?{query}&render=1"


# --------------------------------------------------------------------------- dashboard lookup

_PANEL_KEY = re.compile(r"(?:panel-)?(\d+)(?:-clone-\d+)?")


@dataclass(frozen=True)
class DashboardInfo:
    """What ``/api/dashboards/uid/<uid>`` tells a capture: the slug and the titles."""

    uid: str
    title: str
    slug: str
    panels: Mapping[int, str] = field(default_factory=dict)

    def title_for(self, panel: str | None) -> str:
        """The panel's title (``4``, ``panel-4`` and ``panel-4-clone-1`` all mean id 4)."""
        if panel is None:
            return self.title
        m = _PANEL_KEY.fullmatch(panel)
        return self.panels.get(int(m.group(1)), "") if m else ""

    @classmethod
    def from_api(cls, uid: str, payload: Any) -> DashboardInfo:
        dash = payload.get("dashboard") if isinstance(payload, dict) else None
        meta = payload.get("meta") if isinstance(payload, dict) else None
        if not isinstance(dash, dict):
            raise ValueError("no dashboard object")
        titles: dict[int, str] = {}
        _collect_titles(dash.get("panels"), titles)
        slug = meta.get("slug") if isinstance(meta, dict) else None
        return cls(uid=uid, title=str(dash.get("title") or ""), slug=str(slug or ""), panels=titles)


def _collect_titles(panels: Any, out: dict[int, str]) -> None:
    """Panels and the panels nested in collapsed rows."""
    if not isinstance(panels, list):
        return
    for p in panels:
        if not isinstance(p, dict):
            continue
        if isinstance(p.get("id"), int) and not isinstance(p.get("id"), bool):
            out[p["id"]] = str(p.get("title") or "")
        _collect_titles(p.get("panels"), out)


@dataclass(frozen=True)
class Lookup:
    """Result of a dashboard lookup: ``info`` when found, else the HTTP ``status`` (0: no answer)."""

    info: DashboardInfo | None
    status: int


class DashboardDirectory:
    """Looks dashboards up once per uid (cached for ``ttl``) with the capture's credentials."""

    def __init__(self, *, grafana: GrafanaConfig, clock: Callable[[], float], ttl: float = 600.0) -> None:
        self._cfg = grafana
        self._clock = clock
        self._ttl = ttl
        self._cache: dict[str, tuple[float, DashboardInfo]] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._session: aiohttp.ClientSession | None = None

    def cached(self, uid: str) -> DashboardInfo | None:
        hit = self._cache.get(uid)
        if hit is None or hit[0] < self._clock():
            return None
        return hit[1]

    async def lookup(self, uid: str, *, timeout: float) -> Lookup:
        """``GET /api/dashboards/uid/<uid>``; failures give ``info`` None and never raise."""
        info = self.cached(uid)
        if info is not None:
            return Lookup(info, 200)
        lock = self._locks.setdefault(uid, asyncio.Lock())
        async with lock:
            info = self.cached(uid)
            if info is not None:
                return Lookup(info, 200)
            result = await self._fetch(uid, timeout)
            if result.info is not None:
                self._cache[uid] = (self._clock() + self._ttl, result.info)
            return result

    async def _fetch(self, uid: str, timeout: float) -> Lookup:
        if self._session is None:
            headers = {"Accept": "application/json", "X-Grafana-Org-Id": str(self._cfg.org_id)}
            auth = auth_header(self._cfg)
            if auth:
                headers["Authorization"] = auth
            self._session = aiohttp.ClientSession(headers=headers)
        url = f"{self._cfg.url.rstrip('/')}/api/dashboards/uid/{quote(uid, safe='')}"
        try:
            async with self._session.get(
                url, timeout=aiohttp.ClientTimeout(total=max(timeout, 0.1)), allow_redirects=False
            ) as resp:
                if resp.status != 200:
                    return Lookup(None, resp.status)
                return Lookup(DashboardInfo.from_api(uid, await resp.json(content_type=None)), 200)
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return Lookup(None, 0)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


# --------------------------------------------------------------------------- the page probe

# One evaluation per poll: readiness signals (A.3) and what the page shows (classification).
PROBE_JS = r"""
() => {
  const d = document, w = window, b = d.body;
  const all = (s) => Array.from(d.querySelectorAll(s));
  const n = (s) => d.querySelectorAll(s).length;
  const visible = (e) => { const r = e.getBoundingClientRect();
    return r.bottom > 0 && r.right > 0 && r.top < w.innerHeight && r.left < w.innerWidth; };
  let hash = null;
  if (b) { const s = b.innerHTML; let h = 0;
    for (let i = 0; i < s.length; i++) { h = (Math.imul(h, 31) + s.charCodeAt(i)) | 0; }
    hash = s.length + ':' + h; }
  const text = (sel) => all(sel).map((e) => (e.innerText || e.textContent || '').trim()).join('\n');
  const dashPanels = all('[data-panelid]').filter(visible);
  const dashRendered = dashPanels.filter((p) => Array.from(p.querySelectorAll("[class$='panel-content']"))
    .some((c) => c.childElementCount > 0)).length;
  const errEl = d.querySelector('[data-testid="data-testid Panel status error"], .panel-info-corner--error');
  const content = all('[data-testid="data-testid panel content"], .panel-content');
  return {
    body: !!b,
    ready_state: d.readyState,
    hash: hash,
    scenes: !!w.__grafanaSceneContext,
    running: typeof w.__grafanaRunningQueryCount === 'number' ? w.__grafanaRunningQueryCount : null,
    panels_rendered: typeof w.panelsRendered === 'number' ? w.panelsRendered : null,
    solo_count: n('.panel-solo') || n("[class$='panel-container']"),
    dash_panels: dashPanels.length,
    dash_rendered: dashRendered,
    loading: all('.panel-loading, [aria-label="Panel loading bar"]').filter(visible).length,
    login: n('.login-page, form[name="loginForm"], [data-testid="data-testid Username input field"]') > 0,
    not_found: /(dashboard|panel)[^\n]{0,60}not found/i.test(text('[data-testid="data-testid entity-not-found"], .page-not-found, '
      + '.panel-not-found, [data-testid="data-testid Alert error"], [role="alert"]')),
    panel_error: !!errEl || n('[data-testid="data-testid panel content"] .alert-error') > 0,
    error_text: errEl ? (errEl.getAttribute('title') || errEl.textContent || '').trim().slice(0, 300) : '',
    no_data: n('.panel-empty') > 0 || content.some((c) => /^no data$/i.test((c.innerText || '').trim())),
  };
}
"""


@dataclass(frozen=True)
class Probe:
    """One poll of the page (what ``PROBE_JS`` returned)."""

    body: bool = False
    ready_state: str = "loading"
    hash: str | None = None
    scenes: bool = False
    running: int | None = None
    panels_rendered: int | None = None
    solo_count: int = 0
    dash_panels: int = 0
    dash_rendered: int = 0
    loading: int = 0
    login: bool = False
    not_found: bool = False
    panel_error: bool = False
    error_text: str = ""
    no_data: bool = False

    @classmethod
    def from_js(cls, raw: Any) -> Probe:
        if not isinstance(raw, dict):
            return cls()
        known = {k: v for k, v in raw.items() if k in cls.__dataclass_fields__}
        return cls(**known)


class Readiness:
    """grafana-image-renderer v5 "legacy polling", fed one ``Probe`` per ~100 ms poll.

    Ready when, on two consecutive polls, (a) no HTTP request is in flight (WebSocket and
    EventSource excluded by the caller), (b) Scenes: no query running — and if no query was seen
    yet, wait up to ``first_query_grace`` for one, (c) legacy: ``panelsRendered`` caught up with
    the panels on screen, (d) no loading indicator is visible; and the DOM hash did not change
    between those two polls.
    """

    def __init__(self, *, whole_dashboard: bool, started: float, first_query_grace: float = 3.0) -> None:
        self.whole_dashboard = whole_dashboard
        self.started = started
        self.first_query_grace = first_query_grace
        self.query_seen = False
        self.settled = False  # the last poll found nothing to wait for (its DOM may still change)
        self.waiting_for = "the page"
        self._prev_hash: str | None = None
        self._prev_settled = False

    def update(self, probe: Probe, *, inflight: int, query_seen: bool, now: float) -> bool:
        """Feed one poll; True once the page is ready to be photographed."""
        self.query_seen = self.query_seen or query_seen or probe.running is not None
        waits = self._waits(probe, inflight, now)
        settled = not waits
        ready = settled and self._prev_settled and probe.hash is not None and probe.hash == self._prev_hash
        if settled and not ready:
            waits = ["the page to stop changing"]
        self.waiting_for = ", ".join(waits)
        self.settled = settled
        self._prev_settled = settled
        self._prev_hash = probe.hash
        return ready

    def _waits(self, probe: Probe, inflight: int, now: float) -> list[str]:
        waits: list[str] = []
        if not probe.body or probe.ready_state == "loading":
            return ["the document to load"]
        if inflight > 0:
            waits.append(f"{inflight} network request{'s' if inflight != 1 else ''} in flight")
        if probe.scenes:
            if probe.running is not None and probe.running > 0:
                waits.append(f"{probe.running} quer{'ies' if probe.running != 1 else 'y'} running")
            elif not self.query_seen and now - self.started < self.first_query_grace:
                waits.append("the first query to start")
        elif self.whole_dashboard:
            if probe.dash_rendered < probe.dash_panels:
                waits.append(f"{probe.dash_panels - probe.dash_rendered} panel(s) to render")
        elif probe.solo_count > 0 and (probe.panels_rendered or 0) < probe.solo_count:
            waits.append("the panel to render (panelsRendered)")
        if probe.loading > 0:
            waits.append("a loading indicator to disappear")
        return waits


# --------------------------------------------------------------------------- classification


@dataclass(frozen=True)
class PageFacts:
    """What the network and the DOM showed during one capture."""

    url: str  # final page URL
    document_status: int | None = None
    auth_failure: str | None = None  # e.g. "HTTP 401 on /api/ds/query"
    probe: Probe | None = None
    login_path: str = "/login"


def terminal_class(facts: PageFacts) -> tuple[CaptureClass, str] | None:
    """LOGIN / NOT_FOUND / ERROR states that end the wait early (no picture is taken)."""
    path = urlsplit(facts.url).path.rstrip("/")
    probe = facts.probe or Probe()
    if path.endswith(facts.login_path) or probe.login:
        return CaptureClass.LOGIN, "Grafana showed its login page: check grafana.token or grafana.basic_auth"
    if facts.auth_failure:
        return CaptureClass.LOGIN, f"Grafana refused the credentials ({facts.auth_failure})"
    status = facts.document_status
    if status in (401, 403):
        return CaptureClass.LOGIN, f"Grafana refused the credentials (HTTP {status} on the page)"
    if status == 404:
        return CaptureClass.NOT_FOUND, "Grafana answered HTTP 404 for the page: dashboard not found"
    if probe.not_found:
        return CaptureClass.NOT_FOUND, "Grafana says the dashboard or panel was not found"
    if status is not None and status >= 400:
        return CaptureClass.ERROR, f"Grafana answered HTTP {status} for the page"
    return None


def classify(facts: PageFacts) -> tuple[CaptureClass, str]:
    """The class of a page that became ready, and one sentence saying why."""
    early = terminal_class(facts)
    if early is not None:
        return early
    probe = facts.probe or Probe()
    if probe.panel_error:
        why = _safe_text(probe.error_text)
        return CaptureClass.PANEL_ERROR, "the panel shows an error" + (f": {why}" if why else "")
    if probe.no_data:
        return CaptureClass.NO_DATA, 'the panel shows "No data"'
    return CaptureClass.OK, "rendered"


_USERINFO = re.compile(r"(?<=://)[^/@\s]+@")
_QUERY = re.compile(r"\?\S*")


def _safe_text(text: str, limit: int = 160) -> str:
    """A panel's error message, without URL credentials or query strings, shortened."""
    cleaned = _QUERY.sub("", _USERINFO.sub("", " ".join(text.split())))
    return cleaned if len(cleaned) <= limit else cleaned[: limit - 1] + "…"
