"""A rule's (or webhook's) panel list → fully resolved ``PanelCapture``s for one alert event.

Everything is decided here, when the event is created, so a queued event never changes:

* size, scale and format: the panel's own value, else ``capture.*``; theme from the panel, else
  ``grafana.theme``; time zone from ``grafana.timezone``;
* time window, unless the panel sets one: from ``active_at − max(2 × for, 30m)`` to now, in epoch
  milliseconds; for a resolve, until ``resolved_at + 5m`` capped at now;
* ``range: 1h`` → from now − 1h to now (absolute); ``from`` / ``to`` pass through in Grafana syntax
  (``now-6h``), a missing ``to`` meaning ``now``;
* ``vars`` are templates expanded with the alert's labels (same engine as titles).

Panels named by annotations come from ``sidecar.rules.annotations`` (re-exported here).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import replace

from sidecar.config import Config, PanelConfig, RuleConfig
from sidecar.model import PanelCapture
from sidecar.rules.annotations import panels_from_annotations  # re-exported: engine and webhook take it from here
from sidecar.rules.templates import TemplateContext, TemplateEngine

__all__ = ["MIN_LOOKBACK", "RESOLVE_MARGIN", "default_window", "panel_captures", "panels_from_annotations"]

MIN_LOOKBACK = 30 * 60.0  # seconds of history shown before active_at, at least
RESOLVE_MARGIN = 5 * 60.0  # seconds shown after a resolve


def _ms(t: float) -> str:
    return str(int(t * 1000))


def default_window(
    *, active_at: float, now: float, for_: float = 0.0, resolved_at: float | None = None
) -> tuple[str, str]:
    """``(from, to)`` in epoch milliseconds around an alert."""
    start = active_at - max(2 * for_, MIN_LOOKBACK)
    end = now if resolved_at is None else min(resolved_at + RESOLVE_MARGIN, now)
    if end <= start:  # clock skew between the source and us: never hand Grafana an empty range
        end = start + 60.0
    return _ms(start), _ms(end)


def panel_captures(
    rule_or_panels: RuleConfig | Sequence[PanelConfig],
    cfg: Config,
    *,
    labels: Mapping[str, str],
    active_at: float,
    now: float,
    resolved_at: float | None = None,
    value: float = math.nan,
    templates: TemplateEngine | None = None,
    for_: float | None = None,
    rule_name: str | None = None,
    org_id: int | None = None,
) -> tuple[PanelCapture, ...]:
    """The pictures for one event.

    ``for`` and the rule name (for template errors) come from the rule when a ``RuleConfig`` is
    given, else from ``for_`` (default 0) and ``rule_name`` (default ``webhook``). ``org_id``: the
    Grafana org of the alert (None: ``grafana.org_id``).
    """
    if isinstance(rule_or_panels, RuleConfig):
        panels: Sequence[PanelConfig] = rule_or_panels.panels
        name, hold = rule_or_panels.name, rule_or_panels.for_
    else:
        panels, name, hold = rule_or_panels, "webhook", 0.0
    rule_name = rule_name if rule_name is not None else name
    for_ = for_ if for_ is not None else hold
    if not panels:
        return ()
    engine = templates if templates is not None else TemplateEngine()
    ctx = TemplateContext(labels=labels, value=value, rule=rule_name, active_at=active_at)
    window = default_window(active_at=active_at, now=now, for_=for_, resolved_at=resolved_at)
    out: list[PanelCapture] = []
    seen: set[str] = set()
    for p in panels:
        capture = _one(p, cfg, window=window, now=now, ctx=ctx, engine=engine)
        if org_id is not None and org_id != cfg.grafana.org_id:
            capture = replace(capture, org_id=org_id)
        key = capture.cache_key()
        if key not in seen:  # the same panel listed twice (rule + annotation) is captured once
            seen.add(key)
            out.append(capture)
    return tuple(out)


def _one(
    p: PanelConfig,
    cfg: Config,
    *,
    window: tuple[str, str],
    now: float,
    ctx: TemplateContext,
    engine: TemplateEngine,
) -> PanelCapture:
    if p.range is not None:
        time_from, time_to = _ms(now - p.range), _ms(now)
    elif p.from_ is not None or p.to is not None:
        time_from, time_to = p.from_ or window[0], p.to or "now"
    else:
        time_from, time_to = window
    cap = cfg.capture
    return PanelCapture(
        dashboard=p.dashboard,
        panel=p.panel_key,
        time_from=time_from,
        time_to=time_to,
        vars=tuple(sorted((k, engine.render(v, ctx)) for k, v in p.vars.items())),
        width=p.width or cap.width,
        height=p.height or cap.height,
        scale=p.scale or cap.scale,
        theme=p.theme or cfg.grafana.theme,
        timezone=cfg.grafana.timezone,
        format=p.format or cap.format,
        title=p.title or "",
    )
