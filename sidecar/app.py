"""Builds every component from a ``Config`` and owns their lifecycle.

Each resource is one aiohttp ``cleanup_ctx`` generator, started in order and torn down in
reverse: state → outbox → HTTP session → Flashduty client → capture service → delivery
pipeline → rule scheduler → reconcile → config watcher. SIGTERM drains in-flight deliveries
within ``server.shutdown_grace`` and leaves the rest durable in the outbox; SIGHUP, or a change
of the config file on disk, reloads the rules without losing state (an invalid new config is
refused and the old one kept).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from sidecar.capture.service import CaptureService
from sidecar.config import Config, ConfigError, load_config
from sidecar.delivery.outbox import Outbox
from sidecar.delivery.pipeline import DeliveryPipeline
from sidecar.delivery.reconcile import reconcile
from sidecar.flashduty.client import FlashdutyClient
from sidecar.flashduty.uploader import ImageUploader
from sidecar.ingest.webhook import make_webhook_handler
from sidecar.metrics import Metrics
from sidecar.model import AlertEvent
from sidecar.rules.scheduler import RuleScheduler
from sidecar.rules.state import RuleState
from sidecar.web import Health, make_web_app

log = logging.getLogger("sidecar.app")

# sections whose change needs a restart; rules, datasources, webhook and delivery.resend_* reload live
_RESTART_SECTIONS = ("flashduty", "grafana", "capture", "server", "state_dir", "log")


class Daemon:
    """The running sidecar. ``start()`` → serve → ``stop()``; or ``run()`` until a signal."""

    def __init__(
        self,
        cfg: Config,
        *,
        config_path: str | None = None,
        metrics: Metrics | None = None,
        time_scale: float = 1.0,
        watch_interval: float = 5.0,
    ) -> None:
        self.cfg = cfg
        self.config_path = config_path
        self.metrics = metrics or Metrics()
        self.time_scale = time_scale
        self.watch_interval = watch_interval
        self.reconcile_delay: float | None = None  # None: after every rule had time to evaluate twice
        self.health = Health()
        self.loop_beat: float | None = None
        self.port: int | None = None
        self._runner: web.AppRunner | None = None
        self._stopped = asyncio.Event()
        self._config_digest = _digest(config_path)
        # built by the cleanup contexts
        self.outbox: Outbox
        self.rule_state: RuleState
        self.session: aiohttp.ClientSession
        self.client: FlashdutyClient
        self.uploader: ImageUploader
        self.capture: CaptureService
        self.pipeline: DeliveryPipeline
        self.scheduler: RuleScheduler

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        state_dir = Path(self.cfg.state_dir)
        try:
            state_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise RuntimeError(f"state_dir {state_dir} is not writable: {e.strerror}") from None
        webhook = make_webhook_handler(
            cfg=lambda: self.cfg, sink=self.submit, state=_Lazy(self, "rule_state"), metrics=self.metrics
        )
        app = make_web_app(
            health=self.health, metrics=self.metrics, webhook=webhook, max_body=self.cfg.server.webhook_max_body
        )
        app.cleanup_ctx.extend(
            [
                self._ctx_heartbeat,
                self._ctx_state,
                self._ctx_session,
                self._ctx_flashduty,
                self._ctx_capture,
                self._ctx_pipeline,
                self._ctx_scheduler,
                self._ctx_reconcile,
                self._ctx_watch,
            ]
        )
        self._runner = web.AppRunner(
            app, access_log=None, handle_signals=False, shutdown_timeout=self.cfg.server.shutdown_grace
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.cfg.server.host, self.cfg.server.port)
        await site.start()
        server = getattr(site, "_server", None)
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else self.cfg.server.port
        self.metrics.up.set(1)
        log.info(
            "flashduty-sidecar ready",
            extra={"listen": f"{self.cfg.server.host}:{self.port}", "rules": len(self.cfg.rules)},
        )

    async def stop(self) -> None:
        self.metrics.up.set(0)
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()
        self._stopped.set()

    async def run(self) -> int:
        """Serve until SIGTERM/SIGINT; SIGHUP reloads. Returns the exit code."""
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        loop.add_signal_handler(signal.SIGHUP, lambda: asyncio.ensure_future(self.reload("SIGHUP")))
        await self.start()
        try:
            await stop.wait()
            log.info("shutting down: draining deliveries", extra={"grace_s": self.cfg.server.shutdown_grace})
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)
            await self.stop()
        return 0

    def submit(self, event: AlertEvent) -> None:
        """The engine's and the webhook's sink: durable first, then wake the workers."""
        self.outbox.put(event)
        self.pipeline.kick()

    # ------------------------------------------------------------------ reload

    async def reload(self, reason: str) -> bool:
        if not self.config_path:
            log.warning("reload requested but the config was not read from a file")
            return False
        try:
            new = await asyncio.to_thread(load_config, self.config_path)
        except ConfigError as e:
            self.metrics.config_reloads.labels("invalid").inc()
            log.error(
                "config reload refused, keeping the running config (%s): %d problem(s)",
                reason,
                len(e.problems),
                extra={"problems": e.problems},
            )
            return False
        changed = [s for s in _RESTART_SECTIONS if getattr(new, s) != getattr(self.cfg, s)]
        if changed:
            log.warning("config sections changed that need a restart to apply: %s", ", ".join(changed))
        await self.scheduler.reconfigure(new)
        self.outbox.reconfigure(new.delivery)
        self.uploader.ttl = new.delivery.image_cache_ttl
        self.pipeline.reconfigure(new)
        self.cfg = self.cfg.model_copy(
            update={
                "rules": new.rules,
                "datasources": new.datasources,
                "webhook": new.webhook,
                "delivery": new.delivery,
                "rule_files": new.rule_files,
            }
        )
        self.metrics.config_reloads.labels("ok").inc()
        log.info("config reloaded (%s): %d rules", reason, len(new.rules))
        return True

    # ------------------------------------------------------------------ cleanup contexts

    async def _ctx_heartbeat(self, _: web.Application) -> AsyncIterator[None]:
        async def beat() -> None:
            while True:
                self.loop_beat = time.monotonic()
                await asyncio.sleep(1.0)

        task = asyncio.create_task(beat(), name="loop-heartbeat")
        self.health.add_heartbeat("loop", lambda: self.loop_beat, 15.0)
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def _ctx_state(self, _: web.Application) -> AsyncIterator[None]:
        state_dir = Path(self.cfg.state_dir)
        self.outbox = Outbox(str(state_dir / "outbox.sqlite3"), max_attempts=self.cfg.delivery.max_attempts)
        self.outbox.recover()
        self.rule_state = RuleState(str(state_dir / "rules.sqlite3"))
        self.health.add_ready_check("state", lambda: True)
        yield
        pending = self.outbox.pending_count()
        self.rule_state.close()
        self.outbox.close()
        log.info(
            "stopped; %d event(s) left in the outbox for the next start", pending, extra={"pending_in_outbox": pending}
        )

    async def _ctx_session(self, _: web.Application) -> AsyncIterator[None]:
        self.session = aiohttp.ClientSession()
        yield
        await self.session.close()

    async def _ctx_flashduty(self, _: web.Application) -> AsyncIterator[None]:
        self.client = FlashdutyClient(self.cfg.flashduty, metrics=self.metrics, time_scale=self.time_scale)
        self.uploader = ImageUploader(
            self.client,
            db_path=str(Path(self.cfg.state_dir) / "images.sqlite3"),
            ttl=self.cfg.delivery.image_cache_ttl,
            metrics=self.metrics,
        )
        yield
        await self.client.close()
        close = getattr(self.uploader, "close", None)
        if close is not None:
            res = close()
            if asyncio.iscoroutine(res):
                await res

    async def _ctx_capture(self, _: web.Application) -> AsyncIterator[None]:
        self.capture = CaptureService(grafana=self.cfg.grafana, capture=self.cfg.capture, metrics=self.metrics)
        await self.capture.start()
        self.health.add_ready_check("browser", lambda: self.capture.browser_connected)
        yield
        await self.capture.close()

    async def _ctx_pipeline(self, _: web.Application) -> AsyncIterator[None]:
        self.pipeline = DeliveryPipeline(
            outbox=self.outbox,
            capture=self.capture,
            uploader=self.uploader,
            client=self.client,
            config=self.cfg,
            metrics=self.metrics,
        )
        await self.pipeline.start()
        beat = getattr(self.pipeline, "heartbeat", None)
        if beat is not None:
            self.health.add_heartbeat("workers", lambda: self.pipeline.heartbeat, 60.0)
        yield
        await self.pipeline.stop(self.cfg.server.shutdown_grace)

    async def _ctx_scheduler(self, _: web.Application) -> AsyncIterator[None]:
        self.scheduler = RuleScheduler(
            self.cfg, sink=self.submit, session=self.session, state=self.rule_state, metrics=self.metrics
        )
        await _maybe_await(self.scheduler.start())
        self.health.add_ready_check("scheduler", lambda: self.scheduler.running)
        self.health.add_heartbeat("scheduler", lambda: self.scheduler.heartbeat, 60.0)
        yield
        await _maybe_await(self.scheduler.shutdown())

    async def _ctx_reconcile(self, _: web.Application) -> AsyncIterator[None]:
        task: asyncio.Task[None] | None = None
        if self.cfg.flashduty.app_key is not None:
            task = asyncio.create_task(self._reconcile_after_first_round(), name="reconcile")
        yield
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _reconcile_after_first_round(self) -> None:
        # wait until every rule has been evaluated once, so "firing" reflects the current truth
        if self.reconcile_delay is None:
            longest = max((r.interval for r in self.cfg.rules if r.source != "schedule"), default=0.0)
            delay = min(longest * 2 + 5.0, 300.0)
        else:
            delay = self.reconcile_delay
        await asyncio.sleep(delay)
        try:
            # webhook alerts are owned by the Alertmanager/Grafana that sends them: never closed here
            report = await reconcile(
                self.client,
                self.outbox,
                firing_keys=self.scheduler.firing_keys(),
                now=time.time(),
                keep_rules=("webhook",),
            )
            self.pipeline.kick()
            log.info("reconciled with Flashduty: %s", report.summary(), extra={"report": _as_dict(report)})
        except Exception as e:  # never fatal: the alert path does not depend on it
            log.warning("reconcile with Flashduty failed: %s", e)

    async def _ctx_watch(self, _: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(self._watch_config(), name="config-watch") if self.config_path else None
        yield
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _watch_config(self) -> None:
        """A ConfigMap update swaps a symlink: compare content digests, not mtimes."""
        while True:
            await asyncio.sleep(self.watch_interval)
            digest = _digest(self.config_path)
            if digest is not None and digest != self._config_digest:
                self._config_digest = digest
                await self.reload("config file changed")


class _Lazy:
    """Resolves an attribute of the daemon at call time (the webhook handler is built before state)."""

    def __init__(self, owner: object, attr: str) -> None:
        self._owner = owner
        self._attr = attr

    def __getattr__(self, name: str) -> Any:
        return getattr(getattr(self._owner, self._attr), name)


def _digest(path: str | None) -> str | None:
    if not path:
        return None
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:
        return None


async def _maybe_await(value: Any) -> Any:
    if asyncio.iscoroutine(value):
        return await value
    return value


def _as_dict(obj: Any) -> Any:
    if hasattr(obj, "__dataclass_fields__"):
        return {k: getattr(obj, k) for k in obj.__dataclass_fields__}
    return obj


def env_secrets(cfg: Config) -> list[str]:
    """Every secret value of a config, for the log redactor."""
    out = [cfg.flashduty.integration_key.get_secret_value()]
    for s in (cfg.flashduty.app_key, cfg.grafana.token, cfg.server.webhook_token):
        if s is not None:
            out.append(s.get_secret_value())
    if cfg.grafana.basic_auth is not None:
        out.append(cfg.grafana.basic_auth.password.get_secret_value())
    for ds in cfg.datasources:
        if ds.bearer_token is not None:
            out.append(ds.bearer_token.get_secret_value())
        if ds.basic_auth is not None:
            out.append(ds.basic_auth.password.get_secret_value())
    return out
