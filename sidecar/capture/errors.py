"""How a capture ends: its class, and the errors that carry one.

::

    CaptureError        a capture failed; ``cls`` says how, ``str()`` is one safe sentence
    └── CaptureTimeout  a step did not finish before the deadline (``step``, ``url``)

``CaptureService.capture`` turns every ``CaptureError`` into a result of that class; the rest of
the capture package raises them.
"""

from __future__ import annotations

import enum

__all__ = ["CaptureClass", "CaptureError", "CaptureTimeout", "first_line"]


class CaptureClass(enum.StrEnum):
    """Outcome of one capture. ``ok``, ``no_data`` and ``panel_error`` keep their picture."""

    OK = "ok"
    TIMEOUT = "timeout"
    LOGIN = "login"
    NOT_FOUND = "not_found"
    PANEL_ERROR = "panel_error"
    NO_DATA = "no_data"
    NOT_LOADED = "not_loaded"  # Grafana's application did not start (sub path, root_url, assets)
    ORG_ACCESS = "org_access"  # the credentials cannot use the alert's Grafana org
    ERROR = "error"


class CaptureError(Exception):
    """A capture failed. The message is one sentence without secrets (it reaches logs)."""

    def __init__(self, message: str, cls: CaptureClass = CaptureClass.ERROR) -> None:
        super().__init__(message)
        self.cls = cls


class CaptureTimeout(CaptureError):
    """``step`` (navigate, wait_ready, ...) did not finish before the capture's deadline."""

    def __init__(self, step: str, url: str, waiting_for: str = "") -> None:
        self.step = step
        self.url = url
        self.waiting_for = waiting_for
        super().__init__(f"{step} did not finish in time", CaptureClass.TIMEOUT)


def first_line(e: BaseException) -> str:
    """The first line of ``e`` (at most 200 characters), else its type: Playwright's messages go
    on with a call log that may list request headers."""
    text = str(e).strip()
    return text.splitlines()[0][:200] if text else type(e).__name__
