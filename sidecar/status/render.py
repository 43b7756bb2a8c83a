"""The status page's HTML: one Jinja2 template (``templates/status.html``), for the live page and
for a static export (the demo's gallery), so both always look the same.

Every value goes through the secret redactor before it is rendered, and every text is escaped
(autoescape): no secret the daemon holds can appear on the page, whatever a rule's error or a
label says (the finished page is checked once more for the literal secrets).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import jinja2

from sidecar.redact import Redactor
from sidecar.status.provider import Snapshot

__all__ = ["render_login", "render_status"]

_ENV = jinja2.Environment(
    loader=jinja2.PackageLoader("sidecar.status", "templates"),
    autoescape=True,
    trim_blocks=True,
    lstrip_blocks=True,
    undefined=jinja2.StrictUndefined,
)


def _ts(t: float | None) -> str:
    return "—" if t is None else time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(t))


def _dur(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    s = max(0.0, seconds)
    if s < 1:
        return f"{s * 1000:.0f} ms"
    if s < 120:
        return f"{s:.1f} s"
    if s < 7200:
        return f"{s / 60:.0f} min"
    if s < 172800:
        return f"{s / 3600:.1f} h"
    return f"{s / 86400:.1f} d"


def _size(n: int | None) -> str:
    if n is None:
        return "—"
    if n < 1024:
        return f"{n} B"
    if n < 1024 * 1024:
        return f"{n / 1024:.0f} KiB"
    return f"{n / 1024 / 1024:.1f} MiB"


def _labels(labels: dict[str, str]) -> str:
    return ", ".join(f'{k}="{v}"' for k, v in sorted(labels.items()))


_ENV.filters.update(ts=_ts, dur=_dur, size=_size, labels=_labels)


def render_status(
    snap: Snapshot,
    *,
    picture_base: str,
    refresh: float,
    secrets: Iterable[str | None],
    exported: bool = False,
    notes: Iterable[tuple[str, str]] = (),
) -> str:
    """The page. ``picture_base``: URL prefix of the pictures (``pictures/``); ``refresh``:
    seconds between reloads (0: none); ``exported``: a static copy (no refresh, no live links);
    ``notes``: extra (time, text) lines shown first (the demo's timeline)."""
    redactor = Redactor(secrets)
    snap = Snapshot(
        now=snap.now,
        daemon=redactor.value(snap.daemon),
        delivery=redactor.value(snap.delivery),
        rules=redactor.value(snap.rules),
        deliveries=redactor.value(snap.deliveries),
    )
    ctx: dict[str, Any] = {
        "s": snap,
        "d": snap.daemon,
        "q": snap.delivery,
        "picture_base": picture_base,
        "refresh": 0 if exported else refresh,
        "exported": exported,
        "notes": redactor.value(list(notes)),
        "uptime": None if snap.daemon.get("started") is None else snap.now - snap.daemon["started"],
    }
    page = _ENV.get_template("status.html").render(ctx)
    for secret in redactor.secrets:  # none can be left: this only guards against a template bug
        page = page.replace(secret, "&lt;redacted&gt;")
    return page


def render_login(*, failed: bool) -> str:
    return _ENV.get_template("login.html").render(failed=failed)
