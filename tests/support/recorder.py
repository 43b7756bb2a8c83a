"""A stand-in for Flashduty's upload endpoint that records what each upload's multipart part
says of itself (file name, content type): the sandbox Flashduty reads only the bytes."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web


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
