"""``POST /webhook/alertmanager``: the aiohttp handler for Alertmanager and Grafana webhooks.

The handler authenticates, reads the body under its limit, parses it (``payload.py``), then for
each alert decides what to send and builds the event (``events.py``), hands it to the sink (the
outbox: durable when it returns) and records what was forwarded in the state store. Fingerprints
not seen for a while are pruned at most once an hour.

Answers: 200 ``{"status": "ok", "alerts": n, "events": m}`` once every event is durable; 401 (with
``WWW-Authenticate: Bearer``) without the token (bearer, or basic-auth password: ``request.py``) when
``server.webhook_token`` is set; 413
over ``server.webhook_max_body`` (by ``Content-Length`` or while reading); 400 with
``{"error": "alerts[0].status: must be firing or resolved"}`` for a malformed body; 503 when the
sink or the state store fails, so the sender retries (Alertmanager retries only 5xx). Every
answer is counted in ``webhook_requests`` by outcome.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from aiohttp import web

from sidecar.config import Config
from sidecar.metrics import Metrics
from sidecar.rules.engine import EventSink
from sidecar.rules.state import WebhookAlert
from sidecar.rules.templates import TemplateEngine

from .body import decode_json
from .events import build_event, diff_alert
from .payload import VERSIONS, PayloadError, parse_payload
from .request import authorized, read_body

__all__ = ["WebhookStore", "make_webhook_handler"]

log = logging.getLogger(__name__)

_PRUNE_EVERY = 3600.0

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class WebhookStore(Protocol):
    """The part of ``RuleState`` the handler uses."""

    def webhook_get(self, fingerprint: str) -> WebhookAlert | None: ...
    def webhook_put(self, alert: WebhookAlert) -> None: ...
    def webhook_prune(self, now: float) -> int: ...


def make_webhook_handler(
    *,
    cfg: Config | Callable[[], Config],
    sink: EventSink,
    state: WebhookStore,
    metrics: Metrics,
    clock: Callable[[], float] = time.time,
    templates: TemplateEngine | None = None,
) -> Handler:
    """The aiohttp handler. ``cfg`` may be a callable returning the current config (reloads)."""
    engine = templates if templates is not None else TemplateEngine(metrics=metrics)
    current = cfg if callable(cfg) else (lambda: cfg)
    last_prune = [0.0]

    def answer(outcome: str, status: int, body: dict[str, Any]) -> web.Response:
        metrics.webhook_requests.labels(outcome=outcome).inc()
        headers = {"WWW-Authenticate": 'Bearer realm="flashduty-sidecar"'} if status == 401 else None
        return web.json_response(body, status=status, headers=headers)

    async def handler(request: web.Request) -> web.StreamResponse:
        c = current()
        token = c.server.webhook_token
        if token is not None and not authorized(request, token.get_secret_value()):
            return answer("unauthorized", 401, {"error": "missing or wrong bearer token"})
        limit = c.server.webhook_max_body
        body = await read_body(request, limit)
        if body is None:
            return answer("too_large", 413, {"error": f"body larger than {limit} bytes"})
        try:
            version, alerts = parse_payload(decode_json(body))
        except PayloadError as e:
            return answer("bad_request", 400, {"error": str(e)})
        now = clock()
        sent = 0
        try:
            for alert in alerts:
                known = state.webhook_get(alert.fingerprint)
                decision = diff_alert(alert, known, c, now=now)
                if decision is None:
                    if known is not None:
                        known.updated_at = now
                        state.webhook_put(known)
                    continue
                status, with_panels = decision
                event = build_event(alert, c, now=now, status=status, panels=with_panels, templates=engine)
                sink(event)  # durable when it returns
                sent += 1
                state.webhook_put(
                    WebhookAlert(
                        fingerprint=alert.fingerprint,
                        alert_key=event.alert_key,
                        status=alert.status,
                        starts_at=alert.starts_at,
                        last_sent_at=now,
                        updated_at=now,
                    )
                )
                # each alert is handled whole before this point: let the pipeline start its delivery
                # (the first capture of a burst) while the rest of the body is being stored
                await asyncio.sleep(0)
        # The outbox or the state file failed (disk full, locked, closed). Whatever it was, the
        # sender must retry: 503. Events already stored are not repeated (state diff).
        except Exception:
            log.exception("webhook: could not store events", extra={"forwarded": sent})
            return answer("unavailable", 503, {"error": "could not store the alerts; retry later"})
        if now - last_prune[0] >= _PRUNE_EVERY:
            last_prune[0] = now
            try:
                state.webhook_prune(now)
            except sqlite3.Error as e:  # housekeeping only: the events are already stored
                log.warning("webhook: could not prune old fingerprints", extra={"error": str(e)})
        log.info(
            "webhook received",
            extra={"source": VERSIONS[version], "alerts": len(alerts), "events": sent},
        )
        return answer("ok", 200, {"status": "ok", "alerts": len(alerts), "events": sent})

    return handler
