"""``POST /webhook/alertmanager``: Alertmanager (``version "4"``) and Grafana (``version "1"``) payloads.

Every POST is a snapshot of a whole alert group, so alerts are diffed by ``fingerprint`` against
the stored state (``RuleState.webhook_*``):

* firing, not seen firing before (or with a new ``startsAt``) → an event with the pictures;
* firing and already forwarded → nothing, until ``delivery.resend_interval`` has passed (a re-send,
  with pictures only if ``delivery.recapture_on_resend``);
* resolved, and not already forwarded as resolved → ``Ok`` (also for an unknown fingerprint: after
  lost state, a superfluous ``Ok`` is better than an alert left open).

Events belong to the rule ``webhook``: ``alert_key = alert_key("webhook", labels)``, labels get
``sidecar_rule: webhook``; severity from the ``severity`` label (critical / warning / info, any
case), else ``webhook.default_severity``; title from the ``summary`` annotation, else ``alertname``.
Pictures: the ``grafana_dashboard_uid`` / ``grafana_panel_id`` (or ``__dashboardUid__`` /
``__panelId__``) annotations, else the dashboard and ``viewPanel`` of Grafana's ``panelURL`` /
``dashboardURL`` (when ``webhook.panels_from_annotations``), plus ``webhook.panels``.

Answers: 200 once every event is durable (the sink returned); 401 without the bearer token when
``server.webhook_token`` is set; 413 over ``server.webhook_max_body``; 400 with
``{"error": "alerts[0].status: must be firing or resolved"}`` for a malformed body; 503 when the
sink or the state store fails, so the sender retries (Alertmanager retries only 5xx).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import math
import sqlite3
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from aiohttp import web
from pydantic import ValidationError

from sidecar.capture.urls import parse_grafana_url
from sidecar.config import Config, PanelConfig
from sidecar.metrics import Metrics
from sidecar.model import AlertEvent, EventStatus, PanelCapture
from sidecar.rules.engine import EventSink, normalize_severity
from sidecar.rules.sources.grafana import parse_time
from sidecar.rules.state import WebhookAlert
from sidecar.rules.templates import TemplateEngine
from sidecar.rules.window import panel_captures, panels_from_annotations

__all__ = ["RULE_NAME", "PayloadError", "WebhookAlertIn", "WebhookStore", "make_webhook_handler", "parse_payload"]

log = logging.getLogger(__name__)

RULE_NAME = "webhook"
VERSIONS = {"4": "Alertmanager", "1": "Grafana"}
_PRUNE_EVERY = 3600.0

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class WebhookStore(Protocol):
    """The part of ``RuleState`` the handler uses."""

    def webhook_get(self, fingerprint: str) -> WebhookAlert | None: ...
    def webhook_put(self, alert: WebhookAlert) -> None: ...
    def webhook_prune(self, now: float) -> int: ...


class PayloadError(ValueError):
    """The body is not a webhook payload we understand; the message names the JSON path."""


@dataclass(frozen=True)
class WebhookAlertIn:
    """One alert of a payload, validated."""

    status: Literal["firing", "resolved"]
    labels: dict[str, str]
    annotations: dict[str, str]
    fingerprint: str
    starts_at: str
    starts_ts: float | None
    ends_ts: float | None
    panel_url: str = ""
    dashboard_url: str = ""
    value: float = math.nan


def parse_payload(doc: Any) -> tuple[str, list[WebhookAlertIn]]:
    """The decoded JSON body → (version, alerts); raises ``PayloadError``."""
    if not isinstance(doc, dict):
        raise PayloadError("body: must be a JSON object")
    version = doc.get("version")
    if version is None:
        raise PayloadError('version: required ("4" from Alertmanager, "1" from Grafana)')
    if not isinstance(version, str) or version not in VERSIONS:
        raise PayloadError(
            f'version: unsupported webhook version {version!r} (expected "4" from Alertmanager or "1" from Grafana)'
        )
    alerts = doc.get("alerts")
    if not isinstance(alerts, list):
        raise PayloadError("alerts: must be a list")
    return version, [_parse_alert(a, f"alerts[{i}]") for i, a in enumerate(alerts)]


def _parse_alert(a: Any, p: str) -> WebhookAlertIn:
    if not isinstance(a, dict):
        raise PayloadError(f"{p}: must be an object")
    status = a.get("status")
    if status not in ("firing", "resolved"):
        raise PayloadError(f"{p}.status: must be firing or resolved (got {status!r})")
    labels = _str_map(a.get("labels"), f"{p}.labels", required=True)
    annotations = _str_map(a.get("annotations"), f"{p}.annotations", required=False)
    starts_at = a.get("startsAt") or ""
    if not isinstance(starts_at, str):
        raise PayloadError(f"{p}.startsAt: must be an RFC 3339 time")
    starts_ts = parse_time(starts_at)
    if starts_at and starts_ts is None and not starts_at.startswith("0001-01-01"):
        raise PayloadError(f"{p}.startsAt: must be an RFC 3339 time (got {starts_at!r})")
    ends_ts = parse_time(a.get("endsAt"))
    fingerprint = a.get("fingerprint")
    if fingerprint is None or fingerprint == "":
        fingerprint = _fingerprint(labels)
    elif not isinstance(fingerprint, str):
        raise PayloadError(f"{p}.fingerprint: must be a string")
    values = a.get("values")
    value = math.nan
    if isinstance(values, dict) and values:
        first = next(iter(values.values()))
        if isinstance(first, int | float) and not isinstance(first, bool):
            value = float(first)
    return WebhookAlertIn(
        status=status,
        labels=labels,
        annotations=annotations,
        fingerprint=fingerprint,
        starts_at=starts_at,
        starts_ts=starts_ts,
        ends_ts=ends_ts,
        panel_url=_opt_str(a.get("panelURL")),
        dashboard_url=_opt_str(a.get("dashboardURL")),
        value=value,
    )


def _opt_str(v: Any) -> str:
    return v if isinstance(v, str) else ""


def _str_map(v: Any, p: str, *, required: bool) -> dict[str, str]:
    if v is None and not required:
        return {}
    if not isinstance(v, dict):
        raise PayloadError(f"{p}: must be an object of strings")
    for k, x in v.items():
        if not isinstance(x, str):
            raise PayloadError(f"{p}.{k}: must be a string (got {type(x).__name__})")
    return dict(v)


def _fingerprint(labels: Mapping[str, str]) -> str:
    return hashlib.sha256(json.dumps(sorted(labels.items())).encode()).hexdigest()[:16]


def panels_from_url(url: str) -> list[PanelConfig]:
    """The panel a ``panelURL``/``dashboardURL`` names (``urls.parse_grafana_url``), if any."""
    parsed = parse_grafana_url(url)
    if parsed is None:
        return []
    dashboard, panel, _org = parsed
    try:
        return [PanelConfig.model_validate({"dashboard": dashboard, "panel": panel})]
    except ValidationError:
        return []


def alert_panels(alert: WebhookAlertIn, cfg: Config) -> list[PanelConfig]:
    panels: list[PanelConfig] = []
    if cfg.webhook.panels_from_annotations:
        panels = panels_from_annotations(alert.annotations)
        if not panels:
            panels = panels_from_url(alert.panel_url) or panels_from_url(alert.dashboard_url)
    return panels + list(cfg.webhook.panels)


def build_event(
    alert: WebhookAlertIn,
    cfg: Config,
    *,
    now: float,
    status: EventStatus,
    panels: bool,
    templates: TemplateEngine,
) -> AlertEvent:
    """The Flashduty event for one webhook alert."""
    active_at = alert.starts_ts if alert.starts_ts is not None else now
    resolved_at = (alert.ends_ts if alert.ends_ts is not None else now) if status == "Ok" else None
    captures: tuple[PanelCapture, ...] = ()
    if panels:
        captures = panel_captures(
            alert_panels(alert, cfg),
            cfg,
            labels=alert.labels,
            active_at=active_at,
            now=now,
            resolved_at=resolved_at,
            value=alert.value,
            templates=templates,
        )
    title = alert.annotations.get("summary") or alert.labels.get("alertname") or "Alertmanager alert"
    return AlertEvent.for_instance(
        RULE_NAME,
        alert.labels,
        status=status,
        title=title,
        description=alert.annotations.get("description") or alert.annotations.get("message") or "",
        panels=captures,
        event_time=now,
        active_at=active_at,
        resolved_at=resolved_at,
    )


def diff_alert(
    alert: WebhookAlertIn, known: WebhookAlert | None, cfg: Config, *, now: float
) -> tuple[EventStatus, bool] | None:
    """What to send for ``alert`` given what we forwarded before: (status, with pictures) or None."""
    if alert.status == "resolved":
        if known is not None and known.status == "resolved":
            return None
        return "Ok", True
    severity = normalize_severity(alert.labels.get("severity")) or cfg.webhook.default_severity
    if known is None or known.status == "resolved" or known.starts_at != alert.starts_at:
        return severity, True
    resend = cfg.delivery.resend_interval
    if resend > 0 and now - known.last_sent_at >= resend:
        return severity, cfg.delivery.recapture_on_resend
    return None


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
        if token is not None and not _authorized(request, token.get_secret_value()):
            return answer("unauthorized", 401, {"error": "missing or wrong bearer token"})
        limit = c.server.webhook_max_body
        if request.content_length is not None and request.content_length > limit:
            return answer("too_large", 413, {"error": f"body larger than {limit} bytes"})
        body = bytearray()
        async for chunk in request.content.iter_chunked(64 * 1024):
            body += chunk
            if len(body) > limit:
                return answer("too_large", 413, {"error": f"body larger than {limit} bytes"})
        try:
            version, alerts = parse_payload(json.loads(body))
        except (ValueError, UnicodeDecodeError) as e:
            msg = str(e) if isinstance(e, PayloadError) else f"body: not valid JSON: {e}"
            return answer("bad_request", 400, {"error": msg})
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


def _authorized(request: web.Request, token: str) -> bool:
    scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(credentials.strip().encode(), token.encode())
