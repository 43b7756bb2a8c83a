"""RuleScheduler (and its RuleRunner): jobs, evaluation runs, state persistence, reconfigure, skipped runs."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from sidecar.config import Config
from sidecar.metrics import Metrics
from sidecar.model import AlertEvent
from sidecar.rules.engine import Instance
from sidecar.rules.scheduler import RuleScheduler
from sidecar.rules.slots import eval_time, slot_offset
from sidecar.rules.state import RuleState
from sidecar_sandbox.prometheus import PrometheusSandbox

T0 = 1_700_000_000.0
EXPR = 'sandbox_demo_errors{service="checkout"} > 1'


@asynccontextmanager
async def serve(app: web.Application) -> AsyncIterator[str]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


def make_config(url: str, tmp_path: Path, *rules: dict[str, Any]) -> Config:
    default = {"name": "Errors", "source": "prometheus", "expr": EXPR, "every": "1s"}
    return Config.model_validate(
        {
            "flashduty": {"integration_key": "k"},
            "state_dir": str(tmp_path),
            "datasources": [{"name": "prom", "url": url, "timeout": "2s"}],
            "rules": list(rules) or [default],
        }
    )


class Env:
    def __init__(self, url: str, tmp_path: Path, sandbox: PrometheusSandbox) -> None:
        self.url, self.tmp_path, self.sandbox = url, tmp_path, sandbox
        self.events: list[AlertEvent] = []
        self.metrics = Metrics()
        self.now = T0
        self.state = RuleState.in_dir(tmp_path)

    def clock(self) -> float:
        return self.now

    def scheduler(self, cfg: Config, session: aiohttp.ClientSession, **kw: Any) -> RuleScheduler:
        return RuleScheduler(
            cfg,
            sink=kw.pop("sink", self.events.append),
            session=session,
            state=self.state,
            metrics=self.metrics,
            **kw,
        )


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    sandbox = PrometheusSandbox(value=5.0)
    async with serve(sandbox.make_app()) as url:
        e = Env(url, tmp_path, sandbox)
        yield e
        e.state.close()


async def test_scheduled_job_emits_events_with_the_real_clock(env: Env) -> None:
    cfg = make_config(env.url, env.tmp_path)
    async with aiohttp.ClientSession() as session:
        sched = env.scheduler(cfg, session)
        await sched.start()
        assert sched.running
        try:
            for _ in range(40):
                if env.events:
                    break
                await asyncio.sleep(0.1)
        finally:
            await sched.shutdown()
    assert not sched.running
    (event,) = env.events[:1]
    assert event.status == "Warning" and event.labels["service"] == "checkout"
    assert sched.heartbeat > 0


async def test_evaluate_now_with_a_fake_clock_persists_state(env: Env) -> None:
    cfg = make_config(env.url, env.tmp_path, {"name": "Errors", "source": "prometheus", "expr": EXPR, "every": "30s"})
    async with aiohttp.ClientSession() as session:
        sched = env.scheduler(cfg, session, clock=env.clock)
        (event,) = await sched.evaluate_now("Errors")
        slot = event.event_time
        phase = (slot - slot_offset("Errors", 30.0)) % 30  # on the rule's slot grid (ms-rounded)
        assert T0 - 30 < slot <= T0 and min(phase, 30 - phase) < 1e-2
        assert sched.firing_keys() == {event.alert_key}
        instances, last = env.state.load_rule("Errors")
        assert [i.state for i in instances] == ["firing"] and last == slot
        env.sandbox.value = 0.0
        env.now += 30
        (ok,) = await sched.evaluate_now("Errors")
        assert ok.status == "Ok" and sched.firing_keys() == set()
        assert await sched.evaluate_now("nope") == []


async def test_query_failure_changes_nothing(env: Env) -> None:
    cfg = make_config(env.url, env.tmp_path, {"name": "Bad", "source": "prometheus", "expr": "rate(x[5m]"})
    async with aiohttp.ClientSession() as session:
        sched = env.scheduler(cfg, session, clock=env.clock)
        assert await sched.evaluate_now("Bad") == []
    ev = sched.evaluator("Bad")
    assert ev is not None and ev.instances == {}
    assert (
        env.metrics.registry.get_sample_value("flashduty_sidecar_rule_evaluation_failures_total", {"rule": "Bad"}) == 1
    )
    assert env.state.load_rule("Bad") == ([], None)


async def test_sink_failure_retries_at_the_next_run(env: Env) -> None:
    cfg = make_config(env.url, env.tmp_path)
    fail = [True]
    got: list[AlertEvent] = []

    def sink(event: AlertEvent) -> None:
        if fail[0]:
            raise OSError("disk full")
        got.append(event)

    async with aiohttp.ClientSession() as session:
        sched = env.scheduler(cfg, session, clock=env.clock, sink=sink)
        assert await sched.evaluate_now("Errors") == []
        fail[0] = False
        env.now += 1
        (event,) = await sched.evaluate_now("Errors")
        assert event.status == "Warning" and got == [event]


async def test_start_restores_state_and_forgets_removed_rules(env: Env) -> None:
    firing = Instance("fds:old", {"alertname": "Errors", "x": "1"}, "firing", T0 - 60, fired_at=T0 - 60)
    firing.last_sent_at = T0 - 60
    env.state.save_rule("Errors", [firing], T0 - 30)
    env.state.save_rule("Removed", [], T0 - 30)
    cfg = make_config(env.url, env.tmp_path)
    async with aiohttp.ClientSession() as session:
        sched = env.scheduler(cfg, session, clock=env.clock)
        await sched.start()
        try:
            assert sched.firing_keys() == {"fds:old"}
            assert env.state.rules() == ["Errors"]
        finally:
            await sched.shutdown()


async def test_reconfigure_keeps_instances_of_kept_rules(env: Env) -> None:
    rule_a = {"name": "A", "source": "prometheus", "expr": EXPR, "every": "1m"}
    rule_b = {"name": "B", "source": "prometheus", "expr": EXPR, "every": "1m"}
    async with aiohttp.ClientSession() as session:
        sched = env.scheduler(make_config(env.url, env.tmp_path, rule_a, rule_b), session, clock=env.clock)
        await sched.start()
        try:
            await sched.evaluate_now("A")
            await sched.evaluate_now("B")
            assert len(sched.firing_keys()) == 2
            new_a = {**rule_a, "severity": "critical", "every": "2m"}
            rule_c = {"name": "C", "source": "prometheus", "expr": EXPR, "every": "1m"}
            await sched.reconfigure(make_config(env.url, env.tmp_path, new_a, rule_c))
            a = sched.evaluator("A")
            assert a is not None and a.rule.severity == "Critical" and len(a.instances) == 1
            assert sched.evaluator("B") is None and env.state.load_rule("B") == ([], None)
            c = sched.evaluator("C")
            assert c is not None and c.instances == {}
            assert sched._scheduler is not None
            jobs = {j.id: j for j in sched._scheduler.get_jobs()}
            assert set(jobs) == {"rule:A", "rule:C", "heartbeat"}
            assert jobs["rule:A"].trigger.interval.total_seconds() == 120
            env.now += 600  # resend due: the kept instance is re-sent, not re-opened
            (resend,) = await sched.evaluate_now("A")
            assert resend.status == "Critical" and resend.panels == ()
        finally:
            await sched.shutdown()


async def test_overrunning_evaluation_is_skipped_and_counted(tmp_path: Path) -> None:
    release = asyncio.Event()
    started = asyncio.Event()

    async def hang(request: web.Request) -> web.Response:
        started.set()
        await release.wait()
        return web.json_response({"status": "success", "data": {"resultType": "vector", "result": []}})

    app = web.Application()
    app.router.add_post("/api/v1/query", hang)
    metrics = Metrics()
    state = RuleState.in_dir(tmp_path)
    async with serve(app) as url, aiohttp.ClientSession() as session:
        cfg = make_config(url, tmp_path)
        cfg = cfg.model_copy(update={"datasources": [cfg.datasources[0].model_copy(update={"timeout": 10.0})]})
        sched = RuleScheduler(cfg, sink=lambda e: None, session=session, state=state, metrics=metrics)
        await sched.start()
        try:
            await asyncio.wait_for(started.wait(), 3)
            for _ in range(40):
                if metrics.registry.get_sample_value(
                    "flashduty_sidecar_rule_evaluations_skipped_total", {"rule": "Errors"}
                ):
                    break
                await asyncio.sleep(0.1)
            skipped = metrics.registry.get_sample_value(
                "flashduty_sidecar_rule_evaluations_skipped_total", {"rule": "Errors"}
            )
            assert skipped is not None and skipped >= 1
        finally:
            await sched.shutdown()  # cancels the hanging evaluation
            release.set()
    state.close()


def test_slot_offset_is_deterministic_and_inside_the_interval() -> None:
    assert slot_offset("a", 60) == slot_offset("a", 60)
    assert slot_offset("a", 60) != slot_offset("b", 60)
    assert all(0 <= slot_offset(n, 1.0) < 1.0 for n in ("a", "b", "c", "HighErrorRate"))


def test_eval_time_is_the_slot_of_the_run() -> None:
    cfg = make_config(
        "http://prom", Path("/tmp"), {"name": "Errors", "source": "prometheus", "expr": EXPR, "every": "30s"}
    )
    rule = cfg.rules[0]
    slot = T0 - (T0 - slot_offset("Errors", 30.0)) % 30  # the last slot at or before T0
    assert abs(eval_time(rule, slot + 29.0) - slot) < 1e-3
    assert abs(eval_time(rule, slot - 0.04) - slot) < 1e-3  # a wake-up a little early is still its slot
    assert abs(eval_time(rule, slot - 0.1) - (slot - 30)) < 1e-3
    cron = rule.model_copy(update={"every": None, "cron": "0 9 * * *"})
    assert eval_time(cron, T0 + 0.123) == T0 + 0.123
