"""A follower's outbox drains into the leader's, over real loopback HTTP (``POST /ha/events``).

The leader's side answers 200 only once every event is durable in its outbox (a second Outbox
object on the same file sees them), 401 without the token, 503 when it is not leading, 400 for a
malformed body; the follower acks its rows only after that 200, and keeps them when no leader can
take them.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.typedefs import Handler

from sidecar.delivery.outbox import Outbox
from sidecar.ha.forward import PATH, Forwarder, make_events_handler
from tests.support.delivery import event
from tests.support.wait import eventually

TOKEN = "replica-token"


class Leader:
    def __init__(self, outbox: Outbox) -> None:
        self.outbox, self.leading = outbox, True

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post(
            PATH, make_events_handler(leading=lambda: self.leading, put=self.outbox.put, token=lambda: TOKEN)
        )
        return app


@pytest.fixture
async def leader(tmp_path: Path) -> AsyncIterator[tuple[Leader, str]]:
    box = Outbox(tmp_path / "leader.sqlite3")
    lead = Leader(box)
    runner = web.AppRunner(lead.app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield lead, f"http://{host}:{port}"
    finally:
        await runner.cleanup()
        box.close()


async def test_the_leader_answers_200_only_once_durable(leader: tuple[Leader, str], tmp_path: Path) -> None:
    lead, url = leader
    sent = event(1)
    body = {"events": [json.loads(sent.to_json())]}
    async with aiohttp.ClientSession() as s:
        async with s.post(url + PATH, json=body) as r:
            assert r.status == 401
        async with s.post(url + PATH, json=body, headers={"Authorization": f"Bearer {TOKEN}x"}) as r:
            assert r.status == 401
        auth = {"Authorization": f"Bearer {TOKEN}"}
        async with s.post(url + PATH, json={"events": [{"nope": 1}]}, headers=auth) as r:
            assert r.status == 400
        lead.leading = False
        async with s.post(url + PATH, json=body, headers=auth) as r:
            assert r.status == 503
        assert lead.outbox.pending_count() == 0
        lead.leading = True
        async with s.post(url + PATH, json=body, headers=auth) as r:
            assert r.status == 200 and (await r.json()) == {"accepted": 1}
    reopened = Outbox(tmp_path / "leader.sqlite3")  # durable: in the file, not only in memory
    try:
        assert reopened.pending_count() == 1
        item = reopened.claim()
        assert item is not None and item.event == sent
    finally:
        reopened.close()


async def test_the_follower_keeps_its_rows_until_a_leader_takes_them(
    leader: tuple[Leader, str], tmp_path: Path
) -> None:
    lead, url = leader
    mine = Outbox(tmp_path / "follower.sqlite3")
    target = [""]  # no leader known yet
    fwd = Forwarder(mine, leader_address=lambda: target[0], token=lambda: TOKEN, timeout=2.0)
    for i in range(5):
        mine.put(event(i))
    task = asyncio.create_task(fwd.run())
    try:
        await asyncio.sleep(0.7)
        assert mine.pending_count() == 5 and mine.in_flight_count() == 0  # nobody to give them to
        lead.leading = False
        target[0] = url
        await eventually(lambda: fwd.last_error is not None, "a 503 from a replica that does not lead", 5)
        assert mine.pending_count() == 5 and mine.in_flight_count() == 0, "released, not lost"
        lead.leading = True
        await eventually(lambda: mine.pending_count() == 0, "forwarded and acked", 10)
        assert lead.outbox.pending_count() == 5 and fwd.forwarded == 5
        keys = set()
        while (item := lead.outbox.claim()) is not None:
            keys.add(item.event.alert_key)
        assert keys == {event(i).alert_key for i in range(5)}
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        mine.close()


async def test_flush_on_shutdown_hands_everything_over_within_the_bound(
    leader: tuple[Leader, str], tmp_path: Path
) -> None:
    lead, url = leader
    mine = Outbox(tmp_path / "follower.sqlite3")
    target = [""]
    looks = []

    async def look() -> None:  # reads the Lease: the leader shows up at the second look
        looks.append(1)
        if len(looks) >= 2:
            target[0] = url

    fwd = Forwarder(mine, leader_address=lambda: target[0], token=lambda: TOKEN, timeout=2.0)
    try:
        for i in range(3):
            mine.put(event(i))
        claimed = mine.claim()  # a claim of a job that was just cancelled
        assert claimed is not None
        mine.fail(claimed.id, "timeout", retryable=True)  # and a row waiting out a backoff: it goes too
        assert await fwd.flush(5.0, look=look, poll=0.05) == 0
        assert lead.outbox.pending_count() == 3 and len(looks) == 2

        mine.put(event(9))
        target[0], looks[:] = "", []
        loop = asyncio.get_running_loop()
        started = loop.time()
        assert await fwd.flush(0.3, look=look_nowhere, poll=0.05) == 1, "no leader: it stays here"
        assert loop.time() - started < 1.0
        lead.leading = False  # a leader that does not take them: they stay too
        target[0] = url
        assert await fwd.flush(0.5, look=look_nowhere, poll=0.05) == 1 and mine.in_flight_count() == 0
    finally:
        mine.close()


async def look_nowhere() -> None:
    return None


LIMIT = 8 * 1024  # the leader's client_max_size (server.webhook_max_body) in this test
REFUSE = "refused-by-this-leader"  # an event this leader's version cannot read: it answers 400


@web.middleware
async def older_leader(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A leader of another version, which cannot read one event: the real handler's 400, for it."""
    if REFUSE.encode() in await request.read():
        return web.json_response({"error": "malformed body: KeyError"}, status=400)
    return await handler(request)


async def test_an_oversized_or_refused_event_is_dead_lettered_and_never_blocks_the_others(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "leader.sqlite3")
    app = web.Application(client_max_size=LIMIT, middlewares=[older_leader])
    sizes: list[tuple[int, int]] = []

    async def record(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            resp = await handler(request)
        except web.HTTPException as e:  # 413: raised by aiohttp reading a body over client_max_size
            sizes.append((request.content_length or 0, e.status))
            raise
        sizes.append((request.content_length or 0, resp.status))
        return resp

    app.middlewares.insert(0, web.middleware(record))
    app.router.add_post(PATH, make_events_handler(leading=lambda: True, put=box.put, token=lambda: TOKEN))
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    mine = Outbox(tmp_path / "follower.sqlite3")
    fwd = Forwarder(
        mine, leader_address=lambda: f"http://{host}:{port}", token=lambda: TOKEN, timeout=2.0, max_body=LIMIT
    )
    padded = [event(i, title=f"host-{i} " + "x" * 900) for i in range(30)]  # ~1.3 KB each: ~6 per batch
    huge = event(100, title="y" * (2 * LIMIT))  # alone larger than what the leader takes
    bad = event(101, title=REFUSE)
    for ev in [*padded[:10], huge, *padded[10:20], bad, *padded[20:]]:
        mine.put(ev)
    task = asyncio.create_task(fwd.run())
    try:
        await eventually(lambda: mine.pending_count() == 0, "every row forwarded or dead-lettered", 15)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await runner.cleanup()
    try:
        keys = set()
        while (item := box.claim()) is not None:
            keys.add(item.event.alert_key)
        assert keys == {e.alert_key for e in padded}, "everything behind the bad ones got through"
        dead = {d["alert_key"]: d["last_error"] for d in mine.dead_letters.entries()}
        assert set(dead) == {huge.alert_key, bad.alert_key}
        assert "refused" in dead[huge.alert_key] and "413" in dead[huge.alert_key]
        assert "400" in dead[bad.alert_key]
        assert all(size <= LIMIT for size, status in sizes if status != 413), sizes
        statuses = [status for _, status in sizes]
        assert statuses.count(413) == 1, f"the huge one alone, once: {statuses}"
        assert 1 <= statuses.count(400) <= 4, f"halved down to the bad one, not retried: {statuses}"
        assert fwd.forwarded == 30
    finally:
        mine.close()
        box.close()


async def test_without_a_token_the_leader_takes_nothing(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "leader.sqlite3")
    app = web.Application()
    app.router.add_post(PATH, make_events_handler(leading=lambda: True, put=box.put, token=lambda: None))
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        async with aiohttp.ClientSession() as s:
            for headers in ({}, {"Authorization": "Bearer "}, {"Authorization": "Bearer anything"}):
                body = {"events": [json.loads(event(1).to_json())]}
                async with s.post(f"http://{host}:{port}{PATH}", json=body, headers=headers) as r:
                    assert r.status == 401, headers
        assert box.pending_count() == 0
    finally:
        await runner.cleanup()
        box.close()
