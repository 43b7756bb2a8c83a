"""Startup reconciliation against the Flashduty sandbox (real client, loopback), and the
``alerts`` CLI table."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from sidecar.config import FlashdutyConfig
from sidecar.delivery.alerts_table import format_alerts
from sidecar.delivery.outbox import Outbox
from sidecar.delivery.reconcile import reconcile
from sidecar.flashduty.client import FlashdutyClient
from sidecar.flashduty.errors import FlashdutyAuthError
from sidecar.flashduty.payload import build_payload
from sidecar.metrics import Metrics
from sidecar.model import AlertEvent, EventStatus, alert_key
from sidecar_sandbox.flashduty import FlashdutySandbox

KEY = "fd-int-reconcile-5ecret-0123456789"
APP_KEY = "fd-app-reconcile-5ecret-abcdef"


def ev(rule: str, instance: str, status: EventStatus = "Critical", *, key: str | None = None) -> AlertEvent:
    labels = {"alertname": rule, "instance": instance}
    return AlertEvent(
        alert_key=key or alert_key(rule, labels),
        rule=rule,
        status=status,
        title=f"{rule} on {instance}",
        labels=labels,
    )


@pytest.fixture
async def sandbox() -> AsyncIterator[tuple[FlashdutySandbox, str]]:
    sb = FlashdutySandbox(integration_keys=(KEY,), app_keys=(APP_KEY,))
    async with sb.serve() as url:
        yield sb, url


@pytest.fixture
async def client(sandbox: tuple[FlashdutySandbox, str]) -> AsyncIterator[FlashdutyClient]:
    cfg = FlashdutyConfig.model_validate({"api_host": sandbox[1], "integration_key": KEY, "app_key": APP_KEY})
    c = FlashdutyClient(cfg, metrics=Metrics())
    yield c
    await c.close()


@pytest.fixture
def outbox(tmp_path: Path) -> AsyncIterator[Outbox]:
    ob = Outbox.in_dir(tmp_path)
    yield ob
    ob.close()


def seed(sb: FlashdutySandbox, e: AlertEvent) -> None:
    sb.push_event(build_payload(e, []))


def active(sb: FlashdutySandbox) -> dict[str, str]:
    """title → alert_key of every open alert."""
    return {a.title: a.alert_key for a in sb.alerts if a.active}


async def test_reconcile_resolves_ours_that_stopped_firing(
    sandbox: tuple[FlashdutySandbox, str],
    client: FlashdutyClient,
    outbox: Outbox,
    caplog: pytest.LogCaptureFixture,
) -> None:
    sb, _ = sandbox
    firing = ev("HighErrorRate", "a")
    stopped = ev("HighErrorRate", "b")
    webhook = ev("webhook", "c")
    foreign_key = ev("HighErrorRate", "d", key="legacy-0001")  # not keyed by us: never guessed at
    closed = ev("HighErrorRate", "e")
    for e in (firing, stopped, webhook, foreign_key, closed):
        seed(sb, e)
    seed(sb, ev("HighErrorRate", "e", "Ok"))
    sb.push_event({"title_rule": "not ours", "event_status": "Warning", "alert_key": "x1", "labels": {"a": "b"}})

    caplog.set_level(logging.INFO, logger="sidecar.delivery.reconcile")
    report = await reconcile(client, outbox, firing_keys={firing.alert_key}, now=time.time(), keep_rules={"webhook"})
    assert (report.active, report.ours, report.still_firing, report.kept, report.resolved) == (5, 4, 1, 1, 1)
    [conflict] = report.conflicts
    assert "HighErrorRate on d" in conflict and "not confirmed" in conflict
    assert any("reconcile conflict" in r.getMessage() for r in caplog.records)

    item = outbox.claim()
    assert item is not None and outbox.claim() is None
    assert item.event.alert_key == stopped.alert_key and item.event.status == "Ok"
    assert item.event.title == "HighErrorRate on b" and item.event.labels["sidecar_rule"] == "HighErrorRate"
    # what the pipeline would push closes exactly that alert
    await client.push_alert(build_payload(item.event, []))
    assert set(active(sb)) == {"HighErrorRate on a", "webhook on c", "HighErrorRate on d", "not ours"}


async def test_colliding_recomputed_keys_are_reported_and_only_the_real_one_closed(
    sandbox: tuple[FlashdutySandbox, str], client: FlashdutyClient, outbox: Outbox
) -> None:
    sb, _ = sandbox
    real = ev("Disk", "x")
    twin = ev("Disk", "x", key="copied-elsewhere")  # same labels, another key
    seed(sb, real)
    seed(sb, twin)
    report = await reconcile(client, outbox, firing_keys=set(), now=time.time())
    assert report.resolved == 1
    assert any("share the recomputed key" in c for c in report.conflicts)
    assert any("not confirmed" in c for c in report.conflicts)
    assert outbox.pending_count() == 1


async def test_reconcile_lists_in_31_day_slices(
    sandbox: tuple[FlashdutySandbox, str], client: FlashdutyClient, outbox: Outbox
) -> None:
    sb, _ = sandbox
    seed(sb, ev("Slice", "a"))
    report = await reconcile(client, outbox, firing_keys=set(), now=time.time(), lookback_days=45)
    assert report.resolved == 1
    assert sb.stats["list"].processed == 4  # two slices to list, two to verify the keys


async def test_reconcile_without_app_key_raises_a_clear_error(
    sandbox: tuple[FlashdutySandbox, str], outbox: Outbox
) -> None:
    cfg = FlashdutyConfig.model_validate({"api_host": sandbox[1], "integration_key": KEY})
    c = FlashdutyClient(cfg, metrics=Metrics())
    try:
        with pytest.raises(FlashdutyAuthError, match="app_key is not configured"):
            await reconcile(c, outbox, firing_keys=set(), now=time.time())
    finally:
        await c.close()
    assert outbox.pending_count() == 0


# ---------------------------------------------------------------------------- alerts table


ITEMS: list[dict[str, Any]] = [
    {
        "alert_id": "65f0c0ffee0000000000000a",
        "title": "High error rate on web",
        "alert_severity": "Critical",
        "alert_status": "Critical",
        "start_time": 1_750_000_000,
        "labels": {"sidecar_rule": "HighErrorRate", "service": "web", "team": "core"},
    },
    {
        "alert_id": "65f0c0ffee0000000000000b",
        "title": "Disk almost full " + "x" * 100,
        "alert_severity": "Warning",
        "alert_status": "Ok",
        "start_time": 1_750_003_600,
        "labels": {},
    },
]


def test_table_is_aligned_and_readable() -> None:
    lines = format_alerts(ITEMS, as_json=False).splitlines()
    assert lines[0].split() == ["TIME", "(UTC)", "STATUS", "TITLE", "RULE", "LABELS", "ALERT", "ID"]
    assert lines[1].startswith("2025-06-15 15:06:40  Critical ")
    assert "HighErrorRate" in lines[1] and "service=web, team=core" in lines[1]
    assert "sidecar_rule" not in lines[1]
    assert "Ok/Warning" in lines[2] and "…" in lines[2]  # resolved Warning, long title clipped
    starts = {line.index("65f0c0ffee") for line in lines[1:]}
    assert len(starts) == 1  # the last column lines up
    assert lines[0].index("ALERT ID") == starts.pop()


def test_json_and_empty() -> None:
    assert json.loads(format_alerts(ITEMS, as_json=True)) == ITEMS
    assert format_alerts([], as_json=False) == "no alerts"
    assert json.loads(format_alerts([], as_json=True)) == []
