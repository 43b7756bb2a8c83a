"""Capture benchmark: the sidecar's warm-browser ``CaptureService`` against a naive script.

The page is panel 1 of the sandbox Grafana's ``sandbox`` dashboard, whose query answers after
300 ms (``GrafanaSandbox(query_delay=0.3)``). Every variant runs in its own process
(``capture_worker.py``), rounds of all variants interleaved so that a noisy machine hurts
them alike. Two regimes:

* concurrency 1, one capture at a time with ``gap_s`` of idle time before each: an alert that
  arrives alone (the latency an on-call engineer sees);
* concurrency 4, back to back: a burst (throughput, captures per minute).

Per capture: wall time from the call to the picture, and the **overhead** above the page's own
ready time. The sandbox page reports, by a beacon to ``/_sandbox/rendered``, when navigation
started (``performance.timeOrigin``) and when its last query had finished and its chart was
drawn (``ready_at``); overhead = (capture end − capture start) − (ready_at − navigation_start):
what the capture machinery adds to the page itself (context, navigation request, readiness
detection, screenshot, encoding). Every request is distinct (``to=`` moves by 1 ms), so the
capture cache never answers. After the clock stops, every picture is checked for the drawn
series and for the loading spinner.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from bench.common import ROOT, find_chromium, find_headless_shell, quantile, serve, summary
from sidecar_sandbox.grafana import DEFAULT_TOKEN, GrafanaSandbox

WORKER = Path(__file__).with_name("capture_worker.py")
QUERY_DELAY = 0.3
DASHBOARD, PANEL = "sandbox", "1"
SHELL = "product, headless shell"  # the same code with chromium-headless-shell, when installed
FRESH = "product, context_reuse 1"  # the same code with a fresh context for every capture
C4_ONLY = (FRESH,)  # variants shown for throughput only


@dataclass(frozen=True)
class Variant:
    name: str
    impl: str  # product | naive
    chromium: str
    worker: Path = WORKER
    pythonpath: Path = ROOT  # where its ``sidecar`` package comes from
    capture: tuple[tuple[str, Any], ...] = ()  # ``capture:`` settings other than the defaults


@dataclass(frozen=True)
class Plan:
    rounds: int
    counts: dict[tuple[str, int], int]  # (impl, concurrency) → captures per round
    gap_s: float
    warmup: int = 2


FULL = Plan(
    rounds=2,
    counts={("product", 1): 10, ("naive", 1): 4, ("product", 4): 20, ("naive", 4): 10},
    gap_s=1.0,
)
QUICK = Plan(
    rounds=1,
    counts={("product", 1): 3, ("naive", 1): 2, ("product", 4): 4, ("naive", 4): 4},
    gap_s=1.0,
    warmup=1,
)


@dataclass
class Tally:
    """Everything measured for one (variant, concurrency)."""

    durations: list[float] = field(default_factory=list)
    overheads: list[float] = field(default_factory=list)
    ready: list[float] = field(default_factory=list)
    elapsed_s: float = 0.0
    captures: int = 0
    drawn: int = 0
    classes: dict[str, int] = field(default_factory=dict)
    steps: dict[str, list[float]] = field(default_factory=dict)
    cpu_s: dict[str, float] = field(default_factory=dict)
    samples: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self, concurrency: int) -> dict[str, Any]:
        per_min = self.captures / self.elapsed_s * 60 if self.elapsed_s and concurrency > 1 else None
        return {
            "captures": self.captures,
            "duration_ms": summary(self.durations),
            "overhead_ms": summary(self.overheads),
            "page_ready_ms": summary(self.ready),
            "beacons_matched": len(self.overheads),
            "captures_per_min": round(per_min, 1) if per_min is not None else None,
            "pictures_drawn": self.drawn,
            "classes": self.classes,
            "steps_p50_ms": {k: round(quantile(v, 0.5) * 1000, 1) for k, v in sorted(self.steps.items())},
            "cpu_ms_per_capture": {k: round(v / self.captures * 1000) for k, v in self.cpu_s.items()}
            if self.captures
            else {},
            "samples": self.samples,
        }


def variants(compare_ref: str | None, tmp: Path) -> list[Variant]:
    chromium = find_chromium()
    if chromium is None:
        raise RuntimeError("no Chromium: install chromium or set SIDECAR_CHROMIUM")
    out = [
        Variant("product", "product", chromium),
        Variant("naive", "naive", chromium),
        Variant(FRESH, "product", chromium, capture=(("context_reuse", 1),)),
    ]
    if compare_ref:
        out.insert(1, _ref_variant(compare_ref, chromium, tmp))
    shell = find_headless_shell()
    if shell:
        out.append(Variant(SHELL, "product", shell))
    return out


def _ref_variant(ref: str, chromium: str, tmp: Path) -> Variant:
    """The ``sidecar`` package of git revision ``ref``, extracted next to a copy of the worker."""
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", "--format=tar", ref, "sidecar"], capture_output=True, check=True
    ).stdout
    target = tmp / "ref"
    target.mkdir()
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(target, filter="data")
    shutil.copy(WORKER, target / WORKER.name)
    return Variant(f"product@{ref}", "product", chromium, worker=target / WORKER.name, pythonpath=target)


async def _run_worker(variant: Variant, spec: dict[str, Any]) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(variant.pythonpath)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(variant.worker),
        json.dumps(spec),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
        cwd=str(variant.pythonpath),
    )
    out, err = await proc.communicate()
    if proc.returncode != 0:
        tail = "\n".join(err.decode(errors="replace").splitlines()[-15:])
        raise RuntimeError(f"capture worker {variant.name} failed ({proc.returncode}):\n{tail}")
    return dict(json.loads(out.decode().strip().splitlines()[-1]))


class _Beacons:
    """The sandbox's ``/_sandbox/rendered`` beacons, by the capture index in ``to=``."""

    def __init__(self, sandbox: GrafanaSandbox, base_to_ms: int) -> None:
        self.sandbox = sandbox
        self.base = base_to_ms

    def ready(self) -> dict[int, tuple[float, float]]:
        out: dict[int, tuple[float, float]] = {}
        for beacon in self.sandbox.renders:
            try:
                to = int(parse_qs(urlsplit(str(beacon["url"])).query)["to"][0])
                out[to - self.base] = (float(beacon["navigation_start"]), float(beacon["ready_at"]))
            except (KeyError, ValueError, IndexError):
                continue
        return out


async def run(*, quick: bool, compare_ref: str | None = None, log: Any = print) -> dict[str, Any]:
    plan = QUICK if quick else FULL
    sandbox = GrafanaSandbox(query_delay=QUERY_DELAY)
    runner, url = await serve(sandbox.make_app())
    base_to_ms = int(time.time() * 1000) - 86_400_000
    beacons = _Beacons(sandbox, base_to_ms)
    tallies: dict[tuple[str, int], Tally] = {}
    next_index = 1000
    started = time.monotonic()
    try:
        with tempfile.TemporaryDirectory(prefix="sidecar-bench-", ignore_cleanup_errors=True) as tmpdir:
            tmp = Path(tmpdir)
            chosen = variants(compare_ref, tmp)
            for rnd in range(plan.rounds):
                for concurrency in (1, 4):
                    order = chosen if rnd % 2 == 0 else list(reversed(chosen))
                    for variant in order:
                        if variant.name in C4_ONLY and concurrency == 1:
                            continue  # shown for throughput; one at a time they differ less
                        count = plan.counts[(variant.impl, concurrency)]
                        spec = {
                            "impl": variant.impl,
                            "grafana_url": url,
                            "token": DEFAULT_TOKEN,
                            "chromium": variant.chromium,
                            "concurrency": concurrency,
                            "count": count,
                            "warmup": plan.warmup,
                            "first_index": next_index + plan.warmup,
                            "base_to_ms": base_to_ms,
                            "dashboard": DASHBOARD,
                            "panel": PANEL,
                            "width": 1000,
                            "height": 500,
                            "gap_s": plan.gap_s if concurrency == 1 else 0.0,
                            "capture": dict(variant.capture),
                        }
                        next_index += plan.warmup + count + 10
                        t0 = time.monotonic()
                        result = await _run_worker(variant, spec)
                        await asyncio.sleep(0.3)  # the last beacons are on their way
                        tally = tallies.setdefault((variant.name, concurrency), Tally())
                        _collect(tally, result, beacons.ready())
                        log(
                            f"  capture round {rnd + 1}/{plan.rounds} {variant.name} c={concurrency}: "
                            f"{count} captures in {time.monotonic() - t0:.1f}s"
                        )
    finally:
        await runner.cleanup()
    results = {
        name: {f"c{c}": t.to_json(c) for (n, c), t in sorted(tallies.items()) if n == name}
        for name in dict.fromkeys(n for n, _ in tallies)
    }
    return {
        "page": f"sandbox dashboard {DASHBOARD!r} panel {PANEL}, query answers after {QUERY_DELAY * 1000:.0f} ms",
        "plan": {
            "rounds": plan.rounds,
            "captures_per_round": {f"{i}/c{c}": n for (i, c), n in plan.counts.items()},
            "c1_idle_gap_s": plan.gap_s,
        },
        "variants": results,
        "ratios": _ratios(results),
        "seconds": round(time.monotonic() - started, 1),
    }


def _collect(tally: Tally, result: dict[str, Any], ready: dict[int, tuple[float, float]]) -> None:
    tally.elapsed_s += float(result["elapsed_s"])
    for group, seconds in result.get("cpu_s", {}).items():
        tally.cpu_s[group] = tally.cpu_s.get(group, 0.0) + float(seconds)
    for c in result["captures"]:
        tally.captures += 1
        duration = c["end_ms"] - c["start_ms"]
        tally.durations.append(duration)
        tally.classes[c["cls"]] = tally.classes.get(c["cls"], 0) + 1
        tally.drawn += 1 if c.get("drawn") else 0
        for step, seconds in c.get("steps", {}).items():
            tally.steps.setdefault(step, []).append(seconds)
        sample = {
            "index": c["index"],
            "start_ms": round(c["start_ms"], 1),
            "ms": round(duration, 1),
            "cls": c["cls"],
            "drawn": c.get("drawn"),
            "steps_ms": {k: round(v * 1000, 1) for k, v in c.get("steps", {}).items()},
        }
        page = ready.get(c["index"])
        if page is not None:
            navigation_start, ready_at = page
            tally.ready.append(ready_at - navigation_start)
            tally.overheads.append(duration - (ready_at - navigation_start))
            sample["page_ready_ms"] = round(ready_at - navigation_start, 1)
            sample["overhead_ms"] = round(duration - (ready_at - navigation_start), 1)
            sample["navigation_start_after_ms"] = round(navigation_start - c["start_ms"], 1)
        tally.samples.append(sample)


def _ratios(results: dict[str, Any]) -> dict[str, float | None]:
    def get(name: str, c: str, *path: str) -> float | None:
        node: Any = results.get(name, {}).get(c)
        for key in path:
            node = node.get(key) if isinstance(node, dict) else None
        return float(node) if isinstance(node, int | float) else None

    out: dict[str, float | None] = {}
    naive_rate = get("naive", "c4", "captures_per_min")
    for name, key in (("product", "product"), (FRESH, "fresh_contexts"), (SHELL, "headless_shell")):
        rate = get(name, "c4", "captures_per_min")
        out[f"throughput_c4_{key}_vs_naive"] = round(rate / naive_rate, 2) if naive_rate and rate else None
    for c in ("c1", "c4"):
        naive_p50, product_p50 = get("naive", c, "duration_ms", "p50"), get("product", c, "duration_ms", "p50")
        out[f"p50_{c}_naive_vs_product"] = round(naive_p50 / product_p50, 2) if naive_p50 and product_p50 else None
    for name in results:
        if name.startswith("product@"):
            before = get(name, "c1", "duration_ms", "p50")
            after = get("product", "c1", "duration_ms", "p50")
            out[f"p50_c1_{name}_vs_product"] = round(before / after, 2) if before and after else None
    return out


if __name__ == "__main__":  # python -m bench.capture [--quick]
    print(json.dumps(asyncio.run(run(quick="--quick" in sys.argv)), indent=2))
