"""Liveness is heartbeats and live checks, readiness is checks; /metrics speaks the Prometheus
text format and its ``ready`` gauge is the readiness itself."""

from __future__ import annotations

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from sidecar.health import Health
from sidecar.metrics import Metrics
from sidecar.web import add_routes


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_probes_follow_heartbeats_and_checks() -> None:
    clock = FakeClock()
    health = Health(clock=clock)
    beats = {"scheduler": 1000.0}
    health.add_heartbeat("scheduler", lambda: beats["scheduler"], 30.0)
    health.add_heartbeat("workers", lambda: None, 30.0)  # not started yet: not a failure
    state_open = {"value": False}
    health.add_ready_check("state", lambda: state_open["value"])
    browser = {"problem": None}
    health.add_live_check("browser", lambda: browser["problem"])
    metrics = Metrics()
    metrics.up.set_function(health.ready_value)
    metrics.pushes.labels("ok").inc(3)
    app = web.Application()
    add_routes(app, health=health, metrics=metrics)
    async with TestClient(TestServer(app)) as client:
        r = await client.get("/healthz")
        assert r.status == 200
        r = await client.get("/readyz")
        assert r.status == 503
        assert (await r.json())["checks"] == {"state": "not ready"}
        assert "flashduty_sidecar_ready 0.0" in await (await client.get("/metrics")).text()
        state_open["value"] = True
        assert (await client.get("/readyz")).status == 200
        assert "flashduty_sidecar_ready 1.0" in await (await client.get("/metrics")).text()

        browser["problem"] = "the browser could not be launched for 130s (allowed 120s)"  # type: ignore[assignment]
        r = await client.get("/healthz")
        assert r.status == 503 and (await r.json())["checks"]["browser"].startswith("the browser could not")
        assert (await client.get("/readyz")).status == 200  # never the browser
        browser["problem"] = None

        clock.now += 31  # the scheduler stopped beating
        r = await client.get("/healthz")
        assert r.status == 503
        body = await r.json()
        assert body["checks"]["scheduler"].startswith("stalled: no heartbeat for 31s")
        assert body["checks"]["workers"] == "not started"

        r = await client.get("/metrics")
        assert r.status == 200 and r.content_type == "text/plain"
        assert 'flashduty_sidecar_pushes_total{outcome="ok"} 3.0' in await r.text()
        assert (await client.post("/webhook/alertmanager")).status in (404, 405)


async def test_a_failing_readiness_check_is_not_ready() -> None:
    health = Health()

    def boom() -> bool:
        raise RuntimeError("state closed")

    health.add_ready_check("state", boom)
    ok, detail = health.readiness()
    assert not ok and detail == {"state": "error: RuntimeError"}
