"""Sizing benchmark: the daemon's memory and CPU as its container sees them, under load and idle.

The daemon runs as it does in a pod: ``python -m sidecar run -c config.yaml``, a process of its
own with Playwright's Node driver and Chromium below it, against the sandbox Grafana (query
answers after 300 ms) and the sandbox Flashduty, with the product's defaults (capture
concurrency 2, ``context_reuse`` 25) except the capture cache, which is off so that every
scheduled run really captures. Every process of the daemon's tree is sampled from ``/proc``
every 0.5 s and put in one of three groups: the Python daemon, the Node driver (``node``) and
Chromium (everything else: browser, renderers, GPU and utility processes, crashpad).

* **start-up**: from ``exec`` to ``/readyz`` answering 200 (state opened, Chromium launched):
  wall time, the CPU seconds of the whole tree, and one sample of its memory;
* **load**: a schedule rule ``every: 5s`` capturing three panels and one 1600×900 dashboard
  (four captures per run, two at a time), for ``load_s`` seconds;
* **idle**: the rule is replaced by one that never fires (SIGHUP reload); after the context
  pool's idle trim (``POOL_IDLE_S``, checked every third of it, plus a margin) the tree is sampled for ``idle_s`` seconds.

PSS splits the pages shared between processes (Chromium's binary and libraries) among them; a
container's memory cgroup charges each page once, so the PSS sum is the figure to compare with
a memory limit. The RSS sum counts shared pages once per process and is shown for comparison.
PSS also splits pages with processes outside the tree: on a machine where another Chromium
runs from the same binary, the tree's PSS is lower than it would be alone in a container.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from bench.common import find_chromium, free_port
from sidecar.capture.pool import POOL_IDLE_S
from sidecar.capture.proc import read_kb
from sidecar_sandbox.runner import CONFIG_HEAD, start_sandboxes

FULL = {"load_s": 60.0, "idle_s": 15.0}
QUICK = {"load_s": 12.0, "idle_s": 3.0}
SAMPLE_S = 0.5
GROUPS = ("python", "node", "chromium")

CONFIG = (
    CONFIG_HEAD
    + """\
capture:
  browser_path: ${CHROMIUM}
  cache_ttl: 0s
server:
  listen: 127.0.0.1:${PORT}
state_dir: ${STATE_DIR}
log:
  level: warning
rules:
  - name: Sizing
    source: schedule
    SCHEDULE
    severity: Info
    title: Sizing report
    panels:
      - {dashboard: sandbox, panel: 1}
      - {dashboard: sandbox, panel: 6}
      - {dashboard: sandbox-legacy, panel: 1}
      - {dashboard: sandbox-legacy, width: 1600, height: 900}
"""
)
LOAD_SCHEDULE = "every: 5s"
IDLE_SCHEDULE = 'cron: "0 0 1 1 *"'  # once a year: nothing fires while idle is measured


# --------------------------------------------------------------------------- /proc


def _tree(root: int) -> list[int]:
    """``root`` and all its descendants that are alive now (zombies left out)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as f:
                state, ppid = f.read().rsplit(")", 1)[1].split()[:2]
        except (OSError, ValueError, IndexError):
            continue
        if state != "Z":  # an exited renderer its parent has not reaped yet holds no memory
            children.setdefault(int(ppid), []).append(int(entry))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo += children.get(pid, [])
    return found


def _comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm", encoding="utf-8", errors="replace") as f:
            return f.read().strip()
    except OSError:
        return ""


def _cpu_s(pids: list[int]) -> float:
    """CPU seconds of ``pids``, each with its reaped children (renderers that came and went)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += sum(int(x) for x in fields[11:15])  # utime stime cutime cstime
        except (OSError, ValueError, IndexError):
            continue
    return total / tick


def sample(root: int) -> dict[str, Any]:
    """PSS and RSS (kB) and process count per group, for the tree under ``root``."""
    out: dict[str, Any] = {g: {"pss_kb": 0, "rss_kb": 0, "processes": 0} for g in GROUPS}
    pids = _tree(root)
    for pid in pids:
        group = "python" if pid == root else "node" if _comm(pid).startswith("node") else "chromium"
        g = out[group]
        g["pss_kb"] += read_kb(f"/proc/{pid}/smaps_rollup", "Pss:") or 0
        g["rss_kb"] += read_kb(f"/proc/{pid}/status", "VmRSS:") or 0
        g["processes"] += 1
    out["cpu_s"] = _cpu_s(pids)
    out["t"] = time.monotonic()
    return out


def _phase(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Median and peak per group and for the whole tree; CPU as cores used on average."""
    res: dict[str, Any] = {"samples": len(samples)}
    for g in GROUPS:
        pss = [s[g]["pss_kb"] / 1024 for s in samples]
        procs = [s[g]["processes"] for s in samples]
        res[g] = {
            "pss_mib_median": round(statistics.median(pss), 1),
            "pss_mib_peak": round(max(pss), 1),
            "processes_min": min(procs),
            "processes_max": max(procs),
        }
    total = [sum(s[g]["pss_kb"] for g in GROUPS) / 1024 for s in samples]
    rss = [sum(s[g]["rss_kb"] for g in GROUPS) / 1024 for s in samples]
    res["total"] = {
        "pss_mib_median": round(statistics.median(total), 1),
        "pss_mib_peak": round(max(total), 1),
        "rss_mib_median": round(statistics.median(rss), 1),
        "rss_mib_peak": round(max(rss), 1),
    }
    span = samples[-1]["t"] - samples[0]["t"]
    res["cpu_cores"] = round((samples[-1]["cpu_s"] - samples[0]["cpu_s"]) / span, 2) if span > 0 else None
    return res


# --------------------------------------------------------------------------- the run


async def _sample_for(root: int, seconds: float, alive: Any) -> list[dict[str, Any]]:
    samples = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if not alive():
            raise RuntimeError("the daemon exited during the sizing benchmark")
        samples.append(await asyncio.to_thread(sample, root))
        await asyncio.sleep(SAMPLE_S)
    return samples


async def _metric(session: aiohttp.ClientSession, base: str, name: str, **labels: str) -> float:
    """The sum of a sample of the daemon's ``/metrics`` over the label sets matching ``labels``."""
    async with session.get(base + "/metrics") as r:
        text = await r.text()
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


async def run(*, quick: bool, log: Any = print) -> dict[str, Any]:
    plan = QUICK if quick else FULL
    chromium = find_chromium()
    if chromium is None:
        raise RuntimeError("no Chromium: install chromium or set SIDECAR_CHROMIUM")
    boxes = await start_sandboxes(query_delay=0.3)
    started = time.monotonic()
    try:
        with tempfile.TemporaryDirectory(prefix="sidecar-bench-sizing-") as tmp_name:
            tmp = Path(tmp_name)
            port = free_port()
            config = tmp / "config.yaml"
            config.write_text(CONFIG.replace("SCHEDULE", LOAD_SCHEDULE))
            env = {
                **os.environ,
                **boxes.env(),
                "CHROMIUM": chromium,
                "STATE_DIR": str(tmp / "state"),
                "PORT": str(port),
            }
            base = f"http://127.0.0.1:{port}"
            log_path = tmp / "daemon.log"
            with log_path.open("wb") as out:
                t0 = time.monotonic()
                proc = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "sidecar", "run", "-c", str(config), env=env, stdout=out, stderr=out
                )
            try:
                async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
                    await _ready(session, base, lambda: proc.returncode is None, log_path)
                    wall = time.monotonic() - t0
                    at_start = await asyncio.to_thread(sample, proc.pid)
                    startup = {"wall_s": round(wall, 2), "cpu_s": round(at_start["cpu_s"], 2)}
                    log(f"  sizing: ready after {startup['wall_s']} s; load for {plan['load_s']:g} s")
                    alive = lambda: proc.returncode is None  # noqa: E731
                    load = await _sample_for(proc.pid, plan["load_s"], alive)
                    captures = await _metric(session, base, "flashduty_sidecar_captures_total")
                    config.write_text(CONFIG.replace("SCHEDULE", IDLE_SCHEDULE))
                    proc.send_signal(signal.SIGHUP)
                    settle = POOL_IDLE_S * 4 / 3 + 5  # the janitor looks every POOL_IDLE_S / 3
                    log(f"  sizing: {captures:.0f} captures; idle: {settle:g} s for the pool's trim, then sampling")
                    await asyncio.sleep(settle)
                    reloads = await _metric(session, base, "flashduty_sidecar_config_reloads_total", outcome="ok")
                    if reloads < 1:
                        raise RuntimeError(f"the daemon did not reload its config:\n{_tail(log_path)}")
                    idle = await _sample_for(proc.pid, plan["idle_s"], alive)
            finally:
                if proc.returncode is None:
                    proc.terminate()
                    try:
                        await asyncio.wait_for(proc.wait(), 30)
                    except TimeoutError:
                        proc.kill()
                        await proc.wait()
            errors = [line for line in log_path.read_text(errors="replace").splitlines() if '"level": "error"' in line]
    finally:
        await boxes.close()
    return {
        "plan": {**plan, "sample_s": SAMPLE_S, "pool_idle_s": POOL_IDLE_S, "load_schedule": LOAD_SCHEDULE},
        "startup": startup,
        "start": _phase([at_start]),
        "captures": int(captures),
        "load": _phase(load),
        "idle": _phase(idle),
        "daemon_errors": errors[:5],
        "seconds": round(time.monotonic() - started, 1),
    }


async def _ready(session: aiohttp.ClientSession, base: str, alive: Any, log_path: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if not alive():
            raise RuntimeError(f"the daemon exited before it was ready:\n{_tail(log_path)}")
        with contextlib.suppress(aiohttp.ClientError, TimeoutError):
            async with session.get(base + "/readyz") as r:
                if r.status == 200:
                    return
        await asyncio.sleep(0.05)
    raise RuntimeError(f"the daemon was not ready after 60 s:\n{_tail(log_path)}")


def _tail(path: Path) -> str:
    return path.read_text(errors="replace")[-2000:]


if __name__ == "__main__":
    print(json.dumps(asyncio.run(run(quick="--quick" in sys.argv)), indent=2))
