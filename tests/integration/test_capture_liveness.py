"""A browser that cannot be launched, or is killed: start() still returns, captures fail fast,
``browser_down_for`` measures the outage, and the browser comes back on its own.

Real Playwright and Chromium against the sandbox Grafana; the "browser that cannot be launched"
is a script that exits 1, given as ``capture.browser_path``.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
import pytest_asyncio
from aiohttp import web
from pydantic import SecretStr

from sidecar.capture.errors import CaptureClass
from sidecar.capture.proc import chromium_processes
from sidecar.capture.service import CaptureService
from sidecar.config import CaptureConfig, GrafanaConfig
from sidecar.metrics import Metrics
from sidecar.model import PanelCapture
from sidecar_sandbox.grafana import DEFAULT_TOKEN, GrafanaSandbox
from tests.support.browsers import find_chromium
from tests.support.wait import eventually

CHROMIUM = find_chromium()

pytestmark = [
    pytest.mark.chromium,
    pytest.mark.skipif(CHROMIUM is None, reason="no Chromium: install chromium or set SIDECAR_CHROMIUM"),
]


class SkewedClock:
    """``time.monotonic`` plus a jump the test controls (captures still see real time pass)."""

    def __init__(self) -> None:
        self.skew = 0.0

    def __call__(self) -> float:
        return time.monotonic() + self.skew


@pytest_asyncio.fixture
async def grafana_url() -> AsyncIterator[str]:
    runner = web.AppRunner(GrafanaSandbox().make_app(), access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    await runner.cleanup()


@pytest.fixture
def silent_grafana() -> Iterator[str]:
    """A Grafana that accepts connections and never answers: any request to it hangs."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(16)
        yield f"http://127.0.0.1:{s.getsockname()[1]}"


def script(path: Path, body: str) -> str:
    """An executable shell script at ``path`` (replaced atomically: it may be running)."""
    tmp = path.with_suffix(".new")
    tmp.write_text(f"#!/bin/sh\n{body}\n")
    tmp.chmod(0o755)
    os.replace(tmp, path)
    return str(path)


def service_for(url: str, clock: Callable[[], float], **capture: object) -> tuple[CaptureService, Metrics]:
    metrics = Metrics()
    cfg = CaptureConfig(**{"browser_path": CHROMIUM, "timeout": "10s", **capture})  # type: ignore[arg-type]
    grafana = GrafanaConfig(url=url, token=SecretStr(DEFAULT_TOKEN))
    return CaptureService(grafana=grafana, capture=cfg, metrics=metrics, clock=clock), metrics


def panel(panel_id: str = "1", **kw: object) -> PanelCapture:
    base: dict[str, object] = {"dashboard": "sandbox", "panel": panel_id, "time_from": "now-1h", "time_to": "now"}
    base.update(kw)
    return PanelCapture(**base)  # type: ignore[arg-type]


def launches(metrics: Metrics, reason: str) -> float:
    value = metrics.registry.get_sample_value("flashduty_sidecar_browser_restarts_total", {"reason": reason})
    return value or 0.0


async def test_a_browser_that_cannot_launch_leaves_start_alone_and_captures_fail_fast(
    tmp_path: Path, silent_grafana: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="sidecar.capture")
    calls = tmp_path / "calls"
    broken = script(tmp_path / "chromium", f'echo launched >> "{calls}"; exit 1')
    clock = SkewedClock()
    service, metrics = service_for(silent_grafana, clock, browser_path=broken)
    try:
        await service.start()  # returns: the launch is retried in the background
        assert not service.browser_connected
        down = service.browser_down_for()
        assert down > 0.0
        clock.skew += 90  # a minute and a half later, still down
        assert service.browser_down_for() >= down + 90
        started = time.monotonic()
        result = await service.capture(panel())
        # neither a launch nor the dashboard lookup (that Grafana never answers) is waited for
        assert time.monotonic() - started < 1.0
        assert result.cls is CaptureClass.ERROR and result.image is None
        assert result.detail.startswith("browser unavailable: cannot launch Chromium"), result.detail
        await eventually(lambda: calls.read_text().count("launched") >= 3, "the launch retried in the background")
        assert launches(metrics, "start") == 0 and service.browser_down_for() > 90
        warnings = [
            r for r in caplog.records if r.levelno >= logging.WARNING and r.getMessage().startswith("cannot launch")
        ]
        assert len(warnings) == 1, [r.getMessage() for r in warnings]  # logged once, not per attempt
    finally:
        await service.close()
    assert service.browser_down_for() == 0.0


async def test_a_browser_that_becomes_launchable_comes_back_by_itself(tmp_path: Path, grafana_url: str) -> None:
    path = tmp_path / "chromium"
    script(path, "exit 1")
    clock = SkewedClock()
    service, metrics = service_for(grafana_url, clock, browser_path=str(path))
    try:
        await service.start()
        assert not service.browser_connected and service.browser_down_for() > 0.0
        assert (await service.capture(panel())).cls is CaptureClass.ERROR
        script(path, f'exec "{CHROMIUM}" "$@"')  # e.g. a node that got its memory back
        await eventually(lambda: service.browser_connected, "the background relaunch", timeout=20)
        assert service.browser_down_for() == 0.0 and launches(metrics, "start") == 1
        result = await service.capture(panel())
        assert result.cls is CaptureClass.OK, result.detail
    finally:
        await service.close()


async def test_every_chromium_process_killed_the_next_capture_relaunches(grafana_url: str) -> None:
    clock = SkewedClock()
    service, metrics = service_for(grafana_url, clock)
    try:
        await service.start()
        assert (await service.capture(panel(time_from="now-2h"))).cls is CaptureClass.OK
        assert service.browser_down_for() == 0.0
        killed = chromium_processes(service.browser.markers)
        assert len(killed) > 1  # the browser, its zygotes and renderers
        for pid in killed:
            os.kill(pid, signal.SIGKILL)
        await eventually(lambda: not service.browser_connected, "the browser seen gone")
        clock.skew += 10
        assert service.browser_down_for() >= 10
        result = await service.capture(panel(time_from="now-3h"))
        assert result.cls is CaptureClass.OK, result.detail
        assert service.browser_connected and service.browser_down_for() == 0.0
        assert launches(metrics, "crash") == 1 and launches(metrics, "start") == 1
        assert service.stats()["browser_pid"] not in (None, *killed)
    finally:
        await service.close()
