"""``demo`` as a user runs it: the live status page while it runs, the gallery (the same page)
at the end, pictures that tell the incident, and a clean stop on SIGTERM."""

from __future__ import annotations

import asyncio
import io
import os
import re
import shutil
import signal
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from PIL import Image

from tests.support.browsers import find_chromium

CHROMIUM = find_chromium()
pytestmark = [
    pytest.mark.chromium,
    pytest.mark.skipif(CHROMIUM is None, reason="no Chromium: install chromium or set SIDECAR_CHROMIUM"),
]
LINE = (0x73, 0xBF, 0x69)  # the sandbox Grafana's series colour


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """The demo's TMPDIR (its state directory goes there): short, for Chromium's socket paths."""
    path = Path(tempfile.mkdtemp(prefix="fds-demo-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


async def start_demo(tmp_path: Path, tmpdir: Path) -> tuple[asyncio.subprocess.Process, str]:
    """The demo process, and the live status page's address it printed."""
    env = {**os.environ, "SIDECAR_CHROMIUM": CHROMIUM or "", "TMPDIR": str(tmpdir)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sidecar", "demo", "--out", str(tmp_path / "out"),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
    )  # fmt: skip
    assert proc.stdout is not None
    while True:
        line = (await asyncio.wait_for(proc.stdout.readline(), 60)).decode()
        assert line, "the demo ended before printing the status page's address"
        if m := re.search(r"status page: (http://\S+)", line):
            return proc, m.group(1)


def line_profile(png: bytes) -> list[bool]:
    """Left to right, for each column where the series is drawn: is it in the upper half?
    Consecutive equal columns are merged: [False, True, False] = low, high, low again."""
    img = Image.open(io.BytesIO(png)).convert("RGB")
    w, h = img.size
    px = img.load()
    runs: list[bool] = []
    for x in range(w):
        ys = [y for y in range(h) if all(abs(c - t) < 40 for c, t in zip(px[x, y], LINE, strict=True))]
        if len(ys) < 2:
            continue
        high = min(ys) < h * 0.45
        if not runs or runs[-1] != high:
            runs.append(high)
    return runs


async def test_demo_serves_the_status_page_and_exports_it_with_pictures_of_the_incident(
    tmp_path: Path, short_tmp: Path
) -> None:
    proc, url = await start_demo(tmp_path, short_tmp)
    async with aiohttp.ClientSession() as http, http.get(url) as r:  # the live page, while it runs
        assert r.status == 200
        live = await r.text()
    assert 'id="rules"' in live and "CheckoutErrors" in live and "reloads every" in live
    out, err = await asyncio.wait_for(proc.communicate(), 90)
    assert proc.returncode == 0, out.decode() + err.decode()
    assert "gallery:" in out.decode()

    index = (tmp_path / "out" / "index.html").read_text()
    for section in ("timeline", "daemon", "delivery", "rules", "deliveries"):
        assert f'id="{section}"' in index  # the same template as the live page
    assert "static copy of the status page" in index and "sandbox-integration-key" not in index
    rows = [r for r in re.findall(r'<tr class="delivery">(.*?)</tr>', index, re.S) if "<b>CheckoutErrors</b>" in r]
    (ok_row,) = [r for r in rows if 'badge Ok">Ok' in r]
    (critical_row,) = [r for r in rows if 'badge Critical">Critical' in r]

    def checkout_picture(row: str) -> bytes:
        name = re.search(r'href="pictures/([0-9a-f]{64}\.png)"[^>]*><img [^>]*alt="Checkout errors"', row)
        assert name, row
        return (tmp_path / "out" / "pictures" / name.group(1)).read_bytes()

    assert line_profile(checkout_picture(critical_row)) == [False, True]  # the rise, still high
    assert line_profile(checkout_picture(ok_row)) == [False, True, False]  # the rise and the fall
    assert not list(short_tmp.glob("flashduty-sidecar-demo-*"))  # its state directory is removed


async def test_demo_stops_cleanly_on_sigterm(tmp_path: Path, short_tmp: Path) -> None:
    proc, url = await start_demo(tmp_path, short_tmp)
    proc.send_signal(signal.SIGTERM)
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 1
    assert "demo stopped by SIGTERM" in err.decode()
    assert (tmp_path / "out" / "index.html").is_file()  # the gallery of what happened so far
    assert not list(short_tmp.glob("flashduty-sidecar-demo-*"))
    with pytest.raises(aiohttp.ClientConnectionError):  # its port is closed
        async with aiohttp.ClientSession() as http, http.get(url) as r:
            await r.read()


async def test_sandbox_stops_cleanly_on_sigterm() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sidecar", "sandbox", "--flashduty-port", "0", "--grafana-port", "0",
        "--prometheus-port", "0", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None
    first = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
    url = re.search(r"(http://\S+)", first)
    assert url, first
    proc.send_signal(signal.SIGTERM)
    await asyncio.wait_for(proc.communicate(), 15)
    assert proc.returncode == 0
    with pytest.raises(aiohttp.ClientConnectionError):
        async with aiohttp.ClientSession() as http, http.get(url.group(1)) as r:
            await r.read()
