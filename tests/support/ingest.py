"""Both alert-taking routes (the webhook and ``POST /api/v2/alerts``) on a real loopback server,
their sink a list and their state a real SQLite file, for tests that send them bodies."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, closing
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from aiohttp import web

from sidecar.config import Config
from sidecar.ingest.am_api import ALERTS_PATH, make_alerts_api_handlers
from sidecar.ingest.am_receiver import AlertsApiReceiver
from sidecar.ingest.webhook import make_webhook_handler
from sidecar.metrics import Metrics
from sidecar.model import AlertEvent
from sidecar.rules.state import RuleState
from sidecar.rules.templates import TemplateEngine

WEBHOOK_PATH = "/webhook/alertmanager"


@dataclass
class Ingest:
    url: str
    state: RuleState
    http: aiohttp.ClientSession
    events: list[AlertEvent] = field(default_factory=list)

    async def post(self, path: str, body: bytes, content_type: str = "application/json") -> tuple[int, str]:
        async with self.http.post(self.url + path, data=body, headers={"Content-Type": content_type}) as r:
            return r.status, await r.text()

    def stored(self) -> int:
        """Rows the two routes have written to the state file (read through a second connection)."""
        with closing(sqlite3.connect(self.state.path)) as db:
            return sum(db.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in ("webhook_alerts", "api_alerts"))


def config(**top: object) -> Config:
    return Config.model_validate({"flashduty": {"integration_key": "k"}, "grafana": {"timezone": "UTC"}, **top})


@asynccontextmanager
async def ingest(
    state_dir: Path, cfg: Config | None = None, sink: Callable[[AlertEvent], None] | None = None
) -> AsyncIterator[Ingest]:
    """``sink`` (default: the ``events`` list) takes every event, e.g. a real ``Outbox.put``."""
    c = cfg or config()
    state = RuleState.in_dir(state_dir)
    events: list[AlertEvent] = []
    metrics = Metrics()
    put = sink or events.append
    receiver = AlertsApiReceiver(cfg=lambda: c, sink=put, state=state, templates=TemplateEngine())
    post_alerts, _status = make_alerts_api_handlers(cfg=lambda: c, receiver=receiver, metrics=metrics)
    app = web.Application(client_max_size=4 * 1024 * 1024)
    app.router.add_post(WEBHOOK_PATH, make_webhook_handler(cfg=c, sink=put, state=state, metrics=metrics))
    app.router.add_post(ALERTS_PATH, post_alerts)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        async with aiohttp.ClientSession() as http:
            yield Ingest(f"http://127.0.0.1:{runner.addresses[0][1]}", state, http, events)
    finally:
        await runner.cleanup()
        state.close()
