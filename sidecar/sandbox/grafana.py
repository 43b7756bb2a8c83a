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
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import json
import math
import random
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Literal

from aiohttp import web
from aiohttp.typedefs import Handler

DEFAULT_TOKEN = "sandbox-grafana-token"
VERSION = "11.3.0-sandbox"
FOLDER_UID = "sandbox-folder"
FOLDER_TITLE = "Sandbox"
RULES_PREFIX = "/api/prometheus/grafana/api/v1"
_OPEN_PATHS = frozenset({"/login", "/api/health", "/favicon.ico"})
_REL_TIME = re.compile(r"^now(?:-(\d+)([smhdwMy]))?$")
_UNIT_MS = {"s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}
_UNIT_MS |= {"M": 30 * 86_400_000, "y": 365 * 86_400_000}
_STATE_ALIASES = {
    "firing": "firing",
    "alerting": "firing",
    "inactive": "inactive",
    "normal": "inactive",
    "pending": "pending",
    "nodata": "nodata",
    "error": "error",
    "recovering": "recovering",
}

Behaviour = Literal["series", "stuck", "empty", "error", "metric"]


@dataclass(frozen=True)
class Panel:
    """One built-in panel; ``delay`` None means the sandbox's ``query_delay``."""

    id: int
    title: str
    behaviour: Behaviour
    metric: str = ""
    delay: float | None = None
    base: float = 1.0
    amplitude: float = 0.3
    grid: tuple[int, int, int, int] = (0, 0, 12, 8)  # x, y, w, h in Grafana grid units

    def to_json(self) -> dict[str, Any]:
        x, y, w, h = self.grid
        return {
            "id": self.id,
            "title": self.title,
            "type": "timeseries",
            "gridPos": {"h": h, "w": w, "x": x, "y": y},
            "datasource": {"type": "prometheus", "uid": "sandbox-prometheus"},
            "targets": [{"refId": "A", "expr": self.metric or "vector(0)"}],
        }


@dataclass(frozen=True)
class Dashboard:
    """A built-in dashboard; ``scenes`` False emulates pre-Scenes (legacy) Grafana."""

    uid: str
    title: str
    slug: str
    scenes: bool
    panels: tuple[Panel, ...]
    variables: dict[str, str] = field(default_factory=dict)

    def panel(self, raw: str) -> Panel | None:
        """Resolve ``panelId``: digits, or (Scenes only) a ``panel-<id>`` key."""
        match = re.fullmatch(r"panel-(\d+)", raw) if self.scenes else None
        digits = match.group(1) if match else raw
        if not digits.isdigit():
            return None
        return next((p for p in self.panels if p.id == int(digits)), None)

    def to_json(self) -> dict[str, Any]:
        templating = [
            {"name": k, "type": "custom", "current": {"text": v, "value": v}, "query": v}
            for k, v in self.variables.items()
        ]
        return {
            "dashboard": {
                "id": 1 if self.scenes else 2,
                "uid": self.uid,
                "title": self.title,
                "tags": ["sandbox"],
                "timezone": "browser",
                "schemaVersion": 39 if self.scenes else 36,
                "version": 1,
                "time": {"from": "now-6h", "to": "now"},
                "templating": {"list": templating},
                "panels": [p.to_json() for p in self.panels],
            },
            "meta": {
                "type": "db",
                "slug": self.slug,
                "url": f"/d/{self.uid}/{self.slug}",
                "folderUid": FOLDER_UID,
                "folderTitle": FOLDER_TITLE,
                "canSave": False,
                "canEdit": False,
                "canStar": False,
                "provisioned": True,
                "version": 1,
            },
        }


@dataclass(frozen=True)
class Rule:
    """A built-in Grafana-managed alert rule linked to a panel by annotations."""

    uid: str
    name: str
    dashboard_uid: str
    panel_id: int
    query: str
    severity: str
    summary: str
    default_labels: dict[str, str]
    duration: float = 60.0


@dataclass
class _Instance:
    labels: dict[str, str]
    active_at_ns: int


def builtin_dashboards(query_delay: float) -> dict[str, Dashboard]:
    """The two dashboards every sandbox serves (uids ``sandbox`` and ``sandbox-legacy``)."""
    scenes = Dashboard(
        uid="sandbox",
        title="Sandbox services",
        slug="sandbox-services",
        scenes=True,
        variables={"service": "checkout"},
        panels=(
            Panel(1, "Request rate", "series", "requests", query_delay, 120.0, 30.0, (0, 0, 12, 8)),
            Panel(2, "Error rate", "series", "error_ratio", 3.0, 2.0, 1.0, (12, 0, 12, 8)),
            Panel(3, "Stuck query", "stuck", "stuck", None, grid=(0, 8, 12, 8)),
            Panel(4, "Empty", "empty", "absent", None, grid=(12, 8, 12, 8)),
            Panel(5, "Broken", "error", "broken", None, grid=(0, 16, 12, 8)),
            Panel(6, "Checkout errors", "metric", "errors", query_delay, 0.2, 0.15, (12, 16, 12, 8)),
        ),
    )
    legacy = Dashboard(
        uid="sandbox-legacy",
        title="Legacy dashboard",
        slug="legacy-dashboard",
        scenes=False,
        panels=(
            Panel(1, "Request rate", "series", "requests", query_delay, 120.0, 30.0, (0, 0, 12, 8)),
            Panel(2, "Slow", "series", "slow_requests", 3.0, 0.8, 0.3, (12, 0, 12, 8)),
        ),
    )
    return {d.uid: d for d in (scenes, legacy)}


BUILTIN_RULES: tuple[Rule, ...] = (
    Rule(
        uid="sandbox-high-errors",
        name="SandboxHighErrors",
        dashboard_uid="sandbox",
        panel_id=6,
        query='sandbox_demo_errors{service="checkout"} > 1',
        severity="critical",
        summary="Checkout errors are above 1/s",
        default_labels={"service": "checkout"},
    ),
    Rule(
        uid="sandbox-slow",
        name="SandboxSlowRequests",
        dashboard_uid="sandbox",
        panel_id=1,
        query='histogram_quantile(0.99, sandbox_request_seconds{service="checkout"}) > 1',
        severity="warning",
        summary="Checkout p99 latency is above 1s",
        default_labels={"service": "checkout"},
    ),
)

_CLOSING = web.AppKey("grafana_sandbox_closing", asyncio.Event)


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
        self.rules = {r.uid: r for r in BUILTIN_RULES}
        self.renders: list[dict[str, Any]] = []
        self._firing: dict[str, dict[tuple[tuple[str, str], ...], _Instance]] = {uid: {} for uid in self.rules}

    # ----------------------------------------------------------------- switchable state

    def set_firing(self, rule_uid: str, firing: bool, labels: dict[str, str] | None = None) -> None:
        """Start or stop an alert instance of a rule (``KeyError`` for an unknown uid).

        Firing with ``labels`` None uses the rule's default instance labels; firing an instance
        that already fires keeps its ``activeAt``. Stopping with ``labels`` None stops them all.
        """
        instances = self._firing[rule_uid]
        if not firing:
            if labels is None:
                instances.clear()
            else:
                instances.pop(_label_key(labels), None)
            return
        chosen = dict(self.rules[rule_uid].default_labels if labels is None else labels)
        instances.setdefault(_label_key(chosen), _Instance(chosen, time.time_ns()))

    def metric_value(self) -> float:
        """Current value of the demo metric shown by panel 6 (0 without a source)."""
        return float(self.metric_source()) if self.metric_source is not None else 0.0

    # ------------------------------------------------------------------------- app

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
            config = self._page_config(request, dashboard, mode, panels)
            return web.Response(text=self._render_page(dashboard, config), content_type="text/html")

        return handler

    def _page_config(
        self, request: web.Request, dashboard: Dashboard, mode: str, panels: list[Panel]
    ) -> dict[str, Any]:
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

    def _render_page(self, dashboard: Dashboard, config: dict[str, Any]) -> str:
        external = ""
        if self.external_resource_url:
            src = _html_escape(self.external_resource_url)
            external = f'<img class="sandbox-external" src="{src}" alt="" width="1" height="1">'
        return _fill(
            _asset("grafana_page.html"),
            {
                "TITLE": _html_escape(f"{dashboard.title} - Dashboards - Grafana"),
                "THEME": config["theme"],
                "EXTERNAL": external,
                "CONFIG": _script_json(config),
                "SCRIPT": _asset("grafana_page.js"),
            },
        )

    # ------------------------------------------------------------------------- API

    async def _dashboard_api(self, request: web.Request) -> web.Response:
        dashboard = self.dashboards.get(request.match_info["uid"])
        if dashboard is None:
            return web.json_response({"message": "Dashboard not found"}, status=404)
        return web.json_response(dashboard.to_json())

    async def _ds_query(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        queries = body.get("queries") if isinstance(body, dict) else None
        if not isinstance(queries, list) or not queries or not all(isinstance(q, dict) for q in queries):
            return web.json_response({"message": "bad request data: no queries"}, status=400)
        now_ms = int(time.time() * 1000)
        try:
            window = (_parse_time(body.get("from", "now-6h"), now_ms), _parse_time(body.get("to", "now"), now_ms))
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

    def _result(self, panel: Panel | None, query: dict[str, Any], window: tuple[int, int]) -> dict[str, Any]:
        if panel is None:
            return {"error": "sandbox: unknown dashboardUid/panelId", "status": 400}
        if panel.behaviour == "error":
            message = 'Post "http://prometheus:9090/api/v1/query_range": dial tcp: connection refused'
            return {"error": message, "errorSource": "downstream", "status": 500}
        if panel.behaviour == "empty":
            return {"status": 200, "frames": []}
        labels = query.get("vars") if isinstance(query.get("vars"), dict) else {}
        ref_id = str(query.get("refId", "A"))
        times, values = self._series(panel, window)
        return {"status": 200, "frames": [_frame(ref_id, panel.metric, _str_dict(labels), times, values)]}

    def _series(self, panel: Panel, window: tuple[int, int]) -> tuple[list[int], list[float]]:
        times = _timestamps(*window)
        seed = f"{panel.metric}:{panel.id}"
        values = [_noise(seed, t, panel.base, panel.amplitude) for t in times]
        if panel.behaviour == "metric":
            current = self.metric_value()
            tail = max(1, len(times) // 10)
            values[-tail:] = [max(current, 0.0) + _noise(seed, t, 0.0, 0.05) for t in times[-tail:]]
        return times, values

    async def _rules_api(self, request: web.Request) -> web.Response:
        try:
            rules = self._filtered_rules(request.query)
        except ValueError as exc:
            payload = {"status": "error", "errorType": "bad_data", "error": str(exc), "data": {"groups": []}}
            return web.json_response(payload, status=400)
        group_rules = [self._rule_json(rule, states) for rule, states in rules]
        groups = []
        if group_rules:
            groups.append(
                {
                    "name": "sandbox",
                    "file": FOLDER_TITLE,
                    "folderUid": FOLDER_UID,
                    "interval": 10,
                    "lastEvaluation": _rfc3339(time.time_ns()),
                    "evaluationTime": 0.004,
                    "rules": group_rules,
                }
            )
        return web.json_response({"status": "success", "data": {"groups": groups}})

    async def _alerts_api(self, request: web.Request) -> web.Response:
        alerts = [a for rule in self.rules.values() for a in self._alerts_json(rule)]
        return web.json_response({"status": "success", "data": {"alerts": alerts}})

    def _filtered_rules(self, query: Any) -> list[tuple[Rule, set[str]]]:
        states = set()
        for raw in query.getall("state", []):
            if raw.lower() not in _STATE_ALIASES:
                raise ValueError(f"unknown state '{raw}'")
            states.add(_STATE_ALIASES[raw.lower()])
        dashboard_uid = query.get("dashboard_uid")
        panel_raw = query.get("panel_id")
        if panel_raw is not None and not dashboard_uid:
            raise ValueError("panel_id must be set with dashboard_uid")
        if panel_raw is not None and not panel_raw.lstrip("-").isdigit():
            raise ValueError(f"invalid panel_id: {panel_raw}")
        rule_uids = set(query.getall("rule_uid", []))
        chosen = []
        for rule in self.rules.values():
            if dashboard_uid and rule.dashboard_uid != dashboard_uid:
                continue
            if panel_raw is not None and rule.panel_id != int(panel_raw):
                continue
            if (rule_uids and rule.uid not in rule_uids) or (states and self._state(rule) not in states):
                continue
            chosen.append((rule, states))
        return chosen

    def _state(self, rule: Rule) -> str:
        return "firing" if self._firing[rule.uid] else "inactive"

    def _rule_json(self, rule: Rule, states: set[str]) -> dict[str, Any]:
        alerts = self._alerts_json(rule)
        if states and "firing" not in states:
            alerts = []
        data: dict[str, Any] = {
            "state": self._state(rule),
            "name": rule.name,
            "uid": rule.uid,
            "folderUid": FOLDER_UID,
            "query": rule.query,
            "queriedDatasourceUIDs": ["sandbox-prometheus"],
            "duration": rule.duration,
            "keepFiringFor": 0,
            "annotations": _annotations(rule),
            "labels": {"severity": rule.severity},
            "health": "ok",
            "lastError": "",
            "type": "alerting",
            "lastEvaluation": _rfc3339(time.time_ns()),
            "evaluationTime": 0.002,
            "isPaused": False,
            "alerts": alerts,
        }
        if self._firing[rule.uid]:
            data["activeAt"] = _rfc3339(min(i.active_at_ns for i in self._firing[rule.uid].values()))
        return data

    def _alerts_json(self, rule: Rule) -> list[dict[str, Any]]:
        value = self.metric_value() if rule.panel_id == 6 else 2.5
        return [
            {
                "labels": {
                    "severity": rule.severity,
                    **inst.labels,
                    "alertname": rule.name,
                    "grafana_folder": FOLDER_TITLE,
                },
                "annotations": _annotations(rule),
                "state": "Alerting",
                "activeAt": _rfc3339(inst.active_at_ns),
                "value": f"B0: {_go_float_e(value)}, C0: 1e+00",
            }
            for inst in self._firing[rule.uid].values()
        ]

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
        if uid not in self.rules:
            return web.json_response({"message": "rule not found"}, status=404)
        self.set_firing(uid, body["firing"], _str_dict(labels) if labels is not None else None)
        return web.json_response({"uid": uid, "state": self._state(self.rules[uid]), "alerts": len(self._firing[uid])})


# ------------------------------------------------------------------------- helpers


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
    return hmac.compare_digest(user.encode(), expected[0].encode()) & hmac.compare_digest(
        password.encode(), expected[1].encode()
    )


def _label_key(labels: dict[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(labels.items()))


def _str_dict(raw: Any) -> dict[str, str]:
    return {str(k): str(v) for k, v in raw.items()} if isinstance(raw, dict) else {}


def _annotations(rule: Rule) -> dict[str, str]:
    return {
        "__dashboardUid__": rule.dashboard_uid,
        "__panelId__": str(rule.panel_id),
        "summary": rule.summary,
        "description": f"{rule.summary} (sandbox rule {rule.uid})",
    }


def _parse_time(raw: Any, now_ms: int) -> int:
    """Grafana time: epoch milliseconds (number or digits) or ``now[-N<unit>]``."""
    if isinstance(raw, int | float) and not isinstance(raw, bool):
        return int(raw)
    text = str(raw).strip()
    if text.isdigit():
        return int(text)
    match = _REL_TIME.match(text)
    if match is None:
        raise ValueError(f"cannot parse time {text!r}")
    amount, unit = match.groups()
    return now_ms - (int(amount) * _UNIT_MS[unit] if amount else 0)


def _timestamps(from_ms: int, to_ms: int) -> list[int]:
    """About 100 points, aligned to a whole-second step, inside the window."""
    step = max(1_000, math.ceil((to_ms - from_ms) / 100 / 1_000) * 1_000)
    start = math.ceil(from_ms / step) * step
    return list(range(start, to_ms + 1, step)) or [to_ms]


def _noise(seed: str, t: int, base: float, amplitude: float) -> float:
    """Deterministic pseudo-random value around ``base`` (same window → same picture)."""
    jitter = random.Random(f"{seed}:{t}").random() - 0.5
    wave = math.sin(t / 900_000.0)
    return round(base + amplitude * (0.6 * wave + 0.8 * jitter), 4)


def _frame(ref_id: str, metric: str, labels: dict[str, str], times: list[int], values: list[float]) -> dict[str, Any]:
    """A Grafana data-plane frame (``timeseries-multi``) as the Prometheus datasource returns."""
    display = metric + ("{" + ",".join(f"{k}={v}" for k, v in sorted(labels.items())) + "}" if labels else "")
    interval = times[1] - times[0] if len(times) > 1 else 1_000
    return {
        "schema": {
            "refId": ref_id,
            "meta": {"type": "timeseries-multi", "typeVersion": [0, 1]},
            "fields": [
                {"name": "Time", "type": "time", "typeInfo": {"frame": "time.Time"}, "config": {"interval": interval}},
                {
                    "name": "Value",
                    "type": "number",
                    "typeInfo": {"frame": "float64"},
                    "labels": {"__name__": metric, **labels},
                    "config": {"displayNameFromDS": display},
                },
            ],
        },
        "data": {"values": [times, values]},
    }


def _rfc3339(ns: int) -> str:
    """Go's ``time.RFC3339Nano`` in UTC: up to 9 fractional digits, trailing zeros trimmed."""
    seconds, frac = divmod(ns, 1_000_000_000)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    digits = f"{frac:09d}".rstrip("0")
    return f"{stamp}.{digits}Z" if digits else f"{stamp}Z"


def _go_float_e(value: float) -> str:
    """Go ``strconv.FormatFloat(v, 'e', -1, 64)``: shortest mantissa, two-digit exponent."""
    if not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("+Inf" if value > 0 else "-Inf")
    for precision in range(17):
        text = f"{value:.{precision}e}"
        if float(text) == value:
            return text
    return f"{value:.16e}"


def _asset(name: str) -> str:
    return resources.files("sidecar.sandbox").joinpath(name).read_text(encoding="utf-8")


def _fill(template: str, values: dict[str, str]) -> str:
    """Replace ``__NAME__`` markers in one pass (inserted text is never re-scanned)."""
    return re.sub(r"__([A-Z]+)__", lambda m: values.get(m.group(1), m.group(0)), template)


def _html_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


def _script_json(value: Any) -> str:
    """JSON safe inside a ``<script>`` element."""
    text = json.dumps(value)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _not_found_page(theme: str) -> web.Response:
    background = "#ffffff" if theme == "light" else "#181b1f"
    color = "#24292e" if theme == "light" else "#ccccdc"
    body = (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>Grafana</title></head>'
        f'<body style="margin:0;background:{background};color:{color};font-family:sans-serif">'
        '<div class="page-not-found" data-testid="data-testid entity-not-found" style="padding:64px 16px">'
        "<h1>Dashboard not found</h1><p>We're looking but can't seem to find this dashboard. "
        "Please check the URL and try again.</p></div></body></html>"
    )
    return web.Response(text=body, status=404, content_type="text/html")
