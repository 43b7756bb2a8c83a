"""Grafana-like sandbox server: emulates what a panel capture sees of Grafana ≥ 11.

Grafana cannot run in tests or in ``demo``, so this server reproduces the parts of Grafana that
decide whether a capture is right (see ``docs/grafana.md`` A.1–A.3, B.3 and C): the same URLs,
the same readiness signals, the same auth failure modes. It is a sandbox, not a product part.

Routes (``auth`` = ``Authorization: Bearer <token>`` and/or HTTP basic auth, when configured)::

    GET  /login                                   login page (open)
    GET  /api/health                              {"commit","database","version"} (open)
    GET  /d-solo/<uid>[/<slug>]?panelId=..        one panel (no auth: 302 to /login)
    GET  /d/<uid>[/<slug>]?kiosk                  whole dashboard (no auth: 302 to /login)
    GET  /api/dashboards/uid/<uid>                dashboard JSON (no auth: 401 JSON)
    POST /api/ds/query                            data frames; the server applies the delays
    GET  /api/prometheus/grafana/api/v1/rules     Grafana-managed rules (state, dashboard_uid,
                                                  panel_id, rule_uid filters)
    GET  /api/prometheus/grafana/api/v1/alerts    their alert instances
    POST /_sandbox/rendered                       readiness beacon sent by the pages (open)
    GET|DELETE /_sandbox/renders                  list / clear the beacons (open)
    POST /_sandbox/rules                          {"uid","firing","labels"} like set_firing (open)

Pages build their DOM in inline JavaScript (``grafana_page.js``) and fetch data with
``POST /api/ds/query`` like Grafana. Scenes dashboards set ``window.__grafanaSceneContext`` and
keep ``window.__grafanaRunningQueryCount`` like ``@grafana/scenes`` ``SceneQueryController``
(undefined until the first query starts; it reaches 0 one animation frame *before* the chart is
drawn, as in Grafana). Legacy dashboards increment ``window.panelsRendered`` after each panel is
drawn. Panels load lazily (IntersectionObserver), as in Grafana when the viewer is not the
image renderer: on ``/d/`` pages, panels below the fold only query once scrolled into view.
When every started panel is drawn the page sets ``window.__sandboxReadyAt`` and sends a
beacon to ``/_sandbox/rendered``. Sandbox-only knob: ``?delay=<ms>`` overrides the query delay
of every panel on the page except the stuck one.

Dashboards and their data live in ``grafana_model.py``, alert rules in ``grafana_rules.py``,
the page in ``grafana_page.html`` / ``grafana_page.js`` / ``grafana_login.html``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import json
import re
import time
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

from sidecar_sandbox.grafana_model import Dashboard, Panel, builtin_dashboards, panel_result, parse_time
from sidecar_sandbox.grafana_rules import BUILTIN_RULES, RuleBook

DEFAULT_TOKEN = "sandbox-grafana-token"
VERSION = "11.3.0-sandbox"
RULES_PREFIX = "/api/prometheus/grafana/api/v1"
_OPEN_PATHS = frozenset({"/login", "/api/health", "/favicon.ico"})
_CLOSING = web.AppKey("grafana_sandbox_closing", asyncio.Event)
Window = tuple[int, int]


class GrafanaSandbox:
    """State and handlers of one emulated Grafana; ``make_app`` serves it."""

    def __init__(
        self,
        *,
        token: str | None = DEFAULT_TOKEN,
        basic_auth: tuple[str, str] | None = None,
        query_delay: float = 0.3,
        external_resource_url: str | None = None,
        metric_source: Callable[[], float] | None = None,
    ) -> None:
        self.token = token
        self.basic_auth = basic_auth
        self.query_delay = query_delay
        self.external_resource_url = external_resource_url
        self.metric_source = metric_source
        self.dashboards = builtin_dashboards(query_delay)
        self.rules = RuleBook(BUILTIN_RULES, self.metric_value)
        self.renders: list[dict[str, Any]] = []

    def set_firing(self, rule_uid: str, firing: bool, labels: dict[str, str] | None = None) -> None:
        """Start or stop an alert instance of a built-in rule (see ``RuleBook.set_firing``)."""
        self.rules.set_firing(rule_uid, firing, labels)

    def metric_value(self) -> float:
        """Current value of the demo metric shown by panel 6 (0 without a source)."""
        return float(self.metric_source()) if self.metric_source is not None else 0.0

    def make_app(self) -> web.Application:
        app = web.Application(middlewares=[self._auth_middleware])
        app[_CLOSING] = asyncio.Event()
        app.on_shutdown.append(_signal_closing)
        app.router.add_get("/login", self._login)
        app.router.add_get("/api/health", self._health)
        for prefix, mode in (("/d-solo", "solo"), ("/d", "dashboard")):
            handler = self._page_handler(mode)
            app.router.add_get(prefix + "/{uid}", handler)
            app.router.add_get(prefix + "/{uid}/{slug}", handler)
        app.router.add_get("/api/dashboards/uid/{uid}", self._dashboard_api)
        app.router.add_post("/api/ds/query", self._ds_query)
        app.router.add_get(RULES_PREFIX + "/rules", self._rules_api)
        app.router.add_get(RULES_PREFIX + "/alerts", self._alerts_api)
        app.router.add_post("/_sandbox/rendered", self._rendered)
        app.router.add_get("/_sandbox/renders", self._list_renders)
        app.router.add_delete("/_sandbox/renders", self._clear_renders)
        app.router.add_post("/_sandbox/rules", self._switch_rule)
        return app

    # ------------------------------------------------------------------------ auth

    def authorized(self, header: str | None) -> bool:
        """True when the ``Authorization`` header satisfies the configured auth."""
        if self.token is None and self.basic_auth is None:
            return True
        scheme, _, value = (header or "").partition(" ")
        if self.token is not None and scheme.lower() == "bearer":
            return hmac.compare_digest(value.strip().encode(), self.token.encode())
        if self.basic_auth is not None and scheme.lower() == "basic":
            return _basic_matches(value.strip(), self.basic_auth)
        return False

    @web.middleware
    async def _auth_middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Like Grafana for anonymous users: pages redirect to /login, the API answers 401."""
        path = request.path
        if path in _OPEN_PATHS or path.startswith("/_sandbox/"):
            return await handler(request)
        if self.authorized(request.headers.get("Authorization")):
            return await handler(request)
        if path.startswith("/api/"):
            return web.json_response({"message": "Unauthorized"}, status=401)
        response = web.Response(status=302, headers={"Location": "/login"})
        response.set_cookie("redirect_to", request.path_qs, httponly=True, samesite="Lax")
        return response

    # ------------------------------------------------------------------------ pages

    async def _login(self, request: web.Request) -> web.Response:
        return web.Response(text=_asset("grafana_login.html"), content_type="text/html")

    async def _health(self, request: web.Request) -> web.Response:
        return web.json_response({"commit": "sandbox", "database": "ok", "version": VERSION})

    def _page_handler(self, mode: str) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handler(request: web.Request) -> web.Response:
            dashboard = self.dashboards.get(request.match_info["uid"])
            if dashboard is None:
                return _not_found_page(request.query.get("theme", "dark"))
            panels = list(dashboard.panels)
            if mode == "solo":
                found = dashboard.panel(request.query.get("panelId", ""))
                panels = [found] if found else []
            config = _page_config(request, dashboard, mode, panels)
            return web.Response(text=self._render_page(dashboard, config), content_type="text/html")

        return handler

    def _render_page(self, dashboard: Dashboard, config: dict[str, Any]) -> str:
        external = ""
        if self.external_resource_url:
            src = _html_escape(self.external_resource_url)
            external = f'<img class="sandbox-external" src="{src}" alt="" width="1" height="1">'
        values = {
            "TITLE": _html_escape(f"{dashboard.title} - Dashboards - Grafana"),
            "THEME": config["theme"],
            "EXTERNAL": external,
            "CONFIG": _script_json(config),
            "SCRIPT": _asset("grafana_page.js"),
        }
        return re.sub(r"__([A-Z]+)__", lambda m: values.get(m.group(1), m.group(0)), _asset("grafana_page.html"))

    # ------------------------------------------------------------------------- API

    async def _dashboard_api(self, request: web.Request) -> web.Response:
        dashboard = self.dashboards.get(request.match_info["uid"])
        if dashboard is None:
            return web.json_response({"message": "Dashboard not found"}, status=404)
        return web.json_response(dashboard.to_json())

    async def _ds_query(self, request: web.Request) -> web.Response:
        """Grafana's query endpoint: the server holds each answer for the panel's delay."""
        body = await _json_body(request)
        queries = body.get("queries") if isinstance(body, dict) else None
        if not isinstance(queries, list) or not queries or not all(isinstance(q, dict) for q in queries):
            return web.json_response({"message": "bad request data: no queries"}, status=400)
        now_ms = int(time.time() * 1000)
        try:
            window = (parse_time(body.get("from", "now-6h"), now_ms), parse_time(body.get("to", "now"), now_ms))
        except ValueError as exc:
            return web.json_response({"message": f"bad request data: {exc}"}, status=400)
        if window[1] <= window[0]:
            return web.json_response({"message": "bad request data: from must be before to"}, status=400)
        panels = [self._query_panel(q) for q in queries]
        if any(p is not None and p.behaviour == "stuck" for p in panels):
            await _hang(request)
            return web.json_response({"message": "sandbox shutting down"}, status=503)
        await asyncio.sleep(max(self._delay(p, q) for p, q in zip(panels, queries, strict=True)))
        results = {str(q.get("refId", "A")): self._result(p, q, window) for p, q in zip(panels, queries, strict=True)}
        failed = any("error" in r for r in results.values())
        return web.json_response({"results": results}, status=400 if failed else 200)

    def _query_panel(self, query: dict[str, Any]) -> Panel | None:
        dashboard = self.dashboards.get(str(query.get("dashboardUid", "")))
        return dashboard.panel(str(query.get("panelId", ""))) if dashboard else None

    def _delay(self, panel: Panel | None, query: dict[str, Any]) -> float:
        override = query.get("sandboxDelayMs")
        if isinstance(override, int | float) and not isinstance(override, bool) and override >= 0:
            return float(override) / 1000.0
        if panel is None:
            return 0.0
        return self.query_delay if panel.delay is None else panel.delay

    def _result(self, panel: Panel | None, query: dict[str, Any], window: Window) -> dict[str, Any]:
        if panel is None:
            return {"error": "sandbox: unknown dashboardUid/panelId", "status": 400}
        labels = _str_dict(query.get("vars"))
        return panel_result(panel, str(query.get("refId", "A")), labels, window, self.metric_value())

    async def _rules_api(self, request: web.Request) -> web.Response:
        try:
            return web.json_response(self.rules.rules_response(request.query))
        except ValueError as exc:
            payload = {"status": "error", "errorType": "bad_data", "error": str(exc), "data": {"groups": []}}
            return web.json_response(payload, status=400)

    async def _alerts_api(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "success", "data": {"alerts": self.rules.alerts()}})

    # --------------------------------------------------------------------- sandbox

    async def _rendered(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        if not isinstance(body, dict):
            return web.json_response({"message": "bad request data"}, status=400)
        self.renders.append({**body, "received_at": time.time() * 1000})
        return web.Response(status=204)

    async def _list_renders(self, request: web.Request) -> web.Response:
        return web.json_response(self.renders)

    async def _clear_renders(self, request: web.Request) -> web.Response:
        self.renders.clear()
        return web.Response(status=204)

    async def _switch_rule(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        if not isinstance(body, dict) or not isinstance(body.get("firing"), bool):
            return web.json_response({"message": 'expected {"uid": str, "firing": bool}'}, status=400)
        labels = body.get("labels")
        if labels is not None and not isinstance(labels, dict):
            return web.json_response({"message": "labels must be an object"}, status=400)
        uid = str(body.get("uid"))
        if uid not in self.rules.rules:
            return web.json_response({"message": "rule not found"}, status=404)
        self.set_firing(uid, body["firing"], _str_dict(labels) if labels is not None else None)
        return web.json_response({"uid": uid, "state": self.rules.state(uid), "alerts": self.rules.alert_count(uid)})


# ------------------------------------------------------------------------- helpers


def _page_config(request: web.Request, dashboard: Dashboard, mode: str, panels: list[Panel]) -> dict[str, Any]:
    """What the page script needs: ``window.__sandboxConfig``."""
    query = request.query
    variables = dict(dashboard.variables)
    variables.update({k[4:]: v for k, v in query.items() if k.startswith("var-") and len(k) > 4})
    delay = query.get("delay", "")
    return {
        "mode": mode,
        "scenes": dashboard.scenes,
        "dashboard": {"uid": dashboard.uid, "title": dashboard.title, "slug": dashboard.slug},
        "panels": [p.to_json() for p in panels],
        "theme": "light" if query.get("theme") == "light" else "dark",
        "tz": query.get("tz") or query.get("timezone") or None,
        "from": query.get("from") or "now-6h",
        "to": query.get("to") or "now",
        "vars": variables,
        "delayMs": int(delay) if delay.isdigit() else None,
        "kiosk": "kiosk" in query,
    }


async def _signal_closing(app: web.Application) -> None:
    app[_CLOSING].set()


async def _hang(request: web.Request) -> None:
    """Keep a query in flight until the client goes away or the server shuts down."""
    closing = request.app[_CLOSING]
    while not closing.is_set():
        transport = request.transport
        if transport is None or transport.is_closing():
            return
        try:
            await asyncio.wait_for(closing.wait(), 0.25)
        except TimeoutError:
            continue


async def _json_body(request: web.Request) -> Any:
    try:
        return json.loads(await request.read() or b"null")
    except (ValueError, UnicodeDecodeError):
        return None


def _basic_matches(encoded: str, expected: tuple[str, str]) -> bool:
    try:
        user, _, password = base64.b64decode(encoded, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return False
    user_ok = hmac.compare_digest(user.encode(), expected[0].encode())
    return hmac.compare_digest(password.encode(), expected[1].encode()) and user_ok


def _str_dict(raw: Any) -> dict[str, str]:
    return {str(k): str(v) for k, v in raw.items()} if isinstance(raw, dict) else {}


def _asset(name: str) -> str:
    return resources.files("sidecar_sandbox").joinpath(name).read_text(encoding="utf-8")


def _html_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


def _script_json(value: Any) -> str:
    """JSON safe inside a ``<script>`` element."""
    text = json.dumps(value)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


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
