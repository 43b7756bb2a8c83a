"""Memory benchmark: does anything grow across many captures?

``CaptureService`` (in its own process, ``capture_worker.py``) takes ``count`` captures of the
sandbox panel at concurrency 2 with the product's defaults, every request distinct, in batches of
``every``. After each batch, once the browser is at rest again (no capture running, the pool's
pages reset) and after a garbage collection, it samples the RSS of its own Python process and,
summed over all the browser's Chromium processes (found by the browser's marker in ``/proc``,
like ``capture.max_browser_rss_mb`` does): USS (private pages: what a leak grows), PSS (shared
pages split between the processes mapping them — on a machine where other Chromiums run, their
share moves with those) and RSS (shared libraries counted once per process). Growth compares the
sample after capture ``every`` (the browser warm) with the last one.

Two settings differ from the defaults, both so that growth means a leak:

* ``recycle_after`` and ``max_browser_rss_mb`` are out of reach so that one browser lives
  through the whole run (relaunches, if any, are reported);
* the capture cache is off (``cache_ttl: 0``): every request here is distinct, so it would only
  fill up to its bound (128 pictures, 64 MiB) with pictures nobody asks for again.

A pooled context serves ``capture.context_reuse`` captures, then a fresh one replaces it, so the
browser's memory follows a saw-tooth with a period of ``concurrency × context_reuse`` captures
(the in-memory HTTP cache and history of a context grow until it is closed). ``every`` is that
period, so every sample sees the pool at the same point of its life; sampling at another period
aliases the saw-tooth into what looks like growth or shrinkage.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections import Counter
from typing import Any

from bench.capture import QUERY_DELAY, Variant, _run_worker
from bench.common import find_chromium, serve
from sidecar.config import CaptureConfig
from sidecar_sandbox.grafana import DEFAULT_TOKEN, GrafanaSandbox

CONCURRENCY = 2
PERIOD = CONCURRENCY * int(CaptureConfig.model_fields["context_reuse"].default)  # captures per pool turnover
FULL = {"count": 500, "every": PERIOD, "concurrency": CONCURRENCY}
QUICK = {"count": 20, "every": 10, "concurrency": CONCURRENCY}
KEYS = ("python_rss_kb", "chromium_uss_kb", "chromium_pss_kb", "chromium_rss_kb")


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
            "cache_ttl": 0,
            "max_browser_rss_mb": 1_000_000,
        }
        result = await _run_worker(Variant("product", "product", chromium), spec)
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
        "classes": dict(Counter(c["cls"] for c in result["captures"])),
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


if __name__ == "__main__":
    print(json.dumps(asyncio.run(run(quick="--quick" in sys.argv)), indent=2))
