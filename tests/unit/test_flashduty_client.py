"""FlashdutyClient against the Flashduty sandbox on a real loopback port (no mocks)."""

from __future__ import annotations

import asyncio
import email.utils
import logging
import socket
import time
import traceback
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from sidecar.config import FlashdutyConfig, RateLimit
from sidecar.flashduty.client import FlashdutyClient
from sidecar.flashduty.errors import (
    FlashdutyAuthError,
    FlashdutyConnectionError,
    FlashdutyError,
    FlashdutyRateLimited,
    FlashdutyTimeout,
)
from sidecar.flashduty.payload import ImageRef, build_payload
from sidecar.metrics import Metrics
from sidecar.model import AlertEvent, alert_key
from sidecar_sandbox.flashduty import FlashdutySandbox
from tests.support.recorder import upload_recorder
from tests.support.wait import eventually

KEY = "fd-int-5ecret-c1ient-0123456789"
APP_KEY = "fd-app-5ecret-c1ient-abcdef"
DAY = 86400
PNG = "image/png"


def png(n: int) -> bytes:
    """Distinct 'PNG' bytes (the sandbox, like Flashduty, sniffs the magic number)."""
    return b"\x89PNG\r\n\x1a\n" + n.to_bytes(8, "big") + b"\0" * 32


def cfg(url: str, *, key: str = KEY, app_key: str | None = APP_KEY, timeout: float = 3.0) -> FlashdutyConfig:
    return FlashdutyConfig.model_validate(
        {"api_host": url, "integration_key": key, "app_key": app_key, "timeout": f"{round(timeout * 1000)}ms"}
    )


@pytest.fixture
async def sandbox() -> AsyncIterator[tuple[FlashdutySandbox, str]]:
    sb = FlashdutySandbox(integration_keys=(KEY,), app_keys=(APP_KEY,))
    async with sb.serve() as url:
        yield sb, url


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


@pytest.fixture
async def client(sandbox: tuple[FlashdutySandbox, str], metrics: Metrics) -> AsyncIterator[FlashdutyClient]:
    c = FlashdutyClient(cfg(sandbox[1]), metrics=metrics)
    yield c
    await c.close()


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(f"flashduty_sidecar_{name}", labels) or 0.0


def requests(sb: FlashdutySandbox, endpoint: str) -> int:
    return sb.stats[endpoint].requests


def an_event(status: str = "Critical") -> AlertEvent:
    labels = {"sidecar_rule": "HighErrorRate", "service": "web"}
    return AlertEvent(
        alert_key=alert_key("HighErrorRate", labels),
        rule="HighErrorRate",
        status=status,  # type: ignore[arg-type]
        title="High error rate on web",
        description="5 errors/s",
        labels=labels,
    )


# ---------------------------------------------------------------------------- happy paths


async def test_upload_then_push_with_the_image(
    client: FlashdutyClient, sandbox: tuple[FlashdutySandbox, str], metrics: Metrics
) -> None:
    sb, _ = sandbox
    image_key = await client.upload_image(png(1), content_type=PNG, priority=1)
    assert image_key.startswith("img_")
    e = an_event()
    key = await client.push_alert(build_payload(e, [ImageRef(image_key, "Error rate")]))
    assert key == e.alert_key
    (alert,) = sb.state()["alerts"]
    assert alert["alert_key"] == e.alert_key and alert["alert_status"] == "Critical"
    assert [(i["src"], i["alt"]) for i in alert["images"]] == [(image_key, "Error rate")]
    assert sb.state()["warnings"] == []
    assert sample(metrics, "uploads_total", outcome="ok") == 1
    assert sample(metrics, "pushes_total", outcome="ok") == 1
    assert sample(metrics, "flashduty_request_duration_seconds_count", endpoint="push") == 1


async def test_ok_push_resolves(client: FlashdutyClient, sandbox: tuple[FlashdutySandbox, str]) -> None:
    await client.push_alert(build_payload(an_event(), []))
    await client.push_alert(build_payload(an_event("Ok"), []))
    (alert,) = sandbox[0].state()["alerts"]
    assert alert["alert_status"] == "Ok" and alert["end_time"] > 0


async def test_injected_session_is_used_and_not_closed(sandbox: tuple[FlashdutySandbox, str]) -> None:
    async with aiohttp.ClientSession() as session:
        c = FlashdutyClient(cfg(sandbox[1]), metrics=Metrics(), session=session)
        await c.upload_image(png(2), content_type=PNG)
        await c.close()
        assert not session.closed


# ---------------------------------------------------------------------------- failures


@pytest.mark.parametrize("endpoint", ["upload", "push"])
async def test_401_names_the_integration_key_and_is_not_retried(
    client: FlashdutyClient, sandbox: tuple[FlashdutySandbox, str], metrics: Metrics, endpoint: str
) -> None:
    sb, _ = sandbox
    sb.add_fault("401", endpoint=endpoint)  # every request, until cleared
    with pytest.raises(FlashdutyAuthError) as info:
        if endpoint == "upload":
            await client.upload_image(png(3), content_type=PNG)
        else:
            await client.push_alert(build_payload(an_event(), []))
    e = info.value
    assert "integration_key rejected (401 Unauthorized)" in str(e)
    assert "FLASHDUTY_INTEGRATION_KEY / flashduty.integration_key" in str(e)
    assert not e.retryable and e.status == 401 and e.request_id
    assert requests(sb, endpoint) == 1
    metric = "uploads_total" if endpoint == "upload" else "pushes_total"
    assert sample(metrics, metric, outcome="auth_error") == 1


async def test_wrong_key_on_push_400_invalid_parameter_is_an_auth_error(
    sandbox: tuple[FlashdutySandbox, str],
) -> None:
    c = FlashdutyClient(cfg(sandbox[1], key="fd-wrong-key-000000"), metrics=Metrics())
    try:
        with pytest.raises(FlashdutyAuthError, match=r"integration_key rejected \(400 InvalidParameter\)"):
            await c.push_alert(build_payload(an_event(), []))
        with pytest.raises(FlashdutyAuthError, match=r"integration_key rejected \(401 Unauthorized\)"):
            await c.upload_image(png(4), content_type=PNG)
    finally:
        await c.close()


async def test_wrong_app_key_names_the_app_key(sandbox: tuple[FlashdutySandbox, str]) -> None:
    c = FlashdutyClient(cfg(sandbox[1], app_key="fd-wrong-app-000000"), metrics=Metrics())
    try:
        with pytest.raises(FlashdutyAuthError) as info:
            await c.list_alerts(start=time.time() - DAY, end=time.time())
        assert "app_key rejected (401 Unauthorized) — check FLASHDUTY_APP_KEY / flashduty.app_key" in str(info.value)
        assert requests(sandbox[0], "list") == 1
    finally:
        await c.close()


async def test_list_without_app_key_fails_fast(sandbox: tuple[FlashdutySandbox, str]) -> None:
    c = FlashdutyClient(cfg(sandbox[1], app_key=None), metrics=Metrics())
    try:
        with pytest.raises(FlashdutyAuthError, match="app_key is not configured"):
            await c.list_alerts(start=0, end=1)
        assert requests(sandbox[0], "list") == 0
    finally:
        await c.close()


@pytest.mark.parametrize(
    ("status", "retryable"),
    [(500, True), (502, True), (503, True), (408, True), (501, False), (400, False), (403, False), (413, False)],
)
async def test_status_taxonomy_one_attempt_each(
    client: FlashdutyClient, sandbox: tuple[FlashdutySandbox, str], status: int, retryable: bool
) -> None:
    sb, _ = sandbox
    sb.add_fault("status", endpoint="push", status=status, count=1)
    with pytest.raises(FlashdutyError) as info:
        await client.push_alert(build_payload(an_event(), []))
    e = info.value
    assert type(e) is FlashdutyError
    assert (e.status, e.retryable, e.code) == (status, retryable, "InternalError")
    assert e.request_id and len(e.request_id) == 32
    assert requests(sb, "push") == 1  # the outbox owns retries
    # the next call goes through: one attempt was one request
    assert await client.push_alert(build_payload(an_event(), []))


async def test_error_inside_a_200_is_a_failure(
    client: FlashdutyClient, sandbox: tuple[FlashdutySandbox, str], metrics: Metrics
) -> None:
    sandbox[0].add_fault("error_in_200", endpoint="upload", count=1)
    with pytest.raises(FlashdutyError) as info:
        await client.upload_image(png(5), content_type=PNG)
    e = info.value
    assert (e.status, e.code, e.retryable) == (200, "InternalError", True)
    assert "error in a 2xx body" in str(e) and e.request_id
    assert sample(metrics, "uploads_total", outcome="retryable_error") == 1


async def test_hang_past_the_timeout_is_a_retryable_timeout(sandbox: tuple[FlashdutySandbox, str]) -> None:
    sb, url = sandbox
    sb.add_fault("hang", endpoint="push", seconds=10, count=1)
    c = FlashdutyClient(cfg(url, timeout=0.3), metrics=Metrics())
    try:
        started = time.monotonic()
        with pytest.raises(FlashdutyTimeout) as info:
            await c.push_alert(build_payload(an_event(), []))
        assert 0.25 < time.monotonic() - started < 2.0
        assert info.value.retryable and "0.3s" in str(info.value)
    finally:
        await c.close()


async def test_connection_refused_is_retryable() -> None:
    with socket.socket() as s:  # reserve and release a port, so nothing listens on it
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    c = FlashdutyClient(cfg(f"http://127.0.0.1:{port}"), metrics=Metrics())
    try:
        with pytest.raises(FlashdutyConnectionError) as info:
            await c.upload_image(png(6), content_type=PNG)
        assert info.value.retryable
    finally:
        await c.close()


async def test_too_big_image_is_refused_before_sending(
    client: FlashdutyClient, sandbox: tuple[FlashdutySandbox, str]
) -> None:
    with pytest.raises(FlashdutyError, match="at most 5242880") as info:
        await client.upload_image(png(0) + b"\0" * (5 * 1024 * 1024), content_type=PNG)
    assert not info.value.retryable and requests(sandbox[0], "upload") == 0


async def test_the_content_type_given_is_the_one_sent_with_its_file_name() -> None:
    async with upload_recorder() as (url, seen):
        c = FlashdutyClient(cfg(url), metrics=Metrics())
        try:
            # the bytes say PNG every time: the type comes from the caller, nothing sniffs it
            for ctype in ("image/png", "image/jpeg", "image/webp"):
                assert await c.upload_image(png(50), content_type=ctype)
        finally:
            await c.close()
    assert seen == [("panel.png", "image/png"), ("panel.jpg", "image/jpeg"), ("panel.webp", "image/webp")]


# ---------------------------------------------------------------------------- 429 and the shared gate


async def _wait_for_gate(c: FlashdutyClient, endpoint: str) -> float:
    for _ in range(500):
        if c.limiters[endpoint].gate_until > time.monotonic():
            return c.limiters[endpoint].gate_until
        await asyncio.sleep(0.005)
    raise AssertionError("no 429 gate was set")


async def test_429_retry_after_seconds_waits_and_gates_other_requests(
    client: FlashdutyClient, sandbox: tuple[FlashdutySandbox, str], metrics: Metrics
) -> None:
    sb, _ = sandbox
    sb.add_fault("429", endpoint="upload", count=1, retry_after="1")
    started = time.monotonic()
    first = asyncio.ensure_future(client.upload_image(png(7), content_type=PNG, priority=3))
    gate = await _wait_for_gate(client, "upload")
    assert started + 0.9 < gate <= time.monotonic() + 1.05  # Retry-After: 1, counted from the 429
    second = await client.upload_image(png(8), content_type=PNG, priority=0)  # an unrelated, urgent upload
    assert time.monotonic() >= gate - 0.01, "the gate must hold back every request to the quota"
    assert (await first).startswith("img_") and second.startswith("img_")
    assert requests(sb, "upload") == 3  # 429, then the two uploads: the caller saw no failure
    assert sample(metrics, "rate_limited_total", endpoint="upload") == 1
    assert sample(metrics, "uploads_total", outcome="ok") == 2
    # pushes have their own quota: not gated
    sb.add_fault("429", endpoint="upload", count=1, retry_after="2")
    gated = asyncio.ensure_future(client.upload_image(png(9), content_type=PNG))
    gate = await _wait_for_gate(client, "upload")
    await client.push_alert(build_payload(an_event(), []))
    assert time.monotonic() < gate and not gated.done()  # pushed while uploads were held back
    await gated


async def test_429_retry_after_http_date(client: FlashdutyClient, sandbox: tuple[FlashdutySandbox, str]) -> None:
    sb, _ = sandbox
    when = email.utils.formatdate(time.time() + 2, usegmt=True)  # whole seconds: 1 to 2 s from now
    sb.add_fault("429", endpoint="push", count=1, retry_after=when)
    started = time.monotonic()
    assert await client.push_alert(build_payload(an_event(), []))
    assert 0.9 < time.monotonic() - started < 3.5
    assert requests(sb, "push") == 2


async def test_429_without_retry_after_backs_off_then_succeeds(sandbox: tuple[FlashdutySandbox, str]) -> None:
    sb, url = sandbox
    metrics = Metrics()
    c = FlashdutyClient(cfg(url), metrics=metrics, time_scale=10)  # backoff 0..0.1 s, then 0..0.2 s
    try:
        sb.add_fault("429", endpoint="push", count=2)
        assert await c.push_alert(build_payload(an_event(), []))
        assert requests(sb, "push") == 3
        assert sample(metrics, "rate_limited_total", endpoint="push") == 2
        assert sample(metrics, "pushes_total", outcome="ok") == 1
    finally:
        await c.close()


async def test_429_past_the_deadline_raises_rate_limited(
    client: FlashdutyClient, sandbox: tuple[FlashdutySandbox, str], metrics: Metrics
) -> None:
    sb, _ = sandbox
    sb.add_fault("429", endpoint="upload", count=1, retry_after="30")
    started = time.monotonic()
    with pytest.raises(FlashdutyRateLimited) as info:
        await client.upload_image(png(10), content_type=PNG, deadline=started + 2.0)
    assert time.monotonic() - started < 1.5  # no point waiting: the gate opens after the deadline
    assert info.value.retryable and info.value.retry_after is not None and 28 < info.value.retry_after <= 30
    assert requests(sb, "upload") == 1
    assert sample(metrics, "uploads_total", outcome="rate_limited") == 1
    # a waiter queued behind the gate also gives up at its deadline
    with pytest.raises(FlashdutyRateLimited):
        await client.upload_image(png(11), content_type=PNG, deadline=time.monotonic() + 0.1)
    assert requests(sb, "upload") == 1


async def test_priority_critical_enqueued_after_info_goes_first(sandbox: tuple[FlashdutySandbox, str]) -> None:
    sb, url = sandbox
    slow = cfg(url).model_copy(update={"upload_rate": RateLimit(per_second=1, per_minute=1000)})
    c = FlashdutyClient(slow, metrics=Metrics(), time_scale=20)  # one upload per 50 ms
    sb.add_fault("hang", endpoint="upload", seconds=1, count=1)  # the first holds its slot for 1 s
    limiter = c.limiters["upload"]
    try:
        first = asyncio.ensure_future(c.upload_image(png(30), content_type=PNG, priority=3))
        await eventually(lambda: limiter.in_flight == 1, "the first upload admitted")
        infos = [asyncio.ensure_future(c.upload_image(png(31 + i), content_type=PNG, priority=3)) for i in range(3)]
        await eventually(lambda: limiter.waiting == 3, "three Info uploads queued")
        assert limiter.in_flight == 1 and not first.done()  # nobody overtook the first one
        critical = asyncio.ensure_future(c.upload_image(png(40), content_type=PNG, priority=1))
        keys = await asyncio.gather(first, critical, *infos)
    finally:
        await c.close()
    received = [image["image_key"] for image in sb.images.snapshot()]
    assert received == keys  # first, then Critical, then the Info ones in FIFO order


# ---------------------------------------------------------------------------- list_alerts


def _seed(sb: FlashdutySandbox, key: str, *times: float, status: str = "Warning") -> None:
    for t in times:
        sb.push_event(
            {
                "title_rule": key,
                "event_status": status,
                "alert_key": key,
                "labels": {"sidecar_rule": "r", "n": str(t)},
                "event_time": int(t),
            },
            integration_key=KEY,
        )


async def test_list_alerts_follows_the_cursor_and_splits_long_windows(
    client: FlashdutyClient, sandbox: tuple[FlashdutySandbox, str]
) -> None:
    sb, _ = sandbox
    now = time.time()
    start = now - 70 * DAY
    for day in range(2, 70, 2):  # 34 short alerts spread over 70 days
        _seed(sb, f"k{day}", now - day * DAY)
    _seed(sb, "long", now - 65 * DAY, now - 1 * DAY)  # overlaps every 31-day slice
    _seed(sb, "too-old", now - 90 * DAY)
    items = await client.list_alerts(start=start, end=now, limit=5)
    keys = sorted(i["title"] for i in items)
    assert keys == sorted([f"k{d}" for d in range(2, 70, 2)] + ["long"])
    assert len({i["alert_id"] for i in items}) == len(items)  # "long" appears once
    # 3 slices (31 + 31 + 8 days) holding 16, 17 and 5 alerts: 4 + 4 + 1 pages of 5, all accepted
    assert sb.stats["list"].processed == requests(sb, "list") == 9
    assert sb.stats["list"].statuses.get(400, 0) == 0


async def test_list_alerts_filters(client: FlashdutyClient, sandbox: tuple[FlashdutySandbox, str]) -> None:
    sb, _ = sandbox
    now = time.time()
    _seed(sb, "active", now - 100)
    _seed(sb, "closed", now - 100)
    _seed(sb, "closed", now - 50, status="Ok")
    active = await client.list_alerts(start=now - DAY, end=now + 10, is_active=True)
    assert [i["title"] for i in active] == ["active"]
    by_key = await client.list_alerts(start=now - DAY, end=now + 10, alert_keys=["closed"])
    assert [i["alert_status"] for i in by_key] == ["Ok"]


# ---------------------------------------------------------------------------- secrets


async def _redirect_app() -> web.Application:
    async def redirect(request: web.Request) -> web.Response:
        # aiohttp puts the redirect URL, key and all, into NonHttpUrlRedirectClientError's text
        raise web.HTTPTemporaryRedirect(f"ftp://files.invalid/x?integration_key={KEY}&also={KEY}")

    app = web.Application()
    app.router.add_post("/push/image/upload", redirect)
    return app


async def test_no_key_in_any_exception_or_log_record(
    sandbox: tuple[FlashdutySandbox, str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    sb, url = sandbox
    errors: list[BaseException] = []
    runner = web.AppRunner(await _redirect_app(), access_log=None)  # a stand-in for any server
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    redirect_url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    clients = [
        FlashdutyClient(cfg(url, timeout=0.3), metrics=Metrics()),
        FlashdutyClient(cfg(redirect_url), metrics=Metrics()),
        FlashdutyClient(cfg("http://127.0.0.1:9"), metrics=Metrics()),
    ]
    sandboxed, redirected, refused = clients
    try:
        assert await sandboxed.upload_image(png(24), content_type=PNG)  # a successful round trip logs too (debug)
        sb.add_fault("401", endpoint="upload", count=1)
        sb.add_fault("status", endpoint="push", status=500, count=1)
        sb.add_fault("hang", endpoint="push", seconds=5, count=1)
        sb.add_fault("429", endpoint="upload", count=1, retry_after="30")
        calls: list[Any] = [
            sandboxed.upload_image(png(20), content_type=PNG),
            sandboxed.push_alert(build_payload(an_event(), [])),
            sandboxed.push_alert(build_payload(an_event(), [])),
            sandboxed.upload_image(png(21), content_type=PNG, deadline=time.monotonic() + 0.2),
            redirected.upload_image(png(22), content_type=PNG),
            refused.upload_image(png(23), content_type=PNG),
        ]
        for call in calls:
            try:
                await call
            except FlashdutyError as e:
                errors.append(e)
        assert [type(e).__name__ for e in errors] == [
            "FlashdutyAuthError",
            "FlashdutyError",
            "FlashdutyTimeout",
            "FlashdutyRateLimited",
            "FlashdutyConnectionError",
            "FlashdutyConnectionError",
        ]
        assert "integration_key=<redacted>&also=<redacted>" in str(errors[4])  # aiohttp's text had the URL
    finally:
        for c in clients:
            await c.close()
        await runner.cleanup()
    for err in errors:
        texts = [str(err), repr(err), *map(str, err.args), "".join(traceback.format_exception(err))]
        assert all(KEY not in t for t in texts), texts
        assert err.__cause__ is None and err.__context__ is None
    assert caplog.records, "expected log records to check"
    for record in caplog.records:
        rendered = record.getMessage() + (record.exc_text or "") + str(record.__dict__)
        assert KEY not in rendered and APP_KEY not in rendered, record
