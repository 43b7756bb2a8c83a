"""A static copy of the status page: ``DIR/index.html`` and the pictures it shows in
``DIR/pictures/``, rendered by the same template as the live page (the demo's gallery)."""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from pathlib import Path

from aiohttp import web

from sidecar.config.dump import secret_values
from sidecar.status.page import JOURNAL, PAGE_DELIVERIES, config_of
from sidecar.status.provider import snapshot
from sidecar.status.render import render_status

__all__ = ["export_status"]


async def export_status(app: web.Application, out_dir: str | Path, *, notes: Iterable[tuple[str, str]] = ()) -> Path:
    """Write the page of the running ``app`` into ``out_dir``; returns the path of ``index.html``."""
    out = Path(out_dir)
    pictures = out / "pictures"
    pictures.mkdir(parents=True, exist_ok=True)
    cfg = config_of(app)
    snap = await snapshot(app, deliveries=PAGE_DELIVERIES)
    journal = app.get(JOURNAL)
    for delivery in snap.deliveries:
        for pic in delivery["pictures"]:
            source = journal.picture_path(pic["file"]) if journal is not None and pic.get("file") else None
            if source is None:
                pic["file"] = None
            elif not (pictures / source.name).exists():
                shutil.copyfile(source, pictures / source.name)
    text = render_status(
        snap, picture_base="pictures/", refresh=0, secrets=secret_values(cfg), exported=True, notes=notes
    )
    index = out / "index.html"
    index.write_text(text, encoding="utf-8")
    return index
