"""Which Grafana (``capture.grafana_info``): version and sub path read from the sandbox Grafana
over loopback HTTP, in each sub-path setup and version profile."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from aiohttp import web

from sidecar.capture.grafana_info import GrafanaInfo, GrafanaProbe, parse_version
from sidecar_sandbox.grafana import GrafanaSandbox
from sidecar_sandbox.grafana_profiles import SubPath


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest_asyncio.fixture
async def serve() -> AsyncIterator[object]:
    runners: list[web.AppRunner] = []

    async def start(sandbox: GrafanaSandbox) -> str:
        runner = web.AppRunner(sandbox.make_app(), access_log=None, handle_signals=False)
        await runner.setup()
        runners.append(runner)
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        host, port = runner.addresses[0][:2]
        return f"http://{host}:{port}"

    yield start
    for runner in runners:
        await runner.cleanup()


def test_parse_version() -> None:
    assert parse_version("11.2.3") == (11, 2, 3)
    assert parse_version("12.4.0-18345228") == (12, 4, 0)
    assert parse_version("v10.4") == (10, 4, 0)
    assert parse_version("") is None and parse_version("main") is None


@pytest.mark.parametrize(
    ("version", "scenes_solo", "logo"),
    [
        ("10.4.19", False, False),
        ("11.1.13", False, False),
        ("11.2.0", True, False),
        ("12.4.0", True, True),
        ("", True, True),
    ],
)
def test_features_by_version(version: str, scenes_solo: bool, logo: bool) -> None:
    info = GrafanaInfo(serve_url="http://g:3000", version_text=version)
    assert (info.scenes_solo, info.solo_logo) == (scenes_solo, logo)
    assert info.panel_param("4") == "4"
    assert info.panel_param("panel-4") == ("panel-4" if scenes_solo else "4")
    if scenes_solo:
        assert info.panel_param("panel-4-clone-2") == "panel-4-clone-2"
    else:
        with pytest.raises(ValueError, match=r"panel panel-4-clone-2 is a repeated-panel clone.*panel: 4"):
            info.panel_param("panel-4-clone-2")


def test_rewrite_only_when_the_pages_sub_path_is_not_where_grafana_answers() -> None:
    assert GrafanaInfo("http://g:3000").rewrite is None
    assert GrafanaInfo("http://g:3000/grafana", app_sub_url="/grafana").rewrite is None
    assert GrafanaInfo("http://g:3000", app_sub_url="/grafana").rewrite == ("http://g:3000/grafana/", "http://g:3000/")


@pytest.mark.parametrize(
    ("sub_path", "url_path", "serve_path", "rewrite"),
    [
        (SubPath(), "", "", False),
        (SubPath("/grafana", serve_from_sub_path=True), "/grafana", "/grafana", False),
        (SubPath("/grafana", serve_from_sub_path=False), "", "", True),
        (SubPath("/grafana", serve_from_sub_path=False), "/grafana", "", True),  # 404 there: the origin
    ],
)
async def test_detects_version_and_sub_path(
    serve: object, caplog: pytest.LogCaptureFixture, sub_path: SubPath, url_path: str, serve_path: str, rewrite: bool
) -> None:
    origin = await serve(GrafanaSandbox(profile="12.4", sub_path=sub_path))  # type: ignore[operator]
    probe = GrafanaProbe(origin + url_path, clock=Clock())
    with caplog.at_level(logging.INFO, logger="sidecar.capture"):
        info = await probe.current(timeout=2)
    assert info.version_text == "12.4.0" and info.serve_url == origin + serve_path
    assert info.app_sub_url == sub_path.prefix
    assert (info.rewrite is not None) is rewrite
    assert probe.no_grafana == ""
    assert [r.getMessage() for r in caplog.records] == [f"detected {info.describe()}"]


@pytest.mark.parametrize(
    ("sub_path", "url_path"),
    [
        (SubPath(root_url="https://grafana.example.com/"), ""),
        (SubPath("/grafana", serve_from_sub_path=True, root_url="https://grafana.example.com/grafana/"), "/grafana"),
        (SubPath("/grafana", serve_from_sub_path=False, root_url="https://grafana.example.com/grafana"), ""),
    ],
)
async def test_links_go_to_the_address_grafana_says_people_open(
    serve: object, sub_path: SubPath, url_path: str
) -> None:
    """``appUrl`` (root_url) from the login page's boot data: the pod-local capture URL's link is
    rebased onto it, in each sub-path setup (the sandbox escapes ``/`` as ``\\/`` like some encoders)."""
    origin = await serve(GrafanaSandbox(profile="12.4", sub_path=sub_path))  # type: ignore[operator]
    info = await GrafanaProbe(origin + url_path, clock=Clock()).current(timeout=2)
    assert info.app_url.rstrip("/") == sub_path.root_url.rstrip("/")
    link = info.serve_url + "/d/abc/slug?orgId=1&viewPanel=4"
    assert info.public_link(link) == sub_path.root_url.rstrip("/") + "/d/abc/slug?orgId=1&viewPanel=4"
    assert "links to https://grafana.example.com" in info.describe()


def test_public_link_leaves_other_urls_alone() -> None:
    info = GrafanaInfo("http://g:3000", app_sub_url="/grafana", app_url="https://host/grafana/")
    assert info.public_link("http://g:3000/grafana/d/x?viewPanel=1") == "https://host/grafana/d/x?viewPanel=1"
    assert info.public_link("http://g:30001/d/x") == "http://g:30001/d/x"  # another port
    assert info.public_link("http://other/d/x") == "http://other/d/x"
    assert GrafanaInfo("http://g:3000").public_link("http://g:3000/d/x") == "http://g:3000/d/x"  # no appUrl


async def test_cached_then_detected_again_after_forget(serve: object) -> None:
    sandbox = GrafanaSandbox(profile="11.1")
    url = await serve(sandbox)  # type: ignore[operator]
    clock = Clock()
    probe = GrafanaProbe(url, clock=clock, ttl=300)
    assert (await probe.current(timeout=2)).version_text.startswith("11.1")
    sandbox.profile = sandbox.profile.__class__("12.4.0", scenes_solo=True, scenes_dashboard=True)  # upgraded
    assert (await probe.current(timeout=2)).version_text.startswith("11.1")  # cached
    probe.forget()  # e.g. after Grafana could not be reached
    assert (await probe.current(timeout=2)).version_text == "12.4.0"


async def test_no_grafana_under_the_url_and_no_answer_at_all(serve: object) -> None:
    origin = await serve(GrafanaSandbox(sub_path=SubPath("/grafana", serve_from_sub_path=True)))  # type: ignore[operator]
    probe = GrafanaProbe(origin, clock=Clock())  # Grafana answers under /grafana only
    info = await probe.current(timeout=2)
    assert info.serve_url == origin and info.version is None
    assert "no Grafana /api/health under" in probe.no_grafana
    down = GrafanaProbe("http://127.0.0.1:9", clock=Clock())  # connection refused
    assert (await down.current(timeout=1)).serve_url == "http://127.0.0.1:9"
    assert down.no_grafana == "" and "cannot reach Grafana" in down.failure


async def test_a_refused_health_check_is_not_taken_for_a_missing_grafana(serve: object) -> None:
    """A proxy that wants credentials on /api/health (401) must not make every capture not_loaded."""

    @web.middleware
    async def guard(request: web.Request, handler):  # type: ignore[no-untyped-def]
        if request.path == "/api/health":
            return web.json_response({"message": "Unauthorized"}, status=401)
        return await handler(request)

    sandbox = GrafanaSandbox()
    app = sandbox.make_app()
    app.middlewares.insert(0, guard)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    host, port = runner.addresses[0][:2]
    try:
        probe = GrafanaProbe(f"http://{host}:{port}", clock=Clock())
        info = await probe.current(timeout=2)
        assert info.serve_url == f"http://{host}:{port}" and info.version is None
        assert probe.no_grafana == "" and "HTTP 401 on /api/health" in probe.failure
    finally:
        await runner.cleanup()
