"""images[].href is the panel in Grafana's UI, not the renderer page the capture loads."""

from __future__ import annotations

import pytest

from sidecar.delivery.pictures import human_link


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
def test_human_link(render_url: str, link: str) -> None:
    assert human_link(render_url) == link
