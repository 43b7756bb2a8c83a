"""Scheduled reports: a ``schedule`` rule pushes its panels on a cron (or ``every``) schedule.

What an on-call user wants from a daily report is a fresh picture in the channel each time, not
one alert that stays open forever, nor a pile of open ones. So:

* each run is a **new** Flashduty alert: ``alert_key = alert_key(rule, labels + {run: <ISO time>})``,
  status ``Info`` (or the rule's ``severity`` when set), with the panels captured at run time;
* each run also resolves the previous run's alert (an ``Ok`` for its key, without pictures).
  At most one report alert per rule is open: the latest. An ``Ok`` right after the ``Info`` is not
  possible here: the outbox coalesces per alert key, so it would replace the ``Info`` and its
  pictures before they are delivered.

The time window is the panel's own (``range: 24h`` suits a daily report), else the 30 minutes
before the run. Nothing is evaluated: ``evaluate`` ignores its samples. A missed run (process down
at 09:00) is not replayed.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Literal

from sidecar.config import Config, RuleConfig
from sidecar.metrics import Metrics
from sidecar.model import AlertEvent, Severity, alert_key
from sidecar.rules.engine import Instance, Sample
from sidecar.rules.templates import TemplateContext, TemplateEngine
from sidecar.rules.window import panel_captures

__all__ = ["ScheduleEvaluator", "run_label"]


def run_label(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class ScheduleEvaluator:
    """Same surface as ``RuleEvaluator``, so the scheduler drives both alike."""

    def __init__(
        self,
        rule: RuleConfig,
        cfg: Config,
        *,
        templates: TemplateEngine,
        metrics: Metrics | None = None,
    ) -> None:
        self.rule = rule
        self.cfg = cfg
        self.templates = templates
        self.metrics = metrics
        self.instances: dict[str, Instance] = {}
        self.health: Literal["unknown", "ok", "err"] = "unknown"
        self.last_error: str | None = None
        self.last_eval_at: float | None = None
        self._sent_before: dict[str, float | None] = {}

    @property
    def severity(self) -> Severity:
        return self.rule.severity if "severity" in self.rule.model_fields_set else "Info"

    def update(self, rule: RuleConfig, cfg: Config) -> None:
        self.rule, self.cfg = rule, cfg

    def evaluate(self, samples: Iterable[Sample], ts: float) -> list[AlertEvent]:
        """One run at ``ts``: resolve the previous report, open a new one."""
        self._sent_before = {}
        events: list[AlertEvent] = []
        for key, inst in list(self.instances.items()):
            if inst.state != "inactive":
                inst.state, inst.resolved_at = "inactive", ts
            if inst.last_sent_at is not None and inst.last_sent_at >= (inst.resolved_at or 0.0):
                del self.instances[key]  # its Ok went out
                continue
            events.append(self._send(inst, ts))
        labels = self._labels(ts)
        key = alert_key(self.rule.name, labels)
        inst = Instance(key, labels, "firing", active_at=ts, fired_at=ts)
        self.instances[key] = inst
        events.append(self._send(inst, ts))
        self.health, self.last_error, self.last_eval_at = "ok", None, ts
        if self.metrics is not None:
            self.metrics.rule_evaluations.labels(rule=self.rule.name).inc()
        return events

    def evaluate_failed(self, ts: float, error: BaseException | str) -> None:
        self.health, self.last_error = "err", str(error)
        if self.metrics is not None:
            self.metrics.rule_failures.labels(rule=self.rule.name).inc()

    def unsend(self, event: AlertEvent) -> None:
        inst = self.instances.get(event.alert_key)
        if inst is not None and event.alert_key in self._sent_before:
            inst.last_sent_at = self._sent_before.pop(event.alert_key)

    def restore(self, instances: Iterable[Instance], *, last_eval_at: float | None, now: float) -> None:
        self.last_eval_at = last_eval_at
        for inst in instances:
            self.instances[inst.key] = replace(inst, labels=dict(inst.labels))

    @property
    def firing_count(self) -> int:
        return sum(1 for i in self.instances.values() if i.state == "firing")

    def _labels(self, ts: float) -> dict[str, str]:
        ctx = TemplateContext(labels=self.rule.labels, rule=self.rule.name, active_at=ts)
        labels = self.templates.render_map(self.rule.labels, ctx)
        labels["run"] = run_label(ts)
        return labels

    def _send(self, inst: Instance, ts: float) -> AlertEvent:
        self._sent_before.setdefault(inst.key, inst.last_sent_at)
        inst.last_sent_at = ts
        rule = self.rule
        ctx = TemplateContext(labels=inst.labels, value=math.nan, rule=rule.name, active_at=inst.active_at)
        title = self.templates.render(rule.title, ctx) if rule.title else rule.name
        description = self.templates.render(rule.description, ctx) if rule.description else ""
        resolving = inst.state == "inactive"
        panels = (
            ()
            if resolving
            else panel_captures(rule, self.cfg, labels=inst.labels, active_at=ts, now=ts, templates=self.templates)
        )
        return AlertEvent.for_instance(
            rule.name,
            inst.labels,
            status="Ok" if resolving else self.severity,
            title=title,
            description=description,
            panels=panels,
            event_time=ts,
            active_at=inst.active_at,
            resolved_at=inst.resolved_at if resolving else None,
        )
