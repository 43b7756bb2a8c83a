"""How one delivery ends, once its push is answered: acked and followed up, or failed.

``Settler.delivered``: the ack's metrics, the newer-event notice for an older follow-up wait, the
canonical line, and the late pictures handed to the background (follow-up or drain).
``Settler.failed``: back to the outbox (retry with backoff, pictures already uploaded kept on the
row) or to the dead letters; a 429 never spends an attempt; pictures still coming drain quietly.
Both write the canonical log line (``logline.py``) and the status page's record.
"""

from __future__ import annotations

from collections.abc import Callable

from sidecar.delivery.background import Background
from sidecar.delivery.logline import log_delivery
from sidecar.delivery.outbox import FailResult, Outbox, OutboxItem
from sidecar.delivery.pictures import PictureSet
from sidecar.flashduty.errors import FlashdutyError, FlashdutyRateLimited
from sidecar.metrics import Metrics
from sidecar.status.journal import Journal
from sidecar.status.record import delivery_record

__all__ = ["Settler"]


class Settler:
    def __init__(
        self,
        *,
        outbox: Outbox,
        metrics: Metrics,
        background: Background,
        journal: Journal | None,
        clock: Callable[[], float],
        wall: Callable[[], float],
        refresh: Callable[[], None],
        wake: Callable[[], None],
        followup_window: float,
    ) -> None:
        self._outbox = outbox
        self._metrics = metrics
        self._background = background
        self._journal = journal
        self._clock = clock
        self._wall = wall
        self._refresh = refresh
        self._wake = wake
        self._followup_window = followup_window

    def delivered(
        self, item: OutboxItem, started: float, pics: PictureSet | None, sent: int, *, image_budget: float
    ) -> None:
        """``sent``: the event's own pictures in the push (a storm's shared one is not its own)."""
        ev = item.event
        total = len(ev.panels)
        if item.is_followup:
            label = "followup"
        else:
            label = "none" if total == 0 else "all" if sent == total else "partial" if sent else "missing"
            self._metrics.delivery_seconds.observe(max(0.0, self._wall() - item.created_at))
        self._metrics.alerts_delivered.labels(ev.status, label).inc()
        self._refresh()
        if not item.is_followup:
            self._background.newer_sent(ev.alert_key, item.id)
        self.line(item, "followup" if item.is_followup else "delivered", started, pics, sent, total)
        if pics is not None:
            self._background.late_pictures(item, pics, sent, started, drain_until=started + image_budget)

    def failed(self, item: OutboxItem, e: FlashdutyError, pics: PictureSet | None, started: float) -> None:
        ready = pics.ready() if pics is not None else list(item.images)
        result = self._outbox.fail(
            item.id,
            str(e),
            e.retryable,
            request_id=e.request_id,
            images=ready if not item.is_followup else (),
            count_attempt=not isinstance(e, FlashdutyRateLimited),
        )
        self._refresh()
        self.line(item, result.outcome, started, pics, len(ready), len(item.event.panels), error=e, fail=result)
        if pics is not None and pics.pending:  # finish quietly: the retry finds them in the caches
            self._background.drain(pics, started + self._followup_window, item.id)
        if result.outcome == "retry":
            self._wake()

    def line(
        self,
        item: OutboxItem,
        outcome: str,
        started: float,
        pics: PictureSet | None,
        sent: int,
        total: int,
        *,
        error: FlashdutyError | None = None,
        fail: FailResult | None = None,
    ) -> None:
        counts = (sent, total, self._clock() - started)
        log_delivery(item, outcome, pics, counts, error=error, fail=fail)
        if self._journal is not None:
            self._journal.record(delivery_record(item, outcome, pics, counts, at=self._wall(), error=error, fail=fail))
