"""The running sidecar: ``start()`` → serve → ``stop()``, or ``run()`` until a signal.

``start`` checks what would otherwise fail late — the state directory is writable, the listen
address can be bound — before anything is launched, then builds the application
(``app.build_app``), runs its start-up and serves on the socket it bound. When any step fails
it unwinds every resource already started and raises ``StartupError`` with one line; the CLI
prints that line and exits 1.

SIGTERM/SIGINT drain in-flight deliveries within ``server.shutdown_grace`` (the rest stays
durable in the outbox); SIGHUP asks the reloader for a reload (``reload.py``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import signal
import socket
import sqlite3

from aiohttp import web

from sidecar import app as appmod
from sidecar.app import StartupError
from sidecar.capture.service import CaptureService
from sidecar.config import Config
from sidecar.delivery.outbox import Outbox
from sidecar.delivery.pipeline import DeliveryPipeline
from sidecar.flashduty.client import FlashdutyClient
from sidecar.flashduty.uploader import ImageUploader
from sidecar.health import Health
from sidecar.metrics import Metrics
from sidecar.model import AlertEvent
from sidecar.rules.scheduler import RuleScheduler
from sidecar.state_dir import StateDirError, check_state_dir

__all__ = ["Daemon", "StartupError"]

log = logging.getLogger("sidecar.app")


class Daemon:
    """One sidecar process. Components are reachable as properties once started."""

    def __init__(
        self,
        cfg: Config,
        *,
        config_path: str | None = None,
        metrics: Metrics | None = None,
        options: appmod.Options | None = None,
    ) -> None:
        """``options``: how this process runs (``app.Options``); ``config_path`` is its shortcut."""
        self._initial = cfg
        self.metrics = metrics or Metrics()
        self.options = options or appmod.Options()
        if config_path is not None:
            self.options = dataclasses.replace(self.options, config_path=config_path)
        self.app: web.Application | None = None
        self.port: int | None = None
        self._runner: web.AppRunner | None = None

    # ------------------------------------------------------------------ components

    @property
    def _app(self) -> web.Application:
        if self.app is None:
            raise RuntimeError("the daemon is not started")
        return self.app

    @property
    def cfg(self) -> Config:
        return self.app[appmod.CURRENT].config if self.app is not None else self._initial

    @property
    def health(self) -> Health:
        return self._app[appmod.HEALTH]

    @property
    def outbox(self) -> Outbox:
        return self._app[appmod.OUTBOX]

    @property
    def client(self) -> FlashdutyClient:
        return self._app[appmod.CLIENT]

    @property
    def uploader(self) -> ImageUploader:
        return self._app[appmod.UPLOADER]

    @property
    def capture(self) -> CaptureService:
        return self._app[appmod.CAPTURE]

    @property
    def pipeline(self) -> DeliveryPipeline:
        return self._app[appmod.PIPELINE]

    @property
    def scheduler(self) -> RuleScheduler:
        return self._app[appmod.SCHEDULER]

    def submit(self, event: AlertEvent) -> None:
        """Put an event as every source does (durable, then dispatched)."""
        assert self.app is not None
        appmod.submit(self.app, event)

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        cfg = self._initial
        _check_state_dir(cfg.state_dir)
        sock = _bind(cfg.server.host, cfg.server.port)
        self.app = appmod.build_app(cfg, metrics=self.metrics, options=self.options)
        runner = web.AppRunner(
            self.app, access_log=None, handle_signals=False, shutdown_timeout=cfg.server.shutdown_grace
        )
        try:
            await runner.setup()
            await web.SockSite(runner, sock).start()
        except BaseException as e:
            await runner.cleanup()  # unwinds exactly the contexts that started, in reverse
            sock.close()
            self.app = None
            if isinstance(e, OSError | sqlite3.Error):
                raise StartupError(f"cannot start: {e}") from None
            raise
        self._runner = runner
        self.port = sock.getsockname()[1]
        self.app[appmod.HEALTH].add_ready_check("http", lambda: self._runner is not None)
        log.info(
            "flashduty-sidecar ready",
            extra={"listen": f"{cfg.server.host}:{self.port}", "rules": len(cfg.rules)},
        )

    async def stop(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def reload(self, reason: str) -> bool:
        assert self.app is not None
        return await self.app[appmod.RELOADER].reload(reason)

    async def run(self) -> int:
        """Serve until SIGTERM/SIGINT; SIGHUP reloads. Returns the exit code."""
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        await self.start()
        assert self.app is not None
        reloader = self.app[appmod.RELOADER]
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        loop.add_signal_handler(signal.SIGHUP, reloader.request, "SIGHUP")
        try:
            await stop.wait()
            log.info("shutting down: draining deliveries", extra={"grace_s": self.cfg.server.shutdown_grace})
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)
            await self.stop()
        return 0


def _check_state_dir(path: str) -> None:
    """The state directory is writable, not full, its databases intact; else ``StartupError``."""
    try:
        check_state_dir(path)
    except StateDirError as e:
        raise StartupError(str(e)) from None


def _bind(host: str, port: int) -> socket.socket:
    """Bind ``server.listen`` now, before anything is launched: a port in use fails fast."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, type_, proto, _, addr = infos[0]
        sock = socket.socket(family, type_, proto)
    except OSError as e:
        raise StartupError(f"server.listen {host}:{port}: {e.strerror or e}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
        sock.listen(128)
    except OSError as e:
        sock.close()
        raise StartupError(f"server.listen {host}:{port}: {e.strerror or e}") from None
    sock.setblocking(False)
    return sock
