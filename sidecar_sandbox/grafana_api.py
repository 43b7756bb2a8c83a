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

from sidecar_sandbox.grafana_model import Panel, panel_result, parse_time

if TYPE_CHECKING:
    from sidecar_sandbox.grafana import GrafanaSandbox

__all__ = ["CLOSING", "RULES_PREFIX", "api_routes", "json_body", "signal_closing", "str_dict"]

RULES_PREFIX = "/api/prometheus/grafana/api/v1"
CLOSING = web.AppKey("grafana_sandbox_closing", asyncio.Event)
Window = tuple[int, int]


def api_routes(sandbox: GrafanaSandbox) -> list[web.RouteDef]:
    api = _Api(sandbox)
    return [
        web.get("/api/dashboards/uid/{uid}", api.dashboard),
        web.post("/api/ds/query", api.ds_query),
        web.get(RULES_PREFIX + "/rules", api.rules),
        web.get(RULES_PREFIX + "/alerts", api.alerts),
    ]


class _Api:
    def __init__(self, sandbox: GrafanaSandbox) -> None:
        self.sb = sandbox

    async def dashboard(self, request: web.Request) -> web.Response:
        dashboard = self.sb.dashboards.get(request.match_info["uid"])
        if dashboard is None:
            return web.json_response({"message": "Dashboard not found"}, status=404)
        return web.json_response(dashboard.to_json())

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
        panels = [self._query_panel(q) for q in queries]
        if any(p is not None and p.behaviour == "stuck" for p in panels):
            await _hang(request)
            return web.json_response({"message": "sandbox shutting down"}, status=503)
        await asyncio.sleep(max(self._delay(p, q) for p, q in zip(panels, queries, strict=True)))
        results = {str(q.get("refId", "A")): self._result(p, q, window) for p, q in zip(panels, queries, strict=True)}
        failed = any("error" in r for r in results.values())
        return web.json_response({"results": results}, status=400 if failed else 200)

    def _query_panel(self, query: dict[str, Any]) -> Panel | None:
        dashboard = self.sb.dashboards.get(str(query.get("dashboardUid", "")))
        return dashboard.panel(str(query.get("panelId", ""))) if dashboard else None

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
