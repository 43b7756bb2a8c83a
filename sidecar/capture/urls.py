"""Every Grafana URL the sidecar builds or reads: the renderer's page, the dashboard API, the
link an engineer clicks, the origin that gets credentials, and the panel a Grafana link names.

All pure string work (no I/O). The page URL is the one grafana-image-renderer loads:
``/d-solo/<uid>[/<slug>]`` for a panel, ``/d/<uid>[/<slug>]?…&kiosk`` for a whole dashboard,
with ``render=1``; the human link is the same panel in Grafana's UI (``/d/<uid>?viewPanel=``).
"""

from __future__ import annotations

import re
from urllib.parse import SplitResult, parse_qs, parse_qsl, quote, urlencode, urlsplit, urlunsplit

from sidecar.config import GrafanaConfig
from sidecar.model import PanelCapture

__all__ = [
    "auth_url_pattern",
    "base_path",
    "dashboard_api_url",
    "dashboard_v2_url",
    "human_link",
    "origin_of",
    "panel_url",
    "parse_grafana_url",
]

# a panel in Grafana's UI (/d/, viewPanel) and on the renderer's page (/d-solo/, panelId)
_DASHBOARD_SEGMENTS = ("d", "d-solo")
_PANEL_PARAMS = ("viewPanel", "panelId")
_RENDERER_ONLY = ("render", "kiosk", "theme", "hideLogo")  # parameters of the renderer's page, not of the UI


def _host(parts: SplitResult) -> str:
    host = (parts.hostname or "").lower()
    return f"[{host}]" if ":" in host else host


def _default_port(scheme: str) -> int:
    return 443 if scheme == "https" else 80


def origin_of(url: str) -> str:
    """``scheme://host:port`` with the default port made explicit, lower-cased."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    return f"{scheme}://{_host(parts)}:{parts.port or _default_port(scheme)}"


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
    default = _default_port(scheme)
    port = parts.port or default
    port_re = f"(?::{port})?" if port == default else f":{port}"
    sub = base_path(grafana_url).strip("/")
    public = (sub + "/" if sub else "") + "public/"
    return re.compile(f"^{scheme}://{re.escape(_host(parts))}{port_re}/(?!{re.escape(public)})")


def panel_url(
    cfg: GrafanaConfig,
    req: PanelCapture,
    slug: str | None = None,
    *,
    base_url: str | None = None,
    panel_id: str | None = None,
    hide_logo: bool = False,
) -> str:
    """The page Grafana's own renderer would load for ``req``.

    A panel: ``/d-solo/<uid>[/<slug>]?orgId&panelId&from&to&timezone&theme&var-*[&hideLogo=true]&render=1``;
    the whole dashboard (``panel`` None): ``/d/<uid>[/<slug>]?orgId&from&to&timezone&theme&var-*&kiosk&render=1``.
    ``base_url``: where Grafana answers (default ``grafana.url``); ``panel_id``: ``panelId`` as this
    Grafana version takes it (default ``req.panel``); the org is the alert's, else ``grafana.org_id``.
    The frontend reads ``timezone=`` (``tz=`` is only the backend ``/render``'s).
    """
    kind = "d" if req.panel is None else "d-solo"
    path = f"{(base_url or cfg.url).rstrip('/')}/{kind}/{quote(req.dashboard, safe='')}"
    if slug:
        path += "/" + quote(slug, safe="")
    params: list[tuple[str, str]] = [("orgId", str(req.org_id or cfg.org_id))]
    if req.panel is not None:
        params.append(("panelId", panel_id or req.panel))
    params += [("from", req.time_from), ("to", req.time_to)]
    if req.timezone and req.timezone != "browser":
        params.append(("timezone", req.timezone))
    params.append(("theme", req.theme))
    params += [(f"var-{k}", v) for k, v in req.vars]
    if hide_logo and req.panel is not None:
        params.append(("hideLogo", "true"))
    query = urlencode(params, quote_via=quote, safe="/:")
    if req.panel is None:
        query += "&kiosk"
    return f"{path}?{query}&render=1"


def dashboard_api_url(base_url: str, uid: str) -> str:
    """``GET`` this for a dashboard's JSON model, slug and titles."""
    return f"{base_url.rstrip('/')}/api/dashboards/uid/{quote(uid, safe='')}"


def dashboard_v2_url(base_url: str, uid: str, org_id: int, version: str = "v2beta1") -> str:
    """A v2-schema dashboard through Grafana's app platform API (12.x). The namespace of an org is
    ``default`` for org 1, else ``org-<id>`` (grafana/grafana
    pkg/services/apiserver/endpoints/request/namespace.go)."""
    ns = "default" if org_id == 1 else f"org-{org_id}"
    return (
        f"{base_url.rstrip('/')}/apis/dashboard.grafana.app/{version}/namespaces/{ns}/dashboards/{quote(uid, safe='')}"
    )


def human_link(render_url: str) -> str:
    """The link an on-call engineer clicks: the panel in Grafana's UI, not the renderer's page.

    ``/d-solo/<uid>/<slug>?panelId=4&from&to&var-x&render=1`` → ``/d/<uid>/<slug>?viewPanel=4&from&to&var-x``;
    a whole-dashboard capture loses ``kiosk``; ``theme`` and ``render`` are the renderer's, dropped.
    """
    parts = urlsplit(render_url)
    path = parts.path.replace("/d-solo/", "/d/", 1)
    params = []
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key in _RENDERER_ONLY:
            continue
        params.append(("viewPanel" if key == "panelId" else key, value))
    return urlunsplit((parts.scheme, parts.netloc, path, urlencode(params, quote_via=quote, safe="/:"), ""))


def parse_grafana_url(url: str) -> tuple[str, str | None, int | None] | None:
    """The panel a Grafana link names: ``(dashboard_uid, panel_id, org_id)``, or None.

    ``…/d/<uid>[/<slug>]?viewPanel=<id>`` (the UI) and ``…/d-solo/<uid>?panelId=<id>`` (the
    renderer), under any sub-path; ``panel_id`` is None for a whole dashboard (as written:
    ``4`` or ``panel-4``), ``org_id`` None without a numeric ``orgId``. None when the URL names
    no dashboard (``/alerting/list``, an empty string).
    """
    if not url:
        return None
    parts = urlsplit(url)
    segments = [s for s in parts.path.split("/") if s]
    for i, segment in enumerate(segments[:-1]):
        if segment in _DASHBOARD_SEGMENTS:
            query = parse_qs(parts.query)
            panel = next((query[p][0] for p in _PANEL_PARAMS if query.get(p)), "")
            org = (query.get("orgId") or [""])[0]
            return segments[i + 1], panel or None, int(org) if org.isdigit() else None
    return None
