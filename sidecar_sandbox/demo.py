"""``demo``: the whole pipeline against the built-in sandboxes, then a gallery.

Timeline: the sandboxes and the daemon start; the demo metric rises above the threshold of the
``CheckoutErrors`` rule; after its ``for`` the alert fires, its panels are captured in Chromium,
uploaded to the sandbox Flashduty and the alert is pushed; then the metric drops and the ``Ok``
arrives. ``DIR/index.html`` shows the alerts as the sandbox received them, their pictures and
the timings.
"""

from __future__ import annotations

import asyncio
import html
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from sidecar.config import parse_config
from sidecar.logs import setup_logging
from sidecar_sandbox.runner import Sandboxes, start_sandboxes

RULE = "CheckoutErrors"
HIGH, LOW = 12.0, 0.0


@dataclass
class Timeline:
    t0: float = field(default_factory=time.monotonic)
    wall0: float = field(default_factory=time.time)
    marks: list[tuple[float, str]] = field(default_factory=list)

    def say(self, text: str) -> None:
        t = time.monotonic() - self.t0
        self.marks.append((t, text))
        print(f"[{t:5.1f}s] {text}", flush=True)


class _CaptureLog(logging.Handler):
    """Collects the structured capture and delivery log lines for the gallery."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.captures: list[dict[str, Any]] = []
        self.deliveries: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        fields = {
            k: v
            for k, v in vars(record).items()
            if k
            in {
                "dashboard",
                "panel",
                "cls",
                "steps",
                "duration_ms",
                "rule",
                "alert_key",
                "status",
                "captures",
                "uploads",
                "outcome",
            }
        }
        if record.name.startswith("sidecar.capture") and "cls" in fields:
            self.captures.append({"msg": record.getMessage(), **fields})
        elif record.name.startswith("sidecar.delivery") and "outcome" in fields:
            self.deliveries.append({"msg": record.getMessage(), **fields})


def find_browser(explicit: str | None) -> str:
    """An explicit path, then $SIDECAR_CHROMIUM, then a Chromium on PATH; '' = Playwright's own."""
    if explicit:
        return explicit
    env = os.environ.get("SIDECAR_CHROMIUM", "")
    if env and os.access(env, os.X_OK):
        return env
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return ""


def _alerts(boxes: Sandboxes, rule: str) -> list[dict[str, Any]]:
    return [a for a in boxes.flashduty.state()["alerts"] if a["labels"].get("sidecar_rule") == rule]


async def _wait_for(pred: Any, deadline: float, step: float = 0.25) -> Any:
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        await asyncio.sleep(step)
    return None


async def run_demo(*, out_dir: str, duration: float, browser_path: str | None = None) -> int:
    from sidecar.daemon import Daemon  # heavy imports only when the demo runs

    tl = Timeline()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    setup_logging(level="warning", fmt="text", stream=sys.stderr)
    collector = _CaptureLog()
    logging.getLogger("sidecar").addHandler(collector)
    logging.getLogger("sidecar").setLevel(logging.INFO)
    deadline = tl.t0 + duration
    state_dir = tempfile.mkdtemp(prefix="flashduty-sidecar-demo-")
    boxes = await start_sandboxes()
    tl.say(
        f"sandboxes up: Flashduty {boxes.flashduty_url}  Grafana {boxes.grafana_url}  Prometheus {boxes.prometheus_url}"
    )
    browser = find_browser(browser_path)
    env = {**boxes.env(), "DEMO_STATE_DIR": state_dir, "DEMO_BROWSER_PATH": browser}
    text = resources.files("sidecar_sandbox").joinpath("demo.yaml").read_text(encoding="utf-8")
    cfg = parse_config(text, env=env)
    daemon = Daemon(cfg)
    ok = False
    fired: dict[str, Any] | None = None
    try:
        await daemon.start()
        tl.say(
            f"daemon up on 127.0.0.1:{daemon.port} with {len(cfg.rules)} rules; "
            f"browser: {browser or 'Playwright Chromium'}"
        )
        await asyncio.sleep(2.0)
        boxes.prometheus.value = HIGH
        t_high = time.monotonic()
        tl.say(f"sandbox_demo_errors rises to {HIGH:g} (rule {RULE}: > 5 for 4s)")

        def firing_with_pictures() -> dict[str, Any] | None:
            for a in _alerts(boxes, RULE):
                if a["alert_status"] != "Ok" and a["images"]:
                    return a
            return None

        fired = await _wait_for(firing_with_pictures, deadline)
        if fired is None:
            tl.say("no firing alert with pictures arrived in time")
            return 1
        tl.say(
            f"alert received by Flashduty {time.monotonic() - t_high:.1f}s after the rise: "
            f"{fired['title']!r} [{fired['alert_severity']}] with {len(fired['images'])} picture(s)"
        )
        await asyncio.sleep(1.0)
        boxes.prometheus.value = LOW
        t_low = time.monotonic()
        tl.say("sandbox_demo_errors drops to 0")
        key = fired["alert_key"]

        def resolved() -> bool:
            return any(a["alert_key"] == key and a["alert_status"] == "Ok" for a in _alerts(boxes, RULE))

        if not await _wait_for(resolved, deadline):
            tl.say("the Ok did not arrive in time")
            return 1
        tl.say(f"Ok received {time.monotonic() - t_low:.1f}s after the drop: alert closed")
        ok = True
        return 0
    finally:
        await daemon.stop()
        tl.say("daemon stopped")
        index = _write_gallery(out, boxes, tl, collector, ok)
        await boxes.close()
        logging.getLogger("sidecar").removeHandler(collector)
        shutil.rmtree(state_dir, ignore_errors=True)
        print(f"\ngallery: {index.resolve()}" + ("" if ok else "   (demo did not complete)"), flush=True)


# ---------------------------------------------------------------------------------- gallery

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;background:#111217;color:#d8d9da;margin:0;padding:24px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:0}.muted{color:#8e8e8e;font-size:13px}
.alert{background:#181b1f;border:1px solid #2c3235;border-radius:6px;margin:18px 0;padding:16px}
.badge{display:inline-block;padding:2px 8px;border-radius:3px;font-size:12px;font-weight:600;margin-right:6px}
.Critical{background:#c4162a}.Warning{background:#e0b400;color:#111}.Info{background:#3274d9}.Ok{background:#299c46}
.chip{display:inline-block;background:#22252b;border:1px solid #2c3235;border-radius:10px;padding:1px 8px;margin:2px;font-size:12px}
figure{display:inline-block;margin:10px 10px 0 0}figure img{max-width:560px;border:1px solid #2c3235}
figcaption{font-size:12px;color:#8e8e8e}table{border-collapse:collapse;font-size:13px;margin-top:8px}
td,th{border-bottom:1px solid #2c3235;padding:3px 10px;text-align:left}pre{white-space:pre-wrap;font-size:13px}
"""


def _write_gallery(out: Path, boxes: Sandboxes, tl: Timeline, log: _CaptureLog, ok: bool) -> Path:
    img_dir = out / "images"
    img_dir.mkdir(exist_ok=True)
    state = boxes.flashduty.state()
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>flashduty-sidecar demo</title>"
        f"<style>{_CSS}</style></head><body><h1>flashduty-sidecar demo</h1>"
        f"<div class='muted'>{'completed' if ok else 'did not complete'} · "
        f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(tl.wall0))} · "
        f"alerts as the sandbox Flashduty received them</div>"
    ]
    for a in sorted(state["alerts"], key=lambda a: a["created_at"]):
        parts.append(_alert_html(a, boxes, img_dir, tl))
    parts.append("<div class='alert'><h2>Timeline</h2><table>")
    parts += [f"<tr><td>{t:.1f}s</td><td>{html.escape(m)}</td></tr>" for t, m in tl.marks]
    parts.append(
        "</table></div><div class='alert'><h2>Captures</h2><table><tr><th>panel</th><th>class</th>"
        "<th>steps</th><th>total</th></tr>"
    )
    for c in log.captures:
        steps = ", ".join(f"{k} {v:.0f}ms" for k, v in (c.get("steps") or {}).items())  # logged in ms
        parts.append(
            f"<tr><td>{html.escape(str(c.get('dashboard')))}/{html.escape(str(c.get('panel')))}</td>"
            f"<td>{html.escape(str(c.get('cls')))}</td><td>{html.escape(steps)}</td>"
            f"<td>{c.get('duration_ms', '')} ms</td></tr>"
        )
    parts.append("</table></div><div class='alert'><h2>Deliveries</h2><table>")
    parts += [f"<tr><td>{html.escape(d['msg'])}</td></tr>" for d in log.deliveries]
    parts.append("</table></div></body></html>")
    index = out / "index.html"
    index.write_text("\n".join(parts), encoding="utf-8")
    (out / "alerts.json").write_text(json.dumps(state["alerts"], indent=2, default=str), encoding="utf-8")
    return index


def _alert_html(a: dict[str, Any], boxes: Sandboxes, img_dir: Path, tl: Timeline) -> str:
    status = a["alert_status"]
    chips = "".join(f"<span class='chip'>{html.escape(k)}={html.escape(v)}</span>" for k, v in a["labels"].items())
    figs = []
    for img in a["images"]:
        stored = boxes.flashduty.images.get(img["src"])
        if stored is None:
            continue
        fmt = getattr(stored.format, "name", str(stored.format))
        ext = {"jpeg": "jpg"}.get(fmt, fmt)
        name = f"{img['src']}.{ext}"
        (img_dir / name).write_bytes(stored.data)
        figs.append(
            f"<figure><img src='images/{html.escape(name)}' alt='{html.escape(img['alt'])}'>"
            f"<figcaption>{html.escape(img['alt'])} · {len(stored.data) // 1024} KiB</figcaption></figure>"
        )
    events = "".join(
        f"<tr><td>+{e['received_at'] - tl.wall0:.1f}s</td><td><span class='badge {e['event_status']}'>"
        f"{e['event_status']}</span></td><td>{len(e['images'])} picture(s)</td>"
        f"<td>{html.escape((e.get('description') or '')[:160])}</td></tr>"
        for e in a["events"]
    )
    return (
        f"<div class='alert'><span class='badge {a['alert_severity']}'>{a['alert_severity']}</span>"
        f"<span class='badge {status}'>{'resolved' if status == 'Ok' else 'firing'}</span>"
        f"<h2 style='display:inline'>{html.escape(a['title'])}</h2>"
        f"<div class='muted'>{html.escape(a['alert_key'])} · {a['event_cnt']} event(s)</div>"
        f"<div>{chips}</div><pre>{html.escape(a.get('description') or '')}</pre>{''.join(figs)}"
        f"<table><tr><th>received</th><th>status</th><th>pictures</th><th>description</th></tr>{events}"
        f"</table></div>"
    )
