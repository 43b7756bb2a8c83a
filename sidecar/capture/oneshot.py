"""One capture from the config, for the ``capture`` command: a request with the configured
defaults (``request_from_config``) and a service started, used once and closed (``capture_once``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from pathlib import Path

from sidecar.capture.errors import CaptureClass, CaptureError
from sidecar.capture.result import CaptureResult
from sidecar.capture.service import CaptureService
from sidecar.config import Config
from sidecar.metrics import Metrics
from sidecar.model import PanelCapture

__all__ = ["capture_once", "request_from_config"]


def request_from_config(
    cfg: Config,
    *,
    dashboard: str,
    panel: str | None = None,
    time_from: str = "now-1h",
    time_to: str = "now",
    vars: Iterable[tuple[str, str]] = (),
) -> PanelCapture:
    """A ``PanelCapture`` with size, scale, theme, time zone and format from the config."""
    return PanelCapture(
        dashboard=dashboard,
        panel=panel,
        time_from=time_from,
        time_to=time_to,
        vars=tuple(vars),
        width=cfg.capture.width,
        height=cfg.capture.height,
        scale=cfg.capture.scale,
        theme=cfg.grafana.theme,
        timezone=cfg.grafana.timezone,
        format=cfg.capture.format,
    )


async def capture_once(cfg: Config, req: PanelCapture, out_path: str) -> CaptureResult:
    """Start a service, capture ``req``, write the picture to ``out_path`` (if any), close.

    Never raises for a failed capture, not even when Chromium cannot start (class ``error``).
    """
    service = CaptureService(grafana=cfg.grafana, capture=cfg.capture, metrics=Metrics())
    try:
        try:
            await service.start()
        except CaptureError as e:
            result = CaptureResult(req, CaptureClass.ERROR, None, None, service.panel_url(req), {}, str(e))
        else:
            result = await service.capture(req)
    finally:
        await service.close()
    if result.image is not None:
        await asyncio.to_thread(Path(out_path).write_bytes, result.image)
    return result
