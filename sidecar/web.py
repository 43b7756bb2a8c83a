"""HTTP surface: ``/healthz``, ``/readyz``, ``/metrics`` and the webhook route.

* liveness (``/healthz``) is a set of heartbeats: the event loop, the scheduler and the delivery
  workers each report progress; one that stops reporting for longer than its allowance makes
  the probe answer 503 so Kubernetes restarts the pod;
* readiness (``/readyz``) is a set of boolean checks (config loaded, state open, browser up,
  scheduler running) and never depends on Grafana or Flashduty answering.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from sidecar.metrics import Metrics

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Health:
    """Heartbeats (name → last beat, allowance) and readiness checks (name → predicate)."""

    clock: Callable[[], float] = time.monotonic
    beats: dict[str, tuple[Callable[[], float | None], float]] = field(default_factory=dict)
    ready_checks: dict[str, Callable[[], bool]] = field(default_factory=dict)

    def add_heartbeat(self, name: str, last_beat: Callable[[], float | None], allowance: float) -> None:
        """``last_beat`` returns the monotonic time of the last beat, or None when not started."""
        self.beats[name] = (last_beat, allowance)

    def add_ready_check(self, name: str, check: Callable[[], bool]) -> None:
        self.ready_checks[name] = check

    def liveness(self) -> tuple[bool, dict[str, str]]:
        now = self.clock()
        out: dict[str, str] = {}
        ok = True
        for name, (beat, allowance) in self.beats.items():
            last = beat()
            if last is None:
                out[name] = "not started"
                continue
            age = now - last
            if age > allowance:
                ok = False
                out[name] = f"stalled: no heartbeat for {age:.0f}s (allowed {allowance:.0f}s)"
            else:
                out[name] = f"ok ({age:.1f}s ago)"
        return ok, out

    def readiness(self) -> tuple[bool, dict[str, str]]:
        out = {}
        for name, check in self.ready_checks.items():
            try:
                good = bool(check())
            except Exception as e:  # a check must never break the probe
                good = False
                out[name] = f"error: {type(e).__name__}"
                continue
            out[name] = "ok" if good else "not ready"
        return all(v == "ok" for v in out.values()), out


def make_web_app(*, health: Health, metrics: Metrics, webhook: Handler | None, max_body: int) -> web.Application:
    app = web.Application(client_max_size=max_body)

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
    return app
