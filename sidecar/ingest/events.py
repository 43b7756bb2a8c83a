"""What a webhook alert becomes: whether to send it (``diff_alert``) and the event (``build_event``).

Every POST is a snapshot of a whole alert group, so alerts are diffed by ``fingerprint`` against
what was forwarded before (``RuleState.webhook_*``):

* firing, not seen firing before (or with a new ``startsAt``) → an event with the pictures;
* firing and already forwarded → nothing, until ``delivery.resend_interval`` has passed (a re-send,
  with pictures only if ``delivery.recapture_on_resend``);
* resolved, and not already forwarded as resolved → ``Ok`` (also for an unknown fingerprint: after
  lost state, a superfluous ``Ok`` is better than an alert left open).

Events belong to the rule ``webhook`` (``alertmanager`` for the Alertmanager API, ``am_receiver.py``):
``alert_key = alert_key("webhook", labels)``, labels get ``sidecar_rule: webhook``; severity from the ``severity`` label (critical / warning / info, any
case), else ``webhook.default_severity``; title from the ``summary`` annotation, else ``alertname``;
description from ``description``, else ``message``. Pictures: the ``grafana_dashboard_uid`` /
``grafana_panel_id`` (or ``__dashboardUid__`` / ``__panelId__``) annotations, else the dashboard
and ``viewPanel`` of Grafana's ``panelURL`` / ``dashboardURL`` (when
``webhook.panels_from_annotations``), captured in the alert's Grafana org (``orgId``, see
``payload``) — plus ``webhook.panels``, in ``grafana.org_id``.
"""

from __future__ import annotations

from pydantic import ValidationError

from sidecar.capture.urls import parse_grafana_url
from sidecar.config import Config, PanelConfig
from sidecar.model import WEBHOOK_RULE, AlertEvent, EventStatus, PanelCapture
from sidecar.rules.events import normalize_severity
from sidecar.rules.state import WebhookAlert
from sidecar.rules.templates import TemplateEngine
from sidecar.rules.window import panel_captures, panels_from_annotations

from .payload import WebhookAlertIn

__all__ = ["RULE_NAME", "alert_panels", "build_event", "diff_alert", "own_panels", "panels_from_url"]

RULE_NAME = WEBHOOK_RULE


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


def build_event(
    alert: WebhookAlertIn,
    cfg: Config,
    *,
    now: float,
    status: EventStatus,
    panels: bool,
    templates: TemplateEngine,
    rule: str = RULE_NAME,
) -> AlertEvent:
    """The Flashduty event for one webhook alert (``rule``: ``alertmanager`` for the Alertmanager API)."""
    active_at = alert.starts_ts if alert.starts_ts is not None else now
    resolved_at = (alert.ends_ts if alert.ends_ts is not None else now) if status == "Ok" else None
    captures: tuple[PanelCapture, ...] = ()
    if panels:
        # the alert's own panels are in its Grafana org; webhook.panels in grafana.org_id
        def captures_of(panels: list[PanelConfig], org_id: int | None) -> tuple[PanelCapture, ...]:
            return panel_captures(
                panels,
                cfg,
                labels=alert.labels,
                active_at=active_at,
                now=now,
                resolved_at=resolved_at,
                value=alert.value,
                templates=templates,
                org_id=org_id,
            )

        own = captures_of(own_panels(alert, cfg), alert.org_id)
        configured = captures_of(list(cfg.webhook.panels), None)
        captures = own + tuple(c for c in configured if c not in own)
    title = alert.annotations.get("summary") or alert.labels.get("alertname") or "Alertmanager alert"
    return AlertEvent.for_instance(
        rule,
        alert.labels,
        status=status,
        title=title,
        description=alert.annotations.get("description") or alert.annotations.get("message") or "",
        panels=captures,
        event_time=now,
        active_at=active_at,
        resolved_at=resolved_at,
    )


def own_panels(alert: WebhookAlertIn, cfg: Config) -> list[PanelConfig]:
    """The panels ``alert`` names: its annotations, else its URLs (when ``panels_from_annotations``)."""
    panels: list[PanelConfig] = []
    if cfg.webhook.panels_from_annotations:
        panels = panels_from_annotations(alert.annotations)
        if not panels:
            panels = panels_from_url(alert.panel_url) or panels_from_url(alert.dashboard_url)
    return panels


def alert_panels(alert: WebhookAlertIn, cfg: Config) -> list[PanelConfig]:
    """The panels to capture for ``alert``: from its annotations or URLs, then ``webhook.panels``."""
    return own_panels(alert, cfg) + list(cfg.webhook.panels)


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
