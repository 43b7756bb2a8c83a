"""Upload each distinct picture once: sha256(bytes) → ``image_key``, remembered in SQLite.

* A hit (same bytes uploaded less than ``ttl`` ago, by this account) costs no request; the
  memory survives restarts when ``db_path`` is a file (``None``: in-memory, this process only).
* Concurrent uploads of the same bytes share one request (singleflight: one task per digest,
  owned by the uploader, that every caller, the first one included, awaits shielded). A caller
  that is cancelled (e.g. the late pictures of an event superseded by a newer one) only stops
  waiting: the others still get the key. The request itself is cancelled only when the last
  caller is gone, so a picture nobody wants any more spends no more upload quota. The request
  waits for the rate limit with the priority and deadline of the caller that started it; when
  that deadline passes first (an ``Ok``'s picture is bounded by the image budget), a caller
  with a later deadline tries again instead of losing its picture.
* ``image_cache{result}`` counts ``hit`` (from the store), ``shared`` (joined an upload in
  flight) and ``miss`` (uploaded).
* ``image_key`` is only valid in the account that uploaded it: the store remembers a
  fingerprint of the integration key and forgets everything when the key changes.
* The store is a convenience: if SQLite fails, the picture is uploaded anyway (logged), because
  the alert matters more than saving one request.

SQLite runs in a worker thread (``asyncio.to_thread``), one connection serialised by a lock:
lookups are microseconds, but a commit may fsync (WAL checkpoint) and take tens of
milliseconds on a slow volume, which must not stall the event loop that paces every alert.
At Flashduty's 50 uploads/min the thread hop (~0.1 ms) is noise.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from sidecar.config import DeliveryConfig
from sidecar.metrics import Metrics

from .client import FlashdutyClient
from .errors import FlashdutyError, FlashdutyRateLimited

__all__ = ["ImageUploader"]

log = logging.getLogger("sidecar.flashduty.uploader")

T = TypeVar("T")

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS image_keys (sha256 TEXT PRIMARY KEY, image_key TEXT NOT NULL,"
    " uploaded_at REAL NOT NULL)",
    "CREATE TABLE IF NOT EXISTS image_keys_meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
)


class _Store:
    """Synchronous SQLite access; every method is called from a worker thread, under the lock."""

    def __init__(self, path: str, ttl: float, account: str) -> None:
        self._path = path
        self.ttl = ttl  # set by a config reload
        self._account = account
        self._conn: sqlite3.Connection | None = None
        self.lock = threading.Lock()

    def _open(self) -> sqlite3.Connection:
        if self._conn is None:
            conn = sqlite3.connect(self._path, check_same_thread=False, isolation_level=None)
            try:
                if self._path != ":memory:":
                    conn.execute("PRAGMA journal_mode=WAL")
                    conn.execute("PRAGMA synchronous=NORMAL")
                conn.execute("PRAGMA busy_timeout=2000")
                for stmt in _SCHEMA:
                    conn.execute(stmt)
                row = conn.execute("SELECT value FROM image_keys_meta WHERE name='account'").fetchone()
                if row is None or row[0] != self._account:
                    conn.execute("DELETE FROM image_keys")
                    conn.execute(
                        "INSERT OR REPLACE INTO image_keys_meta (name, value) VALUES ('account', ?)",
                        (self._account,),
                    )
            except BaseException:
                conn.close()
                raise
            self._conn = conn
        return self._conn

    def get(self, digest: str, now: float) -> str | None:
        conn = self._open()
        row = conn.execute(
            "SELECT image_key FROM image_keys WHERE sha256 = ? AND uploaded_at > ?", (digest, now - self.ttl)
        ).fetchone()
        return str(row[0]) if row else None

    def put(self, digest: str, image_key: str, now: float) -> None:
        conn = self._open()
        conn.execute(
            "INSERT OR REPLACE INTO image_keys (sha256, image_key, uploaded_at) VALUES (?, ?, ?)",
            (digest, image_key, now),
        )
        conn.execute("DELETE FROM image_keys WHERE uploaded_at <= ?", (now - self.ttl,))

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


@dataclass(eq=False)
class _Flight:
    """One upload in progress, shared by every caller that wants the same bytes."""

    task: asyncio.Task[str]
    deadline: float | None  # of the caller that started it (``time.monotonic()``)
    waiters: int = 0


class ImageUploader:
    """``upload(bytes, content_type=…) → image_key`` with content dedup; see the module docstring."""

    def __init__(
        self,
        client: FlashdutyClient,
        *,
        db_path: str | None,
        ttl: float,
        metrics: Metrics,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._client = client
        self._metrics = metrics
        self._clock = clock
        self._store = _Store(db_path or ":memory:", ttl, client.account_fingerprint)
        self._inflight: dict[str, _Flight] = {}
        self._tasks: set[asyncio.Task[str]] = set()  # every upload task until it ends, joinable or not

    @property
    def ttl(self) -> float:
        """How long an uploaded picture's ``image_key`` is reused (``delivery.image_cache_ttl``)."""
        return self._store.ttl

    def reconfigure(self, delivery: DeliveryConfig) -> None:
        """A config reload: ``delivery.image_cache_ttl`` applies to lookups from now on."""
        self._store.ttl = delivery.image_cache_ttl

    def capacity(self, seconds: float) -> int:
        """About how many more uploads the quota admits within ``seconds`` (after those waiting)."""
        return self._client.limiters["upload"].capacity(seconds)

    async def upload(self, data: bytes, *, content_type: str, priority: int, timeout: float | None = None) -> str:
        """The ``image_key`` of ``data`` (a picture of ``content_type``): remembered, shared with an
        upload in flight, or uploaded.

        A shared upload runs with the ``priority`` and ``deadline`` of the caller that started it;
        when it gives up at that deadline (rate limited), a caller with a later one tries again.
        ``timeout``: seconds from now this caller may wait for the rate limit (None: no bound)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        digest = hashlib.sha256(data).hexdigest()
        while True:
            flight = self._inflight.get(digest)
            if flight is None:
                flight = self._start(digest, data, content_type, priority, deadline)
            else:
                self._metrics.image_cache.labels("shared").inc()
            try:
                return await self._join(digest, flight)
            except FlashdutyRateLimited:
                if not _later(deadline, flight.deadline) or (deadline is not None and time.monotonic() >= deadline):
                    raise
                # the quota did not come back by the deadline of the caller that started it: ours is later

    def _start(self, digest: str, data: bytes, content_type: str, priority: int, deadline: float | None) -> _Flight:
        task = asyncio.create_task(
            self._lookup_or_upload(digest, data, content_type, priority=priority, deadline=deadline),
            name=f"image upload {digest[:12]}",
        )
        flight = self._inflight[digest] = _Flight(task, deadline)
        self._tasks.add(task)
        task.add_done_callback(functools.partial(self._flight_done, digest, flight))
        return flight

    async def _join(self, digest: str, flight: _Flight) -> str:
        flight.waiters += 1
        try:
            return await asyncio.shield(flight.task)
        except asyncio.CancelledError:
            me = asyncio.current_task()
            if flight.task.cancelled() and me is not None and not me.cancelling():
                # the upload was cancelled under us (close()), we were not: an error, not a cancellation
                raise FlashdutyError("upload cancelled: uploader closed", endpoint="upload", retryable=True) from None
            raise
        finally:
            flight.waiters -= 1
            if flight.waiters == 0 and not flight.task.done():
                # every caller gave up on this picture: stop spending upload quota on it
                self._forget(digest, flight)
                flight.task.cancel()

    def _flight_done(self, digest: str, flight: _Flight, task: asyncio.Task[str]) -> None:
        self._forget(digest, flight)
        self._tasks.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved here: every waiter re-raises it itself

    def _forget(self, digest: str, flight: _Flight) -> None:
        if self._inflight.get(digest) is flight:
            del self._inflight[digest]  # the next caller starts afresh (after a failure, a cancel)

    async def close(self) -> None:
        """Cancel the uploads still in flight (their callers get a retryable error), close the store."""
        self._inflight.clear()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._db(self._store.close)

    async def _lookup_or_upload(
        self, digest: str, data: bytes, content_type: str, *, priority: int, deadline: float | None
    ) -> str:
        try:
            cached = await self._db(self._store.get, digest, self._clock())
        except sqlite3.Error as e:
            log.warning("image key store unreadable, uploading anyway: %s", e)
            cached = None
        if cached is not None:
            self._metrics.image_cache.labels("hit").inc()
            return cached
        self._metrics.image_cache.labels("miss").inc()
        key = await self._client.upload_image(data, content_type=content_type, priority=priority, deadline=deadline)
        try:
            await self._db(self._store.put, digest, key, self._clock())
        except sqlite3.Error as e:
            log.warning("image key store not writable, picture will be uploaded again next time: %s", e)
        return key

    async def _db(self, fn: Callable[..., T], *args: Any) -> T:
        def locked() -> T:
            with self._store.lock:
                return fn(*args)

        return await asyncio.to_thread(locked)


def _later(a: float | None, b: float | None) -> bool:
    """Deadline ``a`` is later than ``b`` (None: no deadline, the latest of all)."""
    if a is None:
        return b is not None
    return b is not None and a > b
