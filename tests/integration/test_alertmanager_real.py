"""A real Alertmanager posts to our webhook handler; alerts become events with their panels.

Alertmanager (Debian ``prometheus-alertmanager``) runs without clustering on a free loopback
port, routes everything with ``group_wait``/``group_interval`` of 1s to a webhook receiver (bearer
token, ``send_resolved: true``) pointing at ``make_webhook_handler`` served on loopback.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from sidecar.config import Config
from sidecar.ingest.webhook import make_webhook_handler
from sidecar.metrics import Metrics
from sidecar.model import AlertEvent, alert_key
from sidecar.rules.state import RuleState
from tests.support.procs import ALERTMANAGER, alertmanager, have
from tests.support.wait import wait_event

pytestmark = [
    pytest.mark.alertmanager,
    pytest.mark.skipif(not have(ALERTMANAGER), reason=f"{ALERTMANAGER} not installed"),
]

TOKEN = "test-webhook-token"
LABELS = {"alertname": "CheckoutErrors", "service": "checkout", "severity": "critical"}


@asynccontextmanager
async def serve(app: web.Application) -> AsyncIterator[int]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield int(runner.addresses[0][1])
    finally:
        await runner.cleanup()


def am_config(port: int) -> str:
    return f"""
route:
  receiver: sidecar
  group_by: [alertname]
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: sidecar
    webhook_configs:
      - url: http://127.0.0.1:{port}/webhook/alertmanager
        send_resolved: true
        http_config:
          authorization:
            credentials: {TOKEN}
"""


def rfc3339(t: datetime) -> str:
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z")


async def post_alert(session: aiohttp.ClientSession, am_url: str, alert: dict[str, Any]) -> None:
    async with session.post(am_url + "/api/v2/alerts", json=[alert]) as r:
        assert r.status == 200, await r.text()


async def test_real_alertmanager_firing_then_resolved(tmp_path: Path) -> None:
    started = time.monotonic()
    events: list[AlertEvent] = []
    metrics = Metrics()
    state = RuleState.in_dir(tmp_path / "state")
    cfg = Config.model_validate({"flashduty": {"integration_key": "k"}, "server": {"webhook_token": TOKEN}})
    app = web.Application()
    app.router.add_post(
        "/webhook/alertmanager", make_webhook_handler(cfg=cfg, sink=events.append, state=state, metrics=metrics)
    )
    async with serve(app) as port, alertmanager(tmp_path / "am", config_yaml=am_config(port)) as am_url:
        now = datetime.now(UTC)
        alert = {
            "labels": LABELS,
            "annotations": {
                "summary": "Checkout errors above 1/s",
                "grafana_dashboard_uid": "sandbox",
                "grafana_panel_id": "6",
            },
            "startsAt": rfc3339(now - timedelta(seconds=5)),
            "generatorURL": "http://prometheus.example/graph",
        }
        async with aiohttp.ClientSession() as session:
            await post_alert(session, am_url, alert)
            firing = await wait_event(events, lambda e: e.status == "Critical", 15)
            assert firing.title == "Checkout errors above 1/s"
            assert firing.alert_key == alert_key("webhook", LABELS)
            assert firing.labels == {**LABELS, "sidecar_rule": "webhook"}
            (panel,) = firing.panels
            assert (panel.dashboard, panel.panel) == ("sandbox", "6")

            await post_alert(session, am_url, {**alert, "endsAt": rfc3339(datetime.now(UTC) - timedelta(seconds=1))})
            ok = await wait_event(events, lambda e: e.status == "Ok", 15)
            assert ok.alert_key == firing.alert_key and ok.panels
        assert [e.status for e in events] == ["Critical", "Ok"]  # no duplicates from repeated snapshots
        assert metrics.registry.get_sample_value("flashduty_sidecar_webhook_requests_total", {"outcome": "ok"})
        assert not metrics.registry.get_sample_value(
            "flashduty_sidecar_webhook_requests_total", {"outcome": "unauthorized"}
        )
    state.close()
    assert time.monotonic() - started < 30
