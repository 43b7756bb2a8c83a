"""``POST /webhook/alertmanager``: Alertmanager v4 and Grafana v1 payloads → durable events."""

from __future__ import annotations

import copy
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from sidecar.config import Config
from sidecar.ingest.events import panels_from_url
from sidecar.ingest.payload import PayloadError, parse_payload
from sidecar.ingest.webhook import make_webhook_handler
from sidecar.metrics import Metrics
from sidecar.model import AlertEvent, alert_key
from sidecar.rules.state import RuleState

NOW = 1_700_000_000.0
STARTS = "2023-11-14T22:03:20.123456789Z"  # NOW − 10 min, with Go's nanoseconds
STARTS_TS = NOW - 600 + 0.123456

AM_LABELS = {"alertname": "HighErrorRate", "service": "checkout", "severity": "CRITICAL", "job": "api"}
ALERTMANAGER_V4: dict[str, Any] = {
    "version": "4",
    "groupKey": '{}/{severity=~"critical|warning"}:{alertname="HighErrorRate"}',
    "truncatedAlerts": 0,
    "status": "firing",
    "receiver": "flashduty-sidecar",
    "groupLabels": {"alertname": "HighErrorRate"},
    "commonLabels": {"alertname": "HighErrorRate", "job": "api"},
    "commonAnnotations": {},
    "externalURL": "http://alertmanager:9093",
    "alerts": [
        {
            "status": "firing",
            "labels": AM_LABELS,
            "annotations": {
                "summary": "Checkout is failing",
                "description": "5xx above 5%",
                "grafana_dashboard_uid": "sandbox",
                "grafana_panel_id": "6",
            },
            "startsAt": STARTS,
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://prometheus:9090/graph?g0.expr=...",
            "fingerprint": "c0ffee0000000001",
        },
        {
            "status": "firing",
            "labels": {"alertname": "HighErrorRate", "service": "search", "job": "api"},
            "annotations": {},
            "startsAt": STARTS,
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "",
            "fingerprint": "c0ffee0000000002",
        },
    ],
}

GRAFANA_V1: dict[str, Any] = {
    "receiver": "sidecar",
    "status": "firing",
    "orgId": 1,
    "alerts": [
        {
            "status": "firing",
            "labels": {"alertname": "DiskFull", "grafana_folder": "Infra", "host": "db-1", "severity": "warning"},
            "annotations": {"summary": "Disk on db-1 is 95% full"},
            "startsAt": STARTS,
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://grafana:3000/alerting/grafana/u1/view?orgId=1",
            "fingerprint": "9a8b7c6d5e4f3a2b",
            "silenceURL": "http://grafana:3000/alerting/silence/new?alertmanager=grafana&matcher=alertname%3DDiskFull",
            "dashboardURL": "http://grafana:3000/d/infra-db?from=1699996400000&orgId=1&to=1700000000000",
            "panelURL": "http://grafana:3000/d/infra-db?from=1699996400000&orgId=1&to=1700000000000&viewPanel=12",
            "values": {"B": 95.2, "C": 1},
            "valueString": "[ var='B' labels={host=db-1} value=95.2 ]",
        }
    ],
    "groupLabels": {"alertname": "DiskFull"},
    "commonLabels": {"alertname": "DiskFull"},
    "commonAnnotations": {},
    "externalURL": "http://grafana:3000/",
    "version": "1",
    "groupKey": '{}/{}:{alertname="DiskFull"}',
    "truncatedAlerts": 0,
    "title": "[FIRING:1] DiskFull Infra (db-1 warning)",
    "state": "alerting",
    "message": "**Firing**\n\nValue: B=95.2, C=1",
}


def resolved(payload: dict[str, Any], index: int = 0, ends: str = "2023-11-14T22:12:20Z") -> dict[str, Any]:
    p = copy.deepcopy(payload)
    p["alerts"][index]["status"] = "resolved"
    p["alerts"][index]["endsAt"] = ends
    return p


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


class Harness:
    def __init__(self, url: str, events: list[AlertEvent], clock: Clock, metrics: Metrics) -> None:
        self.url, self.events, self.clock, self.metrics = url, events, clock, metrics

    async def post(self, body: Any, *, token: str | None = None, raw: bytes | None = None) -> tuple[int, Any]:
        headers = {"Content-Type": "application/json"}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        data = raw if raw is not None else json.dumps(body).encode()
        async with (
            aiohttp.ClientSession() as s,
            s.post(self.url + "/webhook/alertmanager", data=data, headers=headers) as r,
        ):
            return r.status, await r.json()

    def outcome(self, name: str) -> float:
        value = self.metrics.registry.get_sample_value("flashduty_sidecar_webhook_requests_total", {"outcome": name})
        return value or 0.0


def make_config(**top: Any) -> Config:
    return Config.model_validate({"flashduty": {"integration_key": "k"}, "grafana": {"timezone": "UTC"}, **top})


@asynccontextmanager
async def harness(
    tmp_path: Path, cfg: Config | None = None, sink: Callable[[AlertEvent], None] | None = None
) -> AsyncIterator[Harness]:
    events: list[AlertEvent] = []
    clock, metrics = Clock(), Metrics()
    state = RuleState.in_dir(tmp_path)
    handler = make_webhook_handler(
        cfg=cfg or make_config(), sink=sink or events.append, state=state, metrics=metrics, clock=clock
    )
    app = web.Application()
    app.router.add_post("/webhook/alertmanager", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield Harness(f"http://127.0.0.1:{runner.addresses[0][1]}", events, clock, metrics)
    finally:
        await runner.cleanup()
        state.close()


async def test_alertmanager_v4_firing_then_resolved(tmp_path: Path) -> None:
    async with harness(tmp_path) as h:
        status, body = await h.post(ALERTMANAGER_V4)
        assert (status, body) == (200, {"status": "ok", "alerts": 2, "events": 2})
        first, second = h.events
        assert first.status == "Critical"  # severity label, any case
        assert second.status == "Warning"  # webhook.default_severity
        assert first.rule == "webhook"
        assert first.labels == {**AM_LABELS, "sidecar_rule": "webhook"}
        assert first.alert_key == alert_key("webhook", AM_LABELS)
        assert (first.title, first.description) == ("Checkout is failing", "5xx above 5%")
        assert second.title == "HighErrorRate"
        assert first.active_at == pytest.approx(STARTS_TS)
        (panel,) = first.panels
        assert (panel.dashboard, panel.panel) == ("sandbox", "6")
        assert panel.time_from == str(int((STARTS_TS - 1800) * 1000)) and panel.time_to == str(int(NOW * 1000))
        assert second.panels == ()

        h.clock.now += 60  # the same snapshot again (group_interval): nothing new
        assert await h.post(ALERTMANAGER_V4) == (200, {"status": "ok", "alerts": 2, "events": 0})

        h.clock.now += 60
        status, body = await h.post(resolved(ALERTMANAGER_V4))
        assert body["events"] == 1
        ok = h.events[-1]
        assert (ok.status, ok.alert_key) == ("Ok", first.alert_key)
        assert ok.resolved_at == NOW - 60  # endsAt
        assert ok.panels[0].time_to == str(int(h.clock.now * 1000))  # resolve + 5m, capped at now
        assert (await h.post(resolved(ALERTMANAGER_V4)))[1]["events"] == 0  # already resolved
        assert h.outcome("ok") == 4


async def test_grafana_v1_panel_from_panel_url(tmp_path: Path) -> None:
    async with harness(tmp_path) as h:
        assert (await h.post(GRAFANA_V1))[0] == 200
        (event,) = h.events
        assert event.status == "Warning" and event.title == "Disk on db-1 is 95% full"
        (panel,) = event.panels
        assert (panel.dashboard, panel.panel) == ("infra-db", "12")
        assert event.labels["sidecar_rule"] == "webhook"


async def test_resend_after_interval_and_new_starts_at_is_a_new_firing(tmp_path: Path) -> None:
    cfg = make_config(delivery={"resend_interval": "5m"})
    async with harness(tmp_path, cfg) as h:
        one = {**ALERTMANAGER_V4, "alerts": ALERTMANAGER_V4["alerts"][:1]}
        await h.post(one)
        h.clock.now += 299
        assert (await h.post(one))[1]["events"] == 0
        h.clock.now += 1
        assert (await h.post(one))[1]["events"] == 1
        assert h.events[-1].status == "Critical" and h.events[-1].panels == ()  # re-send: no recapture
        again = copy.deepcopy(one)
        again["alerts"][0]["startsAt"] = "2023-11-14T22:20:00Z"  # fired anew (resolve never sent to us)
        assert (await h.post(again))[1]["events"] == 1
        assert h.events[-1].panels  # a new firing gets its pictures


async def test_resolved_for_unknown_fingerprint_still_sends_ok(tmp_path: Path) -> None:
    async with harness(tmp_path) as h:
        assert (await h.post(resolved(ALERTMANAGER_V4)))[1]["events"] == 2
        assert [e.status for e in h.events] == ["Ok", "Warning"]


async def test_webhook_panels_added_for_every_alert(tmp_path: Path) -> None:
    cfg = make_config(
        webhook={
            "panels": [{"dashboard": "overview", "panel": 1, "vars": {"svc": "{{ $labels.service }}"}}],
            "panels_from_annotations": False,
        }
    )
    async with harness(tmp_path, cfg) as h:
        await h.post(ALERTMANAGER_V4)
        assert [(p.dashboard, p.vars) for p in h.events[0].panels] == [("overview", (("svc", "checkout"),))]
        assert [(p.dashboard, p.vars) for p in h.events[1].panels] == [("overview", (("svc", "search"),))]


async def test_bearer_token(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = make_config(server={"webhook_token": "t0ken-value"})
    async with harness(tmp_path, cfg) as h:
        assert (await h.post(ALERTMANAGER_V4))[0] == 401
        assert (await h.post(ALERTMANAGER_V4, token="wrong"))[0] == 401
        assert h.events == []
        assert (await h.post(ALERTMANAGER_V4, token="t0ken-value"))[0] == 200
        assert h.outcome("unauthorized") == 2


async def test_body_too_large(tmp_path: Path) -> None:
    cfg = make_config(server={"webhook_max_body": 2048})
    async with harness(tmp_path, cfg) as h:
        big = copy.deepcopy(ALERTMANAGER_V4)
        big["commonAnnotations"] = {"x": "y" * 4000}
        status, body = await h.post(big)
        assert status == 413 and "2048" in body["error"]
        assert h.events == [] and h.outcome("too_large") == 1


MALFORMED = [
    (b"{not json", "body: not valid JSON"),
    (json.dumps([1, 2]).encode(), "body: a JSON array is an Alertmanager API v2 body"),
    (json.dumps("text").encode(), "body: must be a JSON object"),
    (json.dumps({"receiver": "r"}).encode(), 'version: missing, and no "alerts" list'),
    (json.dumps({"version": "3", "alerts": []}).encode(), "version: unsupported webhook version '3'"),
    (json.dumps({"version": "4"}).encode(), "alerts: must be a list"),
    (json.dumps({"version": "4", "alerts": [{"status": "ok", "labels": {}}]}).encode(),
     "alerts[0].status: must be firing or resolved (got 'ok')"),
    (json.dumps({"version": "4", "alerts": [{"status": "firing"}]}).encode(),
     "alerts[0].labels: must be an object of strings"),
    (json.dumps({"version": "1", "alerts": [{"status": "firing", "labels": {"a": 1}}]}).encode(),
     "alerts[0].labels.a: must be a string (got int)"),
    (json.dumps({"version": "4", "alerts": [{"status": "firing", "labels": {}, "startsAt": "yesterday"}]}).encode(),
     "alerts[0].startsAt: must be an RFC 3339 time"),
]  # fmt: skip


@pytest.mark.parametrize(("raw", "message"), MALFORMED)
async def test_malformed_bodies_are_400_naming_the_problem(tmp_path: Path, raw: bytes, message: str) -> None:
    async with harness(tmp_path) as h:
        status, body = await h.post(None, raw=raw)
        assert status == 400
        assert body["error"].startswith(message)
        assert h.events == [] and h.outcome("bad_request") == 1


async def test_sink_failure_is_503_and_the_retry_delivers(tmp_path: Path) -> None:
    delivered: list[AlertEvent] = []
    broken = [True]

    def sink(event: AlertEvent) -> None:
        if broken[0]:
            raise OSError("database or disk is full")
        delivered.append(event)

    async with harness(tmp_path, sink=sink) as h:
        status, body = await h.post(ALERTMANAGER_V4)
        assert status == 503 and "retry" in body["error"]
        assert h.outcome("unavailable") == 1
        broken[0] = False
        assert (await h.post(ALERTMANAGER_V4))[1]["events"] == 2  # nothing was recorded as sent
        assert len(delivered) == 2


def test_missing_fingerprint_is_derived_from_labels() -> None:
    _, (a,) = parse_payload({"version": "4", "alerts": [{"status": "firing", "labels": {"a": "b"}}]})
    _, (b,) = parse_payload({"version": "4", "alerts": [{"status": "firing", "labels": {"a": "b"}}]})
    assert a.fingerprint == b.fingerprint and len(a.fingerprint) == 16
    with pytest.raises(PayloadError, match=r"alerts\[0\]: must be an object"):
        parse_payload({"version": "4", "alerts": ["x"]})


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://g/d/abc/my-dash?orgId=1&viewPanel=4", ("abc", "4")),
        ("http://g/grafana/d/abc?viewPanel=panel-7", ("abc", "panel-7")),
        ("http://g/d-solo/abc/x?panelId=2", ("abc", "2")),
        ("http://g/d/abc", ("abc", None)),
        ("http://g/alerting/list", None),
        ("", None),
    ],
)
def test_panels_from_url(url: str, expected: tuple[str, str | None] | None) -> None:
    got = panels_from_url(url)
    assert [(p.dashboard, p.panel_key) for p in got] == ([expected] if expected else [])


def test_the_alerts_grafana_org_from_its_urls_itself_its_annotation_or_the_payload() -> None:
    def org_of(alert: dict[str, Any], top: Any = None) -> int | None:
        doc: dict[str, Any] = {"version": "1", "alerts": [{"status": "firing", "labels": {"a": "b"}, **alert}]}
        if top is not None:
            doc["orgId"] = top
        _, (parsed,) = parse_payload(doc)
        return parsed.org_id

    assert org_of({"panelURL": "http://g/d/abc?orgId=3&viewPanel=1"}, top=2) == 3
    assert org_of({"dashboardURL": "http://g/grafana/d/abc?orgId=4"}) == 4
    assert org_of({"orgId": 5}, top=2) == 5
    assert org_of({"annotations": {"__orgId__": "6"}}) == 6
    assert org_of({}, top=2) == 2
    assert org_of({}, top="2") == 2
    assert org_of({}) is None
    assert org_of({"orgId": True}, top=0) is None  # junk is ignored, never an error


def test_a_webhook_alert_of_org_2_is_captured_in_org_2_and_webhook_panels_in_the_default(tmp_path: Path) -> None:
    from sidecar.config import parse_config
    from sidecar.ingest.events import build_event
    from sidecar.rules.templates import TemplateEngine

    text = (
        'flashduty: {integration_key: "${KEY}"}\n'
        f"state_dir: {tmp_path}\n"
        "webhook: {panels: [{dashboard: fixed, panel: 1}]}\n"
    )
    cfg = parse_config(text, env={"KEY": "k" * 20})
    doc = json.loads((Path(__file__).parents[1] / "data/grafana/webhook_default_payload.json").read_text())
    doc["orgId"] = 2
    doc["alerts"][0]["panelURL"] = "http://grafana/d/org2-services?orgId=2&viewPanel=1"
    doc["alerts"][0]["annotations"] = {}
    _, (alert,) = parse_payload(doc)
    event = build_event(alert, cfg, now=1e9, status="Critical", panels=True, templates=TemplateEngine())
    assert [(p.dashboard, p.org_id) for p in event.panels] == [("org2-services", 2), ("fixed", None)]
