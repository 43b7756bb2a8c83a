"""What the status page shows, gathered from the running daemon: ``snapshot(app)`` → plain data.

This is the page's one seam to the rest of the daemon: every value is read here from the
resources that own it (through the app's keys) and nowhere else. A part that does not exist
in this build, or has not started yet, is ``None`` and the page says "unknown" or "not enabled";
nothing is made up. Parts added later plug in through ``EXTRAS`` (one line each): a function of
the app returning a ``{label: text}`` mapping, shown in the daemon section.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

from aiohttp import web

__all__ = ["EXTRAS", "STARTED", "Snapshot", "snapshot"]

STARTED = web.AppKey("status_started", float)  # wall time the app was built

# (label, getter) for parts that other builds add: e.g. the detected Grafana version, HA leadership
Extra = Callable[[web.Application], "str | None"]


def _grafana(app: web.Application) -> str | None:
    """What capture detected (``Grafana 11.2.0 at http://…``), unknown until its first lookup."""
    from sidecar import app as keys

    capture = app.get(keys.CAPTURE)
    info = capture.grafana_info if capture is not None else None
    return info.describe() if info is not None else None


EXTRAS: dict[str, Extra] = {
    "Grafana": _grafana,
    "High availability": lambda app: "not enabled",
}


@dataclass
class Snapshot:
    now: float
    daemon: dict[str, Any]
    delivery: dict[str, Any]
    rules: list[dict[str, Any]] = field(default_factory=list)
    deliveries: list[dict[str, Any]] = field(default_factory=list)


def _version() -> str:
    try:
        return metadata.version("flashduty-sidecar")
    except metadata.PackageNotFoundError:
        return "unknown"


def _get(app: web.Application, key: web.AppKey[Any]) -> Any:
    return app.get(key)  # None until its resource has started


async def snapshot(app: web.Application, *, deliveries: int) -> Snapshot:
    from sidecar import app as keys  # the app module imports this package: looked up at call time

    now = time.time()
    cfg = app[keys.CURRENT].config
    reloader, capture, client = _get(app, keys.RELOADER), _get(app, keys.CAPTURE), _get(app, keys.CLIENT)
    browser = capture.browser if capture is not None else None
    transport = client.transport if client is not None else None
    daemon: dict[str, Any] = {
        "version": _version(),
        "started": app.get(STARTED),
        "config_path": app[keys.OPTIONS].config_path,
        "reload": reloader.last if reloader is not None else None,
        "reload_at": reloader.last_at if reloader is not None else None,
        "browser_version": browser.version if browser is not None else None,
        "browser_connected": browser.connected if browser is not None else False,
        "browser_launches": browser.launches if browser is not None else 0,
        "flashduty_host": cfg.flashduty.api_host,
        "flashduty_answer_at": transport.last_answer_at if transport else None,
        "flashduty_failure": transport.last_failure if transport else None,
        "flashduty_429_at": transport.last_429_at if transport else None,
        "extras": {label: get(app) for label, get in EXTRAS.items()},
    }
    outbox = _get(app, keys.OUTBOX)
    delivery: dict[str, Any] = {"open": outbox is not None}
    if outbox is not None:
        delivery.update(
            depth=outbox.pending_count(),
            oldest_age=outbox.oldest_pending_age(now),
            dead_letters=outbox.dead_letters.entries(newest=50),
            dead_letter_count=outbox.dead_letter_count(),
        )
    if client is not None:
        delivery["upload_budget"] = [
            {"limit": lim, "seconds": span, "used": used} for lim, span, used in client.limiters["upload"].used()
        ]
    snap = Snapshot(now=now, daemon=daemon, delivery=delivery, rules=_rules(app, cfg))
    journal = _get(app, keys.JOURNAL)
    if journal is not None:
        snap.deliveries = await journal.recent(deliveries)
        delivery["pictures_kept"], delivery["picture_bytes"] = await journal.stats()
    return snap


def _rules(app: web.Application, cfg: Any) -> list[dict[str, Any]]:
    from sidecar import app as keys

    scheduler = _get(app, keys.SCHEDULER)
    out = []
    for rule in cfg.rules:
        ev = scheduler.evaluator(rule.name) if scheduler is not None else None
        instances = []
        for inst in sorted(getattr(ev, "instances", {}).values(), key=lambda i: (i.state, sorted(i.labels.items()))):
            instances.append(
                {
                    "labels": dict(inst.labels),
                    "state": inst.state,
                    "since": inst.fired_at if inst.state == "firing" and inst.fired_at else inst.active_at,
                    "value": None if math.isnan(inst.value) else inst.value,
                    "resolved_at": inst.resolved_at,
                    "alert_key": inst.key,
                }
            )
        out.append(
            {
                "name": rule.name,
                "source": rule.source,
                "expr": getattr(rule, "expr", None),
                "for": rule.for_,
                "health": getattr(ev, "health", "unknown"),
                "last_eval_at": getattr(ev, "last_eval_at", None),
                "last_error": getattr(ev, "last_error", None),
                "instances": instances,
            }
        )
    return out
