"""End to end, in process: config file → scheduler → capture (real Chromium) → upload → push.

The daemon runs against the sandbox Grafana, Prometheus and Flashduty on loopback ports.
"""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from PIL import Image

from sidecar.config import load_config
from sidecar.daemon import Daemon
from sidecar_sandbox.runner import CONFIG_HEAD, Sandboxes, start_sandboxes
from tests.support.browsers import find_chromium
from tests.support.wait import wait_for

CHROMIUM = find_chromium()
pytestmark = [
    pytest.mark.chromium,
    pytest.mark.skipif(CHROMIUM is None, reason="no Chromium: install chromium or set SIDECAR_CHROMIUM"),
]

CONFIG = (
    CONFIG_HEAD
    + """\
capture:
  browser_path: ${CHROMIUM}
  timeout: 10s
  image_budget: 8s
server:
  listen: 127.0.0.1:0
  webhook_token: ${WEBHOOK_TOKEN}
state_dir: ${STATE_DIR}
datasources:
  - {name: prom, url: "${SANDBOX_PROMETHEUS_URL}"}
rules:
  - name: CheckoutErrors
    source: prometheus
    expr: sandbox_demo_errors > 5
    every: 1s
    severity: Critical
    title: "Errors on {{ $labels.service }}"
    description: "{{ $value }} errors/s"
    panels:
      - {dashboard: sandbox, panel: 6, title: Checkout errors, range: 15m, vars: {service: "{{ $labels.service }}"}}
  - name: Report
    source: schedule
    every: 2s
    title: Report
    panels: [{dashboard: sandbox, panel: 1, range: 1h}]
"""
)


@pytest.fixture
async def boxes() -> AsyncIterator[Sandboxes]:
    b = await start_sandboxes(query_delay=0.2)
    try:
        yield b
    finally:
        await b.close()


def write_config(tmp_path: Path, boxes: Sandboxes) -> tuple[Path, dict[str, str]]:
    path = tmp_path / "config.yaml"
    path.write_text(CONFIG)
    env = {
        **boxes.env(),
        "CHROMIUM": CHROMIUM or "",
        "STATE_DIR": str(tmp_path / "state"),
        "WEBHOOK_TOKEN": "e2e-webhook-token",
    }
    return path, env


def alerts(boxes: Sandboxes, rule: str) -> list[dict[str, Any]]:
    return [a for a in boxes.flashduty.state()["alerts"] if a["labels"].get("sidecar_rule") == rule]


def assert_real_chart(boxes: Sandboxes, image_key: str) -> None:
    """The uploaded picture is a drawn chart: Grafana green pixels present, not a spinner."""
    stored = boxes.flashduty.images.get(image_key)
    assert stored is not None, f"{image_key} was referenced but never uploaded"
    img = Image.open(io.BytesIO(stored.data)).convert("RGB")
    colors = img.getcolors(maxcolors=1 << 24) or []
    green = sum(n for n, (r, g, b) in colors if abs(r - 0x73) < 30 and abs(g - 0xBF) < 30 and abs(b - 0x69) < 30)
    assert green > 500, f"only {green} series-coloured pixels: not a drawn chart"


async def test_prometheus_and_schedule_rules_end_to_end(tmp_path: Path, boxes: Sandboxes) -> None:
    path, env = write_config(tmp_path, boxes)
    cfg = load_config(path, env=env)
    daemon = Daemon(cfg, config_path=str(path))
    await daemon.start()
    try:
        base = f"http://127.0.0.1:{daemon.port}"
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base}/readyz") as r:
                assert r.status == 200, await r.text()
            async with http.get(f"{base}/healthz") as r:
                assert r.status == 200, await r.text()

            # the scheduled report arrives with its picture
            report = await wait_for(lambda: [a for a in alerts(boxes, "Report") if a["images"]], 30, "a report")
            assert report[0]["alert_severity"] == "Info"
            assert_real_chart(boxes, report[0]["images"][0]["src"])

            # the PromQL rule fires with the panel of the firing series, then resolves
            boxes.prometheus.value = 12
            firing = await wait_for(
                lambda: [a for a in alerts(boxes, "CheckoutErrors") if a["images"]],
                30,
                "the firing alert with its picture",
            )
            alert = firing[0]
            assert alert["title"] == "Errors on checkout"
            assert alert["alert_severity"] == "Critical"
            assert alert["labels"]["alertname"] == "CheckoutErrors"
            assert alert["alert_key"].startswith("fds:")
            (image,) = alert["images"]
            assert image["alt"] == "Checkout errors"
            assert "var-service=checkout" in image["href"]
            assert_real_chart(boxes, image["src"])

            boxes.prometheus.value = 0
            await wait_for(
                lambda: any(a["alert_status"] == "Ok" for a in alerts(boxes, "CheckoutErrors")), 30, "the Ok"
            )
            statuses = [e["event_status"] for e in alert_events(boxes, alert["alert_key"])]
            assert statuses[0] == "Critical" and statuses[-1] == "Ok"

            async with http.get(f"{base}/metrics") as r:
                text = await r.text()
            for name in (
                "flashduty_sidecar_captures_total",
                "flashduty_sidecar_pushes_total",
                "flashduty_sidecar_uploads_total",
                "flashduty_sidecar_rule_evaluations_total",
            ):
                assert name in text
            assert 'flashduty_sidecar_captures_total{cls="ok"}' in text
    finally:
        await daemon.stop()
    state = boxes.flashduty.state()
    assert state["http_429"] == {"upload": 0, "push": 0, "list": 0}


def alert_events(boxes: Sandboxes, key: str) -> list[dict[str, Any]]:
    for a in boxes.flashduty.state()["alerts"]:
        if a["alert_key"] == key:
            return list(a["events"])
    return []


async def test_webhook_alert_gets_its_panel(tmp_path: Path, boxes: Sandboxes) -> None:
    path, env = write_config(tmp_path, boxes)
    cfg = load_config(path, env=env)
    cfg = cfg.model_copy(update={"rules": []})
    daemon = Daemon(cfg)
    await daemon.start()
    try:
        url = f"http://127.0.0.1:{daemon.port}/webhook/alertmanager"
        payload = {
            "version": "4",
            "groupKey": '{}:{alertname="DiskFull"}',
            "status": "firing",
            "receiver": "flashduty",
            "groupLabels": {"alertname": "DiskFull"},
            "commonLabels": {"alertname": "DiskFull"},
            "commonAnnotations": {},
            "externalURL": "http://alertmanager:9093",
            "truncatedAlerts": 0,
            "alerts": [
                {
                    "status": "firing",
                    "labels": {"alertname": "DiskFull", "severity": "critical", "instance": "db-1"},
                    "annotations": {
                        "summary": "Disk full on db-1",
                        "grafana_dashboard_uid": "sandbox",
                        "grafana_panel_id": "1",
                    },
                    "startsAt": "2026-11-23T10:00:00Z",
                    "endsAt": "0001-01-01T00:00:00Z",
                    "generatorURL": "http://prometheus/graph",
                    "fingerprint": "0123456789abcdef",
                }
            ],
        }
        async with aiohttp.ClientSession() as http:
            async with http.post(url, json=payload) as r:
                assert r.status == 401
            headers = {"Authorization": "Bearer e2e-webhook-token"}
            async with http.post(url, json=payload, headers=headers) as r:
                assert r.status < 300, await r.text()
        got = await wait_for(lambda: [a for a in alerts(boxes, "webhook") if a["images"]], 30, "webhook alert")
        assert got[0]["title"] == "Disk full on db-1"
        assert got[0]["alert_severity"] == "Critical"
        assert_real_chart(boxes, got[0]["images"][0]["src"])
    finally:
        await daemon.stop()


async def test_delivery_settings_apply_at_start_and_on_reload(
    tmp_path: Path, boxes: Sandboxes, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, env = write_config(tmp_path, boxes)
    for name, value in env.items():  # a reload reads the environment, like the real process
        monkeypatch.setenv(name, value)
    path.write_text(CONFIG + "delivery: {max_attempts: 3, image_cache_ttl: 1h}\n")
    daemon = Daemon(load_config(path), config_path=str(path))
    await daemon.start()
    try:
        assert daemon.outbox.max_attempts == 3
        assert daemon.uploader.ttl == 3600

        path.write_text(CONFIG + "delivery: {max_attempts: 7, image_cache_ttl: 2h, workers: 1}\n")
        assert await daemon.reload("test")
        assert daemon.outbox.max_attempts == 7
        assert daemon.uploader.ttl == 7200
        assert daemon.cfg.delivery.workers == 1
    finally:
        await daemon.stop()
