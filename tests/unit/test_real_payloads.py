"""Every real payload in tests/data/ (see its README for where each comes from) gives the expected alert.

Webhook bodies go to ``POST /webhook/alertmanager`` and Alertmanager API bodies to
``POST /api/v2/alerts``, both served over loopback HTTP by the real handlers; the events are what
the handlers hand to the sink (the outbox in the daemon).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from sidecar.config import Config
from sidecar.ingest.am_api import make_alerts_api_handlers
from sidecar.ingest.am_receiver import AlertsApiReceiver
from sidecar.ingest.webhook import make_webhook_handler
from sidecar.metrics import Metrics
from sidecar.model import AlertEvent, alert_key
from sidecar.rules.state import RuleState
from sidecar.rules.templates import TemplateEngine

DATA = Path(__file__).resolve().parents[1] / "data"


def load(name: str) -> bytes:
    return (DATA / name).read_bytes()


def ts(rfc3339: str) -> float:
    return datetime.fromisoformat(rfc3339).timestamp()


class Receivers:
    """The webhook and the Alertmanager API on one loopback app, with a settable clock."""

    def __init__(self, tmp: Path) -> None:
        self.events: list[AlertEvent] = []
        self.now = 1_700_000_000.0
        self.cfg = Config.model_validate({"flashduty": {"integration_key": "k"}})
        self.state = RuleState.in_dir(tmp)
        metrics = Metrics()
        self.receiver = AlertsApiReceiver(
            cfg=lambda: self.cfg, sink=self.events.append, state=self.state, templates=TemplateEngine()
        )
        post, status = make_alerts_api_handlers(
            cfg=lambda: self.cfg, receiver=self.receiver, metrics=metrics, clock=lambda: self.now
        )
        self.app = web.Application()
        self.app.router.add_post(
            "/webhook/alertmanager",
            make_webhook_handler(cfg=self.cfg, sink=self.events.append, state=self.state, metrics=metrics),
        )
        self.app.router.add_post("/api/v2/alerts", post)
        self.app.router.add_get("/api/v2/status", status)
        self.url = ""
        self.http: aiohttp.ClientSession

    async def post(self, path: str, body: bytes) -> tuple[int, str]:
        headers = {"Content-Type": "application/json"}
        async with self.http.post(self.url + path, data=body, headers=headers) as r:
            return r.status, await r.text()


@pytest.fixture
async def rx(tmp_path: Path) -> AsyncIterator[Receivers]:
    r = Receivers(tmp_path)
    runner = web.AppRunner(r.app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    r.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    async with aiohttp.ClientSession() as http:
        r.http = http
        yield r
    await runner.cleanup()
    r.state.close()


def instance(event: AlertEvent) -> dict[str, str]:
    return {k: v for k, v in event.labels.items() if k != "sidecar_rule"}


# ------------------------------------------------------------------------ webhook bodies


async def test_grafana_default_payload_is_an_alert(rx: Receivers) -> None:
    status, text = await rx.post("/webhook/alertmanager", load("grafana/webhook_default_payload.json"))
    assert status == 200, text
    (event,) = rx.events
    assert event.rule == "webhook" and event.status == "Warning"  # no severity label: the default
    assert event.title == "alert1"  # no summary annotation: the alertname
    assert instance(event) == {"alertname": "alert1", "lbl1": "val1"}
    assert event.alert_key == alert_key("webhook", {"alertname": "alert1", "lbl1": "val1"})


async def test_alertmanager_webhook_firing_then_resolved(rx: Receivers) -> None:
    assert (await rx.post("/webhook/alertmanager", load("alertmanager/webhook_v4_firing.json")))[0] == 200
    assert (await rx.post("/webhook/alertmanager", load("alertmanager/webhook_v4_resolved.json")))[0] == 200
    firing, ok = rx.events
    assert firing.status == "Critical" and firing.title == "Checkout errors above 1/s"
    assert instance(firing) == {"alertname": "CheckoutErrors", "service": "checkout", "severity": "critical"}
    (panel,) = firing.panels
    assert (panel.dashboard, panel.panel) == ("sandbox", None)  # grafana_dashboard_uid alone: the dashboard
    assert ok.status == "Ok" and ok.alert_key == firing.alert_key


@pytest.mark.parametrize(
    ("name", "says"),
    [
        ("grafana/webhook_custom_vars.json", 'version: missing, and no "alerts" list'),
        ("grafana/webhook_custom_dingding.json", "custom payload template"),
        ("grafana/webhook_custom_kafka.json", "type Alertmanager"),
        ("grafana/webhook_custom_alertmanager_like.json", "/api/v2/alerts"),
        ("grafana/alertmanager_contact_point.json", "contact point of type Alertmanager"),
    ],
)
async def test_bodies_that_are_not_webhooks_name_the_integration_to_use(rx: Receivers, name: str, says: str) -> None:
    status, text = await rx.post("/webhook/alertmanager", load(name))
    assert status == 400
    assert says in json.loads(text)["error"]
    assert rx.events == []


async def test_a_custom_payload_that_keeps_the_alerts_is_accepted(rx: Receivers) -> None:
    doc: dict[str, Any] = json.loads(load("grafana/webhook_default_payload.json"))
    del doc["version"]  # a custom template that keeps the default payload's fields but not version
    status, text = await rx.post("/webhook/alertmanager", json.dumps(doc).encode())
    assert status == 200, text
    (event,) = rx.events
    assert instance(event) == {"alertname": "alert1", "lbl1": "val1"}


# ------------------------------------------------------------------------ Alertmanager API bodies


async def test_prometheus_notifier_firing_then_resolved(rx: Receivers) -> None:
    firing_body = load("prometheus/notifier_firing.json")
    (alert,) = json.loads(firing_body)
    rx.now = ts(alert["startsAt"]) + 1  # Prometheus posts while the alert is active
    assert await rx.post("/api/v2/alerts", firing_body) == (200, "")
    (firing,) = rx.events
    assert firing.rule == "alertmanager" and firing.status == "Critical"
    assert firing.title == "Checkout errors above 1/s"
    assert instance(firing) == {"alertname": "CheckoutErrors", "service": "checkout", "severity": "critical"}
    assert firing.alert_key == alert_key("alertmanager", instance(firing))
    (panel,) = firing.panels
    assert (panel.dashboard, panel.panel) == ("sandbox", "6")
    assert firing.active_at == ts(alert["startsAt"])

    assert await rx.post("/api/v2/alerts", firing_body) == (200, "")  # the next evaluation: nothing new
    assert len(rx.events) == 1

    resolved_body = load("prometheus/notifier_resolved.json")
    (resolved,) = json.loads(resolved_body)
    rx.now = ts(resolved["endsAt"]) + 1
    assert await rx.post("/api/v2/alerts", resolved_body) == (200, "")
    ok = rx.events[-1]
    assert ok.status == "Ok" and ok.alert_key == firing.alert_key
    assert ok.resolved_at == ts(resolved["endsAt"])


async def test_grafana_alertmanager_contact_point(rx: Receivers) -> None:
    body = load("grafana/alertmanager_contact_point.json")
    assert await rx.post("/api/v2/alerts", body) == (200, "")
    (event,) = rx.events
    assert event.rule == "alertmanager" and event.status == "Warning" and event.title == "alert1"
    # Grafana's internal label is not sent; the rule uid is kept as the mirror names it
    assert instance(event) == {"alertname": "alert1", "lbl1": "val1", "grafana_rule_uid": "rule uid"}
    # zero endsAt: resolved webhook.resolve_timeout (5 m) after the last POST, by the timer
    assert rx.receiver.expire(rx.now + 299) == 0
    assert rx.receiver.expire(rx.now + 300) == 1
    assert rx.events[-1].status == "Ok" and rx.events[-1].alert_key == event.alert_key


async def test_webhook_bodies_on_the_alertmanager_api_are_refused_as_alertmanager_would(rx: Receivers) -> None:
    status, text = await rx.post("/api/v2/alerts", load("alertmanager/webhook_v4_firing.json"))
    assert status == 400
    assert json.loads(text)["message"].startswith('parsing alerts body from "" failed, because ')
