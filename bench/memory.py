"""Memory benchmark: does anything grow across many captures?

``CaptureService`` (in its own process, ``capture_worker.py``) takes ``count`` captures of the
sandbox panel at concurrency 2, every request distinct, in batches of ``every``. After each
batch, once the browser is at rest again (used contexts closed, the next spare open) and after a
garbage collection, it samples the RSS of its own Python process and, summed over all the
browser's Chromium processes (found by the browser's marker in ``/proc``, like
``capture.max_browser_rss_mb`` does): USS (private pages: what a leak grows), PSS (shared pages
split between the processes mapping them — on a machine where other Chromiums run, their share
moves with those) and RSS (shared libraries counted once per process). Growth compares the
sample after capture ``every`` (the browser warm) with the last one.
``recycle_after`` and ``max_browser_rss_mb`` are set out of reach so that one browser lives
through the whole run; relaunches, if any, are reported.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

from bench.capture import QUERY_DELAY, WORKER, Variant, _run_worker
from bench.common import find_chromium, serve
from sidecar.sandbox.grafana import DEFAULT_TOKEN, GrafanaSandbox

FULL = {"count": 500, "every": 50, "concurrency": 2}
KEYS = ("python_rss_kb", "chromium_uss_kb", "chromium_pss_kb", "chromium_rss_kb")
QUICK = {"count": 20, "every": 10, "concurrency": 2}


async def run(*, quick: bool, log: Any = print) -> dict[str, Any]:
    plan = QUICK if quick else FULL
    chromium = find_chromium()
    if chromium is None:
        raise RuntimeError("no Chromium: install chromium or set SIDECAR_CHROMIUM")
    sandbox = GrafanaSandbox(query_delay=QUERY_DELAY)
    runner, url = await serve(sandbox.make_app())
    started = time.monotonic()
    try:
        spec = {
            "impl": "product",
            "grafana_url": url,
            "token": DEFAULT_TOKEN,
            "chromium": chromium,
            "concurrency": plan["concurrency"],
            "count": plan["count"],
            "warmup": 1,
            "first_index": 10,
            "base_to_ms": int(time.time() * 1000) - 3 * 86_400_000,
            "dashboard": "sandbox",
            "panel": "1",
            "width": 1000,
            "height": 500,
            "memory_every": plan["every"],
            "check_every": 10,
            "recycle_after": 1_000_000,
            "max_browser_rss_mb": 1_000_000,
        }
        result = await _run_worker(Variant("product", "product", chromium, worker=WORKER), spec)
    finally:
        await runner.cleanup()
    samples = result["memory"]
    first, last = samples[0], samples[-1]
    log(f"  memory: {len(result['captures'])} captures in {time.monotonic() - started:.0f}s")

    def growth(key: str) -> float | None:
        return round((last[key] - first[key]) / first[key] * 100, 1) if first[key] else None

    checked = [c for c in result["captures"] if c.get("drawn") is not None]
    return {
        "captures": len(result["captures"]),
        "concurrency": plan["concurrency"],
        "classes": _count(c["cls"] for c in result["captures"]),
        "pictures_checked": len(checked),
        "pictures_drawn": sum(1 for c in checked if c["drawn"]),
        "browser_launches": result["launches"],
        "samples": samples,
        "first": first,
        "last": last,
        "growth_pct": {k: growth(k) for k in KEYS},
        "captures_per_min": round(len(result["captures"]) / result["elapsed_s"] * 60, 1),
        "seconds": round(time.monotonic() - started, 1),
    }


def _count(values: Any) -> dict[str, int]:
    out: dict[str, int] = {}
    for v in values:
        out[v] = out.get(v, 0) + 1
    return out


if __name__ == "__main__":
    print(json.dumps(asyncio.run(run(quick="--quick" in sys.argv)), indent=2))
