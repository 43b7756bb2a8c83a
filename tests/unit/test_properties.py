"""Property-based: generated inputs never make the two alert routes answer 5xx, never crash the
config loader or the template renderer, and never hang them (each example has a deadline)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sidecar.config import Config, ConfigError, parse_config
from sidecar.rules.templates import TemplateContext, TemplateEngine
from tests.support.ingest import WEBHOOK_PATH, Ingest, ingest

SETTINGS = settings(max_examples=150, deadline=2000, suppress_health_check=[HealthCheck.too_slow])

scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text()
json_values = st.recursive(scalars, lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(), c, max_size=4))
times = st.sampled_from(["2023-11-14T22:03:20Z", "0001-01-01T00:00:00Z", "yesterday", "", "2023-13-40T99:99:99Z"])
label_sets = st.dictionaries(st.text(min_size=0, max_size=8), st.text(max_size=8) | json_values, max_size=4)
alerts = st.fixed_dictionaries(
    {},
    optional={
        "status": st.sampled_from(["firing", "resolved", "ok"]) | json_values,
        "labels": label_sets | json_values,
        "annotations": label_sets,
        "startsAt": times | json_values,
        "endsAt": times,
        "fingerprint": st.text(max_size=16) | json_values,
        "generatorURL": st.sampled_from(["", "http://p:9090/graph", "::"]) | json_values,
        "panelURL": st.sampled_from(["http://g/d/x?viewPanel=4", "http://g/d/", "x"]),
    },
)
webhook_docs = st.fixed_dictionaries(
    {"alerts": st.lists(alerts, max_size=4) | json_values},
    optional={"version": st.sampled_from(["4", "1", "3"]) | json_values, "status": json_values},
)
bodies = (
    webhook_docs.map(lambda d: json.dumps(d).encode())
    | st.lists(alerts, max_size=4).map(lambda d: json.dumps(d).encode())
    | json_values.map(lambda d: json.dumps(d).encode())
    | st.binary(max_size=200)
    | st.builds(lambda d, i, b: d[:i] + b + d[i:], webhook_docs.map(lambda d: json.dumps(d).encode()),
                st.integers(0, 40), st.binary(min_size=1, max_size=4))
)  # fmt: skip


def run_routes(tmp_path: Path, check: Any) -> None:
    """``check(h, loop)`` with one real server for all the examples."""
    loop = asyncio.new_event_loop()
    cm = ingest(tmp_path)
    h = loop.run_until_complete(cm.__aenter__())
    try:
        check(h, loop)
    finally:
        loop.run_until_complete(cm.__aexit__(None, None, None))
        loop.close()


def test_no_body_makes_either_route_answer_5xx(tmp_path: Path) -> None:
    def check(h: Ingest, loop: asyncio.AbstractEventLoop) -> None:
        @SETTINGS
        @given(body=bodies)
        def one(body: bytes) -> None:
            before = len(h.events)
            status, text = loop.run_until_complete(h.post(WEBHOOK_PATH, body))
            assert status in (200, 400), (status, text)
            if status == 400:
                assert len(h.events) == before and "\n" not in json.loads(text)["error"]
            status, text = loop.run_until_complete(h.post("/api/v2/alerts", body))
            assert status in (200, 400, 422), (status, text)

        one()

    run_routes(tmp_path, check)


BASE = {"flashduty": {"integration_key": "${KEY}"}, "grafana": {"timezone": "UTC"}}
config_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.text(max_size=12)
    | st.sampled_from(["1m", "-5s", "{{ x", "${NOPE}"]),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=10), c, max_size=3),
    max_leaves=10,
)
sections = st.sampled_from(["rules", "capture", "delivery", "server", "webhook", "grafana", "datasources", "extra"])
rule_keys = st.sampled_from(["name", "source", "every", "cron", "title", "labels", "panels", "for", "expr"])


@SETTINGS
@given(
    top=st.dictionaries(sections, config_values, max_size=3),
    rule=st.dictionaries(rule_keys, config_values, max_size=5),
)
def test_the_config_loader_answers_a_config_or_a_config_error(top: dict[str, Any], rule: dict[str, Any]) -> None:
    doc = {**BASE, **top}
    if "rules" not in top:
        doc["rules"] = [rule]
    try:
        cfg = parse_config(yaml.safe_dump(doc, allow_unicode=True), env={"KEY": "k"})
    except ConfigError as e:
        assert e.problems and all(p and "\n" not in p for p in e.problems)
    else:
        assert isinstance(cfg, Config)


@SETTINGS
@given(text=st.text(max_size=300))
def test_the_config_loader_takes_any_text(text: str) -> None:
    try:
        parse_config(text, env={})
    except ConfigError as e:
        assert e.problems


template_parts = st.sampled_from(
    ["{{", "}}", "{%", "%}", "$labels", "$value", ".x", " | ", "humanize", "printf", '"%.2f"', "if", "end", "(", ")",
     "labels", "value", "for", "in", "range(3)", "endif", "endfor", "'a'", "1", "+", " ", "x", "|", "toUpper", "-"]
)  # fmt: skip
templates = st.lists(template_parts | st.text(max_size=3), max_size=14).map("".join)


@SETTINGS
@given(
    source=templates,
    labels=st.dictionaries(st.text(max_size=6), st.text(max_size=6), max_size=3),
    value=st.floats(),
)
def test_the_template_renderer_never_raises(source: str, labels: dict[str, str], value: float) -> None:
    engine = TemplateEngine()
    err = engine.check(source)
    out = engine.render(source, TemplateContext(labels=labels, value=value, rule="r"))
    assert isinstance(out, str)
    if err is not None:
        assert out.startswith("<error expanding template: ")
