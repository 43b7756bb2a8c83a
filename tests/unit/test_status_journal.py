"""The status journal: deliveries and pictures in state_dir, bounded, kept across a restart."""

from __future__ import annotations

import hashlib
from pathlib import Path

from sidecar.config.status_schema import StatusConfig
from sidecar.status.journal import PICTURES_DIR, Journal
from sidecar.status.record import DeliveryRecord, PictureRecord


def _record(n: int, data: bytes | None, *, key: str | None = None) -> DeliveryRecord:
    pic = PictureRecord(alt=f"panel {n}", cls="ok", outcome="uploaded", steps_ms={"navigate": 12}, capture_ms=40,
                        image_key=key or f"key-{n}", size=len(data) if data else None, content_type="image/png",
                        image=data)  # fmt: skip
    return DeliveryRecord(
        at=1000.0 + n, rule="R", status="Critical", alert_key=f"fds:{n}", title=f"t{n}", outcome="delivered",
        followup=False, duration_ms=n, error=None, pictures=[pic],
    )  # fmt: skip


async def test_pictures_bounded_by_count_and_bytes_oldest_first_and_kept_across_restart(tmp_path: Path) -> None:
    limits = StatusConfig(pictures=3, picture_bytes=250, deliveries=50)
    journal = Journal(tmp_path, limits=lambda: limits)
    blobs = [bytes([i]) * 100 for i in range(4)]  # 100 bytes each: the byte bound keeps 2
    for i, blob in enumerate(blobs):
        journal.record(_record(i, blob))
    rows = await journal.recent(10)
    assert [r["alert_key"] for r in rows] == ["fds:3", "fds:2", "fds:1", "fds:0"]
    files = [r["pictures"][0]["file"] for r in rows]
    assert files[:2] == [hashlib.sha256(blobs[3]).hexdigest() + ".png", hashlib.sha256(blobs[2]).hexdigest() + ".png"]
    assert files[2:] == [None, None]  # removed, oldest first
    assert await journal.stats() == (2, 200)
    path = journal.picture_path(files[0])
    assert path is not None and path.read_bytes() == blobs[3]
    await journal.close()

    again = Journal(tmp_path, limits=lambda: limits)  # a restart: everything is still there
    assert [r["alert_key"] for r in await again.recent(10)] == ["fds:3", "fds:2", "fds:1", "fds:0"]
    # a follow-up that carries only the image key finds the kept file
    again.record(_record(9, None, key="key-3"))
    newest = (await again.recent(1))[0]
    assert newest["pictures"][0]["file"] == files[0]
    assert sorted(p.name for p in (tmp_path / PICTURES_DIR).iterdir()) == sorted(f for f in files if f)
    await again.close()


async def test_deliveries_bounded_and_orphan_files_removed(tmp_path: Path) -> None:
    limits = StatusConfig(pictures=0, deliveries=50)  # pictures=0: none kept
    journal = Journal(tmp_path, limits=lambda: limits)
    for i in range(60):
        journal.record(_record(i, b"x" * 10))
    rows = await journal.recent(100)
    assert len(rows) == 50 and rows[0]["alert_key"] == "fds:59" and rows[-1]["alert_key"] == "fds:10"
    assert all(r["pictures"][0]["file"] is None for r in rows)
    assert list((tmp_path / PICTURES_DIR).iterdir()) == []
    await journal.close()
    stray = tmp_path / PICTURES_DIR / ("ab" * 32 + ".png")
    stray.write_bytes(b"left by a crash")
    again = Journal(tmp_path, limits=lambda: limits)
    assert not stray.exists()
    assert again.picture_path("../journal.sqlite3") is None and again.picture_path(stray.name) is None
    await again.close()


async def test_a_late_picture_kept_at_upload_is_found_by_its_follow_up(tmp_path: Path) -> None:
    journal = Journal(tmp_path, limits=StatusConfig)
    late = b"\x89PNG late picture"
    journal.keep(late, "image/png", "img_late")  # uploaded after the push went out
    journal.record(_record(1, None, key="img_late"))  # the follow-up carries only the key
    (row,) = await journal.recent(5)
    path = journal.picture_path(row["pictures"][0]["file"])
    assert path is not None and path.read_bytes() == late
    await journal.close()
