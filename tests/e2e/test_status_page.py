"""The status page in real Chromium during a daemon run: sections, login, a thumbnail opened and
its pixels compared with the picture the sandbox Flashduty received."""

from __future__ import annotations

import io
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from PIL import Image, ImageChops
from playwright.async_api import async_playwright

from sidecar.config import parse_config
from sidecar.daemon import Daemon
from sidecar_sandbox.runner import INTEGRATION_KEY, Sandboxes, start_sandboxes
from tests.support.browsers import find_chromium
from tests.support.wait import wait_for

CHROMIUM = find_chromium()
pytestmark = [
    pytest.mark.chromium,
    pytest.mark.skipif(CHROMIUM is None, reason="no Chromium: install chromium or set SIDECAR_CHROMIUM"),
]
UI_TOKEN = "status-page-ui-token-1234"
CONFIG = """
flashduty: {api_host: "${SANDBOX_FLASHDUTY_URL}", integration_key: "${FLASHDUTY_INTEGRATION_KEY}"}
grafana: {url: "${SANDBOX_GRAFANA_URL}", token: "${GRAFANA_TOKEN}"}
capture: {browser_path: "${CHROMIUM}", timeout: 10s, image_budget: 8s}
server: {listen: "127.0.0.1:0"}
status: {ui_token: "${SIDECAR_UI_TOKEN}", refresh: 0s}
state_dir: ${STATE_DIR}
datasources: [{name: prom, url: "${SANDBOX_PROMETHEUS_URL}"}]
rules:
  - name: CheckoutErrors
    source: prometheus
    expr: sandbox_demo_errors > 5
    every: 1s
    severity: Critical
    title: "Errors on {{ $labels.service }}"
    panels:
      - {dashboard: sandbox, panel: 6, title: Checkout errors, range: 1m, vars: {service: "{{ $labels.service }}"}}
      - {dashboard: sandbox, panel: 4, title: Empty panel}
"""


@pytest.fixture
async def boxes() -> AsyncIterator[Sandboxes]:
    b = await start_sandboxes(query_delay=0.2)
    try:
        yield b
    finally:
        await b.close()


def firing_alert(boxes: Sandboxes) -> dict[str, Any] | None:
    for a in boxes.flashduty.state()["alerts"]:
        if a["labels"].get("sidecar_rule") == "CheckoutErrors" and a["images"]:
            return a
    return None


async def test_status_page_in_a_browser(tmp_path: Path, boxes: Sandboxes) -> None:
    env = {
        **boxes.env(),
        "CHROMIUM": CHROMIUM or "",
        "STATE_DIR": str(tmp_path / "state"),
        "SIDECAR_UI_TOKEN": UI_TOKEN,
    }
    daemon = Daemon(parse_config(CONFIG, env=env))
    await daemon.start()
    try:
        base = f"http://127.0.0.1:{daemon.port}/"
        boxes.prometheus.value = 12
        alert = await wait_for(lambda: firing_alert(boxes), 40, "the firing alert with its picture")
        uploaded = boxes.flashduty.images.get(alert["images"][0]["src"])
        assert uploaded is not None
        await wait_for(lambda: daemon.pipeline.idle, 20, "the delivery to finish")

        async with aiohttp.ClientSession() as http:  # without the token: the login form, no data
            async with http.get(base) as r:
                assert r.status == 401
                text = await r.text()
                assert "Sign in" in text and "CheckoutErrors" not in text
            async with http.get(base + "pictures/" + "0" * 64 + ".png") as r:
                assert r.status == 401
            bearer = {"Authorization": f"Bearer {UI_TOKEN}"}
            async with http.get(base, headers=bearer) as r:  # a script or curl: the bearer token
                assert r.status == 200 and "CheckoutErrors" in await r.text()
            async with http.get(base + "pictures/" + "0" * 64 + ".png", headers=bearer) as r:
                assert r.status == 404
            async with http.post(base + "login", data={"token": "wrong"}, allow_redirects=False) as r:
                assert r.status == 401 and "set-cookie" not in r.headers

        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
            try:
                ctx = await browser.new_context(viewport={"width": 1280, "height": 900})
                page = await ctx.new_page()
                await page.goto(base)
                await page.fill("input[name=token]", "wrong-token")
                await page.click("button[type=submit]")
                assert await page.locator("#login-error").is_visible()
                await page.fill("input[name=token]", UI_TOKEN)
                await page.click("button[type=submit]")
                await page.wait_for_selector("#deliveries")
                cookies = {c["name"]: c for c in await ctx.cookies()}
                assert (
                    cookies["flashduty_sidecar_ui"]["httpOnly"]
                    and UI_TOKEN not in cookies["flashduty_sidecar_ui"]["value"]
                )

                html = await page.content()
                for secret in (UI_TOKEN, INTEGRATION_KEY, env["GRAFANA_TOKEN"]):
                    assert secret not in html
                daemon_text = await page.inner_text("#daemon")
                assert "0.1.0" in daemon_text and re.search(r"Chromium \d+\.\d+", daemon_text), daemon_text
                assert "1 launch, 0 restarts" in daemon_text
                assert "reachable" in await page.inner_text("#flashduty")
                assert "not enabled" in daemon_text  # HA is not configured, and says so
                # the Grafana that capture detected (the sandbox answers /api/health with its version)
                assert re.search(r"Grafana \d+\.\d+\.\d+\S* at http://127\.0\.0\.1:\d+", daemon_text), daemon_text
                delivery_text = await page.inner_text("#delivery")
                assert "Dead letters: 0" in delivery_text and "/ 5" in delivery_text and "/ 50" in delivery_text
                rules_text = await page.inner_text("#rules")
                assert "CheckoutErrors" in rules_text and "firing" in rules_text and 'service="checkout"' in rules_text

                row = page.locator("tr.delivery", has_text=alert["alert_key"]).first
                row_text = await row.inner_text()
                assert "delivered" in row_text and "Critical" in row_text
                assert "Checkout errors" in row_text and "navigate" in row_text  # step timings
                assert "Empty panel" in row_text and "no_data" in row_text
                thumb = row.locator("a:has(img)").first
                async with ctx.expect_page() as opened:
                    await thumb.click()
                full = await opened.value
                await full.wait_for_load_state()
                body = await (await full.request.get(full.url)).body()
                assert body == uploaded.data  # the picture exactly as uploaded
                drawn = Image.open(io.BytesIO(await full.locator("img").screenshot())).convert("RGB")
                original = Image.open(io.BytesIO(uploaded.data)).convert("RGB")
                assert drawn.size == original.size
                assert ImageChops.difference(drawn, original).getbbox() is None  # pixel for pixel
                await page.screenshot(path=str(tmp_path / "status-page.png"), full_page=True)
            finally:
                await browser.close()
    finally:
        await daemon.stop()
