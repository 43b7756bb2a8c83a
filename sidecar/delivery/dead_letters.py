"""The dead-letter table of the outbox: events that failed permanently or ran out of attempts.

The queue (``Outbox.fail``) moves a row here with ``add``, inside its own durable transaction:
the row keeps its id, its attachments (pictures already uploaded) and its redacted last error.
The ``dead-letters`` CLI lists them (``entries``) and requeues them (``retry``, durable); the
daemon's next poll picks a requeued row up. The daemon itself only reads ``count`` (a gauge).

Requeueing keeps the outbox's ordering rules: a dead letter whose key has since moved on (a newer
event sent, queued or dead-lettered) is discarded instead, since sending it now would put an old
state over a newer one; otherwise it replaces the older unclaimed rows of its key, like a put.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Callable
from typing import Any

from sidecar.delivery.outbox_db import Attachments, OutboxDb
from sidecar.model import AlertEvent

__all__ = ["DeadLetters"]

log = logging.getLogger("sidecar.delivery.outbox")


class DeadLetters:
    """The ``dead_letters`` table of an open outbox file."""

    def __init__(self, db: OutboxDb, *, clock: Callable[[], float]) -> None:
        self._db = db
        self._clock = clock

    def add(
        self,
        row: sqlite3.Row,
        *,
        attachments: str,
        attempts: int,
        error: str,
        request_id: str | None,
        now: float,
    ) -> None:
        """Move the ``events`` row ``row`` here (inside the caller's transaction)."""
        self._db.execute(
            "INSERT OR REPLACE INTO dead_letters (id, alert_key, kind, priority, event,"
            " attachments, origin_id, created_at, attempts, failed_at, last_error, request_id)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                row["id"],
                row["alert_key"],
                row["kind"],
                row["priority"],
                row["event"],
                attachments,
                row["origin_id"],
                row["created_at"],
                attempts,
                now,
                error,
                request_id,
            ),
        )
        self._db.execute("DELETE FROM events WHERE id = ?", (row["id"],))

    def entries(self, newest: int | None = None) -> list[dict[str, Any]]:
        """Every dead letter (or the ``newest`` N), oldest first, as plain data (no secrets: errors are redacted)."""
        rows = self._db.execute("SELECT * FROM dead_letters ORDER BY id DESC LIMIT ?", (newest or -1,)).fetchall()[::-1]
        out = []
        for row in rows:
            ev = json.loads(row["event"])
            out.append(
                {
                    "id": row["id"],
                    "alert_key": row["alert_key"],
                    "kind": row["kind"],
                    "rule": ev.get("rule", ""),
                    "status": ev.get("status", ""),
                    "title": ev.get("title", ""),
                    "created_at": row["created_at"],
                    "failed_at": row["failed_at"],
                    "attempts": row["attempts"],
                    "last_error": row["last_error"],
                    "request_id": row["request_id"],
                }
            )
        return out

    def retry(self, dead_letter_id: int | None = None) -> int:
        """Move one dead letter (or all) back to the queue; how many were requeued.

        A superseded dead letter (see the module docstring) is discarded instead.
        """
        now = self._clock()
        requeued = 0
        with self._db.tx():
            q = "SELECT * FROM dead_letters" + (" WHERE id = ?" if dead_letter_id is not None else "")
            args: tuple[Any, ...] = () if dead_letter_id is None else (dead_letter_id,)
            for row in self._db.execute(q + " ORDER BY id", args).fetchall():
                key, dl_id = row["alert_key"], row["id"]
                self._db.execute("DELETE FROM dead_letters WHERE id = ?", (dl_id,))
                if self._superseded(key, dl_id):
                    log.warning("outbox: dead letter %d (%s) is superseded by a newer event; discarded", dl_id, key)
                    continue
                oldest = self._db.coalesce(key, below_id=dl_id)
                self._db.insert(
                    event=AlertEvent.from_json(row["event"]),
                    kind=row["kind"],
                    priority=row["priority"],
                    attachments=Attachments.loads(row["attachments"]),
                    origin_id=row["origin_id"],
                    now=row["created_at"],
                    queued_since=now if oldest is None else min(oldest, now),
                    event_id=dl_id,
                )
                requeued += 1
        return requeued

    def _superseded(self, alert_key: str, dl_id: int) -> bool:
        if self._db.newer_exists(alert_key, dl_id):
            return True
        q = "SELECT 1 FROM dead_letters WHERE alert_key = ? AND id > ? LIMIT 1"
        if self._db.execute(q, (alert_key, dl_id)).fetchone() is not None:
            return True
        sent = self._db.last_sent(alert_key)
        return sent is not None and sent.event_id > dl_id

    def count(self) -> int:
        return int(self._db.execute("SELECT count(*) FROM dead_letters").fetchone()[0])
