"""Delivery under Flashduty faults, and a 100-alert burst at the documented limits.

Flashduty is the sandbox on a loopback port (its fault injection and its own rate-limit
counters are the referee), spoken to by the real FlashdutyClient and ImageUploader through the
real outbox and pipeline. Only the capture service is a fake (``FakeCapture``). Tests that say
so run the sandbox AND the client with ``time_scale=10``: every rate-limit window, Retry-After
and 429 backoff is 10× shorter, every count unchanged ("limits ×10").
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import pytest

from sidecar.capture.errors import CaptureClass
from tests.support.delivery import FakeCapture, Harness, event, harness, png, sandbox_key

SLACK = 1.0  # scheduling + HTTP slack on top of the image budget (CI boxes are busy)


def statuses(h: Harness, key: str) -> list[str]:
    return [e["event_status"] for e in h.events(key)]


def assert_within_limits(h: Harness) -> None:
    """The sandbox's own counters: no 429 answered, no window ever over its limit."""
    state = h.sandbox.state()
    assert state["http_429"] == {"upload": 0, "push": 0, "list": 0}
    for endpoint in ("upload", "push"):
        limits = state["limits"][endpoint]
        for scope in limits["scopes"].values():
            assert scope["rejected"] == 0
            assert scope["max_requests_in_second"] <= limits["per_second"]
            assert scope["max_requests_in_minute"] <= limits["per_minute"]


def delivery_outcomes(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.outcome for r in caplog.records if r.name == "sidecar.delivery" and hasattr(r, "outcome")]


# ---------------------------------------------------------------------------- 5xx and hangs


async def test_push_500s_are_retried_until_delivered(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="sidecar.delivery")
    async with harness(tmp_path) as h:
        h.sandbox.add_fault("status", endpoint="push", status=500, count=3)
        e = event(1)
        h.put(e)
        await h.drained()
        assert statuses(h, e.alert_key) == ["Critical"]
        [alert] = h.alerts(e.alert_key)
        assert [i["src"] for i in alert["images"]] == [sandbox_key(png(1))]
        assert h.sandbox.stats["push"].requests == 4
        # pictures uploaded by the first attempt were kept on the row: one upload, no re-capture
        assert h.sandbox.stats["upload"].requests == 1 and len(h.capture.calls) == 1
        assert h.outbox.dead_letters.entries() == []
    assert delivery_outcomes(caplog) == ["retry", "retry", "retry", "delivered"]


async def test_upload_failure_never_holds_the_alert(tmp_path: Path) -> None:
    async with harness(tmp_path, budget=5.0) as h:
        h.sandbox.add_fault("status", endpoint="upload", status=500, count=1)
        e = event(2)
        t0 = time.time()
        h.put(e)
        await h.drained()
        [pushed] = h.events(e.alert_key)
        assert pushed["received_at"] - t0 < 2.0  # failed at once: no reason to wait out the 5 s budget
        assert 'Picture "CPU host-2" missing: upload failed (InternalError)' in pushed["description"]


async def test_push_hanging_past_the_timeout_is_retried(tmp_path: Path) -> None:
    async with harness(tmp_path, timeout=0.4) as h:
        h.sandbox.add_fault("hang", endpoint="push", seconds=1.5, count=1)
        e = event(3, panels=())
        h.put(e)
        await h.drained()
        await h.wait_for(lambda: h.sandbox.stats["push"].processed == 2, 3.0, "the hung push to land")
        # the hung request landed too (a lost reply): same alert_key, merged into one alert
        [alert] = h.alerts(e.alert_key)
        assert alert["alert_status"] == "Critical" and alert["event_cnt"] >= 1
        assert h.outbox.dead_letters.entries() == []


async def test_exhausted_attempts_go_to_dead_letters(tmp_path: Path) -> None:
    async with harness(tmp_path, max_attempts=2) as h:
        h.sandbox.add_fault("status", endpoint="push", status=503)
        e = event(4, panels=())
        h.put(e)
        await h.wait_for(lambda: h.outbox.dead_letter_count() == 1, 5.0, "a dead letter")
        [dl] = h.outbox.dead_letters.entries()
        assert dl["attempts"] == 2 and "503" in dl["last_error"] and dl["request_id"]
        assert h.sample("dead_letters") == 1
        h.sandbox.clear_faults()
        assert h.outbox.dead_letters.retry(dl["id"]) == 1
        h.pipeline.kick()
        await h.drained()
        assert statuses(h, e.alert_key) == ["Critical"]


# ---------------------------------------------------------------------------- 401


async def test_401_is_dead_lettered_at_once_with_a_clear_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="sidecar.delivery")
    async with harness(tmp_path) as h:
        h.sandbox.add_fault("401", endpoint="push")  # until cleared: a revoked key
        e = event(5, panels=())
        h.put(e)
        await h.wait_for(lambda: h.outbox.dead_letter_count() == 1, 5.0, "a dead letter")
        await asyncio.sleep(0.3)
        assert h.sandbox.stats["push"].requests == 1  # not retried in a loop
        [dl] = h.outbox.dead_letters.entries()
        assert dl["attempts"] == 1
        assert "integration_key rejected" in dl["last_error"] and "FLASHDUTY_INTEGRATION_KEY" in dl["last_error"]
        assert "5ecret" not in dl["last_error"]
        [rec] = [r for r in caplog.records if getattr(r, "outcome", None) == "dead_letter"]
        assert rec.levelno == logging.ERROR and "dead-lettered after 1 attempt(s)" in rec.getMessage()
        # the key is fixed: the operator requeues it
        h.sandbox.clear_faults()
        assert h.outbox.dead_letters.retry(None) == 1
        h.pipeline.kick()
        await h.drained()
        assert statuses(h, e.alert_key) == ["Critical"]


# ---------------------------------------------------------------------------- 429


@pytest.mark.parametrize("retry_after", ["1", None], ids=["retry-after", "no-retry-after"])
async def test_429_bursts_are_waited_out_without_spending_attempts(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, retry_after: str | None
) -> None:
    """time_scale=10 (client and sandbox): Retry-After 1 s and the backoff are 10× shorter."""
    caplog.set_level(logging.INFO, logger="sidecar.delivery")
    async with harness(tmp_path, time_scale=10, max_attempts=2) as h:
        spec = {"retry_after": retry_after} if retry_after else {}
        h.sandbox.add_fault("429", endpoint="push", count=4, **spec)
        h.sandbox.add_fault("429", endpoint="upload", count=3, **spec)
        keys = [event(n).alert_key for n in range(10, 15)]
        for n in range(10, 15):
            h.put(event(n))
        await h.drained(timeout=15)
        for n, key in zip(range(10, 15), keys, strict=True):
            [alert] = h.alerts(key)
            assert [i["src"] for i in alert["images"]] == [sandbox_key(png(n))]
        assert h.outbox.dead_letters.entries() == []
        assert h.sandbox.stats["push"].statuses[429] == 4
        assert h.sandbox.stats["upload"].statuses[429] == 3
    assert "retry" not in delivery_outcomes(caplog)  # waited inside the client, never a failed attempt


async def test_upload_stuck_behind_429_push_goes_on_budget_and_picture_follows(tmp_path: Path) -> None:
    async with harness(tmp_path, budget=0.5) as h:
        h.sandbox.add_fault("429", endpoint="upload", count=1, retry_after="1")
        e = event(20)
        t0 = time.time()
        h.put(e)
        await h.wait_for(lambda: len(h.events(e.alert_key)) == 2, 5.0, "the follow-up")
        first, follow = h.events(e.alert_key)
        assert first["received_at"] - t0 <= 0.5 + SLACK
        assert 'Picture "CPU host-20" missing: upload still queued behind the rate limit' in first["description"]
        assert [i["src"] for i in follow["images"]] == [sandbox_key(png(20))]


# ---------------------------------------------------------------------------- ordering


async def test_firing_then_ok_never_arrives_reversed_under_faults(tmp_path: Path) -> None:
    """Twenty keys fire, then resolve, while pushes fail with 500s: no key ends open, and at the
    sandbox no firing ever arrives after its Ok (which would reopen the alert). time_scale=10."""
    async with harness(tmp_path, budget=0.3, time_scale=10) as h:
        h.sandbox.add_fault("status", endpoint="push", status=500, count=15)
        for n in range(30, 50):
            h.capture.set(f"d{n}", delay=0.05 * (n % 7))
            h.put(event(n, rule="Flappy"))
        await asyncio.sleep(0.25)
        for n in range(30, 50):
            h.put(event(n, "Ok", rule="Flappy", panels=()))
        await h.drained(timeout=15)
        assert not [a for a in h.sandbox.alerts if a.active]
        for n in range(30, 50):
            seen = statuses(h, event(n, rule="Flappy").alert_key)
            if "Ok" in seen:
                assert "Critical" not in seen[seen.index("Ok") :], seen
        assert h.outbox.dead_letters.entries() == []


# ---------------------------------------------------------------------------- burst


@pytest.mark.slow
async def test_burst_of_100_alerts_with_pictures_at_the_limits(tmp_path: Path) -> None:
    """100 alerts, each with its own picture; sandbox and client at time_scale=10, i.e. uploads
    limited to 5 per 0.1 s and 50 per 6 s (the documented 5/s and 50/min, ×10).

    Uploading 100 pictures then takes two 6 s windows: about half the pictures cannot be ready
    within the 2 s image budget. What the product promises, and what is asserted: every alert
    is pushed by its budget (enqueue → push at the sandbox ≤ budget + slack), the pictures that
    miss it arrive by follow-up, every alert ends up referencing its own picture, the sandbox
    never answers 429 and none of its rate-limit windows ever exceeds the limit.
    """
    budget = 2.0
    capture = FakeCapture(delay=0.02, concurrency=8)
    async with harness(tmp_path, time_scale=10, budget=budget, capture=capture) as h:
        for n in range(100):
            h.put(event(n))
        await h.drained(timeout=30)
        late, waits = 0, []
        for n in range(100):
            key = event(n).alert_key
            evs = h.events(key)
            assert evs, f"alert {n} never reached the sandbox"
            waited = evs[0]["received_at"] - h.put_at[key]
            waits.append(waited)
            assert waited <= budget + SLACK, f"alert {n} pushed {waited:.2f}s after its put"
            [alert] = h.alerts(key)
            assert [i["src"] for i in alert["images"]] == [sandbox_key(png(n))], f"alert {n} lacks its picture"
            if len(evs) > 1:
                late += 1
                # normally "upload still queued behind the rate limit"; on a loaded box the capture itself
                # may be the late part — either way the push said which picture is missing and why
                assert 'Picture "' in evs[0]["description"] and "missing: " in evs[0]["description"]
        assert late >= 40  # the second upload window really was needed (the test can fail)
        assert sorted(waits)[50] <= budget + SLACK / 2  # typical alert: the budget holds end to end (push reserve)
        assert_within_limits(h)
        assert h.sandbox.stats["upload"].processed == 100


async def test_every_capture_class_is_survivable(tmp_path: Path) -> None:
    capture = FakeCapture()
    for n, cls in enumerate(CaptureClass):
        capture.set(f"d{60 + n}", cls=cls)
    async with harness(tmp_path, budget=1.0, capture=capture) as h:
        for n in range(len(CaptureClass)):
            h.put(event(60 + n))
        await h.drained()
        assert len(h.delivered_keys()) == len(CaptureClass)
