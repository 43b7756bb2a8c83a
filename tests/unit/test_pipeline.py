"""DeliveryPipeline: image budget, notes, follow-ups, coalescing, log line, shutdown.

Flashduty is the real sandbox on a loopback port with the real client and uploader; the
capture service is replaced by ``SlowCapture``, a hand-written fake of that collaborator that
answers per dashboard after a delay (or with a failure class).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import io
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from sidecar.capture.errors import CaptureClass
from sidecar.capture.result import CaptureResult
from sidecar.capture.urls import human_link
from sidecar.config import Config, DeliveryConfig
from sidecar.delivery.outbox import Outbox
from sidecar.delivery.pipeline import DeliveryPipeline
from sidecar.delivery.push_slots import PipelineSettings, PushSlots
from sidecar.flashduty.client import FlashdutyClient
from sidecar.flashduty.uploader import ImageUploader
from sidecar.metrics import Metrics
from sidecar.model import AlertEvent, EventStatus, PanelCapture, alert_key
from sidecar_sandbox.flashduty import FlashdutySandbox
from tests.support.wait import eventually

KEY = "fd-int-pipeline-5ecret-0123456789"
SLACK = 1.0  # seconds of scheduling/HTTP slack allowed on top of the image budget (CI boxes are busy)


def png(seed: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (16, 8), (seed % 256, (seed * 7) % 256, 99)).save(buf, format="PNG")
    return buf.getvalue()


class SlowCapture:
    """Fake capture service: per dashboard, a delay and a class; a timeout past ``timeout``."""

    def __init__(self) -> None:
        self.plan: dict[str, tuple[float, CaptureClass]] = {}
        self.calls = 0

    def link(self, render_url: str) -> str:
        return human_link(render_url)

    def panel_url(self, req: PanelCapture) -> str:
        return f"http://grafana.test/d/{req.dashboard}?viewPanel={req.panel}"

    async def capture(self, req: PanelCapture, *, timeout: float | None = None, rank: int = 5) -> CaptureResult:
        self.calls += 1
        delay, cls = self.plan.get(req.dashboard, (0.01, CaptureClass.OK))
        limit = timeout if timeout is not None else 20.0
        if delay > limit:
            await asyncio.sleep(limit)
            cls = CaptureClass.TIMEOUT
        else:
            await asyncio.sleep(delay)
        image = png(sum(req.dashboard.encode())) if cls is CaptureClass.OK else None
        return CaptureResult(
            request=req,
            cls=cls,
            image=image,
            content_type="image/png" if image else None,
            url=self.panel_url(req),
            steps={},
            detail=f"{cls.value} (fake)",
            title=f"Grafana {req.dashboard}",
        )


def panel(dashboard: str, title: str = "") -> PanelCapture:
    return PanelCapture(dashboard=dashboard, panel="2", time_from="now-1h", time_to="now", title=title)


def ev(
    status: EventStatus = "Critical", *, panels: tuple[PanelCapture, ...] = (), n: int = 1, title: str = ""
) -> AlertEvent:
    labels = {"alertname": "HighErrorRate", "service": f"web{n}"}
    return AlertEvent(
        alert_key=alert_key("HighErrorRate", labels),
        rule="HighErrorRate",
        status=status,
        title=title or f"High error rate on web{n}",
        description="5 errors/s",
        labels=labels,
        panels=panels,
    )


@dataclass
class Rig:
    sandbox: FlashdutySandbox
    outbox: Outbox
    pipeline: DeliveryPipeline
    capture: SlowCapture
    metrics: Metrics
    budget: float

    def put(self, e: AlertEvent) -> int:
        eid = self.outbox.put(e)
        self.pipeline.kick()
        return eid

    def events(self, key: str) -> list[dict[str, Any]]:
        return [e for a in self.sandbox.alerts if a.alert_key == key for e in a.to_state()["events"]]

    async def until(self, cond: Callable[[], object], timeout: float = 5.0) -> None:
        await eventually(cond, "the condition", timeout)

    async def settled(self) -> None:
        """Nothing pending or in progress. The sandbox records an event before it answers the
        push, so what the client does with the answer (ack, metrics) may still be under way."""
        await self.until(lambda: self.outbox.pending_count() == 0 and self.pipeline.idle)

    def sample(self, name: str, **labels: str) -> float:
        return self.metrics.registry.get_sample_value(f"flashduty_sidecar_{name}", labels) or 0.0


@contextlib.asynccontextmanager
async def rig(tmp_path: Path, *, budget: float = 0.5, workers: int = 2) -> AsyncIterator[Rig]:
    sandbox = FlashdutySandbox(integration_keys=(KEY,))
    async with sandbox.serve() as url:
        config = Config.model_validate(
            {
                "flashduty": {"api_host": url, "integration_key": KEY, "timeout": "2s"},
                "capture": {"image_budget": f"{round(budget * 1000)}ms", "timeout": "3s"},
                "delivery": {"workers": workers},
                "state_dir": str(tmp_path),
            }
        )
        metrics = Metrics()
        client = FlashdutyClient(config.flashduty, metrics=metrics)
        uploader = ImageUploader(client, db_path=None, ttl=3600, metrics=metrics)
        outbox = Outbox.in_dir(tmp_path, rng=lambda: 0.05)
        capture = SlowCapture()
        pipeline = DeliveryPipeline(
            outbox=outbox,
            capture=capture,
            uploader=uploader,
            client=client,
            settings=PipelineSettings.from_config(config),
            metrics=metrics,
        )
        await pipeline.start()
        try:
            yield Rig(sandbox, outbox, pipeline, capture, metrics, budget)
        finally:
            await pipeline.stop(grace=1.0)
            await uploader.close()
            await client.close()
            outbox.close()


def delivery_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "sidecar.delivery" and hasattr(r, "outcome")]


# ---------------------------------------------------------------------------- push slots


async def test_push_slots_serve_by_priority_then_fifo() -> None:
    slots = PushSlots(1)
    order: list[str] = []
    hold = asyncio.Event()

    async def user(name: str, prio: int) -> None:
        async with slots.acquire(prio):
            order.append(name)
            if name == "first":
                await hold.wait()

    first = asyncio.create_task(user("first", 3))
    await asyncio.sleep(0)
    tasks = [asyncio.create_task(user(n, p)) for n, p in (("info", 3), ("crit-a", 1), ("ok", 0), ("crit-b", 1))]
    await asyncio.sleep(0)
    hold.set()
    await asyncio.gather(first, *tasks)
    assert order == ["first", "ok", "crit-a", "crit-b", "info"]


async def test_push_slot_waiter_cancelled_does_not_leak_the_slot() -> None:
    slots = PushSlots(1)
    hold = asyncio.Event()

    async def holder() -> None:
        async with slots.acquire(1):
            await hold.wait()

    h = asyncio.create_task(holder())
    await asyncio.sleep(0)
    waiter = asyncio.create_task(holder())
    await asyncio.sleep(0)
    waiter.cancel()
    hold.set()
    await h
    with pytest.raises(asyncio.CancelledError):
        await waiter
    async with asyncio.timeout(1):
        async with slots.acquire(2):
            pass


async def test_push_slots_resize_grants_waiters_and_holds_back_when_shrunk() -> None:
    slots = PushSlots(1)
    running: set[int] = set()
    release = {i: asyncio.Event() for i in range(5)}

    async def push(i: int) -> None:
        async with slots.acquire(1):
            running.add(i)
            await release[i].wait()
            running.discard(i)

    tasks = [asyncio.create_task(push(i)) for i in range(3)]
    await eventually(lambda: running == {0}, "one push at a time")
    slots.resize(3)  # a reload raised delivery.workers: the waiting pushes start now
    await eventually(lambda: running == {0, 1, 2}, "three pushes at once")

    slots.resize(1)  # lowered while three run: no new push until fewer than one runs
    tasks += [asyncio.create_task(push(i)) for i in (3, 4)]
    for i in (0, 1):
        release[i].set()
        await eventually(lambda i=i: i not in running, f"push {i} to end")
        assert 3 not in running and 4 not in running, "a push started over the lowered limit"
    release[2].set()
    await eventually(lambda: running == {3}, "the next push once the last of the three ended")
    release[3].set()
    await eventually(lambda: running == {4}, "then the one after")
    release[4].set()
    await asyncio.gather(*tasks)


# ---------------------------------------------------------------------------- delivery


async def test_alert_without_panels_is_pushed_with_the_canonical_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="sidecar.delivery")
    async with rig(tmp_path) as r:
        e = ev()
        r.put(e)
        await r.until(lambda: len(r.events(e.alert_key)) == 1)
        await r.settled()
        [event] = r.events(e.alert_key)
        assert event["event_status"] == "Critical"
        assert event["labels"]["sidecar_rule"] == "HighErrorRate"
        assert r.sample("alerts_delivered_total", status="Critical", pictures="none") == 1
        assert r.sample("delivery_duration_seconds_count") == 1
        assert r.sample("outbox_pending") == 0
    [rec] = delivery_records(caplog)
    assert rec.getMessage().startswith(f"delivered Critical HighErrorRate {e.alert_key[:12]}… pictures 0/0 in ")
    assert rec.outcome == "delivered" and rec.rule == "HighErrorRate" and rec.alert_key == e.alert_key  # type: ignore[attr-defined]
    assert rec.status == "Critical" and rec.captures == [] and isinstance(rec.duration_ms, int)  # type: ignore[attr-defined]


async def test_a_reload_applies_the_reserved_labels_a_rule_now_sets(tmp_path: Path) -> None:
    async with rig(tmp_path) as r:
        reset = {"layer_person_reset_1": "oncall-b"}
        first = ev(n=1)
        first = dataclasses.replace(first, labels={**first.labels, **reset})
        r.put(first)
        await r.until(lambda: len(r.events(first.alert_key)) == 1)
        assert "layer_person_reset_1" not in r.events(first.alert_key)[0]["labels"]  # no rule wrote it

        r.pipeline.reconfigure(
            PipelineSettings.from_config(
                Config.model_validate(
                    {
                        "flashduty": {"api_host": "http://flashduty.test", "integration_key": KEY},
                        "rules": [
                            {"name": "HighErrorRate", "source": "prometheus", "expr": "errors > 5", "labels": reset}
                        ],
                        "delivery": {"workers": 2},
                    }
                )
            )
        )
        second = ev(n=2)
        second = dataclasses.replace(second, labels={**second.labels, **reset})
        r.put(second)
        await r.until(lambda: len(r.events(second.alert_key)) == 1)
        assert r.events(second.alert_key)[0]["labels"]["layer_person_reset_1"] == "oncall-b"


async def test_pictures_are_captured_uploaded_and_referenced(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="sidecar.delivery")
    async with rig(tmp_path) as r:
        e = ev(panels=(panel("cpu", "CPU"), panel("mem")))
        r.put(e)
        await r.until(lambda: len(r.events(e.alert_key)) == 1)
        await r.settled()
        [event] = r.events(e.alert_key)
        images = event["images"]
        assert [i["alt"] for i in images] == ["CPU", "Grafana mem"]  # configured title, else Grafana's
        assert images[0]["href"] == "http://grafana.test/d/cpu?viewPanel=2"
        assert all(i["src"] in r.sandbox.images for i in images)
        assert "missing" not in event["description"]
        assert r.sample("alerts_delivered_total", status="Critical", pictures="all") == 1
    [rec] = delivery_records(caplog)
    assert "pictures 2/2" in rec.getMessage()
    assert [c["cls"] for c in rec.captures] == ["ok", "ok"]  # type: ignore[attr-defined]
    assert [u["outcome"] for u in rec.uploads] == ["uploaded", "uploaded"]  # type: ignore[attr-defined]


async def test_slow_capture_push_on_budget_then_follow_up(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="sidecar.delivery")
    async with rig(tmp_path, budget=0.5) as r:
        r.capture.plan["slow"] = (1.2, CaptureClass.OK)
        e = ev(panels=(panel("fast", "Fast"), panel("slow", "Slow")))
        t0 = time.time()
        r.put(e)
        await r.until(lambda: len(r.events(e.alert_key)) == 1)
        first = r.events(e.alert_key)[0]
        assert first["received_at"] - t0 <= r.budget + SLACK
        assert [i["alt"] for i in first["images"]] == ["Fast"]
        assert 'Picture "Slow" missing: capture not finished within the 0.5s image budget' in first["description"]
        await r.until(lambda: len(r.events(e.alert_key)) == 2)
        follow = r.events(e.alert_key)[1]
        assert follow["event_status"] == "Critical" and follow["title"] == first["title"]
        assert [i["alt"] for i in follow["images"]] == ["Fast", "Slow"]
        assert "missing" not in follow["description"]
        await r.settled()
        assert r.sample("alerts_delivered_total", status="Critical", pictures="partial") == 1
        assert r.sample("alerts_delivered_total", status="Critical", pictures="followup") == 1
    outcomes = [rec.outcome for rec in delivery_records(caplog)]  # type: ignore[attr-defined]
    assert outcomes == ["delivered", "followup"]


async def test_picture_ready_during_the_push_still_follows(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The picture misses the budget, then comes in while the push is still on the wire: it is
    no longer pending when the push returns, but it was not in the push either."""
    caplog.set_level(logging.INFO, logger="sidecar.delivery")
    async with rig(tmp_path, budget=0.3) as r:
        r.capture.plan["slow"] = (0.45, CaptureClass.OK)  # after the budget, before the push answers
        r.sandbox.add_fault("hang", endpoint="push", seconds=0.6, count=1)  # processed, answered late
        e = ev(panels=(panel("slow", "Slow"),))
        r.put(e)
        await r.until(lambda: len(r.events(e.alert_key)) == 2)
        first, follow = r.events(e.alert_key)
        assert 'Picture "Slow" missing' in first["description"] and not first.get("images")
        assert [i["alt"] for i in follow["images"]] == ["Slow"]
        await r.settled()
    outcomes = [rec.outcome for rec in delivery_records(caplog)]  # type: ignore[attr-defined]
    assert outcomes == ["delivered", "followup"]


async def test_failed_captures_are_explained_and_not_followed_up(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="sidecar.delivery")
    async with rig(tmp_path, budget=1.0) as r:
        r.capture.plan["login"] = (0.01, CaptureClass.LOGIN)
        r.capture.plan["gone"] = (0.01, CaptureClass.NOT_FOUND)
        e = ev(panels=(panel("login", "A"), panel("gone", "B")))
        r.put(e)
        await r.until(lambda: len(r.events(e.alert_key)) == 1)
        await r.until(lambda: r.pipeline.idle)
        [event] = r.events(e.alert_key)
        assert "images" not in event or not event["images"]
        assert 'Picture "A" missing: Grafana answered with the login page' in event["description"]
        assert 'Picture "B" missing: not found in Grafana' in event["description"]
        assert r.sample("alerts_delivered_total", status="Critical", pictures="missing") == 1
        await r.settled()  # nothing queued, nothing running: no follow-up can come any more
        assert len(r.events(e.alert_key)) == 1
    [rec] = delivery_records(caplog)  # the one line names the rule, each panel and why it has no picture
    message = rec.getMessage()
    assert message.startswith("delivered Critical HighErrorRate ") and "pictures 0/2" in message, message
    assert '"A" without picture: Grafana answered with the login page' in message, message
    assert '"B" without picture: not found in Grafana' in message, message
    assert [c.get("reason", "")[:15] for c in rec.captures] == ["Grafana answere", "not found in Gr"]  # type: ignore[attr-defined]


async def test_ok_waits_at_most_the_budget_and_gets_no_follow_up(tmp_path: Path) -> None:
    async with rig(tmp_path, budget=0.4) as r:
        r.capture.plan["slow"] = (2.0, CaptureClass.OK)
        firing = ev()
        r.put(firing)
        await r.until(lambda: len(r.events(firing.alert_key)) == 1)
        t0 = time.time()
        r.put(ev("Ok", panels=(panel("slow", "Slow"),)))
        await r.until(lambda: len(r.events(firing.alert_key)) == 2)
        ok = r.events(firing.alert_key)[1]
        assert ok["event_status"] == "Ok" and ok["received_at"] - t0 <= r.budget + SLACK
        # an Ok's capture is bounded by the budget: it times out rather than feed a follow-up
        assert 'Picture "Slow" missing' in ok["description"]
        await r.settled()  # nothing queued, nothing running: no follow-up can come any more
        assert [x["event_status"] for x in r.events(firing.alert_key)] == ["Critical", "Ok"]


async def test_follow_up_is_dropped_when_a_newer_event_was_sent(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="sidecar.delivery")
    async with rig(tmp_path, budget=0.3) as r:
        r.capture.plan["slow"] = (0.9, CaptureClass.OK)
        e = ev(panels=(panel("slow", "Slow"),))
        r.put(e)
        await r.until(lambda: len(r.events(e.alert_key)) == 1)
        r.put(ev("Ok"))
        await r.until(lambda: len(r.events(e.alert_key)) == 2)
        await r.settled()  # nothing queued, nothing running: no follow-up can come any more
        assert [x["event_status"] for x in r.events(e.alert_key)] == ["Critical", "Ok"]
        assert not any(a.active for a in r.sandbox.alerts)
    assert "dropped_stale" in [rec.outcome for rec in delivery_records(caplog)]  # type: ignore[attr-defined]


async def test_three_quick_updates_coalesce_behind_the_one_in_flight(tmp_path: Path) -> None:
    async with rig(tmp_path, budget=0.4) as r:
        r.capture.plan["slow"] = (5.0, CaptureClass.OK)
        first = ev("Warning", panels=(panel("slow"),), title="v1")
        r.put(first)
        await r.until(lambda: r.outbox.in_flight_count() == 1)
        r.put(ev("Critical", title="v2"))
        r.put(ev("Warning", title="v3"))
        r.put(ev("Ok", title="v4"))
        assert r.outbox.pending_count() == 2  # the one in flight + the newest state
        await r.until(lambda: len(r.events(first.alert_key)) == 2)
        await r.until(lambda: r.outbox.pending_count() == 0)
        titles = [(x["event_status"], x["title"]) for x in r.events(first.alert_key)]
        assert titles == [("Warning", "v1"), ("Ok", "v4")]


async def test_urgent_events_are_claimed_first(tmp_path: Path) -> None:
    async with rig(tmp_path, workers=1) as r:
        await r.pipeline.stop(grace=0.1)  # queue while stopped, then start a fresh pipeline
        for n, status in enumerate(("Info", "Warning", "Critical"), start=1):
            r.outbox.put(ev(status, n=n))
        order = []
        while (item := r.outbox.claim()) is not None:
            order.append(item.event.status)
        assert order == ["Critical", "Warning", "Info"]


async def test_stop_pushes_within_grace_without_the_late_pictures(tmp_path: Path) -> None:
    async with rig(tmp_path, budget=10.0) as r:
        r.capture.plan["slow"] = (5.0, CaptureClass.OK)
        e = ev(panels=(panel("slow", "Slow"),))
        r.put(e)
        await r.until(lambda: r.outbox.in_flight_count() == 1)
        t0 = time.monotonic()
        await r.pipeline.stop(grace=2.0)
        assert time.monotonic() - t0 < 3.0  # well before the picture
        [event] = r.events(e.alert_key)  # pushed after half the grace, without its picture
        assert 'Picture "Slow" missing' in event["description"]
        assert r.outbox.pending_count() == 0


async def test_stop_leaves_an_unpushed_event_in_the_outbox(tmp_path: Path) -> None:
    async with rig(tmp_path) as r:
        r.sandbox.add_fault("hang", endpoint="push", seconds=5)
        e = ev()
        eid = r.put(e)
        await r.until(lambda: r.sandbox.stats["push"].requests == 1)
        await r.pipeline.stop(grace=0.2)
        assert r.outbox.pending_count() == 1 and r.outbox.in_flight_count() == 0
        item = r.outbox.claim()
        assert item is not None and item.id == eid and item.attempts == 0
        r.sandbox.clear_faults()


async def test_an_unexpected_failure_closes_the_pictures_and_keeps_the_event(tmp_path: Path) -> None:
    """A bug while building the push (here: a description that is not a string) must not leave
    the event's capture tasks running unowned: they are closed, and the event is kept (here
    in the dead letters: one attempt allowed) with the error."""
    async with rig(tmp_path, budget=0.3) as r:
        r.outbox.reconfigure(DeliveryConfig(max_attempts=1))
        r.capture.plan["slow"] = (3.0, CaptureClass.OK)
        bad = dataclasses.replace(ev(panels=(panel("slow"),)), description=5)  # type: ignore[arg-type]
        r.put(bad)

        def pictures_running() -> list[asyncio.Task[Any]]:
            return [t for t in asyncio.all_tasks() if t.get_name().startswith("picture ") and not t.done()]

        await r.until(lambda: r.outbox.dead_letter_count() == 1 and r.pipeline.idle, timeout=5)
        assert not pictures_running(), "a capture task outlived its failed delivery"
        assert r.sandbox.alerts == []
        (letter,) = r.outbox.dead_letters.entries()
        assert letter["alert_key"] == bad.alert_key and "internal error: TypeError" in letter["last_error"]
        assert r.sample("background_errors_total", job="deliver") == 1


def test_the_picture_deadline_counts_queueing_and_keeps_a_push_reserve() -> None:
    """On any clock: the budget runs from the put, a reserve (10 %, ≤ 1 s) stays for the push,
    and an event already late still gets the reserve for quick (cached) pictures."""
    s = PipelineSettings(image_budget=15.0, capture_timeout=20.0, workers=4)
    assert s.picture_deadline(1000.0, queued=0.0) == 1000.0 + 15.0 - 1.0
    assert s.picture_deadline(1000.0, queued=4.0) == 1000.0 + 15.0 - 1.0 - 4.0
    assert s.picture_deadline(1000.0, queued=60.0) == 1000.0 + 1.0
    short = PipelineSettings(image_budget=2.0, capture_timeout=20.0, workers=4)
    assert short.picture_deadline(5.0, queued=0.5) == 5.0 + 2.0 - 0.2 - 0.5
