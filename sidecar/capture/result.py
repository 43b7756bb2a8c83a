"""``CaptureResult``: what one capture gives its caller (pipeline, CLI, demo).

A capture never raises for a failure: its result's ``cls`` says what happened and ``detail``
says why, in one sentence without secrets. ``steps`` holds the seconds of each named step
(``queue`` is waiting for a slot and not part of ``duration``).
"""

from __future__ import annotations

from dataclasses import dataclass

from sidecar.capture.errors import CaptureClass
from sidecar.model import PanelCapture

__all__ = ["CaptureResult"]


@dataclass(frozen=True)
class CaptureResult:
    """One capture's outcome. ``image`` is set for ``ok``, ``no_data`` and ``panel_error``."""

    request: PanelCapture
    cls: CaptureClass
    image: bytes | None
    content_type: str | None
    url: str
    steps: dict[str, float]  # seconds per named step
    detail: str  # one human sentence; never contains secrets
    title: str = ""  # the panel's (or dashboard's) title in Grafana, when it was looked up

    @property
    def usable(self) -> bool:
        """An image exists (``timeout``, ``login``, ``not_found`` and ``error`` have none)."""
        return self.image is not None

    @property
    def alt(self) -> str:
        """``images[].alt``: the configured title, else Grafana's title, else ``dashboard/panel``."""
        return self.request.title or self.title or self.request.alt

    @property
    def duration(self) -> float:
        return round(sum(v for k, v in self.steps.items() if k != "queue"), 4)
