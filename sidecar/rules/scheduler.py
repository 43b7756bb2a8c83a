"""Runs every rule on its schedule with APScheduler 3.x, feeding events to the sink.

One ``AsyncIOScheduler`` (created in ``await start()``, on the running loop), one ``async`` job per
rule with ``max_instances=1``, ``coalesce=True`` and ``misfire_grace_time`` of half the interval
(60 s for a cron rule): an overrunning or late evaluation is *skipped*, like Prometheus and vmalert
do, and counted in ``rule_evaluations_skipped_total``. Interval rules run at their slot, a fixed,
deterministic offset inside their interval, the same on every replica (``slots.py``); cron rules
run in ``grafana.timezone`` (UTC when it is ``browser``).

What a run does, and what is kept between runs, is ``runner.RuleRunner``'s. Here: a run that
crashes (a bug, not a failed query) is logged and counted as a failure without taking the
scheduler down; ``shutdown`` cancels running evaluations and waits for them. ``reconfigure`` (a
config reload) has the runner reconcile its evaluators and replaces the jobs. ``heartbeat`` is
refreshed by every completed evaluation and every few seconds by a tiny job, for liveness.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

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
from sidecar.rules.engine import EventSink
from sidecar.rules.runner import Evaluator, RuleRunner
from sidecar.rules.slots import slot_offset
from sidecar.rules.state import RuleState
from sidecar.rules.templates import TemplateEngine

__all__ = ["HEARTBEAT_EVERY", "RuleScheduler"]

log = logging.getLogger(__name__)

HEARTBEAT_EVERY = 5.0
_JOB_PREFIX = "rule:"


class RuleScheduler:
    """Owns the rule jobs: ``await start()``, ``await reconfigure(cfg)``, ``await shutdown()``."""

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
        self._metrics = metrics
        self._clock = clock
        self.templates = templates if templates is not None else TemplateEngine(metrics=metrics)
        self._runner = RuleRunner(
            cfg, sink=sink, session=session, state=state, metrics=metrics, clock=clock, templates=self.templates
        )
        self._scheduler: AsyncIOScheduler | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._stopping = False
        self._beat_at: float = 0.0

    # ------------------------------------------------------------------ lifecycle

    @property
    def running(self) -> bool:
        return self._scheduler is not None and self._scheduler.running and not self._stopping

    @property
    def heartbeat(self) -> float:
        """Clock at the last sign of life: the heartbeat job, start, or a completed evaluation."""
        return max(self._beat_at, self._runner.completed_at)

    def evaluator(self, name: str) -> Evaluator | None:
        return self._runner.evaluator(name)

    def firing_keys(self) -> set[str]:
        """``alert_key`` of every firing instance (and open report), for startup reconciliation."""
        return self._runner.firing_keys()

    def resend_firing(self) -> int:
        """Every firing alert is sent again at its rule's next evaluation (a new HA leader)."""
        return self._runner.resend_firing()

    async def start(self) -> None:
        """Restore state and schedule every rule, on the running event loop."""
        loop = asyncio.get_running_loop()
        self._runner.load()
        sched = AsyncIOScheduler(event_loop=loop, timezone=UTC)
        sched.add_listener(self._on_job_event, EVENT_JOB_MAX_INSTANCES | EVENT_JOB_MISSED | EVENT_JOB_ERROR)
        self._scheduler = sched
        for rule in self.cfg.rules:
            self._add_job(rule)
        sched.add_job(self._beat, IntervalTrigger(seconds=HEARTBEAT_EVERY), id="heartbeat", coalesce=True)
        self._beat_at = self._clock()
        sched.start()

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

    async def reconfigure(self, new_cfg: Config) -> None:
        """Apply a reloaded config: the runner keeps the instances of rules keeping their name
        (``RuleRunner.reconfigure``), and the rule jobs are replaced."""
        self._runner.reconfigure(new_cfg)
        self.cfg = new_cfg
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
        self._runner.load()
        return await self._runner.run(name)

    async def _job(self, name: str) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            await self._runner.run(name)
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

    async def _beat(self) -> None:
        self._beat_at = self._clock()

    # ------------------------------------------------------------------ jobs

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
