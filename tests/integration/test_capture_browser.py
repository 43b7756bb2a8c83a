"""CaptureService in real Chromium against the sandbox Grafana on a loopback port.

One sandbox, one "other origin" recorder and one service are shared by the module (one event
loop for the module); tests that need their own credentials or browser lifecycle start their own
service. Pictures are checked by pixels: the sandbox draws series in #73BF69 and its loading
spinner / bar in blues.
"""

from __future__ import annotations

import asyncio
import io
import os
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.typedefs import Handler
from PIL import Image
from pydantic import SecretStr

from sidecar.capture import pool as pool_module
from sidecar.capture.errors import CaptureClass
from sidecar.capture.oneshot import capture_once
from sidecar.capture.proc import chromium_processes
from sidecar.capture.service import CaptureService
from sidecar.config import BasicAuth, CaptureConfig, GrafanaConfig, parse_config
from sidecar.metrics import Metrics
from sidecar.model import PanelCapture
from sidecar_sandbox.grafana import DEFAULT_TOKEN, GrafanaSandbox
from sidecar_sandbox.pixels import SERIES_GREEN as GREEN
from sidecar_sandbox.pixels import colour_pixels
from tests.support.browsers import find_chromium
from tests.support.wait import eventually

CHROMIUM = find_chromium()
BLUES = ((0x6E, 0x9F, 0xFF), (0x3D, 0x71, 0xD9))  # sandbox spinner and loading bar
BASIC = ("viewer", "viewer-s3cret")

pytestmark = [
    pytest.mark.chromium,
    pytest.mark.skipif(CHROMIUM is None, reason="no Chromium: install chromium or set SIDECAR_CHROMIUM"),
    pytest.mark.asyncio(loop_scope="module"),
]


@dataclass
class Recorder:
    """What a server saw: (method, path, Authorization header or None)."""

    seen: list[tuple[str, str, str | None]] = field(default_factory=list)

    def count(self, method: str, prefix: str) -> int:
        return sum(1 for m, p, _ in self.seen if m == method and p.startswith(prefix))


@dataclass
class Env:
    url: str
    sandbox: GrafanaSandbox
    grafana_log: Recorder
    other_log: Recorder
    service: CaptureService
    metrics: Metrics


def recording(recorder: Recorder) -> Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]:
    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        recorder.seen.append((request.method, request.path, request.headers.get("Authorization")))
        return await handler(request)

    return middleware


def png_1x1() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (1, 1), (255, 0, 0)).save(out, format="PNG")
    return out.getvalue()


async def serve(app: web.Application, runners: list[web.AppRunner]) -> str:
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    runners.append(runner)
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    host, port = runner.addresses[0][:2]
    return f"http://{host}:{port}"


def capture_cfg(**kw: object) -> CaptureConfig:
    base: dict[str, object] = {"browser_path": CHROMIUM, "timeout": "10s", "concurrency": 2}
    base.update(kw)
    return CaptureConfig(**base)  # type: ignore[arg-type]


def grafana_cfg(url: str, *, token: str | None = DEFAULT_TOKEN, basic: tuple[str, str] | None = None) -> GrafanaConfig:
    return GrafanaConfig(
        url=url,
        token=SecretStr(token) if token else None,
        basic_auth=BasicAuth(username=basic[0], password=SecretStr(basic[1])) if basic else None,
    )


def panel(panel_id: str | None, dashboard: str = "sandbox", **kw: object) -> PanelCapture:
    base: dict[str, object] = {"dashboard": dashboard, "panel": panel_id, "time_from": "now-1h", "time_to": "now"}
    base.update(kw)
    return PanelCapture(**base)  # type: ignore[arg-type]


def assert_shows_data(image: bytes | None) -> None:
    assert image is not None
    assert colour_pixels(image, GREEN) > 500, "the series is not drawn"
    assert sum(colour_pixels(image, c, 10) for c in BLUES) < 20, "a loading indicator is visible"


async def new_service(grafana: GrafanaConfig, **capture: object) -> tuple[CaptureService, Metrics]:
    metrics = Metrics()
    service = CaptureService(grafana=grafana, capture=capture_cfg(**capture), metrics=metrics)
    await service.start()
    return service, metrics


def assert_nothing_left(markers: list[str]) -> None:
    """No Chromium process and no temp directory of these browsers is left."""
    assert markers
    assert chromium_processes(markers) == []
    assert [m for m in markers if os.path.exists(m)] == []


async def closed_and_gone(service: CaptureService) -> None:
    markers = service.browser.markers
    await service.close()
    assert_nothing_left(markers)


def restarts(metrics: Metrics, reason: str) -> float:
    value = metrics.registry.get_sample_value("flashduty_sidecar_browser_restarts_total", {"reason": reason})
    return value or 0.0


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def env() -> AsyncIterator[Env]:
    runners: list[web.AppRunner] = []
    other_log = Recorder()
    other = web.Application(middlewares=[recording(other_log)])
    pixel = png_1x1()

    async def image(_request: web.Request) -> web.Response:
        return web.Response(body=pixel, content_type="image/png")

    async def sso(_request: web.Request) -> web.Response:
        return web.Response(text='<div class="login-page">Sign in with SSO</div>', content_type="text/html")

    other.router.add_get("/pixel.png", image)
    other.router.add_get("/sso", sso)
    other_url = await serve(other, runners)

    sandbox = GrafanaSandbox(basic_auth=BASIC, external_resource_url=f"{other_url}/pixel.png")
    grafana_log = Recorder()
    app = sandbox.make_app()
    app.middlewares.insert(0, recording(grafana_log))  # outermost: sees refused requests too
    app.middlewares.append(sso_redirect(other_url))
    url = await serve(app, runners)
    service, metrics = await new_service(grafana_cfg(url))
    try:
        yield Env(url, sandbox, grafana_log, other_log, service, metrics)
    finally:
        await closed_and_gone(service)
        for runner in reversed(runners):
            await runner.cleanup()


def sso_redirect(other_url: str) -> Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]:
    """Dashboard ``sso``: its page redirects to an SSO login on the other origin."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path == "/api/dashboards/uid/sso":
            return web.json_response({"dashboard": {"title": "SSO", "panels": []}, "meta": {"slug": "sso"}})
        if request.path.startswith("/d-solo/sso"):
            raise web.HTTPFound(f"{other_url}/sso")
        return await handler(request)

    return middleware


# --------------------------------------------------------------------------- classes


async def test_fast_panel_ok_with_steps_title_and_url(env: Env) -> None:
    t0 = time.monotonic()
    result = await env.service.capture(panel("1"))
    elapsed = time.monotonic() - t0
    assert result.cls is CaptureClass.OK, result.detail
    assert result.content_type == "image/png"
    assert_shows_data(result.image)
    with Image.open(io.BytesIO(result.image or b"")) as im:
        assert im.size == (1000, 500)
    assert result.title == "Request rate" and result.alt == "Request rate"
    assert result.url.startswith(f"{env.url}/d-solo/sandbox/sandbox-services?orgId=1&panelId=1&")
    assert result.url == env.service.panel_url(panel("1"))
    assert {"queue", "context", "navigate", "wait_ready", "screenshot", "encode"} <= set(result.steps)
    assert set(result.steps) <= {"queue", "slug", "context", "navigate", "wait_ready", "screenshot", "encode"}
    assert elapsed < 8


async def test_slow_panel_waits_for_data_not_the_spinner(env: Env) -> None:
    result = await env.service.capture(panel("2", width=600, height=300, scale=2))
    assert result.cls is CaptureClass.OK, result.detail
    assert result.steps["wait_ready"] >= 2.5  # the query takes 3 s server-side
    assert_shows_data(result.image)
    with Image.open(io.BytesIO(result.image or b"")) as im:
        assert im.size == (1200, 600)  # device_scale_factor 2


async def test_stuck_panel_times_out_without_a_picture(env: Env) -> None:
    t0 = time.monotonic()
    result = await env.service.capture(panel("3"), timeout=3)
    elapsed = time.monotonic() - t0
    assert result.cls is CaptureClass.TIMEOUT
    assert result.image is None and not result.usable
    assert "still loading after 3s (timeout" in result.detail
    assert elapsed < 3 + 2


async def test_empty_panel_is_no_data_and_keeps_the_picture(env: Env) -> None:
    result = await env.service.capture(panel("4"))
    assert result.cls is CaptureClass.NO_DATA, result.detail
    assert result.usable


async def test_broken_panel_is_panel_error_and_keeps_the_picture(env: Env) -> None:
    result = await env.service.capture(panel("5"))
    assert result.cls is CaptureClass.PANEL_ERROR, result.detail
    assert "connection refused" in result.detail
    assert result.usable


async def test_unknown_dashboard_and_unknown_panel_are_not_found(env: Env) -> None:
    before = env.grafana_log.count("GET", "/d-solo/")
    missing = await env.service.capture(panel("1", dashboard="no-such-dashboard"))
    assert missing.cls is CaptureClass.NOT_FOUND and missing.image is None
    assert env.grafana_log.count("GET", "/d-solo/") == before  # the dashboard API said 404 already
    no_panel = await env.service.capture(panel("99"))  # the page itself says so
    assert no_panel.cls is CaptureClass.NOT_FOUND and no_panel.image is None, no_panel.detail


async def test_legacy_dashboard_ready_via_panels_rendered(env: Env) -> None:
    result = await env.service.capture(panel("2", dashboard="sandbox-legacy", height=300))
    assert result.cls is CaptureClass.OK, result.detail
    assert result.steps["wait_ready"] >= 2.5
    assert_shows_data(result.image)
    assert "/d-solo/sandbox-legacy/legacy-dashboard?" in result.url


async def test_whole_dashboard_in_kiosk_mode(env: Env) -> None:
    result = await env.service.capture(panel(None, height=300))  # first row: panels 1 and 2 (3 s)
    assert result.cls is CaptureClass.OK, result.detail
    assert "/d/sandbox/sandbox-services?" in result.url and "&kiosk&" in result.url
    assert result.title == "Sandbox services"
    assert_shows_data(result.image)


async def test_time_zone_goes_to_the_url_and_the_browser(env: Env) -> None:
    result = await env.service.capture(panel("1", timezone="Asia/Kolkata", width=400, height=200))
    assert result.cls is CaptureClass.OK, result.detail
    assert "timezone=Asia/Kolkata" in result.url


# --------------------------------------------------------------------------- auth


async def test_credentials_reach_grafana_only(env: Env) -> None:
    env.other_log.seen.clear()
    env.grafana_log.seen.clear()
    result = await env.service.capture(panel("1", time_from="now-3h"))
    assert result.cls is CaptureClass.OK
    assert env.other_log.count("GET", "/pixel.png") >= 1, "the page did not load the external image"
    assert all(auth is None for _, _, auth in env.other_log.seen)
    grafana = [s for s in env.grafana_log.seen if not s[1].startswith(("/_sandbox/", "/public/"))]
    assert grafana and all(auth == f"Bearer {DEFAULT_TOKEN}" for _, _, auth in grafana)
    static = [s for s in env.grafana_log.seen if s[1].startswith("/public/")]
    assert static and all(auth is None for _, _, auth in static)  # static files are not intercepted


async def test_redirect_to_another_origin_drops_the_credentials(env: Env) -> None:
    env.other_log.seen.clear()
    result = await env.service.capture(panel("1", dashboard="sso"))
    assert result.cls is CaptureClass.LOGIN, result.detail
    assert env.other_log.count("GET", "/sso") == 1
    assert all(auth is None for _, _, auth in env.other_log.seen)


async def test_wrong_token_is_login_basic_auth_works_and_unreachable_is_error(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    services = await asyncio.gather(
        new_service(grafana_cfg(env.url, token="wrong-token-value")),
        new_service(grafana_cfg(env.url, token=None, basic=BASIC)),
        new_service(grafana_cfg("http://127.0.0.1:9")),  # discard port: connection refused
    )
    wrong, basic, nowhere = (s for s, _ in services)
    try:
        login, ok, down = await asyncio.gather(
            wrong.capture(panel("1")), basic.capture(panel("4")), nowhere.capture(panel("1"))
        )
    finally:
        await asyncio.gather(closed_and_gone(wrong), closed_and_gone(basic), closed_and_gone(nowhere))
    assert login.cls is CaptureClass.LOGIN and login.image is None
    assert "login page" in login.detail
    assert ok.cls is CaptureClass.NO_DATA, ok.detail
    assert down.cls is CaptureClass.ERROR and down.image is None
    assert down.detail == "cannot load the page from Grafana (connection refused)"
    text = caplog.text + login.detail + down.detail
    assert "wrong-token-value" not in text and DEFAULT_TOKEN not in text and BASIC[1] not in text


# --------------------------------------------------------------------------- sharing


async def test_concurrent_identical_captures_navigate_once_then_hit_the_cache(env: Env) -> None:
    req = panel("1", time_from="now-30m")
    before = env.grafana_log.count("GET", "/d-solo/")
    first, second = await asyncio.gather(env.service.capture(req), env.service.capture(req))
    assert first.cls is second.cls is CaptureClass.OK
    assert first.image == second.image
    assert env.grafana_log.count("GET", "/d-solo/") == before + 1
    third = await env.service.capture(req)
    assert third.image == first.image
    assert env.grafana_log.count("GET", "/d-solo/") == before + 1
    registry = env.metrics.registry
    for result in ("shared", "hit"):
        assert (registry.get_sample_value("flashduty_sidecar_capture_cache_total", {"result": result}) or 0) >= 1


# --------------------------------------------------------------------------- browser lifecycle


async def test_killed_browser_is_relaunched_and_nothing_leaks(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIDECAR_TEST_SECRET", "not-for-chromium")
    service, metrics = await new_service(grafana_cfg(env.url))
    try:
        pid = service.stats()["browser_pid"]
        assert pid is not None
        workdir = service.browser.markers[0]
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            assert workdir.encode() in f.read()
        with open(f"/proc/{pid}/environ", "rb") as f:
            environ = dict(kv.split("=", 1) for kv in f.read().decode().split("\0") if "=" in kv)
        assert environ["XDG_CONFIG_HOME"] == f"{workdir}/config"  # writable dirs: read-only root works
        assert environ["XDG_CACHE_HOME"] == f"{workdir}/cache"
        assert "SIDECAR_TEST_SECRET" not in environ  # the sidecar's secrets stay out of Chromium
        loads = env.grafana_log.count("GET", "/d-solo/")
        stuck = asyncio.create_task(service.capture(panel("3")))  # in flight until we kill
        await eventually(lambda: env.grafana_log.count("GET", "/d-solo/") > loads, "the stuck panel is loading")
        os.kill(pid, signal.SIGKILL)
        crashed = await stuck
        assert crashed.cls is CaptureClass.ERROR and "crash" in crashed.detail, crashed.detail
        after = await service.capture(panel("1"))
        assert after.cls is CaptureClass.OK, after.detail
        assert service.stats()["browser_pid"] not in (None, pid)
        assert restarts(metrics, "crash") == 1 and restarts(metrics, "start") == 1
        markers = service.browser.markers  # the killed browser is already cleaned up
        assert len(markers) == 3 and workdir not in markers and not os.path.exists(workdir)  # dir, profile, session
    finally:
        await closed_and_gone(service)
    assert not service.browser_connected


async def test_recycle_after_n_captures_waits_for_in_flight_captures(env: Env) -> None:
    service, metrics = await new_service(grafana_cfg(env.url), recycle_after=1)
    try:
        first_pid = service.stats()["browser_pid"]
        first_markers = service.browser.markers
        slow = asyncio.create_task(service.capture(panel("2", time_from="now-2h")))
        await asyncio.sleep(0.5)
        fast = await service.capture(panel("1", time_from="now-2h"))  # 1 capture: recycle now
        assert fast.cls is CaptureClass.OK
        assert (await slow).cls is CaptureClass.OK  # finished on the retired browser
        assert restarts(metrics, "recycle_count") == 1
        again = await service.capture(panel("4", time_from="now-2h"))
        assert again.cls is CaptureClass.NO_DATA
        assert service.stats()["browser_pid"] != first_pid
        for _ in range(60):  # the retired browser is closed in the background
            if not chromium_processes(first_markers) and not os.path.exists(first_markers[0]):
                break
            await asyncio.sleep(0.1)
        assert_nothing_left(first_markers)
    finally:
        await closed_and_gone(service)


async def test_recycle_when_rss_is_over_the_limit(env: Env) -> None:
    service, metrics = await new_service(grafana_cfg(env.url), max_browser_rss_mb=64)
    try:
        result = await service.capture(panel("1", time_from="now-4h"))
        assert result.cls is CaptureClass.OK
        # a browser's first capture is measured at once, in the background
        await eventually(lambda: restarts(metrics, "recycle_rss") >= 1, "the over-limit browser retired")
        assert service.stats()["rss_bytes"] > 64 * 1024 * 1024
        assert (await service.capture(panel("4", time_from="now-4h"))).cls is CaptureClass.NO_DATA
        # every capture leaves Chromium above 64 MiB: it ran on a second, freshly launched browser
        assert restarts(metrics, "recycle_rss") >= 1
        assert service.stats()["launches"] >= 2
    finally:
        await closed_and_gone(service)  # including the browsers recycled meanwhile


async def settled(service: CaptureService, expected: int) -> None:
    """Wait until the browser has ``expected`` contexts open (closing and opening happen in the
    background after a capture)."""
    await eventually(lambda: service.browser.open_contexts == expected, f"{expected} context(s) open")


def idle_page_urls(service: CaptureService) -> list[str]:
    """URLs of the pages of the current browser's contexts (white-box: for the reset check)."""
    inst = service.browser._sup.current
    assert inst is not None
    return [page.url for ctx in inst.chromium.browser.contexts for page in ctx.pages]


async def test_a_context_serves_context_reuse_captures_then_a_fresh_one_replaces_it(env: Env) -> None:
    service, _ = await new_service(grafana_cfg(env.url), concurrency=1, context_reuse=3)
    browser = service.browser
    try:
        await settled(service, 1)  # the spare for the configured defaults, opened at start
        # Playwright lists a context a moment before new_context() returns and it is counted
        await eventually(lambda: browser.contexts_opened == 1, "the spare counted")
        for n, minutes in enumerate((5, 6), start=1):  # the same options: the same context, reset
            result = await service.capture(panel("1", time_from=f"now-{minutes}m"))
            assert result.cls is CaptureClass.OK, result.detail
            assert_shows_data(result.image)
            await settled(service, 1)
            assert browser.contexts_opened == 1, f"capture {n} opened a context"
        # back on about:blank: Grafana's page, its timers and sockets are gone
        await eventually(lambda: idle_page_urls(service) == ["about:blank"], "the page reset")
        # another size takes the same context (the viewport changes, not the option set)
        small = await service.capture(panel("1", time_from="now-5m", width=400, height=200))
        with Image.open(io.BytesIO(small.image or b"")) as im:
            assert im.size == (400, 200)
        # that was its third capture: closed, and a fresh one opened ahead for the next
        await eventually(lambda: browser.contexts_opened == 2, "a fresh context opened")
        await settled(service, 1)
        after = await service.capture(panel("1", time_from="now-7m"))
        assert after.cls is CaptureClass.OK and browser.contexts_opened == 2
    finally:
        await closed_and_gone(service)


async def test_a_reused_page_reports_each_capture_on_its_own(env: Env) -> None:
    """Classes, titles and pictures do not leak from one capture into the next on a reused page."""
    service, _ = await new_service(grafana_cfg(env.url), concurrency=1, context_reuse=50)
    browser = service.browser
    try:
        sequence = [
            (panel("1", time_from="now-11m"), CaptureClass.OK),
            (panel("99"), CaptureClass.NOT_FOUND),
            (panel("4", time_from="now-11m"), CaptureClass.NO_DATA),
            (panel("1", time_from="now-12m"), CaptureClass.OK),
            (panel("5", time_from="now-11m"), CaptureClass.PANEL_ERROR),
            (panel("1", time_from="now-13m"), CaptureClass.OK),
        ]
        for req, expected in sequence:
            result = await service.capture(req)
            assert result.cls is expected, (req.panel, result.detail)
            if expected is CaptureClass.OK:
                assert_shows_data(result.image)
        assert browser.contexts_opened == 1  # all on one context
    finally:
        await closed_and_gone(service)


async def test_a_failed_capture_closes_its_context(env: Env) -> None:
    service, _ = await new_service(grafana_cfg(env.url), concurrency=1)
    browser = service.browser
    try:
        assert (await service.capture(panel("1", time_from="now-21m"))).cls is CaptureClass.OK
        await settled(service, 1)
        opened = browser.contexts_opened
        assert (await service.capture(panel("3"), timeout=2)).cls is CaptureClass.TIMEOUT
        # the stuck page was closed, a fresh spare opened instead
        await eventually(lambda: browser.contexts_opened == opened + 1, "a fresh spare opened")
        await settled(service, 1)
        assert (await service.capture(panel("1", time_from="now-22m"))).cls is CaptureClass.OK
        assert browser.contexts_opened == opened + 1  # and that spare served the next capture
    finally:
        await closed_and_gone(service)


async def test_the_pool_is_refilled_after_a_failed_capture(env: Env) -> None:
    service, _ = await new_service(grafana_cfg(env.url), concurrency=2)
    browser = service.browser
    try:
        await settled(service, 1)  # one context opened at start
        results = await asyncio.gather(*(service.capture(panel("1", time_from=f"now-{m}m")) for m in (39, 40)))
        assert [r.cls for r in results] == [CaptureClass.OK] * 2
        await settled(service, 2)  # the burst grew the pool to one context per slot
        assert browser.contexts_opened == 2
        assert (await service.capture(panel("3"), timeout=2)).cls is CaptureClass.TIMEOUT
        await eventually(lambda: browser.contexts_opened == 3, "a replacement opened")
        await settled(service, 2)  # the pool is full again
        results = await asyncio.gather(*(service.capture(panel("1", time_from=f"now-{m}m")) for m in (41, 42)))
        assert [r.cls for r in results] == [CaptureClass.OK] * 2
        assert browser.contexts_opened == 3  # the burst found both contexts ready
    finally:
        await closed_and_gone(service)


async def test_an_idle_page_that_crashed_is_not_reused(env: Env) -> None:
    service, _ = await new_service(grafana_cfg(env.url), concurrency=1)
    browser = service.browser
    try:
        assert (await service.capture(panel("1", time_from="now-51m"))).cls is CaptureClass.OK
        await eventually(lambda: idle_page_urls(service) == ["about:blank"], "the page reset")
        inst = browser._sup.current  # white-box: crash the renderer of the idle page
        assert inst is not None
        idle = inst.chromium.browser.contexts[0].pages[0]
        crashed: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        idle.once("crash", lambda _page: crashed.set_result(True))
        cdp = await idle.context.new_cdp_session(idle)
        crash = asyncio.ensure_future(cdp.send("Page.crash"))  # never answered: the renderer dies
        try:
            await asyncio.wait_for(crashed, 10)
        finally:
            crash.cancel()
            await asyncio.gather(crash, return_exceptions=True)
        opened = browser.contexts_opened
        result = await service.capture(panel("1", time_from="now-52m"))
        assert result.cls is CaptureClass.OK, result.detail
        assert_shows_data(result.image)
        assert browser.contexts_opened == opened + 1  # a fresh context took the crashed one's place
    finally:
        await closed_and_gone(service)


async def test_context_reuse_1_gives_every_capture_a_fresh_context_and_spares_stay_bounded(env: Env) -> None:
    service, _ = await new_service(grafana_cfg(env.url), concurrency=1, context_reuse=1)
    browser = service.browser
    try:
        await settled(service, 1)  # the spare for the configured defaults, opened at start
        for n, minutes in enumerate((5, 6, 7), start=1):  # each capture takes the spare, a new one opens
            result = await service.capture(panel("1", time_from=f"now-{minutes}m"))
            assert result.cls is CaptureClass.OK, result.detail
            await eventually(lambda n=n: browser.contexts_opened == 1 + n, "the next spare opened")
            await settled(service, 1)  # the used context is closed
        second = await service.capture(panel("4", time_from="now-5m", scale=2))  # another option set
        assert second.cls is CaptureClass.NO_DATA, second.detail
        await settled(service, 2)
        third = await service.capture(panel("4", time_from="now-5m", timezone="Asia/Tokyo"))
        assert third.cls is CaptureClass.NO_DATA, third.detail
        await settled(service, 2)  # spares for the two most recent option sets only
    finally:
        await closed_and_gone(service)


async def test_concurrent_captures_share_a_pool_of_at_most_concurrency_contexts(env: Env) -> None:
    service, _ = await new_service(grafana_cfg(env.url), concurrency=3, context_reuse=100)
    browser = service.browser
    try:
        await settled(service, 1)  # one context opened at start; the first wave opens two more
        for wave in range(3):
            results = await asyncio.gather(
                *(service.capture(panel("1", time_from=f"now-{30 + wave * 10 + i}m")) for i in range(5))
            )
            assert [r.cls for r in results] == [CaptureClass.OK] * 5, [r.detail for r in results]
        await settled(service, 3)  # at most one idle context per concurrent capture
        assert browser.contexts_opened == 3  # queued captures took the contexts the others returned
    finally:
        await closed_and_gone(service)


async def test_an_unused_pool_shrinks_to_one_idle_context(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pool_module, "POOL_IDLE_S", 0.6)
    service, _ = await new_service(grafana_cfg(env.url), concurrency=3, context_reuse=100)
    browser = service.browser
    try:
        results = await asyncio.gather(*(service.capture(panel("1", time_from=f"now-{m}m")) for m in (61, 62, 63)))
        assert [r.cls for r in results] == [CaptureClass.OK] * 3
        assert browser.contexts_opened == 3
        await eventually(lambda: browser.open_contexts == 1, "the pool trimmed to one context")
        again = await service.capture(panel("1", time_from="now-64m"))  # the one kept serves it
        assert again.cls is CaptureClass.OK and browser.contexts_opened == 3
    finally:
        await closed_and_gone(service)


async def test_capture_once_writes_the_file(env: Env, tmp_path: object) -> None:
    out = os.path.join(str(tmp_path), "panel.webp")
    cfg = parse_config(
        f"""
flashduty: {{integration_key: "${{K}}"}}
grafana: {{url: "{env.url}", token: "${{T}}"}}
capture: {{browser_path: "{CHROMIUM}", format: webp}}
""",
        env={"K": "k", "T": DEFAULT_TOKEN},
    )
    result = await capture_once(cfg, panel("1", format="webp", width=500, height=250), out)
    assert result.cls is CaptureClass.OK and result.content_type == "image/webp"
    with Image.open(out) as im:
        assert (im.format, im.size) == ("WEBP", (500, 250))


async def test_capture_once_reports_a_browser_that_cannot_start(env: Env, tmp_path: object) -> None:
    out = os.path.join(str(tmp_path), "panel.png")
    cfg = parse_config(
        f"""
flashduty: {{integration_key: "${{K}}"}}
grafana: {{url: "{env.url}", token: "${{T}}"}}
capture: {{browser_path: "/nonexistent/chromium"}}
""",
        env={"K": "k", "T": DEFAULT_TOKEN},
    )
    result = await capture_once(cfg, panel("1"), out)
    assert result.cls is CaptureClass.ERROR and result.image is None
    assert result.detail == "capture.browser_path: /nonexistent/chromium is not an executable file"
    assert not os.path.exists(out)
