"""Alert instances and their state machine, with Prometheus semantics (``rules/alerting.go``).

One ``RuleEvaluator`` per rule. Each evaluation takes the samples a source returned and the
evaluation time, and returns the events to deliver:

* each sample belongs to the instance of its label set (``events.instance_labels``); two samples
  with the same resulting label set fail the whole evaluation;
* ``inactive → pending → firing`` once ``ts − active_at ≥ for`` (``for: 0`` fires at once);
* a pending instance that disappears is dropped without a word; a firing one resolves (one ``Ok``
  event) or stays firing for ``keep_firing_for``; resolved instances are kept 15 minutes;
* a failed query (``evaluate_failed``) changes nothing and sends nothing;
* firing instances are re-sent every ``resend_interval`` (the rule's, else ``delivery.*``; 0 = never);
  a re-send carries pictures only with ``delivery.recapture_on_resend``.

Deliberate differences from Prometheus, for Flashduty:

* the ``Ok`` is sent once, not re-sent for 15 minutes: the outbox already guarantees delivery and
  Flashduty's push budget is small. If the sink fails, ``unsend`` makes the next evaluation retry;
* raising ``for`` by a reload never turns a firing instance back to pending (its Flashduty alert is
  open and a silently dropped pending instance would leave it open forever);
* firing instances survive a restart whatever the downtime; ``for`` restore rules (outage
  tolerance 1h, grace period 10m, shift by the downtime) apply to pending ones.

A ``grafana`` rule *mirrors* Grafana-managed alerts (``mirror``): Grafana has already applied
``for``, so instances fire at once with Grafana's ``activeAt`` (even one ahead of our clock). What
a mirrored event says (Grafana's rule name, its ``severity`` label, annotations, panels) is
``events.py``'s, like everything an event says: this module only decides when one is sent.

Errors: ``RuleError`` ← ``SourceError`` (query failed), ``DuplicateLabelsetError``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Literal

from sidecar.config import Config, RuleConfig
from sidecar.metrics import Metrics
from sidecar.model import AlertEvent, EventStatus, alert_key
from sidecar.rules.events import instance_event, instance_labels, instance_severity
from sidecar.rules.templates import TemplateEngine

__all__ = [
    "FOR_GRACE_PERIOD",
    "FOR_OUTAGE_TOLERANCE",
    "RESOLVED_RETENTION",
    "DuplicateLabelsetError",
    "EventSink",
    "Instance",
    "InstanceState",
    "RuleError",
    "RuleEvaluator",
    "Sample",
    "SourceError",
]

RESOLVED_RETENTION = 15 * 60.0
FOR_OUTAGE_TOLERANCE = 3600.0
FOR_GRACE_PERIOD = 600.0

EventSink = Callable[[AlertEvent], None]
InstanceState = Literal["pending", "firing", "inactive"]


class RuleError(Exception):
    """An evaluation failed; nothing changed and nothing was sent."""


class SourceError(RuleError):
    """The source (query, Grafana API) failed. The message never holds secrets."""


class DuplicateLabelsetError(RuleError):
    def __init__(self, labels: Mapping[str, str]) -> None:
        shown = ", ".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
        super().__init__(f"vector contains metrics with the same labelset after applying alert labels: {{{shown}}}")


@dataclass(frozen=True)
class Sample:
    """One series of a query result. ``active_at`` and ``annotations`` come from mirrored sources."""

    labels: Mapping[str, str]
    value: float
    active_at: float | None = None
    annotations: Mapping[str, str] = field(default_factory=dict)


@dataclass
class Instance:
    """One alert instance of a rule (a label set), as Prometheus keeps it."""

    key: str  # model.alert_key(rule, labels)
    labels: dict[str, str]
    state: InstanceState
    active_at: float
    value: float = math.nan
    annotations: dict[str, str] = field(default_factory=dict)  # upstream ones (mirror)
    fired_at: float | None = None
    resolved_at: float | None = None
    last_sent_at: float | None = None
    keep_firing_since: float | None = None


class RuleEvaluator:
    """Holds the instances of one rule and turns samples into events."""

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
        self.last_eval_at: float | None = None  # last successful evaluation
        self._sent_before: dict[str, float | None] = {}  # for unsend()

    # ------------------------------------------------------------------ configuration

    @property
    def mirror(self) -> bool:
        return self.rule.source == "grafana"

    @property
    def for_(self) -> float:
        return 0.0 if self.mirror else self.rule.for_

    @property
    def resend_interval(self) -> float:
        r = self.rule.resend_interval
        return r if r is not None else self.cfg.delivery.resend_interval

    def update(self, rule: RuleConfig, cfg: Config) -> None:
        """A reload kept this rule's name: keep the instances, use the new settings."""
        self.rule, self.cfg = rule, cfg

    # ------------------------------------------------------------------ evaluation

    def evaluate(self, samples: Iterable[Sample], ts: float) -> list[AlertEvent]:
        """One successful query result at ``ts`` → events. Raises ``DuplicateLabelsetError``
        before changing anything."""
        built: dict[str, tuple[dict[str, str], Sample]] = {}
        for s in samples:
            labels = instance_labels(self.rule, s, self.templates, mirror=self.mirror)
            key = alert_key(self.rule.name, labels)
            if key in built:
                raise DuplicateLabelsetError(labels)
            built[key] = (labels, s)

        self._sent_before = {}
        events: list[AlertEvent] = []
        for key, (labels, s) in built.items():
            inst = self.instances.get(key)
            if inst is not None and inst.state != "inactive":
                inst.value, inst.annotations, inst.keep_firing_since = s.value, dict(s.annotations), None
                continue
            if inst is not None and self._needs_ok(inst):
                events.append(self._send(inst, ts, "Ok", panels=True))  # an undelivered resolve
            active_at = s.active_at if self.mirror and s.active_at is not None else ts
            self.instances[key] = Instance(key, labels, "pending", active_at, s.value, annotations=dict(s.annotations))

        for key, inst in list(self.instances.items()):
            if key in built:
                # mirrored alerts fire at once, even if their activeAt is ahead of our clock
                if inst.state == "pending" and (self.mirror or ts - inst.active_at >= self.for_):
                    inst.state, inst.fired_at = "firing", ts
                continue
            if inst.state == "pending":
                del self.instances[key]  # never notified, so nothing to resolve
                continue
            if inst.state == "firing":
                keep = self.rule.keep_firing_for
                if keep > 0:
                    if inst.keep_firing_since is None:
                        inst.keep_firing_since = ts
                    if ts - inst.keep_firing_since < keep:
                        continue
                inst.state, inst.resolved_at, inst.keep_firing_since = "inactive", ts, None
            if inst.resolved_at is not None and inst.resolved_at + RESOLVED_RETENTION < ts and not self._needs_ok(inst):
                del self.instances[key]

        for inst in self.instances.values():
            event = self._due(inst, ts)
            if event is not None:
                events.append(event)
        self.health, self.last_error, self.last_eval_at = "ok", None, ts
        if self.metrics is not None:
            self.metrics.rule_evaluations.labels(rule=self.rule.name).inc()
            self.metrics.alerts_firing.labels(rule=self.rule.name).set(self.firing_count)
        return events

    def evaluate_failed(self, ts: float, error: BaseException | str) -> None:
        """The query failed at ``ts``: record it; instances and timers stay as they are."""
        self.health, self.last_error = "err", str(error)
        if self.metrics is not None:
            self.metrics.rule_evaluations.labels(rule=self.rule.name).inc()
            self.metrics.rule_failures.labels(rule=self.rule.name).inc()

    def unsend(self, event: AlertEvent) -> None:
        """The sink refused ``event``: the next evaluation sends it again."""
        inst = self.instances.get(event.alert_key)
        if inst is not None and event.alert_key in self._sent_before:
            inst.last_sent_at = self._sent_before.pop(event.alert_key)

    @property
    def firing_count(self) -> int:
        return sum(1 for i in self.instances.values() if i.state == "firing")

    # ------------------------------------------------------------------ restart

    def restore(
        self,
        instances: Iterable[Instance],
        *,
        last_eval_at: float | None,
        now: float,
        outage_tolerance: float = FOR_OUTAGE_TOLERANCE,
        grace_period: float = FOR_GRACE_PERIOD,
    ) -> None:
        """Load persisted instances after a restart (Prometheus ``RestoreForState`` rules).

        Firing and resolved instances come back as they were. A pending instance keeps its ``for``
        progress only if the outage was at most ``outage_tolerance`` and ``for ≥ grace_period``;
        then downtime does not count toward ``for``, and it fires no sooner than ``grace_period``
        from now. Otherwise it is dropped and starts over at the next evaluation.
        """
        self.last_eval_at = last_eval_at
        for inst in instances:
            inst = replace(inst, labels=dict(inst.labels), annotations=dict(inst.annotations))
            if inst.state == "pending":
                restored = self._restore_pending(inst, last_eval_at, now, outage_tolerance, grace_period)
                if restored is None:
                    continue
                inst.active_at = restored
            self.instances[inst.key] = inst

    def _restore_pending(
        self, inst: Instance, down_at: float | None, now: float, tolerance: float, grace: float
    ) -> float | None:
        hold = self.for_
        if down_at is None or now - down_at > tolerance or hold < grace or hold <= 0:
            return None
        remaining = hold - (down_at - inst.active_at)
        if remaining <= 0:
            return inst.active_at
        if remaining < grace:
            return now + grace - hold
        return inst.active_at + (now - down_at)

    # ------------------------------------------------------------------ sending

    def _needs_ok(self, inst: Instance) -> bool:
        return inst.state == "inactive" and (inst.last_sent_at is None or (inst.resolved_at or 0.0) > inst.last_sent_at)

    def _due(self, inst: Instance, ts: float) -> AlertEvent | None:
        if inst.state == "inactive":
            return self._send(inst, ts, "Ok", panels=True) if self._needs_ok(inst) else None
        if inst.state != "firing":
            return None
        severity = instance_severity(self.rule, inst, mirror=self.mirror)
        if inst.last_sent_at is None:
            return self._send(inst, ts, severity, panels=True)
        resend = self.resend_interval
        if resend > 0 and ts - inst.last_sent_at >= resend:
            return self._send(inst, ts, severity, panels=self.cfg.delivery.recapture_on_resend)
        return None

    def _send(self, inst: Instance, ts: float, status: EventStatus, *, panels: bool) -> AlertEvent:
        """Mark ``inst`` sent at ``ts`` (``unsend`` undoes it) and build its event (``events.py``)."""
        self._sent_before.setdefault(inst.key, inst.last_sent_at)
        inst.last_sent_at = ts
        return instance_event(
            self.rule,
            self.cfg,
            inst,
            ts,
            status,
            templates=self.templates,
            mirror=self.mirror,
            for_=self.for_,
            panels=panels,
        )
