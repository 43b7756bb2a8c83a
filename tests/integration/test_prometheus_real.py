"""A real Prometheus scrapes a metric the test toggles; RuleScheduler turns it into events.

Prometheus (Debian ``prometheus``) runs on a free loopback port with a temporary TSDB and scrapes
a tiny aiohttp exporter every second. The rule ``demo_value > 5`` runs every second with
``for: 0s``: raising the value must produce a firing event with its panel, lowering it an ``Ok``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from sidecar.config import Config
from sidecar.metrics import Metrics
from sidecar.model import AlertEvent
from sidecar.rules.scheduler import RuleScheduler
from sidecar.rules.sources.prometheus import PrometheusSource
from sidecar.rules.state import RuleState
from tests.support.procs import PROMETHEUS, have, prometheus
from tests.support.wait import wait_event

pytestmark = [
    pytest.mark.prometheus,
    pytest.mark.skipif(not have(PROMETHEUS), reason=f"{PROMETHEUS} not installed"),
]


class Exporter:
    def __init__(self) -> None:
        self.value = 1.0

    async def metrics(self, request: web.Request) -> web.Response:
        body = f'# TYPE demo_value gauge\ndemo_value{{service="checkout"}} {self.value}\n'
        return web.Response(body=body.encode(), content_type="text/plain")


@asynccontextmanager
async def serve(app: web.Application) -> AsyncIterator[str]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


async def test_real_prometheus_fires_and_resolves(tmp_path: Path) -> None:
    started = time.monotonic()
    exporter = Exporter()
    app = web.Application()
    app.router.add_get("/metrics", exporter.metrics)
    async with serve(app) as target, prometheus(tmp_path / "prom", targets=[target]) as prom_url:
        cfg = Config.model_validate(
            {
                "flashduty": {"integration_key": "k"},
                "datasources": [{"name": "prom", "url": prom_url, "timeout": "2s"}],
                "rules": [
                    {
                        "name": "DemoHigh",
                        "source": "prometheus",
                        "expr": "demo_value > 5",
                        "every": "1s",
                        "for": "0s",
                        "severity": "critical",
                        "title": "{{ $labels.service }} at {{ $value }}",
                        "panels": [{"dashboard": "sandbox", "panel": 6, "vars": {"service": "{{ $labels.service }}"}}],
                    }
                ],
            }
        )
        events: list[AlertEvent] = []
        state = RuleState.in_dir(tmp_path / "state")
        async with aiohttp.ClientSession() as session:
            # the scrape has happened once the series is queryable
            source = PrometheusSource(session, cfg.datasources[0], "demo_value")
            deadline = time.monotonic() + 10
            while not await source.fetch(time.time()):
                assert time.monotonic() < deadline, "Prometheus never scraped the exporter"
                await asyncio.sleep(0.2)

            sched = RuleScheduler(cfg, sink=events.append, session=session, state=state, metrics=Metrics())
            await sched.start()
            try:
                await asyncio.sleep(1.5)
                assert events == []  # 1 is not > 5
                exporter.value = 9.0
                firing = await wait_event(events, lambda e: e.status == "Critical", 10)
                assert firing.title == "checkout at 9"
                assert firing.labels["alertname"] == "DemoHigh" and firing.labels["job"] == "demo"
                (panel,) = firing.panels
                assert (panel.dashboard, panel.panel, panel.vars) == ("sandbox", "6", (("service", "checkout"),))

                exporter.value = 0.0
                ok = await wait_event(events, lambda e: e.status == "Ok", 10)
                assert ok.alert_key == firing.alert_key and ok.panels
                assert [e.status for e in events] == ["Critical", "Ok"]
            finally:
                await sched.shutdown()
        state.close()
    assert time.monotonic() - started < 30
