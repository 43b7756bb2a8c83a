"""Capture in real Chromium against the sandbox Grafana as every version users run plays it
(10.4, 11.1, 11.2, 12.4: ``sidecar_sandbox/grafana_profiles.py``), under a sub path in its three
setups, in another org, in another language, with a live panel, and when Grafana never boots.

Pictures are checked by pixels: the series is drawn in #73BF69; 12.4's "Powered by Grafana"
badge writes "Grafana" in #F46800 (the sandbox's badge colour).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from aiohttp import web
from playwright.async_api import async_playwright

from sidecar.capture.errors import CaptureClass
from sidecar.capture.readiness import PROBE_JS, Probe
from sidecar.capture.service import CaptureService
from sidecar.config import GrafanaConfig
from sidecar_sandbox.grafana import DEFAULT_TOKEN, GrafanaSandbox
from sidecar_sandbox.grafana_profiles import SubPath
from tests.integration.test_capture_browser import (
    CHROMIUM,
    assert_shows_data,
    closed_and_gone,
    colour_pixels,
    grafana_cfg,
    new_service,
    panel,
)

BADGE = (0xF4, 0x68, 0x00)
USER = ("viewer", "viewer-s3cret")  # a user who is a member of orgs 1 and 2

pytestmark = [
    pytest.mark.chromium,
    pytest.mark.skipif(CHROMIUM is None, reason="no Chromium: install chromium or set SIDECAR_CHROMIUM"),
    pytest.mark.asyncio(loop_scope="module"),
]


class Grafanas:
    """Sandboxes on loopback ports, and one capture service per Grafana config (closed at the end)."""

    def __init__(self) -> None:
        self.runners: list[web.AppRunner] = []
        self.services: list[CaptureService] = []

    async def serve(self, sandbox: GrafanaSandbox) -> str:
        runner = web.AppRunner(sandbox.make_app(), access_log=None, handle_signals=False)
        await runner.setup()
        self.runners.append(runner)
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        host, port = runner.addresses[0][:2]
        return f"http://{host}:{port}"

    async def service(self, cfg: GrafanaConfig) -> CaptureService:
        service, _ = await new_service(cfg, concurrency=1, timeout="12s")
        self.services.append(service)
        return service

    async def close(self) -> None:
        for service in self.services:
            await closed_and_gone(service)
        for runner in reversed(self.runners):
            await runner.cleanup()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def grafanas() -> AsyncIterator[Grafanas]:
    g = Grafanas()
    try:
        yield g
    finally:
        await g.close()


@pytest.mark.parametrize("profile", ["10.4", "11.1", "11.2", "12.4"])
async def test_panel_id_and_scenes_key_both_give_the_chart(grafanas: Grafanas, profile: str) -> None:
    url = await grafanas.serve(GrafanaSandbox(profile=profile, query_delay=0.2))
    service = await grafanas.service(grafana_cfg(url))
    by_id = await service.capture(panel("1", width=600, height=300))
    by_key = await service.capture(panel("panel-1", width=600, height=300))
    for result in (by_id, by_key):
        assert result.cls is CaptureClass.OK, (profile, result.detail)
        assert_shows_data(result.image)
        assert colour_pixels(result.image or b"", BADGE, 30) == 0, "the Powered by Grafana badge is in the picture"
    info = service.grafana_info
    assert info is not None and info.version_text.startswith(profile)
    legacy_solo = profile in ("10.4", "11.1")
    assert ("panelId=panel-1" in by_key.url) is not legacy_solo  # the legacy page does parseInt
    assert ("hideLogo=true" in by_key.url) is (profile == "12.4")
    assert "timezone=UTC" in by_key.url and "tz=" not in by_key.url


async def test_the_12_4_badge_is_there_without_hide_logo(grafanas: Grafanas) -> None:
    """The check above can fail: the same page without hideLogo=true shows the badge."""
    sandbox = GrafanaSandbox(profile="12.4", query_delay=0.05)
    url = await grafanas.serve(sandbox)
    service = await grafanas.service(grafana_cfg(url))
    result = await service.capture(panel("1", width=600, height=300))
    assert result.cls is CaptureClass.OK and "hideLogo=true" in result.url
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = await browser.new_page(viewport={"width": 600, "height": 300})
            await page.set_extra_http_headers({"Authorization": f"Bearer {DEFAULT_TOKEN}"})
            await page.goto(result.url.replace("&hideLogo=true", ""))
            await page.wait_for_function("window.__sandboxReadyAt > 0", timeout=10_000)
            shot = await page.screenshot()
        finally:
            await browser.close()
    assert colour_pixels(shot, BADGE, 30) > 20
    assert colour_pixels(result.image or b"", BADGE, 30) == 0


async def test_a_refusal_on_the_app_platform_api_is_login_and_clones_work_on_scenes(grafanas: Grafanas) -> None:
    """12.x pages load the dashboard from /apis/dashboard.grafana.app: a 403 there is watched."""
    url = await grafanas.serve(GrafanaSandbox(profile="12.4", query_delay=0.05, forbidden=("sandbox-legacy",)))
    service = await grafanas.service(grafana_cfg(url))
    refused = await service.capture(panel("1", dashboard="sandbox-legacy"))
    assert refused.cls is CaptureClass.LOGIN and refused.image is None, refused.detail
    assert "HTTP 403 on /apis/dashboard.grafana.app/" in refused.detail
    clone = await service.capture(panel("panel-1-clone-1", width=600, height=300))
    assert clone.cls is CaptureClass.OK and "panelId=panel-1-clone-1" in clone.url, clone.detail


@pytest.mark.parametrize("profile", ["10.4", "11.1"])
async def test_a_clone_key_on_the_legacy_solo_page_is_a_clear_error(grafanas: Grafanas, profile: str) -> None:
    url = await grafanas.serve(GrafanaSandbox(profile=profile, query_delay=0.05))
    service = await grafanas.service(grafana_cfg(url))
    result = await service.capture(panel("panel-1-clone-2"))
    assert result.cls is CaptureClass.ERROR and result.image is None
    assert "panel panel-1-clone-2 is a repeated-panel clone" in result.detail
    assert f"Grafana {profile}" in result.detail and "11.2" in result.detail


async def test_v2_dashboard_gets_its_slug_and_title_on_12_4(grafanas: Grafanas) -> None:
    url = await grafanas.serve(GrafanaSandbox(profile="12.4", query_delay=0.05))
    service = await grafanas.service(grafana_cfg(url))
    result = await service.capture(panel("panel-1", dashboard="sandbox-v2", width=600, height=300))
    assert result.cls is CaptureClass.OK, result.detail
    assert result.title == "V2 request rate"
    assert "/d-solo/sandbox-v2/v2-services?" in result.url
    assert_shows_data(result.image)


# --------------------------------------------------------------------------- sub paths


@pytest.mark.parametrize(
    ("serve_from_sub_path", "url_path"),
    [
        (True, "/grafana"),  # Grafana answers under the prefix only
        (False, ""),  # a proxy strips the prefix; the sidecar reaches Grafana at the pod's /
        (False, "/grafana"),  # the same, with grafana.url written with the prefix (404 there)
    ],
)
async def test_sub_path_setups_give_pictures(grafanas: Grafanas, serve_from_sub_path: bool, url_path: str) -> None:
    public = "https://grafana.example.com/grafana/"  # root_url: what people open, behind the ingress
    sandbox = GrafanaSandbox(query_delay=0.05, sub_path=SubPath("/grafana", serve_from_sub_path, root_url=public))
    origin = await grafanas.serve(sandbox)
    service = await grafanas.service(grafana_cfg(origin + url_path))
    result = await service.capture(panel("1", width=600, height=300))
    assert result.cls is CaptureClass.OK, result.detail
    assert_shows_data(result.image)
    info = service.grafana_info
    assert info is not None and info.app_sub_url == "/grafana"
    assert info.serve_url == (origin + "/grafana" if serve_from_sub_path else origin)
    assert (info.rewrite is None) is serve_from_sub_path
    # the picture's link is the panel in Grafana's UI at root_url, not the pod-local address
    link = service.link(result.url)
    assert link.startswith(public + "d/") and "viewPanel=1" in link and "render=" not in link, link


async def test_sub_path_served_but_grafana_url_without_it_says_what_to_check(grafanas: Grafanas) -> None:
    origin = await grafanas.serve(GrafanaSandbox(query_delay=0.05, sub_path=SubPath("/grafana", True)))
    service = await grafanas.service(grafana_cfg(origin))
    result = await service.capture(panel("1"))
    assert result.cls is CaptureClass.NOT_LOADED and result.image is None
    assert "serve_from_sub_path" in result.detail and "grafana.url" in result.detail


async def test_grafana_that_never_boots_is_not_loaded_without_a_picture(grafanas: Grafanas) -> None:
    """The app bundle cannot be fetched (a CDN that does not answer): Grafana's own preloader
    says "failed to load its application files"; that page is never shipped as a picture."""
    origin = await grafanas.serve(GrafanaSandbox(query_delay=0.05, cdn_url="http://127.0.0.1:9/"))
    service = await grafanas.service(grafana_cfg(origin))
    result = await service.capture(panel("1"))
    assert result.cls is CaptureClass.NOT_LOADED and result.image is None, result.detail
    assert "Grafana did not load its application" in result.detail and "root_url" in result.detail


# --------------------------------------------------------------------------- orgs, language, live


async def test_the_alerts_org_is_used_and_a_token_of_another_org_is_a_clear_class(grafanas: Grafanas) -> None:
    sandbox = GrafanaSandbox(query_delay=0.05, basic_auth=USER)
    url = await grafanas.serve(sandbox)
    user = await grafanas.service(grafana_cfg(url, token=None, basic=USER))
    result = await user.capture(panel("1", dashboard="org2-services", org_id=2, width=600, height=300))
    assert result.cls is CaptureClass.OK, result.detail
    assert "orgId=2" in result.url and result.title == "Org 2 request rate"
    assert_shows_data(result.image)
    token = await grafanas.service(grafana_cfg(url))
    refused = await token.capture(panel("1", dashboard="org2-services", org_id=2))
    assert refused.cls is CaptureClass.ORG_ACCESS and refused.image is None
    assert "cannot use org 2" in refused.detail
    assert DEFAULT_TOKEN not in refused.detail


async def test_classification_does_not_read_the_ui_language(grafanas: Grafanas) -> None:
    url = await grafanas.serve(GrafanaSandbox(query_delay=1.5, language="fr-FR"))
    service = await grafanas.service(grafana_cfg(url))
    slow = await service.capture(panel("1", width=600, height=300))
    assert slow.cls is CaptureClass.OK, slow.detail
    assert slow.steps["wait_ready"] >= 1.2  # the French loading bar was waited for
    assert_shows_data(slow.image)
    empty = await service.capture(panel("4"))
    assert empty.cls is CaptureClass.NO_DATA, empty.detail  # "Aucune donnée"
    missing = await service.capture(panel("panel-99"))
    assert missing.cls is CaptureClass.NOT_FOUND and missing.image is None, missing.detail
    assert "Panneau introuvable" in missing.detail


async def test_live_panel_is_captured_once_its_query_is_done(grafanas: Grafanas) -> None:
    url = await grafanas.serve(GrafanaSandbox(query_delay=0.5))
    service = await grafanas.service(grafana_cfg(url))
    result = await service.capture(panel("1", dashboard="sandbox-live", width=600, height=300))
    assert result.cls is CaptureClass.OK, result.detail
    assert result.steps["wait_ready"] >= 0.5
    assert_shows_data(result.image)


async def test_the_probe_sees_a_translated_loading_bar(grafanas: Grafanas) -> None:
    """The loading bar is found by its endless animation inside the panel, not by its label."""
    url = await grafanas.serve(GrafanaSandbox(query_delay=3.0, language="fr-FR", token=None))
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = await browser.new_page(viewport={"width": 600, "height": 300})
            await page.goto(f"{url}/d-solo/sandbox?orgId=1&panelId=1&render=1")
            await page.wait_for_function("window.__grafanaRunningQueryCount > 0", timeout=10_000)
            assert (
                await page.locator(".css-loading-bar").get_attribute("aria-label") == "Barre de chargement du panneau"
            )
            loading = Probe.from_js(await page.evaluate(PROBE_JS))
            await page.wait_for_function("window.__sandboxReadyAt > 0", timeout=10_000)
            drawn = Probe.from_js(await page.evaluate(PROBE_JS))
        finally:
            await browser.close()
    assert loading.loading >= 1 and loading.mounted == 1 and loading.app
    assert drawn.loading == 0 and not drawn.boot_failed
