"""How the Flashduty sandbox merges pushed events into alerts (flashduty-api.md 1.7).

- Events merge by ``alert_key``, scoped per integration. A key with no alert, or whose alert is
  closed, opens a new alert (new 24-hex ``alert_id``); an ``Ok`` with no open alert is discarded.
- An update sets ``last_time``, ``event_cnt``, title, status; ``description`` when the event has
  one; labels are merged (the event's values win); images are merged by ``alt`` (a later image
  replaces an earlier one with the same alt); ``alert_severity`` is the highest seen
  (Critical > Warning > Info). ``Ok`` closes the alert (``end_time`` set, severity kept).
- Noise reduction layer 1: an event identical to the previous event for the same key and
  integration is discarded (the API still answers 200). Layer 2 (same status, title and
  description as the alert's last event) is *not* emulated: such events are merged and counted.
- A push without ``alert_key`` gets a fresh random key, so it always opens a new alert.
- Times are Unix seconds from the wall clock; ``event_time``, when sent, dates the event.
"""

from __future__ import annotations

import secrets
import string
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .flashduty_events import ImageRef, PushedEvent, render_title

SEVERITY_RANK = {"Info": 1, "Warning": 2, "Critical": 3}
_KEY_ALPHABET = string.ascii_letters + string.digits


@dataclass(frozen=True)
class Integration:
    integration_id: int
    integration_name: str
    channel_id: int
    channel_name: str
    account_id: int
    integration_type: str = "standard_alert"

    def to_json(self) -> dict[str, Any]:
        return {
            "integration_id": self.integration_id,
            "integration_name": self.integration_name,
            "integration_type": self.integration_type,
            "channel_id": self.channel_id,
            "channel_name": self.channel_name,
            "account_id": self.account_id,
        }


@dataclass
class EventRecord:
    event_id: str
    received_at: float
    event_time: int
    event_status: str
    title: str
    title_rule: str
    description: str | None
    labels: dict[str, str]
    images: list[ImageRef]
    payload: dict[str, Any]
    warnings: list[str]

    def to_json(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "received_at": self.received_at,
            "event_time": self.event_time,
            "event_status": self.event_status,
            "title": self.title,
            "title_rule": self.title_rule,
            "description": self.description,
            "labels": dict(self.labels),
            "images": [image.to_json() for image in self.images],
            "payload": self.payload,
            "warnings": list(self.warnings),
        }


@dataclass
class Alert:
    alert_id: str
    alert_key: str
    integration: Integration
    title: str
    title_rule: str
    description: str
    alert_severity: str
    alert_status: str
    start_time: int
    last_time: int
    created_at: int
    updated_at: int
    end_time: int = 0
    event_cnt: int = 0
    ever_muted: bool = False
    labels: dict[str, str] = field(default_factory=dict)
    images: dict[str, ImageRef] = field(default_factory=dict)  # by alt
    events: list[EventRecord] = field(default_factory=list)

    @property
    def active(self) -> bool:
        return self.alert_status != "Ok"

    def to_state(self) -> dict[str, Any]:
        """Everything, including what the list API does not show (alert_key, images, events)."""
        return {
            "alert_id": self.alert_id,
            "alert_key": self.alert_key,
            **self.integration.to_json(),
            "title": self.title,
            "title_rule": self.title_rule,
            "description": self.description,
            "alert_severity": self.alert_severity,
            "alert_status": self.alert_status,
            "start_time": self.start_time,
            "last_time": self.last_time,
            "end_time": self.end_time,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "event_cnt": self.event_cnt,
            "ever_muted": self.ever_muted,
            "labels": dict(self.labels),
            "images": [image.to_json() for image in self.images.values()],
            "events": [event.to_json() for event in self.events],
        }


@dataclass(frozen=True)
class PushOutcome:
    alert_key: str
    action: str  # created | updated | closed | discarded
    alert: Alert | None = None
    reason: str = ""


def new_object_id() -> str:
    return secrets.token_hex(12)


def new_alert_key() -> str:
    return "".join(secrets.choice(_KEY_ALPHABET) for _ in range(22))


class AlertBook:
    """All alerts, in creation order, and the events discarded on the way."""

    def __init__(self, *, wall: Callable[[], float]) -> None:
        self._wall = wall
        self.alerts: list[Alert] = []
        self.discarded: list[dict[str, Any]] = []
        self._current: dict[tuple[int, str], Alert] = {}
        self._last_fingerprint: dict[tuple[int, str], str] = {}

    def apply(self, integration: Integration, event: PushedEvent, payload: dict[str, Any]) -> PushOutcome:
        now = self._wall()
        key = event.alert_key or new_alert_key()
        scope = (integration.integration_id, key)
        fingerprint = event.fingerprint()
        if self._last_fingerprint.get(scope) == fingerprint:
            reason = "identical to the previous event (noise reduction layer 1)"
            return self._discard(integration, key, payload, now, reason)
        self._last_fingerprint[scope] = fingerprint
        alert = self._current.get(scope)
        if alert is not None and not alert.active:
            alert = None
        if event.event_status == "Ok" and alert is None:
            return self._discard(integration, key, payload, now, "Ok for an alert_key with no open alert")
        if alert is None:
            alert = self._open(integration, key, event, now)
            action = "created"
        else:
            action = "closed" if event.event_status == "Ok" else "updated"
        self._merge(alert, event, payload, now)
        return PushOutcome(alert_key=key, action=action, alert=alert)

    def _open(self, integration: Integration, key: str, event: PushedEvent, now: float) -> Alert:
        when = event.event_time if event.event_time is not None else int(now)
        alert = Alert(
            alert_id=new_object_id(),
            alert_key=key,
            integration=integration,
            title="",
            title_rule=event.title_rule,
            description="",
            alert_severity=event.event_status,
            alert_status=event.event_status,
            start_time=when,
            last_time=when,
            created_at=int(now),
            updated_at=int(now),
        )
        self.alerts.append(alert)
        self._current[(integration.integration_id, key)] = alert
        return alert

    def _merge(self, alert: Alert, event: PushedEvent, payload: dict[str, Any], now: float) -> None:
        when = event.event_time if event.event_time is not None else int(now)
        context = {
            "Description": event.description or "",
            "EventSeverity": event.event_status,
            "EventStatus": event.event_status,
            "AlertKey": alert.alert_key,
            "TitleRule": event.title_rule,
            "IntegrationType": alert.integration.integration_type,
            "IntegrationName": alert.integration.integration_name,
        }
        title = render_title(event.title_rule, context, event.labels)
        alert.title, alert.title_rule, alert.alert_status = title, event.title_rule, event.event_status
        if event.description is not None:
            alert.description = event.description
        if event.event_status == "Ok":
            alert.end_time = when
        elif SEVERITY_RANK[event.event_status] > SEVERITY_RANK.get(alert.alert_severity, 0):
            alert.alert_severity = event.event_status
        alert.labels.update(event.labels)
        alert.images.update({image.alt: image for image in event.images})
        alert.last_time = max(alert.last_time, when)
        alert.updated_at = int(now)
        alert.event_cnt += 1
        alert.events.append(
            EventRecord(
                event_id=new_object_id(),
                received_at=now,
                event_time=when,
                event_status=event.event_status,
                title=title,
                title_rule=event.title_rule,
                description=event.description,
                labels=dict(event.labels),
                images=list(event.images),
                payload=payload,
                warnings=list(event.warnings),
            )
        )

    def _discard(
        self, integration: Integration, key: str, payload: dict[str, Any], now: float, reason: str
    ) -> PushOutcome:
        self.discarded.append(
            {
                "received_at": now,
                "integration_id": integration.integration_id,
                "alert_key": key,
                "reason": reason,
                "payload": payload,
            }
        )
        return PushOutcome(alert_key=key, action="discarded", reason=reason)
