"""Burst benchmark: Alertmanager bursts through the whole daemon, real captures, real-time limits.

Three parts, one after the other in one run, each with fresh sandboxes (empty rate-limit windows)
and a fresh daemon (its own Chromium), upload limits at their real values (5/s AND 50/min):

1. **upload-only**: ``bench.delivery.scenario`` with 80 alerts at ``time_scale`` 1: the real
   outbox, pipeline, uploader and client, pictures handed over at once (``InstantCapture``), so
   the makespan is the uploads' alone;
2. **end-to-end burst**: one ``POST /webhook/alertmanager`` (the Alertmanager v4 payload) with 80
   firing alerts, each on its own panel (``grafana_dashboard_uid`` / ``grafana_panel_id``
   annotations; the sandbox Grafana gets a dashboard ``burst`` of 80 panels), ``capture.concurrency``
   4, real Chromium: the product's default, Debian's ``chromium-headless-shell`` where installed
   (``SIDECAR_HEADLESS_SHELL``), else ``chromium``. Makespan = the moment the webhook is sent → ``received_at`` (sandbox) of the
   last alert's first event that carries its picture. The minimum the limits allow for 80 uploads is
   ``T_min(80)`` = 60 s + 5 s = 65 s (``bench.delivery.t_min``) from the first upload, so the
   minimum the limits allow from the webhook is the first capture's end + T_min (the first upload
   as soon as the first capture ends, the windows filled exactly): the target ratio (≤ 1.03) is
   makespan ÷ that minimum; makespan ÷ T_min alone is printed beside it;
3. **storm**: 80 alerts of one ``alertname``, all on one panel whose ``var-instance`` is the alert's
   instance (``webhook.panels`` with ``vars: {instance: "{{ $labels.instance }}"}``): 80 distinct
   own pictures, more than the quota uploads within the 15 s image budget. Measured side by side,
   ``delivery.shared_pictures`` on (the default) and off (the behaviour before it): the share of
   alerts whose first push carried a picture; with it on, also when the last own picture arrived.

The end-to-end burst is also compared with the earliest the upload limits allow **for the
pictures as the captures delivered them**: with ``c_k`` the k-th capture's end (the daemon's
capture log lines), upload k can be accepted at ``t_k = max(c_k, t_(k-5) + 1 s, t_(k-50) + 60 s)``;
makespan ÷ (t_79 − webhook) is what the uploader and the pipeline add (idle quota, margins,
the follow-up push), the captures' own speed left out.

The sandbox counts 429s (must be 0) and the peak requests per rolling window.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp

from bench import delivery
from bench.common import find_chromium, find_headless_shell
from sidecar.config import load_config
from sidecar.daemon import Daemon
from sidecar_sandbox.grafana_model import Dashboard, Panel
from sidecar_sandbox.runner import CONFIG_HEAD, start_sandboxes

PARTS = ("upload", "e2e", "storm")
N = 80
QUICK_N = 12
CONCURRENCY = 4
TIMEOUT = 240.0

CONFIG = (
    CONFIG_HEAD
    + """\
capture:
  browser_path: ${CHROMIUM}
  concurrency: %(concurrency)d
server:
  listen: 127.0.0.1:0
state_dir: ${STATE_DIR}
delivery:
  shared_pictures: %(shared)s
webhook:
  panels: %(panels)s
"""
)
STORM_PANELS = '[{dashboard: sandbox, panel: 1, vars: {instance: "{{ $labels.instance }}"}}]'


def burst_dashboard(n: int, query_delay: float) -> Dashboard:
    panels = tuple(
        Panel(i, f"Service {i} requests", "series", f"requests_{i}", query_delay, 50.0 + i, 10.0 + i % 7)
        for i in range(1, n + 1)
    )
    return Dashboard(uid="burst", title="Burst", slug="burst", scenes=True, panels=panels)


def payload(n: int, *, storm: bool) -> dict[str, Any]:
    """Alertmanager's webhook body (notify/webhook: version 4) with ``n`` firing alerts."""
    starts = (datetime.now(UTC) - timedelta(minutes=2)).isoformat().replace("+00:00", "Z")
    alerts = []
    for i in range(1, n + 1):
        labels = {
            "alertname": "NodeDown" if storm else f"Service{i}Errors",
            "instance": f"host-{i}",
            "severity": "critical",
        }
        annotations = {"summary": f"{labels['alertname']} on host-{i}"}
        if not storm:
            annotations |= {"grafana_dashboard_uid": "burst", "grafana_panel_id": str(i)}
        alerts.append(
            {"status": "firing", "labels": labels, "annotations": annotations, "startsAt": starts,
             "endsAt": "0001-01-01T00:00:00Z", "generatorURL": "", "fingerprint": f"{i:016x}"}
        )  # fmt: skip
    return {"version": "4", "status": "firing", "receiver": "sidecar", "groupKey": "{}:{}", "alerts": alerts,
            "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {}, "externalURL": "http://am:9093",
            "truncatedAlerts": 0}  # fmt: skip


class _Captures(logging.Handler):
    """The wall time at which each capture ended (its log line)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.ends: list[float] = []

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, "cls", None) == "ok" and hasattr(record, "duration_ms"):
            self.ends.append(record.created)


def capture_bound(ends: list[float], since: float, per_second: int = 5, per_minute: int = 50) -> float | None:
    """The earliest acceptance of the last upload, pictures available at ``ends`` (see the docstring)."""
    t: list[float] = []
    for k, c in enumerate(sorted(ends)):
        at = c
        if k >= per_second:
            at = max(at, t[k - per_second] + 1.0)
        if k >= per_minute:
            at = max(at, t[k - per_minute] + 60.0)
        t.append(at)
    return t[-1] - since if t else None


async def _until(predicate: Callable[[], Any], what: str, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise RuntimeError(f"burst benchmark: timed out after {timeout:g}s waiting for {what}")
        await asyncio.sleep(0.05)
    return value


async def daemon_burst(chromium: str, n: int, *, storm: bool, shared: bool, own_too: bool) -> dict[str, Any]:
    """One webhook POST of ``n`` alerts to a fresh daemon; what the sandbox Flashduty saw."""
    boxes = await start_sandboxes(query_delay=0.3)
    boxes.grafana.dashboards["burst"] = burst_dashboard(n, 0.3)
    captures = _Captures()
    capture_log = logging.getLogger("sidecar.capture")
    old_level = capture_log.level
    capture_log.setLevel(logging.INFO)
    capture_log.addHandler(captures)
    try:
        with tempfile.TemporaryDirectory(prefix="sidecar-bench-burst-") as tmp:
            path = Path(tmp) / "config.yaml"
            panels = STORM_PANELS if storm else "[]"
            path.write_text(CONFIG % {"concurrency": CONCURRENCY, "shared": str(shared).lower(), "panels": panels})
            env = {**boxes.env(), "CHROMIUM": chromium, "STATE_DIR": str(Path(tmp) / "state")}
            daemon = Daemon(load_config(path, env=env))
            await daemon.start()
            fd = boxes.flashduty
            try:
                body = json.dumps(payload(n, storm=storm)).encode()
                url = f"http://127.0.0.1:{daemon.port}/webhook/alertmanager"
                async with aiohttp.ClientSession() as http:
                    sent_at = time.time()
                    async with http.post(url, data=body, headers={"Content-Type": "application/json"}) as r:
                        answered = time.time()
                        if r.status != 200:
                            raise RuntimeError(f"burst benchmark: webhook answered {r.status}: {await r.text()}")
                await _until(lambda: len(fd.alerts) >= n and all(a.events for a in fd.alerts), "first pushes", TIMEOUT)
                firsts = {a.alert_key: a.events[0] for a in fd.alerts}
                with_picture = sum(1 for e in firsts.values() if e.images)
                shared_keys = _shared_keys(fd)
                done_at = None
                if own_too:

                    def own_times() -> list[float] | None:
                        times = [min((e.received_at for e in a.events if _own(e, shared_keys)), default=None)
                                 for a in fd.alerts]  # fmt: skip
                        return None if None in times else [t for t in times if t is not None]

                    done_at = max(await _until(own_times, "every alert's own picture", TIMEOUT))
                await _until(lambda: daemon.pipeline.idle or not own_too, "the daemon to be idle", 30)
            finally:
                await daemon.stop()
            state = fd.state()
    finally:
        await boxes.close()
        capture_log.removeHandler(captures)
        capture_log.setLevel(old_level)
    uploads = sorted(i["uploaded_at"] for i in state["images"])
    scope: dict[str, Any] = next(iter(state["limits"]["upload"]["scopes"].values()), {})
    first_push = sorted(e.received_at - sent_at for e in firsts.values())
    out: dict[str, Any] = {
        "alerts": n,
        "shared_pictures": shared,
        "webhook_answer_ms": round((answered - sent_at) * 1000, 1),
        "first_push_with_picture": with_picture,
        "first_push_with_picture_pct": round(with_picture / n * 100, 1),
        "first_push_p50_s": round(first_push[len(first_push) // 2], 2),
        "first_push_max_s": round(first_push[-1], 2),
        "uploads": len(uploads),
        "first_upload_s": round(uploads[0] - sent_at, 3) if uploads else None,
        "uploads_in_first_10s_after_the_first": sum(1 for u in uploads if uploads and u - uploads[0] < 10.0),
        "http_429": state["http_429"],
        "peak_uploads_per_window": [scope.get("max_requests_in_second"), scope.get("max_requests_in_minute")],
    }
    if done_at is not None:
        makespan = done_at - sent_at
        bound = delivery.t_min(n, 1.0)
        out |= {
            "makespan_s": round(makespan, 3),
            "t_min_s": bound,
            "makespan_over_t_min": round(makespan / bound, 4) if bound else None,
            "makespan_over_first_upload_plus_t_min": round(makespan / (uploads[0] - sent_at + bound), 4)
            if uploads and bound
            else None,
        }
        if captures.ends and bound:  # the minimum the limits allow: the first upload at the first capture's end
            minimum = min(captures.ends) - sent_at + bound
            out |= {
                "first_capture_s": round(min(captures.ends) - sent_at, 3),
                "limits_minimum_s": round(minimum, 3),
                "makespan_over_limits_minimum": round(makespan / minimum, 4),
            }
        given = capture_bound(captures.ends, sent_at) if not storm else None  # a storm has one capture more
        out |= {
            "captures_ok": len(captures.ends),
            "capture_30th_s": round(sorted(captures.ends)[min(29, len(captures.ends) - 1)] - sent_at, 3)
            if captures.ends
            else None,
            "captures_per_s": round(len(captures.ends) / (max(captures.ends) - sent_at), 2) if captures.ends else None,
            "capture_bound_s": round(given, 3) if given is not None else None,
            "makespan_over_capture_bound": round(makespan / given, 4) if given else None,
        }
    return out


def _shared_keys(fd: Any) -> set[str]:
    """Image keys referenced by more than one alert: a storm's shared picture."""
    seen: dict[str, set[str]] = {}
    for a in fd.alerts:
        for e in a.events:
            for i in e.images:
                seen.setdefault(i.src, set()).add(a.alert_key)
    return {k for k, alerts in seen.items() if len(alerts) > 1}


def _own(event: Any, shared: set[str]) -> bool:
    return any(i.src not in shared for i in event.images)


async def run(*, quick: bool, log: Any = print, parts: tuple[str, ...] = PARTS) -> dict[str, Any]:
    """``parts``: some of ``upload``, ``e2e``, ``storm`` (all by default)."""
    browser = find_headless_shell() or find_chromium()  # what the product runs by default
    if browser is None:
        raise RuntimeError("the burst benchmark needs Chromium (see ./dev bench)")
    n = QUICK_N if quick else N
    started = time.monotonic()
    load = {"start": os.getloadavg()}
    upload_only: dict[str, Any] | None = None
    e2e: dict[str, Any] | None = None
    storm: dict[str, dict[str, Any]] = {}
    if "upload" in parts:
        upload_only = await delivery.scenario(n, 1.0, shared_every_other=False)
        log(f"  burst: upload-only {n} pictures in {upload_only['makespan_s']}s (T_min {upload_only['t_min_s']}s)")
    if "e2e" in parts:
        e2e = await daemon_burst(browser, n, storm=False, shared=True, own_too=True)
        log(f"  burst: end to end {n} alerts, real captures: {e2e['makespan_s']}s (T_min {e2e['t_min_s']}s)")
    if "storm" in parts:
        for shared in (True, False):
            storm["on" if shared else "off"] = r = await daemon_burst(
                browser, n, storm=True, shared=shared, own_too=shared
            )
            log(
                f"  burst: storm, shared_pictures {shared}: {r['first_push_with_picture']}/{n} first pushes with a picture"
            )
    load["end"] = os.getloadavg()
    return {
        "alerts": n,
        "browser": browser,
        "capture_concurrency": CONCURRENCY,
        "limits": "upload 5 per 1s and 50 per 60s (real time)",
        "upload_only": upload_only,
        "end_to_end": e2e,
        "storm": storm,
        "load_average": {k: [round(x, 2) for x in v] for k, v in load.items()},
        "seconds": round(time.monotonic() - started, 1),
    }


if __name__ == "__main__":
    chosen = tuple(a for a in sys.argv[1:] if a in PARTS) or PARTS
    with contextlib.suppress(KeyboardInterrupt):
        print(json.dumps(asyncio.run(run(quick="--quick" in sys.argv, parts=chosen)), indent=2))
