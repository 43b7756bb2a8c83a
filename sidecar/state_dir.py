"""The state directory before anything opens it: writable, not full, its SQLite files intact.

Each problem is one ``StartupError`` line (exit 1), because a sidecar that starts on a state it
cannot keep would take alerts in and lose them:

* not a directory, or not writable → ``state_dir /x is not writable: Permission denied``;
* full: a 64 KiB probe cannot be written and synced, or less than ``MIN_FREE`` is free;
* ``rules.sqlite3`` or ``outbox.sqlite3`` is not a database, or fails SQLite's ``quick_check``:
  named, with the recovery (move the file aside; docs/troubleshooting.md "A state file is
  corrupt"). ``images.sqlite3`` is only a cache of uploaded keys: the uploader works around it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sqlite3
import tempfile
from pathlib import Path

__all__ = ["CHECKED_FILES", "MIN_FREE", "StateDirError", "check_state_dir"]

MIN_FREE = 1024 * 1024
CHECKED_FILES = ("rules.sqlite3", "outbox.sqlite3")
_PROBE = 64 * 1024


class StateDirError(Exception):
    """One line saying what is wrong with the state directory."""


def check_state_dir(path: str) -> None:
    """Raise ``StateDirError`` unless ``path`` can keep the sidecar's state."""
    d = Path(path)
    try:
        d.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test-", dir=d)
    except OSError as e:
        raise StateDirError(f"state_dir {d} is not writable: {e.strerror or e}") from None
    try:
        os.write(fd, b"\0" * _PROBE)
        os.fsync(fd)
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise StateDirError(f"state_dir {d} is full: {e.strerror}") from None
        raise StateDirError(f"state_dir {d} is not writable: {e.strerror or e}") from None
    finally:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(probe)
    st = os.statvfs(d)
    free = st.f_bavail * st.f_frsize
    if free < MIN_FREE:
        raise StateDirError(f"state_dir {d} is full: {free // 1024} KiB free, at least {MIN_FREE // 1024} KiB needed")
    for name in CHECKED_FILES:
        problem = _check_database(d / name)
        if problem is not None:
            raise StateDirError(
                f"state_dir {d}: {name} is corrupt ({problem}); stop the sidecar, move {name} and its "
                f"-wal / -shm files aside, and start again (docs/troubleshooting.md: a state file is corrupt)"
            )


def _check_database(path: Path) -> str | None:
    if not path.exists():
        return None
    try:
        with contextlib.closing(sqlite3.connect(path)) as db:
            rows = db.execute("PRAGMA quick_check").fetchall()
    except sqlite3.DatabaseError as e:
        return str(e)
    if rows != [("ok",)]:
        return "; ".join(str(r[0]) for r in rows[:3])
    return None
