"""Shared test settings.

With ``SIDECAR_STRICT_DEPS=1`` (set by ``.ci/run``) a missing Chromium, Prometheus or
Alertmanager is an error instead of a skip, so CI can never pass by skipping the real-part tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import time
from collections.abc import AsyncIterator, Callable

import aiohttp
import pytest
from aiohttp import web

from sidecar.sandbox.demo import find_browser


def find_chromium() -> str | None:
    """$SIDECAR_CHROMIUM, else a Chromium on PATH (the demo's own detection)."""
    return find_browser(None) or None


async def eventually(condition: Callable[[], object], what: str, timeout: float = 5.0) -> None:
    """Poll ``condition`` every 10 ms until it holds; fail with ``what`` after ``timeout`` s.

    For state that settles in the background (a client acting on an answer the server has
    already recorded, a context closing after a capture): never a fixed sleep."""
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            raise AssertionError(f"not within {timeout:g} s: {what}")
        await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def upload_recorder() -> AsyncIterator[tuple[str, list[tuple[str | None, str | None]]]]:
    """A stand-in for Flashduty's upload endpoint on a loopback port: its URL, and the file name
    and content type of every ``image`` part it received (the sandbox reads only the bytes)."""
    seen: list[tuple[str | None, str | None]] = []

    async def upload(request: web.Request) -> web.Response:
        reader = await request.multipart()
        part = await reader.next()
        assert isinstance(part, aiohttp.BodyPartReader) and part.name == "image"
        seen.append((part.filename, part.headers.get(aiohttp.hdrs.CONTENT_TYPE)))
        await part.read()
        return web.json_response({"request_id": "r1", "data": {"image_key": f"img_{len(seen)}"}})

    app = web.Application()
    app.router.add_post("/push/image/upload", upload)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}", seen
    finally:
        await runner.cleanup()


def pytest_sessionstart(session: pytest.Session) -> None:
    if os.environ.get("SIDECAR_STRICT_DEPS") != "1":
        return
    missing = []
    if find_chromium() is None:
        missing.append("chromium")
    for binary in ("prometheus", "prometheus-alertmanager"):
        if shutil.which(binary) is None:
            missing.append(binary)
    if missing:
        raise pytest.UsageError(f"SIDECAR_STRICT_DEPS=1 but not installed: {', '.join(missing)}")
