"""Grafana-managed alert rules of the Grafana sandbox and their alert instances, switchable for tests.

A ``RuleBook`` holds rules (in groups and folders) and, per rule, its alert instances by label
set, each in one of Grafana's instance states (``grafana/grafana``
``pkg/services/ngalert/eval/eval.go`` ``State``): ``Alerting``, ``Pending``, ``NoData``, ``Error``
and, from Grafana 12 (``keep_firing_for``), ``Recovering``; an instance back to ``Normal`` is
dropped (the sandbox lists no Normal instances). A state may carry a reason, shown as Grafana
shows it (``state.FormatStateAndReason``): ``Alerting (NoData)``, ``Alerting (Error)``.

``version`` selects how the rules API answers (``grafana_rules_api.py``: Grafana 10.4, 11.x or
12.x); 12.x by default. Timestamps use Go's RFC3339Nano and values Go's ``%e``, like Grafana.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from multidict import MultiMapping

from sidecar_sandbox.grafana_model import FOLDER_TITLE, FOLDER_UID

__all__ = ["BUILTIN_RULES", "Rule", "RuleBook", "go_float_e", "rfc3339"]

STATES = ("Alerting", "Pending", "Recovering", "NoData", "Error")


@dataclass(frozen=True)
class Rule:
    """A rule linked to a panel; ``metric_value`` False reports a fixed 2.5."""

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
    keep_firing_for: float = 0.0
    group: str = "sandbox"
    folder: str = FOLDER_TITLE
    folder_uid: str = FOLDER_UID

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
class Instance:
    """One alert instance: its state, reason and (when set) the literal ``value`` text."""

    labels: dict[str, str]
    active_at_ns: int
    state: str = "Alerting"
    reason: str = ""
    value: str | None = None


class RuleBook:
    """Rule definitions plus their alert instances, keyed by labels."""

    def __init__(self, rules: tuple[Rule, ...], metric: Callable[[], float], *, version: str = "12.1") -> None:
        self.rules = {r.uid: r for r in rules}
        self.version = version
        self._metric = metric
        self._instances: dict[str, dict[tuple[tuple[str, str], ...], Instance]] = {uid: {} for uid in self.rules}

    @property
    def major(self) -> int:
        return int(self.version.split(".", 1)[0])

    def add_rule(self, rule: Rule) -> None:
        self.rules[rule.uid] = rule
        self._instances.setdefault(rule.uid, {})

    def set_firing(self, rule_uid: str, firing: bool, labels: dict[str, str] | None = None) -> None:
        """Start or stop an Alerting instance (``KeyError`` for an unknown uid).

        Firing with ``labels`` None uses the rule's default instance labels; firing an instance
        that already fires keeps its ``activeAt``. Stopping with ``labels`` None stops them all.
        """
        if firing:
            self.set_state(rule_uid, "Alerting", labels)
        elif labels is None:
            self._instances[rule_uid].clear()
        else:
            self.set_state(rule_uid, "Normal", labels)

    def set_state(
        self,
        rule_uid: str,
        state: str,
        labels: dict[str, str] | None = None,
        *,
        reason: str = "",
        value: str | None = None,
    ) -> None:
        """Put one instance in ``state`` (``Normal`` drops it). ``activeAt`` is kept while the instance
        stays Alerting or Recovering, as Grafana keeps ``StartsAt``; ``value`` sets the literal text."""
        if state != "Normal" and state not in STATES:
            raise ValueError(f"unknown instance state {state!r}")
        if state == "Recovering" and self.major < 12:
            raise ValueError(f"Grafana {self.version} has no Recovering state")
        instances = self._instances[rule_uid]
        chosen = dict(self.rules[rule_uid].default_labels if labels is None else labels)
        key = _label_key(chosen)
        if state == "Normal":
            instances.pop(key, None)
            return
        old = instances.get(key)
        keep = old is not None and {old.state, state} <= {"Alerting", "Recovering"}
        active = old.active_at_ns if keep and old is not None else time.time_ns()
        instances[key] = Instance(chosen, active, state, reason, value)

    def instances(self, rule_uid: str) -> list[Instance]:
        return list(self._instances[rule_uid].values())

    def state(self, rule_uid: str) -> str:
        """The rule's state as the rules API reports it (``ComputeRuleState``): firing wins, then
        the first pending or recovering instance; NoData and Error leave it inactive."""
        states = [i.state for i in self._instances[rule_uid].values()]
        if "Alerting" in states:
            return "firing"
        for s in states:
            if s == "Pending" or (s == "Recovering" and self.major >= 12):
                return s.lower()
        return "inactive"

    def health(self, rule_uid: str) -> str:
        states = {i.state for i in self._instances[rule_uid].values()}
        return "error" if "Error" in states else "nodata" if "NoData" in states else "ok"

    def alert_count(self, rule_uid: str) -> int:
        return len(self._instances[rule_uid])

    def rules_response(self, query: MultiMapping[str]) -> dict[str, Any]:
        """The ``/rules`` body for these query params; ``ValueError`` for a bad parameter."""
        from sidecar_sandbox.grafana_rules_api import rules_response

        return rules_response(self, query)

    def alerts(self) -> list[dict[str, Any]]:
        """Every instance, in the ``/alerts`` (and ``rules[].alerts[]``) shape."""
        return [self.alert_json(rule, inst) for rule in self.rules.values() for inst in self.instances(rule.uid)]

    def alert_json(self, rule: Rule, inst: Instance) -> dict[str, Any]:
        state = inst.state + (f" ({inst.reason})" if inst.reason else "")
        return {
            "labels": {"severity": rule.severity, **inst.labels, "alertname": rule.name, "grafana_folder": rule.folder},
            "annotations": rule.annotations(),
            "state": state,
            "activeAt": rfc3339(inst.active_at_ns),
            "value": self._value(rule, inst),
        }

    def _value(self, rule: Rule, inst: Instance) -> str:
        # FormatValues is called for Alerting and Pending (and Recovering on 12), else ""
        if inst.state not in ("Alerting", "Pending", "Recovering"):
            return ""
        if inst.value is not None:
            return inst.value
        value = self._metric() if rule.metric_value else 2.5
        return f"B: {go_float_e(value)}, C: 1e+00"


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
