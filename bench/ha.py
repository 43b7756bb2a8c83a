"""Failover of the HA replicas (``ha.mode: kubernetes``): kill -9 of the leader → first push by the new one.

Two real ``run`` replicas (``sidecar_sandbox.replicas``) against the sandboxes and the Lease
emulator, with the test settings: lease 3 s, renew deadline 2 s, retry 0.5 s, one rule every 1 s
that keeps firing; the bound is lease + retry + one interval = 4.5 s. Each round: the leader is
SIGKILLed (the other replica has been ready and following for at least one lease duration);
measured are the time from the kill to the first Flashduty request of the other
replica (its takeover re-send of the firing alert), and the pushes of that alert after the kill
(each is a duplicate: the alert had been delivered before). The killed replica is then started
again (a follower now) before the next round. Timing depends on a shared machine: the numbers
are a measurement, not a pass/fail.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from bench.common import find_chromium, quantile, table
from sidecar_sandbox.replicas import Cluster, cluster
from sidecar_sandbox.runner import CONFIG_HEAD

LEASE, RETRY, EVERY = 3.0, 0.5, 1.0
CONFIG = (
    CONFIG_HEAD
    + """\
capture:
  browser_path: ${CHROMIUM}
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
  - name: Firing
    source: prometheus
    expr: sandbox_demo_errors > 5
    every: 1s
ha:
  mode: kubernetes
  identity: ${POD_NAME}
  address: http://127.0.0.1:${PORT}
  lease_duration: 3s
  renew_deadline: 2s
  retry_period: 0.5s
"""
)


async def _ready(url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as s:
        while time.monotonic() < deadline:
            try:
                async with s.get(url + "/readyz") as r:
                    if r.status == 200:
                        return
            except (aiohttp.ClientError, TimeoutError):
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError(f"{url} not ready within {timeout:g} s")


def _pushes(c: Cluster, since: float) -> int:
    """Pushes of the firing alert Flashduty took after ``since`` (merged, or discarded as identical)."""
    fd = c.boxes.flashduty
    merged = sum(1 for a in fd.alerts for e in a.events if e.received_at >= since)
    discarded = sum(1 for d in fd.book.discarded if d["received_at"] >= since)
    return merged + discarded


async def run(*, quick: bool, log: Any = print) -> dict[str, Any]:
    rounds = 2 if quick else 6
    chromium = find_chromium()
    if chromium is None:
        raise RuntimeError("no Chromium (SIDECAR_CHROMIUM, or chromium on PATH)")
    samples: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-ha-") as tmp:
        async with cluster(
            Path(tmp), CONFIG, env={"CHROMIUM": chromium, "WEBHOOK_TOKEN": "bench-token"}, query_delay=0.1
        ) as c:
            leader = await c.wait_leader(timeout=60)
            c.boxes.prometheus.value = 10
            while not c.boxes.flashduty.alerts:
                await asyncio.sleep(0.05)
            await asyncio.sleep(2 * EVERY)
            for i in range(rounds):
                leader = await c.wait_leader(timeout=60)
                others = {r.name for r in c.replicas if r is not leader}
                await asyncio.sleep(EVERY)  # a steady state: the kill lands anywhere in an interval
                killed_at = time.time()
                await leader.kill9()
                first = None
                deadline = time.monotonic() + 30
                while first is None and time.monotonic() < deadline:
                    sent = [at for at, _, name, _ in c.sent(since=killed_at) if name in others]
                    first = min(sent) if sent else None
                    await asyncio.sleep(0.01)
                if first is None:
                    raise RuntimeError(f"round {i + 1}: no push by another replica within 30 s of the kill")
                await asyncio.sleep(3 * EVERY)  # let any further duplicate arrive
                dup = _pushes(c, killed_at)
                samples.append({"failover_s": round(first - killed_at, 3), "duplicates": dup})
                log(
                    f"  ha: round {i + 1}: first push by the new leader {first - killed_at:.2f}s after kill -9, {dup} duplicate(s)"
                )
                await leader.start()  # back as a follower: ready (its election running), then settled
                await _ready(leader.url)
                await asyncio.sleep(LEASE)
    times = [s["failover_s"] for s in samples]
    dups = [s["duplicates"] for s in samples]
    return {
        "settings": {"lease_duration_s": LEASE, "retry_period_s": RETRY, "rule_interval_s": EVERY},
        "bound_s": LEASE + RETRY + EVERY,
        "failovers": len(samples),
        "failover_s": {
            "p50": round(quantile(times, 0.5), 2),
            "max": round(max(times), 2),
            "min": round(min(times), 2),
        },
        "duplicates_per_failover": {"mean": round(sum(dups) / len(dups), 2), "max": max(dups)},
        "within_bound": sum(1 for t in times if t <= LEASE + RETRY + EVERY),
        "samples": samples,
    }


def render(r: dict[str, Any]) -> str:
    ft, d = r["failover_s"], r["duplicates_per_failover"]
    s = r["settings"]
    return (
        f"HA failover (kill -9 of the leader → first push by the new leader), {r['failovers']} failovers, "
        f"lease {s['lease_duration_s']:g} s, retry {s['retry_period_s']:g} s, rule every {s['rule_interval_s']:g} s:\n\n"
        + table(
            ["failover p50", "min", "max", "bound", "within bound", "duplicate pushes per failover (mean / max)"],
            [[f"{ft['p50']} s", f"{ft['min']} s", f"{ft['max']} s", f"{r['bound_s']:g} s",
              f"{r['within_bound']}/{r['failovers']}", f"{d['mean']} / {d['max']}"]],
        )
    )  # fmt: skip
