"""Shared pieces of the delivery tests (and of ``outbox_daemon.py``, the kill -9 subject, which
imports this module outside pytest: nothing here needs pytest).

Flashduty is always the real sandbox on a loopback port, spoken to by the real
``FlashdutyClient`` and ``ImageUploader``; only the capture service (a collaborator that needs
Chromium and Grafana) is replaced, by ``FakeCapture``: a small hand-written class that returns
a distinct Pillow-made PNG per panel after a configurable delay, or a failure class.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from sidecar.capture.errors import CaptureClass
from sidecar.capture.result import CaptureResult
from sidecar.capture.urls import human_link
from sidecar.config import Config
from sidecar.delivery.outbox import Outbox
from sidecar.delivery.pipeline import DeliveryPipeline
from sidecar.delivery.push_slots import PipelineSettings
from sidecar.flashduty.client import FlashdutyClient
from sidecar.flashduty.uploader import ImageUploader
from sidecar.metrics import Metrics
from sidecar.model import AlertEvent, EventStatus, PanelCapture, alert_key
from sidecar.priority import PrioritySlots
from sidecar_sandbox.flashduty import FlashdutySandbox
from tests.support.wait import eventually

KEY = "fd-int-delivery-5ecret-0123456789"
APP_KEY = "fd-app-delivery-5ecret-abcdef"
GRAFANA = "http://grafana.test:3000"


def png(n: int) -> bytes:
    """A small PNG whose bytes are distinct for every ``n`` (a colour per n)."""
    img = Image.new("RGB", (24, 12), ((n * 53) % 256, (n // 256) % 256, (n * 7 + 11) % 256))
    img.putpixel((0, 0), (n % 256, (n >> 8) % 256, (n >> 16) % 256))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def sandbox_key(data: bytes) -> str:
    """The ``image_key`` the sandbox gives these bytes (content-addressed)."""
    return "img_" + hashlib.sha256(data).hexdigest()


@dataclass
class Behaviour:
    """How ``FakeCapture`` answers for one dashboard."""

    delay: float = 0.02
    cls: CaptureClass = CaptureClass.OK
    image: bytes | None = None  # default: png(seed of the dashboard)


class FakeCapture:
    """Stands in for ``CaptureService``: same ``capture``/``panel_url`` surface.

    The picture of dashboard ``d<n>`` is ``png(n)``; other dashboards get a hash-derived one.
    A delay longer than the timeout behaves like the real service: a ``timeout`` result once
    the timeout has elapsed.
    """

    def __init__(self, *, delay: float = 0.02, concurrency: int = 4) -> None:
        self.default = Behaviour(delay=delay)
        self.by_dashboard: dict[str, Behaviour] = {}
        self.calls: list[tuple[float, PanelCapture]] = []
        self.started: list[PanelCapture] = []  # in the order they got a capture slot
        self._slots = PrioritySlots(concurrency)  # served by rank, as CaptureService's are

    def set(self, dashboard: str, **kw: Any) -> None:
        self.by_dashboard[dashboard] = Behaviour(**kw)

    def link(self, render_url: str) -> str:
        return human_link(render_url)

    def panel_url(self, req: PanelCapture) -> str:
        return f"{GRAFANA}/d/{req.dashboard}?orgId=1&viewPanel={req.panel}"

    @staticmethod
    def image_for(dashboard: str, vars: tuple[tuple[str, str], ...] = ()) -> bytes:
        """``png(n)`` for ``d<n>`` without variables; else a picture per dashboard and variables."""
        if vars:
            return png(int(hashlib.sha256(repr((dashboard, vars)).encode()).hexdigest()[:6], 16))
        if dashboard[1:].isdigit():
            return png(int(dashboard[1:]))
        return png(int(hashlib.sha256(dashboard.encode()).hexdigest()[:6], 16))

    async def capture(self, req: PanelCapture, *, timeout: float | None = None, rank: int = 5) -> CaptureResult:
        self.calls.append((time.monotonic(), req))
        b = self.by_dashboard.get(req.dashboard, self.default)
        limit = 20.0 if timeout is None else timeout
        async with self._slots.acquire(rank):
            self.started.append(req)
            if b.delay > limit:
                await asyncio.sleep(limit)
                return self._result(req, CaptureClass.TIMEOUT, None, f"panel still loading after {limit:g}s")
            await asyncio.sleep(b.delay)
        if b.cls is CaptureClass.OK:
            return self._result(req, b.cls, b.image or self.image_for(req.dashboard, req.vars), "ok")
        return self._result(req, b.cls, None, f"{b.cls.value} (fake)")

    def _result(self, req: PanelCapture, cls: CaptureClass, image: bytes | None, detail: str) -> CaptureResult:
        return CaptureResult(
            request=req,
            cls=cls,
            image=image,
            content_type="image/png" if image else None,
            url=self.panel_url(req),
            steps={"screenshot": 0.01},
            detail=detail,
            title=f"Grafana title {req.dashboard}/{req.panel}",
        )


def panel(dashboard: str, n: int = 1, title: str = "") -> PanelCapture:
    return PanelCapture(dashboard=dashboard, panel=str(n), time_from="now-1h", time_to="now", title=title)


def event(
    n: int,
    status: EventStatus = "Critical",
    *,
    rule: str = "Burst",
    panels: tuple[PanelCapture, ...] | None = None,
    title: str | None = None,
) -> AlertEvent:
    """Alert instance ``n`` of ``rule``; by default one panel, dashboard ``d<n>``."""
    labels = {"alertname": rule, "instance": f"host-{n}"}
    return AlertEvent(
        alert_key=alert_key(rule, labels),
        rule=rule,
        status=status,
        title=title or f"{rule} on host-{n}",
        description=f"instance {n}",
        labels=labels,
        panels=(panel(f"d{n}", 1, f"CPU host-{n}"),) if panels is None else panels,
        event_time=time.time(),
    )


def make_config(
    url: str,
    state_dir: Path,
    *,
    budget: float = 2.0,
    capture_timeout: float = 5.0,
    timeout: float = 2.0,
    workers: int = 4,
    max_attempts: int = 10,
    shared_pictures: bool = True,
) -> Config:
    def ms(s: float) -> str:
        return f"{round(s * 1000)}ms"

    return Config.model_validate(
        {
            "flashduty": {"api_host": url, "integration_key": KEY, "app_key": APP_KEY, "timeout": ms(timeout)},
            "grafana": {"url": GRAFANA},
            "capture": {"image_budget": ms(budget), "timeout": ms(capture_timeout)},
            "delivery": {"workers": workers, "max_attempts": max_attempts, "shared_pictures": shared_pictures},
            "state_dir": str(state_dir),
        }
    )


class Harness:
    """Sandbox + real client/uploader/outbox + pipeline, wired like the daemon wires them."""

    def __init__(
        self,
        *,
        sandbox: FlashdutySandbox,
        config: Config,
        capture: FakeCapture,
        time_scale: float,
        outbox_rng: Callable[[], float],
        followup_window: float,
    ) -> None:
        self.sandbox = sandbox
        self.config = config
        self.capture = capture
        self.metrics = Metrics()
        state = Path(config.state_dir)
        self.client = FlashdutyClient(config.flashduty, metrics=self.metrics, time_scale=time_scale)
        self.uploader = ImageUploader(
            self.client, db_path=str(state / "images.sqlite3"), ttl=3600, metrics=self.metrics
        )
        self.outbox = Outbox.in_dir(state, max_attempts=config.delivery.max_attempts, rng=outbox_rng)
        self.pipeline = DeliveryPipeline(
            outbox=self.outbox,
            capture=capture,
            uploader=self.uploader,
            client=self.client,
            settings=PipelineSettings.from_config(config),
            metrics=self.metrics,
            followup_window=followup_window,
        )
        self.put_at: dict[str, float] = {}

    def put(self, ev: AlertEvent) -> int:
        """What the engine does: durable put, then kick."""
        self.put_at.setdefault(ev.alert_key, time.time())
        eid = self.outbox.put(ev)
        self.pipeline.kick()
        return eid

    async def close(self) -> None:
        await self.pipeline.stop(grace=2.0)
        await self.uploader.close()
        await self.client.close()
        self.outbox.close()

    # ---- what the sandbox saw

    def alerts(self, key: str) -> list[dict[str, Any]]:
        """Every sandbox alert with this alert_key, oldest first (an Ok closes one)."""
        return [a.to_state() for a in self.sandbox.alerts if a.alert_key == key]

    def events(self, key: str) -> list[dict[str, Any]]:
        return [e for a in self.alerts(key) for e in a["events"]]

    def delivered_keys(self) -> set[str]:
        return {a.alert_key for a in self.sandbox.alerts}

    def sample(self, name: str, **labels: str) -> float:
        return self.metrics.registry.get_sample_value(f"flashduty_sidecar_{name}", labels) or 0.0

    async def wait_for(self, predicate: Callable[[], bool], timeout: float, what: str = "condition") -> None:
        await eventually(predicate, what, timeout)

    async def drained(self, timeout: float = 10.0) -> None:
        """Outbox empty and no delivery, follow-up or drain in progress."""
        await self.wait_for(
            lambda: self.outbox.pending_count() == 0 and self.pipeline.idle, timeout, "the pipeline to drain"
        )


@contextlib.asynccontextmanager
async def harness(
    state_dir: Path,
    *,
    time_scale: float = 1.0,
    capture: FakeCapture | None = None,
    outbox_rng: Callable[[], float] = lambda: 0.05,
    followup_window: float = 30.0,
    start: bool = True,
    **config_kw: Any,
) -> AsyncIterator[Harness]:
    sandbox = FlashdutySandbox(integration_keys=(KEY,), app_keys=(APP_KEY,), time_scale=time_scale)
    async with sandbox.serve() as url:
        h = Harness(
            sandbox=sandbox,
            config=make_config(url, state_dir, **config_kw),
            capture=capture or FakeCapture(),
            time_scale=time_scale,
            outbox_rng=outbox_rng,
            followup_window=followup_window,
        )
        try:
            if start:
                await h.pipeline.start()
            yield h
        finally:
            await h.close()
