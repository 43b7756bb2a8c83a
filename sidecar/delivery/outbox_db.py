"""The outbox's SQLite file: schema, connection, transactions, and the row operations shared by
the queue (``outbox.py``) and the dead-letter table (``dead_letters.py``), and the records they
hand out (``OutboxItem``, ``FailResult``, ``StoredImage``, ``SentRecord``).

One file (``outbox.sqlite3`` under ``state_dir``), WAL journal, ``synchronous=FULL``: a durable
transaction returns only once it survives a power cut (the queue's ``put``, ``put_followup`` and
``fail``, and the dead letters' ``retry``). Claims, acks and releases commit without an fsync
(``tx(durable=False)``): losing one in a power cut only means an event is sent again. Everything
runs on the caller's thread in small transactions (one ``BEGIN IMMEDIATE`` each, about one fsync
per put: ~2 ms on a local disk). Besides the daemon, only the ``dead-letters`` CLI writes
(SQLite's lock and a 30 s busy timeout serialise them).

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

Schema version: ``PRAGMA user_version`` (1); a file of another version is refused at open.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from sidecar.model import AlertEvent
from sidecar.redact import redact as _redact_keys

__all__ = ["OUTBOX_FILE", "Attachments", "FailResult", "OutboxDb", "OutboxItem", "SentRecord", "StoredImage", "redact"]

OUTBOX_FILE = "outbox.sqlite3"
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


@dataclass
class Attachments:
    """The ``attachments`` column: pictures already uploaded and notes about missing ones."""

    images: list[StoredImage] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def dumps(self) -> str:
        return json.dumps({"images": [i.to_dict() for i in self.images], "notes": self.notes}, separators=(",", ":"))

    @classmethod
    def loads(cls, s: str) -> Attachments:
        d = json.loads(s or "{}")
        return cls([StoredImage.from_dict(i) for i in d.get("images", ())], list(d.get("notes", ())))

    @classmethod
    def merge_images(cls, raw: str, images: Sequence[StoredImage]) -> str:
        """``raw`` with ``images`` added (a panel already there is kept), in panel order."""
        att = cls.loads(raw)
        have = {i.panel for i in att.images}
        att.images.extend(i for i in images if i.panel not in have)
        att.images.sort(key=lambda i: i.panel)
        return att.dumps()


@dataclass(frozen=True)
class SentRecord:
    alert_key: str
    event_id: int
    status: str
    sent_at: float
    request_id: str | None


@dataclass(frozen=True)
class OutboxItem:
    """A claimed row: deliver it, then ``Outbox.ack`` / ``fail`` / ``release`` it by ``id``."""

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
class FailResult:
    """What ``Outbox.fail`` did: ``retry`` (after ``delay`` s), ``dead_letter`` or ``superseded``."""

    outcome: Literal["retry", "dead_letter", "superseded"]
    attempts: int
    delay: float = 0.0


class OutboxDb:
    """The open outbox file: one connection (the caller's thread), its transactions and the row
    operations several tables' logic needs. Queries go through ``execute``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(path, isolation_level=None, timeout=30.0)
        self._conn.row_factory = sqlite3.Row
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")
        self._sync = "FULL"
        self._conn.execute("PRAGMA foreign_keys=ON")
        with self.tx():
            self._create_schema()

    def close(self) -> None:
        self._conn.close()

    def execute(self, sql: str, args: Sequence[Any] = ()) -> sqlite3.Cursor:
        return self._conn.execute(sql, args)

    def _create_schema(self) -> None:
        for stmt in _SCHEMA.split(";"):
            if stmt.strip():
                self._conn.execute(stmt)
        version = self._conn.execute("PRAGMA user_version").fetchone()[0]
        if version == 0:
            self._conn.execute(f"PRAGMA user_version={_SCHEMA_VERSION}")
        elif version != _SCHEMA_VERSION:
            raise RuntimeError(f"{self.path}: outbox schema version {version}, expected {_SCHEMA_VERSION}")

    @contextmanager
    def tx(self, *, durable: bool = True) -> Iterator[None]:
        """One write transaction. ``durable=False`` skips the fsync at commit: for writes whose
        loss in a power cut is harmless (a claim, an ack: the event is just sent again); the
        next durable commit syncs them too, the WAL being sequential."""
        mode = "FULL" if durable else "NORMAL"
        if self._sync != mode:
            self._conn.execute(f"PRAGMA synchronous={mode}")
            self._sync = mode
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    # ------------------------------------------------------------------ events rows

    def row(self, event_id: int) -> sqlite3.Row:
        row = self._conn.execute("SELECT * FROM events WHERE id = ?", (event_id,)).fetchone()
        if row is None:
            raise KeyError(f"outbox has no event {event_id}")
        return row

    def newer_exists(self, alert_key: str, event_id: int, *, besides: int | None = None) -> bool:
        """A row of ``alert_key`` newer than ``event_id`` is queued (``besides`` not counted)."""
        q = "SELECT 1 FROM events WHERE alert_key = ? AND id > ? AND id IS NOT ? LIMIT 1"
        return self._conn.execute(q, (alert_key, event_id, besides)).fetchone() is not None

    def insert(
        self,
        *,
        event: AlertEvent,
        kind: str,
        priority: int,
        attachments: Attachments,
        origin_id: int | None,
        now: float,
        queued_since: float,
        event_id: int | None = None,
    ) -> int:
        cur = self._conn.execute(
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

    def coalesce(self, alert_key: str, below_id: int | None = None) -> float | None:
        """Delete the unclaimed rows of a key (older than ``below_id``); their oldest queue time."""
        where = "alert_key = ? AND claimed_at IS NULL" + (" AND id < ?" if below_id is not None else "")
        args: tuple[Any, ...] = (alert_key,) if below_id is None else (alert_key, below_id)
        oldest = self._conn.execute(f"SELECT min(queued_since) FROM events WHERE {where}", args).fetchone()[0]
        self._conn.execute(f"DELETE FROM events WHERE {where}", args)
        return oldest

    # ------------------------------------------------------------------ sent

    def last_sent(self, alert_key: str) -> SentRecord | None:
        row = self._conn.execute("SELECT * FROM sent WHERE alert_key = ?", (alert_key,)).fetchone()
        if row is None:
            return None
        return SentRecord(row["alert_key"], row["event_id"], row["status"], row["sent_at"], row["request_id"])
