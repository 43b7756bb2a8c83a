"""Dashboard lookup (``capture.dashboards``): slug and titles from a loopback Grafana API, cached per uid."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from aiohttp import web
from pydantic import SecretStr

from sidecar.capture.dashboards import DashboardDirectory, DashboardInfo, slugify
from sidecar.config import GrafanaConfig
from sidecar_sandbox.grafana import DEFAULT_TOKEN, GrafanaSandbox

TOKEN = "glsa_secret_token_value"

DASHBOARD_JSON = {
    "dashboard": {
        "title": "Services",
        "panels": [
            {"id": 1, "title": "Requests"},
            {"id": 7, "type": "row", "title": "More", "panels": [{"id": 8, "title": "Nested"}]},
            {"id": True, "title": "bogus"},
        ],
    },
    "meta": {"slug": "services"},
}


def test_dashboard_info_titles_for_ids_keys_clones_and_rows() -> None:
    info = DashboardInfo.from_api("abc", DASHBOARD_JSON)
    assert (info.title, info.slug) == ("Services", "services")
    assert info.title_for("1") == info.title_for("panel-1") == info.title_for("panel-1-clone-3") == "Requests"
    assert info.title_for("8") == "Nested"
    assert info.title_for(None) == "Services"
    assert info.title_for("99") == info.title_for("weird key") == ""
    with pytest.raises(ValueError):
        DashboardInfo.from_api("abc", {"nope": 1})


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest_asyncio.fixture
async def grafana_api() -> AsyncIterator[tuple[str, list[dict[str, str]]]]:
    """A loopback Grafana API: ``abc`` exists, ``broken`` answers junk, the rest is 404."""
    seen: list[dict[str, str]] = []

    async def dashboard(request: web.Request) -> web.Response:
        seen.append({"uid": request.match_info["uid"], **request.headers})
        uid = request.match_info["uid"]
        if uid == "abc":
            return web.json_response(DASHBOARD_JSON)
        if uid == "broken":
            return web.Response(text="<html>proxy error</html>", content_type="text/html")
        return web.json_response({"message": "Dashboard not found"}, status=404)

    app = web.Application()
    app.router.add_get("/api/dashboards/uid/{uid}", dashboard)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    host, port = runner.addresses[0][:2]
    yield f"http://{host}:{port}", seen
    await runner.cleanup()


async def test_directory_caches_per_uid_and_sends_credentials(
    grafana_api: tuple[str, list[dict[str, str]]],
) -> None:
    url, seen = grafana_api
    clock = FakeClock()
    cfg = GrafanaConfig(url=url, org_id=3, token=SecretStr(TOKEN))
    directory = DashboardDirectory(grafana=cfg, clock=clock, ttl=600)
    try:
        first = await directory.lookup("abc", timeout=2)
        again = await directory.lookup("abc", timeout=2)
        assert first.info is not None and first.info.slug == "services" and again == first
        assert len(seen) == 1
        assert seen[0]["Authorization"] == f"Bearer {TOKEN}"
        assert seen[0]["X-Grafana-Org-Id"] == "3"
        assert directory.cached("abc") == first.info
        clock.now += 601  # expired: asked again
        assert directory.cached("abc") is None
        await directory.lookup("abc", timeout=2)
        assert len(seen) == 2
        missing = await directory.lookup("nope", timeout=2)
        assert (missing.info, missing.status) == (None, 404)
        junk = await directory.lookup("broken", timeout=2)
        assert (junk.info, junk.status) == (None, 0)
        await directory.lookup("nope", timeout=2)  # a failure is remembered for a while...
        assert [s["uid"] for s in seen].count("nope") == 1
        clock.now += 31  # ...then asked again
        await directory.lookup("nope", timeout=2)
        assert [s["uid"] for s in seen].count("nope") == 2
    finally:
        await directory.close()


async def test_directory_unreachable_grafana_is_no_slug_not_an_error() -> None:
    cfg = GrafanaConfig(url="http://127.0.0.1:9")  # discard port: connection refused
    directory = DashboardDirectory(grafana=cfg, clock=FakeClock())
    try:
        result = await directory.lookup("abc", timeout=1)
        assert (result.info, result.status) == (None, 0)
    finally:
        await directory.close()


async def serve(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    host, port = runner.addresses[0][:2]
    return runner, f"http://{host}:{port}"


async def test_v2_dashboard_read_through_the_app_platform_api_and_orgs_kept_apart() -> None:
    """12.4: /api/dashboards/uid answers a v2 dashboard 406; the v2 API gives title and panels."""
    runner, url = await serve(GrafanaSandbox(profile="12.4", token=None, basic_auth=("u", "p")).make_app())
    cfg = GrafanaConfig.model_validate({"url": url, "basic_auth": {"username": "u", "password": "p"}})
    directory = DashboardDirectory(grafana=cfg, clock=FakeClock())
    try:
        v2 = await directory.lookup("sandbox-v2", timeout=2)
        assert v2.status == 200 and v2.info is not None
        assert (v2.info.title, v2.info.slug, v2.info.title_for("panel-1")) == (
            "V2 services",
            "v2-services",
            "V2 request rate",
        )
        v1 = await directory.lookup("sandbox", timeout=2)
        assert v1.info is not None and v1.info.slug == "sandbox-services"
        # org 2 has its own dashboards: the same uid is looked up per org
        assert (await directory.lookup("org2-services", timeout=2)).status == 404
        other = await directory.lookup("org2-services", timeout=2, org_id=2)
        assert other.info is not None and other.info.title == "Org 2 services"
    finally:
        await directory.close()
        await runner.cleanup()


async def test_a_token_of_another_org_is_refused_with_401() -> None:
    runner, url = await serve(GrafanaSandbox(profile="12.4").make_app())
    cfg = GrafanaConfig.model_validate({"url": url, "token": DEFAULT_TOKEN})
    directory = DashboardDirectory(grafana=cfg, clock=FakeClock())
    try:
        assert (await directory.lookup("org2-services", timeout=2, org_id=2)).status == 401
        assert (await directory.lookup("sandbox", timeout=2)).status == 200
    finally:
        await directory.close()
        await runner.cleanup()


def test_slugify_like_grafana() -> None:
    assert slugify("V2 services") == "v2-services"
    assert slugify("  Kubernetes / Pods (prod) ") == "kubernetes-pods-prod"
