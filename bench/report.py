"""The markdown report of a benchmark run: ``render(report)`` (the tables ``python -m bench`` prints)."""

from __future__ import annotations

from typing import Any

from bench import burst_tables, ha
from bench.common import fmt, table


def render(report: dict[str, Any]) -> str:
    m = report["machine"]
    head = (
        f"Measured {report['started_at']} on {m['nproc']} × {m['cpu']}, {m['ram_gib']} GiB RAM, "
        f"load average {' / '.join(str(x) for x in m['load_avg'])} at start, "
        f"{' / '.join(str(x) for x in report.get('load_avg_end', []))} at the end; "
        f"{m['chromium'] or 'no Chromium'}. Whole run {report['seconds']:.0f} s"
        + (" (--quick: smoke counts, not for comparison)." if report["quick"] else ".")
    )
    parts = [head, "", _headline(report["results"])]
    r = report["results"]
    if "capture" in r and "error" not in r["capture"]:
        parts += ["", _capture_table(r["capture"])]
    if "delivery" in r and "error" not in r["delivery"]:
        parts += ["", _delivery_table(r["delivery"])]
    if "e2e" in r and "error" not in r["e2e"]:
        parts += ["", _e2e_table(r["e2e"])]
    if "burst" in r and "error" not in r["burst"]:
        parts += ["", burst_tables.table(r["burst"])]
    if "memory" in r and "error" not in r["memory"]:
        parts += ["", _memory_table(r["memory"])]
    if "sizing" in r and "error" not in r["sizing"]:
        parts += ["", _sizing_table(r["sizing"])]
    if "ha" in r and "error" not in r["ha"]:
        parts += ["", ha.render(r["ha"])]
    errors = [f"- {name}: {res['error']}" for name, res in r.items() if "error" in res]
    if errors:
        parts += ["", "Not measured:", *errors]
    return "\n".join(parts)


def _met(ok: bool | None) -> str:
    return "–" if ok is None else ("yes" if ok else "**no**")


def _headline(results: dict[str, Any]) -> str:
    rows: list[list[str]] = []
    cap = results.get("capture", {})
    if "variants" in cap:
        c1 = cap["variants"].get("product", {}).get("c1", {}).get("overhead_ms", {})
        ok = c1.get("p50", 1e9) <= 150 and c1.get("p95", 1e9) <= 400 if c1 else None
        rows.append(
            [
                "capture overhead above the page's ready time, p50 / p95 (one at a time)",
                f"{fmt(c1.get('p50'))} / {fmt(c1.get('p95'))} ms",
                "≤ 150 / ≤ 400 ms",
                _met(ok),
            ]
        )
        c4 = cap["variants"].get("product", {}).get("c4", {}).get("overhead_ms", {})
        rows.append(
            ["capture overhead p50 / p95 (4 at once)", f"{fmt(c4.get('p50'))} / {fmt(c4.get('p95'))} ms", "–", "–"]
        )
        ratio = cap["ratios"].get("throughput_c4_product_vs_naive")
        rows.append(
            [
                "capture throughput at concurrency 4, product ÷ naive",
                f"{fmt(ratio, 2)}×",
                "≥ 2.5×",
                _met(ratio >= 2.5 if ratio else None),
            ]
        )
        for key, label in (
            ("fresh_contexts", "… the same with a fresh context per capture (`context_reuse: 1`)"),
            ("headless_shell", "… the same on chromium-headless-shell (naive unchanged)"),
        ):
            other = cap["ratios"].get(f"throughput_c4_{key}_vs_naive")
            if other is not None:
                rows.append([label, f"{fmt(other, 2)}×", "–", "–"])
    dlv = results.get("delivery", {})
    if "distinct" in dlv:
        d, dd = dlv["distinct"], dlv["dedup"]
        rows.append(
            [
                f"delivery makespan ÷ T_min, {d['alerts']} alerts, {d['distinct_pictures']} pictures",
                f"{fmt(d['makespan_s'], 2)} s ÷ {fmt(d['t_min_s'], 2)} s = {fmt(d['makespan_over_t_min'], 3)}",
                "≤ 1.05",
                _met(d["makespan_over_t_min"] <= 1.05),
            ]
        )
        n429 = sum(d["http_429"].values()) + sum(dd["http_429"].values())
        rows.append(["HTTP 429 answers (both bursts, sandbox counters)", str(n429), "0", _met(n429 == 0)])
        expected = dd["alerts"] - dd["distinct_pictures"]
        rows.append(
            [
                f"uploads saved by dedup ({dd['alerts']} alerts, {dd['distinct_pictures']} distinct pictures)",
                f"{dd['uploads_saved']} ({dd['uploads_at_sandbox']} uploads)",
                f"{expected}",
                _met(dd["uploads_saved"] == expected),
            ]
        )
    if "alerts" in results.get("burst", {}):
        rows += burst_tables.headline(results["burst"])
    h = results.get("ha", {})
    if "failover_s" in h:
        f, d = h["failover_s"], h["duplicates_per_failover"]
        rows.append(
            [
                f"HA failover, kill -9 of the leader → first push by the next, p50 / max ({h['failovers']} failovers)",
                f"{f['p50']:.2f} / {f['max']:.2f} s; duplicates {d['max']} at most",
                f"≤ {h['bound_s']:g} s (lease + retry + one evaluation); ≤ 1",
                _met(h["within_bound"] == h["failovers"] and d["max"] <= 1),
            ]
        )
    e = results.get("e2e", {})
    if "summary" in e:
        t = e["summary"]["total_ms"]
        rows.append(
            [
                f"end to end, metric true → alert with picture, p50 / p95 ({t['n']} cycles)",
                f"{fmt(t['p50'])} / {fmt(t['p95'])} ms",
                "–",
                "–",
            ]
        )
    mem = results.get("memory", {})
    if "growth_pct" in mem:
        g = mem["growth_pct"]
        judged = [g[k] for k in ("python_rss_kb", "chromium_uss_kb") if g.get(k) is not None]
        worst = max(judged) if judged else None
        rows.append(
            [
                f"memory growth, capture {mem['first']['captures']} → {mem['last']['captures']} "
                "(Python RSS / Chromium USS / PSS / RSS)",
                f"{fmt(g['python_rss_kb'], 1)} / {fmt(g['chromium_uss_kb'], 1)} / {fmt(g['chromium_pss_kb'], 1)} "
                f"/ {fmt(g['chromium_rss_kb'], 1)} %",
                "≤ 10 %",
                _met(worst <= 10 if worst is not None else None),
            ]
        )
    return table(["benchmark", "measured", "target", "met"], rows)


def _capture_table(cap: dict[str, Any]) -> str:
    rows = []
    for name, by_c in cap["variants"].items():
        for c, res in sorted(by_c.items()):
            d, o = res["duration_ms"], res["overhead_ms"]
            rows.append(
                [
                    name,
                    c.removeprefix("c"),
                    res["captures"],
                    fmt(d["p50"]),
                    fmt(d["p95"]),
                    fmt(o["p50"]),
                    fmt(o["p95"]),
                    fmt(res["page_ready_ms"]["p50"]),
                    fmt(res["captures_per_min"], 1),
                    fmt(float(sum(res.get("cpu_ms_per_capture", {}).values())) or None),
                    f"{res['pictures_drawn']}/{res['captures']}",
                ]
            )
    plan = cap["plan"]
    note = (
        f"Capture: {cap['page']}. Concurrency 1: one capture at a time, {plan['c1_idle_gap_s']:g} s idle before "
        "each (an alert that arrives alone); concurrency 4: back to back (a burst). "
        f"{plan['rounds']} interleaved round(s). Overhead = capture time − the page's own ready time "
        "(navigation start → last query done and chart drawn, reported by the page). "
        "Pictures drawn: series visible and no loading indicator. CPU: the worker's whole process tree "
        "(Python, Playwright's driver, the browser) per capture."
    )
    headers = [
        "variant",
        "conc.",
        "captures",
        "p50 ms",
        "p95 ms",
        "overhead p50",
        "overhead p95",
        "page ready p50",
        "captures/min",
        "CPU ms/capture",
        "drawn",
    ]
    return note + "\n\n" + table(headers, rows)


def _delivery_table(dlv: dict[str, Any]) -> str:
    rows = []
    bursts = [("distinct pictures", dlv["distinct"])]
    if "journal_rounds" in dlv:  # every round, without and with the status page's journal (ABBA order)
        jr = dlv["journal_rounds"]
        bursts = [(f"distinct, round {i + 1}", d) for i, d in enumerate(jr["without"])]
        bursts += [(f"distinct, with the status journal, round {i + 1}", d) for i, d in enumerate(jr["with"])]
    for label, d in [*bursts, ("half the pictures identical", dlv["dedup"])]:
        rows.append(
            [
                label,
                d["alerts"],
                d["distinct_pictures"],
                d["uploads_at_sandbox"],
                d["followups"],
                fmt(d["makespan_s"], 2),
                fmt(d["t_min_s"], 2),
                fmt(d["makespan_over_t_min"], 3),
                sum(d["http_429"].values()),
                f"{d['upload_windows_peak']['per_second_window']} / {d['upload_windows_peak']['per_minute_window']}",
                f"{fmt(d.get('first_push_p50_s'), 2)} / {fmt(d.get('first_push_max_s'), 2)}",
            ]
        )
    note = (
        f"Delivery: one burst through the real outbox, pipeline, uploader and client to the sandbox Flashduty; "
        f"{dlv['limits']}; image budget {dlv['image_budget_s']:g} s (scaled alike). {dlv['formula']}."
    )
    headers = [
        "burst",
        "alerts",
        "distinct pictures",
        "uploads",
        "follow-ups",
        "makespan s",
        "T_min s",
        "ratio",
        "429s",
        "peak uploads per window (s / min)",
        "first push p50 / max s",
    ]
    return note + "\n\n" + table(headers, rows)


def _e2e_table(e: dict[str, Any]) -> str:
    labels = {
        "total_ms": "total: metric true → alert with picture",
        "eval_wait_ms": "evaluation wait (scrape + rule interval)",
        "capture_ms": "capture",
        "upload_ms": "upload",
        "push_ms": "push",
        "other_ms": "other (outbox, hashing, scheduling)",
    }
    rows = [
        [label, fmt(e["summary"][k]["p50"]), fmt(e["summary"][k]["p95"]), fmt(e["median_share_pct"].get(k), 1)]
        for k, label in labels.items()
    ]
    note = (
        "End to end: real Prometheus (scrape 1 s) → daemon (rule every 1 s, for 0 s) → capture (real Chromium, "
        "sandbox Grafana) → sandbox Flashduty; "
        f"{e['summary']['total_ms']['n']} cycles."
    )
    return note + "\n\n" + table(["part", "p50 ms", "p95 ms", "share of p50 %"], rows)


def _memory_table(mem: dict[str, Any]) -> str:
    keys = ("python_rss_kb", "chromium_uss_kb", "chromium_pss_kb", "chromium_rss_kb")
    rows: list[list[Any]] = []
    for s in mem["samples"]:
        if s is mem["samples"][0] or s is mem["samples"][-1] or s["captures"] % 100 == 0:
            rows.append([s["captures"], *(fmt(s[k] / 1024, 1) for k in keys), s["chromium_processes"]])
    g = mem["growth_pct"]
    rows.append(["growth", *(f"{fmt(g[k], 1)} %" for k in keys), ""])
    note = (
        f"Memory: {mem['captures']} captures at concurrency {mem['concurrency']} on one browser "
        f"({mem['browser_launches']} launch(es)); {mem['pictures_drawn']}/{mem['pictures_checked']} sampled "
        f"pictures drawn; {mem['captures_per_min']} captures/min."
    )
    headers = ["after capture", "Python RSS MiB", "Chromium USS MiB", "PSS MiB", "RSS MiB", "processes"]
    return (
        note
        + " Sampled at rest after every pool turnover (concurrency × capture.context_reuse captures), after a garbage"
        " collection, capture cache off; the target applies to Python RSS and Chromium USS.\n\n" + table(headers, rows)
    )


def _sizing_table(sz: dict[str, Any]) -> str:
    phases = [sz["start"], sz["load"], sz["idle"]]

    def group(g: str, label: str) -> list[str]:
        cells = [label]
        for ph in phases:
            x = ph[g]
            cells.append(f"{fmt(x['pss_mib_median'])} ({fmt(x['pss_mib_peak'])})")
        lo = min(ph[g]["processes_min"] for ph in phases)
        hi = max(ph[g]["processes_max"] for ph in phases)
        cells.append(str(lo) if lo == hi else f"{lo}–{hi}")
        return cells

    rows = [group("python", "Python daemon"), group("node", "Playwright's Node driver"), group("chromium", "Chromium")]
    rows.append(
        ["**whole container, PSS**"]
        + [f"**{fmt(ph['total']['pss_mib_median'])}** ({fmt(ph['total']['pss_mib_peak'])})" for ph in phases]
        + [""]
    )
    rows.append(
        ["whole container, sum of RSS"]
        + [f"{fmt(ph['total']['rss_mib_median'])} ({fmt(ph['total']['rss_mib_peak'])})" for ph in phases]
        + [""]
    )
    rows.append(["CPU, cores", "–", fmt(sz["load"]["cpu_cores"], 2), fmt(sz["idle"]["cpu_cores"], 2), ""])
    plan = sz["plan"]
    note = (
        f"Sizing: the daemon as a pod runs it (`python -m sidecar run`), a schedule rule `{plan['load_schedule']}` "
        f"capturing four pictures (three panels, one 1600×900 dashboard; capture cache off) for {plan['load_s']:g} s "
        f"({sz['captures']} captures), then idle once the context pool was trimmed; /proc sampled every "
        f"{plan['sample_s']:g} s. Start-up (exec → /readyz 200): {sz['startup']['wall_s']:g} s, "
        f"{sz['startup']['cpu_s']:g} CPU s. MiB, median (peak)."
    )
    headers = ["process", "at start", "load", "idle, pool trimmed", "processes"]
    return note + "\n\n" + table(headers, rows)
