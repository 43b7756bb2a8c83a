"""The one canonical log line per delivery (logger ``sidecar.delivery``)::

    delivered Critical HighErrorRate fds:ab12cd34… pictures 2/2 in 1.84s

with ``extra`` = rule, alert_key, status, captures [{alt, cls, ms}], uploads [{alt, outcome}],
duration_ms, outcome (delivered | followup | dropped_stale | retry | dead_letter | superseded),
followup, request_id. A retry logs at WARNING, a dead letter at ERROR, everything else at INFO.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from sidecar.delivery.outbox import FailResult, OutboxItem
from sidecar.delivery.outbox_db import StoredImage
from sidecar.delivery.pictures import PictureSet
from sidecar.flashduty.errors import FlashdutyError

__all__ = ["log_delivery", "short_key"]

log = logging.getLogger("sidecar.delivery")


def short_key(key: str) -> str:
    return key[:12] + "…" if len(key) > 12 else key


def log_delivery(
    item: OutboxItem,
    outcome: str,
    pics: PictureSet | None,
    counts: tuple[int, int, float],
    *,
    error: FlashdutyError | None = None,
    fail: FailResult | None = None,
) -> None:
    """``counts``: pictures sent, pictures asked for, seconds the delivery took."""
    sent, total, duration = counts
    ev = item.event
    verb = {"delivered": "delivered", "followup": "follow-up delivered", "dropped_stale": "dropped stale follow-up"}
    head = verb.get(outcome, "push failed")
    msg = f"{head} {ev.status} {ev.rule} {short_key(ev.alert_key)} pictures {sent}/{total} in {duration:.2f}s"
    level = logging.INFO
    if fail is not None and error is not None:
        if fail.outcome == "retry":
            msg += f"; retry {fail.attempts} in {fail.delay:.1f}s: {error}"
            level = logging.WARNING
        elif fail.outcome == "dead_letter":
            msg += f"; dead-lettered after {fail.attempts} attempt(s): {error}"
            level = logging.ERROR
        else:
            msg += f"; superseded by a newer event: {error}"
    fields: dict[str, Any] = pics.log_fields() if pics is not None else _stored_fields(item.images)
    for c in fields["captures"]:  # the rule, the panel and why, on one line (e.g. a panel this Grafana cannot show)
        if c.get("reason"):
            msg += f'; "{c["alt"]}" without picture: {c["reason"]}'
    log.log(
        level,
        msg,
        extra={
            "rule": ev.rule,
            "alert_key": ev.alert_key,
            "status": ev.status,
            "captures": fields["captures"],
            "uploads": fields["uploads"],
            "duration_ms": round(duration * 1000),
            "outcome": outcome,
            "followup": item.is_followup,
            "request_id": error.request_id if error is not None else None,
        },
    )


def _stored_fields(images: Iterable[StoredImage]) -> dict[str, list[dict[str, Any]]]:
    imgs = list(images)
    return {
        "captures": [{"alt": i.alt, "cls": "earlier", "ms": None} for i in imgs],
        "uploads": [{"alt": i.alt, "outcome": "earlier"} for i in imgs],
    }
