"""``python -m bench``: run the benchmarks, print markdown tables, write JSON.

    python -m bench                       everything (about 10–14 min on 2 cores)
    python -m bench --quick               a short smoke run (smaller counts, same code paths)
    python -m bench --only delivery,e2e   some of: capture, delivery, e2e, burst, memory, sizing, ha
    python -m bench --compare-ref REF     also run the capture benchmark on git revision REF
    python -m bench --json PATH           where to write the JSON (default bench/results/latest.json)

See bench/README.md for what each benchmark measures. Progress goes to stderr, the tables to
stdout. Exit status 1 when a benchmark could not run (its error is in the JSON).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import traceback
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import burst, capture, delivery, e2e, ha, memory, sizing
from bench.common import ROOT, load_avg, machine
from bench.report import render

BENCHMARKS: dict[str, Callable[..., Awaitable[dict[str, Any]]]] = {
    "capture": capture.run,
    "delivery": delivery.run,
    "e2e": e2e.run,
    "burst": burst.run,
    "memory": memory.run,
    "sizing": sizing.run,
    "ha": ha.run,
}
DEFAULT_JSON = ROOT / "bench" / "results" / "latest.json"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description="flashduty-sidecar benchmarks")
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    parser.add_argument("--only", default=",".join(BENCHMARKS), help="comma-separated: " + ", ".join(BENCHMARKS))
    parser.add_argument("--compare-ref", metavar="REF", help="also measure the capture code of this git revision")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help=f"output file (default {DEFAULT_JSON})")
    args = parser.parse_args(argv)
    chosen = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(unknown)}")
    report = asyncio.run(_run(chosen, quick=args.quick, compare_ref=args.compare_ref))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(render(report))
    print(f"\nJSON: {args.json}", file=sys.stderr)
    return 1 if any("error" in r for r in report["results"].values()) else 0


async def _run(chosen: list[str], *, quick: bool, compare_ref: str | None) -> dict[str, Any]:
    started = time.monotonic()
    report: dict[str, Any] = {
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "quick": quick,
        "machine": machine(),
        "results": {},
    }
    _log(f"machine: {report['machine']}")
    for name in chosen:
        _log(f"{name} …")
        t0 = time.monotonic()
        kwargs: dict[str, Any] = {"quick": quick, "log": _log}
        if name == "capture":
            kwargs["compare_ref"] = compare_ref
        try:
            report["results"][name] = await BENCHMARKS[name](**kwargs)
        except Exception as e:  # one benchmark failing must not lose the others
            report["results"][name] = {"error": f"{type(e).__name__}: {e}"}
            _log(traceback.format_exc())
        _log(f"{name} done in {time.monotonic() - t0:.0f}s")
    report["seconds"] = round(time.monotonic() - started, 1)
    report["load_avg_end"] = load_avg()
    return report


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
