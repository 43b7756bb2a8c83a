"""Replicas of one Grafana, each with its sidecar: exactly one sender, elected on a Lease.

Real ``run`` processes (``sidecar_sandbox.replicas``) against the sandbox Flashduty, Grafana and
Prometheus and the Lease-API emulator; who sent what is read from the Flashduty sandbox's access
log (each replica names itself in its User-Agent). Timing: lease 3 s, renew deadline 2 s, retry
0.5 s, rules every 1 s, so the failover bound is 3 + 0.5 + 1 = 4.5 s.
"""

from __future__ import annotations

import asyncio
import re
import signal
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest

from sidecar.model import AlertEvent
from sidecar_sandbox.replicas import Cluster, ReplicaProc, cluster
from tests.support.browsers import find_chromium
from tests.support.wait import eventually

CHROMIUM = find_chromium()
pytestmark = [
    pytest.mark.chromium,
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="no Chromium: install chromium or set SIDECAR_CHROMIUM"),
]

LEASE, RETRY, EVERY = 3.0, 0.5, 1.0
BOUND = LEASE + RETRY + EVERY
TOKEN = "ha-webhook-token"

CONFIG = """
flashduty:
  api_host: ${SANDBOX_FLASHDUTY_URL}
  integration_key: ${FLASHDUTY_INTEGRATION_KEY}
  #APP_KEY
grafana:
  url: ${SANDBOX_GRAFANA_URL}
  token: ${GRAFANA_TOKEN}
capture:
  browser_path: ${CHROMIUM}
  image_budget: 10s
server:
  listen: 127.0.0.1:${PORT}
  webhook_token: ${WEBHOOK_TOKEN}
state_dir: ${STATE_DIR}
log:
  format: text
datasources:
  - name: prom
    url: ${SANDBOX_PROMETHEUS_URL}
rules:
  - name: HighErrors
    source: prometheus
    expr: sandbox_demo_errors > 5
    every: 1s
  - name: VeryHighErrors
    source: prometheus
    expr: sandbox_demo_errors > 50
    every: 1s
ha:
  mode: kubernetes
  identity: ${POD_NAME}
  address: http://127.0.0.1:${PORT}
  lease_duration: 3s
  renew_deadline: 2s
  retry_period: 0.5s
"""


ENV = {"CHROMIUM": CHROMIUM or "", "WEBHOOK_TOKEN": TOKEN}
WITH_APP_KEY = CONFIG.replace("#APP_KEY", "app_key: ${FLASHDUTY_APP_KEY}")


async def ready(c: Cluster) -> tuple[ReplicaProc, ReplicaProc]:
    """Both replicas answer /readyz; the leader and the follower."""

    async def all_ready() -> bool:
        async with aiohttp.ClientSession() as s:
            for r in c.replicas:
                try:
                    async with s.get(r.url + "/readyz") as resp:
                        if resp.status != 200:
                            return False
                except aiohttp.ClientError:
                    return False
        return True

    await until(all_ready, "every replica ready", 60)
    leader = await c.wait_leader()
    follower = next(r for r in c.replicas if r is not leader)
    assert await follower.metric("flashduty_sidecar_leader") == 0.0
    return leader, follower


def events_of(c: Cluster, rule: str) -> list[tuple[str, str]]:
    """(alert_key, status) of every push Flashduty took for ``rule``: merged into an alert, or
    discarded as identical to the previous event of its alert_key (noise reduction)."""
    out = []
    for a in c.boxes.flashduty.alerts:
        if a.labels.get("sidecar_rule") == rule:
            out.extend((a.alert_key, e.event_status) for e in a.events)
    for d in c.boxes.flashduty.book.discarded:
        if (d["payload"].get("labels") or {}).get("sidecar_rule") == rule:
            out.append((d["alert_key"], d["payload"]["event_status"]))
    return out


def alerts_of(c: Cluster, rule: str) -> list[object]:
    return [a for a in c.boxes.flashduty.alerts if a.labels.get("sidecar_rule") == rule]


async def test_one_leader_and_kill9_takeover_within_the_bound(tmp_path: Path) -> None:
    async with cluster(tmp_path, CONFIG, env=ENV, query_delay=0.1) as c:
        leader, follower = await ready(c)
        c.boxes.prometheus.value = 10  # HighErrors fires, and keeps firing across the failover
        await eventually(lambda: alerts_of(c, "HighErrors"), "HighErrors delivered", 20)
        assert {name for _, _, name, _ in c.sent()} == {leader.name}, "only the leader talks to Flashduty"

        killed_at = time.time()
        await leader.kill9()
        c.boxes.prometheus.value = 100  # VeryHighErrors starts firing while nobody leads
        new = await c.wait_leader(timeout=BOUND + 10, besides=leader.name)
        assert new is follower
        await eventually(lambda: alerts_of(c, "VeryHighErrors"), "VeryHighErrors delivered by the new leader", 20)
        first = min(at for at, ep, name, _ in c.sent("push") if name == follower.name)
        assert first - killed_at < BOUND + 3.0, f"first push of the new leader {first - killed_at:.2f}s after the kill"
        await asyncio.sleep(2 * EVERY)

        high = alerts_of(c, "HighErrors")
        assert len(high) == 1 and high[0].alert_status != "Ok", "the alert firing across the failover is one alert"  # type: ignore[attr-defined]
        pushes = Counter(status for _, status in events_of(c, "HighErrors"))
        # the new leader re-sent what its state holds firing: exactly one duplicate, merged by alert_key
        assert sum(pushes.values()) == 2, f"not exactly one duplicate across one failover: {pushes}"
        assert len(alerts_of(c, "VeryHighErrors")) == 1
        assert follower.name in follower.log() and f"{leader.name} → {follower.name}" in follower.log()
        async with aiohttp.ClientSession() as session, session.get(follower.url + "/") as page:
            html = await page.text()
        assert f"leader {follower.name} · this replica {follower.name} is leading" in html
        assert await follower.metric("flashduty_sidecar_leader_transitions_total") >= 1.0  # type: ignore[operator]


async def test_sigstop_until_the_lease_expires_then_sigcont_never_two_senders(tmp_path: Path) -> None:
    async with cluster(tmp_path, CONFIG, env=ENV, query_delay=0.1) as c:
        leader, follower = await ready(c)
        c.boxes.prometheus.value = 10
        await eventually(lambda: alerts_of(c, "HighErrors"), "HighErrors delivered", 20)

        leader.signal(signal.SIGSTOP)
        c.boxes.prometheus.value = 100  # the stopped leader will wake with this to send
        new = await c.wait_leader(timeout=BOUND + 10, besides=leader.name)
        assert new is follower
        await eventually(lambda: alerts_of(c, "VeryHighErrors"), "VeryHighErrors delivered by the new leader", 20)
        c.boxes.prometheus.value = 0  # both resolve: only the new leader may say so
        woke = time.time()
        leader.signal(signal.SIGCONT)
        await eventually(lambda: all(a.alert_status == "Ok" for a in c.boxes.flashduty.alerts), "resolved", 20)
        await asyncio.sleep(3)

        assert await leader.metric("flashduty_sidecar_leader") == 0.0
        assert c.holder() == follower.name
        late = [s for s in c.sent(since=woke) if s[2] == leader.name]
        assert not late, f"the woken old leader sent after its lease had expired: {late}"
        by = [name for _, _, name, _ in c.sent()]
        switch = by.index(follower.name)
        assert set(by[:switch]) == {leader.name} and set(by[switch:]) == {follower.name}, by
        assert "stopped leading" in leader.log()


def webhook_body(i: int) -> dict[str, object]:
    """An Alertmanager webhook (the v4 payload of alertmanager's notify/webhook) of one alert."""
    return {
        "version": "4", "groupKey": f"{{}}:{{i={i}}}", "status": "firing", "receiver": "flashduty",
        "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {},
        "externalURL": "http://alertmanager:9093",
        "alerts": [{
            "status": "firing",
            "labels": {"alertname": "DiskFull", "instance": f"db-{i}", "severity": "critical"},
            "annotations": {"grafana_dashboard_uid": "sandbox", "grafana_panel_id": "1"},
            "startsAt": f"2026-11-23T{i // 60:02d}:{i % 60:02d}:00Z",  # a window of its own: its own picture
            "endsAt": "0001-01-01T00:00:00Z",
            "fingerprint": f"{i:016x}",
        }],
    }  # fmt: skip


async def test_a_webhook_burst_over_both_replicas_is_all_delivered_without_429(tmp_path: Path) -> None:
    n = 24
    async with cluster(tmp_path, CONFIG, env=ENV, query_delay=0.1) as c:
        leader, follower = await ready(c)

        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {TOKEN}"}) as s:

            async def post(i: int) -> int:
                target = (leader, follower)[i % 2]
                async with s.post(target.url + "/webhook/alertmanager", json=webhook_body(i)) as r:
                    return r.status

            statuses = await asyncio.gather(*(post(i) for i in range(n)))
            # and one through the Alertmanager API, on the follower (Prometheus' alerting.alertmanagers)
            am = [{"labels": {"alertname": "QueueStuck", "instance": "mq-1"}, "annotations": {"summary": "stuck"}}]
            async with s.post(follower.url + "/api/v2/alerts", json=am) as r:
                statuses.append(r.status)
        assert all(200 <= st < 300 for st in statuses), statuses

        def delivered() -> int:
            return len({a.labels.get("instance") for a in c.boxes.flashduty.alerts if a.images})

        await eventually(lambda: delivered() == n, f"all {n} alerts delivered with their pictures", 120)
        await eventually(lambda: alerts_of(c, "alertmanager"), "the Alertmanager-API alert delivered", 30)
        fd = c.boxes.flashduty
        assert fd.stats["upload"].rate_limited == 0 and fd.stats["push"].rate_limited == 0
        assert all(status != 429 for _, _, _, status in c.sent())
        assert {name for _, _, name, _ in c.sent()} == {leader.name}, "only the leader uploads and pushes"
        assert fd.stats["upload"].processed >= 10, "the burst did not exercise the upload queue"
        assert "forwarded" in follower.log()


def pushes_by_instance(c: Cluster) -> Counter[str]:
    """Events Flashduty took per webhook instance: merged into an alert, or discarded as a repeat."""
    n: Counter[str] = Counter()
    for a in c.boxes.flashduty.alerts:
        if a.labels.get("alertname") == "DiskFull":
            n[a.labels["instance"]] += len(a.events)
    for d in c.boxes.flashduty.book.discarded:
        labels = d["payload"].get("labels") or {}
        if labels.get("alertname") == "DiskFull":
            n[labels["instance"]] += 1
    return n


async def test_sigterm_of_the_leader_with_deliveries_in_flight_delivers_each_exactly_once(tmp_path: Path) -> None:
    """A rolling update: the leader drains while it still leads, then hands the rest over."""
    n = 12
    config = CONFIG.replace(
        "  webhook_token: ${WEBHOOK_TOKEN}\n", "  webhook_token: ${WEBHOOK_TOKEN}\n  shutdown_grace: 4s\n"
    )
    async with cluster(tmp_path, config, env=ENV, query_delay=3.0) as c:  # every capture takes 3 s
        leader, follower = await ready(c)
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {TOKEN}"}) as s:
            for i in range(n):
                async with s.post(leader.url + "/webhook/alertmanager", json=webhook_body(i)) as r:
                    assert r.status == 200, await r.text()
        await asyncio.sleep(0.5)  # captures under way, nothing pushed yet
        assert not pushes_by_instance(c)
        c.boxes.flashduty.add_fault("status", endpoint="push", status=500, count=3)  # a few fail during the drain
        leader.signal(signal.SIGTERM)
        assert leader.proc is not None
        assert await asyncio.wait_for(leader.proc.wait(), 30) == 0
        await eventually(lambda: len(pushes_by_instance(c)) == n, f"all {n} delivered", 60)
        await asyncio.sleep(3)
        pushes = pushes_by_instance(c)
        assert all(count == 1 for count in pushes.values()), f"not exactly once: {pushes}"
        by = {name for _, ep, name, st in c.sent("push") if st == 200}
        assert by == {leader.name, follower.name}, "the old leader delivered during its drain, the new one the rest"
        # the three pushes that failed were not retried by the draining leader: handed over
        assert re.search(r"forwarded \d+ event\(s\) to the leader", leader.log()), leader.log()[-3000:]
        assert c.holder() == follower.name
        log = leader.log()
        assert "could not be handed to a leader" not in log, log[-3000:]


async def test_a_follower_stopping_hands_what_it_holds_to_the_leader(tmp_path: Path) -> None:
    n = 5
    async with cluster(tmp_path, CONFIG, env=ENV, query_delay=0.1) as c:
        leader, follower = await ready(c)
        c.kube.down = True  # no leader for a while: what the follower takes stays with it
        await until(lambda: _metric_is(leader, "flashduty_sidecar_leader", 0.0), "the leader steps down", 2 + 5)
        await asyncio.sleep(LEASE + 1)  # the follower no longer counts on the old lease either
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {TOKEN}"}) as s:
            for i in range(n):
                async with s.post(follower.url + "/webhook/alertmanager", json=webhook_body(i)) as r:
                    assert r.status == 200, await r.text()
        await asyncio.sleep(1.0)
        assert not pushes_by_instance(c) and "forwarded" not in follower.log()
        follower.signal(signal.SIGTERM)  # while it holds all five
        await asyncio.sleep(0.5)
        c.kube.down = False  # the old leader leads again; the stopping follower finds it on the Lease
        assert follower.proc is not None
        assert await asyncio.wait_for(follower.proc.wait(), 40) == 0
        assert "forwarded" in follower.log(), "handed over on the way out"
        await eventually(lambda: len(pushes_by_instance(c)) == n, f"all {n} delivered by the leader", 60)
        await asyncio.sleep(2)
        pushes = pushes_by_instance(c)
        assert all(count == 1 for count in pushes.values()), f"not exactly once: {pushes}"
        assert {name for _, _, name, _ in c.sent()} <= {leader.name}


async def test_lease_api_unreachable_the_leader_steps_down_and_nobody_sends(tmp_path: Path) -> None:
    async with cluster(tmp_path, CONFIG, env=ENV, query_delay=0.1) as c:
        leader, follower = await ready(c)
        c.kube.down = True
        await until(lambda: _metric_is(leader, "flashduty_sidecar_leader", 0.0), "the leader steps down", 2 + 5)
        down_at = time.time()
        c.boxes.prometheus.value = 10  # fires on both replicas: neither may send it
        await asyncio.sleep(LEASE * 2 + 2)
        assert await follower.metric("flashduty_sidecar_leader") == 0.0
        assert not c.sent(since=down_at), "a replica sent without the lease"
        assert not alerts_of(c, "HighErrors")
        async with aiohttp.ClientSession() as session:  # readiness never depends on leadership
            for r in c.replicas:
                async with session.get(r.url + "/readyz") as resp:
                    assert resp.status == 200, r.name

        c.kube.down = False
        await c.wait_leader(timeout=BOUND + 10)
        await eventually(lambda: alerts_of(c, "HighErrors"), "delivered once a leader is back", 20)


async def test_takeover_resends_what_is_firing_and_reconciles(tmp_path: Path) -> None:
    async with cluster(tmp_path, WITH_APP_KEY, env=ENV, query_delay=0.1) as c:
        leader, follower = await ready(c)
        c.boxes.prometheus.value = 10
        await eventually(lambda: alerts_of(c, "HighErrors"), "HighErrors delivered", 20)
        await eventually(lambda: "reconciled with Flashduty" in leader.log(), "the first leader's reconcile", 30)
        # an alert of ours that nothing here holds firing (say, its resolve was in the dead leader's outbox)
        stale = AlertEvent.for_instance(
            "HighErrors", {"instance": "gone"}, status="Warning", title="Stale", event_time=0
        )
        c.boxes.flashduty.push_event(
            {"title_rule": "Stale", "event_status": "Warning", "alert_key": stale.alert_key, "labels": stale.labels}
        )
        c.boxes.flashduty.add_fault("status", endpoint="push", status=500)  # the leader cannot deliver the resolve
        c.boxes.prometheus.value = 0
        await eventually(lambda: leader.log().count("HighErrors") >= 2, "the leader tried to resolve", 10)
        await leader.kill9()
        c.boxes.flashduty.clear_faults()

        await c.wait_leader(timeout=BOUND + 10, besides=leader.name)
        await eventually(
            lambda: all(a.alert_status == "Ok" for a in alerts_of(c, "HighErrors")),
            "the new leader resolved HighErrors and closed the stale alert",
            30,
        )
        assert "reconciled with Flashduty" in follower.log()

        # the operator's view says who leads, beside what Flashduty has
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "sidecar", "alerts", "-c", str(follower.config), "--since", "1h",
            env=follower.env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0, err.decode()
        assert f"high availability: leader {follower.name} (lease default/flashduty-sidecar" in out.decode()


async def _metric_is(r: ReplicaProc, name: str, want: float) -> bool:
    return await r.metric(name) == want


async def until(condition: Callable[[], Awaitable[bool]], what: str, timeout: float) -> None:
    end = time.monotonic() + timeout
    while not await condition():
        if time.monotonic() > end:
            raise AssertionError(f"not within {timeout:g} s: {what}")
        await asyncio.sleep(0.05)
