"""The client's pacing, judged by the sandbox's own rolling-window counters (real HTTP, real time).

Both sides run with ``time_scale=20``: "5/s and 50/min" becomes "5 per 50 ms and 50 per 3 s",
so 120 uploads take about 6.5 s instead of two minutes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from sidecar.config import FlashdutyConfig
from sidecar.flashduty.client import FlashdutyClient
from sidecar.metrics import Metrics
from sidecar_sandbox.flashduty import FlashdutySandbox

KEY = "fd-int-5ecret-limits-0123456789"
SCALE = 20.0
PNG = "image/png"

pytestmark = pytest.mark.slow


def png(n: int) -> bytes:
    return b"\x89PNG\r\n\x1a\n" + n.to_bytes(8, "big") + b"\0" * 32


def push_body(n: int, status: str = "Warning") -> dict[str, Any]:
    return {"title_rule": f"alert {n}", "event_status": status, "alert_key": f"k{n}", "labels": {"n": str(n)}}


@pytest.fixture
async def env() -> AsyncIterator[tuple[FlashdutySandbox, FlashdutyClient]]:
    sb = FlashdutySandbox(integration_keys=(KEY,), time_scale=SCALE)
    async with sb.serve() as url:
        cfg = FlashdutyConfig.model_validate({"api_host": url, "integration_key": KEY, "timeout": "5s"})
        client = FlashdutyClient(cfg, metrics=Metrics(), time_scale=SCALE)
        try:
            yield sb, client
        finally:
            await client.close()


def scope(sb: FlashdutySandbox, endpoint: str) -> dict[str, int]:
    (only,) = sb.state()["limits"][endpoint]["scopes"].values()
    return dict(only)


async def test_120_uploads_never_exceed_any_window_and_get_no_429(
    env: tuple[FlashdutySandbox, FlashdutyClient],
) -> None:
    sb, client = env
    started = time.monotonic()
    keys = await asyncio.gather(*(client.upload_image(png(i), content_type=PNG, priority=i % 4) for i in range(120)))
    elapsed = time.monotonic() - started
    assert len(set(keys)) == 120
    seen = scope(sb, "upload")
    assert seen["accepted"] == 120 and seen["rejected"] == 0
    assert seen["max_accepted_in_second"] <= 5 and seen["max_accepted_in_minute"] <= 50
    # nothing even reached the server's limiter over the limit
    assert seen["max_requests_in_second"] <= 5 and seen["max_requests_in_minute"] <= 50
    assert sb.state()["http_429"]["upload"] == 0
    # and the quota was used, not wasted: 50 + 50 + 20 needs two full 3 s windows, plus latency
    assert seen["max_accepted_in_second"] >= 4 and seen["max_accepted_in_minute"] == 50
    assert 6.0 <= elapsed < 10.0, elapsed


async def test_push_burst_and_an_ok_push_never_wait_behind_uploads(
    env: tuple[FlashdutySandbox, FlashdutyClient],
) -> None:
    sb, client = env
    uploads = [
        asyncio.ensure_future(client.upload_image(png(1000 + i), content_type=PNG)) for i in range(60)
    ]  # > 50: queued
    await asyncio.sleep(0.2)
    assert client.limiters["upload"].waiting > 0
    started = time.monotonic()
    await client.push_alert(push_body(0, "Critical"))
    await client.push_alert(push_body(0, "Ok"))
    assert time.monotonic() - started < 1.5, "pushes have their own quota"  # uploads take ≥ 3 s more
    await asyncio.gather(*(client.push_alert(push_body(n)) for n in range(1, 251)))
    for task in uploads:
        task.cancel()
    await asyncio.gather(*uploads, return_exceptions=True)
    seen = scope(sb, "push")
    assert seen["accepted"] == 252 and seen["rejected"] == 0
    assert seen["max_requests_in_second"] <= 100 and seen["max_requests_in_minute"] <= 1000
    assert sb.state()["http_429"] == {"upload": 0, "push": 0, "list": 0}
