"""CaptureService without a browser: singleflight, cache and TTL, concurrency, metrics, log line."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import SecretStr

from sidecar.capture.errors import CaptureClass, CaptureError
from sidecar.capture.oneshot import request_from_config
from sidecar.capture.proc import chromium_processes, process_memory_bytes
from sidecar.capture.result import CaptureResult
from sidecar.capture.service import CaptureService
from sidecar.config import CaptureConfig, GrafanaConfig, parse_config
from sidecar.metrics import Metrics
from sidecar.model import PanelCapture

TOKEN = "glsa_do_not_log_me"


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class ScriptedService(CaptureService):
    """The real service with the browser part replaced by a script (class per panel id)."""

    def __init__(self, *, outcomes: dict[str | None, CaptureClass] | None = None, **kw: object) -> None:
        super().__init__(**kw)  # type: ignore[arg-type]
        self.outcomes = outcomes or {}
        self.runs: list[PanelCapture] = []
        self.running = 0
        self.max_running = 0
        self.gate = asyncio.Event()
        self.gate.set()

    async def _capture_now(self, req: PanelCapture, limit: float, steps: dict[str, float]) -> CaptureResult:
        self.runs.append(req)
        self.running += 1
        self.max_running = max(self.max_running, self.running)
        try:
            await self.gate.wait()
        finally:
            self.running -= 1
        steps.update({"navigate": 0.2, "wait_ready": 0.5, "screenshot": 0.05})
        cls = self.outcomes.get(req.panel, CaptureClass.OK)
        usable = cls in (CaptureClass.OK, CaptureClass.NO_DATA, CaptureClass.PANEL_ERROR)
        return CaptureResult(
            request=req,
            cls=cls,
            image=b"png" if usable else None,
            content_type="image/png" if usable else None,
            url=self.panel_url(req),
            steps=dict(steps),
            detail=f"scripted {cls} (limit {limit:g}s)",
        )


def make(
    clock: FakeClock | None = None,
    outcomes: dict[str | None, CaptureClass] | None = None,
    **capture: object,
) -> tuple[ScriptedService, Metrics]:
    metrics = Metrics()
    cfg = CaptureConfig(**capture)  # type: ignore[arg-type]
    grafana = GrafanaConfig(url="http://grafana:3000", token=SecretStr(TOKEN))
    service = ScriptedService(
        outcomes=outcomes, grafana=grafana, capture=cfg, metrics=metrics, clock=clock or FakeClock()
    )
    return service, metrics


def req(panel: str | None = "1", **kw: object) -> PanelCapture:
    base: dict[str, object] = {"dashboard": "abc", "panel": panel, "time_from": "now-1h", "time_to": "now"}
    base.update(kw)
    return PanelCapture(**base)  # type: ignore[arg-type]


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(f"flashduty_sidecar_{name}", labels)
    return value or 0.0


async def test_concurrent_identical_captures_share_one_run() -> None:
    service, metrics = make()
    service.gate.clear()
    tasks = [asyncio.create_task(service.capture(req(title=f"t{i}"))) for i in range(3)]
    await asyncio.sleep(0.01)
    service.gate.set()
    results = await asyncio.gather(*tasks)
    assert len(service.runs) == 1
    assert [r.cls for r in results] == [CaptureClass.OK] * 3
    assert [r.request.title for r in results] == ["t0", "t1", "t2"]  # each caller sees its request
    assert sample(metrics, "capture_cache_total", result="miss") == 1
    assert sample(metrics, "capture_cache_total", result="shared") == 2
    assert sample(metrics, "captures_total", cls="ok") == 1


async def test_cache_reuses_usable_results_within_the_ttl_only() -> None:
    clock = FakeClock()
    service, metrics = make(clock, cache_ttl="60s")
    first = await service.capture(req())
    clock.now += 59
    second = await service.capture(req())
    assert len(service.runs) == 1 and second.image == first.image
    assert sample(metrics, "capture_cache_total", result="hit") == 1
    clock.now += 2  # 61 s after the first: expired
    await service.capture(req())
    assert len(service.runs) == 2
    # a different window, size or variable is a different picture
    await service.capture(req(time_from="now-2h"))
    await service.capture(req(width=1200))
    await service.capture(req(vars=(("service", "a"),)))
    assert len(service.runs) == 5
    assert service.stats()["cache"] == {"hit": 1, "shared": 0, "miss": 5}


async def test_cache_is_bounded_in_bytes_oldest_out_first(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sidecar.capture.cache._CACHE_MAX_BYTES", 10)  # the scripted pictures are 3 bytes
    service, _ = make()
    for minutes in range(5):
        await service.capture(req(time_from=f"now-{minutes + 1}h"))
    assert service.stats()["cached"] == 3
    await service.capture(req(time_from="now-5h"))  # the newest is kept
    await service.capture(req(time_from="now-1h"))  # the oldest was dropped
    assert len(service.runs) == 6


@pytest.mark.parametrize(
    ("cls", "cached"),
    [
        (CaptureClass.NO_DATA, True),
        (CaptureClass.PANEL_ERROR, True),
        (CaptureClass.TIMEOUT, False),
        (CaptureClass.LOGIN, False),
        (CaptureClass.NOT_FOUND, False),
        (CaptureClass.ERROR, False),
    ],
)
async def test_only_pictures_are_cached_never_failures(cls: CaptureClass, cached: bool) -> None:
    service, _ = make(outcomes={"1": cls})
    first = await service.capture(req())
    await service.capture(req())
    assert first.cls is cls
    assert first.usable is cached
    assert len(service.runs) == (1 if cached else 2)


async def test_zero_ttl_disables_the_cache() -> None:
    service, _ = make(cache_ttl="0s")
    await service.capture(req())
    await service.capture(req())
    assert len(service.runs) == 2


async def test_concurrency_is_bounded_and_queue_time_is_a_step() -> None:
    service, metrics = make(concurrency=2)
    service.gate.clear()
    tasks = [asyncio.create_task(service.capture(req(panel=str(i)))) for i in range(5)]
    await asyncio.sleep(0.01)
    assert service.running == 2
    assert service.stats()["in_flight"] == 2
    assert sample(metrics, "captures_in_flight") == 2
    service.gate.set()
    results = await asyncio.gather(*tasks)
    assert service.max_running == 2
    assert all("queue" in r.steps for r in results)
    assert sample(metrics, "captures_in_flight") == 0


async def test_timeout_argument_overrides_the_config() -> None:
    service, _ = make(timeout="20s")
    assert "limit 20s" in (await service.capture(req(panel="1"))).detail
    assert "limit 3s" in (await service.capture(req(panel="2"), timeout=3)).detail


async def test_cancelling_one_waiter_does_not_cancel_the_shared_capture() -> None:
    service, _ = make()
    service.gate.clear()
    first = asyncio.create_task(service.capture(req()))
    second = asyncio.create_task(service.capture(req()))
    await asyncio.sleep(0.01)
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    service.gate.set()
    assert (await second).cls is CaptureClass.OK
    assert len(service.runs) == 1


async def test_close_cancels_running_captures() -> None:
    service, _ = make()
    service.gate.clear()
    task = asyncio.create_task(service.capture(req()))
    await asyncio.sleep(0.01)
    await service.close()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_metrics_and_one_log_line_per_capture(caplog: pytest.LogCaptureFixture) -> None:
    service, metrics = make(outcomes={"9": CaptureClass.TIMEOUT})
    caplog.set_level(logging.DEBUG, logger="sidecar.capture")
    ok = await service.capture(req(panel="1"))
    await service.capture(req(panel="1"))  # cache hit: no second line
    await service.capture(req(panel="9"))
    records = [r for r in caplog.records if r.name == "sidecar.capture" and r.msg.startswith("capture ")]
    assert len(records) == 2
    line = records[0]
    assert line.levelno == logging.INFO
    assert line.getMessage().startswith("capture abc/1: ok in 750 ms")
    assert (line.dashboard, line.panel, line.cls, line.duration_ms) == ("abc", "1", "ok", 750)  # type: ignore[attr-defined]
    assert line.steps == {"queue": 0, "navigate": 200, "wait_ready": 500, "screenshot": 50}  # type: ignore[attr-defined]
    assert records[1].levelno == logging.WARNING and records[1].cls == "timeout"  # type: ignore[attr-defined]
    assert TOKEN not in caplog.text
    assert ok.duration == 0.75
    assert sample(metrics, "captures_total", cls="timeout") == 1
    assert sample(metrics, "capture_step_duration_seconds_count", step="wait_ready") == 2
    assert sample(metrics, "capture_duration_seconds_sum", cls="ok") == 0.75
    stats = service.stats()
    assert stats["captures"] == 2 and stats["by_class"]["timeout"] == 1


def test_result_alt_and_usable() -> None:
    base = CaptureResult(req(), CaptureClass.OK, b"x", "image/png", "u", {}, "rendered")
    assert base.usable and base.alt == "abc/1"
    assert CaptureResult(req(), CaptureClass.OK, b"x", "image/png", "u", {}, "r", title="Requests").alt == "Requests"
    titled = CaptureResult(req(title="Mine"), CaptureClass.OK, b"x", None, "u", {}, "r", title="Requests")
    assert titled.alt == "Mine"
    assert not CaptureResult(req(), CaptureClass.TIMEOUT, None, None, "u", {}, "t").usable


def test_request_from_config_uses_capture_and_grafana_defaults() -> None:
    cfg = parse_config(
        """
flashduty: {integration_key: "${K}"}
grafana: {theme: light, timezone: Europe/Paris}
capture: {width: 1200, height: 600, scale: 2, format: webp}
""",
        env={"K": "k"},
    )
    r = request_from_config(cfg, dashboard="abc", panel="panel-3", vars=[("service", "api")])
    assert (r.width, r.height, r.scale, r.format, r.theme, r.timezone) == (
        1200,
        600,
        2.0,
        "webp",
        "light",
        "Europe/Paris",
    )
    assert (r.time_from, r.time_to, r.vars) == ("now-1h", "now", (("service", "api"),))


def test_proc_helpers_find_processes_by_marker_and_sum_memory(tmp_path: Path) -> None:
    marker = str(tmp_path / "marker-dir")
    script = "import sys, time; print('ready', flush=True); time.sleep(30)"
    child = subprocess.Popen([sys.executable, "-c", script, marker], stdout=subprocess.PIPE)
    try:
        assert child.stdout is not None and child.stdout.readline() == b"ready\n"  # fully started
        assert chromium_processes([marker]) == [child.pid]
        assert process_memory_bytes([child.pid]) > 1024 * 1024
        assert chromium_processes([]) == []
    finally:
        child.kill()
        child.wait()
        if child.stdout is not None:
            child.stdout.close()
    assert chromium_processes([marker]) == []
    assert process_memory_bytes([child.pid]) == 0


@pytest.mark.parametrize("kind", ["missing", "directory", "not executable"])
async def test_a_browser_path_that_is_no_executable_file_fails_start_in_one_line(tmp_path: Path, kind: str) -> None:
    path = {"missing": "/nonexistent", "directory": str(tmp_path), "not executable": str(tmp_path / "chrome")}[kind]
    (tmp_path / "chrome").write_text("#!/bin/sh\n")
    service = CaptureService(
        grafana=GrafanaConfig(url="http://grafana:3000"),
        capture=CaptureConfig(browser_path=path),
        metrics=Metrics(),
    )
    try:
        with pytest.raises(CaptureError) as info:
            await service.start()
        assert str(info.value) == f"capture.browser_path: {path} is not an executable file"
        assert service.browser_down_for() == 0.0  # a config error, not a browser that is down
    finally:
        await service.close()


async def test_a_sidecar_browser_path_that_is_no_executable_file_fails_start_naming_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = str(tmp_path / "no-such-browser")
    monkeypatch.setenv("SIDECAR_BROWSER_PATH", missing)  # capture.browser_path is empty
    service = CaptureService(
        grafana=GrafanaConfig(url="http://grafana:3000"), capture=CaptureConfig(), metrics=Metrics()
    )
    try:
        with pytest.raises(CaptureError) as info:
            await service.start()
        assert str(info.value) == f"$SIDECAR_BROWSER_PATH: {missing} is not an executable file"
    finally:
        await service.close()
