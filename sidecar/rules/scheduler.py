"""Runs every rule on its schedule with APScheduler 3.x, feeding events to the sink.

One ``AsyncIOScheduler`` (created in ``await start()``, on the running loop), one ``async`` job per
rule with ``max_instances=1``, ``coalesce=True`` and ``misfire_grace_time`` of half the interval:
an overrunning or late evaluation is *skipped*, like Prometheus and vmalert do, and counted in
``rule_evaluations_skipped_total``. Interval rules run at a fixed, deterministic offset inside
their interval (from a hash of the name), the same on every replica; the evaluation timestamp
is that slot. Cron rules run in ``grafana.timezone``.

Each run: fetch samples (``SourceError`` → ``evaluate_failed``: nothing changes, nothing is sent),
evaluate, hand every event to the sink (an event the sink refuses is retried at the next run),
then persist the rule's instances and heartbeat to ``RuleState``. ``reload`` replaces the jobs,
keeps the instances of rules whose name did not change and forgets the others. ``heartbeat`` is
refreshed every few seconds by a tiny job, for liveness.
"""

from __future__ import annotations

import asyncio
import logging
import math
import sqlite3
import time
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import aiohttp
from apscheduler.events import (
    EVENT_JOB_ERROR,
    EVENT_JOB_MAX_INSTANCES,
    EVENT_JOB_MISSED,
    JobExecutionEvent,
)
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from sidecar.config import Config, RuleConfig
from sidecar.metrics import Metrics
from sidecar.model import AlertEvent
from sidecar.rules.engine import EventSink, Instance, RuleError, RuleEvaluator, Sample
from sidecar.rules.sources.grafana import GrafanaRulesSource
from sidecar.rules.sources.prometheus import PrometheusSource
from sidecar.rules.sources.schedule import ScheduleEvaluator
from sidecar.rules.state import RuleState
from sidecar.rules.templates import TemplateEngine

__all__ = ["HEARTBEAT_EVERY", "RuleScheduler", "slot_offset"]

log = logging.getLogger(__name__)

HEARTBEAT_EVERY = 5.0
_JOB_PREFIX = "rule:"


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


def slot_offset(name: str, interval: float) -> float:
    """Deterministic offset of a rule inside its interval, in [0, interval)."""
    return zlib.crc32(name.encode()) / 2**32 * interval


class RuleScheduler:
    """Owns the rule jobs: ``await start()``, ``await reload(cfg)``, ``await shutdown()``."""

    def __init__(
        self,
        cfg: Config,
        *,
        sink: EventSink,
        session: aiohttp.ClientSession,
        state: RuleState,
        metrics: Metrics,
        clock: Callable[[], float] = time.time,
        templates: TemplateEngine | None = None,
    ) -> None:
        self.cfg = cfg
        self._sink = sink
        self._session = session
        self._state = state
        self._metrics = metrics
        self._clock = clock
        self.templates = templates if templates is not None else TemplateEngine(metrics=metrics)
        self._entries: dict[str, _Entry] = {}
        self._scheduler: AsyncIOScheduler | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._stopping = False
        self._loaded = False
        self.heartbeat: float = 0.0

    # ------------------------------------------------------------------ lifecycle

    @property
    def running(self) -> bool:
        return self._scheduler is not None and self._scheduler.running and not self._stopping

    def evaluator(self, name: str) -> Evaluator | None:
        entry = self._entries.get(name)
        return entry.evaluator if entry else None

    async def start(self) -> None:
        """Restore state and schedule every rule, on the running event loop."""
        loop = asyncio.get_running_loop()
        self._load()
        sched = AsyncIOScheduler(event_loop=loop, timezone=UTC)
        sched.add_listener(self._on_job_event, EVENT_JOB_MAX_INSTANCES | EVENT_JOB_MISSED | EVENT_JOB_ERROR)
        self._scheduler = sched
        for rule in self.cfg.rules:
            self._add_job(rule)
        sched.add_job(self._beat, IntervalTrigger(seconds=HEARTBEAT_EVERY), id="heartbeat", coalesce=True)
        self.heartbeat = self._clock()
        sched.start()

    def _load(self) -> None:
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

    async def shutdown(self) -> None:
        """Stop scheduling, cancel running evaluations and wait for them."""
        if self._scheduler is None:
            return
        self._stopping = True
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)
        tasks = list(self._tasks)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.sleep(0)  # AsyncIOScheduler.shutdown runs on the next loop iteration
        self._scheduler = None

    def firing_keys(self) -> set[str]:
        """``alert_key`` of every firing instance (and open report), for startup reconciliation."""
        return {
            key
            for entry in self._entries.values()
            for key, inst in entry.evaluator.instances.items()
            if inst.state == "firing"
        }

    async def reload(self, new_cfg: Config) -> None:
        """Replace the jobs; rules keeping their name keep their instances (and their state row);
        renamed or removed rules are forgotten. An evaluation already querying finishes with the
        new settings; one whose rule was removed is discarded."""
        self._load()
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
        if self._scheduler is not None:
            for job in self._scheduler.get_jobs():
                if job.id.startswith(_JOB_PREFIX):
                    job.remove()
            for rule in new_cfg.rules:
                self._add_job(rule)
        log.info("rules reloaded", extra={"rules": len(new_cfg.rules)})

    # ------------------------------------------------------------------ evaluation

    async def evaluate_now(self, name: str) -> list[AlertEvent]:
        """Run one evaluation of ``name`` now; returns the events the sink accepted."""
        self._load()
        return await self._run(name)

    async def _job(self, name: str) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            await self._run(name)
        except asyncio.CancelledError:
            if not self._stopping:
                raise
        # a bug in one evaluation must not take the scheduler down: log, count, carry on
        except Exception:
            log.exception("rule evaluation crashed", extra={"rule": name})
            self._metrics.rule_failures.labels(rule=name).inc()
        finally:
            if task is not None:
                self._tasks.discard(task)

    async def _run(self, name: str) -> list[AlertEvent]:
        entry = self._entries.get(name)
        if entry is None:
            return []
        async with entry.lock:
            ev = entry.evaluator
            ts = self._eval_time(ev.rule)
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
            self.heartbeat = self._clock()
            if accepted:
                log.info(
                    "rule evaluated",
                    extra={
                        "rule": name,
                        "events": len(accepted),
                        "duration_ms": round((self.heartbeat - started) * 1000),
                    },
                )
            return accepted

    def _deliver(self, ev: Evaluator, event: AlertEvent) -> bool:
        try:
            self._sink(event)
        # the outbox failed (disk full, closed...): keep the event due, retry at the next run
        except Exception:
            log.exception("could not queue alert event", extra={"rule": event.rule, "alert_key": event.alert_key})
            ev.unsend(event)
            return False
        return True

    def _eval_time(self, rule: RuleConfig) -> float:
        now = self._clock()
        if rule.cron is not None:
            return now
        interval = rule.interval
        offset = slot_offset(rule.name, interval)
        slot = offset + math.floor((now - offset + 0.05) / interval) * interval
        return round(slot, 3)

    async def _beat(self) -> None:
        self.heartbeat = self._clock()

    # ------------------------------------------------------------------ building

    def _build(self, rule: RuleConfig, cfg: Config) -> _Entry:
        ev: Evaluator
        if rule.source == "schedule":
            ev = ScheduleEvaluator(rule, cfg, templates=self.templates, metrics=self._metrics)
        else:
            ev = RuleEvaluator(rule, cfg, templates=self.templates, metrics=self._metrics)
        return _Entry(ev, self._source(rule, cfg), asyncio.Lock())

    def _source(self, rule: RuleConfig, cfg: Config) -> Source | None:
        if rule.source == "prometheus":
            if rule.datasource is not None:
                ds = cfg.datasource(rule.datasource)
            else:
                ds = next(d for d in cfg.datasources if d.type == "prometheus")
            return PrometheusSource(self._session, ds, rule.expr or "")
        if rule.source == "grafana":
            return GrafanaRulesSource(self._session, cfg.grafana, timeout=min(rule.interval, 30.0))
        return None

    def _trigger(self, rule: RuleConfig) -> BaseTrigger:
        if rule.cron is not None:
            tz = self.cfg.grafana.timezone
            return CronTrigger.from_crontab(rule.cron, timezone="UTC" if tz == "browser" else tz)
        interval = rule.interval
        start = datetime.fromtimestamp(slot_offset(rule.name, interval), UTC)
        return IntervalTrigger(seconds=interval, start_date=start, timezone=UTC)

    def _add_job(self, rule: RuleConfig) -> None:
        assert self._scheduler is not None
        grace = max(1, round(rule.interval / 2)) if rule.cron is None else 60
        self._scheduler.add_job(
            self._job,
            self._trigger(rule),
            args=(rule.name,),
            id=_JOB_PREFIX + rule.name,
            name=rule.name,
            max_instances=1,
            coalesce=True,
            misfire_grace_time=grace,
            replace_existing=True,
        )

    def _on_job_event(self, event: JobExecutionEvent) -> None:
        job_id = getattr(event, "job_id", "")
        if not job_id.startswith(_JOB_PREFIX):
            return
        name = job_id[len(_JOB_PREFIX) :]
        if event.code == EVENT_JOB_ERROR:
            log.error("rule job failed", extra={"rule": name, "error": str(event.exception)})
            return
        reason = "overrun" if event.code == EVENT_JOB_MAX_INSTANCES else "missed"
        self._metrics.rule_skipped.labels(rule=name).inc()
        log.warning("rule evaluation skipped", extra={"rule": name, "reason": reason})
