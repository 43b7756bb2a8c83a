"""A storm: one rule fires for 80 instances at once, each alert's own picture a distinct capture
of the rule's panel (``var-instance``). The upload quota (limits ×10: 5 per 0.1 s AND 50 per 6 s)
cannot give 80 own pictures within the budget: every first push carries the shared picture
(one capture without ``instance``, one upload), and every alert's own picture follows as its
update. Side by side: the same storm with ``delivery.shared_pictures: false`` (the behaviour
before) leaves alerts without a picture in their first push. Flashduty is the sandbox."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from tests.support.delivery import FakeCapture, Harness, event, harness, sandbox_key
from tests.support.delivery import panel as make_panel

N = 80


def storm(n: int, severity: str = "Critical") -> list[Any]:
    base = make_panel("nodes", 4, "")
    out = []
    for i in range(n):
        p = base.__class__(**{**base.__dict__, "vars": (("env", "prod"), ("instance", f"host-{i}"))})
        out.append(event(i, severity, rule="NodeDown", panels=(p,)))  # type: ignore[arg-type]
    return out


def first_pushes(h: Harness, events: list[Any]) -> list[dict[str, Any]]:
    return [h.events(e.alert_key)[0] for e in events]


def assert_no_429(h: Harness) -> None:
    state = h.sandbox.state()
    assert state["http_429"]["upload"] == 0 and state["http_429"]["push"] == 0


async def test_a_storm_gets_a_shared_picture_first_and_every_own_picture_follows(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="sidecar.delivery")
    capture = FakeCapture(delay=0.01, concurrency=4)
    async with harness(tmp_path, capture=capture, time_scale=10.0, budget=1.5, followup_window=30.0) as h:
        events = storm(N)
        for e in events:
            h.put(e)
        await h.drained(timeout=40)
        firsts = first_pushes(h, events)
        assert all(f["images"] for f in firsts), sum(1 for f in firsts if not f["images"])
        own = {e.alert_key: sandbox_key(capture.image_for("nodes", e.panels[0].vars)) for e in events}
        shared_keys = {i["src"] for f in firsts for i in f["images"]} - set(own.values())
        assert len(shared_keys) == 1, shared_keys  # one shared picture for the whole storm
        [shared_alt] = {i["alt"] for f in firsts for i in f["images"] if i["src"] in shared_keys}
        assert shared_alt.endswith("alerts)"), shared_alt
        # the shared capture is the panel without the per-instance variable
        shared_reqs = [r for _, r in capture.calls if all(k != "instance" for k, _ in r.vars)]
        assert [r.vars for r in shared_reqs] == [(("env", "prod"),)]
        with_shared = [e for e, f in zip(events, firsts, strict=True) if f["images"][0]["src"] in shared_keys]
        assert with_shared, "nobody needed the shared picture: not a storm"
        for e in with_shared:  # their own picture came as the update
            evs = h.events(e.alert_key)
            assert len(evs) == 2 and [i["src"] for i in evs[1]["images"]] == [own[e.alert_key]], evs
            assert "follows as an update" in evs[0]["description"]
        for e in events:  # in the end, every alert shows its own picture
            assert [i["src"] for i in h.events(e.alert_key)[-1]["images"]] == [own[e.alert_key]]
        assert h.sandbox.stats["upload"].processed == N + 1
        assert_no_429(h)
    assert any("storm: " in r.getMessage() for r in caplog.records)


async def test_side_by_side_without_shared_pictures_alerts_go_first_without_a_picture(tmp_path: Path) -> None:
    shares: dict[bool, int] = {}
    for on in (True, False):
        capture = FakeCapture(delay=0.01, concurrency=4)
        async with harness(tmp_path / str(on), capture=capture, time_scale=10.0, budget=1.5, shared_pictures=on) as h:
            events = storm(N)
            for e in events:
                h.put(e)
            await h.drained(timeout=40)
            shares[on] = sum(1 for f in first_pushes(h, events) if f["images"])
            assert_no_429(h)
    assert shares[True] == N
    assert shares[False] < N, shares  # the quota lets about 50 through within the budget


async def test_alerts_of_different_rules_or_panels_are_not_a_storm(tmp_path: Path) -> None:
    capture = FakeCapture(delay=0.01, concurrency=4)
    async with harness(tmp_path, capture=capture, time_scale=10.0, budget=1.5) as h:
        events = [event(i, "Warning", rule=f"Rule{i}") for i in range(60)]  # each on its own dashboard
        for e in events:
            h.put(e)
        await h.drained(timeout=40)
        for i, e in enumerate(events):  # each alert ends with exactly its own picture, never a shared one
            last = h.events(e.alert_key)[-1]
            assert [im["src"] for im in last["images"]] == [sandbox_key(capture.image_for(f"d{i}"))], last
        assert h.pipeline._storms.started == 0


async def test_two_alerts_with_slow_captures_are_not_a_storm(tmp_path: Path) -> None:
    capture = FakeCapture(delay=1.2, concurrency=1)  # past half the budget, but the quota is free
    async with harness(tmp_path, capture=capture, budget=2.0) as h:
        for e in storm(2):
            h.put(e)
        await h.drained(timeout=20)
        assert h.pipeline._storms.started == 0
        assert all(any(k == "instance" for k, _ in r.vars) for _, r in capture.calls)  # no shared capture


async def test_a_storm_slowed_by_captures_gets_its_shared_picture_at_half_the_budget(tmp_path: Path) -> None:
    capture = FakeCapture(delay=0.5, concurrency=2)  # 8 alerts, 2 at a time: most miss the 2 s budget
    async with harness(tmp_path, capture=capture, budget=2.0) as h:
        events = storm(8)
        for e in events:
            h.put(e)
        await h.drained(timeout=30)
        assert h.pipeline._storms.started == 1
        assert all(f["images"] for f in first_pushes(h, events))
