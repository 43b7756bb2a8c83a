"""The Grafana sandbox's HTML: dashboard and solo-panel pages, the login page, "not found".

Pages build their DOM in inline JavaScript, two classic ``<script>`` elements in
``grafana_page.html``: ``grafana_page_chart.js`` (DOM helpers, time parsing, the SVG chart, as
``window.__sandboxChart``) then ``grafana_page.js`` (panels, queries, readiness), which fetches
data with ``POST /api/ds/query`` like Grafana. Both are inlined: a page is one document request
plus its queries. Scenes dashboards set ``window.__grafanaSceneContext`` and keep
``window.__grafanaRunningQueryCount`` like ``@grafana/scenes`` ``SceneQueryController``
(undefined until the first query starts; it reaches 0 one animation frame *before* the chart is
drawn, as in Grafana). Legacy dashboards increment ``window.panelsRendered`` after each panel is
drawn. Panels load lazily (IntersectionObserver), as in Grafana when the viewer is not the
image renderer: on ``/d/`` pages, panels below the fold only query once scrolled into view.
When every started panel is drawn the page sets ``window.__sandboxReadyAt`` and sends a
beacon to ``/_sandbox/rendered``.

What the script gets is ``window.__sandboxConfig`` (``page_config``): mode, Scenes or not, the
panels, theme, time zone (``tz`` or ``timezone``), ``from``/``to``, ``var-*`` variables over the
dashboard's defaults, ``kiosk``, and the sandbox-only knob ``?delay=<ms>``, which overrides the
query delay of every panel on the page except the stuck one. An unknown dashboard is a 404 with
Grafana's "Dashboard not found" text; an unknown ``panelId`` on ``/d-solo/`` is "Panel not found".
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import TYPE_CHECKING, Any

from aiohttp import web

from sidecar_sandbox.grafana_model import Dashboard, Panel

if TYPE_CHECKING:
    from sidecar_sandbox.grafana import GrafanaSandbox

__all__ = ["app_bundle", "login_page", "page_routes"]

# the few texts a capture could be tempted to read, per language (Grafana translates them through
# public/locales/<lang>/grafana.json; its data-testid attributes never change)
_TEXTS = {
    "en-US": {
        "loading": "Panel loading bar",
        "noData": "No data",
        "notFound": "Panel not found",
        "poweredBy": "Powered by",
    },
    "fr-FR": {
        "loading": "Barre de chargement du panneau",
        "noData": "Aucune donnée",
        "notFound": "Panneau introuvable",
        "poweredBy": "Propulsé par",
    },
}


def page_routes(sandbox: GrafanaSandbox) -> list[web.RouteDef]:
    """``/d-solo/<uid>[/<slug>]?panelId=`` (one panel) and ``/d/<uid>[/<slug>]`` (the dashboard)."""
    routes = []
    for prefix, mode in (("/d-solo", "solo"), ("/d", "dashboard")):
        handler = _page_handler(sandbox, mode)
        routes += [web.get(prefix + "/{uid}", handler), web.get(prefix + "/{uid}/{slug}", handler)]
    return routes


def login_page(sandbox: GrafanaSandbox) -> Callable[[web.Request], Awaitable[web.Response]]:
    """The login page, rendered from the same index.html as every page: ``<base href>`` carries
    ``appSubUrl`` (follows grafana/grafana public/views/index.html)."""

    async def handler(request: web.Request) -> web.Response:
        sub = sandbox.sub_path
        # appUrl is root_url with a trailing slash (pkg/setting/setting.go parseAppURLAndSubURL),
        # in grafanaBootData.settings (pkg/api/dtos/frontend_settings.go); unset here, the sandbox
        # says where it was reached, as a Grafana whose root_url is set right would
        app_url = sub.root_url or f"{request.scheme}://{request.host}{sub.prefix}/"
        app_url = app_url if app_url.endswith("/") else app_url + "/"
        boot = json.dumps({"settings": {"appUrl": app_url, "appSubUrl": sub.prefix}}).replace("/", "\\/")
        html = _asset("grafana_login.html").replace("__BASE__", _html_escape(sub.prefix)).replace("__BOOT__", boot)
        return web.Response(text=html, content_type="text/html")

    return handler


async def app_bundle(request: web.Request) -> web.Response:
    """``public/build/app.js``: the page scripts, as Grafana serves its bundle beside index.html;
    it sets ``window.__grafana_app_bundle_loaded`` first (follows grafana/grafana public/app/index.ts)."""
    text = "window.__grafana_app_bundle_loaded = true;\n" + _asset("grafana_page_chart.js") + _asset("grafana_page.js")
    return web.Response(text=text, content_type="application/javascript")


def _page_handler(sandbox: GrafanaSandbox, mode: str) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handler(request: web.Request) -> web.Response:
        dashboard = sandbox.orgs.get(sandbox.org_of(request), {}).get(request.match_info["uid"])
        if dashboard is None:
            return _not_found_page(request.query.get("theme", "dark"))
        profile = sandbox.profile
        scenes = dashboard.scenes and (profile.scenes_solo if mode == "solo" else profile.scenes_dashboard)
        panels = list(dashboard.panels)
        if mode == "solo":
            found = dashboard.panel(request.query.get("panelId", ""), scenes=scenes)
            panels = [found] if found else []
        config = page_config(request, dashboard, mode, panels)
        config.update(
            scenes=scenes,
            appSubUrl=sandbox.sub_path.prefix,
            orgId=sandbox.org_of(request),
            texts=_TEXTS.get(sandbox.language, _TEXTS["en-US"]),
            # 12.4's SoloPanelPageLogo unless hideLogo=true (see grafana_profiles)
            soloLogo=profile.solo_logo and mode == "solo" and request.query.get("hideLogo") != "true",
            apis=profile.apis,
            version=profile.version,
            panelIdRaw=request.query.get("panelId", ""),
            cdnUrl=sandbox.cdn_url,  # [[.ContentDeliveryURL]] in index.html
        )
        html = render_page(dashboard, config, sandbox.external_resource_url, base=sandbox.sub_path.prefix)
        return web.Response(text=html, content_type="text/html")

    return handler


def render_page(
    dashboard: Dashboard, config: dict[str, Any], external_resource_url: str | None, *, base: str = ""
) -> str:
    """``grafana_page.html`` with its placeholders filled (``external_resource_url``: a 1×1 image
    from another origin, for tests of what a capture does with third-party requests)."""
    external = ""
    if external_resource_url:
        src = _html_escape(external_resource_url)
        external = f'<img class="sandbox-external" src="{src}" alt="" width="1" height="1">'
    values = {
        "TITLE": _html_escape(f"{dashboard.title} - Dashboards - Grafana"),
        "THEME": config["theme"],
        "EXTERNAL": external,
        "CONFIG": _script_json(config),
        "BASE": _html_escape(base),
        "BUNDLE": _html_escape(config.get("cdnUrl") or "") + "public/build/app.js",
        "LANG": _html_escape(str(config.get("lang", "en-US"))),
    }
    return re.sub(r"__([A-Z]+)__", lambda m: values.get(m.group(1), m.group(0)), _asset("grafana_page.html"))


def page_config(request: web.Request, dashboard: Dashboard, mode: str, panels: list[Panel]) -> dict[str, Any]:
    """What the page script needs: ``window.__sandboxConfig``."""
    query = request.query
    variables = dict(dashboard.variables)
    variables.update({k[4:]: v for k, v in query.items() if k.startswith("var-") and len(k) > 4})
    delay = query.get("delay", "")
    return {
        "mode": mode,
        "scenes": dashboard.scenes,
        "dashboard": {"uid": dashboard.uid, "title": dashboard.title, "slug": dashboard.slug, "v2": dashboard.v2},
        "panels": [{**p.to_json(), "behaviour": p.behaviour} for p in panels],
        "theme": "light" if query.get("theme") == "light" else "dark",
        # the frontend reads timezone= (public/app/features/dashboard-scene/pages/
        # DashboardScenePageStateManager.ts, and the legacy DashboardModel); tz= is the backend
        # renderer's (pkg/services/rendering), the page never reads it
        "tz": query.get("timezone") or None,
        "from": query.get("from") or "now-6h",
        "to": query.get("to") or "now",
        "vars": variables,
        "delayMs": int(delay) if delay.isdigit() else None,
        "kiosk": "kiosk" in query,
    }


def _not_found_page(theme: str) -> web.Response:
    """Unknown dashboard: 404 with Grafana's "Dashboard not found" text (real Grafana: 200)."""
    background = "#ffffff" if theme == "light" else "#181b1f"
    color = "#24292e" if theme == "light" else "#ccccdc"
    body = (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>Grafana</title></head>'
        f'<body style="margin:0;background:{background};color:{color};font-family:sans-serif">'
        '<div class="page-not-found" data-testid="data-testid entity-not-found" style="padding:64px 16px">'
        "<h1>Dashboard not found</h1><p>We're looking but can't seem to find this dashboard. "
        "Please check the URL and try again.</p></div></body></html>"
    )
    return web.Response(text=body, status=404, content_type="text/html")


def _asset(name: str) -> str:
    return resources.files("sidecar_sandbox").joinpath(name).read_text(encoding="utf-8")


def _html_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


def _script_json(value: Any) -> str:
    """JSON safe inside a ``<script>`` element."""
    text = json.dumps(value)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
