"""The status page's HTML from a snapshot: every section, escaping, secrets redacted."""

from __future__ import annotations

import re

from sidecar.status.provider import Snapshot
from sidecar.status.render import render_login, render_status

SECRET = "integration-key-abcdef123456"


def snapshot(**daemon: object) -> Snapshot:
    base = {
        "version": "0.1.0", "started": 1000.0, "config_path": "/etc/sidecar/config.yaml",
        "reload": ("refused", "rules[0].expr: unexpected character"), "reload_at": 1070.0, "browser_version": "120.0.1",
        "browser_connected": True, "browser_launches": 3, "flashduty_host": "https://api.flashcat.cloud",
        "flashduty_answer_at": 1090.0, "flashduty_failure": (1095.0, f"push: HTTP 502 integration_key={SECRET}"),
        "flashduty_429_at": 1080.0, "extras": {"Grafana": None, "High availability": "not enabled"},
    }  # fmt: skip
    base.update(daemon)
    delivery = {
        "open": True, "depth": 3, "oldest_age": 42.0, "dead_letter_count": 1,
        "dead_letters": [{"id": 7, "failed_at": 1050.0, "rule": "R", "status": "Critical", "alert_key": "fds:dead",
                          "attempts": 5, "last_error": "HTTP 401 invalid integration key"}],
        "upload_budget": [{"limit": 5, "seconds": 1.0, "used": 2}, {"limit": 50, "seconds": 60.0, "used": 49}],
        "pictures_kept": 2, "picture_bytes": 2048,
    }  # fmt: skip
    rules = [{
        "name": "HighErrors", "source": "prometheus", "expr": 'rate(x{code=~"5.."}[5m]) > 1', "for": 120.0,
        "health": "err", "last_eval_at": 1099.0, "last_error": "datasource down",
        "instances": [{"labels": {"service": "<script>alert(1)</script>"}, "state": "pending", "since": 1060.0,
                       "value": 3.5, "alert_key": "fds:1", "resolved_at": None}],
    }]  # fmt: skip
    deliveries = [{
        "at": 1098.0, "rule": "HighErrors", "status": "Critical", "alert_key": "fds:1", "title": "Errors <b>high</b>",
        "outcome": "delivered", "followup": False, "duration_ms": 1840, "error": None,
        "pictures": [
            {"alt": "Errors", "cls": "ok", "outcome": "uploaded", "steps_ms": {"navigate": 120, "wait_ready": 800},
             "capture_ms": 950, "image_key": "img_abc", "reason": None, "size": 40960, "content_type": "image/png",
             "file": "a" * 64 + ".png"},
            {"alt": "Latency", "cls": "timeout", "outcome": "none", "steps_ms": {}, "capture_ms": 20000,
             "image_key": None, "reason": "capture timed out after 20s", "size": None, "content_type": None,
             "file": None},
        ],
    }]  # fmt: skip
    return Snapshot(now=1100.0, daemon=base, delivery=delivery, rules=rules, deliveries=deliveries)


def test_every_section_with_its_facts() -> None:
    html = render_status(snapshot(), picture_base="pictures/", refresh=10, secrets=[SECRET])
    text = re.sub(r"<[^>]+>", " ", html)
    text = " ".join(text.split())
    assert '<meta http-equiv="refresh" content="10">' in html
    assert "uptime 100.0 s" in text and "/etc/sidecar/config.yaml" in text
    assert "refused rules[0].expr: unexpected character 1970-01-01 00:17:50 UTC" in text
    assert "Chromium 120.0.1 · connected · 3 launches, 2 restarts" in text
    assert "unreachable push: HTTP 502" in text and "last 429: 20.0 s ago" in text
    assert "Grafana unknown" in text and "High availability not enabled" in text
    assert "3 events waiting, oldest 42.0 s" in text and "2 / 5" in text and "49 / 50" in text
    assert "Dead letters: 1" in text and "HTTP 401 invalid integration key" in text
    assert "flashduty-sidecar dead-letters -c CONFIG retry [ID...]" in text
    assert "err" in text and "datasource down" in text and "pending since 1970-01-01 00:17:40 UTC" in text
    assert 'href="pictures/' + "a" * 64 + '.png"' in html
    assert "navigate 120 ms, wait_ready 800 ms" in text and "40 KiB" in text and "img_abc" in text
    assert "skipped: capture timed out after 20s" in text and "no picture" in text


def test_escaped_and_redacted() -> None:
    html = render_status(snapshot(), picture_base="pictures/", refresh=10, secrets=[SECRET])
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "<b>high</b>" not in html and "Errors &lt;b&gt;high&lt;/b&gt;" in html
    assert SECRET not in html and "&lt;redacted&gt;" in html


def test_static_export_and_a_fresh_daemon() -> None:
    fresh = snapshot(reload=None, flashduty_answer_at=None, flashduty_failure=None, flashduty_429_at=None,
                     browser_version=None, browser_connected=False, browser_launches=0)  # fmt: skip
    html = render_status(fresh, picture_base="pictures/", refresh=10, secrets=[], exported=True, notes=[("1.0s", "x")])
    assert "http-equiv" not in html and "static copy" in html and 'id="timeline"' in html
    assert "none since start" in html and "no request yet" in html and "last 429: never" in html
    assert "unknown · not connected · 0 launches, 0 restarts" in html


def test_login_page() -> None:
    assert 'name="token"' in render_login(failed=False) and "login-error" not in render_login(failed=False)
    assert "wrong token" in render_login(failed=True)


def test_the_templates_ship_in_the_package() -> None:
    """The image installs a wheel: every template must be package data, not only in the source tree."""
    import fnmatch
    import tomllib
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    patterns = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["sidecar"]
    files = [p.relative_to(root / "sidecar").as_posix() for p in (root / "sidecar/status/templates").iterdir()]
    assert files and all(any(fnmatch.fnmatch(f, pat) for pat in patterns) for f in files), (files, patterns)
