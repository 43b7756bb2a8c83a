"""Dashboards, panels and the data they show, for the Grafana sandbox (``grafana.py``).

Built-in dashboards: ``sandbox`` (a Scenes dashboard, Grafana ≥ 11) whose panels cover the
cases a capture must tell apart (slow, stuck, empty, broken, metric-driven),
``sandbox-legacy`` (pre-Scenes), ``sandbox-live`` (a streaming panel that redraws after its
query, like a clock or a Grafana Live panel), ``sandbox-v2`` (v2 schema, 12.4) and org 2's
``org2-services``. Data is deterministic pseudo-random around a baseline, so the
same window always draws the same picture, and is shaped like the frames Grafana's Prometheus
datasource returns from ``POST /api/ds/query``.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

FOLDER_UID = "sandbox-folder"
FOLDER_TITLE = "Sandbox"
_REL_TIME = re.compile(r"^now(?:-(\d+)([smhdwMy]))?$")
_UNIT_MS = {"s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}
_UNIT_MS |= {"M": 30 * 86_400_000, "y": 365 * 86_400_000}
BROKEN_MESSAGE = 'Post "http://prometheus:9090/api/v1/query_range": dial tcp: connection refused'

Behaviour = Literal["series", "stuck", "empty", "error", "metric", "live"]


@dataclass(frozen=True)
class Panel:
    """One built-in panel; ``delay`` None means the sandbox's ``query_delay``."""

    id: int
    title: str
    behaviour: Behaviour
    metric: str = ""
    delay: float | None = None
    base: float = 1.0
    amplitude: float = 0.3
    grid: tuple[int, int, int, int] = (0, 0, 12, 8)  # x, y, w, h in Grafana grid units

    def to_json(self) -> dict[str, Any]:
        x, y, w, h = self.grid
        return {
            "id": self.id,
            "title": self.title,
            "type": "timeseries",
            "gridPos": {"h": h, "w": w, "x": x, "y": y},
            "datasource": {"type": "prometheus", "uid": "sandbox-prometheus"},
            "targets": [{"refId": "A", "expr": self.metric}],
        }


@dataclass(frozen=True)
class Dashboard:
    """A built-in dashboard; ``scenes`` False emulates pre-Scenes (legacy) Grafana."""

    uid: str
    title: str
    slug: str
    scenes: bool
    panels: tuple[Panel, ...]
    variables: dict[str, str] = field(default_factory=dict)
    v2: bool = False  # a v2-schema dashboard (12.1+): 406 on /api/dashboards/uid

    def panel(self, raw: str, scenes: bool | None = None) -> Panel | None:
        """Resolve ``panelId`` as the page would: Scenes takes a key (``panel-4``, a repeat clone
        ``panel-4-clone-1``: follows grafana/grafana public/app/features/dashboard-scene/solo/
        useSoloPanel.ts and utils.ts findVizPanelByKey) or the bare id; the legacy page does
        ``parseInt(panelId)`` (public/app/features/dashboard/containers/SoloPanelPage.tsx), so a
        key is NaN there and only digits (or leading digits) work."""
        scenes = self.scenes if scenes is None else scenes
        match = re.fullmatch(r"panel-(\d+)(?:-clone-\d+)?", raw) if scenes else None
        if match:
            digits = match.group(1)
        else:
            lead = re.match(r"\s*(\d+)", raw)  # JavaScript's parseInt
            digits = lead.group(1) if lead and (not scenes or raw.isdigit()) else ""
        if not digits:
            return None
        return next((p for p in self.panels if p.id == int(digits)), None)

    def to_v2(self, namespace: str) -> dict[str, Any]:
        """The v2 resource (``/apis/dashboard.grafana.app/v2beta1/...``), as in grafana/grafana
        apps/dashboard/pkg/apis/dashboard/v2beta1 (spec.title, spec.elements of kind Panel,
        no slug: the frontend makes it from the title)."""
        elements = {
            f"panel-{p.id}": {"kind": "Panel", "spec": {"id": p.id, "title": p.title, "description": ""}}
            for p in self.panels
        }
        return {
            "apiVersion": "dashboard.grafana.app/v2beta1",
            "kind": "Dashboard",
            "metadata": {"name": self.uid, "namespace": namespace, "resourceVersion": "1", "generation": 1},
            "spec": {"title": self.title, "elements": elements, "layout": {"kind": "GridLayout", "spec": {}}},
        }

    def to_json(self) -> dict[str, Any]:
        """``GET /api/dashboards/uid/<uid>`` body."""
        templating = [
            {"name": k, "type": "custom", "current": {"text": v, "value": v}, "query": v}
            for k, v in self.variables.items()
        ]
        dashboard = {
            "id": 1 if self.scenes else 2,
            "uid": self.uid,
            "title": self.title,
            "tags": ["sandbox"],
            "timezone": "browser",
            "schemaVersion": 39 if self.scenes else 36,
            "version": 1,
            "time": {"from": "now-6h", "to": "now"},
            "templating": {"list": templating},
            "panels": [p.to_json() for p in self.panels],
        }
        meta = {
            "type": "db",
            "slug": self.slug,
            "url": f"/d/{self.uid}/{self.slug}",
            "folderUid": FOLDER_UID,
            "folderTitle": FOLDER_TITLE,
            "canSave": False,
            "canEdit": False,
            "provisioned": True,
            "version": 1,
        }
        return {"dashboard": dashboard, "meta": meta}


def builtin_dashboards(query_delay: float, *, v2: bool = False) -> dict[str, Dashboard]:
    """The dashboards of org 1: ``sandbox`` and ``sandbox-legacy``, and ``sandbox-v2`` (a v2-schema
    dashboard) on versions that have them."""
    scenes = Dashboard(
        uid="sandbox",
        title="Sandbox services",
        slug="sandbox-services",
        scenes=True,
        variables={"service": "checkout"},
        panels=(
            Panel(1, "Request rate", "series", "requests", query_delay, 120.0, 30.0, (0, 0, 12, 8)),
            Panel(2, "Error rate", "series", "error_ratio", 3.0, 2.0, 1.0, (12, 0, 12, 8)),
            Panel(3, "Stuck query", "stuck", "stuck", grid=(0, 8, 12, 8)),
            Panel(4, "Empty", "empty", "absent", query_delay, grid=(12, 8, 12, 8)),
            Panel(5, "Broken", "error", "broken", query_delay, grid=(0, 16, 12, 8)),
            Panel(6, "Checkout errors", "metric", "errors", query_delay, 0.2, 0.15, (12, 16, 12, 8)),
        ),
    )
    legacy = Dashboard(
        uid="sandbox-legacy",
        title="Legacy dashboard",
        slug="legacy-dashboard",
        scenes=False,
        panels=(
            Panel(1, "Request rate", "series", "requests", query_delay, 120.0, 30.0, (0, 0, 12, 8)),
            Panel(2, "Slow", "series", "slow_requests", 3.0, 0.8, 0.3, (12, 0, 12, 8)),
        ),
    )
    live = Dashboard(
        uid="sandbox-live",
        title="Live",
        slug="live",
        scenes=True,
        panels=(Panel(1, "Live clock", "live", "live", query_delay, 50.0, 10.0, (0, 0, 12, 8)),),
    )
    boards = [scenes, legacy, live]
    if v2:
        boards.append(
            Dashboard(
                uid="sandbox-v2",
                title="V2 services",
                slug="v2-services",
                scenes=True,
                v2=True,
                panels=(Panel(1, "V2 request rate", "series", "requests", query_delay, 80.0, 20.0, (0, 0, 12, 8)),),
            )
        )
    return {d.uid: d for d in boards}


def org_dashboards(query_delay: float) -> dict[str, Dashboard]:
    """Org 2's dashboards: one, ``org2-services``, which org 1 does not have."""
    board = Dashboard(
        uid="org2-services",
        title="Org 2 services",
        slug="org-2-services",
        scenes=True,
        panels=(Panel(1, "Org 2 request rate", "series", "requests", query_delay, 60.0, 15.0, (0, 0, 12, 8)),),
    )
    return {board.uid: board}


def parse_time(raw: Any, now_ms: int) -> int:
    """Grafana time: epoch milliseconds (number or digits) or ``now[-N<unit>]``."""
    if isinstance(raw, int | float) and not isinstance(raw, bool):
        return int(raw)
    text = str(raw).strip()
    if text.isdigit():
        return int(text)
    match = _REL_TIME.match(text)
    if match is None:
        raise ValueError(f"cannot parse time {text!r}")
    amount, unit = match.groups()
    return now_ms - (int(amount) * _UNIT_MS[unit] if amount else 0)


def panel_result(
    panel: Panel, ref_id: str, labels: dict[str, str], window: tuple[int, int], metric: float | Callable[[float], float]
) -> dict[str, Any]:
    """One query's entry of ``results`` in a ``/api/ds/query`` answer (not for stuck panels)."""
    if panel.behaviour == "error":
        return {"error": BROKEN_MESSAGE, "errorSource": "downstream", "status": 500}
    if panel.behaviour == "empty":
        return {"status": 200, "frames": []}
    times, values = series(panel, window, metric)
    return {"status": 200, "frames": [frame(ref_id, panel.metric, labels, times, values)]}


def series(
    panel: Panel, window: tuple[int, int], metric: float | Callable[[float], float]
) -> tuple[list[int], list[float]]:
    """About 100 points over the window. A metric panel draws ``metric``: its history (a function
    of unix seconds: the sandbox Prometheus's series, exactly) or, as a number, its current value
    at the end of synthetic noise."""
    times = timestamps(*window)
    if panel.behaviour == "metric" and callable(metric):
        return times, [metric(t / 1000) for t in times]
    seed = f"{panel.metric}:{panel.id}"
    values = [noise(seed, t, panel.base, panel.amplitude) for t in times]
    if panel.behaviour == "metric" and not callable(metric):
        tail = max(1, len(times) // 10)
        values[-tail:] = [max(metric, 0.0) + noise(seed, t, 0.0, 0.05) for t in times[-tail:]]
    return times, values


def timestamps(from_ms: int, to_ms: int) -> list[int]:
    """About 100 points, aligned to a whole-second step, inside the window."""
    step = max(1_000, math.ceil((to_ms - from_ms) / 100 / 1_000) * 1_000)
    start = math.ceil(from_ms / step) * step
    return list(range(start, to_ms + 1, step)) or [to_ms]


def noise(seed: str, t: int, base: float, amplitude: float) -> float:
    """Deterministic pseudo-random value around ``base`` (same window → same picture)."""
    jitter = random.Random(f"{seed}:{t}").random() - 0.5
    wave = math.sin(t / 900_000.0)
    return round(base + amplitude * (0.6 * wave + 0.8 * jitter), 4)


def frame(ref_id: str, metric: str, labels: dict[str, str], times: list[int], values: list[float]) -> dict[str, Any]:
    """A data-plane frame (``timeseries-multi``) as Grafana's Prometheus datasource returns it.

    The display name (legend) is ``metric{k=v,...}`` over the template variables.
    """
    display = metric + ("{" + ",".join(f"{k}={v}" for k, v in sorted(labels.items())) + "}" if labels else "")
    interval = times[1] - times[0] if len(times) > 1 else 1_000
    time_field = {"name": "Time", "type": "time", "typeInfo": {"frame": "time.Time"}, "config": {"interval": interval}}
    value_field = {
        "name": "Value",
        "type": "number",
        "typeInfo": {"frame": "float64"},
        "labels": {"__name__": metric, **labels},
        "config": {"displayNameFromDS": display},
    }
    meta = {"type": "timeseries-multi", "typeVersion": [0, 1]}
    return {
        "schema": {"refId": ref_id, "meta": meta, "fields": [time_field, value_field]},
        "data": {"values": [times, values]},
    }
