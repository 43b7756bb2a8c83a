"""Real Prometheus → the sidecar's Alertmanager API → a Flashduty alert with its picture, closed by ``Ok``.

Debian's ``prometheus`` evaluates a rule every second and sends to the sidecar as to an
Alertmanager (``alerting.alertmanagers``, bearer token). The daemon runs with real Chromium
against the sandbox Grafana and Flashduty. The rule fires: the Flashduty alert opens with the
panel its annotations name. Then the rule is removed from Prometheus (rule file emptied,
``/-/reload``): Prometheus never sends it resolved, so the alert closes only because its
``endsAt`` (4 × 1 s ahead, ``--rules.alert.resend-delay=1s``) passes with no new POST.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from sidecar.config import load_config
from sidecar.daemon import Daemon
from sidecar.model import alert_key
from sidecar_sandbox.runner import Sandboxes, start_sandboxes
from tests.support.browsers import find_chromium
from tests.support.procs import PROMETHEUS, have, prometheus
from tests.support.wait import wait_for

CHROMIUM = find_chromium()
pytestmark = [
    pytest.mark.prometheus,
    pytest.mark.chromium,
    pytest.mark.skipif(not have(PROMETHEUS), reason=f"{PROMETHEUS} not installed"),
    pytest.mark.skipif(CHROMIUM is None, reason="no Chromium: install chromium or set SIDECAR_CHROMIUM"),
]

TOKEN = "prometheus-to-sidecar"
CONFIG = """
flashduty: {api_host: "${SANDBOX_FLASHDUTY_URL}", integration_key: "${FLASHDUTY_INTEGRATION_KEY}"}
grafana: {url: "${SANDBOX_GRAFANA_URL}", token: "${GRAFANA_TOKEN}"}
capture: {browser_path: "${CHROMIUM}", timeout: 10s, image_budget: 8s}
server: {listen: "127.0.0.1:0", webhook_token: "${WEBHOOK_TOKEN}"}
state_dir: "${STATE_DIR}"
"""
RULES = """groups:
  - name: checkout
    rules:
      - alert: CheckoutErrors
        expr: vector(1)
        labels: {severity: critical, service: checkout}
        annotations:
          summary: Checkout errors above 1/s
          grafana_dashboard_uid: sandbox
          grafana_panel_id: "6"
"""
LABELS = {"alertname": "CheckoutErrors", "service": "checkout", "severity": "critical"}


@pytest.fixture
async def boxes() -> AsyncIterator[Sandboxes]:
    b = await start_sandboxes(query_delay=0.2)
    try:
        yield b
    finally:
        await b.close()


def the_alert(boxes: Sandboxes) -> dict[str, Any] | None:
    key = alert_key("alertmanager", LABELS)
    return next((a for a in boxes.flashduty.state()["alerts"] if a["alert_key"] == key), None)


async def test_prometheus_fires_and_a_removed_rule_closes_with_ok(tmp_path: Path, boxes: Sandboxes) -> None:
    started = time.monotonic()
    path = tmp_path / "config.yaml"
    path.write_text(CONFIG)
    env = {**boxes.env(), "CHROMIUM": CHROMIUM or "", "STATE_DIR": str(tmp_path / "state"), "WEBHOOK_TOKEN": TOKEN}
    daemon = Daemon(load_config(path, env=env), config_path=str(path))
    await daemon.start()
    prom_dir = tmp_path / "prom"
    prom_dir.mkdir()
    rules = prom_dir / "rules.yml"
    rules.write_text(RULES)
    alerting = (
        f"rule_files: ['{rules}']\n"
        "alerting:\n  alertmanagers:\n"
        f"    - static_configs: [{{targets: ['127.0.0.1:{daemon.port}']}}]\n"
        f"      authorization: {{credentials: {TOKEN}}}\n"
    )
    flags = ("--rules.alert.resend-delay=1s", "--web.enable-lifecycle")
    try:
        async with (
            prometheus(prom_dir, targets=[], extra_config=alerting, extra_args=flags) as prom_url,
            aiohttp.ClientSession() as http,
        ):
            alert = await wait_for(lambda: (a := the_alert(boxes)) and a["images"] and a, 40, "the alert, pictured")
            assert alert["alert_status"] == "Critical" and alert["title"] == "Checkout errors above 1/s"
            assert alert["labels"]["sidecar_rule"] == "alertmanager"
            assert alert["labels"]["service"] == "checkout"
            (image,) = alert["images"]
            stored = boxes.flashduty.images.get(image["src"])
            assert stored is not None and len(stored.data) > 1000  # the panel's picture was uploaded
            assert "/d/sandbox" in image["href"] and "viewPanel=6" in image["href"]

            await asyncio.sleep(3)  # Prometheus keeps re-sending: still one open alert
            current = the_alert(boxes)
            assert current is not None and current["alert_status"] == "Critical"

            rules.write_text("groups: []\n")
            async with http.post(prom_url + "/-/reload") as r:
                assert r.status == 200, await r.text()
            removed_at = time.monotonic()
            closed = await wait_for(
                lambda: (a := the_alert(boxes)) and a["alert_status"] == "Ok" and a, 30, "the Ok after endsAt"
            )
            assert time.monotonic() - removed_at >= 1.0  # closed by endsAt passing, not at once
            statuses = [e["event_status"] for e in closed["events"]]
            assert statuses[0] == "Critical" and statuses[-1] == "Ok"
            assert statuses.count("Critical") == 1
    finally:
        await daemon.stop()
    assert time.monotonic() - started < 90
