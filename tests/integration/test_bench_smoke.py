"""``python -m bench --quick`` runs and writes a well-formed report (not a performance test).

Only the delivery benchmark runs here: it needs no browser and takes a few seconds; the others
share its entry point, rendering and JSON writing, and are exercised by ``./dev bench``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def test_quick_delivery_bench_writes_json_and_prints_the_table(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--only", "delivery", "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| benchmark | measured | target | met |" in proc.stdout
    assert "delivery makespan ÷ T_min" in proc.stdout

    report = json.loads(out.read_text())
    assert report["quick"] is True
    assert report["machine"]["nproc"] >= 1 and report["machine"]["ram_gib"] > 0
    assert report["seconds"] > 0
    delivery = report["results"]["delivery"]
    assert delivery["time_scale"] > 1 and "T_min" in delivery["formula"]
    for burst in ("distinct", "dedup"):
        d = delivery[burst]
        assert d["alerts"] > 0 and d["distinct_pictures"] > 0
        assert d["makespan_s"] > 0 and d["t_min_s"] > 0 and d["makespan_over_t_min"] > 0
        assert set(d["http_429"]) == {"upload", "push", "list"}
        assert d["uploads_at_sandbox"] == d["distinct_pictures"]  # every distinct picture, once
    assert delivery["distinct"]["uploads_saved"] == 0
    assert (
        delivery["dedup"]["uploads_saved"] == delivery["dedup"]["alerts"] - delivery["dedup"]["distinct_pictures"] > 0
    )
