"""The reconcile job: close in Flashduty what is no longer firing here (needs ``flashduty.app_key``).

It runs once the rules had time to evaluate, so that "firing" is the current truth: at start-up
(``reconcile_context``), and with ``ha.mode: kubernetes`` each time this replica becomes the leader
(``ha.replica``), so that what a leader killed with events in its outbox would have resolved is
resolved all the same. Never fatal: the alert path does not depend on it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator

from aiohttp import web

from sidecar.config import Config
from sidecar.delivery.reconcile import reconcile
from sidecar.model import RESERVED_RULE_NAMES

__all__ = ["first_round_delay", "reconcile_context", "reconcile_once", "start_delay"]

log = logging.getLogger("sidecar.app")


def first_round_delay(cfg: Config) -> float:
    """Long enough for every polling rule to have been evaluated twice (at most 5 minutes)."""
    longest = max((r.interval for r in cfg.rules if r.source != "schedule"), default=0.0)
    return min(longest * 2 + 5.0, 300.0)


async def reconcile_once(app: web.Application, delay: float) -> None:
    from sidecar import app as keys  # the app module imports this one: looked up at call time

    await asyncio.sleep(delay)
    try:
        # webhook alerts are owned by the Alertmanager/Grafana that sends them: never closed here
        report = await reconcile(
            app[keys.CLIENT],
            app[keys.OUTBOX],
            firing_keys=app[keys.SCHEDULER].firing_keys(),
            now=time.time(),
            keep_rules=RESERVED_RULE_NAMES,
        )
    except Exception as e:
        log.warning("reconcile with Flashduty failed: %s", e)
        return
    app[keys.PIPELINE].kick()
    log.info("reconciled with Flashduty: %s", report.summary(), extra={"report": report.as_dict()})


def start_delay(app: web.Application, elapsed: float = 0.0) -> float:
    """How long a reconcile round waits: ``Options.reconcile_delay`` when set, else what is left
    of ``first_round_delay`` after ``elapsed`` seconds of this process."""
    from sidecar import app as keys

    if (delay := app[keys.OPTIONS].reconcile_delay) is not None:
        return delay
    return max(0.0, first_round_delay(app[keys.CURRENT].config) - elapsed)


async def reconcile_context(app: web.Application) -> AsyncIterator[None]:
    """The app's cleanup context: one reconcile round after start-up (with ``app_key``, and not
    with HA, where each takeover runs one instead)."""
    from sidecar import app as keys  # the app module imports this one: looked up at call time
    from sidecar.ha import replica as ha

    cfg, job = app[keys.CURRENT].config, None
    if cfg.flashduty.app_key is not None and not ha.enabled(app):
        job = await app[keys.JOBS].spawn(reconcile_once(app, start_delay(app)), name="reconcile")
    yield
    if job is not None:
        await job.close()
