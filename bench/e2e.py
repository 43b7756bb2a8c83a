"""End-to-end benchmark: a metric crosses its threshold → the alert with its picture at Flashduty.

Real parts: Prometheus (the Debian binary, on a free loopback port, ``scrape_interval: 1s``)
scrapes a one-metric exporter served by the benchmark (``bench_errors``); the daemon runs in
this process (``sidecar.app.Daemon``, real Chromium) with one prometheus rule
``bench_errors > 5`` (``every: 1s``, ``for: 0s``) whose panel is the sandbox Grafana's
``sandbox`` panel 1 (query answers after 300 ms); Flashduty is the sandbox.

Each cycle: set the exporter's value high (the **toggle**: the moment the PromQL condition
becomes true at the source), wait until the sandbox Flashduty holds the firing alert with its
picture, set it low, wait for the ``Ok`` and for the daemon to be idle. One cycle first is not
measured (Prometheus's first scrapes, the dashboard lookup, the first capture). A metric turns
bad at any moment, not in step with the scrapes and evaluations: left alone, each cycle would
start at the same point of their 1 s period (the cycles take about the same time), so before
each toggle the benchmark waits a different fraction of that period — ``(k + ½) / cycles``
seconds for k = 0 … cycles − 1, in a fixed shuffled order — and the evaluation wait is sampled
across the whole period. Per cycle:

* total: toggle → ``received_at`` (sandbox) of the first event of that alert with a picture;
* evaluation wait: toggle → the event is put in the outbox (``Options.on_event`` records it): the
  next scrape, plus the next rule evaluation, plus the query;
* capture: ``captures[0].ms`` of the ``sidecar.delivery`` canonical log line of that event;
* upload, push: deltas of ``flashduty_sidecar_flashduty_request_duration_seconds_sum``;
* other: the rest (outbox claim, picture hashing, scheduling).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from bench.common import find_chromium, find_prometheus, free_port, quantile, serve, summary
from sidecar.app import Options
from sidecar.config import load_config
from sidecar.daemon import Daemon
from sidecar.model import AlertEvent
from sidecar_sandbox.runner import CONFIG_HEAD, start_sandboxes

PERIOD_S = 1.0  # scrape interval and rule interval
FULL = {"cycles": 10}
QUICK = {"cycles": 2}
STEP_TIMEOUT = 30.0

CONFIG = (
    CONFIG_HEAD
    + """\
capture:
  browser_path: ${CHROMIUM}
  timeout: 10s
server:
  listen: 127.0.0.1:0
state_dir: ${STATE_DIR}
datasources:
  - {name: prom, url: "${PROMETHEUS_URL}"}
rules:
  - name: BenchErrors
    source: prometheus
    datasource: prom
    expr: bench_errors > 5
    every: 1s
    for: 0s
    severity: Critical
    title: "Errors on {{ $labels.service }}"
    panels:
      - {dashboard: sandbox, panel: 1, title: Request rate, range: 15m}
"""
)


class Exporter:
    """``GET /metrics``: one gauge whose value the benchmark sets."""

    def __init__(self) -> None:
        self.value = 0.0

    def app(self) -> web.Application:
        async def metrics(_request: web.Request) -> web.Response:
            body = f'# TYPE bench_errors gauge\nbench_errors{{service="checkout"}} {self.value}\n'
            return web.Response(text=body, content_type="text/plain")

        app = web.Application()
        app.router.add_get("/metrics", metrics)
        return app


@contextlib.asynccontextmanager
async def prometheus(binary: str, tmp: Path, target: str) -> AsyncIterator[str]:
    """A real Prometheus scraping ``target`` (host:port) every second; yields its URL."""
    port = free_port()
    config = tmp / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        f"scrape_configs:\n  - job_name: bench\n    static_configs: [{{targets: ['{target}']}}]\n"
    )
    url = f"http://127.0.0.1:{port}"
    log_path = tmp / "prometheus.log"
    with log_path.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp / 'prom-data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
            stdout=out,
            stderr=asyncio.subprocess.STDOUT,
        )
    try:
        await _wait_http(url + "/-/ready", 20.0, lambda: proc.returncode is None, log_path)
        yield url
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await proc.wait()


async def _wait_http(url: str, timeout: float, alive: Callable[[], bool], log_path: Path) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            if not alive():
                raise RuntimeError(f"prometheus exited:\n{log_path.read_text(errors='replace')[-2000:]}")
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with session.get(url, timeout=aiohttp.ClientTimeout(total=1)) as r:
                    if r.status == 200:
                        return
            await asyncio.sleep(0.1)
    raise RuntimeError(f"{url} not ready after {timeout}s")


class _DeliveryLines(logging.Handler):
    """Keeps the ``sidecar.delivery`` canonical lines."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if hasattr(record, "captures"):
            self.records.append(record)


async def _until(predicate: Callable[[], Any], what: str, timeout: float = STEP_TIMEOUT) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise RuntimeError(f"e2e benchmark: timed out after {timeout:g}s waiting for {what}")
        await asyncio.sleep(0.02)


async def run(*, quick: bool, log: Any = print) -> dict[str, Any]:
    plan = QUICK if quick else FULL
    chromium, binary = find_chromium(), find_prometheus()
    if chromium is None or binary is None:
        raise RuntimeError("the e2e benchmark needs chromium and prometheus (see ./dev bench)")
    started = time.monotonic()
    exporter = Exporter()
    lines = _DeliveryLines()
    delivery_log = logging.getLogger("sidecar.delivery")
    old_level = delivery_log.level
    delivery_log.setLevel(logging.INFO)
    delivery_log.addHandler(lines)
    exporter_runner, exporter_url = await serve(exporter.app())
    boxes = await start_sandboxes(query_delay=0.3)
    try:
        with tempfile.TemporaryDirectory(prefix="sidecar-bench-e2e-") as tmp_name:
            tmp = Path(tmp_name)
            async with prometheus(binary, tmp, exporter_url.removeprefix("http://")) as prom_url:
                path = tmp / "config.yaml"
                path.write_text(CONFIG)
                env = {**boxes.env(), "CHROMIUM": chromium, "STATE_DIR": str(tmp / "state"), "PROMETHEUS_URL": prom_url}
                puts: list[tuple[float, AlertEvent]] = []

                def record(event: AlertEvent) -> None:
                    puts.append((time.time(), event))

                daemon = Daemon(load_config(path, env=env), options=Options(on_event=record))
                await daemon.start()
                try:
                    # not measured: Prometheus's first scrapes, the dashboard lookup, the first capture
                    await _cycle(daemon, boxes.flashduty, exporter, puts, lines)
                    cycles = []
                    n = plan["cycles"]
                    phases = [(k + 0.5) / n * PERIOD_S for k in range(n)]
                    random.Random(7).shuffle(phases)  # fixed order: runs stay comparable
                    for i, phase in enumerate(phases):
                        await asyncio.sleep(phase)
                        cycles.append(await _cycle(daemon, boxes.flashduty, exporter, puts, lines))
                        c = cycles[-1]
                        log(
                            f"  e2e cycle {i + 1}/{plan['cycles']}: {c['total_ms']:.0f} ms (eval {c['eval_wait_ms']:.0f})"
                        )
                finally:
                    await daemon.stop()
                state = boxes.flashduty.state()
    finally:
        await boxes.close()
        await exporter_runner.cleanup()
        delivery_log.removeHandler(lines)
        delivery_log.setLevel(old_level)
    parts = ("total_ms", "eval_wait_ms", "capture_ms", "upload_ms", "push_ms", "other_ms")
    return {
        "cycles": cycles,
        "summary": {p: summary([c[p] for c in cycles]) for p in parts},
        "median_share_pct": _shares(cycles, parts[1:]),
        "http_429": state["http_429"],
        "seconds": round(time.monotonic() - started, 1),
    }


def _shares(cycles: list[dict[str, float]], parts: tuple[str, ...]) -> dict[str, float]:
    total = quantile([c["total_ms"] for c in cycles], 0.5)
    return {p: round(quantile([c[p] for c in cycles], 0.5) / total * 100, 1) for p in parts} if total else {}


def _request_sum(daemon: Daemon, endpoint: str) -> float:
    value = daemon.metrics.registry.get_sample_value(
        "flashduty_sidecar_flashduty_request_duration_seconds_sum", {"endpoint": endpoint}
    )
    return float(value or 0.0)


async def _cycle(
    daemon: Daemon,
    flashduty: Any,
    exporter: Exporter,
    puts: list[tuple[float, AlertEvent]],
    lines: _DeliveryLines,
) -> dict[str, float]:
    upload0, push0 = _request_sum(daemon, "upload"), _request_sum(daemon, "push")
    seen_lines = len(lines.records)
    toggle = time.time()
    exporter.value = 12.0

    def firing_with_picture() -> Any:
        for alert in flashduty.alerts:
            if alert.alert_status == "Ok" or not alert.events or alert.events[0].received_at < toggle:
                continue
            with_image = [e.received_at for e in alert.events if e.images]
            if with_image:
                return alert, min(with_image)
        return None

    alert, arrived = await _until(firing_with_picture, "the firing alert with its picture")
    put_at = next((t for t, ev in puts if t >= toggle and ev.status != "Ok"), None)
    if put_at is None:
        raise RuntimeError("e2e benchmark: the alert arrived without passing the outbox")
    upload = _request_sum(daemon, "upload") - upload0
    push = _request_sum(daemon, "push") - push0
    line = await _until(
        lambda: next(
            (r for r in lines.records[seen_lines:] if getattr(r, "status", "") != "Ok" and r.captures),  # type: ignore[attr-defined]
            None,
        ),
        "the delivery log line",
    )
    capture_ms = float(line.captures[0]["ms"] or 0)
    exporter.value = 0.0
    await _until(lambda: alert.alert_status == "Ok", "the Ok")
    await _until(lambda: daemon.pipeline.idle and daemon.outbox.pending_count() == 0, "the daemon to be idle")
    total = (arrived - toggle) * 1000
    eval_wait = (put_at - toggle) * 1000
    upload_ms, push_ms = upload * 1000, push * 1000
    return {
        "total_ms": round(total, 1),
        "eval_wait_ms": round(eval_wait, 1),
        "capture_ms": round(capture_ms, 1),
        "upload_ms": round(upload_ms, 1),
        "push_ms": round(push_ms, 1),
        "other_ms": round(total - eval_wait - capture_ms - upload_ms - push_ms, 1),
    }


if __name__ == "__main__":
    print(json.dumps(asyncio.run(run(quick="--quick" in sys.argv)), indent=2))
