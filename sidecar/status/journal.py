"""The journal behind the status page: the last deliveries and their pictures, in ``state_dir``.

``journal.sqlite3`` holds one row per delivery (outcome, timings, what happened to each picture)
and one row per kept picture; the pictures themselves are files ``pictures/<sha256>.<ext>``,
the exact bytes that were uploaded (kept when the upload succeeds, so a late picture is there
for its follow-up), or captured and not uploaded (the same bytes are kept once). Bounds, from the ``status``
section read at every write: ``deliveries`` rows, ``pictures`` files and ``picture_bytes`` bytes,
the oldest removed first. Everything survives a restart; files that lost their row (a crash
between the two writes) are removed when the journal opens.

One writer thread owns the SQLite connection and the files: ``record`` only queues (the
delivery path never waits for a disk), reads are awaited on the same thread. A failing write is
logged and counted, never raised into a delivery.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import json
import logging
import os
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sidecar.config.status_schema import StatusConfig
from sidecar.status.record import DeliveryRecord

__all__ = ["JOURNAL_FILE", "PICTURES_DIR", "Journal"]

log = logging.getLogger("sidecar.status")

JOURNAL_FILE = "journal.sqlite3"
PICTURES_DIR = "pictures"
_EXT = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}
CONTENT_TYPES = {v: k for k, v in _EXT.items()}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS deliveries (
    id INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL, rule TEXT NOT NULL, status TEXT NOT NULL,
    alert_key TEXT NOT NULL, title TEXT NOT NULL, outcome TEXT NOT NULL, followup INTEGER NOT NULL,
    duration_ms INTEGER NOT NULL, error TEXT, pictures TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS pictures (
    file TEXT PRIMARY KEY, image_key TEXT, content_type TEXT NOT NULL, size INTEGER NOT NULL,
    at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS pictures_key ON pictures (image_key);
CREATE INDEX IF NOT EXISTS pictures_at ON pictures (at);
"""


class Journal:
    """See the module docstring. ``limits`` gives the current ``status`` section (reloads apply)."""

    def __init__(
        self, state_dir: str | Path, *, limits: Callable[[], StatusConfig], on_error: Callable[[], None] | None = None
    ) -> None:
        self._dir = Path(state_dir) / PICTURES_DIR
        self._dir.mkdir(parents=True, exist_ok=True)
        self._limits = limits
        self._on_error = on_error
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="journal")
        self._db = sqlite3.connect(str(Path(state_dir) / JOURNAL_FILE), check_same_thread=False)
        self._db.row_factory = sqlite3.Row
        self._pool.submit(self._open).result()

    def _open(self) -> None:
        with self._db:
            self._db.executescript(_SCHEMA)
        kept = {r["file"] for r in self._db.execute("SELECT file FROM pictures")}
        for path in self._dir.iterdir():
            if path.name not in kept:
                path.unlink(missing_ok=True)
        gone = [f for f in kept if not (self._dir / f).exists()]
        with self._db:
            self._db.executemany("DELETE FROM pictures WHERE file = ?", [(f,) for f in gone])

    async def close(self) -> None:
        """Finish the queued writes, then close the file."""
        await asyncio.get_running_loop().run_in_executor(None, self._pool.shutdown, True)
        self._db.close()

    # ------------------------------------------------------------------ writing

    def record(self, rec: DeliveryRecord) -> None:
        """Queue ``rec`` (and its pictures' bytes) for the writer thread; returns at once."""
        future = self._pool.submit(self._write, rec)
        future.add_done_callback(self._written)

    def keep(self, data: bytes, content_type: str, image_key: str) -> None:
        """Queue an uploaded picture (one that comes in after its push too: its follow-up finds it)."""
        future = self._pool.submit(self._keep, data, content_type, image_key, time.time())
        future.add_done_callback(self._written)

    def _keep(self, data: bytes, content_type: str, image_key: str, at: float) -> None:
        limits = self._limits()
        if limits.pictures > 0:
            self._store(data, content_type, image_key, at)
            self._prune(limits)

    def _written(self, future: concurrent.futures.Future[None]) -> None:
        error = future.exception()
        if error is not None:
            log.warning("status journal: a delivery could not be recorded: %s", error)
            if self._on_error is not None:
                self._on_error()

    def _write(self, rec: DeliveryRecord) -> None:
        limits = self._limits()
        for pic in rec.pictures:
            if pic.image_key:  # uploaded (kept by ``keep``), now or by an earlier attempt
                row = self._db.execute("SELECT file FROM pictures WHERE image_key = ?", (pic.image_key,)).fetchone()
                pic.file = row["file"] if row else None
            if pic.file is None and pic.image is not None and limits.pictures > 0:  # captured, not uploaded
                pic.file = self._store(pic.image, pic.content_type or "image/png", pic.image_key, rec.at)
            pic.image = None
        with self._db:
            self._db.execute(
                "INSERT INTO deliveries (at, rule, status, alert_key, title, outcome, followup, duration_ms, error,"
                " pictures) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (rec.at, rec.rule, rec.status, rec.alert_key, rec.title, rec.outcome, int(rec.followup),
                 rec.duration_ms, rec.error, json.dumps([p.to_json() for p in rec.pictures])),
            )  # fmt: skip
            self._db.execute(
                "DELETE FROM deliveries WHERE id <= (SELECT MAX(id) FROM deliveries) - ?", (limits.deliveries,)
            )
        self._prune(limits)

    def _store(self, data: bytes, content_type: str, image_key: str | None, at: float) -> str:
        name = f"{hashlib.sha256(data).hexdigest()}.{_EXT.get(content_type, 'bin')}"
        path = self._dir / name
        if not path.exists():
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(data)
            os.replace(tmp, path)
        with self._db:
            self._db.execute(
                "INSERT INTO pictures (file, image_key, content_type, size, at) VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT (file) DO UPDATE SET at = excluded.at, image_key = COALESCE(excluded.image_key, image_key)",
                (name, image_key, content_type, len(data), at),
            )
        return name

    def _prune(self, limits: StatusConfig) -> None:
        """Newest first, keep while within both bounds; remove the rest (rows, then files)."""
        total = self._db.execute("SELECT COUNT(*), COALESCE(SUM(size), 0) FROM pictures").fetchone()
        if total[0] <= limits.pictures and total[1] <= limits.picture_bytes:
            return
        drop = [
            row[0]
            for row in self._db.execute(
                "SELECT file FROM (SELECT file, ROW_NUMBER() OVER w AS n, SUM(size) OVER w AS bytes FROM pictures"
                " WINDOW w AS (ORDER BY at DESC, rowid DESC)) WHERE n > ? OR bytes > ?",
                (limits.pictures, limits.picture_bytes),
            )
        ]
        with self._db:
            self._db.executemany("DELETE FROM pictures WHERE file = ?", [(f,) for f in drop])
        for name in drop:
            (self._dir / name).unlink(missing_ok=True)

    # ------------------------------------------------------------------ reading

    async def recent(self, limit: int) -> list[dict[str, Any]]:
        """The last ``limit`` deliveries, newest first; a picture whose file was removed has ``file`` None."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, self._recent, limit)

    def _recent(self, limit: int) -> list[dict[str, Any]]:
        kept = {r["file"] for r in self._db.execute("SELECT file FROM pictures")}
        out = []
        for row in self._db.execute("SELECT * FROM deliveries ORDER BY id DESC LIMIT ?", (limit,)):
            d = dict(row)
            d["followup"] = bool(d["followup"])
            d["pictures"] = json.loads(d["pictures"])
            for p in d["pictures"]:
                if p.get("file") not in kept:
                    p["file"] = None
            out.append(d)
        return out

    def picture_path(self, name: str) -> Path | None:
        """The file of a kept picture by its name (``<sha256>.<ext>``), else None."""
        stem, _, ext = name.partition(".")
        if len(stem) != 64 or not all(c in "0123456789abcdef" for c in stem) or ext not in CONTENT_TYPES:
            return None
        path = self._dir / name
        return path if path.is_file() else None

    async def stats(self) -> tuple[int, int]:
        """(pictures kept, their bytes)."""

        def read() -> tuple[int, int]:
            row = self._db.execute("SELECT COUNT(*), COALESCE(SUM(size), 0) FROM pictures").fetchone()
            return int(row[0]), int(row[1])

        return await asyncio.get_running_loop().run_in_executor(self._pool, read)
