"""Grafana knowledge of a capture: URLs, auth header, dashboard lookup, readiness, classes."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from urllib.parse import parse_qsl, urlsplit

import pytest
import pytest_asyncio
from aiohttp import web
from pydantic import SecretStr

from sidecar.capture.grafana import (
    CaptureClass,
    DashboardDirectory,
    DashboardInfo,
    PageFacts,
    Probe,
    Readiness,
    auth_header,
    auth_url_pattern,
    classify,
    origin_of,
    panel_url,
    terminal_class,
)
from sidecar.config import BasicAuth, GrafanaConfig
from sidecar.model import PanelCapture

TOKEN = "glsa_secret_token_value"
CFG = GrafanaConfig(url="http://grafana:3000", org_id=2, token=SecretStr(TOKEN))


def req(**kw: object) -> PanelCapture:
    base: dict[str, object] = {"dashboard": "abc", "panel": "4", "time_from": "now-1h", "time_to": "now"}
    base.update(kw)
    return PanelCapture(**base)  # type: ignore[arg-type]


def query(url: str) -> list[tuple[str, str]]:
    return parse_qsl(urlsplit(url).query, keep_blank_values=True)


# --------------------------------------------------------------------------- URLs


def test_panel_url_has_grafana_renderer_shape() -> None:
    url = panel_url(CFG, req(vars=(("service", "check out"), ("env", "prod"))), slug="my-dash")
    assert url == (
        "http://grafana:3000/d-solo/abc/my-dash?orgId=2&panelId=4&from=now-1h&to=now&tz=UTC"
        "&theme=dark&var-service=check%20out&var-env=prod&render=1"
    )


def test_panel_url_without_slug_scenes_key_epoch_ms_and_light_theme() -> None:
    url = panel_url(
        CFG,
        req(panel="panel-4-clone-1", time_from="1700000000000", time_to="1700003600000", theme="light"),
    )
    assert urlsplit(url).path == "/d-solo/abc"
    assert query(url) == [
        ("orgId", "2"),
        ("panelId", "panel-4-clone-1"),
        ("from", "1700000000000"),
        ("to", "1700003600000"),
        ("tz", "UTC"),
        ("theme", "light"),
        ("render", "1"),
    ]


def test_panel_url_time_zone_is_passed_unless_browser() -> None:
    assert ("tz", "Europe/Paris") in query(panel_url(CFG, req(timezone="Europe/Paris")))
    assert "tz=Europe/Paris" in panel_url(CFG, req(timezone="Europe/Paris"))
    assert "tz" not in dict(query(panel_url(CFG, req(timezone="browser"))))


def test_whole_dashboard_uses_kiosk_and_keeps_a_sub_path() -> None:
    cfg = GrafanaConfig(url="https://example.com/grafana/")
    url = panel_url(cfg, req(panel=None, vars=(("x", "1"), ("x", "2"))), slug="s")
    assert url.startswith("https://example.com/grafana/d/abc/s?orgId=1&from=now-1h&to=now")
    assert "panelId" not in url
    assert url.endswith("&var-x=1&var-x=2&kiosk&render=1")


def test_origin_of_normalises_default_ports_and_case() -> None:
    assert origin_of("HTTP://Grafana:80/x") == origin_of("http://grafana/y") == "http://grafana:80"
    assert origin_of("https://g.example.com/") == "https://g.example.com:443"
    assert origin_of("http://127.0.0.1:3000/a") != origin_of("http://127.0.0.1:3001/a")
    assert origin_of("http://[::1]:3000/") == "http://[::1]:3000"


@pytest.mark.parametrize(
    ("grafana", "url", "gets_auth"),
    [
        ("http://127.0.0.1:3000", "http://127.0.0.1:3000/d-solo/abc?panelId=1", True),
        ("http://127.0.0.1:3000", "http://127.0.0.1:3000/api/ds/query?ds_type=prometheus", True),
        ("http://127.0.0.1:3000", "http://127.0.0.1:3000/public/build/app.js", False),
        ("http://127.0.0.1:3000", "http://127.0.0.1:3001/api/ds/query", False),
        ("http://127.0.0.1:3000", "http://127.0.0.1:30000/api/ds/query", False),
        ("http://127.0.0.1:3000", "https://127.0.0.1:3000/api/ds/query", False),
        ("http://127.0.0.1:3000", "http://127.0.0.1.evil.example:3000/api", False),
        ("http://127.0.0.1:3000", "http://cdn.example/127.0.0.1:3000/api", False),
        ("http://Grafana", "http://grafana/d/abc", True),
        ("http://grafana:80", "http://grafana/d/abc", True),
        ("https://example.com/grafana/", "https://example.com/grafana/d/abc", True),
        ("https://example.com/grafana/", "https://example.com/grafana/public/img/x.svg", False),
        ("http://[::1]:3000", "http://[::1]:3000/api/health", True),
    ],
)
def test_auth_goes_to_grafanas_origin_only(grafana: str, url: str, gets_auth: bool) -> None:
    assert bool(auth_url_pattern(grafana).search(url)) is gets_auth


def test_auth_header_token_basic_or_none() -> None:
    assert auth_header(CFG) == f"Bearer {TOKEN}"
    basic = GrafanaConfig(basic_auth=BasicAuth(username="viewer", password=SecretStr("pa:ss")))
    value = auth_header(basic)
    assert value is not None and value.startswith("Basic ")
    assert base64.b64decode(value[6:]).decode() == "viewer:pa:ss"
    assert auth_header(GrafanaConfig()) is None


# --------------------------------------------------------------------------- dashboard lookup

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
        await directory.lookup("nope", timeout=2)  # failures are not cached
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


# --------------------------------------------------------------------------- readiness

SCENES_DONE = Probe(body=True, ready_state="complete", hash="1:1", scenes=True, running=0)


def feed(r: Readiness, probes: list[Probe], *, inflight: int = 0, query_seen: bool = False) -> list[bool]:
    return [
        r.update(p, inflight=inflight, query_seen=query_seen, now=r.started + 0.1 * i) for i, p in enumerate(probes)
    ]


def test_scenes_ready_after_queries_finish_and_dom_is_stable_twice() -> None:
    r = Readiness(whole_dashboard=False, started=0.0)
    running = Probe(body=True, ready_state="complete", hash="1:0", scenes=True, running=1, loading=1)
    drawn = Probe(body=True, ready_state="complete", hash="2:2", scenes=True, running=0)
    assert feed(r, [running, running, SCENES_DONE, drawn, drawn]) == [False, False, False, False, True]


def test_scenes_waits_for_in_flight_requests_and_loading_indicators() -> None:
    r = Readiness(whole_dashboard=False, started=0.0)
    assert feed(r, [SCENES_DONE] * 3, inflight=1) == [False] * 3
    assert "1 network request in flight" in r.waiting_for
    r = Readiness(whole_dashboard=False, started=0.0)
    spinner = Probe(body=True, ready_state="complete", hash="1:1", scenes=True, running=0, loading=1)
    assert feed(r, [spinner] * 3) == [False] * 3
    assert "loading indicator" in r.waiting_for


def test_scenes_grace_for_the_first_query() -> None:
    before_query = Probe(body=True, ready_state="complete", hash="1:1", scenes=True, running=None)
    r = Readiness(whole_dashboard=False, started=0.0, first_query_grace=3.0)
    assert not r.update(before_query, inflight=0, query_seen=False, now=1.0)
    assert not r.update(before_query, inflight=0, query_seen=False, now=2.9)
    assert r.waiting_for == "the first query to start"
    assert not r.update(before_query, inflight=0, query_seen=False, now=3.0)  # settled once
    assert r.update(before_query, inflight=0, query_seen=False, now=3.1)  # gave up waiting
    # a query seen on the network ends the grace at once
    r = Readiness(whole_dashboard=False, started=0.0)
    assert feed(r, [before_query, before_query], query_seen=True) == [False, True]


def test_legacy_solo_waits_for_panels_rendered() -> None:
    pending = Probe(body=True, ready_state="complete", hash="1:1", solo_count=1, panels_rendered=None)
    done = Probe(body=True, ready_state="complete", hash="2:2", solo_count=1, panels_rendered=1)
    r = Readiness(whole_dashboard=False, started=0.0)
    assert feed(r, [pending, pending, pending, done, done]) == [False, False, False, False, True]
    assert feed(Readiness(whole_dashboard=False, started=0.0), [pending] * 5) == [False] * 5


def test_legacy_dashboard_waits_for_visible_panels() -> None:
    half = Probe(body=True, ready_state="complete", hash="1:1", dash_panels=2, dash_rendered=1)
    full = Probe(body=True, ready_state="complete", hash="2:2", dash_panels=2, dash_rendered=2)
    r = Readiness(whole_dashboard=True, started=0.0)
    assert feed(r, [half, half, full, full]) == [False, False, False, True]
    assert feed(Readiness(whole_dashboard=True, started=0.0), [half] * 4) == [False] * 4


def test_changing_dom_is_not_ready_and_loading_document_is_not_ready() -> None:
    changing = [Probe(body=True, ready_state="complete", hash=f"{i}:0", scenes=True, running=0) for i in range(5)]
    assert feed(Readiness(whole_dashboard=False, started=0.0), changing) == [False] * 5
    loading = Probe(body=True, ready_state="loading", hash="1:1", scenes=True, running=0)
    assert feed(Readiness(whole_dashboard=False, started=0.0), [loading] * 3) == [False] * 3
    assert feed(Readiness(whole_dashboard=False, started=0.0), [Probe()] * 3) == [False] * 3


def test_probe_from_js_ignores_unknown_keys_and_junk() -> None:
    assert Probe.from_js({"body": True, "hash": "1:1", "extra": 5}) == Probe(body=True, hash="1:1")
    assert Probe.from_js(None) == Probe()


# --------------------------------------------------------------------------- classification

PAGE = "http://grafana:3000/d-solo/abc?panelId=4"


@pytest.mark.parametrize(
    ("facts", "cls", "words"),
    [
        (PageFacts(url="http://grafana:3000/login"), CaptureClass.LOGIN, "login page"),
        (PageFacts(url="http://grafana:3000/grafana/login/"), CaptureClass.LOGIN, "login page"),
        (PageFacts(url=PAGE, probe=Probe(login=True)), CaptureClass.LOGIN, "login page"),
        (PageFacts(url=PAGE, auth_failure="HTTP 401 on /api/ds/query"), CaptureClass.LOGIN, "HTTP 401"),
        (PageFacts(url=PAGE, document_status=403), CaptureClass.LOGIN, "HTTP 403"),
        (PageFacts(url=PAGE, document_status=404), CaptureClass.NOT_FOUND, "404"),
        (PageFacts(url=PAGE, probe=Probe(not_found=True)), CaptureClass.NOT_FOUND, "not found"),
        (PageFacts(url=PAGE, document_status=502), CaptureClass.ERROR, "HTTP 502"),
    ],
)
def test_terminal_classes(facts: PageFacts, cls: CaptureClass, words: str) -> None:
    early = terminal_class(facts)
    assert early is not None and early[0] is cls and words in early[1]
    assert classify(facts) == early


def test_page_classes_after_ready() -> None:
    ok = PageFacts(url=PAGE, document_status=200, probe=Probe(body=True))
    assert terminal_class(ok) is None
    assert classify(ok) == (CaptureClass.OK, "rendered")
    no_data = PageFacts(url=PAGE, document_status=200, probe=Probe(no_data=True))
    assert classify(no_data)[0] is CaptureClass.NO_DATA
    # an error wins over the "No data" the errored panel also shows
    broken = PageFacts(url=PAGE, probe=Probe(no_data=True, panel_error=True, error_text="boom"))
    assert classify(broken) == (CaptureClass.PANEL_ERROR, "the panel shows an error: boom")


def test_panel_error_text_is_stripped_of_credentials_and_shortened() -> None:
    text = 'Post "https://user:hunter2@prom:9090/api/v1/query?token=abc": dial tcp ' + "x" * 400
    cls, detail = classify(PageFacts(url=PAGE, probe=Probe(panel_error=True, error_text=text)))
    assert cls is CaptureClass.PANEL_ERROR
    assert "hunter2" not in detail and "token=abc" not in detail and "user:" not in detail
    assert "https://prom:9090/api/v1/query" in detail
    assert len(detail) < 220
