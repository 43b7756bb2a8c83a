"""Priority end to end: capture slots, the upload queue and the push slots serve Ok first, then
Critical, Warning, Info (a storm's shared picture just before the own pictures of its status);
first come first served within one. The sandbox Flashduty is the referee of the upload order."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from sidecar.capture.errors import CaptureClass
from sidecar.model import PRIORITY
from sidecar.priority import PrioritySlots, picture_rank
from tests.support.delivery import FakeCapture, event, harness, panel, png, sandbox_key
from tests.unit.test_capture_service import make, req


def test_picture_ranks_keep_the_event_order_and_put_shared_first() -> None:
    order = [
        picture_rank(PRIORITY[s], shared=sh) for s in ("Ok", "Critical", "Warning", "Info") for sh in (True, False)
    ]
    assert order == sorted(order) and len(set(order)) == 8


async def test_priority_slots_serve_by_rank_then_fifo_and_survive_cancellation() -> None:
    slots = PrioritySlots(1)
    order: list[str] = []
    hold = asyncio.Event()

    async def user(name: str, rank: int) -> None:
        async with slots.acquire(rank):
            order.append(name)
            if name == "first":
                await hold.wait()

    first = asyncio.create_task(user("first", 7))
    await asyncio.sleep(0)
    named = (("info", 7), ("warn", 5), ("crit-a", 3), ("gone", 3), ("ok", 1), ("crit-b", 3), ("shared", 2))
    tasks = {n: asyncio.create_task(user(n, r)) for n, r in named}
    await asyncio.sleep(0)
    assert slots.waiting == len(named)
    tasks["gone"].cancel()
    hold.set()
    await asyncio.gather(first, *tasks.values(), return_exceptions=True)
    assert order == ["first", "ok", "shared", "crit-a", "crit-b", "warn", "info"]
    assert slots.holders == 0 and slots.waiting == 0


async def test_the_capture_service_serves_its_queue_by_rank() -> None:
    service, _ = make(concurrency=1)
    service.gate.clear()
    blocker = asyncio.create_task(service.capture(req(panel="0"), rank=7))
    await asyncio.sleep(0.01)
    ranked = [("info", 7), ("warning", 5), ("critical", 3), ("ok", 1)]
    tasks = [asyncio.create_task(service.capture(req(panel=name), rank=rank)) for name, rank in ranked]
    await asyncio.sleep(0.01)
    service.gate.set()
    await asyncio.gather(blocker, *tasks)
    assert [r.panel for r in service.runs] == ["0", "ok", "critical", "warning", "info"]


async def test_a_critical_alert_is_not_held_behind_an_info_reports_panels(tmp_path: Path) -> None:
    capture = FakeCapture(delay=0.3, concurrency=1)
    async with harness(tmp_path, capture=capture, budget=3.0) as h:
        report = event(1, "Info", rule="Report", panels=tuple(panel(f"r{i}", i) for i in range(8)))
        h.put(report)
        await h.wait_for(lambda: len(capture.started) >= 1, 2.0, "the report's first capture")
        crit = event(2, "Critical")
        warn = event(3, "Warning")
        h.put(warn)
        h.put(crit)
        await h.drained(timeout=20)
        started = [p.dashboard for p in capture.started]
        # one report panel was already capturing; then the Critical, the Warning, the rest of the report
        assert started[:3] == ["r0", "d2", "d3"], started
        [alert] = h.alerts(crit.alert_key)
        assert [i["src"] for i in alert["events"][0]["images"]] == [sandbox_key(png(2))]


async def test_uploads_wait_in_rank_order_and_ok_never_waits_behind_pictures(tmp_path: Path) -> None:
    # limits ×10: 5 uploads per 0.1 s and 50 per 6 s; a picture each, captured at once
    capture = FakeCapture(delay=0.0, concurrency=8)
    async with harness(tmp_path, capture=capture, time_scale=10.0, budget=1.0) as h:
        infos = [event(100 + i, "Info", rule="Reports") for i in range(50)]
        for ev in infos:  # the minute window fills up with Info pictures
            h.put(ev)
        await h.wait_for(lambda: h.sandbox.stats["upload"].requests >= 50, 10.0, "50 Info uploads")
        late_info = [event(200 + i, "Info", rule="Reports") for i in range(3)]
        crit = [event(300 + i, "Critical") for i in range(3)]
        for ev in late_info + crit:
            h.put(ev)
        ok = event(100, "Ok", rule="Reports")
        capture.set("d100", cls=CaptureClass.OK)
        t0 = time.monotonic()
        h.put(ok)
        await h.wait_for(lambda: any(e["event_status"] == "Ok" for e in h.events(ok.alert_key)), 3.0, "the Ok")
        assert time.monotonic() - t0 < 1.5  # its budget (1 s at ×10 is the scaled 10 s) plus slack
        await h.drained(timeout=30)
        at = {n: h.sandbox.images.get(sandbox_key(png(n))).uploaded_at for n in (300, 301, 302, 200, 201, 202)}
        # queued behind the full minute window, the Critical pictures go before the Info ones put first
        assert max(at[n] for n in (300, 301, 302)) <= min(at[n] for n in (200, 201, 202)), at
