"""The durable outbox: every alert event is on disk before any network call is made.

One SQLite file (``outbox.sqlite3`` under ``state_dir``), WAL journal, ``synchronous=FULL``:
``put`` returns only once the event survives a power cut (so do ``put_followup``, ``fail`` and
``retry_dead_letter``). Claims, acks and releases commit without an fsync: losing one in a power
cut only means an event is sent again. Everything runs on the caller's thread in small
transactions (one ``BEGIN IMMEDIATE`` each, about one fsync per put: ~2 ms on a local disk).
Besides the daemon, only the ``dead-letters`` CLI writes (SQLite's lock and a 30 s busy timeout
serialise them); a requeued dead letter is picked up by the daemon's next poll.

Tables::

    events        one row per undelivered event (kind 'event' or 'followup')
      id              INTEGER PRIMARY KEY AUTOINCREMENT  -- never reused: ids order events per key
      alert_key       TEXT     the Flashduty alert_key
      kind            TEXT     'event' | 'followup' (late pictures for an event already sent)
      priority        INTEGER  PRIORITY[status]; follow-ups add FOLLOWUP_PRIORITY_OFFSET
      event           TEXT     AlertEvent.to_json()
      attachments     TEXT     JSON {"images": [StoredImage...], "notes": [str...]}: pictures
                               already uploaded (a retry or a follow-up needs no re-capture)
      origin_id       INTEGER  follow-up: id of the event whose pictures it completes
      created_at      REAL     wall time of the put
      queued_since    REAL     oldest put coalesced into this row (claim order, age)
      attempts        INTEGER  failed attempts so far (429 waits not counted)
      next_attempt_at REAL     wall time before which it is not claimed (backoff)
      claimed_at      REAL     lease: set while a worker delivers it, cleared by recover()
      last_error      TEXT     redacted
      request_id      TEXT     Flashduty request id of the last failure
    dead_letters  events that failed permanently or ran out of attempts: id (the event's),
                  alert_key, kind, priority, event, attachments, origin_id, created_at,
                  attempts, failed_at, last_error (NOT NULL), request_id
    sent          per alert_key: the last *event* pushed (event_id, status, sent_at, request_id)

Ordering rules, all enforced here:

* a newer event for an alert_key replaces any older row of that key that is not claimed
  (coalescing: only the newest state is pending; an older firing never goes out after its Ok);
* at most one claimed row per alert_key; a row whose key is in flight waits for it;
* claim order: priority (Ok, Critical, Warning, Info, then follow-ups), then ``queued_since``;
* a row that fails while a newer row of its key exists is dropped, never retried after it;
* a follow-up is only accepted, and only delivered, while the event it completes is still the
  last one sent for its key (``sent.event_id == origin_id``) and nothing newer is queued.

At-least-once: a claim is a lease held by this process; ``recover()`` (at startup) releases all
of them, so an event whose push may or may not have happened is sent again. That is safe:
Flashduty merges events with the same alert_key.
"""

from __future__ import annotations

import json
import logging
import random
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from sidecar.config import DeliveryConfig
from sidecar.model import AlertEvent
from sidecar.redact import redact as _redact_keys

__all__ = [
    "FOLLOWUP_PRIORITY_OFFSET",
    "OUTBOX_FILE",
    "FailResult",
    "Outbox",
    "OutboxItem",
    "SentRecord",
    "StoredImage",
    "redact",
]

log = logging.getLogger("sidecar.delivery.outbox")

OUTBOX_FILE = "outbox.sqlite3"
FOLLOWUP_PRIORITY_OFFSET = 10  # follow-ups (pictures only) go after every fresh event
BACKOFF_BASE = 1.0
BACKOFF_CAP = 60.0
SENT_RETENTION = 30 * 86400.0  # forget the last-sent record of keys quiet for this long
_SCHEMA_VERSION = 1
_MAX_ERROR_CHARS = 2000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    alert_key       TEXT    NOT NULL,
    kind            TEXT    NOT NULL CHECK (kind IN ('event', 'followup')),
    priority        INTEGER NOT NULL,
    event           TEXT    NOT NULL,
    attachments     TEXT    NOT NULL DEFAULT '{}',
    origin_id       INTEGER,
    created_at      REAL    NOT NULL,
    queued_since    REAL    NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL    NOT NULL DEFAULT 0,
    claimed_at      REAL,
    last_error      TEXT,
    request_id      TEXT
);
CREATE INDEX IF NOT EXISTS events_by_key ON events (alert_key, id);
CREATE INDEX IF NOT EXISTS events_claimable ON events (priority, queued_since, id)
    WHERE claimed_at IS NULL;
CREATE TABLE IF NOT EXISTS dead_letters (
    id           INTEGER PRIMARY KEY,
    alert_key    TEXT    NOT NULL,
    kind         TEXT    NOT NULL,
    priority     INTEGER NOT NULL,
    event        TEXT    NOT NULL,
    attachments  TEXT    NOT NULL,
    origin_id    INTEGER,
    created_at   REAL    NOT NULL,
    attempts     INTEGER NOT NULL,
    failed_at    REAL    NOT NULL,
    last_error   TEXT    NOT NULL,
    request_id   TEXT
);
CREATE TABLE IF NOT EXISTS sent (
    alert_key  TEXT    PRIMARY KEY,
    event_id   INTEGER NOT NULL,
    status     TEXT    NOT NULL,
    sent_at    REAL    NOT NULL,
    request_id TEXT
);
"""


def redact(text: str) -> str:
    """Error text fit for a log line or the dead-letter table: no key values, bounded length."""
    text = _redact_keys(text)
    if len(text) > _MAX_ERROR_CHARS:
        text = text[: _MAX_ERROR_CHARS - 1] + "…"
    return text


@dataclass(frozen=True)
class StoredImage:
    """A picture already uploaded for panel number ``panel`` of the event."""

    panel: int
    src: str  # image_key
    alt: str
    href: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"panel": self.panel, "src": self.src, "alt": self.alt, "href": self.href}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StoredImage:
        return cls(panel=int(d["panel"]), src=str(d["src"]), alt=str(d["alt"]), href=d.get("href"))


@dataclass(frozen=True)
class OutboxItem:
    """A claimed row: deliver it, then ``ack`` / ``fail`` / ``release`` it by ``id``."""

    id: int
    event: AlertEvent
    kind: Literal["event", "followup"]
    attempts: int
    created_at: float  # wall time of the put
    images: tuple[StoredImage, ...] = ()
    notes: tuple[str, ...] = ()
    origin_id: int | None = None

    @property
    def is_followup(self) -> bool:
        return self.kind == "followup"


@dataclass(frozen=True)
class SentRecord:
    alert_key: str
    event_id: int
    status: str
    sent_at: float
    request_id: str | None


@dataclass(frozen=True)
class FailResult:
    """What ``fail`` did: ``retry`` (after ``delay`` s), ``dead_letter`` or ``superseded``."""

    outcome: Literal["retry", "dead_letter", "superseded"]
    attempts: int
    delay: float = 0.0


@dataclass
class _Attachments:
    images: list[StoredImage] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def dumps(self) -> str:
        return json.dumps({"images": [i.to_dict() for i in self.images], "notes": self.notes}, separators=(",", ":"))

    @classmethod
    def loads(cls, s: str) -> _Attachments:
        d = json.loads(s or "{}")
        return cls([StoredImage.from_dict(i) for i in d.get("images", ())], list(d.get("notes", ())))


class Outbox:
    """Durable, coalescing, per-key ordered queue of alert events (see the module docstring)."""

    def __init__(
        self,
        path: str | Path,
        *,
        max_attempts: int = 10,
        clock: Callable[[], float] = time.time,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.path = Path(path)
        self.max_attempts = max_attempts
        self._clock = clock
        self._rng = rng
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, isolation_level=None, timeout=30.0)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._sync = "FULL"
        self._db.execute("PRAGMA foreign_keys=ON")
        with self._tx():
            self._create_schema()

    @classmethod

    def reconfigure(self, delivery: DeliveryConfig) -> None:
        """A config reload: ``delivery.max_attempts`` applies to failures from now on."""
        self.max_attempts = delivery.max_attempts
    def in_dir(cls, state_dir: str | Path, **kwargs: Any) -> Outbox:
        """The daemon's outbox: ``<state_dir>/outbox.sqlite3``."""
        return cls(Path(state_dir) / OUTBOX_FILE, **kwargs)

    def close(self) -> None:
        self._db.close()

    # ------------------------------------------------------------------ internals

    def _create_schema(self) -> None:
        for stmt in _SCHEMA.split(";"):
            if stmt.strip():
                self._db.execute(stmt)
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version == 0:
            self._db.execute(f"PRAGMA user_version={_SCHEMA_VERSION}")
        elif version != _SCHEMA_VERSION:
            raise RuntimeError(f"{self.path}: outbox schema version {version}, expected {_SCHEMA_VERSION}")

    @contextmanager
    def _tx(self, *, durable: bool = True) -> Iterator[sqlite3.Connection]:
        """One write transaction. ``durable=False`` skips the fsync at commit: for writes whose
        loss in a power cut is harmless (a claim, an ack: the event is just sent again); the
        next durable commit syncs them too, the WAL being sequential."""
        mode = "FULL" if durable else "NORMAL"
        if self._sync != mode:
            self._db.execute(f"PRAGMA synchronous={mode}")
            self._sync = mode
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def _row(self, event_id: int) -> sqlite3.Row:
        row = self._db.execute("SELECT * FROM events WHERE id = ?", (event_id,)).fetchone()
        if row is None:
            raise KeyError(f"outbox has no event {event_id}")
        return row

    def _newer_exists(self, alert_key: str, event_id: int, *, besides: int | None = None) -> bool:
        """A row of ``alert_key`` newer than ``event_id`` is queued (``besides`` not counted)."""
        q = "SELECT 1 FROM events WHERE alert_key = ? AND id > ? AND id IS NOT ? LIMIT 1"
        return self._db.execute(q, (alert_key, event_id, besides)).fetchone() is not None

    def _insert(
        self,
        *,
        event: AlertEvent,
        kind: str,
        priority: int,
        attachments: _Attachments,
        origin_id: int | None,
        now: float,
        queued_since: float,
        event_id: int | None = None,
    ) -> int:
        cur = self._db.execute(
            "INSERT INTO events (id, alert_key, kind, priority, event, attachments, origin_id,"
            " created_at, queued_since) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                event_id,
                event.alert_key,
                kind,
                priority,
                event.to_json(),
                attachments.dumps(),
                origin_id,
                now,
                queued_since,
            ),
        )
        assert cur.lastrowid is not None
        return cur.lastrowid

    def _coalesce(self, alert_key: str, below_id: int | None = None) -> float | None:
        """Delete the unclaimed rows of a key (older than ``below_id``); their oldest queue time."""
        where = "alert_key = ? AND claimed_at IS NULL" + (" AND id < ?" if below_id is not None else "")
        args: tuple[Any, ...] = (alert_key,) if below_id is None else (alert_key, below_id)
        oldest = self._db.execute(f"SELECT min(queued_since) FROM events WHERE {where}", args).fetchone()[0]
        self._db.execute(f"DELETE FROM events WHERE {where}", args)
        return oldest

    # ------------------------------------------------------------------ producers

    def put(self, event: AlertEvent) -> int:
        """Store ``event`` durably (replacing any unclaimed older row of its key); its id."""
        now = self._clock()
        with self._tx():
            oldest = self._coalesce(event.alert_key)
            return self._insert(
                event=event,
                kind="event",
                priority=event.priority,
                attachments=_Attachments(),
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
        with self._tx():
            if not self._followup_current(event.alert_key, origin_id):
                return None
            return self._insert(
                event=event,
                kind="followup",
                priority=FOLLOWUP_PRIORITY_OFFSET + event.priority,
                attachments=_Attachments(list(images), list(notes)),
                origin_id=origin_id,
                now=now,
                queued_since=now,
            )

    def _followup_current(self, alert_key: str, origin_id: int, besides: int | None = None) -> bool:
        sent = self.last_sent(alert_key)
        if sent is None or sent.event_id != origin_id:
            return False
        return not self._newer_exists(alert_key, origin_id, besides=besides)

    # ------------------------------------------------------------------ workers

    def recover(self) -> int:
        """Release every claim left by a previous run (at startup); how many were released."""
        now = self._clock()
        with self._tx(durable=False):
            n = self._db.execute("UPDATE events SET claimed_at = NULL WHERE claimed_at IS NOT NULL").rowcount
            self._db.execute("DELETE FROM sent WHERE sent_at < ?", (now - SENT_RETENTION,))
        if n:
            log.info("outbox: released %d claim(s) left by the previous run; they will be sent again", n)
        return n

    def claim(self) -> OutboxItem | None:
        """The most urgent due row whose alert_key is not in flight, now leased to the caller."""
        now = self._clock()
        with self._tx(durable=False):
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
        att = _Attachments.loads(row["attachments"])
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
        with self._tx(durable=False):
            row = self._row(event_id)
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
        with self._tx(durable=False):
            self._db.execute("DELETE FROM events WHERE id = ?", (event_id,))

    def release(self, event_id: int, *, images: Sequence[StoredImage] = ()) -> None:
        """Give a claim back untouched (shutdown, cancellation): no attempt is counted."""
        with self._tx(durable=False):
            row = self._db.execute("SELECT attachments FROM events WHERE id = ?", (event_id,)).fetchone()
            if row is None:
                return
            att = self._merge_images(row["attachments"], images)
            self._db.execute("UPDATE events SET claimed_at = NULL, attachments = ? WHERE id = ?", (att, event_id))

    @staticmethod
    def _merge_images(raw: str, images: Sequence[StoredImage]) -> str:
        att = _Attachments.loads(raw)
        have = {i.panel for i in att.images}
        att.images.extend(i for i in images if i.panel not in have)
        att.images.sort(key=lambda i: i.panel)
        return att.dumps()

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
        with self._tx():
            row = self._row(event_id)
            attempts = row["attempts"] + (1 if count_attempt else 0)
            if self._newer_exists(row["alert_key"], event_id):
                self._db.execute("DELETE FROM events WHERE id = ?", (event_id,))
                return FailResult("superseded", attempts)
            attachments = self._merge_images(row["attachments"], images)
            if not retryable or attempts >= self.max_attempts:
                self._db.execute(
                    "INSERT OR REPLACE INTO dead_letters (id, alert_key, kind, priority, event,"
                    " attachments, origin_id, created_at, attempts, failed_at, last_error, request_id)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        event_id,
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
                self._db.execute("DELETE FROM events WHERE id = ?", (event_id,))
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
        row = self._db.execute("SELECT * FROM sent WHERE alert_key = ?", (alert_key,)).fetchone()
        if row is None:
            return None
        return SentRecord(row["alert_key"], row["event_id"], row["status"], row["sent_at"], row["request_id"])

    # ------------------------------------------------------------------ dead letters (CLI)

    def list_dead_letters(self) -> list[dict[str, Any]]:
        """Every dead letter, oldest first, as plain data (no secrets: errors are redacted)."""
        rows = self._db.execute("SELECT * FROM dead_letters ORDER BY id").fetchall()
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

    def retry_dead_letter(self, dead_letter_id: int | None = None) -> int:
        """Move one dead letter (or all) back to the queue; how many were requeued.

        A dead letter whose key has since moved on (a newer event sent, queued or dead-lettered)
        is discarded instead: sending it now would put an old state over a newer one.
        """
        now = self._clock()
        requeued = 0
        with self._tx():
            q = "SELECT * FROM dead_letters" + (" WHERE id = ?" if dead_letter_id is not None else "")
            args: tuple[Any, ...] = () if dead_letter_id is None else (dead_letter_id,)
            for row in self._db.execute(q + " ORDER BY id", args).fetchall():
                key, dl_id = row["alert_key"], row["id"]
                self._db.execute("DELETE FROM dead_letters WHERE id = ?", (dl_id,))
                if self._dead_letter_superseded(key, dl_id):
                    log.warning("outbox: dead letter %d (%s) is superseded by a newer event; discarded", dl_id, key)
                    continue
                oldest = self._coalesce(key, below_id=dl_id)
                self._insert(
                    event=AlertEvent.from_json(row["event"]),
                    kind=row["kind"],
                    priority=row["priority"],
                    attachments=_Attachments.loads(row["attachments"]),
                    origin_id=row["origin_id"],
                    now=row["created_at"],
                    queued_since=now if oldest is None else min(oldest, now),
                    event_id=dl_id,
                )
                requeued += 1
        return requeued

    def _dead_letter_superseded(self, alert_key: str, dl_id: int) -> bool:
        if self._newer_exists(alert_key, dl_id):
            return True
        q = "SELECT 1 FROM dead_letters WHERE alert_key = ? AND id > ? LIMIT 1"
        if self._db.execute(q, (alert_key, dl_id)).fetchone() is not None:
            return True
        sent = self.last_sent(alert_key)
        return sent is not None and sent.event_id > dl_id

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
        return int(self._db.execute("SELECT count(*) FROM dead_letters").fetchone()[0])
