"""The Grafana-like and Prometheus sandboxes, over HTTP (aiohttp test client, no browser)."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from typing import Any

import pytest
from aiohttp import test_utils, web

from sidecar_sandbox.grafana import DEFAULT_TOKEN, GrafanaSandbox
from sidecar_sandbox.prometheus import PrometheusSandbox, format_value

BEARER = {"Authorization": f"Bearer {DEFAULT_TOKEN}"}
RULES = "/api/prometheus/grafana/api/v1/rules"
Client = test_utils.TestClient[web.Request, web.Application]
MakeClient = Callable[[web.Application], Awaitable[Client]]


@pytest.fixture
async def make_client() -> AsyncIterator[MakeClient]:
    clients: list[Client] = []

    async def make(app: web.Application) -> Client:
        client: Client = test_utils.TestClient(test_utils.TestServer(app))
        await client.start_server()
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()


@pytest.fixture
async def grafana(make_client: MakeClient) -> tuple[GrafanaSandbox, Client]:
    sandbox = GrafanaSandbox(query_delay=0.05)
    return sandbox, await make_client(sandbox.make_app())


def ds_body(panel_id: int | str, uid: str = "sandbox", **extra: Any) -> dict[str, Any]:
    now = int(time.time() * 1000)
    query = {"refId": "A", "panelId": panel_id, "dashboardUid": uid, **extra}
    return {"queries": [query], "from": str(now - 3_600_000), "to": str(now)}


# ----------------------------------------------------------------------------- auth


@pytest.mark.parametrize("path", ["/d-solo/sandbox/sandbox-services?panelId=1", "/d/sandbox?kiosk", "/d/nope"])
async def test_pages_without_auth_redirect_to_login(grafana: tuple[GrafanaSandbox, Client], path: str) -> None:
    _, client = grafana
    resp = await client.get(path, allow_redirects=False)
    assert resp.status == 302
    assert resp.headers["Location"] == "/login"


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic Zm9vOmJhcg=="}])
async def test_api_without_valid_auth_is_401_json(
    grafana: tuple[GrafanaSandbox, Client], headers: dict[str, str]
) -> None:
    _, client = grafana
    for method, path in (("GET", "/api/dashboards/uid/sandbox"), ("GET", RULES), ("POST", "/api/ds/query")):
        resp = await client.request(method, path, headers=headers, json=ds_body(1))
        assert resp.status == 401, path
        assert await resp.json() == {"message": "Unauthorized"}


async def test_login_health_and_sandbox_routes_are_open(grafana: tuple[GrafanaSandbox, Client]) -> None:
    _, client = grafana
    login = await client.get("/login")
    html = await login.text()
    assert login.status == 200
    assert "<title>Grafana</title>" in html and 'class="login-page"' in html
    assert 'name="user"' in html and 'name="password"' in html
    health = await client.get("/api/health")
    assert await health.json() == {"commit": "sandbox", "database": "ok", "version": "11.3.0-sandbox"}
    assert (await client.get("/_sandbox/renders")).status == 200


async def test_following_the_redirect_lands_on_the_login_page(grafana: tuple[GrafanaSandbox, Client]) -> None:
    _, client = grafana
    resp = await client.get("/d-solo/sandbox?panelId=1")
    assert resp.status == 200
    assert resp.url.path == "/login"
    assert 'class="login-page"' in await resp.text()


async def test_basic_auth_and_token_are_both_accepted_when_both_configured(make_client: MakeClient) -> None:
    client = await make_client(GrafanaSandbox(token="tok", basic_auth=("admin", "s3cret")).make_app())
    good_basic = "Basic " + base64.b64encode(b"admin:s3cret").decode()
    bad_basic = "Basic " + base64.b64encode(b"admin:nope").decode()
    assert (await client.get("/api/dashboards/uid/sandbox", headers={"Authorization": good_basic})).status == 200
    assert (await client.get("/api/dashboards/uid/sandbox", headers={"Authorization": "Bearer tok"})).status == 200
    assert (await client.get("/api/dashboards/uid/sandbox", headers={"Authorization": bad_basic})).status == 401


async def test_basic_auth_only(make_client: MakeClient) -> None:
    client = await make_client(GrafanaSandbox(token=None, basic_auth=("admin", "pw")).make_app())
    basic = "Basic " + base64.b64encode(b"admin:pw").decode()
    assert (await client.get("/d/sandbox", headers={"Authorization": basic})).status == 200
    assert (await client.get("/d/sandbox", headers=BEARER, allow_redirects=False)).status == 302


async def test_no_auth_configured_means_anonymous_access(make_client: MakeClient) -> None:
    client = await make_client(GrafanaSandbox(token=None).make_app())
    assert (await client.get("/d-solo/sandbox?panelId=1")).status == 200


# ------------------------------------------------------------------------ dashboards


async def test_dashboard_api(grafana: tuple[GrafanaSandbox, Client]) -> None:
    _, client = grafana
    body = await (await client.get("/api/dashboards/uid/sandbox", headers=BEARER)).json()
    assert body["meta"]["slug"] == "sandbox-services"
    dash = body["dashboard"]
    assert (dash["uid"], dash["title"]) == ("sandbox", "Sandbox services")
    titles = {p["id"]: p["title"] for p in dash["panels"]}
    assert titles == {
        1: "Request rate",
        2: "Error rate",
        3: "Stuck query",
        4: "Empty",
        5: "Broken",
        6: "Checkout errors",
    }
    assert set(dash["panels"][0]["gridPos"]) == {"h", "w", "x", "y"}
    legacy = await (await client.get("/api/dashboards/uid/sandbox-legacy", headers=BEARER)).json()
    assert legacy["meta"]["slug"] == "legacy-dashboard"
    assert [p["title"] for p in legacy["dashboard"]["panels"]] == ["Request rate", "Slow"]
    missing = await client.get("/api/dashboards/uid/nope", headers=BEARER)
    assert missing.status == 404
    assert await missing.json() == {"message": "Dashboard not found"}


async def test_solo_page_carries_config_signals_and_external_image(make_client: MakeClient) -> None:
    sandbox = GrafanaSandbox(external_resource_url="http://127.0.0.2:9/pixel.png?a=1&b=2")
    client = await make_client(sandbox.make_app())
    resp = await client.get(
        "/d-solo/sandbox/sandbox-services?orgId=1&panelId=panel-6&from=now-1h&to=now&timezone=Europe/Paris"
        "&theme=light&var-service=payments&render=1",
        headers=BEARER,
    )
    html = await resp.text()
    assert resp.status == 200
    assert '<img class="sandbox-external" src="http://127.0.0.2:9/pixel.png?a=1&amp;b=2"' in html
    assert 'class="theme-light app-grafana"' in html
    assert '<script src="public/build/app.js"></script>' in html and '<base href="/">' in html
    assert '"Checkout errors"' in html and '"service": "payments"' in html and '"tz": "Europe/Paris"' in html
    assert '"scenes": true' in html
    bundle = await client.get("/public/build/app.js")  # static files need no credentials
    assert bundle.status == 200
    assert "window.__grafanaSceneContext = {}" in await bundle.text()


async def test_page_config_cannot_break_out_of_the_script(grafana: tuple[GrafanaSandbox, Client]) -> None:
    _, client = grafana
    html = await (await client.get("/d/sandbox?var-x=</script><b>x", headers=BEARER)).text()
    assert "</script><b>" not in html
    assert "\\u003c/script\\u003e\\u003cb\\u003ex" in html


async def test_unknown_panel_and_dashboard(grafana: tuple[GrafanaSandbox, Client]) -> None:
    _, client = grafana
    unknown_panel = await client.get("/d-solo/sandbox?panelId=99", headers=BEARER)
    assert unknown_panel.status == 200
    assert '"panels": []' in await unknown_panel.text()
    legacy_key = await client.get("/d-solo/sandbox-legacy?panelId=panel-1", headers=BEARER)
    assert '"panels": []' in await legacy_key.text()  # pre-Scenes Grafana only knows numeric ids
    unknown_dash = await client.get("/d-solo/nope/x?panelId=1", headers=BEARER)
    assert unknown_dash.status == 404
    assert "Dashboard not found" in await unknown_dash.text()


# -------------------------------------------------------------------------- ds/query


async def test_ds_query_returns_frames_after_the_delay(make_client: MakeClient) -> None:
    client = await make_client(GrafanaSandbox(query_delay=0.3).make_app())
    started = time.monotonic()
    resp = await client.post("/api/ds/query", headers=BEARER, json=ds_body(1, vars={"service": "checkout"}))
    elapsed = time.monotonic() - started
    assert resp.status == 200
    assert 0.28 <= elapsed < 2.0
    frame = (await resp.json())["results"]["A"]["frames"][0]
    times, values = frame["data"]["values"]
    assert 60 <= len(times) <= 120 and len(times) == len(values)
    assert times == sorted(times)
    assert frame["schema"]["fields"][1]["config"]["displayNameFromDS"] == "requests{service=checkout}"
    assert max(values) > min(values) > 0


async def test_ds_query_is_deterministic_for_one_window(grafana: tuple[GrafanaSandbox, Client]) -> None:
    _, client = grafana
    body = ds_body(1)
    first = await (await client.post("/api/ds/query", headers=BEARER, json=body)).json()
    second = await (await client.post("/api/ds/query", headers=BEARER, json=body)).json()
    assert first == second


async def test_ds_query_slow_panel_takes_seconds(grafana: tuple[GrafanaSandbox, Client]) -> None:
    _, client = grafana
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(client.post("/api/ds/query", headers=BEARER, json=ds_body(2)), 0.5)


async def test_ds_query_delay_override(grafana: tuple[GrafanaSandbox, Client]) -> None:
    _, client = grafana
    resp = await asyncio.wait_for(client.post("/api/ds/query", headers=BEARER, json=ds_body(2, sandboxDelayMs=10)), 1.0)
    assert resp.status == 200


async def test_ds_query_stuck_panel_never_answers(grafana: tuple[GrafanaSandbox, Client]) -> None:
    _, client = grafana
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(client.post("/api/ds/query", headers=BEARER, json=ds_body(3)), 0.5)


async def test_ds_query_empty_and_error(grafana: tuple[GrafanaSandbox, Client]) -> None:
    _, client = grafana
    empty = await client.post("/api/ds/query", headers=BEARER, json=ds_body(4))
    assert empty.status == 200
    assert (await empty.json())["results"]["A"]["frames"] == []
    broken = await client.post("/api/ds/query", headers=BEARER, json=ds_body(5))
    assert broken.status == 400
    result = (await broken.json())["results"]["A"]
    assert result["status"] == 500 and "connection refused" in result["error"]


async def test_ds_query_bad_requests(grafana: tuple[GrafanaSandbox, Client]) -> None:
    _, client = grafana
    assert (await client.post("/api/ds/query", headers=BEARER, data=b"{not json")).status == 400
    assert (await client.post("/api/ds/query", headers=BEARER, json={"queries": []})).status == 400
    bad_time = {**ds_body(1), "from": "yesterday"}
    assert (await client.post("/api/ds/query", headers=BEARER, json=bad_time)).status == 400
    unknown = await client.post("/api/ds/query", headers=BEARER, json=ds_body(42))
    assert unknown.status == 400
    assert "error" in (await unknown.json())["results"]["A"]


async def test_ds_query_relative_time_and_metric_source(make_client: MakeClient) -> None:
    level = {"value": 0.0}
    sandbox = GrafanaSandbox(query_delay=0, metric_source=lambda: level["value"])
    client = await make_client(sandbox.make_app())
    body = {"queries": [{"refId": "B", "panelId": "panel-6", "dashboardUid": "sandbox"}], "from": "now-1h", "to": "now"}
    quiet = (await (await client.post("/api/ds/query", headers=BEARER, json=body)).json())["results"]["B"]
    level["value"] = 12.0
    spike = (await (await client.post("/api/ds/query", headers=BEARER, json=body)).json())["results"]["B"]
    assert max(quiet["frames"][0]["data"]["values"][1]) < 1
    assert max(spike["frames"][0]["data"]["values"][1]) > 11


async def test_metric_panel_draws_the_prometheus_history(make_client: MakeClient) -> None:
    """Panel 6 draws the sandbox Prometheus's own series: the rise and the fall a rule evaluated."""
    now = [1_000_000.0]
    prom = PrometheusSandbox(value=0.0, clock=lambda: now[0])
    now[0] += 30
    prom.value = 12.0  # rises at 1_000_030
    now[0] += 20
    prom.value = 0.0  # falls at 1_000_050
    assert [prom.value_at(t) for t in (1_000_029, 1_000_030, 1_000_049, 1_000_050)] == [0.0, 12.0, 12.0, 0.0]
    assert prom.evaluate("sandbox_demo_errors", 1_000_060)["result"][0]["value"][1] == "0"  # what rules see now

    sandbox = GrafanaSandbox(query_delay=0, metric_source=lambda: prom.value, metric_history=prom.value_at)
    client = await make_client(sandbox.make_app())
    body = {
        "queries": [{"refId": "A", "panelId": "6", "dashboardUid": "sandbox"}],
        "from": str(1_000_000 * 1000),
        "to": str(1_000_080 * 1000),
    }
    frames = (await (await client.post("/api/ds/query", headers=BEARER, json=body)).json())["results"]["A"]["frames"]
    times, values = frames[0]["data"]["values"]
    drawn = dict(zip(times, values, strict=True))
    assert drawn[1_000_020_000] == 0.0 and drawn[1_000_040_000] == 12.0 and drawn[1_000_070_000] == 0.0
    assert values == [prom.value_at(t / 1000) for t in times]


# ----------------------------------------------------------------------------- rules


async def rules(client: Client, query: str = "") -> dict[str, Any]:
    resp = await client.get(RULES + query, headers=BEARER)
    assert resp.status == 200
    body: dict[str, Any] = await resp.json()
    assert body["status"] == "success"
    return body


def rule_by_uid(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["uid"]: r for g in body["data"]["groups"] for r in g["rules"]}


async def test_rules_inactive_by_default(grafana: tuple[GrafanaSandbox, Client]) -> None:
    _, client = grafana
    body = await rules(client)
    group = body["data"]["groups"][0]
    assert {"name", "file", "folderUid", "interval", "rules"} <= set(group)
    by_uid = rule_by_uid(body)
    assert set(by_uid) == {"sandbox-high-errors", "sandbox-slow"}
    high = by_uid["sandbox-high-errors"]
    assert high["name"] == "SandboxHighErrors" and high["state"] == "inactive" and high["alerts"] == []
    assert high["annotations"]["__dashboardUid__"] == "sandbox" and high["annotations"]["__panelId__"] == "6"
    assert high["labels"]["severity"] == "critical" and high["health"] == "ok" and high["type"] == "alerting"
    assert by_uid["sandbox-slow"]["annotations"]["__panelId__"] == "1"
    assert (await rules(client, "?state=firing"))["data"]["groups"] == []


async def test_rules_switch_firing(grafana: tuple[GrafanaSandbox, Client]) -> None:
    sandbox, client = grafana
    before = datetime.now().astimezone()
    sandbox.set_firing("sandbox-high-errors", True)
    firing = rule_by_uid(await rules(client, "?state=firing"))
    assert list(firing) == ["sandbox-high-errors"]
    rule = firing["sandbox-high-errors"]
    assert rule["state"] == "firing"
    [alert] = rule["alerts"]
    assert alert["state"] == "Alerting"
    assert alert["labels"]["alertname"] == "SandboxHighErrors" and alert["labels"]["service"] == "checkout"
    assert alert["annotations"]["__panelId__"] == "6"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?Z", alert["activeAt"])
    assert datetime.fromisoformat(alert["activeAt"]) >= before.replace(microsecond=0)
    assert rule["activeAt"] == alert["activeAt"]

    sandbox.set_firing("sandbox-high-errors", True)  # still firing: activeAt unchanged
    sandbox.set_firing("sandbox-high-errors", True, {"service": "payments"})
    again = rule_by_uid(await rules(client, "?state=firing"))["sandbox-high-errors"]
    assert again["alerts"][0]["activeAt"] == alert["activeAt"]
    assert sorted(a["labels"]["service"] for a in again["alerts"]) == ["checkout", "payments"]

    resp = await client.post("/_sandbox/rules", json={"uid": "sandbox-high-errors", "firing": False})
    assert (await resp.json())["state"] == "inactive"
    assert (await rules(client, "?state=firing"))["data"]["groups"] == []
    assert rule_by_uid(await rules(client, "?state=inactive"))["sandbox-high-errors"]["alerts"] == []


async def test_rules_switch_over_http_and_filters(grafana: tuple[GrafanaSandbox, Client]) -> None:
    _, client = grafana
    resp = await client.post("/_sandbox/rules", json={"uid": "sandbox-slow", "firing": True, "labels": {"pod": "a"}})
    assert resp.status == 200
    slow = rule_by_uid(await rules(client, "?state=alerting&dashboard_uid=sandbox&panel_id=1"))
    assert list(slow) == ["sandbox-slow"]
    assert slow["sandbox-slow"]["alerts"][0]["labels"]["pod"] == "a"
    assert list(rule_by_uid(await rules(client, "?dashboard_uid=sandbox&panel_id=6"))) == ["sandbox-high-errors"]
    assert (await rules(client, "?dashboard_uid=other"))["data"]["groups"] == []
    assert list(rule_by_uid(await rules(client, "?rule_uid=sandbox-slow"))) == ["sandbox-slow"]
    assert (await client.post("/_sandbox/rules", json={"uid": "nope", "firing": True})).status == 404
    assert (await client.post("/_sandbox/rules", json={"uid": "sandbox-slow"})).status == 400


@pytest.mark.parametrize("query", ["?panel_id=1", "?state=bogus", "?dashboard_uid=sandbox&panel_id=x"])
async def test_rules_bad_params(grafana: tuple[GrafanaSandbox, Client], query: str) -> None:
    _, client = grafana
    resp = await client.get(RULES + query, headers=BEARER)
    assert resp.status == 400
    body = await resp.json()
    assert body["status"] == "error" and body["errorType"] == "bad_data"


def test_set_firing_unknown_rule() -> None:
    with pytest.raises(KeyError):
        GrafanaSandbox().set_firing("nope", True)


# ---------------------------------------------------------------------------- renders


async def test_render_beacons(grafana: tuple[GrafanaSandbox, Client]) -> None:
    _, client = grafana
    record = {"url": "http://x/d-solo/sandbox?panelId=1", "navigation_start": 1000.5, "ready_at": 1400}
    beacon = await client.post("/_sandbox/rendered", data=json.dumps(record))
    assert beacon.status == 204
    [listed] = await (await client.get("/_sandbox/renders")).json()
    assert {k: listed[k] for k in record} == record
    assert (await client.delete("/_sandbox/renders")).status == 204
    assert await (await client.get("/_sandbox/renders")).json() == []


# ------------------------------------------------------------------------- prometheus


@pytest.fixture
async def prometheus(make_client: MakeClient) -> tuple[PrometheusSandbox, Client]:
    sandbox = PrometheusSandbox(value=3.0)
    return sandbox, await make_client(sandbox.make_app())


async def prom_query(client: Client, query: str, *, post: bool = False, **params: str) -> tuple[int, Any]:
    if post:
        resp = await client.post("/api/v1/query", data={"query": query, **params})
    else:
        resp = await client.get("/api/v1/query", params={"query": query, **params})
    return resp.status, await resp.json()


async def test_prometheus_vector_envelope(prometheus: tuple[PrometheusSandbox, Client]) -> None:
    _, client = prometheus
    status, body = await prom_query(client, "sandbox_demo_errors", time="1700000000.5")
    assert status == 200
    assert body == {
        "status": "success",
        "data": {
            "resultType": "vector",
            "result": [
                {
                    "metric": {"__name__": "sandbox_demo_errors", "service": "checkout", "instance": "sandbox"},
                    "value": [1700000000.5, "3"],
                }
            ],
        },
    }


@pytest.mark.parametrize(
    ("query", "matches"),
    [
        ('sandbox_demo_errors{service="checkout"}', True),
        ('sandbox_demo_errors{service="payments"}', False),
        ('sandbox_demo_errors{service=~"check.*", instance!="x"}', True),
        ('{__name__="sandbox_demo_errors"}', True),
        ("sandbox_demo_errors > 1", True),
        ("sandbox_demo_errors > 5", False),
        ("sandbox_demo_errors >= 3", True),
        ('sandbox_demo_errors{service="checkout"} < 3', False),
        ("sandbox_demo_errors <= 3", True),
        ("unknown_metric", False),
    ],
)
async def test_prometheus_selectors_and_filters(
    prometheus: tuple[PrometheusSandbox, Client], query: str, matches: bool
) -> None:
    _, client = prometheus
    for post in (False, True):
        status, body = await prom_query(client, query, post=post)
        assert status == 200, body
        assert len(body["data"]["result"]) == int(matches)


async def test_prometheus_scalar_and_time_default(prometheus: tuple[PrometheusSandbox, Client]) -> None:
    _, client = prometheus
    before = time.time()
    status, body = await prom_query(client, "2.5")
    assert status == 200
    assert body["data"]["resultType"] == "scalar"
    stamp, value = body["data"]["result"]
    assert value == "2.5" and before <= stamp <= time.time()


@pytest.mark.parametrize(
    "query", ["", "sum(sandbox_demo_errors)", "rate(sandbox_demo_errors[5m])", 'x{service="a"', 'x{a=~"("}']
)
async def test_prometheus_bad_data(prometheus: tuple[PrometheusSandbox, Client], query: str) -> None:
    _, client = prometheus
    status, body = await prom_query(client, query)
    assert status == 400
    assert body["status"] == "error" and body["errorType"] == "bad_data" and body["error"]


async def test_prometheus_bad_time(prometheus: tuple[PrometheusSandbox, Client]) -> None:
    _, client = prometheus
    status, body = await prom_query(client, "1", time="yesterday")
    assert status == 400 and body["errorType"] == "bad_data"


async def test_prometheus_toggle_value_and_metrics(prometheus: tuple[PrometheusSandbox, Client]) -> None:
    sandbox, client = prometheus
    resp = await client.post("/_sandbox/metric", json={"value": 12})
    assert await resp.json() == {"value": 12.0}
    assert sandbox.value == 12.0
    assert await (await client.get("/_sandbox/metric")).json() == {"value": 12.0}
    _, body = await prom_query(client, "sandbox_demo_errors > 10")
    assert body["data"]["result"][0]["value"][1] == "12"
    metrics = await client.get("/metrics")
    assert metrics.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    assert 'sandbox_demo_errors{service="checkout"} 12\n' in await metrics.text()
    assert (await client.post("/_sandbox/metric", json={"value": "high"})).status == 400
    assert (await client.post("/_sandbox/metric", json={"value": True})).status == 400


@pytest.mark.parametrize(
    ("value", "text"),
    [(5.0, "5"), (0.5, "0.5"), (1e-7, "0.0000001"), (1e21, "1000000000000000000000"), (-2.25, "-2.25")],
)
def test_prometheus_value_format(value: float, text: str) -> None:
    assert format_value(value) == text
    assert format_value(float("nan")) == "NaN" and format_value(float("inf")) == "+Inf"
