"""The delivery pipeline's background work: late pictures and their follow-ups.

After a push, pictures still coming in are waited for in the background: a **follow-up** waits
for the late pictures of a firing event and queues them as an update; a **drain** lets the
pictures of an ``Ok`` (or of a failed push) finish quietly so a retry finds them in the caches.
Every such task is tracked here until it ends; one that fails is logged and counted
(``background_errors_total{job}``), never lost silently. At most one follow-up waits per
``alert_key``: when a newer event of the key is pushed, the older one's wait is cancelled — its
pictures are useless, and uploading them would only spend the scarce upload quota.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from sidecar.delivery.logline import log_delivery, short_key
from sidecar.delivery.outbox import Outbox, OutboxItem
from sidecar.delivery.pictures import PictureSet
from sidecar.metrics import Metrics

__all__ = ["Background"]

log = logging.getLogger("sidecar.delivery")


class Background:
    """Tracked tasks of the pipeline (``tasks``), and the follow-up wait of each alert key."""

    def __init__(
        self, *, metrics: Metrics, outbox: Outbox, kick: Callable[[], None], window: float, clock: Callable[[], float]
    ) -> None:
        """``window``: how long late pictures may take before they are abandoned."""
        self._metrics = metrics
        self._outbox = outbox
        self._kick = kick
        self._window = window
        self._clock = clock
        self.tasks: set[asyncio.Task[None]] = set()
        self._followups: dict[str, tuple[int, asyncio.Task[None]]] = {}  # alert_key → (event id, waiter)

    def spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task = asyncio.create_task(coro, name=name)
        self.tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def late_pictures(
        self, item: OutboxItem, pics: PictureSet, sent: int, started: float, *, drain_until: float
    ) -> None:
        """After the push of ``item`` with ``sent`` pictures: follow up on the late ones.

        ``sent`` is what was ready when the payload was built; a picture may have come in while
        the push waited for its slot or its answer (a busy box, a burst): it is late too. An
        ``Ok`` gets no follow-up: its pictures only drain (until ``drain_until``)."""
        late = pics.pending or len(pics.ready()) > sent
        if late and item.event.status != "Ok":
            key = item.event.alert_key
            task = self.spawn(self._follow_up(item, pics, sent, started), f"follow-up {item.id}")
            self._followups[key] = (item.id, task)
            task.add_done_callback(functools.partial(self._forget, key))
        elif pics.pending:
            self.drain(pics, drain_until, item.id)

    def drain(self, pics: PictureSet, until: float, event_id: int) -> None:
        """Let the pictures finish quietly (a retry finds them in the caches), until ``until``."""
        self.spawn(self._drain(pics, until), f"drain {event_id}")

    def newer_sent(self, alert_key: str, event_id: int) -> None:
        """Event ``event_id`` of ``alert_key`` was pushed: an older follow-up wait is abandoned."""
        entry = self._followups.get(alert_key)
        if entry is not None and entry[0] < event_id:
            entry[1].cancel()
            log.info(
                "late pictures of event %d abandoned: a newer event of %s was sent",
                entry[0], short_key(alert_key), extra={"alert_key": alert_key, "outcome": "dropped_stale"},
            )  # fmt: skip

    def _forget(self, alert_key: str, task: asyncio.Task[None]) -> None:
        entry = self._followups.get(alert_key)
        if entry is not None and entry[1] is task:
            del self._followups[alert_key]

    def _done(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and (e := task.exception()) is not None:
            self._metrics.background_errors.labels(job=task.get_name().split(" ")[0]).inc()
            log.error("%s failed: %s", task.get_name(), e, exc_info=e)

    async def _follow_up(self, item: OutboxItem, pics: PictureSet, sent: int, started: float) -> None:
        """Wait for the late pictures; queue them as the event's follow-up."""
        try:
            await pics.wait(started + self._window)
        finally:
            await pics.aclose()
        ready = pics.ready()
        if len(ready) <= sent:
            log.info(
                "no late picture for %s %s %s; no follow-up",
                item.event.status, item.event.rule, short_key(item.event.alert_key),
                extra={"alert_key": item.event.alert_key, "rule": item.event.rule, **pics.log_fields()},
            )  # fmt: skip
            return
        fid = self._outbox.put_followup(item.id, item.event, ready, pics.notes(f"{self._window:g}s"))
        if fid is None:
            log_delivery(item, "dropped_stale", pics, (len(ready), pics.total, self._clock() - started))
            return
        self._kick()

    @staticmethod
    async def _drain(pics: PictureSet, until: float) -> None:
        try:
            await pics.wait(until)
        finally:
            await pics.aclose()
