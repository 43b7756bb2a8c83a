"""The HTTP surface on ``server.listen``: probes, metrics and the routes that take alerts in.

``/healthz`` and ``/readyz`` answer from the ``Health`` model (``health.py``); ``/metrics`` is
the Prometheus text format of the injected registry; ``POST /webhook/alertmanager`` is served by
the handler that the webhook receiver's resource installs at start (``app.WEBHOOK``), so the
route exists before the state it needs is open.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from sidecar.health import Health
from sidecar.metrics import Metrics

__all__ = ["Handler", "add_routes"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def add_routes(app: web.Application, *, health: Health, metrics: Metrics, webhook: Handler | None = None) -> None:
    """``webhook``: resolves the webhook handler per request (None: no webhook route)."""

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
        app.router.add_post("/webhook/alertmanager", webhook)
