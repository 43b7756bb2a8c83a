"""ImageUploader: content dedup (SQLite, TTL, restarts) and singleflight, against the sandbox."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sidecar.config import FlashdutyConfig
from sidecar.flashduty.client import FlashdutyClient
from sidecar.flashduty.errors import FlashdutyError, FlashdutyRateLimited
from sidecar.flashduty.uploader import ImageUploader
from sidecar.metrics import Metrics
from sidecar_sandbox.flashduty import FlashdutySandbox
from tests.support.recorder import upload_recorder
from tests.support.wait import eventually

KEY = "fd-int-5ecret-up1oader-0123456789"
OTHER_KEY = "fd-int-5ecret-up1oader-other-account"
PNG = "image/png"


def png(n: int) -> bytes:
    return b"\x89PNG\r\n\x1a\n" + n.to_bytes(8, "big") + b"\0" * 32


class FakeWall:
    def __init__(self) -> None:
        self.t = 1_700_000_000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
async def sandbox() -> AsyncIterator[tuple[FlashdutySandbox, str]]:
    sb = FlashdutySandbox(integration_keys=(KEY, OTHER_KEY))
    async with sb.serve() as url:
        yield sb, url


def make_client(url: str, key: str = KEY) -> FlashdutyClient:
    cfg = FlashdutyConfig.model_validate({"api_host": url, "integration_key": key, "timeout": "3s"})
    return FlashdutyClient(cfg, metrics=Metrics())


@pytest.fixture
async def client(sandbox: tuple[FlashdutySandbox, str]) -> AsyncIterator[FlashdutyClient]:
    c = make_client(sandbox[1])
    yield c
    await c.close()


def cache(metrics: Metrics, result: str) -> float:
    return metrics.registry.get_sample_value("flashduty_sidecar_image_cache_total", {"result": result}) or 0.0


def uploads(sb: FlashdutySandbox) -> int:
    return sb.stats["upload"].requests


async def test_the_pictures_content_type_reaches_the_upload() -> None:
    async with upload_recorder() as (url, seen):
        client = make_client(url)
        up = ImageUploader(client, db_path=None, ttl=3600, metrics=Metrics())
        try:
            await up.upload(png(12), content_type="image/webp", priority=2)
            await up.upload(png(12), content_type="image/webp", priority=2)  # remembered: not sent again
            await up.upload(png(13), content_type="image/jpeg", priority=2)
        finally:
            await up.close()
            await client.close()
    assert seen == [("panel.webp", "image/webp"), ("panel.jpg", "image/jpeg")]


async def test_same_bytes_twice_one_upload(client: FlashdutyClient, sandbox: tuple[FlashdutySandbox, str]) -> None:
    metrics = Metrics()
    up = ImageUploader(client, db_path=None, ttl=3600, metrics=metrics)
    try:
        k1 = await up.upload(png(1), content_type=PNG, priority=1)
        k2 = await up.upload(png(1), content_type=PNG, priority=1)
        k3 = await up.upload(png(2), content_type=PNG, priority=1)
    finally:
        await up.close()
    assert k1 == k2 != k3
    assert uploads(sandbox[0]) == 2
    assert (cache(metrics, "miss"), cache(metrics, "hit"), cache(metrics, "shared")) == (2, 1, 0)


async def test_concurrent_identical_uploads_share_one_request(
    client: FlashdutyClient, sandbox: tuple[FlashdutySandbox, str]
) -> None:
    metrics = Metrics()
    up = ImageUploader(client, db_path=None, ttl=3600, metrics=metrics)
    try:
        keys = await asyncio.gather(*(up.upload(png(3), content_type=PNG, priority=2) for _ in range(10)))
    finally:
        await up.close()
    assert len(set(keys)) == 1
    assert uploads(sandbox[0]) == 1
    assert (cache(metrics, "miss"), cache(metrics, "shared")) == (1, 9)


async def test_a_failed_upload_fails_its_followers_and_is_not_remembered(
    client: FlashdutyClient, sandbox: tuple[FlashdutySandbox, str]
) -> None:
    sb, _ = sandbox
    sb.add_fault("status", endpoint="upload", status=500, count=1)
    up = ImageUploader(client, db_path=None, ttl=3600, metrics=Metrics())
    try:
        results = await asyncio.gather(
            *(up.upload(png(4), content_type=PNG, priority=2) for _ in range(3)), return_exceptions=True
        )
        assert all(isinstance(r, FlashdutyError) and r.retryable for r in results)
        assert uploads(sb) == 1
        assert (await up.upload(png(4), content_type=PNG, priority=2)).startswith("img_")  # tried again, not cached
        assert uploads(sb) == 2
    finally:
        await up.close()


async def test_a_cancelled_first_caller_does_not_break_the_shared_upload(
    client: FlashdutyClient, sandbox: tuple[FlashdutySandbox, str]
) -> None:
    """The caller that started a shared upload is cancelled (its event was superseded): the
    upload goes on for the others, who get the key; one request in all."""
    sb, _ = sandbox
    sb.add_fault("hang", endpoint="upload", seconds=2.0, count=1)  # still in flight when the others join
    metrics = Metrics()
    up = ImageUploader(client, db_path=None, ttl=3600, metrics=metrics)
    try:
        leader = asyncio.ensure_future(up.upload(png(5), content_type=PNG, priority=2))
        await asyncio.sleep(0.05)
        followers = [asyncio.ensure_future(up.upload(png(5), content_type=PNG, priority=2)) for _ in range(2)]
        await asyncio.sleep(0.05)
        leader.cancel()
        followers[0].cancel()
        with pytest.raises(asyncio.CancelledError):
            await leader
        with pytest.raises(asyncio.CancelledError):
            await followers[0]
        key = await asyncio.wait_for(followers[1], 10)
        assert key.startswith("img_") and key in sb.images
        assert await up.upload(png(5), content_type=PNG, priority=2) == key  # remembered: it completed
    finally:
        await up.close()
    assert uploads(sb) == 1
    assert (cache(metrics, "miss"), cache(metrics, "shared"), cache(metrics, "hit")) == (1, 2, 1)


async def test_an_upload_nobody_waits_for_any_more_is_cancelled(
    client: FlashdutyClient, sandbox: tuple[FlashdutySandbox, str]
) -> None:
    sb, _ = sandbox
    sb.add_fault("hang", endpoint="upload", seconds=5, count=1)
    up = ImageUploader(client, db_path=None, ttl=3600, metrics=Metrics())
    try:
        callers = [asyncio.ensure_future(up.upload(png(9), content_type=PNG, priority=2)) for _ in range(2)]
        await eventually(lambda: uploads(sb) == 1, "the upload reached the sandbox")
        for c in callers:
            c.cancel()
        results = await asyncio.gather(*callers, return_exceptions=True)
        assert all(isinstance(r, asyncio.CancelledError) for r in results)
        # the request itself is cancelled: no quota spent on an unwanted picture
        await eventually(lambda: not up._tasks, "the shared upload cancelled")
        # the next caller starts a fresh upload rather than joining the cancelled one
        assert (await asyncio.wait_for(up.upload(png(9), content_type=PNG, priority=2), 2)).startswith("img_")
        assert uploads(sb) == 2
    finally:
        await up.close()


async def test_close_fails_waiting_callers_with_a_retryable_error(
    client: FlashdutyClient, sandbox: tuple[FlashdutySandbox, str]
) -> None:
    sandbox[0].add_fault("hang", endpoint="upload", seconds=5, count=1)
    up = ImageUploader(client, db_path=None, ttl=3600, metrics=Metrics())
    callers = [asyncio.ensure_future(up.upload(png(10), content_type=PNG, priority=2)) for _ in range(2)]
    await asyncio.sleep(0.1)
    await asyncio.wait_for(up.close(), 2)
    for c in callers:
        with pytest.raises(FlashdutyError, match="uploader closed") as err:
            await c
        assert err.value.retryable


async def test_a_caller_with_a_later_deadline_outlives_a_shared_upload_that_gave_up(
    client: FlashdutyClient, sandbox: tuple[FlashdutySandbox, str]
) -> None:
    """The first caller's deadline (an Ok's image budget) passes behind a 429; a caller that
    joined it with no deadline (a Critical's late picture) waits the quota out and gets the key."""
    sb, _ = sandbox
    sb.add_fault("429", endpoint="upload", count=1, retry_after="1")
    up = ImageUploader(client, db_path=None, ttl=3600, metrics=Metrics())
    try:
        short = asyncio.ensure_future(up.upload(png(11), content_type=PNG, priority=0, timeout=0.3))
        await asyncio.sleep(0)
        patient = asyncio.ensure_future(up.upload(png(11), content_type=PNG, priority=1))
        with pytest.raises(FlashdutyRateLimited):
            await short
        key = await asyncio.wait_for(patient, 3)
        assert key in sb.images
    finally:
        await up.close()
    assert sb.stats["upload"].statuses[429] == 1 and uploads(sb) == 2


async def test_remembered_across_restarts_until_the_ttl(
    client: FlashdutyClient, sandbox: tuple[FlashdutySandbox, str], tmp_path: Path
) -> None:
    sb, _ = sandbox
    db = str(tmp_path / "images.sqlite")
    wall = FakeWall()
    first = ImageUploader(client, db_path=db, ttl=600, metrics=Metrics(), clock=wall)
    key = await first.upload(png(6), content_type=PNG, priority=2)
    await first.close()

    metrics = Metrics()
    second = ImageUploader(client, db_path=db, ttl=600, metrics=metrics, clock=wall)  # "after a restart"
    try:
        wall.t += 599
        assert await second.upload(png(6), content_type=PNG, priority=2) == key
        assert uploads(sb) == 1 and cache(metrics, "hit") == 1
        wall.t += 2  # 601 s after the upload: expired
        assert await second.upload(png(6), content_type=PNG, priority=2) == key
        assert uploads(sb) == 2 and cache(metrics, "miss") == 1
    finally:
        await second.close()
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT sha256, image_key, uploaded_at FROM image_keys").fetchall()
    assert len(rows) == 1 and rows[0][1] == key and rows[0][2] == wall.t


async def test_another_account_does_not_reuse_remembered_keys(
    sandbox: tuple[FlashdutySandbox, str], tmp_path: Path
) -> None:
    sb, url = sandbox
    db = str(tmp_path / "images.sqlite")
    for key in (KEY, OTHER_KEY):
        c = make_client(url, key)
        up = ImageUploader(c, db_path=db, ttl=600, metrics=Metrics())
        try:
            await up.upload(png(7), content_type=PNG, priority=2)
        finally:
            await up.close()
            await c.close()
    assert uploads(sb) == 2  # an image_key is only valid in the account that uploaded it


async def test_unusable_store_still_uploads(
    client: FlashdutyClient, sandbox: tuple[FlashdutySandbox, str], tmp_path: Path
) -> None:
    up = ImageUploader(client, db_path=str(tmp_path / "missing-dir" / "x.sqlite"), ttl=600, metrics=Metrics())
    try:
        assert (await up.upload(png(8), content_type=PNG, priority=2)).startswith("img_")
        assert (await up.upload(png(8), content_type=PNG, priority=2)).startswith("img_")
    finally:
        await up.close()
    assert uploads(sandbox[0]) == 2
