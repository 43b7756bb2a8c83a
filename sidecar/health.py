"""The health model: readiness is "can this container serve", liveness is "is it stuck".

The sidecar shares its pod with Grafana, and a pod is Ready only when all its containers are:
an unready sidecar takes Grafana out of its Service. So readiness (``/readyz``) is only what
this process itself needs to accept work — the HTTP server listens and the state (outbox,
rule state) is open — and never the browser, Grafana, Flashduty or leadership. Those degrade
the pictures, never the alert, and show in metrics and logs.

Liveness (``/healthz``) fails when something is stuck that only a restart of this container
fixes: a heartbeat that stopped (the event loop, the rule scheduler, the delivery dispatcher)
or a live check that reports a failure (the browser could not be launched for longer than
``capture.liveness_grace``). Kubernetes then restarts the sidecar container, not Grafana.

The ``flashduty_sidecar_ready`` gauge is computed from the same readiness, so the metric and
``/readyz`` always agree.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["Health"]

LiveCheck = Callable[[], str | None]  # None: fine; else one sentence saying what is wrong


@dataclass
class Health:
    """Heartbeats and live checks (liveness), readiness checks (name → predicate)."""

    clock: Callable[[], float] = time.monotonic
    beats: dict[str, tuple[Callable[[], float | None], float]] = field(default_factory=dict)
    live_checks: dict[str, LiveCheck] = field(default_factory=dict)
    ready_checks: dict[str, Callable[[], bool]] = field(default_factory=dict)

    def add_heartbeat(self, name: str, last_beat: Callable[[], float | None], allowance: float) -> None:
        """``last_beat`` returns the monotonic time of the last beat, or None when not started."""
        self.beats[name] = (last_beat, allowance)

    def add_live_check(self, name: str, check: LiveCheck) -> None:
        self.live_checks[name] = check

    def add_ready_check(self, name: str, check: Callable[[], bool]) -> None:
        self.ready_checks[name] = check

    def remove(self, name: str) -> None:
        """Forget every check of that name (its resource is being torn down)."""
        for table in (self.beats, self.live_checks, self.ready_checks):
            table.pop(name, None)

    def liveness(self) -> tuple[bool, dict[str, str]]:
        now = self.clock()
        out: dict[str, str] = {}
        ok = True
        for name, (beat, allowance) in self.beats.items():
            last = beat()
            if last is None:
                out[name] = "not started"
                continue
            age = now - last
            if age > allowance:
                ok = False
                out[name] = f"stalled: no heartbeat for {age:.0f}s (allowed {allowance:.0f}s)"
            else:
                out[name] = f"ok ({age:.1f}s ago)"
        for name, check in self.live_checks.items():
            try:
                problem = check()
            except Exception as e:  # a check must never break the probe
                problem = f"check failed: {type(e).__name__}"
            if problem:
                ok = False
            out[name] = problem or "ok"
        return ok, out

    def readiness(self) -> tuple[bool, dict[str, str]]:
        out = {}
        for name, check in self.ready_checks.items():
            try:
                good = bool(check())
            except Exception as e:  # a check must never break the probe
                out[name] = f"error: {type(e).__name__}"
                continue
            out[name] = "ok" if good else "not ready"
        return bool(out) and all(v == "ok" for v in out.values()), out

    def ready_value(self) -> float:
        """1.0 when ready, else 0.0: the ``ready`` gauge's function."""
        return 1.0 if self.readiness()[0] else 0.0
