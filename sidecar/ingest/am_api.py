"""The Alertmanager API v2 routes: ``POST /api/v2/alerts`` and ``GET /api/v2/status``.

So that Prometheus (``alerting.alertmanagers``), vmalert (``-notifier.url``) and Grafana's
"Alertmanager" contact point can send straight to the sidecar. Answers follow Alertmanager's
(``prometheus/alertmanager`` ``api/v2/api.go``, checked against the real binary in
``tests/integration/test_alertmanager_api.py``):

* 200 with an empty body once the events are durable;
* 400 / 422 for a body it refuses (``postable.py`` says which, with Alertmanager's messages);
  valid alerts of a partly invalid body are still taken (400 then names the invalid ones);
* 415 when the ``Content-Type`` is not ``application/json`` (Alertmanager's go-swagger answer);
* 401 without ``server.webhook_token`` (bearer, or basic-auth password: ``request.py``), 413 over
  ``server.webhook_max_body``; 500 when the outbox or the state fails (Alertmanager's answer
  to a failed store; Prometheus sends the alert again at its next evaluation).

Every answer is counted in ``alerts_api_requests`` by outcome. ``GET /api/v2/status`` answers the
fields ``alertmanagerStatus`` requires (``api/v2/openapi.yaml``): clustering ``disabled``, no
config, the sidecar's version and start time.
"""

from __future__ import annotations

import logging
import platform
import time
from collections.abc import Awaitable, Callable, Coroutine
from datetime import UTC, datetime
from importlib import metadata
from typing import Any

from aiohttp import web

from sidecar.config import Config
from sidecar.metrics import Metrics
from sidecar.rules.engine import EventSink
from sidecar.rules.state import RuleState
from sidecar.rules.templates import TemplateEngine

from .am_receiver import AlertsApiReceiver
from .body import decode_json
from .payload import PayloadError
from .postable import AlertsApiError, check_alerts, decode_alerts
from .request import authorized, read_body

__all__ = ["ALERTS_PATH", "STATUS_PATH", "make_alerts_api", "make_alerts_api_handlers"]

log = logging.getLogger(__name__)

ALERTS_PATH = "/api/v2/alerts"
STATUS_PATH = "/api/v2/status"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def make_alerts_api(
    *, cfg: Callable[[], Config], sink: EventSink, state: RuleState, metrics: Metrics
) -> tuple[tuple[Handler, Handler], Coroutine[Any, Any, None]]:
    """The daemon's Alertmanager API: its two handlers, and the job that resolves ended alerts."""
    receiver = AlertsApiReceiver(cfg=cfg, sink=sink, state=state, templates=TemplateEngine(metrics=metrics))
    return make_alerts_api_handlers(cfg=cfg, receiver=receiver, metrics=metrics), receiver.run_expiry()


def make_alerts_api_handlers(
    *,
    cfg: Callable[[], Config],
    receiver: AlertsApiReceiver,
    metrics: Metrics,
    clock: Callable[[], float] = time.time,
) -> tuple[Handler, Handler]:
    """(``POST /api/v2/alerts`` handler, ``GET /api/v2/status`` handler)."""
    started = datetime.now(UTC)

    def answer(outcome: str, status: int, body: Any = None) -> web.Response:
        metrics.alerts_api_requests.labels(outcome=outcome).inc()
        if body is None:
            return web.Response(status=status)
        headers = {"WWW-Authenticate": 'Bearer realm="flashduty-sidecar"'} if status == 401 else None
        return web.json_response(body, status=status, headers=headers)

    def denied(request: web.Request, c: Config) -> bool:
        token = c.server.webhook_token
        return token is not None and not authorized(request, token.get_secret_value())

    async def post_alerts(request: web.Request) -> web.StreamResponse:
        c = cfg()
        if denied(request, c):
            return answer("unauthorized", 401, {"code": 401, "message": "missing or wrong token"})
        if request.content_type != "application/json":
            message = f'unsupported media type "{request.content_type}", only [application/json] are allowed'
            return answer("unsupported_media_type", 415, {"code": 415, "message": message})
        limit = c.server.webhook_max_body
        body = await read_body(request, limit)
        if body is None:
            return answer("too_large", 413, {"code": 413, "message": f"body larger than {limit} bytes"})
        doc: Any
        try:
            doc = decode_json(body)
        except PayloadError as e:
            doc = e
        try:
            raws = decode_alerts(body, doc)
        except AlertsApiError as e:
            return answer("bad_request" if e.status == 400 else "unprocessable", e.status, e.body)
        now = clock()
        valid, reasons = check_alerts(raws, now=now, resolve_timeout=c.webhook.resolve_timeout)
        try:
            sent = receiver.receive(valid, now)
        # the outbox or the state file failed: Alertmanager answers a failed store with 500
        except Exception as e:
            log.exception("alertmanager API: could not store alerts")
            return answer("unavailable", 500, f"could not store the alerts: {type(e).__name__}")
        log.info("alertmanager API alerts received", extra={"alerts": len(raws), "events": sent})
        if reasons is not None:
            return answer("bad_request", 400, reasons)
        return answer("ok", 200)

    async def get_status(request: web.Request) -> web.StreamResponse:
        if denied(request, cfg()):
            return web.json_response({"code": 401, "message": "missing or wrong token"}, status=401)
        return web.json_response(
            {
                "cluster": {"status": "disabled", "peers": []},
                "versionInfo": _version_info(),
                "config": {"original": ""},
                "uptime": started.isoformat().replace("+00:00", "Z"),
            }
        )

    return post_alerts, get_status


def _version_info() -> dict[str, str]:
    try:
        version = metadata.version("flashduty-sidecar")
    except metadata.PackageNotFoundError:
        version = "unknown"
    return {
        "version": f"flashduty-sidecar {version}",
        "revision": "",
        "branch": "",
        "buildUser": "",
        "buildDate": "",
        "goVersion": f"python{platform.python_version()}",
    }
