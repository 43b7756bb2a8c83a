"""Grafana-managed alert rules of the Grafana sandbox, switchable for tests.

Answers ``GET /api/prometheus/grafana/api/v1/rules`` in Grafana's shape (``docs/grafana.md``
B.3): groups → rules (``state``, ``uid``, ``duration``, ``annotations`` with
``__dashboardUid__`` / ``__panelId__``, ``activeAt``, ``alerts[]``). Timestamps use Go's
RFC3339Nano (up to 9 fractional digits) and values Go's ``%e`` formatting, like Grafana.
Sandbox simplification: an inactive rule lists no alert instances (Grafana may list ``Normal``
ones).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from multidict import MultiMapping

from sidecar_sandbox.grafana_model import FOLDER_TITLE, FOLDER_UID

_STATE_ALIASES = {
    "firing": "firing",
    "alerting": "firing",
    "inactive": "inactive",
    "normal": "inactive",
    "pending": "pending",
    "nodata": "nodata",
    "error": "error",
    "recovering": "recovering",
}


@dataclass(frozen=True)
class Rule:
    """A built-in rule linked to a panel; ``metric_value`` False reports a fixed 2.5."""

    uid: str
    name: str
    dashboard_uid: str
    panel_id: int
    query: str
    severity: str
    summary: str
    default_labels: dict[str, str]
    metric_value: bool
    duration: float = 60.0

    def annotations(self) -> dict[str, str]:
        return {
            "__dashboardUid__": self.dashboard_uid,
            "__panelId__": str(self.panel_id),
            "summary": self.summary,
            "description": f"{self.summary} (sandbox rule {self.uid})",
        }


BUILTIN_RULES: tuple[Rule, ...] = (
    Rule(
        uid="sandbox-high-errors",
        name="SandboxHighErrors",
        dashboard_uid="sandbox",
        panel_id=6,
        query='sandbox_demo_errors{service="checkout"} > 1',
        severity="critical",
        summary="Checkout errors are above 1/s",
        default_labels={"service": "checkout"},
        metric_value=True,
    ),
    Rule(
        uid="sandbox-slow",
        name="SandboxSlowRequests",
        dashboard_uid="sandbox",
        panel_id=1,
        query='histogram_quantile(0.99, sandbox_request_seconds{service="checkout"}) > 1',
        severity="warning",
        summary="Checkout p99 latency is above 1s",
        default_labels={"service": "checkout"},
        metric_value=False,
    ),
)


@dataclass
class _Instance:
    labels: dict[str, str]
    active_at_ns: int


class RuleBook:
    """Rule definitions plus which alert instances fire, keyed by their labels."""

    def __init__(self, rules: tuple[Rule, ...], metric: Callable[[], float]) -> None:
        self.rules = {r.uid: r for r in rules}
        self._metric = metric
        self._firing: dict[str, dict[tuple[tuple[str, str], ...], _Instance]] = {uid: {} for uid in self.rules}

    def set_firing(self, rule_uid: str, firing: bool, labels: dict[str, str] | None = None) -> None:
        """Start or stop an alert instance (``KeyError`` for an unknown uid).

        Firing with ``labels`` None uses the rule's default instance labels; firing an instance
        that already fires keeps its ``activeAt``. Stopping with ``labels`` None stops them all.
        """
        instances = self._firing[rule_uid]
        if not firing:
            if labels is None:
                instances.clear()
            else:
                instances.pop(_label_key(labels), None)
            return
        chosen = dict(self.rules[rule_uid].default_labels if labels is None else labels)
        instances.setdefault(_label_key(chosen), _Instance(chosen, time.time_ns()))

    def state(self, rule_uid: str) -> str:
        return "firing" if self._firing[rule_uid] else "inactive"

    def alert_count(self, rule_uid: str) -> int:
        return len(self._firing[rule_uid])

    def rules_response(self, query: MultiMapping[str]) -> dict[str, Any]:
        """The ``/rules`` body for these query params; ``ValueError`` for a bad parameter."""
        states = _states(query)
        rules = [self._rule_json(rule, states) for rule in self._select(query, states)]
        groups = []
        if rules:
            groups.append(
                {
                    "name": "sandbox",
                    "file": FOLDER_TITLE,
                    "folderUid": FOLDER_UID,
                    "interval": 10,
                    "lastEvaluation": rfc3339(time.time_ns()),
                    "evaluationTime": 0.004,
                    "rules": rules,
                }
            )
        return {"status": "success", "data": {"groups": groups}}

    def alerts(self) -> list[dict[str, Any]]:
        """Every firing instance, in the ``/alerts`` (and ``rules[].alerts[]``) shape."""
        return [a for rule in self.rules.values() for a in self._alerts_json(rule)]

    def _select(self, query: MultiMapping[str], states: set[str]) -> list[Rule]:
        dashboard_uid = query.get("dashboard_uid")
        panel_raw = query.get("panel_id")
        if panel_raw is not None and not dashboard_uid:
            raise ValueError("panel_id must be set with dashboard_uid")
        if panel_raw is not None and not panel_raw.lstrip("-").isdigit():
            raise ValueError(f"invalid panel_id: {panel_raw}")
        rule_uids = set(query.getall("rule_uid", []))
        return [
            rule
            for rule in self.rules.values()
            if (not dashboard_uid or rule.dashboard_uid == dashboard_uid)
            and (panel_raw is None or rule.panel_id == int(panel_raw))
            and (not rule_uids or rule.uid in rule_uids)
            and (not states or self.state(rule.uid) in states)
        ]

    def _rule_json(self, rule: Rule, states: set[str]) -> dict[str, Any]:
        alerts = self._alerts_json(rule) if not states or "firing" in states else []
        data: dict[str, Any] = {
            "state": self.state(rule.uid),
            "name": rule.name,
            "uid": rule.uid,
            "folderUid": FOLDER_UID,
            "query": rule.query,
            "queriedDatasourceUIDs": ["sandbox-prometheus"],
            "duration": rule.duration,
            "keepFiringFor": 0,
            "annotations": rule.annotations(),
            "labels": {"severity": rule.severity},
            "health": "ok",
            "lastError": "",
            "type": "alerting",
            "lastEvaluation": rfc3339(time.time_ns()),
            "evaluationTime": 0.002,
            "isPaused": False,
            "alerts": alerts,
        }
        instances = self._firing[rule.uid].values()
        if instances:
            data["activeAt"] = rfc3339(min(i.active_at_ns for i in instances))
        return data

    def _alerts_json(self, rule: Rule) -> list[dict[str, Any]]:
        value = self._metric() if rule.metric_value else 2.5
        return [
            {
                "labels": {
                    "severity": rule.severity,
                    **inst.labels,
                    "alertname": rule.name,
                    "grafana_folder": FOLDER_TITLE,
                },
                "annotations": rule.annotations(),
                "state": "Alerting",
                "activeAt": rfc3339(inst.active_at_ns),
                "value": f"B0: {go_float_e(value)}, C0: 1e+00",
            }
            for inst in self._firing[rule.uid].values()
        ]


def _states(query: MultiMapping[str]) -> set[str]:
    states = set()
    for raw in query.getall("state", []):
        if raw.lower() not in _STATE_ALIASES:
            raise ValueError(f"unknown state '{raw}'")
        states.add(_STATE_ALIASES[raw.lower()])
    return states


def _label_key(labels: dict[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(labels.items()))


def rfc3339(ns: int) -> str:
    """Go's ``time.RFC3339Nano`` in UTC: up to 9 fractional digits, trailing zeros trimmed."""
    seconds, frac = divmod(ns, 1_000_000_000)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    digits = f"{frac:09d}".rstrip("0")
    return f"{stamp}.{digits}Z" if digits else f"{stamp}Z"


def go_float_e(value: float) -> str:
    """Go ``strconv.FormatFloat(v, 'e', -1, 64)``: shortest mantissa, two-digit exponent."""
    if not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("+Inf" if value > 0 else "-Inf")
    for precision in range(17):
        text = f"{value:.{precision}e}"
        if float(text) == value:
            return text
    return f"{value:.16e}"
