"""Grafana-managed rules mirrored from Grafana 10.4, 11.x and 12.x, and Grafana's own rules-API data.

The sandbox Grafana answers its rules API as each version's ``api_prometheus.go`` does
(``sidecar_sandbox/grafana_rules_api.py``); every request the source makes is recorded. Grafana's
own answers and value texts (``tests/data/grafana``, ``Test_FormatValues``) drive the parser tests.
"""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.typedefs import Handler

from sidecar.config import Config
from sidecar.model import AlertEvent
from sidecar.rules.engine import RuleEvaluator
from sidecar.rules.sources.grafana import GrafanaRulesSource, instance_kind, parse_rules_response
from sidecar.rules.sources.grafana_values import parse_value
from sidecar.rules.templates import TemplateEngine
from sidecar_sandbox.grafana import DEFAULT_TOKEN, GrafanaSandbox
from sidecar_sandbox.grafana_rules import Rule

DATA = Path(__file__).resolve().parents[1] / "data" / "grafana"
T0 = 1_700_000_000.0
VERSIONS = ["10.4", "11.6", "12.1"]
HIGH = "sandbox-high-errors"


class Grafana:
    def __init__(self, version: str) -> None:
        self.sandbox = GrafanaSandbox(query_delay=0.0)
        self.sandbox.rules.version = version
        self.requests: list[list[tuple[str, str]]] = []
        self.statuses: list[int] = []
        self.url = ""

    @web.middleware
    async def record(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        response = await handler(request)
        if request.path.endswith("/rules"):
            self.requests.append(list(request.query.items()))
            self.statuses.append(response.status)
        return response


@pytest.fixture(params=VERSIONS)
async def grafana(request: pytest.FixtureRequest) -> AsyncIterator[Grafana]:
    g = Grafana(request.param)
    app = g.sandbox.make_app()
    app.middlewares.insert(0, g.record)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    g.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    yield g
    await runner.cleanup()


def config(url: str, **rule: Any) -> Config:
    return Config.model_validate(
        {
            "flashduty": {"integration_key": "k"},
            "grafana": {"url": url, "token": DEFAULT_TOKEN},
            "rules": [{"name": "grafana-managed", "source": "grafana", **rule}],
        }
    )


async def poll(source: GrafanaRulesSource, ev: RuleEvaluator, t: float) -> list[AlertEvent]:
    return ev.evaluate(await source.fetch(t), t)


async def test_alerting_recovering_normal_sends_ok_only_after_normal(grafana: Grafana) -> None:
    cfg = config(grafana.url)
    book = grafana.sandbox.rules
    async with aiohttp.ClientSession() as session:
        source = GrafanaRulesSource(session, cfg.grafana)
        ev = RuleEvaluator(cfg.rules[0], cfg, templates=TemplateEngine())
        book.set_state(HIGH, "Alerting")
        (firing,) = await poll(source, ev, T0)
        assert firing.status == "Critical"
        if book.major >= 12:  # keep_firing_for: the condition cleared, the instance still fires
            book.set_state(HIGH, "Recovering")
            assert await poll(source, ev, T0 + 10) == []
            assert await poll(source, ev, T0 + 20) == []
        else:
            with pytest.raises(ValueError, match="no Recovering state"):
                book.set_state(HIGH, "Recovering")
        book.set_state(HIGH, "Normal")
        (ok,) = await poll(source, ev, T0 + 30)
        assert ok.status == "Ok" and ok.alert_key == firing.alert_key
        assert await poll(source, ev, T0 + 40) == []
    asked = [sorted(v for k, v in q if k == "state") for q in grafana.requests]
    if book.major >= 12:
        assert asked == [["firing", "recovering"]] * len(asked) and set(grafana.statuses) == {200}
    else:  # one 400 'unknown state', then firing alone: no 400 loop
        assert grafana.statuses[0] == 400 and grafana.statuses[1:] == [200] * (len(grafana.statuses) - 1)
        assert asked[0] == ["firing", "recovering"] and asked[1:] == [["firing"]] * (len(asked) - 1)


async def test_every_page_is_read_with_group_limit(grafana: Grafana) -> None:
    book = grafana.sandbox.rules
    for i in range(5):
        uid = f"paged-{i}"
        rule = Rule(uid, f"Paged{i}", "sandbox", 6, "up == 0", "warning", f"paged {i}", {"i": str(i)}, False)
        book.add_rule(Rule(**{**rule.__dict__, "group": f"group-{i}"}))
        book.set_state(uid, "Alerting")
    cfg = config(grafana.url)
    async with aiohttp.ClientSession() as session:
        source = GrafanaRulesSource(session, cfg.grafana, group_limit=2)
        samples = await source.fetch(T0)
    assert sorted(s.labels["alertname"] for s in samples) == [f"Paged{i}" for i in range(5)]
    assert all(("group_limit", "2") in q for q in grafana.requests)
    ok_requests = [q for q, status in zip(grafana.requests, grafana.statuses, strict=True) if status == 200]
    if book.major >= 11:  # groups sandbox, group-0..4 by name, 2 a page → 3 pages (empty groups count on 11)
        assert [dict(q).get("group_next_token") is not None for q in ok_requests] == [False, True, True]
    else:  # 10.4 has no pagination: one answer
        assert len(ok_requests) == 1


async def test_nodata_and_error_instances_are_mirrored_only_when_asked(grafana: Grafana) -> None:
    book = grafana.sandbox.rules
    book.set_state(HIGH, "NoData")
    book.set_state("sandbox-slow", "Error")
    book.set_state("sandbox-slow", "Alerting", {"service": "search"}, reason="Error")  # Alerting (Error)
    async with aiohttp.ClientSession() as session:
        plain = await GrafanaRulesSource(session, config(grafana.url).grafana).fetch(T0)
        both = await GrafanaRulesSource(session, config(grafana.url).grafana, nodata=True, error=True).fetch(T0)
    assert [s.labels["alertname"] for s in plain] == ["SandboxSlowRequests"]  # Alerting (Error) is firing
    by_name = {s.labels["alertname"]: s for s in both}
    assert set(by_name) == {"SandboxSlowRequests", "DatasourceNoData", "DatasourceError"}
    assert by_name["DatasourceNoData"].labels["rulename"] == "SandboxHighErrors"
    assert by_name["DatasourceError"].labels["rulename"] == "SandboxSlowRequests"
    assert by_name["DatasourceNoData"].labels["grafana_rule_uid"] == HIGH
    assert math.isnan(by_name["DatasourceNoData"].value)  # Grafana sends no value for NoData


async def test_a_state_filter_cannot_select_a_rule_whose_only_instance_is_nodata(grafana: Grafana) -> None:
    """Why NoData / Error are asked for by health: ``filterRulesByState`` drops inactive rules."""
    grafana.sandbox.rules.set_state(HIGH, "NoData")
    async with aiohttp.ClientSession() as session:
        url = grafana.url + "/api/prometheus/grafana/api/v1/rules?state=nodata"
        async with session.get(url, headers={"Authorization": f"Bearer {DEFAULT_TOKEN}"}) as r:
            doc = await r.json()
    rules = [rule for g in doc["data"]["groups"] for rule in g["rules"]]
    assert rules == []


@pytest.mark.parametrize("version", VERSIONS)
async def test_values_in_every_form(version: str) -> None:
    g = Grafana(version)
    book = g.sandbox.rules
    forms = {
        "a": ("1.1e+00", 1.1),
        "b": ("B: 1.2e+01, C: 1e+00", 12.0),
        "c": ("[ var='B' labels={instance=10.0.0.1:9100} value=12 ]", 12.0),
    }
    for name, (text, _) in forms.items():
        book.set_state(HIGH, "Alerting", {"form": name}, value=text)
    doc = book.rules_response(_query("state=firing"))
    samples, _ = parse_rules_response(doc)
    assert {s.labels["form"]: s.value for s in samples} == {k: v for k, (_, v) in forms.items()}


def _query(qs: str) -> Any:
    from multidict import MultiDict

    return MultiDict(pair.split("=", 1) for pair in qs.split("&"))


# ------------------------------------------------------------------------ Grafana's own data


def test_grafanas_rules_answer_with_a_normal_instance_mirrors_nothing() -> None:
    doc = json.loads((DATA / "rules_12_one_query.json").read_text())
    assert parse_rules_response(doc) == ([], None)


def test_grafanas_alerting_and_recovering_instances_are_both_firing() -> None:
    alerts = json.loads((DATA / "alerts_12_firing_recovering.json").read_text())["data"]["alerts"]
    doc = {"data": {"groups": [{"rules": [{"name": "r", "uid": "u", "type": "alerting", "alerts": alerts}]}]}}
    samples, _ = parse_rules_response(doc)
    assert [s.labels["alertname"] for s in samples] == ["test_title_0", "test_title_1"]
    assert [s.value for s in samples] == [1.1, 1.1]
    assert [s.active_at for s in samples] == [None, None]  # Go's zero time


@pytest.mark.parametrize(
    ("text", "value"),
    [  # grafana/grafana pkg/services/ngalert/api/prometheus/api_prometheus_test.go Test_FormatValues
        ("[ var='A' metric='vector(10) + time() % 50' labels={} value=1.1 ]", 1.1),
        ("1.1e+00", 1.1),
        ("B0: 1.1e+00, B1: 1.4e+00", 1.1),
        ("B0: 1.1e+00, B10: 1.4e+00, B11: 1.1e+00, B1: 1.4e+00, B2: 1.1e+00", 1.1),
        # extract_md.go: the label set never gives the value, null is no value
        ("[ var='B' labels={instance=10.0.0.1:9100} value=12 ]", 12.0),
        ("[ var='B0' metric='up' labels={job=node} value=null ]", math.nan),
        ("", math.nan),
    ],
)
def test_grafanas_value_texts(text: str, value: float) -> None:
    got = parse_value(text)
    assert (math.isnan(got) and math.isnan(value)) or got == value


@pytest.mark.parametrize(
    ("state", "kind"),
    [  # the states Grafana's frontend maps (public/app/types unified-alerting-dto test), and Recovering
        ("Normal", None),
        ("Normal (NoData)", None),
        ("Normal (Error)", None),
        ("Alerting", "firing"),
        ("Alerting (NoData)", "firing"),
        ("Alerting (Error)", "firing"),
        ("Alerting (Error, KeepLast)", "firing"),
        ("Pending", None),
        ("NoData", "nodata"),
        ("Error", "error"),
        ("Recovering", "firing"),
    ],
)
def test_instance_states(state: str, kind: str | None) -> None:
    assert instance_kind(state) == kind


def test_mirror_nodata_and_error_are_for_grafana_rules_only() -> None:
    import yaml

    from sidecar.config import ConfigError, parse_config

    raw = {
        "flashduty": {"integration_key": "${KEY}"},
        "datasources": [{"name": "prom", "url": "http://127.0.0.1:9"}],
        "rules": [{"name": "r", "source": "prometheus", "expr": "up", "mirror_nodata": True, "mirror_error": True}],
    }
    with pytest.raises(ConfigError) as err:
        parse_config(yaml.safe_dump(raw), env={"KEY": "k"})
    assert "rules[0].mirror_nodata: only a grafana rule" in str(err.value)
    assert "rules[0].mirror_error: only a grafana rule" in str(err.value)
    raw["rules"] = [{"name": "g", "source": "grafana", "mirror_nodata": True}]
    assert parse_config(yaml.safe_dump(raw), env={"KEY": "k"}).rules[0].mirror_nodata
