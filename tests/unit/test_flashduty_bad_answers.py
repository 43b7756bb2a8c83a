"""Flashduty, or a proxy in front of it, answering something that is not Flashduty's envelope: an
nginx error page, a captive portal's HTML, JSON cut short, a 2xx without ``data``. Each is a
retryable error whose message says what came back, the delivery retries it with one WARNING line,
and the next attempt delivers. The sandbox's fault injection plays the proxy (no mocks)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from sidecar.flashduty.client import FlashdutyClient
from sidecar.flashduty.errors import FlashdutyError
from sidecar.flashduty.payload import build_payload
from sidecar.metrics import Metrics
from sidecar_sandbox.flashduty import FlashdutySandbox
from tests.support.delivery import event, harness
from tests.unit.test_flashduty_client import KEY, PNG, an_event, cfg, png

FAULTS: list[tuple[dict[str, Any], str]] = [
    ({"kind": "html", "status": 502}, "HTTP 502: an HTML page"),
    ({"kind": "html", "status": 200}, "HTTP 200 answer is not Flashduty's: an HTML page"),
    ({"kind": "truncated"}, "HTTP 200 answer is not Flashduty's: invalid or truncated JSON"),
    ({"kind": "no_data"}, 'HTTP 200 answer is not Flashduty\'s: a JSON object without "data"'),
]


@pytest.fixture
async def client() -> AsyncIterator[tuple[FlashdutySandbox, FlashdutyClient]]:
    sb = FlashdutySandbox(integration_keys=(KEY,))
    async with sb.serve() as url:
        c = FlashdutyClient(cfg(url, app_key=None), metrics=Metrics())
        yield sb, c
        await c.close()


@pytest.mark.parametrize(("fault", "message"), FAULTS, ids=[f[0]["kind"] + str(f[0].get("status", "")) for f in FAULTS])
async def test_a_non_flashduty_answer_is_retryable_and_says_what_it_was(
    client: tuple[FlashdutySandbox, FlashdutyClient], fault: dict[str, Any], message: str
) -> None:
    sb, c = client
    for endpoint in ("upload", "push"):
        sb.add_fault(endpoint=endpoint, count=1, **fault)
        with pytest.raises(FlashdutyError) as info:
            if endpoint == "upload":
                await c.upload_image(png(1), content_type=PNG)
            else:
                await c.push_alert(build_payload(an_event(), []))
        e = info.value
        assert e.retryable and str(e).startswith(f"{endpoint}: {message}"), str(e)
        assert "\n" not in str(e) and "<html" not in str(e)
    assert await c.upload_image(png(1), content_type=PNG)
    assert await c.push_alert(build_payload(an_event(), []))


@pytest.mark.parametrize(("fault", "message"), FAULTS, ids=[f[0]["kind"] + str(f[0].get("status", "")) for f in FAULTS])
async def test_the_delivery_retries_with_one_clear_line_and_delivers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, fault: dict[str, Any], message: str
) -> None:
    caplog.set_level(logging.INFO, logger="sidecar.delivery")
    async with harness(tmp_path) as h:
        h.sandbox.add_fault(endpoint="push", count=1, **fault)
        e = event(1)
        h.put(e)
        await h.drained()
        assert [x["event_status"] for x in h.events(e.alert_key)] == ["Critical"]
    lines = [r for r in caplog.records if r.name == "sidecar.delivery" and hasattr(r, "outcome")]
    assert [r.outcome for r in lines] == ["retry", "delivered"]
    assert lines[0].levelno == logging.WARNING and message in lines[0].getMessage(), lines[0].getMessage()
