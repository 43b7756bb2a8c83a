"""When a Grafana page is ready to be photographed, and what it shows.

Pure (no browser): ``page`` evaluates ``PROBE_JS`` in the page about every 100 ms and feeds
each ``Probe`` to ``Readiness`` — the layered readiness of grafana-image-renderer v5's "legacy
polling": no request in flight, no query running (Scenes) or every panel rendered (legacy),
no loading indicator, the same DOM twice — over a floor: a panel mounted or a query seen.
A page that shows neither within ``boot_grace`` did not boot (``Readiness.gave_up``: class
``not_loaded``, or ``not_found`` when Grafana booted and shows an error instead of the panel).
A live panel (a clock, a stream) never stops changing: once everything else has been settled
for ``live_after``, the DOM may change. ``terminal_class`` spots the pages that end the wait
early (login page, refused credentials, not found, HTTP errors, Grafana's "failed to load its
application files"; no picture is taken) and ``classify`` names a page that became ready (``ok``,
``no_data``, ``panel_error``). Everything is read from Grafana's ``data-testid`` attributes and
structure, which do not change with the UI language; texts are only quoted, never matched
(except the English fallbacks of old versions).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from sidecar.capture.errors import CaptureClass

__all__ = ["PROBE_JS", "PageFacts", "Probe", "Readiness", "classify", "not_loaded_detail", "terminal_class"]

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
  const inPanel = (e) => !!(e && e.closest && e.closest("[data-viz-panel-key], [data-panelid], .panel-solo, "
    + "[class$='panel-container'], [data-testid^='data-testid Panel header']"));
  // a loading bar or spinner is an endless animation inside a panel, whatever its label's language
  const spinning = typeof d.getAnimations === 'function' ? d.getAnimations().filter((a) => {
    const t = a.effect && a.effect.target; const timing = a.effect && a.effect.getTiming ? a.effect.getTiming() : {};
    return a.playState === 'running' && timing.iterations === Infinity && t && inPanel(t) && visible(t); }).length : 0;
  const alertEl = d.querySelector('[data-testid="data-testid Alert error"]');
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
    loading: all('.panel-loading, [aria-label="Panel loading bar"]').filter(visible).length + spinning,
    mounted: n('[data-viz-panel-key], [data-panelid], [data-testid^="data-testid Panel header"]')
      || n("[class$='panel-container']"),
    app: !!w.__grafana_app_bundle_loaded,
    boot_failed: d.readyState === 'complete' && !!d.querySelector('.preloader') && !w.__grafana_app_bundle_loaded,
    alert_text: alertEl ? (alertEl.innerText || alertEl.textContent || '').trim().slice(0, 200) : '',
    login: n('.login-page, form[name="loginForm"], [data-testid="data-testid Username input field"]') > 0,
    not_found: n('[data-testid="data-testid entity-not-found"]') > 0
      || /(dashboard|panel)[^\n]{0,60}not found/i.test(text('.page-not-found, .panel-not-found, '
      + '[data-testid="data-testid Alert error"], [role="alert"]')),
    panel_error: !!errEl || n('[data-testid="data-testid panel content"] .alert-error') > 0,
    error_text: errEl ? (errEl.getAttribute('title') || errEl.textContent || '').trim().slice(0, 300) : '',
    no_data: n('[data-testid="data-testid Panel data error message"], .panel-empty') > 0
      || content.some((c) => /^no data$/i.test((c.innerText || '').trim())),
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
    mounted: int = 0  # panel containers on the page
    app: bool = False  # Grafana's app bundle ran (window.__grafana_app_bundle_loaded)
    boot_failed: bool = False  # index.html's load check found no app bundle
    alert_text: str = ""  # an error alert Grafana shows (quoted, never matched)

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

    def __init__(
        self,
        *,
        whole_dashboard: bool,
        started: float,
        first_query_grace: float = 3.0,
        boot_grace: float = 3.0,
        live_after: float = 1.0,
    ) -> None:
        self.whole_dashboard = whole_dashboard
        self.started = started
        self.first_query_grace = first_query_grace
        self.boot_grace = boot_grace
        self.live_after = live_after
        self.query_seen = False
        self.settled = False  # the last poll found nothing to wait for (its DOM may still change)
        self.waiting_for = "the page"
        self._prev_hash: str | None = None
        self._prev_settled = False
        self._settled_since: float | None = None
        self._booted = False  # a panel was mounted or a query seen

    def update(self, probe: Probe, *, inflight: int, query_seen: bool, now: float) -> bool:
        """Feed one poll; True once the page is ready to be photographed."""
        self.query_seen = self.query_seen or query_seen or probe.running is not None
        self._booted = self._booted or self.query_seen or probe.mounted > 0
        waits = self._waits(probe, inflight, now)
        settled = not waits
        if not settled:
            self._settled_since = None
        elif self._settled_since is None:
            self._settled_since = now
        stable = probe.hash is not None and probe.hash == self._prev_hash
        live = self._settled_since is not None and now - self._settled_since >= self.live_after
        ready = settled and self._prev_settled and probe.hash is not None and (stable or live)
        if settled and not ready:
            waits = ["the page to stop changing"]
        self.waiting_for = ", ".join(waits)
        self.settled = settled
        self._prev_settled = settled
        self._prev_hash = probe.hash
        return ready

    def gave_up(self, probe: Probe, now: float) -> tuple[CaptureClass, str] | None:
        """The floor: no panel mounted and no query seen ``boot_grace`` after the navigation."""
        if self._booted or now - self.started < self.boot_grace or probe.ready_state == "loading":
            return None
        if probe.app and probe.alert_text and not self.whole_dashboard:
            return (
                CaptureClass.NOT_FOUND,
                f"Grafana shows an error instead of the panel: {_safe_text(probe.alert_text)}",
            )
        if probe.app:
            return CaptureClass.NOT_LOADED, f"Grafana's page showed no panel within {self.boot_grace:g}s"
        return CaptureClass.NOT_LOADED, not_loaded_detail(f"no panel within {self.boot_grace:g}s")

    def _waits(self, probe: Probe, inflight: int, now: float) -> list[str]:
        waits: list[str] = []
        if not probe.body or probe.ready_state == "loading":
            return ["the document to load"]
        if not self._booted:
            waits.append("a panel to appear")
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
    asset_failure: str | None = None  # e.g. "HTTP 404 on /grafana/public/build/app.js"


def not_loaded_detail(what: str) -> str:
    """The sentence of a page whose Grafana application did not start."""
    return (
        f"Grafana did not load its application ({what}): if Grafana is under a sub path, check grafana.url, "
        "Grafana's root_url and serve_from_sub_path (see troubleshooting)"
    )


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
    if probe.boot_failed:
        return CaptureClass.NOT_LOADED, not_loaded_detail(facts.asset_failure or "its scripts did not run")
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
