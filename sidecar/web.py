"""The HTTP surface on ``server.listen``: probes, metrics and the routes that take alerts in.

``/healthz`` and ``/readyz`` answer from the ``Health`` model (``health.py``); ``/metrics`` is
the Prometheus text format of the injected registry; ``POST /webhook/alertmanager`` is served by
the handler that the webhook receiver's resource installs at start (``app.WEBHOOK``), so the
route exists before the state it needs is open. The Alertmanager API (``POST /api/v2/alerts``,
also under ``/webhook/alertmanager/`` for a Grafana "Alertmanager" contact point given the webhook
URL, and ``GET /api/v2/status``) is resolved the same way (``app.ALERTS_API``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from sidecar.health import Health
from sidecar.metrics import Metrics

__all__ = ["Handler", "add_routes"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


Lookup = Callable[[web.Application], Handler]


def _deferred(pick: Callable[[web.Application], Handler]) -> Handler:
    """A route's handler looked up per request: the resource that makes it starts after the routes."""

    async def handler(request: web.Request) -> web.StreamResponse:
        return await pick(request.app)(request)

    return handler


def add_routes(
    app: web.Application,
    *,
    health: Health,
    metrics: Metrics,
    webhook: Lookup | None = None,
    alerts_api: Callable[[web.Application], tuple[Handler, Handler]] | None = None,
) -> None:
    """``webhook``: finds the webhook handler in the app, per request (None: no webhook route);
    ``alerts_api``: finds (POST alerts, GET status) of the Alertmanager API, likewise."""

    async def healthz(_: web.Request) -> web.Response:
        ok, detail = health.liveness()
        return web.json_response({"status": "ok" if ok else "unhealthy", "checks": detail}, status=200 if ok else 503)

    async def readyz(_: web.Request) -> web.Response:
        ok, detail = health.readiness()
        return web.json_response(
            {"status": "ready" if ok else "not ready", "checks": detail}, status=200 if ok else 503
        )

    async def metrics_handler(_: web.Request) -> web.Response:
        body = generate_latest(metrics.registry)
        resp = web.Response(body=body)
        resp.content_type = CONTENT_TYPE_LATEST.split(";")[0]
        resp.charset = "utf-8"
        return resp

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_handler)
    if webhook is not None:
        app.router.add_post("/webhook/alertmanager", _deferred(webhook))
    if alerts_api is not None:
        api = alerts_api
        post_alerts, get_status = _deferred(lambda a: api(a)[0]), _deferred(lambda a: api(a)[1])
        app.router.add_post("/api/v2/alerts", post_alerts)
        app.router.add_post("/webhook/alertmanager/api/v2/alerts", post_alerts)
        app.router.add_get("/api/v2/status", get_status)
