"""One factory for the daemon's aiohttp application: a cleanup context per resource.

``build_app`` returns an application whose resources are aiohttp cleanup contexts, each
owning exactly one thing, started in this order and torn down in reverse:

    jobs        aiojobs scheduler: every background job (heartbeat, reconcile, config watch)
    state       rule state (SQLite) and the outbox (SQLite): readiness "state"
    session     the aiohttp client session of the rule sources
    client      the Flashduty client (its own session, limiters)
    uploader    image-key cache + upload singleflight (closed before the client it uses)
    capture     Playwright, the warm browser and its context pool: liveness "browser"
    journal     the status page's deliveries and pictures (``sidecar.status``; ``GET /``)
    pipeline    the delivery dispatcher and its deliveries: liveness "workers"
    scheduler   the rule jobs (APScheduler): liveness "scheduler"
    ingest      the webhook's handler, the Alertmanager API's handlers and its endsAt job
    reconcile   one job: close in Flashduty what is no longer firing (with ``app_key``; ``reconcile_job``)
    reloader    the one reload path and the config-file watcher
    ha          with ``ha.mode: kubernetes``: the Lease (after jobs) and the election (last), ``sidecar.ha``

Components are found by typed ``web.AppKey``s; a start-up failure unwinds the contexts that had started.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import aiojobs
from aiohttp import web

from sidecar.capture.errors import CaptureError
from sidecar.capture.service import CaptureService
from sidecar.config import Config
from sidecar.delivery.outbox import OUTBOX_FILE, Outbox
from sidecar.delivery.pipeline import DeliveryPipeline
from sidecar.delivery.push_slots import PipelineSettings
from sidecar.flashduty.client import FlashdutyClient
from sidecar.flashduty.uploader import ImageUploader
from sidecar.ha import replica as ha
from sidecar.ha.pipeline import ReplicaPipeline
from sidecar.health import Health
from sidecar.ingest.am_api import make_alerts_api
from sidecar.ingest.webhook import make_webhook_handler
from sidecar.logs import set_level
from sidecar.metrics import Metrics
from sidecar.model import AlertEvent
from sidecar.reconcile_job import reconcile_context
from sidecar.reload import Current, Reloader
from sidecar.rules.scheduler import RuleScheduler
from sidecar.rules.state import RuleState
from sidecar.status.page import JOURNAL, add_status_routes, journal_context
from sidecar.web import Handler, add_routes

__all__ = ["Options", "StartupError", "build_app"]

log = logging.getLogger("sidecar.app")


class StartupError(RuntimeError):
    """A resource could not start (browser path, port, state directory): one line, exit 1."""


@dataclass(frozen=True)
class Options:
    """How this process runs, beside the config (the CLI, tests and benchmarks set these)."""

    config_path: str | None = None
    time_scale: float = 1.0  # shortens Flashduty's rate-limit windows (tests against the sandbox)
    watch_interval: float = 5.0  # how often the config file's digest is compared
    reconcile_delay: float | None = None  # None: after every rule had time to evaluate twice
    on_event: Callable[[AlertEvent], None] | None = None  # called after each event is durable


CURRENT = web.AppKey("current", Current)
OPTIONS = web.AppKey("options", Options)
METRICS = web.AppKey("metrics", Metrics)
HEALTH = web.AppKey("health", Health)
JOBS = web.AppKey("jobs", aiojobs.Scheduler)
RULE_STATE = web.AppKey("rule_state", RuleState)
OUTBOX = web.AppKey("outbox", Outbox)
SESSION = web.AppKey("session", aiohttp.ClientSession)
CLIENT = web.AppKey("client", FlashdutyClient)
UPLOADER = web.AppKey("uploader", ImageUploader)
CAPTURE = web.AppKey("capture", CaptureService)
PIPELINE = web.AppKey("pipeline", DeliveryPipeline)
SCHEDULER = web.AppKey("scheduler", RuleScheduler)
WEBHOOK: web.AppKey[Handler] = web.AppKey("webhook")
ALERTS_API: web.AppKey[tuple[Handler, Handler]] = web.AppKey("alerts_api")
RELOADER = web.AppKey("reloader", Reloader)

HEARTBEAT_EVERY = 1.0
LOOP_ALLOWANCE = 15.0
WORKERS_ALLOWANCE = SCHEDULER_ALLOWANCE = 60.0


def build_app(cfg: Config, *, metrics: Metrics, options: Options) -> web.Application:
    app = web.Application(client_max_size=cfg.server.webhook_max_body)
    app[CURRENT] = Current(cfg)
    app[OPTIONS] = options
    app[METRICS] = metrics
    app[HEALTH] = health = Health()
    metrics.up.set_function(health.ready_value)

    add_routes(app, health=health, metrics=metrics, webhook=lambda a: a[WEBHOOK], alerts_api=lambda a: a[ALERTS_API])
    add_status_routes(app)
    app.cleanup_ctx.extend([_jobs, ha.lease_context, _state, _session, _client, _uploader, _capture])
    app.cleanup_ctx.extend([journal_context, _pipeline, _scheduler, _ingest, reconcile_context, _reloader])
    app.cleanup_ctx.append(ha.run_context)
    if cfg.ha.mode == "kubernetes":
        ha.add_routes(app, submit)
    return app


def submit(app: web.Application, event: AlertEvent) -> None:
    """Every source's sink: durable in the outbox first, then wake the dispatcher."""
    app[OUTBOX].put(event)
    app[PIPELINE].kick()
    ha.kick(app)  # a follower forwards it to the leader at once
    tap = app[OPTIONS].on_event
    if tap is not None:
        tap(event)


def _config(app: web.Application) -> Config:
    return app[CURRENT].config


# --------------------------------------------------------------------------- contexts


async def _jobs(app: web.Application) -> AsyncIterator[None]:
    metrics = app[METRICS]

    def on_error(_: aiojobs.Scheduler, context: dict[str, Any]) -> None:
        job = context.get("job")
        name = job.get_name() if job is not None else None
        metrics.background_errors.labels(job=name or "unnamed").inc()
        log.error("background job %s failed: %s", name, context.get("exception"), exc_info=context.get("exception"))

    app[JOBS] = jobs = aiojobs.Scheduler(limit=None, close_timeout=5.0, exception_handler=on_error)
    beat: list[float | None] = [None]

    async def heartbeat() -> None:
        while True:
            beat[0] = time.monotonic()
            await asyncio.sleep(HEARTBEAT_EVERY)

    job = await jobs.spawn(heartbeat(), name="loop-heartbeat")
    app[HEALTH].add_heartbeat("loop", lambda: beat[0], LOOP_ALLOWANCE)
    yield
    app[HEALTH].remove("loop")
    await job.close()
    await jobs.close()


async def _state(app: web.Application) -> AsyncIterator[None]:
    cfg = _config(app)
    state_dir = Path(cfg.state_dir)
    try:
        rule_state = RuleState(state_dir / "rules.sqlite3")
    except Exception as e:
        raise StartupError(f"state_dir {state_dir}: cannot open rules.sqlite3: {e}") from None
    try:
        outbox = Outbox(str(state_dir / OUTBOX_FILE), max_attempts=cfg.delivery.max_attempts)
    except Exception as e:
        rule_state.close()
        raise StartupError(f"state_dir {state_dir}: cannot open outbox.sqlite3: {e}") from None
    app[RULE_STATE], app[OUTBOX], open_ = rule_state, outbox, [True]
    app[HEALTH].add_ready_check("state", lambda: open_[0])
    yield
    open_[0] = False
    pending = outbox.pending_count()
    rule_state.close()
    outbox.close()
    log.info(
        "stopped; %d event(s) left in the outbox for the next start", pending, extra={"pending_in_outbox": pending}
    )


async def _session(app: web.Application) -> AsyncIterator[None]:
    async with aiohttp.ClientSession() as app[SESSION]:
        yield


async def _client(app: web.Application) -> AsyncIterator[None]:
    cfg = _config(app)
    session = ha.fenced_session(app)  # None: the client makes its own
    app[CLIENT] = client = FlashdutyClient(
        cfg.flashduty, metrics=app[METRICS], session=session, time_scale=app[OPTIONS].time_scale
    )
    yield
    await client.close()
    if session is not None:
        await session.close()


async def _uploader(app: web.Application) -> AsyncIterator[None]:
    cfg = _config(app)
    app[UPLOADER] = uploader = ImageUploader(
        app[CLIENT],
        db_path=str(Path(cfg.state_dir) / "images.sqlite3"),
        ttl=cfg.delivery.image_cache_ttl,
        metrics=app[METRICS],
    )
    yield
    await uploader.close()


async def _capture(app: web.Application) -> AsyncIterator[None]:
    cfg = _config(app)
    capture = CaptureService(grafana=cfg.grafana, capture=cfg.capture, metrics=app[METRICS])
    try:
        await capture.start()
    except CaptureError as e:
        await capture.close()
        raise StartupError(str(e)) from None
    app[CAPTURE] = capture

    def browser_problem() -> str | None:
        down, grace = capture.browser_down_for(), _config(app).capture.liveness_grace
        if down > grace:
            return f"the browser could not be launched for {down:.0f}s (allowed {grace:.0f}s)"
        return None

    app[HEALTH].add_live_check("browser", browser_problem)
    yield
    app[HEALTH].remove("browser")
    await capture.close()


async def _pipeline(app: web.Application) -> AsyncIterator[None]:
    cfg = _config(app)
    replica = ha.enabled(app)  # a replica's pipeline dispatches only while it leads
    pipeline = (ReplicaPipeline if replica else DeliveryPipeline)(
        outbox=app[OUTBOX],
        capture=app[CAPTURE],
        uploader=app[UPLOADER],
        client=app[CLIENT],
        settings=PipelineSettings.from_config(cfg),
        metrics=app[METRICS],
        journal=app[JOURNAL],
    )
    if not replica:
        await pipeline.start()
    app[PIPELINE] = pipeline
    app[HEALTH].add_heartbeat("workers", lambda: pipeline.heartbeat if pipeline.running else 0.0, WORKERS_ALLOWANCE)
    yield
    app[HEALTH].remove("workers")
    await pipeline.stop(_config(app).server.shutdown_grace)


async def _scheduler(app: web.Application) -> AsyncIterator[None]:
    scheduler = RuleScheduler(
        _config(app),
        sink=ha.rule_sink(app, lambda ev: submit(app, ev)),
        session=app[SESSION],
        state=app[RULE_STATE],
        metrics=app[METRICS],
    )
    await scheduler.start()
    app[SCHEDULER] = scheduler
    app[HEALTH].add_heartbeat("scheduler", lambda: scheduler.heartbeat, SCHEDULER_ALLOWANCE)
    yield
    app[HEALTH].remove("scheduler")
    await scheduler.shutdown()


async def _ingest(app: web.Application) -> AsyncIterator[None]:
    """The webhook's handler, the Alertmanager API's handlers and its job resolving alerts whose
    ``endsAt`` passed: both receivers feed ``submit`` from the same config, state and metrics."""
    feed: dict[str, Any] = dict(
        cfg=lambda: _config(app), sink=lambda ev: submit(app, ev), state=app[RULE_STATE], metrics=app[METRICS]
    )
    app[WEBHOOK] = make_webhook_handler(**feed)
    app[ALERTS_API], expiry = make_alerts_api(**feed)
    job = await app[JOBS].spawn(expiry, name="alertmanager-api-expiry")
    yield
    await job.close()


async def _reloader(app: web.Application) -> AsyncIterator[None]:
    options = app[OPTIONS]
    reloader = Reloader(app[CURRENT], config_path=options.config_path, metrics=app[METRICS])
    reloader.add("rules", app[SCHEDULER].reconfigure)
    reloader.add("outbox", lambda c: app[OUTBOX].reconfigure(c.delivery))
    reloader.add("uploader", lambda c: app[UPLOADER].reconfigure(c.delivery))
    reloader.add("pipeline", lambda c: app[PIPELINE].reconfigure(PipelineSettings.from_config(c)))
    reloader.add("capture", lambda c: app[CAPTURE].reconfigure(capture=c.capture, grafana=c.grafana))
    reloader.add("log", lambda c: set_level(c.log.level) if c.log.level != _config(app).log.level else None)
    app[RELOADER] = reloader
    job = await app[JOBS].spawn(reloader.watch(options.watch_interval), name="config-watch")
    yield
    await job.close()
