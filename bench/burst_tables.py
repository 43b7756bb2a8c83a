"""The burst benchmark's rows in the headline table and its own table (``bench.burst`` measures)."""

from __future__ import annotations

from typing import Any


def headline(b: dict[str, Any]) -> list[list[str]]:
    """Rows of the summary table: (benchmark, measured, target, met)."""
    rows: list[list[str]] = []
    up, e2e, storm = b.get("upload_only"), b.get("end_to_end"), b.get("storm", {})
    if up:
        rows.append([f"burst, upload-only makespan ÷ T_min, {up['alerts']} pictures, real-time limits",
                     f"{up['makespan_s']:.2f} s ÷ {up['t_min_s']:.0f} s = {up['makespan_over_t_min']:.3f}", "–", "–"])  # fmt: skip
    if e2e:
        ratio = e2e.get("makespan_over_limits_minimum")
        if ratio is not None:
            rows.append([f"burst end to end (webhook → last picture), {e2e['alerts']} alerts, own panels, real captures, "
                         "÷ the limits' minimum (first capture's end + T_min)",
                         f"{e2e['makespan_s']:.2f} s ÷ ({e2e['first_capture_s']:.2f} + {e2e['t_min_s']:.0f}) s = {ratio:.3f}",
                         "≤ 1.03", "yes" if ratio <= 1.03 else "**no**"])  # fmt: skip
        rows.append(["… ÷ T_min alone (as if the first picture were there at the webhook)",
                     f"{e2e['makespan_s']:.2f} s ÷ {e2e['t_min_s']:.0f} s = {e2e['makespan_over_t_min']:.3f}", "–", "–"])  # fmt: skip
        rows.append(["… ÷ the earliest the limits allow for the pictures as captured",
                     f"{e2e['makespan_s']:.2f} s ÷ {e2e['capture_bound_s']:.2f} s = {e2e['makespan_over_capture_bound']:.3f}"
                     f" ({e2e['captures_per_s']} captures/s; 30th at {e2e['capture_30th_s']:.1f} s)", "–", "–"])  # fmt: skip
    if "on" in storm and "off" in storm:
        on, off = storm["on"], storm["off"]
        rows.append([f"storm of {on['alerts']} instances of one rule: first push with a picture, shared_pictures on / off",
                     f"{on['first_push_with_picture_pct']:.0f} % / {off['first_push_with_picture_pct']:.0f} %", "≥ 95 %",
                     "yes" if on["first_push_with_picture_pct"] >= 95 else "**no**"])  # fmt: skip
    n429 = sum(sum(r["http_429"].values()) for r in (up, e2e, *storm.values()) if r)
    rows.append(
        ["HTTP 429 answers (burst benchmark, sandbox counters)", str(n429), "0", "yes" if n429 == 0 else "**no**"]
    )
    return rows


def table(b: dict[str, Any]) -> str:
    """The burst benchmark's own table, one row per run."""
    lines = [
        f"Burst: {b['alerts']} Alertmanager alerts in one webhook, capture.concurrency {b['capture_concurrency']}, "
        f"{b['limits']}, {b['browser']}; load average {b['load_average']['start']} at start, "
        f"{b['load_average']['end']} at the end.",
        "",
        "| run | first push with picture | first upload s | captures/s | last picture s | T_min s | ratio | 429s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    runs = [("end to end, own panels", b.get("end_to_end"))] + [
        (f"storm, shared_pictures {k}", v) for k, v in b.get("storm", {}).items()
    ]
    for name, r in runs:
        if not r:
            continue
        last = f"{r['makespan_s']:.2f}" if "makespan_s" in r else "–"
        ratio = f"{r['makespan_over_t_min']:.3f}" if "makespan_s" in r else "–"
        lines.append(
            f"| {name} | {r['first_push_with_picture']}/{r['alerts']} | {r['first_upload_s']} | "
            f"{r.get('captures_per_s', '–')} | {last} | {r.get('t_min_s', '–')} | {ratio} | {sum(r['http_429'].values())} |"
        )
    return "\n".join(lines)
