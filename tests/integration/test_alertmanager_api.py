"""The sidecar's ``POST /api/v2/alerts`` answers every body as the real Alertmanager does.

Debian's ``prometheus-alertmanager`` (0.25) and the sidecar's handler (on loopback) get the same
bodies; their status codes must be equal, and so must the reasons of per-alert refusals (the
JSON strings of ``postAlertsHandler``). Label names are left out: Alertmanager 0.25 checks the
classic ``[a-zA-Z_][a-zA-Z0-9_]*`` form, newer ones (and the sidecar) accept any UTF-8 name.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from sidecar.config import Config
from sidecar.ingest.am_api import make_alerts_api_handlers
from sidecar.ingest.am_receiver import AlertsApiReceiver
from sidecar.metrics import Metrics
from sidecar.model import AlertEvent
from sidecar.rules.state import RuleState
from sidecar.rules.templates import TemplateEngine
from tests.support.procs import ALERTMANAGER, alertmanager, have

pytestmark = [
    pytest.mark.alertmanager,
    pytest.mark.skipif(not have(ALERTMANAGER), reason=f"{ALERTMANAGER} not installed"),
]

NOW = datetime.now(UTC)
T = (NOW - timedelta(minutes=1)).isoformat()
EARLIER = (NOW - timedelta(minutes=2)).isoformat()
A = {"alertname": "Diff"}

BODIES: list[tuple[str, Any, str]] = [
    ("one alert", [{"labels": A}], "application/json"),
    ("empty list", [], "application/json"),
    ("null", None, "application/json"),
    ("not JSON", b"{", "application/json"),
    ("an object", {"labels": A}, "application/json"),
    ("not an alert", [1], "application/json"),
    ("no labels", [{"annotations": {"a": "b"}}], "application/json"),
    ("labels null", [{"labels": None}], "application/json"),
    ("empty labels", [{"labels": {}}], "application/json"),
    ("only empty values", [{"labels": {"alertname": ""}}], "application/json"),
    ("a number label", [{"labels": {"alertname": 1}}], "application/json"),
    ("a number annotation", [{"labels": A, "annotations": {"x": 1}}], "application/json"),
    ("bad time", [{"labels": A, "startsAt": "yesterday"}], "application/json"),
    ("empty startsAt", [{"labels": A, "startsAt": ""}], "application/json"),
    ("null startsAt", [{"labels": A, "startsAt": None}], "application/json"),
    ("ends before start", [{"labels": A, "startsAt": T, "endsAt": EARLIER}], "application/json"),
    ("resolved", [{"labels": A, "startsAt": EARLIER, "endsAt": T}], "application/json"),
    ("generatorURL not a URI", [{"labels": A, "generatorURL": "::not a url"}], "application/json"),
    ("generatorURL relative", [{"labels": A, "generatorURL": "relative/path"}], "application/json"),
    ("generatorURL absolute", [{"labels": A, "generatorURL": "http://prom:9090/graph"}], "application/json"),
    ("generatorURL empty", [{"labels": A, "generatorURL": ""}], "application/json"),
    ("extra fields", [{"labels": A, "status": "firing", "fingerprint": "x"}], "application/json"),
    ("partly invalid", [{"labels": A}, {"labels": A, "startsAt": T, "endsAt": EARLIER}, {"labels": {}}], None),
    ("empty body", b"", "application/json"),
    ("form content type", [{"labels": A}], "application/x-www-form-urlencoded"),
    ("json with charset", [{"labels": A}], "application/json; charset=utf-8"),
]


@pytest.fixture
async def endpoints(tmp_path: Path) -> AsyncIterator[tuple[str, str, aiohttp.ClientSession]]:
    events: list[AlertEvent] = []
    cfg = Config.model_validate({"flashduty": {"integration_key": "k"}})
    state = RuleState.in_dir(tmp_path / "state")
    receiver = AlertsApiReceiver(cfg=lambda: cfg, sink=events.append, state=state, templates=TemplateEngine())
    post, status = make_alerts_api_handlers(cfg=lambda: cfg, receiver=receiver, metrics=Metrics())
    app = web.Application()
    app.router.add_post("/api/v2/alerts", post)
    app.router.add_get("/api/v2/status", status)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    ours = f"http://127.0.0.1:{runner.addresses[0][1]}"
    config = "route: {receiver: r}\nreceivers: [{name: r}]\n"
    try:
        async with alertmanager(tmp_path / "am", config_yaml=config) as am, aiohttp.ClientSession() as http:
            yield am, ours, http
    finally:
        await runner.cleanup()
        state.close()


async def send(http: aiohttp.ClientSession, url: str, body: Any, content_type: str | None) -> tuple[int, str]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {"Content-Type": content_type or "application/json"}
    async with http.post(url + "/api/v2/alerts", data=data, headers=headers) as r:
        return r.status, await r.text()


async def test_every_body_gets_alertmanagers_answer(endpoints: tuple[str, str, aiohttp.ClientSession]) -> None:
    am, ours, http = endpoints
    differences = []
    for name, body, content_type in BODIES:
        theirs_status, theirs = await send(http, am, body, content_type)
        our_status, our = await send(http, ours, body, content_type)
        if our_status != theirs_status:
            differences.append(f"{name}: Alertmanager {theirs_status} {theirs!r}, sidecar {our_status} {our!r}")
        elif theirs.startswith('"') and json.loads(our) != json.loads(theirs):  # a per-alert reason
            differences.append(f"{name}: Alertmanager {theirs!r}, sidecar {our!r}")
    assert differences == []


async def test_status_has_the_fields_alertmanager_has(endpoints: tuple[str, str, aiohttp.ClientSession]) -> None:
    am, ours, http = endpoints
    docs = []
    for url in (am, ours):
        async with http.get(url + "/api/v2/status") as r:
            assert r.status == 200
            docs.append(await r.json())
    theirs, our = docs
    assert set(our) == set(theirs) == {"cluster", "versionInfo", "config", "uptime"}
    assert set(our["versionInfo"]) == set(theirs["versionInfo"])
    assert our["cluster"]["status"] == theirs["cluster"]["status"] == "disabled"
