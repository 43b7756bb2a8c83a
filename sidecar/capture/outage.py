"""The browser's availability: since when it has been down and why, and how long to wait before
the next launch attempt.

A browser that cannot be launched is not a start-up error (the sidecar shares the pod with
Grafana: its readiness never depends on the browser). The failure is logged once per outage,
the launch is retried in the background — as is the relaunch of a browser that keeps dying
before it finishes a capture — after the second failure in a row with a growing delay (2, 4, …
30 s), and captures fail at once meanwhile (``check``: ``browser unavailable: …``).
``down_for`` says for how long; past ``capture.liveness_grace`` the daemon's liveness fails so
Kubernetes restarts the sidecar container (never Grafana's).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from sidecar.capture.errors import CaptureError

__all__ = ["MAX_BACKOFF", "Outage"]

log = logging.getLogger("sidecar.capture")

MAX_BACKOFF = 30.0  # longest wait between two launch attempts


class Outage:
    """Failed launches and crashes of one manager's browser, on ``clock``."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self.since: float | None = None  # when the browser became unavailable
        self.error: str | None = None  # why the last launch failed, until one succeeds
        self.streak = 0  # browsers in a row that died before finishing a capture, or failed to launch

    def down_for(self) -> float:
        """Seconds since the browser became unavailable; 0.0 while it is not."""
        return 0.0 if self.since is None else max(0.0, self._clock() - self.since)

    def check(self) -> None:
        """``CaptureError`` at once while the last launch failed (retried in the background)."""
        if self.error is not None:
            raise CaptureError(f"browser unavailable: {self.error}")

    def backoff(self) -> float:
        """Seconds to wait before the next launch: none after a single failure."""
        return 0.0 if self.streak <= 1 else min(MAX_BACKOFF, 2.0 ** (self.streak - 1))

    def crashed(self, captures: int) -> None:
        """The browser disconnected after ``captures`` captures."""
        self.streak = self.streak + 1 if captures == 0 else 1
        self.down()

    def down(self) -> None:
        """No browser from now on (until ``launched``), unless it was down already."""
        if self.since is None:
            self.since = self._clock()

    def launch_failed(self, reason: str) -> None:
        first = self.error is None
        self.error = reason
        self.down()
        self.streak += 1
        if first:
            log.warning("%s; retrying in the background, captures fail until it is back", reason)
        else:
            log.debug("%s (still)", reason)

    def launched(self) -> None:
        if self.error is not None:
            log.info("browser available again after %.0f s", self.down_for())
        self.error = self.since = None

    def reset(self) -> None:
        """Forget the outage (the manager closed); the streak is kept, as before a restart."""
        self.error = self.since = None
