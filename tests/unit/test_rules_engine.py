"""The alert state machine, table-driven in the spirit of ``promtool test rules``.

Each row gives input series over evaluation steps (one step = one evaluation, 60 s apart) and the
events expected at each step. Series notation: one token per step, a number is a sample, ``_``
is no sample. ``fail`` lists the steps whose query errors. Expected events are
``(step, status, instance)`` where ``instance`` is the series' ``instance`` label.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from sidecar.config import Config
from sidecar.metrics import Metrics
from sidecar.model import AlertEvent, alert_key
from sidecar.rules.engine import DuplicateLabelsetError, RuleError, RuleEvaluator, Sample
from sidecar.rules.events import normalize_severity
from sidecar.rules.templates import TemplateEngine

STEP = 60.0
T0 = 1_700_000_000.0


def make_config(rule: dict[str, Any] | None = None, **top: Any) -> Config:
    base_rule = {"name": "HighErrors", "source": "prometheus", "expr": "errors > 1", "every": "1m"}
    return Config.model_validate(
        {
            "flashduty": {"integration_key": "k"},
            "datasources": [{"name": "prom", "url": "http://prom:9090"}],
            "rules": [{**base_rule, **(rule or {})}],
            **top,
        }
    )


def evaluator(cfg: Config, metrics: Metrics | None = None) -> RuleEvaluator:
    return RuleEvaluator(cfg.rules[0], cfg, templates=TemplateEngine(metrics=metrics), metrics=metrics)


@dataclass
class Row:
    name: str
    series: dict[str, str]
    expect: list[tuple[int, str, str]]
    rule: dict[str, Any] = field(default_factory=dict)
    fail: set[int] = field(default_factory=set)
    delivery: dict[str, Any] = field(default_factory=dict)
    labels: dict[str, dict[str, str]] = field(default_factory=dict)  # extra labels per series
    errors: set[int] = field(default_factory=set)  # steps whose evaluation itself must fail


ROWS = [
    Row("for 0 fires in the same evaluation", {"a": "1 1 1"}, [(0, "Warning", "a")]),
    Row("firing then absent resolves with one Ok", {"a": "1 1 _ _ _"}, [(0, "Warning", "a"), (2, "Ok", "a")]),
    Row(
        "for 2m: pending until 2m have passed",
        {"a": "1 1 1 1"},
        [(2, "Critical", "a")],
        rule={"for": "2m", "severity": "critical"},
    ),
    Row("pending that disappears is dropped silently", {"a": "1 1 _ _"}, [], rule={"for": "5m"}),
    Row(
        "pending dropped, a reappearance starts for over",
        {"a": "1 1 _ 1 1 1"},
        [(5, "Warning", "a")],
        rule={"for": "2m"},
    ),
    Row(
        "keep_firing_for holds a vanished alert",
        {"a": "1 _ _ _ _"},
        [(0, "Warning", "a"), (3, "Ok", "a")],
        rule={"keep_firing_for": "2m"},
    ),
    Row(
        "keep_firing_for restarts when the series comes back",
        {"a": "1 _ 1 _ _ _"},
        [(0, "Warning", "a"), (5, "Ok", "a")],
        rule={"keep_firing_for": "2m"},
    ),
    Row(
        "flapping with for 0: every edge is an event",
        {"a": "1 _ 1 _ 1"},
        [(0, "Warning", "a"), (1, "Ok", "a"), (2, "Warning", "a"), (3, "Ok", "a"), (4, "Warning", "a")],
    ),
    Row("flapping shorter than for never fires", {"a": "1 _ 1 _ 1 1"}, [(5, "Warning", "a")], rule={"for": "1m"}),
    Row(
        "a resolved instance that returns is a new pending one",
        {"a": "1 1 _ 1 1"},
        [(1, "Warning", "a"), (2, "Ok", "a"), (4, "Warning", "a")],
        rule={"for": "1m"},
    ),
    Row(
        "failed query: nothing changes, nothing is sent",
        {"a": "1 _ _ _"},
        [(0, "Warning", "a"), (3, "Ok", "a")],
        fail={1, 2},
    ),
    Row(
        "failed query does not reset a pending timer",
        {"a": "1 1 1 1"},
        [(2, "Warning", "a")],
        rule={"for": "2m"},
        fail={1},
    ),
    Row(
        "firing re-sent every resend_interval",
        {"a": "1 1 1 1 1 1 1"},
        [(0, "Warning", "a"), (3, "Warning", "a"), (6, "Warning", "a")],
        rule={"resend_interval": "3m"},
    ),
    Row(
        "delivery.resend_interval is the default",
        {"a": "1 1 1 1 1"},
        [(0, "Warning", "a"), (2, "Warning", "a"), (4, "Warning", "a")],
        delivery={"resend_interval": "2m"},
    ),
    Row("resend_interval 0 never re-sends", {"a": "1 1 1 1 1"}, [(0, "Warning", "a")], rule={"resend_interval": "0s"}),
    Row(
        "instances are independent",
        {"a": "1 1 _ _", "b": "_ 1 1 _"},
        [(0, "Warning", "a"), (1, "Warning", "b"), (2, "Ok", "a"), (3, "Ok", "b")],
    ),
    Row(
        "resolved instance retained 15 min, then forgotten without another Ok",
        {"a": "1 _ " + "_ " * 20},
        [(0, "Warning", "a"), (1, "Ok", "a")],
    ),
    Row(
        "duplicate labelset after rule labels fails every evaluation",
        {"a": "1 1", "b": "1 1"},
        [],
        rule={"labels": {"instance": "same"}},
        errors={0, 1},
    ),
    Row(
        "series differing only by __name__ are duplicates",
        {"a": "1", "b": "1"},
        [],
        labels={"a": {"__name__": "up", "job": "x"}, "b": {"__name__": "down", "job": "x"}},
        rule={"labels": {"instance": "x"}},
        errors={0},
    ),
]


def _samples(row: Row, step: int) -> list[Sample]:
    out = []
    for inst, values in row.series.items():
        tokens = values.split()
        if step < len(tokens) and tokens[step] != "_":
            labels = {"instance": inst, **row.labels.get(inst, {})}
            out.append(Sample(labels=labels, value=float(tokens[step])))
    return out


@pytest.mark.parametrize("row", ROWS, ids=[r.name for r in ROWS])
def test_state_machine(row: Row) -> None:
    cfg = make_config(row.rule, delivery=row.delivery)
    ev = evaluator(cfg)
    steps = max(len(v.split()) for v in row.series.values())
    got: list[tuple[int, str, str]] = []
    for step in range(steps):
        ts = T0 + step * STEP
        if step in row.fail:  # the source raised: the scheduler reports it and evaluates nothing
            ev.evaluate_failed(ts, RuleError("query failed: connection refused"))
            continue
        try:
            events = ev.evaluate(_samples(row, step), ts)
        except RuleError as e:
            assert step in row.errors, f"step {step}: unexpected failure {e}"
            ev.evaluate_failed(ts, e)
            continue
        assert step not in row.errors, f"step {step} should have failed"
        got.extend((step, e.status, e.labels["instance"]) for e in events)
    assert sorted(got) == sorted(row.expect)


def test_rows_are_plenty() -> None:
    assert len(ROWS) >= 15


def test_duplicate_labelset_error_is_clear_and_changes_nothing() -> None:
    ev = evaluator(make_config({"labels": {"instance": "same"}}))
    ev.evaluate([Sample({"instance": "a"}, 1)], T0)
    before = {k: (i.state, i.active_at) for k, i in ev.instances.items()}
    with pytest.raises(DuplicateLabelsetError, match="vector contains metrics with the same labelset"):
        ev.evaluate([Sample({"instance": "a"}, 1), Sample({"instance": "b"}, 2)], T0 + STEP)
    assert {k: (i.state, i.active_at) for k, i in ev.instances.items()} == before


def test_instance_labels_drop_name_apply_rule_labels_and_alertname() -> None:
    cfg = make_config({"labels": {"team": "web", "instance": "{{ $labels.instance }}-x"}, "severity": "critical"})
    ev = evaluator(cfg)
    (event,) = ev.evaluate(
        [Sample({"__name__": "errors", "instance": "a", "team": "old", "alertname": "spoofed"}, 3)], T0
    )
    instance_labels = {"instance": "a-x", "team": "web", "alertname": "HighErrors"}
    assert event.labels == {**instance_labels, "sidecar_rule": "HighErrors"}
    assert event.alert_key == alert_key("HighErrors", instance_labels)
    assert event.status == "Critical"
    assert event.rule == "HighErrors"
    assert event.active_at == T0 and event.event_time == T0


@pytest.mark.parametrize(
    ("label", "expected"),
    [("critical", "Critical"), (" WARNING ", "Warning"), ("Info", "Info"), ("page", None), ("", None), (None, None)],
)
def test_normalize_severity(label: str | None, expected: str | None) -> None:
    assert normalize_severity(label) == expected


def test_scalar_result_is_one_unlabelled_instance() -> None:
    ev = evaluator(make_config())
    (event,) = ev.evaluate([Sample({}, 42.0)], T0)
    assert event.labels == {"alertname": "HighErrors", "sidecar_rule": "HighErrors"}


def test_templates_in_title_and_description() -> None:
    cfg = make_config(
        {
            "title": "{{ $labels.service }} errors at {{ $value | humanize }}",
            "description": "{{ labels.service }}: {{ value }} since {{ active_at.strftime('%H:%M') }}",
            "annotations": {"summary": "unused when title is set"},
        }
    )
    (event,) = evaluator(cfg).evaluate([Sample({"service": "checkout"}, 1234.5)], T0)
    assert event.title == "checkout errors at 1.234k"
    assert event.description == "checkout: 1234.5 since 22:13"


def test_template_error_renders_marker_and_counts_once_logged(caplog: pytest.LogCaptureFixture) -> None:
    metrics = Metrics()
    cfg = make_config({"title": "{{ $value | nosuchfilter }}", "description": "{{ 1 / 0 }}"})
    ev = evaluator(cfg, metrics)
    (e1,) = ev.evaluate([Sample({"instance": "a"}, 1)], T0)
    (e2,) = ev.evaluate([Sample({"instance": "a"}, 1), Sample({"instance": "b"}, 1)], T0 + STEP)
    assert e1.title.startswith("<error expanding template: ")
    assert "nosuchfilter" in e1.title
    assert e2.description == "<error expanding template: ZeroDivisionError: division by zero>"
    logged = [r for r in caplog.records if r.getMessage() == "template error"]
    assert len(logged) == 2  # once per (rule, template), not per evaluation
    count = metrics.registry.get_sample_value("flashduty_sidecar_template_errors_total", {"rule": "HighErrors"})
    assert count == 4


def test_title_defaults_to_summary_annotation_then_rule_name() -> None:
    cfg = make_config({"annotations": {"summary": "{{ $labels.instance }} is down"}})
    (event,) = evaluator(cfg).evaluate([Sample({"instance": "a"}, 1)], T0)
    assert event.title == "a is down"
    (event,) = evaluator(make_config()).evaluate([Sample({"instance": "a"}, 1)], T0)
    assert event.title == "HighErrors"


PANEL_RULE = {"for": "10m", "panels": [{"dashboard": "abc", "panel": 4, "vars": {"svc": "{{ $labels.instance }}"}}]}


def test_first_event_and_ok_carry_panels_resend_does_not() -> None:
    cfg = make_config({**PANEL_RULE, "resend_interval": "2m"})
    ev = evaluator(cfg)
    events: list[AlertEvent] = []
    for step, present in enumerate([1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0]):
        events += ev.evaluate([Sample({"instance": "a"}, 5)] if present else [], T0 + step * STEP)
    first, resend, *_, ok = events
    assert first.status == "Warning" and first.event_time == T0 + 10 * STEP
    (p,) = first.panels
    assert (p.dashboard, p.panel, p.vars) == ("abc", "4", (("svc", "a"),))
    assert p.time_from == str(int((T0 - 30 * 60) * 1000))  # active_at − max(2 × 10m, 30m)
    assert p.time_to == str(int((T0 + 10 * STEP) * 1000))
    assert resend.status == "Warning" and resend.panels == ()
    assert ok.status == "Ok" and ok.resolved_at == T0 + 13 * STEP
    assert ok.panels and ok.panels[0].time_to == str(int((T0 + 13 * STEP) * 1000))  # capped at now


def test_recapture_on_resend_puts_panels_on_resends() -> None:
    cfg = make_config({**PANEL_RULE, "for": "0s", "resend_interval": "1m"}, delivery={"recapture_on_resend": True})
    ev = evaluator(cfg)
    ev.evaluate([Sample({"instance": "a"}, 5)], T0)
    (resend,) = ev.evaluate([Sample({"instance": "a"}, 5)], T0 + STEP)
    assert resend.panels and resend.panels[0].time_to == str(int((T0 + STEP) * 1000))


def test_unsend_makes_the_next_evaluation_send_again() -> None:
    ev = evaluator(make_config(PANEL_RULE | {"for": "0s"}))
    (event,) = ev.evaluate([Sample({"instance": "a"}, 1)], T0)
    ev.unsend(event)  # the outbox refused it
    (again,) = ev.evaluate([Sample({"instance": "a"}, 1)], T0 + STEP)
    assert again.alert_key == event.alert_key and again.panels  # still the first notification
    assert ev.evaluate([Sample({"instance": "a"}, 1)], T0 + 2 * STEP) == []
    (ok,) = ev.evaluate([], T0 + 3 * STEP)
    ev.unsend(ok)
    (ok_again,) = ev.evaluate([], T0 + 4 * STEP)
    assert ok_again.status == "Ok" and ok_again.resolved_at == T0 + 3 * STEP
    assert ev.evaluate([], T0 + 5 * STEP) == []


def test_raising_for_on_reload_keeps_firing_instances_firing() -> None:
    cfg = make_config()
    ev = evaluator(cfg)
    ev.evaluate([Sample({"instance": "a"}, 1)], T0)
    new = make_config({"for": "1h"})
    ev.update(new.rules[0], new)
    assert ev.evaluate([Sample({"instance": "a"}, 1)], T0 + STEP) == []
    assert ev.firing_count == 1


def test_metrics_count_evaluations_failures_and_firing() -> None:
    metrics = Metrics()
    ev = evaluator(make_config(), metrics)
    ev.evaluate([Sample({"instance": "a"}, 1), Sample({"instance": "b"}, 1)], T0)
    ev.evaluate_failed(T0 + STEP, "boom")
    get = metrics.registry.get_sample_value
    assert get("flashduty_sidecar_alerts_firing", {"rule": "HighErrors"}) == 2
    assert get("flashduty_sidecar_rule_evaluations_total", {"rule": "HighErrors"}) == 2
    assert get("flashduty_sidecar_rule_evaluation_failures_total", {"rule": "HighErrors"}) == 1
    assert ev.health == "err" and ev.last_error == "boom"
