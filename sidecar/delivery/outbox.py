"""The durable outbox: every alert event is on disk before any network call is made.

The queue of undelivered events (the ``events`` table; the file, its schema and its durability
are ``outbox_db.py``, the dead-letter table ``dead_letters.py``). ``put`` returns only once the
event survives a power cut (so do ``put_followup`` and ``fail``); claims, acks and releases are
not synced, since losing one only means an event is sent again.

Ordering rules, all enforced here:

* a newer event for an alert_key replaces any older row of that key that is not claimed
  (coalescing: only the newest state is pending; an older firing never goes out after its Ok);
* at most one claimed row per alert_key; a row whose key is in flight waits for it;
* claim order: priority (Ok, Critical, Warning, Info, then follow-ups), then ``queued_since``;
* a row that fails while a newer row of its key exists is dropped, never retried after it;
* a follow-up is only accepted, and only delivered, while the event it completes is still the
  last one sent for its key (``sent.event_id == origin_id``) and nothing newer is queued.

Failures back off exponentially (full jitter, 1 s doubling up to 60 s); a permanent failure or
the ``max_attempts``-th one (``reconfigure`` applies a reloaded ``delivery`` section) moves the
row to the dead letters.

At-least-once: a claim is a lease held by this process; ``recover()`` (at startup) releases all
of them, so an event whose push may or may not have happened is sent again. That is safe:
Flashduty merges events with the same alert_key.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from sidecar.config import DeliveryConfig
from sidecar.delivery.dead_letters import DeadLetters
from sidecar.delivery.outbox_db import (
    OUTBOX_FILE,
    Attachments,
    FailResult,
    OutboxDb,
    OutboxItem,
    SentRecord,
    StoredImage,
    redact,
)
from sidecar.model import AlertEvent

__all__ = [
    "FOLLOWUP_PRIORITY_OFFSET",
    "FailResult",
    "Outbox",
    "OutboxItem",
]

log = logging.getLogger("sidecar.delivery.outbox")

FOLLOWUP_PRIORITY_OFFSET = 10  # follow-ups (pictures only) go after every fresh event
BACKOFF_BASE = 1.0
BACKOFF_CAP = 60.0
SENT_RETENTION = 30 * 86400.0  # forget the last-sent record of keys quiet for this long


class Outbox:
    """Durable, coalescing, per-key ordered queue of alert events (see the module docstring).

    ``dead_letters`` is the file's dead-letter table (``DeadLetters``)."""

    def __init__(
        self,
        path: str | Path,
        *,
        max_attempts: int = 10,
        clock: Callable[[], float] = time.time,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.path = Path(path)
        self._max_attempts = max_attempts
        self._clock = clock
        self._rng = rng
        self._db = OutboxDb(self.path)
        self.dead_letters = DeadLetters(self._db, clock=clock)

    @classmethod
    def in_dir(cls, state_dir: str | Path, **kwargs: Any) -> Outbox:
        """The daemon's outbox: ``<state_dir>/outbox.sqlite3``."""
        return cls(Path(state_dir) / OUTBOX_FILE, **kwargs)

    def close(self) -> None:
        self._db.close()

    @property
    def max_attempts(self) -> int:
        """Failed attempts after which a row is dead-lettered."""
        return self._max_attempts

    def reconfigure(self, delivery: DeliveryConfig) -> None:
        """Apply a reloaded ``delivery`` section (``max_attempts``; rows keep their attempts)."""
        self._max_attempts = delivery.max_attempts

    # ------------------------------------------------------------------ producers

    def put(self, event: AlertEvent) -> int:
        """Store ``event`` durably (replacing any unclaimed older row of its key); its id."""
        now = self._clock()
        with self._db.tx():
            oldest = self._db.coalesce(event.alert_key)
            return self._db.insert(
                event=event,
                kind="event",
                priority=event.priority,
                attachments=Attachments(),
                origin_id=None,
                now=now,
                queued_since=now if oldest is None else min(oldest, now),
            )

    def put_followup(
        self,
        origin_id: int,
        event: AlertEvent,
        images: Sequence[StoredImage],
        notes: Sequence[str] = (),
    ) -> int | None:
        """Queue the late pictures of event ``origin_id`` (already pushed); None when stale.

        Stale means: something newer than ``origin_id`` was sent or is queued for the key, so
        those pictures belong to an older state and must not overwrite the newer one.
        """
        now = self._clock()
        with self._db.tx():
            if not self._followup_current(event.alert_key, origin_id):
                return None
            return self._db.insert(
                event=event,
                kind="followup",
                priority=FOLLOWUP_PRIORITY_OFFSET + event.priority,
                attachments=Attachments(list(images), list(notes)),
                origin_id=origin_id,
                now=now,
                queued_since=now,
            )

    def _followup_current(self, alert_key: str, origin_id: int, besides: int | None = None) -> bool:
        sent = self.last_sent(alert_key)
        if sent is None or sent.event_id != origin_id:
            return False
        return not self._db.newer_exists(alert_key, origin_id, besides=besides)

    # ------------------------------------------------------------------ workers

    def recover(self) -> int:
        """Release every claim left by a previous run (at startup); how many were released."""
        now = self._clock()
        with self._db.tx(durable=False):
            n = self._db.execute("UPDATE events SET claimed_at = NULL WHERE claimed_at IS NOT NULL").rowcount
            self._db.execute("DELETE FROM sent WHERE sent_at < ?", (now - SENT_RETENTION,))
        if n:
            log.info("outbox: released %d claim(s) left by the previous run; they will be sent again", n)
        return n

    def due_now(self) -> None:
        """Every waiting row due now (a replica handing its outbox over to the leader)."""
        with self._db.tx(durable=False):
            self._db.execute("UPDATE events SET next_attempt_at = ? WHERE next_attempt_at > ?", (self._clock(),) * 2)

    def claim(self) -> OutboxItem | None:
        """The most urgent due row whose alert_key is not in flight, now leased to the caller."""
        now = self._clock()
        with self._db.tx(durable=False):
            row = self._db.execute(
                "SELECT * FROM events AS e WHERE e.claimed_at IS NULL AND e.next_attempt_at <= ?"
                " AND NOT EXISTS (SELECT 1 FROM events AS c"
                "   WHERE c.alert_key = e.alert_key AND c.claimed_at IS NOT NULL)"
                " ORDER BY e.priority, e.queued_since, e.id LIMIT 1",
                (now,),
            ).fetchone()
            if row is None:
                return None
            self._db.execute("UPDATE events SET claimed_at = ? WHERE id = ?", (now, row["id"]))
        att = Attachments.loads(row["attachments"])
        return OutboxItem(
            id=row["id"],
            event=AlertEvent.from_json(row["event"]),
            kind=row["kind"],
            attempts=row["attempts"],
            created_at=row["created_at"],
            images=tuple(att.images),
            notes=tuple(att.notes),
            origin_id=row["origin_id"],
        )

    def followup_is_current(self, item: OutboxItem) -> bool:
        """A claimed follow-up may still be pushed (no newer event sent or queued for its key)."""
        assert item.origin_id is not None
        return self._followup_current(item.event.alert_key, item.origin_id, besides=item.id)

    def ack(self, event_id: int, *, request_id: str | None = None) -> None:
        """The row was pushed (or deliberately dropped): delete it, record what was sent."""
        now = self._clock()
        with self._db.tx(durable=False):
            row = self._db.row(event_id)
            self._db.execute("DELETE FROM events WHERE id = ?", (event_id,))
            if row["kind"] == "event":
                status = json.loads(row["event"])["status"]
                self._db.execute(
                    "INSERT INTO sent (alert_key, event_id, status, sent_at, request_id)"
                    " VALUES (?, ?, ?, ?, ?) ON CONFLICT (alert_key) DO UPDATE SET"
                    " event_id = excluded.event_id, status = excluded.status,"
                    " sent_at = excluded.sent_at, request_id = excluded.request_id"
                    " WHERE excluded.event_id >= sent.event_id",
                    (row["alert_key"], event_id, status, now, request_id),
                )

    def drop(self, event_id: int) -> None:
        """Delete a claimed row without recording a send (a stale follow-up)."""
        with self._db.tx(durable=False):
            self._db.execute("DELETE FROM events WHERE id = ?", (event_id,))

    def release(self, event_id: int, *, images: Sequence[StoredImage] = ()) -> None:
        """Give a claim back untouched (shutdown, cancellation): no attempt is counted."""
        with self._db.tx(durable=False):
            row = self._db.execute("SELECT attachments FROM events WHERE id = ?", (event_id,)).fetchone()
            if row is None:
                return
            att = Attachments.merge_images(row["attachments"], images)
            self._db.execute("UPDATE events SET claimed_at = NULL, attachments = ? WHERE id = ?", (att, event_id))

    def fail(
        self,
        event_id: int,
        error: str,
        retryable: bool,
        *,
        request_id: str | None = None,
        images: Sequence[StoredImage] = (),
        count_attempt: bool = True,
    ) -> FailResult:
        """A delivery attempt failed: back off and retry, dead-letter, or drop if superseded.

        ``images`` already uploaded are kept on the row so a retry does not capture them again.
        ``count_attempt=False`` (rate limited past a deadline) retries without using the budget.
        """
        now = self._clock()
        error = redact(error)
        with self._db.tx():
            row = self._db.row(event_id)
            attempts = row["attempts"] + (1 if count_attempt else 0)
            if self._db.newer_exists(row["alert_key"], event_id):
                self._db.execute("DELETE FROM events WHERE id = ?", (event_id,))
                return FailResult("superseded", attempts)
            attachments = Attachments.merge_images(row["attachments"], images)
            if not retryable or attempts >= self._max_attempts:
                self.dead_letters.add(
                    row, attachments=attachments, attempts=attempts, error=error, request_id=request_id, now=now
                )
                return FailResult("dead_letter", attempts)
            delay = self._rng() * min(BACKOFF_CAP, BACKOFF_BASE * 2 ** max(0, attempts - 1))
            self._db.execute(
                "UPDATE events SET claimed_at = NULL, attempts = ?, next_attempt_at = ?,"
                " last_error = ?, request_id = ?, attachments = ? WHERE id = ?",
                (attempts, now + delay, error, request_id, attachments, event_id),
            )
            return FailResult("retry", attempts, delay)

    def next_due(self) -> float | None:
        """Wall time at which the earliest claimable row is due (None: nothing could be claimed;
        rows whose key is in flight wait for that delivery to end, not for a time)."""
        row = self._db.execute(
            "SELECT min(e.next_attempt_at) FROM events AS e WHERE e.claimed_at IS NULL"
            " AND NOT EXISTS (SELECT 1 FROM events AS c"
            "   WHERE c.alert_key = e.alert_key AND c.claimed_at IS NOT NULL)"
        ).fetchone()
        return None if row[0] is None else float(row[0])

    def last_sent(self, alert_key: str) -> SentRecord | None:
        return self._db.last_sent(alert_key)

    # ------------------------------------------------------------------ stats

    def pending_count(self) -> int:
        """Undelivered rows, in flight included."""
        return int(self._db.execute("SELECT count(*) FROM events").fetchone()[0])

    def in_flight_count(self) -> int:
        return int(self._db.execute("SELECT count(*) FROM events WHERE claimed_at IS NOT NULL").fetchone()[0])

    def oldest_pending_age(self, now: float) -> float:
        """Seconds since the oldest undelivered row was first queued (0 when empty)."""
        oldest = self._db.execute("SELECT min(queued_since) FROM events").fetchone()[0]
        return 0.0 if oldest is None else max(0.0, now - float(oldest))

    def dead_letter_count(self) -> int:
        """Rows in the dead-letter table (the pipeline's gauge)."""
        return self.dead_letters.count()
