"""The reload table of docs/operations.md, walked key by key against a running daemon.

Every config key is in the table, marked ``live`` or ``restart`` exactly as ``sidecar.reload``
decides. Then one daemon (real Chromium, sandbox Grafana and Flashduty) gets one reload per
key: a ``live`` key must show where the table says it takes effect — the events that rules,
reports and webhooks make from then on, the component that reads it — and a ``restart`` key
must be refused whole (the running config kept, ``outcome="restart_required"``).
"""

from __future__ import annotations

import copy
import logging
import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from sidecar.app import Options
from sidecar.config import load_config
from sidecar.daemon import Daemon
from sidecar.model import AlertEvent, PanelCapture
from sidecar.reload import config_keys, needs_restart
from sidecar_sandbox.runner import Sandboxes, start_sandboxes
from tests.support.browsers import find_chromium
from tests.support.wait import eventually

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = find_chromium()
pytestmark = [
    pytest.mark.chromium,
    pytest.mark.skipif(CHROMIUM is None, reason="no Chromium: install chromium or set SIDECAR_CHROMIUM"),
]

BASE: dict[str, Any] = {
    "flashduty": {"api_host": "${SANDBOX_FLASHDUTY_URL}", "integration_key": "${FLASHDUTY_INTEGRATION_KEY}"},
    "grafana": {"url": "${SANDBOX_GRAFANA_URL}", "token": "${GRAFANA_TOKEN}"},
    "capture": {"browser_path": "${CHROMIUM}"},
    "server": {"listen": "127.0.0.1:0"},
    "state_dir": "${STATE_DIR}",
    "datasources": [{"name": "prom", "url": "${SANDBOX_PROMETHEUS_URL}"}],
    "rules": [
        {"name": "Report", "source": "schedule", "every": "1h", "panels": [{"dashboard": "sandbox", "panel": 1}]}
    ],
}
RULE_FILE = "groups:\n  - name: g\n    rules:\n      - alert: {name}\n        expr: up == 0\n"


def doc_table() -> dict[str, str]:
    text = (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")
    section = text.split("## Reload", 1)[1].split("\n## ", 1)[0]
    return {m[1]: m[2] for m in re.finditer(r"^\| `([^`]+)` \| (live|restart) \|", section, re.M)}


def test_the_table_lists_every_key_as_the_code_applies_it() -> None:
    table = doc_table()
    assert sorted(table) == sorted(config_keys())
    for key, applies in table.items():
        assert applies == ("restart" if needs_restart(key) else "live"), key


def set_key(raw: dict[str, Any], key: str, value: Any) -> None:
    node = raw
    *parents, last = key.split(".")
    for p in parents:
        node = node.setdefault(p, {})
    node[last] = value


class Walk:
    """The running daemon, what it emitted, and how to poke it."""

    def __init__(self, daemon: Daemon, path: Path, events: list[AlertEvent], tmp: Path) -> None:
        self.daemon, self.path, self.events, self.tmp = daemon, path, events, tmp
        self.raw = copy.deepcopy(BASE)
        self.http: aiohttp.ClientSession
        self.n = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.daemon.port}/webhook/alertmanager"

    async def reload_with(self, raw: dict[str, Any]) -> bool:
        self.path.write_text(yaml.safe_dump(raw))
        return await self.daemon.reload("test")

    async def webhook(self, labels: dict[str, str] | None = None, *, token: str | None = "hook-token") -> int:
        self.n += 1
        alert = {
            "status": "firing",
            "labels": {"alertname": "Walk", "instance": f"i-{self.n}", **(labels or {})},
            "annotations": {"grafana_dashboard_uid": "sandbox", "grafana_panel_id": "3"},
            "startsAt": f"2026-11-23T10:{self.n % 60:02d}:00Z",
            "endsAt": "0001-01-01T00:00:00Z",
            "fingerprint": f"{self.n:016x}",
        }
        body = {"version": "4", "status": "firing", "alerts": [alert], "groupKey": "g", "receiver": "r"}
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with self.http.post(self.url, json=body, headers=headers) as r:
            return r.status

    async def webhook_event(self, labels: dict[str, str] | None = None) -> AlertEvent:
        before = len(self.events)
        assert await self.webhook(labels) == 200
        await eventually(lambda: len(self.events) > before, "the webhook's event")
        return self.events[-1]

    async def report_panel(self) -> PanelCapture:
        events = await self.daemon.scheduler.evaluate_now("Report")
        return events[-1].panels[0]

    async def both_panels(self) -> list[PanelCapture]:
        return [await self.report_panel(), (await self.webhook_event()).panels[0]]


async def rendered(w: Walk, attr: str) -> list[Any]:
    return [getattr(p, attr) for p in await w.both_panels()]


# key → (new value, the value observed where the table says it takes effect, expected)
Probe = Callable[[Walk], Any]
LIVE: dict[str, tuple[Any, Probe, Any]] = {}


def live(key: str, value: Any, expected: Any) -> Callable[[Probe], Probe]:
    def register(probe: Probe) -> Probe:
        LIVE[key] = (value, probe, expected)
        return probe

    return register


live("grafana.theme", "light", ["light", "light"])(lambda w: rendered(w, "theme"))
live("grafana.timezone", "Europe/Paris", ["Europe/Paris"] * 2)(lambda w: rendered(w, "timezone"))
live("capture.width", 1111, [1111, 1111])(lambda w: rendered(w, "width"))
live("capture.height", 555, [555, 555])(lambda w: rendered(w, "height"))
live("capture.scale", 2, [2, 2])(lambda w: rendered(w, "scale"))
live("capture.format", "jpeg", ["jpeg", "jpeg"])(lambda w: rendered(w, "format"))
live("capture.timeout", "7s", 7)(lambda w: w.daemon.pipeline.settings.capture_timeout)
live("capture.image_budget", "9s", 9)(lambda w: w.daemon.pipeline.settings.image_budget)
live("capture.quality", 70, 70)(lambda w: w.daemon.capture.settings.quality)
live("capture.cache_ttl", "5s", 5)(lambda w: w.daemon.capture.settings.cache_ttl)
live("capture.context_reuse", 3, 3)(lambda w: w.daemon.capture.browser.settings.context_reuse)
live("capture.recycle_after", 77, 77)(lambda w: w.daemon.capture.browser.settings.recycle_after)
live("capture.max_browser_rss_mb", 900, 900)(lambda w: w.daemon.capture.browser.settings.max_browser_rss_mb)
live("capture.liveness_grace", "7s", 7)(lambda w: w.daemon.cfg.capture.liveness_grace)  # read per probe
live("server.webhook_token", "${WEBHOOK_TOKEN}", 401)(lambda w: w.webhook(token=None))
live("server.shutdown_grace", "3s", 3)(lambda w: w.daemon.cfg.server.shutdown_grace)  # read at stop
live("delivery.max_attempts", 4, 4)(lambda w: w.daemon.outbox.max_attempts)
live("delivery.image_cache_ttl", "2h", 7200)(lambda w: w.daemon.uploader.ttl)
live("delivery.workers", 2, 2)(lambda w: w.daemon.pipeline.settings.workers)
live("delivery.shared_pictures", False, False)(lambda w: w.daemon.pipeline.settings.shared_pictures)
live("delivery.resend_interval", "1m", [60, 60])(
    lambda w: [w.daemon.scheduler.cfg.delivery.resend_interval, w.daemon.cfg.delivery.resend_interval]
)
live("delivery.recapture_on_resend", True, [True, True])(
    lambda w: [w.daemon.scheduler.cfg.delivery.recapture_on_resend, w.daemon.cfg.delivery.recapture_on_resend]
)
live("log.level", "debug", logging.DEBUG)(lambda w: logging.getLogger().level)
live("datasources", BASE["datasources"] + [{"name": "other", "url": "http://127.0.0.1:9"}], 2)(
    lambda w: len(w.daemon.scheduler.cfg.datasources)
)
live("rules", BASE["rules"] + [{"name": "Added", "source": "grafana", "every": "1h"}], True)(
    lambda w: w.daemon.scheduler.evaluator("Added") is not None
)
live("webhook.default_severity", "Critical", "Critical")(lambda w: _status(w))
live("webhook.panels", [{"dashboard": "sandbox", "panel": 2}], True)(lambda w: _panel_ids(w, lambda ids: "2" in ids))
live("webhook.panels_from_annotations", False, True)(lambda w: _panel_ids(w, lambda ids: "3" not in ids))


async def _status(w: Walk) -> str:
    return (await w.webhook_event()).status


async def _panel_ids(w: Walk, check: Callable[[list[str | None]], bool]) -> bool:
    return check([p.panel for p in (await w.webhook_event()).panels])


async def _max_body(w: Walk) -> int:
    async with w.http.post(w.url, data=b"{" + b" " * 4000 + b"}", headers={"Authorization": "Bearer hook-token"}) as r:
        return r.status


live("server.webhook_max_body", 2048, 413)(_max_body)


async def _resolved_by_timeout(w: Walk) -> bool:
    """An alert posted to the Alertmanager API without endsAt: resolved within 3 s by the timer?"""
    w.n += 1
    alert = {"labels": {"alertname": "WalkApi", "instance": f"api-{w.n}"}, "annotations": {}}
    headers = {"Authorization": "Bearer hook-token"}
    url = f"http://127.0.0.1:{w.daemon.port}/api/v2/alerts"
    async with w.http.post(url, json=[alert], headers=headers) as r:
        assert r.status == 200, await r.text()

    def ok() -> bool:
        return any(
            e.rule == "alertmanager" and e.status == "Ok" and e.labels.get("instance") == f"api-{w.n}" for e in w.events
        )

    try:
        await eventually(ok, "the Ok of an alert without endsAt", 3.0)
    except AssertionError:
        return False
    return True


live("webhook.resolve_timeout", "1s", True)(_resolved_by_timeout)


async def _page(w: Walk, *, token: str | None = "hook-token") -> tuple[int, str | None]:
    """The status page (with the token the walk may have set as status.ui_token): its HTTP status,
    and its refresh interval when it is shown."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with w.http.get(f"http://127.0.0.1:{w.daemon.port}/", headers=headers) as r:
        found = re.search(r'http-equiv="refresh" content="(\d+)"', await r.text())
        return r.status, found[1] if found else None


live("status.ui_token", "${WEBHOOK_TOKEN}", 401)(lambda w: _page_status(w))
live("status.refresh", "3s", (200, "3"))(_page)
# read at every write of the journal
live("status.pictures", 7, 7)(lambda w: w.daemon.cfg.status.pictures)
live("status.picture_bytes", 1 << 20, 1 << 20)(lambda w: w.daemon.cfg.status.picture_bytes)
live("status.deliveries", 60, 60)(lambda w: w.daemon.cfg.status.deliveries)


async def _page_status(w: Walk) -> int:
    return (await _page(w, token=None))[0]


RESTART: dict[str, Any] = {
    "flashduty.api_host": "http://127.0.0.1:10",
    "flashduty.integration_key": "${OTHER_SECRET}",
    "flashduty.app_key": "${OTHER_SECRET}",
    "flashduty.timeout": "3s",
    "flashduty.upload_rate": {"per_second": 1, "per_minute": 10},
    "flashduty.push_rate": {"per_second": 1, "per_minute": 10},
    "grafana.url": "http://127.0.0.1:11",
    "grafana.org_id": 2,
    "grafana.token": "${OTHER_SECRET}",
    "grafana.basic_auth": {"username": "viewer", "password": "${OTHER_SECRET}"},
    "capture.browser_path": "/bin/sh",
    "capture.concurrency": 3,
    "server.listen": "127.0.0.1:1",
    "log.format": "json",
    "state_dir": "${STATE_DIR}/elsewhere",
}


@pytest.fixture
async def walk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> AsyncIterator[Walk]:
    # the walk reloads explicitly, one key at a time: the file watcher would race it (and try
    # the same file again); the rule_files test relies on the watcher alone
    watch = 0.2 if request.node.get_closest_marker("watcher") else 3600.0
    boxes: Sandboxes = await start_sandboxes(query_delay=0.05)
    env = {
        **boxes.env(),
        "CHROMIUM": CHROMIUM or "",
        "STATE_DIR": str(tmp_path / "state"),
        "WEBHOOK_TOKEN": "hook-token",
        "OTHER_SECRET": "another-secret-value",
    }
    for k, v in env.items():  # a reload reads the environment, like the real process
        monkeypatch.setenv(k, v)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(BASE))
    events: list[AlertEvent] = []
    loggers = [logging.getLogger(n) for n in ("", "apscheduler", "aiohttp.access", "asyncio")]
    levels = [lg.level for lg in loggers]  # log.level is applied live: put the test process's back
    daemon = Daemon(
        load_config(path), options=Options(config_path=str(path), watch_interval=watch, on_event=events.append)
    )
    await daemon.start()
    w = Walk(daemon, path, events, tmp_path)
    try:
        async with aiohttp.ClientSession() as http:
            w.http = http
            yield w
    finally:
        await daemon.stop()
        await boxes.close()
        for lg, lvl in zip(loggers, levels, strict=True):
            lg.setLevel(lvl)


def reloads(w: Walk, outcome: str) -> float:
    value = w.daemon.metrics.registry.get_sample_value("flashduty_sidecar_config_reloads_total", {"outcome": outcome})
    return value or 0.0


async def observe(probe: Probe, w: Walk) -> Any:
    value = probe(w)
    return await value if hasattr(value, "__await__") else value


async def test_every_key_applies_live_or_is_refused_whole(walk: Walk) -> None:
    w = walk
    table = doc_table()
    assert set(LIVE) | set(RESTART) | {"rule_files"} == set(table), "the walk covers every row of the table"
    for key, applies in table.items():
        if key == "rule_files":
            continue
        if applies == "live":
            value, probe, expected = LIVE[key]
            before = await observe(probe, w)
            assert before != expected, f"{key}: the probe sees the new value before the reload"
            set_key(w.raw, key, value)
            assert await w.reload_with(w.raw), f"{key}: reload refused"
            assert await observe(probe, w) == expected, f"{key}: not applied where the table says"
        else:
            refused_before = reloads(w, "restart_required")
            running = w.daemon.cfg
            new = copy.deepcopy(w.raw)
            if key == "grafana.basic_auth":
                del new["grafana"]["token"]
            set_key(new, key, RESTART[key])
            assert not await w.reload_with(new), f"{key}: a restart-only change was applied"
            assert w.daemon.cfg is running, f"{key}: the running config was replaced"
            assert reloads(w, "restart_required") == refused_before + 1
    # a refused reload leaves the file as the user wrote it: put back what runs
    assert await w.reload_with(w.raw)


@pytest.mark.watcher
async def test_rule_files_are_watched_and_reloaded(walk: Walk) -> None:
    w = walk
    rules = w.tmp / "alerts.yml"
    rules.write_text(RULE_FILE.format(name="FromFile"))
    w.raw["rule_files"] = ["alerts.yml"]
    w.path.write_text(yaml.safe_dump(w.raw))  # the watcher notices the config file
    await eventually(lambda: w.daemon.scheduler.evaluator("FromFile") is not None, "the rule file's rule", 10)
    ok_before = reloads(w, "ok")
    rules.write_text(RULE_FILE.format(name="Renamed"))  # only the rule file changes
    await eventually(lambda: w.daemon.scheduler.evaluator("Renamed") is not None, "the edited rule file", 10)
    assert w.daemon.scheduler.evaluator("FromFile") is None
    assert reloads(w, "ok") == ok_before + 1
