"""The Grafana sandbox's JSON API: dashboard JSON, ``POST /api/ds/query``, alert rules and alerts.

``POST /api/ds/query`` is where the panels' timing lives: the server holds each answer for the
panel's delay (``Panel.delay``, else the sandbox's ``query_delay``; a query's ``sandboxDelayMs``,
sent by pages opened with ``?delay=``, overrides it). A query for the ``stuck`` panel never
answers: it stays in flight until the client goes away or the server shuts down (then 503).
``from``/``to`` are epoch milliseconds or ``now[-N<unit>]``; a bad window is 400, as is a query
for an unknown ``dashboardUid``/``panelId`` (its result carries the error, like a failing
datasource). Data comes from ``grafana_model.panel_result``, rules and their alert instances from
``grafana_rules.RuleBook`` (``state``, ``dashboard_uid``, ``panel_id``, ``rule_uid`` filters; a bad
filter is Prometheus' ``bad_data`` 400).
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import TYPE_CHECKING, Any

from aiohttp import web

from sidecar_sandbox.grafana_model import Dashboard, Panel, panel_result, parse_time
from sidecar_sandbox.grafana_profiles import namespace

if TYPE_CHECKING:
    from sidecar_sandbox.grafana import GrafanaSandbox

__all__ = ["CLOSING", "RULES_PREFIX", "api_routes", "json_body", "signal_closing", "str_dict"]

RULES_PREFIX = "/api/prometheus/grafana/api/v1"
CLOSING = web.AppKey("grafana_sandbox_closing", asyncio.Event)
Window = tuple[int, int]


def api_routes(sandbox: GrafanaSandbox) -> list[web.RouteDef]:
    api = _Api(sandbox)
    routes = [
        web.get("/api/dashboards/uid/{uid}", api.dashboard),
        web.post("/api/ds/query", api.ds_query),
        web.get(RULES_PREFIX + "/rules", api.rules),
        web.get(RULES_PREFIX + "/alerts", api.alerts),
    ]
    if sandbox.profile.apis:
        apis = "/apis/dashboard.grafana.app/{version}/namespaces/{ns}/dashboards/{uid}"
        routes += [web.get(apis, api.resource), web.get(apis + "/dto", api.resource)]
    return routes


class _Api:
    def __init__(self, sandbox: GrafanaSandbox) -> None:
        self.sb = sandbox

    def _board(self, request: web.Request, uid: str) -> Dashboard | None:
        return self.sb.orgs.get(self.sb.org_of(request), {}).get(uid)

    async def dashboard(self, request: web.Request) -> web.Response:
        dashboard = self._board(request, request.match_info["uid"])
        if dashboard is None:
            return web.json_response({"message": "Dashboard not found"}, status=404)
        if dashboard.uid in self.sb.forbidden:
            # follows grafana/grafana pkg/api/dashboard.go (dashboardGuardianResponse)
            return web.json_response({"message": "Access denied to this dashboard"}, status=403)
        if dashboard.v2:
            # follows grafana/grafana pkg/api/dashboard.go (GetDashboard: a v2 dashboard is
            # refused with 406 and the API to use instead)
            ns = namespace(self.sb.org_of(request))
            message = (
                "dashboard api version not supported, use "
                f"/apis/dashboard.grafana.app/v2/namespaces/{ns}/dashboards/{dashboard.uid} instead"
            )
            return web.json_response({"message": message}, status=406)
        return web.json_response(dashboard.to_json())

    async def resource(self, request: web.Request) -> web.Response:
        """``/apis/dashboard.grafana.app/<version>/namespaces/<ns>/dashboards/<uid>[/dto]`` (12.x):
        a v1 resource (``spec`` is the dashboard JSON) or, for ``v2*`` versions, a v2 resource;
        a v2 dashboard read as v1 is a 406 like the legacy API. Follows grafana/grafana
        pkg/registry/apis/dashboard (legacy storage; namespaces per
        pkg/services/apiserver/endpoints/request/namespace.go)."""
        version, ns, uid = (request.match_info[k] for k in ("version", "ns", "uid"))
        org = 1 if ns == "default" else int(ns[4:]) if ns.startswith("org-") and ns[4:].isdigit() else 0
        if org != self.sb.org_of(request):
            return _k8s_status(403, "Forbidden", f'dashboards.dashboard.grafana.app "{uid}" is forbidden')
        dashboard = self.sb.orgs.get(org, {}).get(uid)
        if dashboard is None:
            return _k8s_status(404, "NotFound", f'dashboards.dashboard.grafana.app "{uid}" not found')
        if dashboard.uid in self.sb.forbidden:
            return _k8s_status(403, "Forbidden", f'dashboards.dashboard.grafana.app "{uid}" is forbidden')
        if version.startswith("v2"):
            return web.json_response(dashboard.to_v2(ns) if dashboard.v2 else _v1_resource(dashboard, ns, version))
        if dashboard.v2:
            return _k8s_status(406, "NotAcceptable", "dashboard stored as v2: read it with a v2 version")
        return web.json_response(_v1_resource(dashboard, ns, version))

    async def ds_query(self, request: web.Request) -> web.Response:
        """Grafana's query endpoint: the server holds each answer for the panel's delay."""
        body = await json_body(request)
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
        panels = [self._query_panel(request, q) for q in queries]
        if any(p is not None and p.behaviour == "stuck" for p in panels):
            await _hang(request)
            return web.json_response({"message": "sandbox shutting down"}, status=503)
        await asyncio.sleep(max(self._delay(p, q) for p, q in zip(panels, queries, strict=True)))
        results = {str(q.get("refId", "A")): self._result(p, q, window) for p, q in zip(panels, queries, strict=True)}
        failed = any("error" in r for r in results.values())
        return web.json_response({"results": results}, status=400 if failed else 200)

    def _query_panel(self, request: web.Request, query: dict[str, Any]) -> Panel | None:
        dashboard = self._board(request, str(query.get("dashboardUid", "")))
        return dashboard.panel(str(query.get("panelId", "")), scenes=True) if dashboard else None

    def _delay(self, panel: Panel | None, query: dict[str, Any]) -> float:
        override = query.get("sandboxDelayMs")
        if isinstance(override, int | float) and not isinstance(override, bool) and override >= 0:
            return float(override) / 1000.0
        if panel is None:
            return 0.0
        return self.sb.query_delay if panel.delay is None else panel.delay

    def _result(self, panel: Panel | None, query: dict[str, Any], window: Window) -> dict[str, Any]:
        if panel is None:
            return {"error": "sandbox: unknown dashboardUid/panelId", "status": 400}
        labels = str_dict(query.get("vars"))
        metric = self.sb.metric_history or self.sb.metric_value()
        return panel_result(panel, str(query.get("refId", "A")), labels, window, metric)

    async def rules(self, request: web.Request) -> web.Response:
        try:
            return web.json_response(self.sb.rules.rules_response(request.query))
        except ValueError as exc:
            payload = {"status": "error", "errorType": "bad_data", "error": str(exc), "data": {"groups": []}}
            return web.json_response(payload, status=400)

    async def alerts(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "success", "data": {"alerts": self.sb.rules.alerts()}})


def _v1_resource(dashboard: Dashboard, ns: str, version: str) -> dict[str, Any]:
    meta = {"name": dashboard.uid, "namespace": ns, "resourceVersion": "1", "generation": 1}
    return {
        "apiVersion": f"dashboard.grafana.app/{version}",
        "kind": "Dashboard",
        "metadata": meta,
        "spec": dashboard.to_json()["dashboard"],
    }


def _k8s_status(code: int, reason: str, message: str) -> web.Response:
    """A Kubernetes ``Status`` answer, as the app platform API gives its errors."""
    body = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    return web.json_response(body, status=code)


async def signal_closing(app: web.Application) -> None:
    """``on_shutdown``: release the queries ``_hang`` holds."""
    app[CLOSING].set()


async def _hang(request: web.Request) -> None:
    """Keep a query in flight until the client goes away or the server shuts down."""
    closing = request.app[CLOSING]
    while not closing.is_set():
        transport = request.transport
        if transport is None or transport.is_closing():
            return
        try:
            await asyncio.wait_for(closing.wait(), 0.25)
        except TimeoutError:
            continue


async def json_body(request: web.Request) -> Any:
    """The decoded JSON body; None when it is not JSON (an empty body is None too)."""
    try:
        return json.loads(await request.read() or b"null")
    except (ValueError, UnicodeDecodeError):
        return None


def str_dict(raw: Any) -> dict[str, str]:
    return {str(k): str(v) for k, v in raw.items()} if isinstance(raw, dict) else {}
