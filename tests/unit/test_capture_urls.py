"""Every Grafana URL a capture builds or reads (``capture.urls``) and the auth header (``capture.auth``)."""

from __future__ import annotations

import base64
from urllib.parse import parse_qsl, urlsplit

import pytest
from pydantic import SecretStr

from sidecar.capture.auth import auth_header
from sidecar.capture.urls import (
    auth_url_pattern,
    dashboard_api_url,
    dashboard_v2_url,
    human_link,
    origin_of,
    panel_url,
    parse_grafana_url,
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


# --------------------------------------------------------------------------- the renderer's page


def test_panel_url_has_grafana_renderer_shape() -> None:
    url = panel_url(CFG, req(vars=(("service", "check out"), ("env", "prod"))), slug="my-dash")
    assert url == (
        "http://grafana:3000/d-solo/abc/my-dash?orgId=2&panelId=4&from=now-1h&to=now&timezone=UTC"
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
        ("timezone", "UTC"),
        ("theme", "light"),
        ("render", "1"),
    ]


def test_panel_url_time_zone_is_passed_unless_browser() -> None:
    # the frontend reads timezone= (tz= is only the backend renderer's)
    assert ("timezone", "Europe/Paris") in query(panel_url(CFG, req(timezone="Europe/Paris")))
    assert "timezone=Europe/Paris" in panel_url(CFG, req(timezone="Europe/Paris"))
    assert "tz" not in dict(query(panel_url(CFG, req(timezone="Europe/Paris"))))
    assert "timezone" not in dict(query(panel_url(CFG, req(timezone="browser"))))


def test_panel_url_for_the_detected_grafana_and_the_alerts_org() -> None:
    url = panel_url(CFG, req(org_id=5), base_url="http://127.0.0.1:3000", panel_id="4", hide_logo=True)
    assert url.startswith("http://127.0.0.1:3000/d-solo/abc?orgId=5&panelId=4&")
    assert url.endswith("&hideLogo=true&render=1")
    whole = panel_url(CFG, req(panel=None), hide_logo=True)
    assert "hideLogo" not in whole  # the badge is on /d-solo/ only
    assert "hideLogo" not in human_link(url)


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


def test_dashboard_api_url_quotes_the_uid_and_keeps_a_sub_path() -> None:
    assert dashboard_api_url(str(CFG.url), "abc") == "http://grafana:3000/api/dashboards/uid/abc"
    sub = GrafanaConfig(url="https://example.com/grafana/")
    assert dashboard_api_url(str(sub.url), "a/b c") == "https://example.com/grafana/api/dashboards/uid/a%2Fb%20c"


def test_dashboard_v2_url_names_the_orgs_namespace() -> None:
    assert dashboard_v2_url("http://g:3000/grafana", "a b", 1) == (
        "http://g:3000/grafana/apis/dashboard.grafana.app/v2beta1/namespaces/default/dashboards/a%20b"
    )
    assert "/namespaces/org-3/" in dashboard_v2_url("http://g:3000", "x", 3, "v2alpha1")


# --------------------------------------------------------------------------- links in and out


@pytest.mark.parametrize(
    ("render_url", "link"),
    [
        (
            "http://g:3000/d-solo/abc/my-dash?orgId=1&panelId=4&from=1700000000000&to=1700003600000"
            "&tz=Europe%2FParis&theme=dark&var-service=checkout&render=1",
            "http://g:3000/d/abc/my-dash?orgId=1&viewPanel=4&from=1700000000000&to=1700003600000"
            "&tz=Europe/Paris&var-service=checkout",
        ),
        (
            "http://g:3000/d/abc?orgId=2&from=now-1h&to=now&theme=light&kiosk&render=1",
            "http://g:3000/d/abc?orgId=2&from=now-1h&to=now",
        ),
        ("https://g/grafana/d-solo/x?panelId=panel-3&render=1", "https://g/grafana/d/x?viewPanel=panel-3"),
    ],
)
def test_human_link_is_the_panel_in_grafanas_ui(render_url: str, link: str) -> None:
    assert human_link(render_url) == link


@pytest.mark.parametrize(
    ("url", "parsed"),
    [
        ("http://g/d/abc/my-dash?orgId=1&viewPanel=4", ("abc", "4", 1)),
        ("http://g/grafana/d/abc?viewPanel=panel-7", ("abc", "panel-7", None)),
        ("http://g/d-solo/abc/x?panelId=2&orgId=3", ("abc", "2", 3)),
        ("http://g/d/abc?orgId=main&viewPanel=", ("abc", None, None)),
        ("http://g/d/abc", ("abc", None, None)),
        ("http://g/d/", None),
        ("http://g/alerting/list", None),
        ("", None),
    ],
)
def test_parse_grafana_url(url: str, parsed: tuple[str, str | None, int | None] | None) -> None:
    assert parse_grafana_url(url) == parsed


def test_parse_grafana_url_reads_back_what_the_capture_links_to() -> None:
    link = human_link(panel_url(CFG, req(panel="panel-4-clone-1", vars=(("x", "1"),)), slug="s"))
    assert parse_grafana_url(link) == ("abc", "panel-4-clone-1", 2)
    assert parse_grafana_url(human_link(panel_url(CFG, req(panel=None)))) == ("abc", None, 2)


# --------------------------------------------------------------------------- credentials


def test_auth_header_token_basic_or_none() -> None:
    assert auth_header(CFG) == f"Bearer {TOKEN}"
    basic = GrafanaConfig(basic_auth=BasicAuth(username="viewer", password=SecretStr("pa:ss")))
    value = auth_header(basic)
    assert value is not None and value.startswith("Basic ")
    assert base64.b64decode(value[6:]).decode() == "viewer:pa:ss"
    assert auth_header(GrafanaConfig()) is None
