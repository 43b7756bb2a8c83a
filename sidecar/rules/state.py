"""Rule state that must survive a restart, in SQLite (``state_dir/rules.sqlite3``).

* ``instances``: every pending, firing or recently resolved instance per rule (labels, state,
  active_at, fired_at, last_sent_at, resolved_at...), so ``for`` survives a restart and a firing
  alert still gets its ``Ok``;
* ``heartbeats``: ``last_eval_at`` per rule, the last successful evaluation, to measure downtime;
* ``webhook_alerts``: the last state seen per Alertmanager / Grafana ``fingerprint``;
* ``api_alerts``: the alerts received on the Alertmanager API (``POST /api/v2/alerts``), by the hash
  of their labels: labels, annotations, ``startsAt``/``endsAt`` and what was last sent, so an alert
  whose ``endsAt`` passes while the sidecar is down still gets its ``Ok`` after the restart.

Synchronous ``sqlite3`` on the event loop thread: every statement touches a handful of rows of
a local file. The durable record of what must be delivered is the outbox, not this file; losing
the last write costs at most a duplicate or a restarted ``for`` timer. Writes of a rule whose
instances did not change (values aside) only touch its heartbeat.
"""

from __future__ import annotations

import json
import math
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, cast

from sidecar.rules.engine import Instance, InstanceState

__all__ = ["STATE_FILE", "ApiAlertRow", "RuleState", "WebhookAlert"]

STATE_FILE = "rules.sqlite3"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS instances (
    rule TEXT NOT NULL,
    key TEXT NOT NULL,
    labels TEXT NOT NULL,
    state TEXT NOT NULL,
    active_at REAL NOT NULL,
    value REAL,
    annotations TEXT NOT NULL DEFAULT '{}',
    fired_at REAL,
    resolved_at REAL,
    last_sent_at REAL,
    keep_firing_since REAL,
    PRIMARY KEY (rule, key)
);
CREATE TABLE IF NOT EXISTS heartbeats (
    rule TEXT PRIMARY KEY,
    last_eval_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS webhook_alerts (
    fingerprint TEXT PRIMARY KEY,
    alert_key TEXT NOT NULL,
    status TEXT NOT NULL,
    starts_at TEXT NOT NULL,
    last_sent_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS api_alerts (
    fingerprint TEXT PRIMARY KEY,
    doc TEXT NOT NULL,
    status TEXT NOT NULL,
    ends_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS api_alerts_due ON api_alerts (status, ends_at);
"""

_Row = tuple[object, ...]


@dataclass
class WebhookAlert:
    """What we last forwarded for one webhook alert (by its sender's ``fingerprint``)."""

    fingerprint: str
    alert_key: str
    status: Literal["firing", "resolved"]
    starts_at: str
    last_sent_at: float
    updated_at: float


@dataclass
class ApiAlertRow:
    """One alert of the Alertmanager API as stored: ``doc`` is the receiver's own record (JSON)."""

    fingerprint: str
    doc: dict[str, object]
    status: Literal["firing", "resolved"]
    ends_at: float
    updated_at: float


class RuleState:
    """The SQLite file; open with ``RuleState.in_dir(cfg.state_dir)``, ``close()`` at shutdown."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._db = sqlite3.connect(self.path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.executescript(_SCHEMA)
        self._saved: dict[str, list[_Row]] = {}  # rule → rows last written (values excluded)

    @classmethod
    def in_dir(cls, state_dir: str | Path) -> RuleState:
        d = Path(state_dir)
        d.mkdir(parents=True, exist_ok=True)
        return cls(d / STATE_FILE)

    def close(self) -> None:
        self._db.close()

    # ------------------------------------------------------------------ rule instances

    def load_rule(self, rule: str) -> tuple[list[Instance], float | None]:
        """The stored instances of ``rule`` and its last successful evaluation time."""
        rows = self._db.execute(
            "SELECT key, labels, state, active_at, value, annotations, fired_at, resolved_at,"
            " last_sent_at, keep_firing_since FROM instances WHERE rule = ? ORDER BY key",
            (rule,),
        ).fetchall()
        instances = [
            Instance(
                key=r[0],
                labels=json.loads(r[1]),
                state=cast(InstanceState, r[2]),
                active_at=r[3],
                value=math.nan if r[4] is None else r[4],
                annotations=json.loads(r[5]),
                fired_at=r[6],
                resolved_at=r[7],
                last_sent_at=r[8],
                keep_firing_since=r[9],
            )
            for r in rows
        ]
        hb = self._db.execute("SELECT last_eval_at FROM heartbeats WHERE rule = ?", (rule,)).fetchone()
        self._saved[rule] = [_identity(i) for i in instances]
        return instances, (hb[0] if hb else None)

    def save_rule(self, rule: str, instances: Iterable[Instance], last_eval_at: float | None) -> None:
        """Replace the stored instances of ``rule`` (skipped when only values changed)."""
        current = sorted(instances, key=lambda i: i.key)
        identity = [_identity(i) for i in current]
        with self._tx():
            if identity != self._saved.get(rule):
                self._db.execute("DELETE FROM instances WHERE rule = ?", (rule,))
                self._db.executemany(
                    "INSERT INTO instances (rule, key, labels, state, active_at, value, annotations,"
                    " fired_at, resolved_at, last_sent_at, keep_firing_since)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [
                        (
                            rule,
                            i.key,
                            json.dumps(i.labels, sort_keys=True),
                            i.state,
                            i.active_at,
                            None if math.isnan(i.value) else i.value,
                            json.dumps(i.annotations, sort_keys=True),
                            i.fired_at,
                            i.resolved_at,
                            i.last_sent_at,
                            i.keep_firing_since,
                        )
                        for i in current
                    ],
                )
            if last_eval_at is not None:
                self._db.execute(
                    "INSERT INTO heartbeats (rule, last_eval_at) VALUES (?, ?)"
                    " ON CONFLICT(rule) DO UPDATE SET last_eval_at = excluded.last_eval_at",
                    (rule, last_eval_at),
                )
        self._saved[rule] = identity

    def rules(self) -> list[str]:
        rows = self._db.execute("SELECT rule FROM instances UNION SELECT rule FROM heartbeats ORDER BY 1").fetchall()
        return [r[0] for r in rows]

    def drop_rule(self, rule: str) -> None:
        with self._tx():
            self._db.execute("DELETE FROM instances WHERE rule = ?", (rule,))
            self._db.execute("DELETE FROM heartbeats WHERE rule = ?", (rule,))
        self._saved.pop(rule, None)

    def drop_rules_except(self, keep: Iterable[str]) -> list[str]:
        """Forget rules that were renamed or removed; returns their names."""
        wanted = set(keep)
        gone = [r for r in self.rules() if r not in wanted]
        for r in gone:
            self.drop_rule(r)
        return gone

    # ------------------------------------------------------------------ webhook fingerprints

    def webhook_get(self, fingerprint: str) -> WebhookAlert | None:
        r = self._db.execute(
            "SELECT fingerprint, alert_key, status, starts_at, last_sent_at, updated_at"
            " FROM webhook_alerts WHERE fingerprint = ?",
            (fingerprint,),
        ).fetchone()
        if r is None:
            return None
        return WebhookAlert(r[0], r[1], r[2], r[3], r[4], r[5])

    def webhook_put(self, alert: WebhookAlert) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO webhook_alerts"
            " (fingerprint, alert_key, status, starts_at, last_sent_at, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (
                alert.fingerprint,
                alert.alert_key,
                alert.status,
                alert.starts_at,
                alert.last_sent_at,
                alert.updated_at,
            ),
        )

    def webhook_prune(self, now: float, *, resolved_ttl: float = 86400.0, stale_ttl: float = 30 * 86400.0) -> int:
        """Forget resolved alerts after a day and anything not heard of for a month."""
        cur = self._db.execute(
            "DELETE FROM webhook_alerts WHERE (status = 'resolved' AND updated_at < ?) OR updated_at < ?",
            (now - resolved_ttl, now - stale_ttl),
        )
        return cur.rowcount

    # ------------------------------------------------------------------ Alertmanager API alerts

    def api_alert_get(self, fingerprint: str) -> ApiAlertRow | None:
        r = self._db.execute(
            "SELECT fingerprint, doc, status, ends_at, updated_at FROM api_alerts WHERE fingerprint = ?",
            (fingerprint,),
        ).fetchone()
        return None if r is None else ApiAlertRow(r[0], json.loads(r[1]), r[2], r[3], r[4])

    def api_alert_put(self, row: ApiAlertRow) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO api_alerts (fingerprint, doc, status, ends_at, updated_at) VALUES (?, ?, ?, ?, ?)",
            (row.fingerprint, json.dumps(row.doc, sort_keys=True), row.status, row.ends_at, row.updated_at),
        )

    def api_alerts_ended(self, now: float) -> list[ApiAlertRow]:
        """Firing alerts whose ``endsAt`` is not after ``now``, earliest first."""
        rows = self._db.execute(
            "SELECT fingerprint, doc, status, ends_at, updated_at FROM api_alerts"
            " WHERE status = 'firing' AND ends_at <= ? ORDER BY ends_at",
            (now,),
        ).fetchall()
        return [ApiAlertRow(r[0], json.loads(r[1]), r[2], r[3], r[4]) for r in rows]

    def api_alerts_prune(self, now: float, *, resolved_ttl: float = 86400.0) -> int:
        """Forget resolved alerts a day after they were last heard of."""
        cur = self._db.execute(
            "DELETE FROM api_alerts WHERE status = 'resolved' AND updated_at < ?", (now - resolved_ttl,)
        )
        return cur.rowcount

    # ------------------------------------------------------------------ helpers

    def _tx(self) -> _Transaction:
        return _Transaction(self._db)


class _Transaction:
    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self._db.execute("COMMIT" if exc_type is None else "ROLLBACK")


def _identity(i: Instance) -> _Row:
    return (
        i.key,
        i.state,
        i.active_at,
        i.fired_at,
        i.resolved_at,
        i.last_sent_at,
        i.keep_firing_since,
        tuple(sorted(i.labels.items())),
        tuple(sorted(i.annotations.items())),
    )
