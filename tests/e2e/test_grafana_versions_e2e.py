"""End to end against the sandbox Grafana as each version plays it: the daemon's schedule rules
with ``panel: panel-1`` and ``panel: 1`` deliver charts to Flashduty (12.4 without its badge); a
Grafana that never boots gives an alert without a picture that says why; a webhook alert of
org 2 is captured in org 2.
"""

from __future__ import annotations

import asyncio
import io
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from PIL import Image

from sidecar.config import load_config
from sidecar.daemon import Daemon
from sidecar_sandbox.runner import Sandboxes, start_sandboxes
from tests.support.browsers import find_chromium
from tests.support.wait import wait_for

CHROMIUM = find_chromium()
pytestmark = [
    pytest.mark.chromium,
    pytest.mark.skipif(CHROMIUM is None, reason="no Chromium: install chromium or set SIDECAR_CHROMIUM"),
]

CONFIG = """
flashduty:
  api_host: ${SANDBOX_FLASHDUTY_URL}
  integration_key: ${FLASHDUTY_INTEGRATION_KEY}
grafana:
  url: ${SANDBOX_GRAFANA_URL}
  __AUTH__
capture:
  browser_path: ${CHROMIUM}
  timeout: 10s
  image_budget: 12s
  width: 600
  height: 300
server:
  listen: 127.0.0.1:0
state_dir: ${STATE_DIR}
rules:
__RULES__
"""
SCHEDULES = """
  - {name: ById, source: schedule, every: 3s, title: By id, panels: [{dashboard: sandbox, panel: 1, range: 1h}]}
  - {name: ByKey, source: schedule, every: 3s, title: By key, panels: [{dashboard: sandbox, panel: panel-1, range: 1h}]}
"""
TOKEN_AUTH = "token: ${GRAFANA_TOKEN}"
USER_AUTH = 'basic_auth: {username: viewer, password: "${GRAFANA_PASSWORD}"}'


async def run_daemon(tmp_path: Path, boxes: Sandboxes, *, auth: str, rules: str) -> Daemon:
    path = tmp_path / "config.yaml"
    path.write_text(CONFIG.replace("__AUTH__", auth).replace("__RULES__", rules))
    env = {
        **boxes.env(),
        "CHROMIUM": CHROMIUM or "",
        "STATE_DIR": str(tmp_path / "state"),
        "GRAFANA_PASSWORD": "viewer-s3cret",
    }
    daemon = Daemon(load_config(path, env=env), config_path=str(path))
    await daemon.start()
    return daemon


def alerts(boxes: Sandboxes, rule: str) -> list[dict[str, Any]]:
    return [a for a in boxes.flashduty.state()["alerts"] if a["labels"].get("sidecar_rule") == rule]


def pixels_near(data: bytes, colour: tuple[int, int, int], tolerance: int = 30) -> int:
    img = Image.open(io.BytesIO(data)).convert("RGB")
    counts = img.getcolors(maxcolors=1 << 24) or []
    return sum(n for n, rgb in counts if all(abs(a - b) < tolerance for a, b in zip(rgb, colour, strict=True)))


def picture(boxes: Sandboxes, image_key: str) -> bytes:
    stored = boxes.flashduty.images.get(image_key)
    assert stored is not None, f"{image_key} was referenced but never uploaded"
    return bytes(stored.data)


@pytest.mark.parametrize("profile", ["10.4", "11.1", "11.2", "12.4"])
async def test_panel_id_and_scenes_key_deliver_charts_on_every_version(tmp_path: Path, profile: str) -> None:
    boxes = await start_sandboxes(query_delay=0.2, grafana_kwargs={"profile": profile})
    try:
        daemon = await run_daemon(tmp_path, boxes, auth=TOKEN_AUTH, rules=SCHEDULES)
        try:
            for rule in ("ById", "ByKey"):
                got = await wait_for(lambda r=rule: [a for a in alerts(boxes, r) if a["images"]], 40, rule)
                (image,) = got[0]["images"]
                data = picture(boxes, image["src"])
                assert pixels_near(data, (0x73, 0xBF, 0x69)) > 500, f"{profile} {rule}: no chart"
                assert pixels_near(data, (0xF4, 0x68, 0x00)) == 0, f"{profile} {rule}: the badge is in the picture"
                assert image["alt"] == "Request rate"
        finally:
            await daemon.stop()
    finally:
        await boxes.close()


async def test_a_grafana_that_never_boots_gives_an_alert_without_picture_saying_why(tmp_path: Path) -> None:
    boxes = await start_sandboxes(query_delay=0.05, grafana_kwargs={"cdn_url": "http://127.0.0.1:9/"})
    try:
        daemon = await run_daemon(tmp_path, boxes, auth=TOKEN_AUTH, rules=SCHEDULES.splitlines()[1])
        try:
            got = await wait_for(lambda: alerts(boxes, "ById"), 40, "the report")
            await asyncio.sleep(1.0)  # no late picture follows
            (alert,) = alerts(boxes, "ById")
            assert alert["images"] == []
            assert "Grafana did not load its application" in alert["description"], got
            assert "root_url" in alert["description"]
        finally:
            await daemon.stop()
    finally:
        await boxes.close()


async def test_a_webhook_alert_of_org_2_is_captured_in_org_2(tmp_path: Path) -> None:
    boxes = await start_sandboxes(query_delay=0.05, grafana_kwargs={"basic_auth": ("viewer", "viewer-s3cret")})
    try:
        daemon = await run_daemon(tmp_path, boxes, auth=USER_AUTH, rules=" []")
        try:
            payload = {
                "version": "1",
                "status": "firing",
                "orgId": 2,
                "alerts": [
                    {
                        "status": "firing",
                        "labels": {"alertname": "Org2Errors", "severity": "warning"},
                        "annotations": {"summary": "Errors in org 2"},
                        "startsAt": "2026-11-23T10:00:00Z",
                        "panelURL": "http://grafana.example/d/org2-services?orgId=2&viewPanel=1",
                        "fingerprint": "00000000000000a2",
                    }
                ],
            }
            url = f"http://127.0.0.1:{daemon.port}/webhook/alertmanager"
            async with aiohttp.ClientSession() as http, http.post(url, json=payload) as r:
                assert r.status < 300, await r.text()
            got = await wait_for(lambda: [a for a in alerts(boxes, "webhook") if a["images"]], 40, "the alert")
            (image,) = got[0]["images"]
            assert image["alt"] == "Org 2 request rate"  # org 2's dashboard (org 1 has none of that uid)
            assert "orgId=2" in image["href"]
            assert pixels_near(picture(boxes, image["src"]), (0x73, 0xBF, 0x69)) > 500
            assert any(r.get("org") == 2 for r in boxes.grafana.renders)
        finally:
            await daemon.stop()
    finally:
        await boxes.close()
