"""Panels named by an alert's annotations: ``grafana_dashboard_uid`` / ``grafana_panel_id``, or
Grafana's own ``__dashboardUid__`` / ``__panelId__``.

One reading for every place that takes panels from annotations: Prometheus rule files (at config
load), prometheus and grafana rule instances, and webhook alerts. It needs only the config schema,
so the config loader can use it without importing the rule engine.
"""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import ValidationError

from sidecar.config import PanelConfig

__all__ = ["panels_from_annotations"]


def panels_from_annotations(annotations: Mapping[str, str], *, strict: bool = False) -> list[PanelConfig]:
    """``grafana_dashboard_uid`` / ``grafana_panel_id`` (or Grafana's ``__dashboardUid__`` /
    ``__panelId__``) → panels; the panel id may list several, comma-separated; no id is the whole
    dashboard. An invalid id is skipped, or with ``strict`` raises ``ValueError`` naming the annotation.
    """
    uid = (annotations.get("grafana_dashboard_uid") or annotations.get("__dashboardUid__") or "").strip()
    if not uid:
        return []
    key = "grafana_panel_id" if annotations.get("grafana_panel_id") else "__panelId__"
    ids = annotations.get(key) or ""
    panel_ids: list[str | None] = [p.strip() for p in ids.split(",") if p.strip()] or [None]
    out: list[PanelConfig] = []
    for pid in panel_ids:
        try:
            out.append(PanelConfig.model_validate({"dashboard": uid, "panel": pid}))
        except ValidationError as e:
            if strict:
                err = e.errors()[0]
                raise ValueError(f"{key}: {(err.get('ctx') or {}).get('error', err['msg'])}") from None
    return out
