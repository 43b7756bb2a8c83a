"""Bad state is loud, never lossy: a state directory that is read-only, full or holds a corrupt
database stops ``run`` with one line (exit 1); a disk that fills while running makes the webhook
answer 503 (Alertmanager retries 5xx) and the retry, once there is room, is stored.

The disk is real: a small tmpfs mounted for the test (root only), filled with a real file."""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from sidecar.delivery.outbox import Outbox
from tests.support.ingest import WEBHOOK_PATH, ingest

ALERT = {
    "status": "firing",
    "labels": {"alertname": "DiskFull", "instance": "db-1"},
    "startsAt": "2023-11-14T22:03:20Z",
}
BODY = json.dumps({"version": "4", "status": "firing", "alerts": [ALERT]}).encode()


def _can_mount() -> bool:
    return os.geteuid() == 0 and Path("/proc/filesystems").read_text().find("tmpfs") >= 0


needs_mount = pytest.mark.skipif(not _can_mount(), reason="mounting a tmpfs needs root")


@contextlib.contextmanager
def tmpfs(where: Path, size: str, *, read_only: bool = False) -> Iterator[Path]:
    where.mkdir(parents=True, exist_ok=True)
    opts = f"size={size}" + (",ro" if read_only else "")
    subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(where)], check=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def fill(d: Path) -> Path:
    """Write a file until the filesystem answers ENOSPC."""
    filler = d / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        for size in (1 << 16, 512, 1):
            with contextlib.suppress(OSError):
                while os.write(fd, b"\0" * size):
                    pass
    finally:
        os.close(fd)
    return filler


def run(tmp_path: Path, state_dir: Path) -> subprocess.CompletedProcess[str]:
    cfg = tmp_path / "config.yaml"
    cfg.write_text(
        f"flashduty: {{integration_key: '${{KEY}}'}}\nstate_dir: {state_dir}\nserver: {{listen: '127.0.0.1:0'}}\n"
    )
    env = {"PATH": os.environ["PATH"], "KEY": "state-dir-test-key"}
    return subprocess.run(
        [sys.executable, "-m", "sidecar", "run", "-c", str(cfg)],
        capture_output=True, text=True, env=env, timeout=60, check=False,
    )  # fmt: skip


def one_line(res: subprocess.CompletedProcess[str]) -> str:
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert res.returncode == 1 and len(lines) == 1, (res.returncode, res.stderr)
    return lines[0]


@needs_mount
def test_a_read_only_state_dir_stops_run_with_one_line(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "ro", "1m", read_only=True) as d:
        assert "is not writable: Read-only file system" in one_line(run(tmp_path, d))


@needs_mount
def test_a_full_state_dir_stops_run_with_one_line(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "full", "2m") as d:
        fill(d)
        assert f"state_dir {d} is full" in one_line(run(tmp_path, d))


def test_a_state_file_that_is_not_a_database_stops_run_naming_it(tmp_path: Path) -> None:
    d = tmp_path / "state"
    d.mkdir()
    (d / "rules.sqlite3").write_bytes(b"this is not an SQLite file" * 100)
    line = one_line(run(tmp_path, d))
    assert "rules.sqlite3 is corrupt (file is not a database)" in line and "move rules.sqlite3" in line


def test_a_damaged_outbox_page_stops_run_naming_it(tmp_path: Path) -> None:
    d = tmp_path / "state"
    d.mkdir()
    ob = Outbox.in_dir(d)
    ob.close()
    path = d / "outbox.sqlite3"
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute("PRAGMA journal_mode=DELETE")
        page = db.execute("PRAGMA page_size").fetchone()[0]
        pages = db.execute("PRAGMA page_count").fetchone()[0]
    assert pages > 2
    raw = bytearray(path.read_bytes())
    raw[page : page * 2] = b"\xa5" * page  # page 2: a b-tree page of the schema, overwritten
    path.write_bytes(bytes(raw))
    line = one_line(run(tmp_path, d))
    assert "outbox.sqlite3 is corrupt" in line, line


@needs_mount
async def test_a_disk_that_fills_while_running_answers_503_and_the_retry_is_stored(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "small", "3m") as d:
        outbox = Outbox.in_dir(d)
        try:
            async with ingest(d, sink=outbox.put) as h:
                filler = fill(d)
                status, text = await h.post(WEBHOOK_PATH, BODY)
                assert status == 503 and "retry" in json.loads(text)["error"], text
                assert outbox.pending_count() == 0
                am = json.dumps([ALERT]).encode()
                assert (await h.post("/api/v2/alerts", am))[0] == 500  # Alertmanager's answer; senders retry 5xx
                filler.unlink()
                status, text = await h.post(WEBHOOK_PATH, BODY)
                assert status == 200 and json.loads(text)["events"] == 1, text
                assert outbox.pending_count() == 1
        finally:
            outbox.close()
