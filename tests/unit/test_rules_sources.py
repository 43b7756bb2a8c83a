"""Rule sources: Prometheus instant queries (strict envelopes), Grafana rules mirror, schedules.

Fakes are real loopback HTTP servers: canned answers for the envelope edge cases, and the
project's Prometheus and Grafana sandboxes for the happy paths.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from sidecar.config import Config, DatasourceConfig
from sidecar.model import alert_key
from sidecar.rules.engine import RuleEvaluator, Sample, SourceError
from sidecar.rules.sources.grafana import GrafanaRulesSource, parse_rules_response
from sidecar.rules.sources.prometheus import PrometheusSource, parse_query_response
from sidecar.rules.sources.schedule import ScheduleEvaluator
from sidecar.rules.templates import TemplateEngine
from sidecar_sandbox.grafana import DEFAULT_TOKEN, GrafanaSandbox
from sidecar_sandbox.prometheus import PrometheusSandbox

T0 = 1_700_000_000.0
SEEN = web.AppKey("seen", list)


@asynccontextmanager
async def serve(app: web.Application) -> AsyncIterator[str]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def canned(status: int, body: bytes | str | dict[str, Any], content_type: str = "application/json") -> web.Application:
    """An app answering every query with one fixed response, recording the requests it saw."""
    app = web.Application()
    seen: list[dict[str, Any]] = []
    app[SEEN] = seen

    async def handler(request: web.Request) -> web.Response:
        seen.append({"method": request.method, "form": dict(await request.post()), "headers": dict(request.headers)})
        raw = json.dumps(body).encode() if isinstance(body, dict) else body
        return web.Response(status=status, body=raw, content_type=content_type)

    app.router.add_route("*", "/api/v1/query", handler)
    return app


def ds(url: str, **extra: Any) -> DatasourceConfig:
    return DatasourceConfig.model_validate({"name": "prom", "url": url, **extra})


def vector(*items: tuple[dict[str, str], str]) -> dict[str, Any]:
    result = [{"metric": m, "value": [T0, v]} for m, v in items]
    return {"status": "success", "data": {"resultType": "vector", "result": result}}


# ---------------------------------------------------------------------------- prometheus


async def test_vector_values_and_request_shape() -> None:
    app = canned(200, vector(({"__name__": "up", "job": "a"}, "1"), ({"job": "b"}, "NaN"), ({"job": "c"}, "+Inf")))
    async with serve(app) as url, aiohttp.ClientSession() as session:
        samples = await PrometheusSource(session, ds(url), "up == 1").fetch(T0)
    assert [s.labels["job"] for s in samples] == ["a", "b", "c"]
    assert samples[0].value == 1.0 and samples[1].value != samples[1].value and samples[2].value == float("inf")
    (req,) = app[SEEN]
    assert req["method"] == "POST"
    assert req["form"] == {"query": "up == 1", "time": f"{T0:.3f}", "timeout": "10s"}


async def test_scalar_is_one_sample_without_labels() -> None:
    body = {"status": "success", "data": {"resultType": "scalar", "result": [T0, "42"]}}
    assert parse_query_response(200, "application/json", json.dumps(body).encode()) == [Sample({}, 42.0)]


ERROR_CASES = [
    (422, {"status": "error", "errorType": "execution", "error": "many-to-many matching"}, "execution: many-to-many"),
    (400, {"status": "error", "errorType": "bad_data", "error": "parse error"}, "HTTP 400: bad_data: parse error"),
    (503, {"status": "error", "errorType": "timeout", "error": "query timed out"}, "HTTP 503: timeout"),
    (502, "<html>Bad Gateway</html>", "HTTP 502: response is not JSON (text/html)"),
    (200, {"status": "success", "data": {"resultType": "matrix", "result": []}}, "returned a matrix result"),
    (200, {"status": "success", "data": {"resultType": "string", "result": [T0, "x"]}}, "returned a string result"),
    (200, {"status": "weird"}, "unexpected status 'weird'"),
    (200, {"data": {}}, "not a Prometheus API response"),
    (200, {"status": "success"}, "data is missing"),
    (200, vector(({"a": "b"}, "lots")), "result[0].value: not a number: 'lots'"),
    (
        200,
        {"status": "success", "data": {"resultType": "vector", "result": [{"metric": {}, "histogram": [T0, {}]}]}},
        "native histogram",
    ),
]


@pytest.mark.parametrize(("status", "body", "message"), ERROR_CASES)
async def test_error_envelopes(status: int, body: Any, message: str) -> None:
    content_type = "text/html" if isinstance(body, str) else "application/json"
    async with serve(canned(status, body, content_type)) as url, aiohttp.ClientSession() as session:
        with pytest.raises(SourceError) as err:
            await PrometheusSource(session, ds(url), "x").fetch(T0)
    assert message in str(err.value)
    assert "datasource 'prom'" in str(err.value)


async def test_connection_refused_and_timeout_name_the_datasource_not_secrets() -> None:
    release = asyncio.Event()

    async def slow(request: web.Request) -> web.Response:
        await release.wait()
        return web.Response()

    app = web.Application()
    app.router.add_post("/api/v1/query", slow)
    async with serve(app) as url, aiohttp.ClientSession() as session:
        source = PrometheusSource(session, ds(url, timeout="200ms", bearer_token="s3cret-token"), "x")
        with pytest.raises(SourceError, match=r"datasource 'prom': query timed out after 200ms"):
            await source.fetch(T0)
        release.set()
    async with aiohttp.ClientSession() as session:
        source = PrometheusSource(session, ds(url, bearer_token="s3cret-token"), "x")  # server gone now
        with pytest.raises(SourceError) as err:
            await source.fetch(T0)
    assert "request failed" in str(err.value) and "s3cret" not in str(err.value)


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({"bearer_token": "tok-123"}, "Bearer tok-123"),
        ({"basic_auth": {"username": "u", "password": "p"}}, "Basic " + base64.b64encode(b"u:p").decode()),
        ({}, None),
    ],
)
async def test_auth_headers(extra: dict[str, Any], expected: str | None) -> None:
    app = canned(200, vector())
    async with serve(app) as url, aiohttp.ClientSession() as session:
        assert await PrometheusSource(session, ds(url, **extra), "x").fetch(T0) == []
    assert app[SEEN][0]["headers"].get("Authorization") == expected


async def test_against_the_prometheus_sandbox() -> None:
    sandbox = PrometheusSandbox(value=3.0)
    async with serve(sandbox.make_app()) as url, aiohttp.ClientSession() as session:
        source = PrometheusSource(session, ds(url), 'sandbox_demo_errors{service="checkout"} > 1')
        (s,) = await source.fetch(T0)
        assert (s.labels["service"], s.value) == ("checkout", 3.0)
        sandbox.value = 0.5
        assert await source.fetch(T0 + 1) == []
        with pytest.raises(SourceError, match="bad_data"):
            await PrometheusSource(session, ds(url), "rate(x[5m]").fetch(T0)


# ---------------------------------------------------------------------------- grafana


def grafana_config(url: str, **rule: Any) -> Config:
    return Config.model_validate(
        {
            "flashduty": {"integration_key": "k"},
            "grafana": {"url": url, "token": DEFAULT_TOKEN},
            "rules": [{"name": "grafana-managed", "source": "grafana", "severity": "Info", **rule}],
        }
    )


async def test_grafana_sandbox_firing_alert_becomes_event_with_its_panel() -> None:
    sandbox = GrafanaSandbox(query_delay=0.0)
    sandbox.set_firing("sandbox-high-errors", True)
    async with serve(sandbox.make_app()) as url, aiohttp.ClientSession() as session:
        cfg = grafana_config(url)
        source = GrafanaRulesSource(session, cfg.grafana)
        ev = RuleEvaluator(cfg.rules[0], cfg, templates=TemplateEngine())
        samples = await source.fetch(T0)
        (event,) = ev.evaluate(samples, T0)
        sandbox.set_firing("sandbox-high-errors", False)
        (ok,) = ev.evaluate(await source.fetch(T0 + 30), T0 + 30)
    assert event.status == "Critical"  # from the severity label, not the rule's Info
    assert event.title == "Checkout errors are above 1/s"  # summary annotation
    assert event.labels["alertname"] == "SandboxHighErrors"
    assert event.labels["grafana_rule_uid"] == "sandbox-high-errors"
    assert event.labels["sidecar_rule"] == "grafana-managed"
    instance = {k: v for k, v in event.labels.items() if k != "sidecar_rule"}
    assert event.alert_key == alert_key("grafana-managed", instance)
    (panel,) = event.panels
    assert (panel.dashboard, panel.panel) == ("sandbox", "6")
    assert event.active_at is not None and abs(event.active_at - samples[0].active_at) < 1e-6  # type: ignore[operator]
    assert ok.status == "Ok" and ok.alert_key == event.alert_key


async def test_grafana_wrong_token_is_a_source_error() -> None:
    sandbox = GrafanaSandbox(query_delay=0.0)
    async with serve(sandbox.make_app()) as url, aiohttp.ClientSession() as session:
        cfg = Config.model_validate(
            {"flashduty": {"integration_key": "k"}, "grafana": {"url": url, "token": "wrong-token-value"}}
        )
        with pytest.raises(SourceError, match="HTTP 401") as err:
            await GrafanaRulesSource(session, cfg.grafana).fetch(T0)
    assert "wrong-token-value" not in str(err.value)


def test_grafana_rules_parsing() -> None:
    doc = {
        "status": "success",
        "data": {
            "groups": [
                {
                    "name": "g",
                    "rules": [
                        {
                            "name": "DiskFull",
                            "uid": "u1",
                            "type": "alerting",
                            "annotations": {"__dashboardUid__": "d1", "__panelId__": "3", "summary": "disk"},
                            "alerts": [
                                {
                                    "labels": {"host": "a"},
                                    "annotations": {"summary": "disk on a"},
                                    "state": "Alerting",
                                    "activeAt": "2023-11-14T22:13:20.123456789Z",
                                    "value": "B0: 9.5e+01, C0: 1e+00",
                                },
                                {"labels": {"host": "b"}, "state": "Normal", "activeAt": "2023-11-14T22:13:20Z"},
                                {"labels": {"host": "c"}, "state": "Alerting (NoData)", "value": ""},
                            ],
                        },
                        {"name": "rec", "type": "recording", "alerts": [{"labels": {}, "state": "Alerting"}]},
                    ],
                }
            ],
            "groupNextToken": "next",
        },
    }
    samples, token = parse_rules_response(doc)
    assert token == "next"
    a, c = samples
    assert a.labels == {"host": "a", "alertname": "DiskFull", "grafana_rule_uid": "u1"}
    assert a.value == 95.0 and a.active_at == pytest.approx(1_700_000_000.123456)
    assert a.annotations["summary"] == "disk on a" and a.annotations["__panelId__"] == "3"
    assert c.active_at is None and c.value != c.value  # NaN
    with pytest.raises(SourceError, match=r"data\.groups"):
        parse_rules_response({"status": "success"})


# ---------------------------------------------------------------------------- schedule


def schedule_config(**rule: Any) -> Config:
    return Config.model_validate(
        {
            "flashduty": {"integration_key": "k"},
            "rules": [
                {
                    "name": "daily",
                    "source": "schedule",
                    "cron": "0 9 * * *",
                    "title": "Daily {{ labels.team }}",
                    "labels": {"team": "web"},
                    "panels": [{"dashboard": "abc", "range": "24h"}],
                    **rule,
                }
            ],
        }
    )


def test_schedule_opens_a_new_report_and_resolves_the_previous() -> None:
    cfg = schedule_config()
    ev = ScheduleEvaluator(cfg.rules[0], cfg, templates=TemplateEngine())
    (first,) = ev.evaluate([], T0)
    assert first.status == "Info" and first.title == "Daily web"
    assert first.labels == {"team": "web", "run": "2023-11-14T22:13:20Z", "sidecar_rule": "daily"}
    assert first.alert_key == alert_key("daily", {"team": "web", "run": "2023-11-14T22:13:20Z"})
    (p,) = first.panels
    assert (p.time_from, p.time_to) == (str(int((T0 - 86400) * 1000)), str(int(T0 * 1000)))
    ok, second = ev.evaluate([], T0 + 86400)
    assert (ok.status, ok.alert_key, ok.panels, ok.resolved_at) == ("Ok", first.alert_key, (), T0 + 86400)
    assert second.status == "Info" and second.alert_key != first.alert_key
    assert ev.firing_count == 1  # only the latest report is open


def test_schedule_severity_when_set_and_unsent_ok_retried() -> None:
    cfg = schedule_config(severity="warning")
    ev = ScheduleEvaluator(cfg.rules[0], cfg, templates=TemplateEngine())
    (first,) = ev.evaluate([], T0)
    assert first.status == "Warning"
    ok, second = ev.evaluate([], T0 + 60)
    ev.unsend(ok)  # the outbox refused the Ok
    events = ev.evaluate([], T0 + 120)
    assert [(e.alert_key, e.status) for e in events[:2]] == [(first.alert_key, "Ok"), (second.alert_key, "Ok")]
    assert events[2].status == "Warning"
    assert [(e.alert_key, e.status) for e in ev.evaluate([], T0 + 180)][:1] == [(events[2].alert_key, "Ok")]
