"""Alerts received on the Alertmanager API, with Alertmanager's semantics: what to send, and when.

Clients (Prometheus, vmalert, Grafana's "Alertmanager" contact point) re-send a firing alert every
evaluation with an ``endsAt`` a few intervals ahead (Prometheus: ``rules/alerting.go``
``sendAlerts``, ``ValidUntil = ts + 4 × max(interval, resend_delay)``), and a resolved one with its
``endsAt`` in the past (``rules/manager.go`` ``SendAlerts``). Labels identify an alert (its
fingerprint: the hash of the sorted labels). Each POSTed alert is merged into the one stored with
the same labels as Alertmanager merges them (``provider/mem/mem.go`` ``Put``: only when their
activity ranges overlap; ``alert/alert.go`` ``Merge``: the earliest ``startsAt``, an explicit
``endsAt`` kept over a newer timeout), then:

* firing (``endsAt`` after now) and not firing before → an event with the pictures;
* firing and already firing → nothing until ``delivery.resend_interval`` (a re-send, pictures only
  with ``delivery.recapture_on_resend``);
* resolved, and firing before (or never seen: after lost state a superfluous ``Ok`` is better
  than an alert left open) → ``Ok``;
* an alert whose ``endsAt`` passes with no new POST resolves then: ``expire`` (run every second
  by ``run_expiry``, a background job) sends its ``Ok``. The alerts are kept in ``RuleState``
  (``api_alerts``), so a restart resolves what ended meanwhile.

Events belong to the rule ``alertmanager`` (``model.ALERTMANAGER_RULE``), built like the
webhook's (``events.build_event``): severity from the ``severity`` label, else
``webhook.default_severity``; title from ``summary``, else ``alertname``; pictures from the
annotations (``__dashboardUid__`` / ``__panelId__`` that Grafana sends, or ``grafana_dashboard_uid``
/ ``grafana_panel_id``) and ``webhook.panels``. Labels starting with ``__`` (Grafana's internal
``__alert_rule_uid__`` …) are not sent; ``__alert_rule_uid__`` becomes ``grafana_rule_uid``.
Grafana's ``__values__`` / ``__value_string__`` annotations give ``$value``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
import sqlite3
import time
from collections.abc import Callable
from typing import Any

from sidecar.config import Config
from sidecar.model import ALERTMANAGER_RULE, EventStatus
from sidecar.rules.engine import EventSink
from sidecar.rules.events import normalize_severity
from sidecar.rules.sources.grafana_values import parse_value
from sidecar.rules.state import ApiAlertRow, RuleState
from sidecar.rules.templates import TemplateEngine

from .events import build_event
from .payload import WebhookAlertIn
from .postable import ApiAlert

__all__ = ["AlertsApiReceiver", "fingerprint"]

log = logging.getLogger(__name__)

_PRUNE_EVERY = 3600.0


def fingerprint(labels: dict[str, str]) -> str:
    """The identity of an alert: its sorted labels (Alertmanager: ``LabelSet.Fingerprint``)."""
    return hashlib.sha256(json.dumps(sorted(labels.items())).encode()).hexdigest()[:32]


class AlertsApiReceiver:
    """Decides and builds the events of Alertmanager-API alerts; ``sink`` makes them durable."""

    def __init__(
        self,
        *,
        cfg: Callable[[], Config],
        sink: EventSink,
        state: RuleState,
        templates: TemplateEngine,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._cfg, self._sink, self._state, self._templates, self._clock = cfg, sink, state, templates, clock
        self._last_prune = 0.0

    def receive(self, alerts: list[ApiAlert], now: float) -> int:
        """Store the POSTed alerts and hand over their events; how many events were sent.

        Raises what the sink or the state raises (the handler answers 500 then; alerts already
        handled are not repeated: the state records them as they go)."""
        sent = 0
        for alert in alerts:
            fp = fingerprint(alert.labels)
            row = self._state.api_alert_get(fp)
            old = row.doc if row is not None else None
            doc = _merge(old, alert, now)
            firing = doc["ends_at"] > now
            was_firing = row is not None and row.status == "firing"
            status: EventStatus | None = None
            panels = True
            if firing:
                if not was_firing:
                    status = self._severity(doc)
                elif self._resend_due(doc, now):
                    status, panels = self._severity(doc), self._cfg().delivery.recapture_on_resend
            elif was_firing or row is None:
                status = "Ok"
            if status is not None:
                self._send(doc, status, panels, now)
                sent += 1
            self._put(fp, doc, "firing" if firing else "resolved", now)
        self._prune(now)
        return sent

    def expire(self, now: float) -> int:
        """Resolve the firing alerts whose ``endsAt`` has passed: one ``Ok`` each."""
        sent = 0
        for row in self._state.api_alerts_ended(now):
            self._send(row.doc, "Ok", True, now)
            self._put(row.fingerprint, row.doc, "resolved", now)
            sent += 1
        return sent

    async def run_expiry(self, tick: float = 1.0) -> None:
        """``expire`` every ``tick`` seconds, for ever (a job of the app's scheduler)."""
        failing = False
        while True:
            try:
                sent = self.expire(self._clock())
                if sent:
                    log.info("alertmanager API alerts ended", extra={"events": sent})
                failing = False
            except Exception:  # the outbox or the state failed: try again at the next tick
                if not failing:  # once per failure, not every second
                    log.exception("alertmanager API: could not resolve ended alerts; retrying every %gs", tick)
                failing = True
            await asyncio.sleep(tick)

    # ------------------------------------------------------------------ helpers

    def _severity(self, doc: dict[str, Any]) -> EventStatus:
        return normalize_severity(doc["labels"].get("severity")) or self._cfg().webhook.default_severity

    def _resend_due(self, doc: dict[str, Any], now: float) -> bool:
        resend = self._cfg().delivery.resend_interval
        last = doc.get("last_sent_at")
        return resend > 0 and last is not None and now - last >= resend

    def _send(self, doc: dict[str, Any], status: EventStatus, panels: bool, now: float) -> None:
        labels, annotations = _outgoing(doc["labels"]), doc["annotations"]
        alert = WebhookAlertIn(
            status="resolved" if status == "Ok" else "firing",
            labels=labels,
            annotations=annotations,
            fingerprint="",
            starts_at="",
            starts_ts=doc["starts_at"],
            ends_ts=min(doc["ends_at"], now),
            value=_value(annotations),
        )
        cfg = self._cfg()
        event = build_event(
            alert, cfg, now=now, status=status, panels=panels, templates=self._templates, rule=ALERTMANAGER_RULE
        )
        self._sink(event)  # durable when it returns
        doc["last_sent_at"] = now

    def _put(self, fp: str, doc: dict[str, Any], status: str, now: float) -> None:
        self._state.api_alert_put(ApiAlertRow(fp, doc, status, doc["ends_at"], now))  # type: ignore[arg-type]

    def _prune(self, now: float) -> None:
        if now - self._last_prune < _PRUNE_EVERY:
            return
        self._last_prune = now
        try:
            self._state.api_alerts_prune(now)
        except sqlite3.Error as e:  # housekeeping only
            log.warning("alertmanager API: could not prune old alerts", extra={"error": str(e)})


def _merge(old: dict[str, Any] | None, new: ApiAlert, now: float) -> dict[str, Any]:
    """``new`` merged into ``old`` as Alertmanager's store does; a fresh record without overlap."""
    doc: dict[str, Any] = {
        "labels": new.labels,
        "annotations": new.annotations,
        "starts_at": new.starts_at,
        "ends_at": new.ends_at,
        "timeout": new.timeout,
        "generator_url": new.generator_url,
        "last_sent_at": None,
    }
    if old is None:
        return doc
    doc["last_sent_at"] = old.get("last_sent_at")  # ours, not Alertmanager's: what was sent, when
    o_start, o_end = old["starts_at"], old["ends_at"]
    if not (o_start < new.ends_at < o_end or o_start < new.starts_at < o_end):
        return doc  # no overlap in activity: the new alert replaces the stored one
    doc["starts_at"] = min(o_start, new.starts_at)
    if new.ends_at <= now:  # the newer one is resolved: the latest explicit end wins
        if o_end <= now and o_end > new.ends_at:
            doc["ends_at"] = o_end
    elif o_end > new.ends_at and not old.get("timeout"):
        doc["ends_at"] = o_end  # an explicit end time beats a newer timeout
    return doc


def _outgoing(labels: dict[str, str]) -> dict[str, str]:
    out = {k: v for k, v in labels.items() if not k.startswith("__")}
    if "__alert_rule_uid__" in labels:
        out.setdefault("grafana_rule_uid", labels["__alert_rule_uid__"])
    return out


def _value(annotations: dict[str, str]) -> float:
    raw = annotations.get("__values__")
    if raw:
        try:
            values = json.loads(raw)
        except ValueError:
            values = None
        if isinstance(values, dict) and values:
            return parse_value(next(iter(values.values())))
    return parse_value(annotations.get("__value_string__")) if annotations.get("__value_string__") else math.nan
