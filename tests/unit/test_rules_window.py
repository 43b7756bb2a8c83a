"""Panel list → resolved captures: time windows, per-panel overrides, templated variables."""

from __future__ import annotations

from typing import Any

import pytest

from sidecar.config import Config, PanelConfig
from sidecar.rules.window import default_window, panel_captures, panels_from_annotations

NOW = 1_700_000_000.0


def ms(t: float) -> str:
    return str(int(t * 1000))


def make_config(panels: list[dict[str, Any]], **rule: Any) -> Config:
    return Config.model_validate(
        {
            "flashduty": {"integration_key": "k"},
            "grafana": {"theme": "light", "timezone": "Europe/Paris"},
            "capture": {"width": 800, "height": 400, "scale": 2, "format": "jpeg"},
            "rules": [{"name": "r", "source": "grafana", "panels": panels, **rule}],
        }
    )


def test_default_window_uses_twice_for_or_30m() -> None:
    assert default_window(active_at=NOW - 60, now=NOW) == (ms(NOW - 60 - 1800), ms(NOW))
    assert default_window(active_at=NOW - 60, now=NOW, for_=3600) == (ms(NOW - 60 - 7200), ms(NOW))


def test_resolve_window_ends_5m_after_resolve_capped_at_now() -> None:
    start = NOW - 3600
    assert default_window(active_at=start, now=NOW, resolved_at=NOW - 600)[1] == ms(NOW - 300)
    assert default_window(active_at=start, now=NOW, resolved_at=NOW - 60)[1] == ms(NOW)


def test_defaults_come_from_capture_and_grafana() -> None:
    cfg = make_config([{"dashboard": "abc", "panel": 4}], **{"for": "1h"})
    (p,) = panel_captures(cfg.rules[0], cfg, labels={}, active_at=NOW - 100, now=NOW)
    assert (p.dashboard, p.panel) == ("abc", "4")
    assert (p.width, p.height, p.scale, p.format) == (800, 400, 2.0, "jpeg")
    assert (p.theme, p.timezone) == ("light", "Europe/Paris")
    assert (p.time_from, p.time_to) == (ms(NOW - 100 - 7200), ms(NOW))


def test_per_panel_overrides_and_explicit_windows() -> None:
    cfg = make_config(
        [
            {"dashboard": "a", "panel": "panel-3", "range": "1h", "width": 1200, "theme": "dark", "format": "png"},
            {"dashboard": "b", "from": "now-6h", "to": "now-1h", "title": "Errors"},
            {"dashboard": "c", "from": "now-2h"},
            {"dashboard": "d"},
        ]
    )
    a, b, c, d = panel_captures(cfg.rules[0], cfg, labels={}, active_at=NOW, now=NOW, resolved_at=NOW)
    assert (a.panel, a.time_from, a.time_to, a.width, a.height) == ("panel-3", ms(NOW - 3600), ms(NOW), 1200, 400)
    assert (a.theme, a.format) == ("dark", "png")
    assert (b.time_from, b.time_to, b.alt) == ("now-6h", "now-1h", "Errors")
    assert (c.time_from, c.time_to) == ("now-2h", "now")
    assert d.panel is None and d.alt == "d"


def test_vars_are_templated_from_the_alert() -> None:
    cfg = make_config([{"dashboard": "a", "vars": {"service": "{{ $labels.service }}", "env": "prod"}}])
    (p,) = panel_captures(cfg.rules[0], cfg, labels={"service": "checkout"}, active_at=NOW, now=NOW)
    assert p.vars == (("env", "prod"), ("service", "checkout"))


def test_same_panel_twice_is_captured_once_and_no_panels_is_empty() -> None:
    cfg = make_config([{"dashboard": "a", "panel": 1}, {"dashboard": "a", "panel": 1}])
    assert len(panel_captures(cfg.rules[0], cfg, labels={}, active_at=NOW, now=NOW)) == 1
    assert panel_captures([], cfg, labels={}, active_at=NOW, now=NOW) == ()


def test_panel_list_with_explicit_for() -> None:
    cfg = make_config([])
    panels = [PanelConfig(dashboard="x")]
    (p,) = panel_captures(panels, cfg, labels={}, active_at=NOW, now=NOW, for_=7200)
    assert p.time_from == ms(NOW - 14400)


def test_panels_from_annotations() -> None:
    got = panels_from_annotations({"grafana_dashboard_uid": "abc", "grafana_panel_id": "4, 6"})
    assert [(p.dashboard, p.panel_key) for p in got] == [("abc", "4"), ("abc", "6")]
    got = panels_from_annotations({"__dashboardUid__": "g", "__panelId__": "2"})
    assert [(p.dashboard, p.panel_key) for p in got] == [("g", "2")]
    assert [p.panel_key for p in panels_from_annotations({"grafana_dashboard_uid": "abc"})] == [None]
    assert panels_from_annotations({"grafana_panel_id": "4"}) == []
    assert panels_from_annotations({"grafana_dashboard_uid": "abc", "grafana_panel_id": "bad id!"}) == []
    with pytest.raises(ValueError, match=r"^__panelId__: must be a panel id .*got 'bad id!'$"):
        panels_from_annotations({"__dashboardUid__": "g", "__panelId__": "2,bad id!"}, strict=True)
