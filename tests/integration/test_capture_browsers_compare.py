"""The pictures of Debian's ``chromium-headless-shell`` (what the image ships and an empty
``capture.browser_path`` prefers) match full ``chromium``'s, pixel by pixel within a tolerance,
on the sandbox's panels over a fixed time window (the sandbox draws the same data for the same
window): series, no data, a query error, a legacy dashboard, a whole dashboard, light theme,
scale 2 (CJK glyphs are checked on the image, by deploy/image/prove.py). Skipped unless both browsers are installed."""

from __future__ import annotations

import io
import os
import shutil
import time
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from aiohttp import web
from PIL import Image, ImageChops
from pydantic import SecretStr

from sidecar.capture.errors import CaptureClass
from sidecar.capture.launcher import headless_shell
from sidecar.capture.service import CaptureService
from sidecar.config import CaptureConfig, GrafanaConfig
from sidecar.metrics import Metrics
from sidecar.model import PanelCapture
from sidecar_sandbox.grafana import DEFAULT_TOKEN, GrafanaSandbox
from sidecar_sandbox.pixels import SERIES_GREEN as GREEN

SHELL = headless_shell()
CHROMIUM = shutil.which("chromium")
MEAN_TOLERANCE = 2.0  # mean absolute difference per channel (0-255)
PIXEL_TOLERANCE = 0.02  # share of pixels differing by more than 64 on a channel

pytestmark = [
    pytest.mark.chromium,
    pytest.mark.skipif(SHELL is None or CHROMIUM is None, reason="needs chromium and chromium-headless-shell"),
    pytest.mark.asyncio(loop_scope="module"),
]

TO_MS = (int(time.time() * 1000) // 3_600_000) * 3_600_000  # an hour boundary: one window for both
FROM_MS = TO_MS - 3 * 3_600_000
CASES = {
    "series": {"panel": "1"},
    "no data": {"panel": "4"},
    "query error": {"panel": "5"},
    "legacy dashboard": {"dashboard": "sandbox-legacy", "panel": "1"},
    "whole dashboard": {"dashboard": "sandbox-legacy", "panel": None, "width": 1200, "height": 600},
    "light theme, scale 2": {"panel": "1", "theme": "light", "scale": 2, "width": 500, "height": 250},
}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def services() -> AsyncIterator[dict[str, CaptureService]]:
    sandbox = GrafanaSandbox(query_delay=0.1)
    runner = web.AppRunner(sandbox.make_app(), access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    host, port = runner.addresses[0][:2]
    grafana = GrafanaConfig(url=f"http://{host}:{port}", token=SecretStr(DEFAULT_TOKEN))
    out = {}
    try:
        for name, path in (("headless shell", SHELL), ("chromium", CHROMIUM)):
            service = CaptureService(
                grafana=grafana,
                capture=CaptureConfig(**{"browser_path": path or "", "timeout": "15s"}),  # type: ignore[arg-type]
                metrics=Metrics(),
            )
            await service.start()
            pid = service.stats()["browser_pid"]
            exe = os.path.basename(os.path.realpath(f"/proc/{pid}/exe"))  # /usr/bin/chromium is a script
            assert exe == {"headless shell": "chromium-headless-shell", "chromium": "chromium"}[name], exe
            out[name] = service
        yield out
    finally:
        for service in out.values():
            await service.close()
        await runner.cleanup()


def difference(a: bytes, b: bytes) -> tuple[float, float]:
    """Mean absolute difference per channel, and the share of pixels off by more than 64."""
    with Image.open(io.BytesIO(a)) as ia, Image.open(io.BytesIO(b)) as ib:
        assert ia.size == ib.size
        diff = ImageChops.difference(ia.convert("RGB"), ib.convert("RGB"))
    pixels = diff.size[0] * diff.size[1]
    mean = sum(sum(i * n for i, n in enumerate(ch.histogram())) for ch in diff.split()) / (3 * pixels)
    worst = ImageChops.lighter(ImageChops.lighter(*diff.split()[:2]), diff.split()[2])
    off = sum(worst.histogram()[65:]) / pixels
    return mean, off


def series_pixels(image: bytes) -> int:
    """Pixels within 24 of the series colour on every channel."""
    with Image.open(io.BytesIO(image)) as im:
        channels = im.convert("RGB").split()
    masks = [ch.point(lambda v, c=c: 255 if abs(v - c) <= 24 else 0) for ch, c in zip(channels, GREEN, strict=True)]
    return ImageChops.multiply(ImageChops.multiply(masks[0], masks[1]), masks[2]).histogram()[255]


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
async def test_the_headless_shell_draws_what_chromium_draws(services: dict[str, CaptureService], case: str) -> None:
    spec: dict[str, object] = {"dashboard": "sandbox", "time_from": str(FROM_MS), "time_to": str(TO_MS), **CASES[case]}
    request = PanelCapture(**spec)  # type: ignore[arg-type]
    shell, full = [await services[name].capture(request) for name in ("headless shell", "chromium")]
    assert shell.cls is full.cls, (shell.detail, full.detail)
    assert shell.cls in (CaptureClass.OK, CaptureClass.NO_DATA, CaptureClass.PANEL_ERROR)
    assert shell.image and full.image
    if case in ("series", "legacy dashboard", "whole dashboard"):
        assert series_pixels(full.image) > 500  # a picture with data, not two blank ones
    mean, off = difference(shell.image, full.image)
    print(f"{case}: mean {mean:.3f}, pixels off {off:.4%}")
    assert mean <= MEAN_TOLERANCE and off <= PIXEL_TOLERANCE, f"mean {mean:.3f}, pixels off {off:.4%}"
