"""Startup reconciliation: close the Flashduty alerts we opened that are no longer firing.

State can be lost (a new ``state_dir``, an ``Ok`` that died with its dead letter, a rule that
was deleted while the daemon was down). With an ``app_key``, at startup:

1. list the active alerts of the last ``lookback_days`` (``/alert/list``, ``is_active=true``;
   the client cuts the window into ≤ 31-day slices and pages through each);
2. keep ours: labels carry ``sidecar_rule``. List items have no ``alert_key``
   (Flashduty returns none), so recompute it: ``alert_key(labels["sidecar_rule"], labels
   without sidecar_rule)`` — the same function the rule engine uses;
3. an alert whose key is not in ``firing_keys`` is a candidate for an ``Ok``;
4. verify the recomputed keys with one ``alert_keys`` query per 100 candidates: a key that does
   not bring back the same ``alert_id`` (labels truncated or dropped by Flashduty, or keyed by
   something else) is a *conflict*: logged, never guessed at, because an ``Ok`` pushed under a
   wrong key would not close anything;
5. put an ``Ok`` event (title and labels of the alert) in the outbox for every verified one.

Rules listed in ``keep_rules`` (e.g. ``webhook``: Alertmanager owns that state and re-sends
it) are left alone.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Collection, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from sidecar.delivery.outbox import Outbox
from sidecar.flashduty.client import FlashdutyClient
from sidecar.flashduty.payload import MAX_LABEL_VALUE, MAX_LABELS
from sidecar.model import RULE_MARKER, AlertEvent, alert_key

__all__ = ["ReconcileReport", "reconcile"]

log = logging.getLogger("sidecar.delivery.reconcile")

DAY = 86400.0
VERIFY_BATCH = 100
RESOLVED_NOTE = "Resolved by flashduty-sidecar at startup: no longer firing (state reconciled)."


@dataclass
class ReconcileReport:
    """Counts of what one reconciliation saw and did."""

    active: int = 0  # active alerts listed
    ours: int = 0  # ... carrying sidecar_rule
    still_firing: int = 0  # ... whose key the engine still has firing
    kept: int = 0  # ... of a rule in keep_rules
    resolved: int = 0  # Ok events put in the outbox
    conflicts: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return asdict(self)

    def summary(self) -> str:
        return (
            f"{self.active} active alert(s), {self.ours} ours, {self.still_firing} still firing, "
            f"{self.kept} kept, {self.resolved} resolved, {len(self.conflicts)} conflict(s)"
        )


@dataclass(frozen=True)
class _Candidate:
    key: str
    rule: str
    item: Mapping[str, Any]

    @property
    def alert_id(self) -> str:
        return str(self.item.get("alert_id", ""))

    @property
    def labels(self) -> dict[str, str]:
        return {str(k): str(v) for k, v in (self.item.get("labels") or {}).items()}


def _looks_truncated(labels: Mapping[str, str]) -> bool:
    """Flashduty keeps ≤ 50 labels and cuts values: a key computed from such labels is suspect."""
    if len(labels) >= MAX_LABELS:
        return True
    return any(len(v) >= MAX_LABEL_VALUE for v in labels.values())


def _describe(c: _Candidate) -> str:
    return f"alert {c.alert_id} ({c.rule}: {c.item.get('title', '')!r})"


async def reconcile(
    client: FlashdutyClient,
    outbox: Outbox,
    *,
    firing_keys: set[str],
    now: float,
    lookback_days: int = 31,
    keep_rules: Collection[str] = (),
) -> ReconcileReport:
    """Queue an ``Ok`` for each of our active Flashduty alerts that is not firing any more.

    Raises ``FlashdutyError`` when Flashduty cannot be listed (the caller logs it and goes on:
    reconciliation is a repair, never a reason not to start).
    """
    report = ReconcileReport()
    start = now - lookback_days * DAY
    items = await client.list_alerts(start=start, end=now, is_active=True)
    report.active = len(items)
    candidates: list[_Candidate] = []
    by_key: dict[str, list[_Candidate]] = defaultdict(list)
    for item in items:
        labels = item.get("labels") or {}
        rule = labels.get(RULE_MARKER) if isinstance(labels, Mapping) else None
        if not isinstance(rule, str) or not rule:
            continue
        report.ours += 1
        if rule in keep_rules:
            report.kept += 1
            continue
        instance = {str(k): str(v) for k, v in labels.items() if k != RULE_MARKER}
        c = _Candidate(alert_key(rule, instance), rule, item)
        by_key[c.key].append(c)
        if c.key in firing_keys:
            report.still_firing += 1
        else:
            candidates.append(c)
    for key, group in by_key.items():
        if len(group) > 1:
            ids = ", ".join(c.alert_id for c in group)
            _conflict(report, f"alerts {ids} share the recomputed key {key}")
    verified = await _verify(client, candidates, start=start, end=now)
    queued: set[str] = set()
    for c in candidates:
        if c.alert_id not in verified:
            why = "its labels look truncated" if _looks_truncated(c.labels) else "no alert has this key"
            _conflict(report, f"{_describe(c)}: recomputed key {c.key} not confirmed ({why}); left open")
            continue
        if c.key in queued:
            continue
        outbox.put(
            AlertEvent(
                alert_key=c.key,
                rule=c.rule,
                status="Ok",
                title=str(c.item.get("title") or c.rule),
                description=RESOLVED_NOTE,
                labels=c.labels,
                event_time=now,
                resolved_at=now,
            )
        )
        queued.add(c.key)
        report.resolved += 1
        log.info("reconcile: %s is not firing any more; Ok queued", _describe(c), extra={"alert_key": c.key})
    log.info("reconcile: %s", report.summary())
    return report


async def _verify(client: FlashdutyClient, candidates: list[_Candidate], *, start: float, end: float) -> set[str]:
    """alert_ids that the ``alert_keys`` filter brings back for their recomputed keys."""
    found: set[str] = set()
    keys = sorted({c.key for c in candidates})
    for i in range(0, len(keys), VERIFY_BATCH):
        batch = keys[i : i + VERIFY_BATCH]
        items = await client.list_alerts(start=start, end=end, is_active=True, alert_keys=batch)
        found.update(str(item.get("alert_id")) for item in items)
    return found


def _conflict(report: ReconcileReport, text: str) -> None:
    report.conflicts.append(text)
    log.warning("reconcile conflict: %s", text)
