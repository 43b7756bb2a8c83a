"""When a Grafana page is ready to be photographed, and what it shows.

Pure (no browser): ``page`` evaluates ``PROBE_JS`` in the page about every 100 ms and feeds
each ``Probe`` to ``Readiness`` — the layered readiness of grafana-image-renderer v5's "legacy
polling": no request in flight, no query running (Scenes) or every panel rendered (legacy),
no loading indicator, the same DOM twice. ``terminal_class`` spots the pages that end the wait
early (login page, refused credentials, not found, HTTP errors; no picture is taken) and
``classify`` names a page that became ready (``ok``, ``no_data``, ``panel_error``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from sidecar.capture.errors import CaptureClass

__all__ = ["PROBE_JS", "PageFacts", "Probe", "Readiness", "classify", "terminal_class"]

# --------------------------------------------------------------------------- the page probe

# One evaluation per poll: readiness signals and what the page shows (classification).
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
