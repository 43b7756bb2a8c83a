"""The Grafana sandbox pages in real Chromium: readiness signals, spinner, chart pixels."""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web
from PIL import Image
from playwright.async_api import Browser, BrowserContext, Page, async_playwright
from playwright.async_api import TimeoutError as PlaywrightTimeout

from sidecar_sandbox.grafana import DEFAULT_TOKEN, GrafanaSandbox
from sidecar_sandbox.pixels import SERIES_GREEN as GREEN
from tests.support.browsers import find_chromium

CHROMIUM = find_chromium()
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SPINNER_BLUE = (0x6E, 0x9F, 0xFF)
AUTH = {"Authorization": f"Bearer {DEFAULT_TOKEN}"}
SOLO = "/d-solo/sandbox/sandbox-services?orgId=1&render=1&from=now-1h&to=now"

pytestmark = [
    pytest.mark.chromium,
    pytest.mark.skipif(CHROMIUM is None, reason="no Chromium: install chromium or set SIDECAR_CHROMIUM"),
    pytest.mark.asyncio(loop_scope="module"),  # one browser for the module
]

Serve = Callable[[web.Application], Awaitable[str]]
OpenPage = Callable[..., Awaitable[Page]]


@pytest_asyncio.fixture(loop_scope="module")
async def serve() -> AsyncIterator[Serve]:
    runners: list[web.AppRunner] = []

    async def start(app: web.Application) -> str:
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        runners.append(runner)
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        host, port = runner.addresses[0][:2]
        return f"http://{host}:{port}"

    yield start
    for runner in reversed(runners):
        await runner.cleanup()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        try:
            yield chromium
        finally:
            await chromium.close()


@pytest_asyncio.fixture(loop_scope="module")
async def open_page(browser: Browser) -> AsyncIterator[OpenPage]:
    """A fresh context per page (bearer header on every request: fine for the sandbox only)."""
    contexts: list[BrowserContext] = []

    async def open_(url: str, *, auth: bool = True) -> Page:
        context = await browser.new_context(
            viewport={"width": 1000, "height": 500}, extra_http_headers=AUTH if auth else None
        )
        contexts.append(context)
        page = await context.new_page()
        await page.goto(url)
        return page

    yield open_
    for context in contexts:
        await context.close()


def count_near(png: bytes, colour: tuple[int, int, int], tolerance: int = 40) -> int:
    """Pixels within ``tolerance`` of ``colour`` on every channel."""
    data = Image.open(io.BytesIO(png)).convert("RGB").tobytes()
    r, g, b = colour
    return sum(
        1
        for i in range(0, len(data), 3)
        if abs(data[i] - r) <= tolerance and abs(data[i + 1] - g) <= tolerance and abs(data[i + 2] - b) <= tolerance
    )


def pixel(png: bytes, xy: tuple[int, int]) -> tuple[int, int, int]:
    value = Image.open(io.BytesIO(png)).convert("RGB").getpixel(xy)
    assert isinstance(value, tuple)
    return (int(value[0]), int(value[1]), int(value[2]))


async def renders(base: str) -> list[dict[str, object]]:
    async with aiohttp.ClientSession() as session, session.get(base + "/_sandbox/renders") as resp:
        body: list[dict[str, object]] = await resp.json()
        return body


async def test_solo_panel_spinner_then_chart(serve: Serve, open_page: OpenPage) -> None:
    base = await serve(GrafanaSandbox(query_delay=3.0).make_app())
    page = await open_page(f"{base}{SOLO}&panelId=1&timezone=Asia/Tokyo&theme=dark&var-service=checkout")
    assert await page.evaluate("typeof window.__grafanaSceneContext") == "object"

    await page.wait_for_function("window.__grafanaRunningQueryCount > 0", timeout=5_000)
    loading = await page.screenshot()
    # the query takes 3 s: the screenshot above must have been taken while it was in flight
    assert await page.evaluate("[window.__grafanaRunningQueryCount, window.__sandboxReadyAt]") == [1, None]
    assert await page.locator(".css-loading-bar").get_attribute("aria-label") == "Panel loading bar"
    assert count_near(loading, GREEN) == 0
    assert count_near(loading, SPINNER_BLUE, 60) > 10

    await page.wait_for_function("window.__grafanaRunningQueryCount === 0", timeout=5_000)
    drawn = await page.screenshot()
    assert count_near(drawn, GREEN) > 1_000
    assert pixel(drawn, (995, 5)) == (0x18, 0x1B, 0x1F)
    assert await page.locator(".css-loading-bar").count() == 0
    legend = page.get_by_test_id("data-testid VizLegend series requests{service=checkout}")
    assert await legend.inner_text() == "requests{service=checkout}"

    ticks = await page.eval_on_selector_all(
        "text.x-tick", "els => els.map(e => [Number(e.dataset.time), e.textContent])"
    )
    assert len(ticks) >= 3
    tokyo = ZoneInfo("Asia/Tokyo")
    for millis, label in ticks:
        assert label == datetime.fromtimestamp(millis / 1000, UTC).astimezone(tokyo).strftime("%H:%M")

    await page.wait_for_function("window.__sandboxReadyAt > 0")
    end = time.monotonic() + 5  # the page posts its report after drawing: poll for it
    while not (records := await renders(base)) and time.monotonic() < end:
        await asyncio.sleep(0.05)
    [record] = records
    assert "panelId=1" in str(record["url"])
    assert float(str(record["ready_at"])) >= float(str(record["navigation_start"])) + 3_000


async def test_light_theme(serve: Serve, open_page: OpenPage) -> None:
    base = await serve(GrafanaSandbox(query_delay=0.05).make_app())
    page = await open_page(f"{base}{SOLO}&panelId=panel-1&theme=light")
    await page.wait_for_function("window.__sandboxReadyAt > 0", timeout=5_000)
    shot = await page.screenshot()
    assert pixel(shot, (995, 5)) == (255, 255, 255)
    assert count_near(shot, GREEN) > 1_000


async def test_stuck_panel_never_finishes(serve: Serve, open_page: OpenPage) -> None:
    base = await serve(GrafanaSandbox(query_delay=0.05).make_app())
    page = await open_page(f"{base}{SOLO}&panelId=3")
    await page.wait_for_function("window.__grafanaRunningQueryCount > 0", timeout=5_000)
    with pytest.raises(PlaywrightTimeout):
        await page.wait_for_function("window.__grafanaRunningQueryCount === 0", timeout=2_000)
    assert await page.locator(".css-loading-bar").is_visible()


async def test_empty_and_broken_panels(serve: Serve, open_page: OpenPage) -> None:
    base = await serve(GrafanaSandbox(query_delay=0.05).make_app())
    empty = await open_page(f"{base}{SOLO}&panelId=4")
    await empty.wait_for_function("window.__sandboxReadyAt > 0", timeout=5_000)
    assert await empty.locator("div.panel-empty").inner_text() == "No data"
    assert await empty.get_by_test_id("data-testid Panel status error").count() == 0

    broken = await open_page(f"{base}{SOLO}&panelId=5")
    await broken.wait_for_function("window.__sandboxReadyAt > 0", timeout=5_000)
    status = broken.get_by_test_id("data-testid Panel status error")
    assert await status.count() == 1
    assert "connection refused" in (await status.get_attribute("title") or "")
    assert await broken.locator(".panel-info-corner--error").count() == 1
    assert await broken.evaluate("window.__grafanaRunningQueryCount") == 0


async def test_unknown_panel_shows_an_alert(serve: Serve, open_page: OpenPage) -> None:
    base = await serve(GrafanaSandbox().make_app())
    page = await open_page(f"{base}{SOLO}&panelId=99")
    alert = page.get_by_test_id("data-testid Alert error")
    assert await alert.inner_text() == "Panel not found"


async def test_legacy_solo_and_full_page(serve: Serve, open_page: OpenPage) -> None:
    base = await serve(GrafanaSandbox(query_delay=0.05).make_app())
    solo = await open_page(f"{base}/d-solo/sandbox-legacy/legacy-dashboard?panelId=1&render=1")
    await solo.wait_for_function(
        "window.panelsRendered >= document.querySelectorAll('.panel-solo').length", timeout=5_000
    )
    assert await solo.evaluate("window.__grafanaSceneContext === undefined")
    assert await solo.locator(".panel-solo").count() == 1
    assert count_near(await solo.screenshot(), GREEN) > 1_000

    full = await open_page(f"{base}/d/sandbox-legacy?kiosk&delay=100")
    await full.wait_for_function(
        """() => {
            const panels = document.querySelectorAll('[data-panelid]').length;
            const drawn = [...document.querySelectorAll("[class$='panel-content']")]
                .filter(e => e.childElementCount > 0).length;
            return panels > 0 && drawn >= panels;
        }""",
        timeout=10_000,
    )
    assert await full.evaluate("window.panelsRendered") == 2


async def test_without_auth_the_browser_lands_on_login(serve: Serve, open_page: OpenPage) -> None:
    base = await serve(GrafanaSandbox().make_app())
    page = await open_page(f"{base}{SOLO}&panelId=1", auth=False)
    assert page.url == f"{base}/login"
    assert await page.locator("div.login-page").is_visible()
    assert await page.title() == "Grafana"


async def test_pages_load_the_external_resource(serve: Serve, open_page: OpenPage) -> None:
    seen: list[str] = []

    async def pixel_handler(request: web.Request) -> web.Response:
        seen.append(request.path)
        return web.Response(body=b"", content_type="image/png")

    external = web.Application()
    external.router.add_get("/pixel.png", pixel_handler)
    other = await serve(external)
    base = await serve(GrafanaSandbox(query_delay=0.05, external_resource_url=f"{other}/pixel.png").make_app())
    page = await open_page(f"{base}{SOLO}&panelId=1")
    await page.wait_for_function("window.__sandboxReadyAt > 0", timeout=5_000)
    assert seen == ["/pixel.png"]
