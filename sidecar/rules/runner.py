"""The rules' evaluators between runs, and one run of a rule: source → evaluator → sink → state.

``RuleRunner`` holds one entry per rule: its evaluator (``RuleEvaluator``, or ``ScheduleEvaluator``
for a ``schedule`` rule), its source (``prometheus`` instant query, ``grafana`` alert list; none
for a schedule) and a lock, so a job and ``evaluate_now`` never evaluate one rule at once.
``load`` builds them and restores their instances from ``RuleState`` (once; the state of rules no
longer configured is forgotten).

Each run (``run``): fetch samples at the rule's slot time (``slots.py``; ``SourceError`` →
``evaluate_failed``: nothing changes, nothing is sent), evaluate, hand every event to the sink (an
event the sink refuses is retried at the next run), then persist the rule's instances and
heartbeat (last evaluation time) to ``RuleState``.

``reconfigure`` keeps the instances of rules whose name (and kind of source) did not change and
forgets the others, their state rows and firing gauge too. An evaluation already querying
finishes with the new settings; one whose rule was removed is discarded. Who runs what when is
``scheduler.py``'s.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

import aiohttp

from sidecar.config import Config, RuleConfig
from sidecar.metrics import Metrics
from sidecar.model import AlertEvent
from sidecar.rules.engine import EventSink, Instance, RuleError, RuleEvaluator, Sample
from sidecar.rules.slots import eval_time
from sidecar.rules.sources.grafana import GrafanaRulesSource
from sidecar.rules.sources.prometheus import PrometheusSource
from sidecar.rules.sources.schedule import ScheduleEvaluator
from sidecar.rules.state import RuleState
from sidecar.rules.templates import TemplateEngine

__all__ = ["Evaluator", "RuleRunner", "SinkRefused", "Source"]

log = logging.getLogger("sidecar.rules.scheduler")  # its log lines keep the scheduler's logger name


class SinkRefused(Exception):
    """Raised by a sink that may not take events now: the event stays due, nothing is logged."""


class Source(Protocol):
    async def fetch(self, ts: float) -> list[Sample]: ...


class Evaluator(Protocol):
    rule: RuleConfig
    instances: dict[str, Instance]
    last_eval_at: float | None

    def evaluate(self, samples: Iterable[Sample], ts: float) -> list[AlertEvent]: ...
    def evaluate_failed(self, ts: float, error: BaseException | str) -> None: ...
    def unsend(self, event: AlertEvent) -> None: ...
    def update(self, rule: RuleConfig, cfg: Config) -> None: ...
    def restore(self, instances: Iterable[Instance], *, last_eval_at: float | None, now: float) -> None: ...


@dataclass
class _Entry:
    evaluator: Evaluator
    source: Source | None
    lock: asyncio.Lock


class RuleRunner:
    """The evaluators of the configured rules and their runs (see the module docstring)."""

    def __init__(
        self,
        cfg: Config,
        *,
        sink: EventSink,
        session: aiohttp.ClientSession,
        state: RuleState,
        metrics: Metrics,
        clock: Callable[[], float],
        templates: TemplateEngine,
    ) -> None:
        self.cfg = cfg
        self._sink = sink
        self._session = session
        self._state = state
        self._metrics = metrics
        self._clock = clock
        self._templates = templates
        self._entries: dict[str, _Entry] = {}
        self._loaded = False
        self.completed_at: float = 0.0  # clock at the end of the last completed run

    def evaluator(self, name: str) -> Evaluator | None:
        entry = self._entries.get(name)
        return entry.evaluator if entry else None

    def firing_keys(self) -> set[str]:
        """``alert_key`` of every firing instance (and open report), for startup reconciliation."""
        return {
            key
            for entry in self._entries.values()
            for key, inst in entry.evaluator.instances.items()
            if inst.state == "firing"
        }

    def resend_firing(self) -> int:
        """Make every firing alert instance due again (not reports): the next evaluation re-sends it,
        once, idempotent by alert_key. A replica that just became the sender does this."""
        n = 0
        for entry in self._entries.values():
            if entry.evaluator.rule.source == "schedule":
                continue
            for inst in entry.evaluator.instances.values():
                if inst.state == "firing":
                    inst.last_sent_at, n = None, n + 1
        return n

    def load(self) -> None:
        """Build the evaluators and restore their instances from the state file (once)."""
        if self._loaded:
            return
        self._loaded = True
        gone = self._state.drop_rules_except(r.name for r in self.cfg.rules)
        if gone:
            log.info("forgot the state of removed rules", extra={"rules": gone})
        now = self._clock()
        for rule in self.cfg.rules:
            entry = self._entries[rule.name] = self._build(rule, self.cfg)
            instances, last_eval_at = self._state.load_rule(rule.name)
            entry.evaluator.restore(instances, last_eval_at=last_eval_at, now=now)

    def reconfigure(self, new_cfg: Config) -> None:
        """Rules keeping their name keep their instances (and their state row); renamed or
        removed rules are forgotten."""
        self.load()
        old, self.cfg = self._entries, new_cfg
        self._entries = {}
        for rule in new_cfg.rules:
            entry = old.get(rule.name)
            if entry is not None and entry.evaluator.rule.source == rule.source:
                entry.evaluator.update(rule, new_cfg)
                entry.source = self._source(rule, new_cfg)
                self._entries[rule.name] = entry
            else:
                self._entries[rule.name] = self._build(rule, new_cfg)
                if entry is not None:
                    self._state.drop_rule(rule.name)  # same name, other kind: start afresh
        for name in old.keys() - self._entries.keys():
            self._state.drop_rule(name)
            self._metrics.alerts_firing.labels(rule=name).set(0)

    # ------------------------------------------------------------------ a run

    async def run(self, name: str) -> list[AlertEvent]:
        """Evaluate ``name`` once; the events the sink accepted ([] for an unknown rule)."""
        entry = self._entries.get(name)
        if entry is None:
            return []
        async with entry.lock:
            ev = entry.evaluator
            ts = eval_time(ev.rule, self._clock())
            started = self._clock()
            try:
                samples = await entry.source.fetch(ts) if entry.source is not None else []
                if self._entries.get(name) is not entry:
                    return []  # reloaded away while we were querying
                events = ev.evaluate(samples, ts)
            except RuleError as e:
                ev.evaluate_failed(ts, e)
                log.warning("rule evaluation failed", extra={"rule": name, "error": str(e)})
                return []
            accepted = [e for e in events if self._deliver(ev, e)]
            try:
                self._state.save_rule(name, ev.instances.values(), ev.last_eval_at)
            except sqlite3.Error as e:
                log.error("could not save rule state", extra={"rule": name, "error": str(e)})
            self.completed_at = self._clock()
            if accepted:
                log.info(
                    "rule evaluated",
                    extra={
                        "rule": name,
                        "events": len(accepted),
                        "duration_ms": round((self.completed_at - started) * 1000),
                    },
                )
            return accepted

    def _deliver(self, ev: Evaluator, event: AlertEvent) -> bool:
        try:
            self._sink(event)
        except SinkRefused:  # not ours to send now (a follower replica): stays due for later
            ev.unsend(event)
            return False
        # the outbox failed (disk full, closed...): keep the event due, retry at the next run
        except Exception:
            log.exception("could not queue alert event", extra={"rule": event.rule, "alert_key": event.alert_key})
            ev.unsend(event)
            return False
        return True

    # ------------------------------------------------------------------ building

    def _build(self, rule: RuleConfig, cfg: Config) -> _Entry:
        ev: Evaluator
        if rule.source == "schedule":
            ev = ScheduleEvaluator(rule, cfg, templates=self._templates, metrics=self._metrics)
        else:
            ev = RuleEvaluator(rule, cfg, templates=self._templates, metrics=self._metrics)
        return _Entry(ev, self._source(rule, cfg), asyncio.Lock())

    def _source(self, rule: RuleConfig, cfg: Config) -> Source | None:
        if rule.source == "prometheus":
            if rule.datasource is not None:
                ds = cfg.datasource(rule.datasource)
            else:
                ds = next(d for d in cfg.datasources if d.type == "prometheus")
            return PrometheusSource(self._session, ds, rule.expr or "")
        if rule.source == "grafana":
            return GrafanaRulesSource(
                self._session,
                cfg.grafana,
                timeout=min(rule.interval, 30.0),
                nodata=rule.mirror_nodata,
                error=rule.mirror_error,
            )
        return None
