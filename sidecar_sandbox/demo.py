"""``demo``: the whole pipeline against the built-in sandboxes; its gallery is the status page.

Timeline: the sandboxes and the daemon start (the live status page's address is printed); the
demo metric rises above the threshold of the ``CheckoutErrors`` rule; after its ``for`` the alert
fires, its panels are captured in Chromium, uploaded to the sandbox Flashduty and the alert is
pushed; the metric stays high a few seconds, then drops and the ``Ok`` arrives. The sandbox
Grafana draws the sandbox Prometheus's own series, so the firing picture shows the rise and the
resolved one the rise and the fall (its one-minute window holds the whole incident).
``DIR/index.html`` is a static copy of the status page (the same template: deliveries, their
pictures and step timings, rules, the timeline), ``DIR/alerts.json`` what the sandbox Flashduty
received. SIGTERM and Ctrl-C stop it cleanly: the daemon, the browser and the sandboxes close
and the gallery is still written.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from sidecar.config import parse_config
from sidecar.logs import setup_logging
from sidecar_sandbox.runner import Sandboxes, start_sandboxes

RULE = "CheckoutErrors"
HIGH, LOW = 12.0, 0.0
HOLD = 6.0  # seconds the metric stays high after the alert arrived: the plateau in the pictures


@dataclass
class Timeline:
    t0: float = field(default_factory=time.monotonic)
    marks: list[tuple[str, str]] = field(default_factory=list)

    def say(self, text: str) -> None:
        t = f"{time.monotonic() - self.t0:5.1f}s"
        self.marks.append((t.strip(), text))
        print(f"[{t}] {text}", flush=True)


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


async def _wait_for(pred: Callable[[], Any], deadline: float, step: float = 0.25) -> Any:
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        await asyncio.sleep(step)
    return None


async def run_demo(*, out_dir: str, duration: float, browser_path: str | None = None) -> int:
    """The demo; 0 when the alert fired and resolved with its pictures, else 1 (also when stopped)."""
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    stopped_by: list[str] = []

    def stop(name: str) -> None:
        if not stopped_by:  # once: a second signal must not cut the cleanup short
            stopped_by.append(name)
            task.cancel()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop, sig.name)
    try:
        return await _run(out_dir=out_dir, duration=duration, browser_path=browser_path)
    except asyncio.CancelledError:
        if not stopped_by:
            raise
        print(f"demo stopped by {stopped_by[0]}", file=sys.stderr, flush=True)
        return 1
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


async def _run(*, out_dir: str, duration: float, browser_path: str | None) -> int:
    from sidecar.daemon import Daemon  # heavy imports only when the demo runs
    from sidecar.status.export import export_status

    tl = Timeline()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    setup_logging(level="warning", fmt="text", stream=sys.stderr)
    deadline = tl.t0 + duration
    state_dir = tempfile.mkdtemp(prefix="flashduty-sidecar-demo-")
    boxes = await start_sandboxes()
    daemon: Daemon | None = None
    ok = False
    index: Path | None = None
    try:
        tl.say(f"sandboxes up: Flashduty {boxes.flashduty_url}  Grafana {boxes.grafana_url}  Prometheus {boxes.prometheus_url}")  # fmt: skip
        browser = find_browser(browser_path)
        env = {**boxes.env(), "DEMO_STATE_DIR": state_dir, "DEMO_BROWSER_PATH": browser}
        text = resources.files("sidecar_sandbox").joinpath("demo.yaml").read_text(encoding="utf-8")
        cfg = parse_config(text, env=env)
        daemon = Daemon(cfg)
        await daemon.start()
        tl.say(f"daemon up with {len(cfg.rules)} rules; browser: {browser or 'Playwright Chromium'}")
        tl.say(f"status page: http://127.0.0.1:{daemon.port}/   (open it now: it reloads every few seconds)")
        ok = await _incident(boxes, daemon, tl, deadline)
        if ok:  # the Ok's delivery (and its pictures) recorded before the copy is made
            await _wait_for(lambda: daemon is not None and daemon.pipeline.idle, deadline)
        return 0 if ok else 1
    finally:
        try:
            if daemon is not None and daemon.app is not None:
                index = await export_status(daemon.app, out, notes=tl.marks)
        finally:
            if daemon is not None:
                await daemon.stop()
                tl.say("daemon stopped")
            (out / "alerts.json").write_text(json.dumps(_alerts(boxes, RULE), indent=2, default=str), encoding="utf-8")
            await boxes.close()
            shutil.rmtree(state_dir, ignore_errors=True)
            if index is not None:
                print(f"\ngallery: {index.resolve()}" + ("" if ok else "   (demo did not complete)"), flush=True)


async def _incident(boxes: Sandboxes, daemon: Any, tl: Timeline, deadline: float) -> bool:
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
        return False
    tl.say(
        f"alert received by Flashduty {time.monotonic() - t_high:.1f}s after the rise: "
        f"{fired['title']!r} [{fired['alert_severity']}] with {len(fired['images'])} picture(s)"
    )
    await asyncio.sleep(HOLD)
    boxes.prometheus.value = LOW
    t_low = time.monotonic()
    tl.say(f"sandbox_demo_errors drops to {LOW:g}")
    key = fired["alert_key"]

    def resolved() -> bool:
        return any(a["alert_key"] == key and a["alert_status"] == "Ok" for a in _alerts(boxes, RULE))

    if not await _wait_for(resolved, deadline):
        tl.say("the Ok did not arrive in time")
        return False
    tl.say(f"Ok received {time.monotonic() - t_low:.1f}s after the drop: alert closed")
    return True
