"""Rule state in SQLite, and restoring ``for`` after a restart (Prometheus ``RestoreForState``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sidecar.config import Config
from sidecar.rules.engine import RuleEvaluator, Sample
from sidecar.rules.state import RuleState, WebhookAlert
from sidecar.rules.templates import TemplateEngine

MIN = 60.0
T0 = 1_700_000_000.0
A = Sample({"instance": "a"}, 1.0)


def make_config(**rule: Any) -> Config:
    return Config.model_validate(
        {
            "flashduty": {"integration_key": "k"},
            "datasources": [{"name": "prom", "url": "http://prom:9090"}],
            "rules": [{"name": "Slow", "source": "prometheus", "expr": "x > 1", "every": "1m", **rule}],
        }
    )


def evaluator(cfg: Config) -> RuleEvaluator:
    return RuleEvaluator(cfg.rules[0], cfg, templates=TemplateEngine())


def run(ev: RuleEvaluator, start: float, end: float, samples: list[Sample]) -> list[tuple[float, str]]:
    """Evaluate every minute from ``start`` to ``end`` inclusive; (time, status) of each event."""
    out: list[tuple[float, str]] = []
    t = start
    while t <= end:
        out += [(t, e.status) for e in ev.evaluate(samples, t)]
        t += MIN
    return out


@pytest.fixture
def state(tmp_path: Path) -> Iterator[RuleState]:
    s = RuleState.in_dir(tmp_path / "state")
    yield s
    s.close()


def restart(state: RuleState, cfg: Config, *, at: float) -> RuleEvaluator:
    """Persist nothing more; build a fresh evaluator from the file, as after a process restart."""
    ev = evaluator(cfg)
    instances, last = state.load_rule(cfg.rules[0].name)
    ev.restore(instances, last_eval_at=last, now=at)
    return ev


# (for, minute of the last evaluation before going down, minute of the restart, minute it fires)
RESTORE_ROWS = [
    # remaining 30 − 9 = 21m ≥ grace: downtime (10m) does not count → 30 + 10
    pytest.param("30m", 9, 19, 40, id="shift active_at by the downtime"),
    # remaining 30 − 24 = 6m < grace 10m: fires exactly grace after the restart (29 + 10)
    pytest.param("30m", 24, 29, 39, id="grace period after restart"),
    # outage 2h > tolerance 1h: for starts over at the restart (129 + 30)
    pytest.param("30m", 9, 129, 159, id="outage longer than tolerance restarts for"),
    # for 5m < grace 10m: not restored, waits its normal for from the restart (4 + 5)
    pytest.param("5m", 2, 4, 9, id="for shorter than grace is not restored"),
]


@pytest.mark.parametrize(("hold", "last", "back", "fires_at"), RESTORE_ROWS)
def test_for_restore(state: RuleState, hold: str, last: int, back: int, fires_at: int) -> None:
    cfg = make_config(**{"for": hold})
    ev = evaluator(cfg)
    assert run(ev, T0, T0 + last * MIN, [A]) == []
    state.save_rule("Slow", ev.instances.values(), ev.last_eval_at)
    ev2 = restart(state, cfg, at=T0 + back * MIN)
    events = run(ev2, T0 + back * MIN, T0 + (fires_at + 1) * MIN, [A])
    assert events == [(T0 + fires_at * MIN, "Warning")]


def test_firing_instance_survives_restart_and_resolves(state: RuleState) -> None:
    cfg = make_config(resend_interval="10m")
    ev = evaluator(cfg)
    assert run(ev, T0, T0 + 2 * MIN, [A]) == [(T0, "Warning")]
    state.save_rule("Slow", ev.instances.values(), ev.last_eval_at)
    ev2 = restart(state, cfg, at=T0 + 3 * 3600)  # even after a long outage: the alert is open in Flashduty
    assert ev2.firing_count == 1
    (resend,) = ev2.evaluate([A], T0 + 3 * 3600)  # a re-send (last sent 3h ago), not a new alert
    assert resend.status == "Warning" and resend.active_at == T0 and resend.panels == ()
    (ok,) = ev2.evaluate([], T0 + 3 * 3600 + MIN)
    assert ok.status == "Ok" and ok.active_at == T0


def test_resolved_but_unsent_ok_is_sent_after_restart(state: RuleState) -> None:
    cfg = make_config()
    ev = evaluator(cfg)
    ev.evaluate([A], T0)
    (ok,) = ev.evaluate([], T0 + MIN)
    ev.unsend(ok)  # crashed before the outbox took it
    state.save_rule("Slow", ev.instances.values(), ev.last_eval_at)
    ev2 = restart(state, cfg, at=T0 + 5 * MIN)
    (again,) = ev2.evaluate([], T0 + 5 * MIN)
    assert again.status == "Ok" and again.resolved_at == T0 + MIN


def test_round_trip_keeps_every_field(state: RuleState) -> None:
    cfg = make_config(keep_firing_for="5m")
    ev = evaluator(cfg)
    ev.evaluate([Sample({"instance": "a", "x": "1"}, 2.5, annotations={"k": "v"})], T0)
    ev.evaluate([], T0 + MIN)  # keep_firing_since set
    state.save_rule("Slow", ev.instances.values(), ev.last_eval_at)
    instances, last = state.load_rule("Slow")
    assert last == T0 + MIN
    assert instances == sorted(ev.instances.values(), key=lambda i: i.key)


def test_save_skips_unchanged_instances_but_updates_heartbeat(state: RuleState) -> None:
    cfg = make_config()
    ev = evaluator(cfg)
    ev.evaluate([A], T0)
    state.save_rule("Slow", ev.instances.values(), ev.last_eval_at)
    ev.evaluate([Sample({"instance": "a"}, 7.0)], T0 + MIN)  # value only
    state.save_rule("Slow", ev.instances.values(), ev.last_eval_at)
    instances, last = state.load_rule("Slow")
    assert last == T0 + MIN
    assert instances[0].value == 1.0  # not rewritten for a value change


def test_drop_rules_except(state: RuleState) -> None:
    for name in ("Slow", "Gone"):
        cfg = make_config(name=name)
        ev = evaluator(cfg)
        ev.evaluate([A], T0)
        state.save_rule(name, ev.instances.values(), ev.last_eval_at)
    assert state.drop_rules_except(["Slow"]) == ["Gone"]
    assert state.load_rule("Gone") == ([], None)
    assert len(state.load_rule("Slow")[0]) == 1


def test_state_file_survives_reopen(tmp_path: Path) -> None:
    s = RuleState.in_dir(tmp_path)
    s.webhook_put(WebhookAlert("fp1", "fds:x", "firing", "2024-01-01T00:00:00Z", T0, T0))
    s.close()
    s2 = RuleState(tmp_path / "rules.sqlite3")
    assert s2.webhook_get("fp1") == WebhookAlert("fp1", "fds:x", "firing", "2024-01-01T00:00:00Z", T0, T0)
    assert s2.webhook_get("nope") is None
    s2.close()


def test_webhook_prune(state: RuleState) -> None:
    state.webhook_put(WebhookAlert("old-resolved", "k1", "resolved", "", T0, T0))
    state.webhook_put(WebhookAlert("new-resolved", "k2", "resolved", "", T0, T0 + 86000))
    state.webhook_put(WebhookAlert("old-firing", "k3", "firing", "", T0, T0))
    assert state.webhook_prune(T0 + 86401) == 1
    assert state.webhook_get("old-resolved") is None
    assert state.webhook_get("old-firing") is not None
    assert state.webhook_prune(T0 + 31 * 86400) == 2
