"""Formatting of ``/alert/list`` items for the ``alerts`` CLI: an aligned table, or JSON."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from sidecar.model import RULE_MARKER

__all__ = ["format_alerts"]

_COLUMNS = ("TIME (UTC)", "STATUS", "TITLE", "RULE", "LABELS", "ALERT ID")
_MAX_TITLE = 60
_MAX_LABELS = 48
_HIDDEN_LABELS = frozenset({RULE_MARKER})


def _clip(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _when(value: Any) -> str:
    try:
        ts = float(value)
    except (TypeError, ValueError):
        return "-"
    if ts <= 0:
        return "-"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _status(item: Mapping[str, Any]) -> str:
    status = str(item.get("alert_status") or "")
    severity = str(item.get("alert_severity") or "")
    if not status:
        return severity or "-"
    if not severity or severity == status:
        return status
    return f"{status}/{severity}"  # e.g. Ok/Critical: a resolved Critical alert


def _labels_summary(labels: Mapping[str, Any]) -> str:
    parts = [f"{k}={v}" for k, v in sorted(labels.items()) if k not in _HIDDEN_LABELS]
    return _clip(", ".join(parts), _MAX_LABELS) if parts else "-"


def _row(item: Mapping[str, Any]) -> tuple[str, ...]:
    labels = item.get("labels") or {}
    if not isinstance(labels, Mapping):
        labels = {}
    return (
        _when(item.get("start_time")),
        _status(item),
        _clip(str(item.get("title") or ""), _MAX_TITLE) or "-",
        str(labels.get(RULE_MARKER) or "-"),
        _labels_summary(labels),
        str(item.get("alert_id") or "-"),
    )


def format_alerts(items: Sequence[Mapping[str, Any]], *, as_json: bool) -> str:
    """``items`` (``/alert/list`` ``data.items``) as a readable table, or as JSON."""
    if as_json:
        return json.dumps(list(items), indent=2, ensure_ascii=False, default=str)
    if not items:
        return "no alerts"
    rows = [_COLUMNS, *(_row(i) for i in items)]
    widths = [max(len(r[c]) for r in rows) for c in range(len(_COLUMNS))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return "\n".join(lines)
