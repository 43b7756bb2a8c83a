"""``POST /api/v2/alerts`` and ``GET /api/v2/status``: Alertmanager's answers and semantics.

The handlers are served over loopback HTTP; time is a settable clock, so ``endsAt`` and
``resolve_timeout`` are exact. What each answer must be comes from Alertmanager's
``api/v2/api.go`` (and is checked against the real binary in
``tests/integration/test_alertmanager_api.py``).
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from sidecar.config import Config
from sidecar.ingest.am_api import make_alerts_api_handlers
from sidecar.ingest.am_receiver import AlertsApiReceiver
from sidecar.metrics import Metrics
from sidecar.model import AlertEvent, alert_key
from sidecar.rules.state import RuleState
from sidecar.rules.templates import TemplateEngine

T0 = 1_700_000_000.0
TOKEN = "api-token"
LABELS = {"alertname": "DiskFull", "host": "db-1", "severity": "warning"}


def rfc3339(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")


class Api:
    def __init__(self, tmp: Path, **cfg: Any) -> None:
        self.tmp = tmp
        self.now = T0
        self.events: list[AlertEvent] = []
        self.fail = False
        self.cfg = Config.model_validate({"flashduty": {"integration_key": "k"}, **cfg})
        self.metrics = Metrics()
        self.state = RuleState.in_dir(tmp)
        self.receiver = self.new_receiver()
        post, status = make_alerts_api_handlers(
            cfg=lambda: self.cfg, receiver=self.receiver, metrics=self.metrics, clock=lambda: self.now
        )
        self.app = web.Application()
        self.app.router.add_post("/api/v2/alerts", post)
        self.app.router.add_get("/api/v2/status", status)
        self.url = ""
        self.http: aiohttp.ClientSession
        self.headers: dict[str, str] = {"Content-Type": "application/json"}

    def sink(self, event: AlertEvent) -> None:
        if self.fail:
            raise OSError("disk full")
        self.events.append(event)

    def new_receiver(self) -> AlertsApiReceiver:
        return AlertsApiReceiver(cfg=lambda: self.cfg, sink=self.sink, state=self.state, templates=TemplateEngine())

    async def post(self, body: Any, headers: dict[str, str] | None = None) -> tuple[int, Any]:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        async with self.http.post(self.url + "/api/v2/alerts", data=data, headers=headers or self.headers) as r:
            text = await r.text()
            return r.status, (json.loads(text) if text else "")

    def statuses(self) -> list[str]:
        return [e.status for e in self.events]

    def outcome(self, outcome: str) -> float:
        v = self.metrics.registry.get_sample_value("flashduty_sidecar_alerts_api_requests_total", {"outcome": outcome})
        return v or 0.0


@pytest.fixture
async def make_api(tmp_path: Path) -> AsyncIterator[Any]:
    runners: list[web.AppRunner] = []
    apis: list[Api] = []

    async def make(**cfg: Any) -> Api:
        api = Api(tmp_path, **cfg)
        runner = web.AppRunner(api.app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        runners.append(runner)
        apis.append(api)
        api.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
        api.http = session
        return api

    async with aiohttp.ClientSession() as session:
        yield make
    for runner in runners:
        await runner.cleanup()
    for api in apis:
        api.state.close()


def alert(**extra: Any) -> dict[str, Any]:
    return {"labels": LABELS, "annotations": {"summary": "Disk on db-1 is full"}, **extra}


async def test_firing_is_sent_once_then_resent_then_resolved(make_api: Any) -> None:
    api = await make_api(delivery={"resend_interval": "10m"})
    starts = rfc3339(T0 - 30)
    for i in range(3):  # Prometheus re-sends every evaluation with endsAt a few intervals ahead
        api.now = T0 + i * 15
        assert await api.post([alert(startsAt=starts, endsAt=rfc3339(api.now + 60))]) == (200, "")
    assert api.statuses() == ["Warning"]
    first = api.events[0]
    assert first.rule == "alertmanager" and first.alert_key == alert_key("alertmanager", LABELS)
    assert first.title == "Disk on db-1 is full" and first.active_at == T0 - 30
    api.now = T0 + 600
    assert await api.post([alert(startsAt=starts, endsAt=rfc3339(api.now + 60))]) == (200, "")
    assert api.statuses() == ["Warning", "Warning"]  # resend_interval passed
    assert api.events[1].panels == ()  # re-sends carry pictures only with recapture_on_resend
    api.now = T0 + 620
    assert await api.post([alert(startsAt=starts, endsAt=rfc3339(T0 + 610))]) == (200, "")
    assert api.statuses() == ["Warning", "Warning", "Ok"]
    assert api.events[-1].resolved_at == T0 + 610
    assert await api.post([alert(startsAt=starts, endsAt=rfc3339(T0 + 610))]) == (200, "")  # re-sent resolved
    assert api.statuses() == ["Warning", "Warning", "Ok"]
    assert api.outcome("ok") == 6


async def test_an_alert_whose_endsat_passes_resolves_without_a_post_and_after_a_restart(make_api: Any) -> None:
    api = await make_api()
    assert await api.post([alert(endsAt=rfc3339(T0 + 20))]) == (200, "")
    assert api.receiver.expire(T0 + 19.9) == 0
    # the sidecar restarts: a new receiver on the same state file still knows the alert
    api.state.close()
    api.state = RuleState.in_dir(api.tmp)
    restarted = api.new_receiver()
    assert restarted.expire(T0 + 20) == 1
    assert api.statuses() == ["Warning", "Ok"]
    assert api.events[1].resolved_at == T0 + 20 and api.events[1].alert_key == api.events[0].alert_key
    assert restarted.expire(T0 + 100) == 0  # once


async def test_without_endsat_it_resolves_after_resolve_timeout_unless_sent_again(make_api: Any) -> None:
    api = await make_api(webhook={"resolve_timeout": "1m"})
    assert await api.post([alert()]) == (200, "")
    api.now = T0 + 50
    assert await api.post([alert()]) == (200, "")  # sent again: the timeout starts over
    assert api.receiver.expire(T0 + 100) == 0
    assert api.receiver.expire(T0 + 110) == 1
    assert api.statuses() == ["Warning", "Ok"]


async def test_an_explicit_endsat_beats_a_later_timeout(make_api: Any) -> None:
    api = await make_api()
    assert await api.post([alert(startsAt=rfc3339(T0), endsAt=rfc3339(T0 + 600))]) == (200, "")
    api.now = T0 + 10
    assert await api.post([alert()]) == (200, "")  # overlaps; would end at T0+310, the explicit end is later
    assert api.receiver.expire(T0 + 400) == 0
    assert api.receiver.expire(T0 + 600) == 1


async def test_without_overlap_the_new_alert_replaces_the_stored_one(make_api: Any) -> None:
    api = await make_api()
    # no startsAt: it becomes endsAt (postAlertsHandler), so [T0+600, T0+600] does not overlap
    # with a later POST without times, which replaces it and ends after resolve_timeout
    assert await api.post([alert(endsAt=rfc3339(T0 + 600))]) == (200, "")
    api.now = T0 + 10
    assert await api.post([alert()]) == (200, "")
    assert api.receiver.expire(T0 + 310) == 1
    assert api.statuses() == ["Warning", "Ok"]


async def test_resolved_first_sends_ok_once_and_a_new_start_fires_again(make_api: Any) -> None:
    api = await make_api()
    past = rfc3339(T0 - 1)
    assert await api.post([alert(startsAt=rfc3339(T0 - 60), endsAt=past)]) == (200, "")
    assert api.statuses() == ["Ok"]  # lost state: a superfluous Ok beats an alert left open
    assert await api.post([alert(startsAt=rfc3339(T0 - 60), endsAt=past)]) == (200, "")
    assert api.statuses() == ["Ok"]
    api.now = T0 + 30
    assert await api.post([alert(startsAt=rfc3339(T0 + 20), endsAt=rfc3339(T0 + 90))]) == (200, "")
    assert api.statuses() == ["Ok", "Warning"]
    assert api.events[-1].active_at == T0 + 20


async def test_labels_identify_the_alert_and_severity_comes_from_them(make_api: Any) -> None:
    api = await make_api(webhook={"default_severity": "Info"})
    other = {**LABELS, "host": "db-2", "severity": "CRITICAL"}
    body = [alert(), {"labels": other}, {"labels": {"alertname": "NoSeverity", "empty": ""}}]
    assert await api.post(body) == (200, "")
    assert api.statuses() == ["Warning", "Critical", "Info"]
    assert api.events[2].labels == {"alertname": "NoSeverity", "sidecar_rule": "alertmanager"}  # empty label dropped
    assert len({e.alert_key for e in api.events}) == 3


@pytest.mark.parametrize(
    ("body", "status", "answer"),
    [
        (b"", 422, {"code": 602, "message": "alerts in body is required"}),
        ([{"annotations": {}}], 422, {"code": 602, "message": "0.labels in body is required"}),
        ([{"labels": {"a": "b"}, "generatorURL": "::not a url"}], 422, None),
        (b"{", 400, None),
        ({"labels": {"a": "b"}}, 400, None),
        ([{"labels": {"a": 1}}], 400, None),
        ([{"labels": {"a": "b"}, "startsAt": "yesterday"}], 400, None),
        ([{"labels": {}}], 400, "at least one label pair required"),
        ([{"labels": {"a": ""}}], 400, "at least one label pair required"),
        ([{"labels": {"": "x"}}], 400, 'invalid label set: invalid name ""'),
        ([{"labels": {"a": "b"}, "startsAt": rfc3339(T0), "endsAt": rfc3339(T0 - 1)}], 400, None),
    ],
)
async def test_refused_bodies_are_answered_as_alertmanager_answers(
    make_api: Any, body: Any, status: int, answer: Any
) -> None:
    api = await make_api()
    got_status, got = await api.post(body)
    assert got_status == status
    if answer is not None:
        assert got == answer
    elif status == 400 and isinstance(got, dict):
        assert got["code"] == 400 and got["message"].startswith('parsing alerts body from "" failed, because ')
    assert api.events == []


async def test_valid_alerts_of_a_partly_invalid_body_are_kept(make_api: Any) -> None:
    api = await make_api()
    ends_before = {"labels": {"a": "b"}, "startsAt": rfc3339(T0), "endsAt": rfc3339(T0 - 1)}
    status, answer = await api.post([alert(), ends_before, {"labels": {}}])
    assert (status, answer) == (400, "start time must be before end time; at least one label pair required")
    assert api.statuses() == ["Warning"]


async def test_auth_content_type_and_size(make_api: Any) -> None:
    api = await make_api(server={"webhook_token": TOKEN, "webhook_max_body": 2048})
    assert (await api.post([alert()]))[0] == 401
    bearer = {"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"}
    basic = base64.b64encode(f"grafana:{TOKEN}".encode()).decode()
    assert await api.post([alert()], {**bearer, "Authorization": f"Basic {basic}"}) == (200, "")
    wrong = base64.b64encode(b"grafana:nope").decode()
    assert (await api.post([alert()], {**bearer, "Authorization": f"Basic {wrong}"}))[0] == 401
    status, answer = await api.post([alert()], {"Authorization": f"Bearer {TOKEN}", "Content-Type": "text/plain"})
    assert status == 415 and answer["message"].startswith('unsupported media type "text/plain"')
    big = [alert(annotations={"x": "y" * 4000})]
    assert (await api.post(big, bearer))[0] == 413
    assert (await api.post([alert()], bearer)) == (200, "")
    assert api.outcome("unauthorized") == 2 and api.outcome("too_large") == 1
    async with api.http.get(api.url + "/api/v2/status") as r:
        assert r.status == 401


async def test_storage_failure_is_500_and_nothing_is_recorded(make_api: Any) -> None:
    api = await make_api()
    api.fail = True
    status, answer = await api.post([alert()])
    assert status == 500 and "could not store" in answer
    api.fail = False
    assert await api.post([alert()]) == (200, "")  # the failed one was not recorded as sent
    assert api.statuses() == ["Warning"]


async def test_status_answers_what_alertmanager_status_requires(make_api: Any) -> None:
    api = await make_api()
    async with api.http.get(api.url + "/api/v2/status") as r:
        assert r.status == 200
        doc = await r.json()
    assert {"cluster", "versionInfo", "config", "uptime"} <= set(doc)
    assert doc["cluster"]["status"] == "disabled"
    assert {"version", "revision", "branch", "buildUser", "buildDate", "goVersion"} <= set(doc["versionInfo"])
    assert datetime.fromisoformat(doc["uptime"]).tzinfo is not None
