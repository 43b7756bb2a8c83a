"""From an alert instance to what is sent: its label set, its severity and its ``AlertEvent``.

The state machine (``engine.RuleEvaluator``) decides *when* an instance sends an event; this
module decides *what* it says, from the rule, the config and the instance:

* instance labels = sample labels − ``__name__`` + rendered rule labels (they win) + ``alertname``
  (for a mirrored ``grafana`` rule, ``alertname`` is Grafana's rule name, kept when present);
* severity: the rule's; a mirrored alert's ``severity`` label wins when it names one
  (``normalize_severity``: ``critical`` / ``warning`` / ``info``, any case);
* annotations: the rule's, rendered (over the upstream ones when mirroring); title = the rule's
  ``title`` template, else the ``summary`` annotation, else the alert name; description = the
  rule's ``description`` template, else the ``description`` annotation;
* panels (only when the event carries pictures): the rule's, plus, when mirroring, those named by
  the alert's ``__dashboardUid__`` / ``__panelId__`` annotations, resolved to ``PanelCapture``s by
  ``window`` (an ``Ok`` event's window ends near the instance's resolve time).
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from sidecar.config import Config, RuleConfig
from sidecar.model import AlertEvent, EventStatus, PanelCapture, Severity
from sidecar.rules.templates import TemplateContext, TemplateEngine
from sidecar.rules.window import panel_captures, panels_from_annotations

if TYPE_CHECKING:  # engine imports this module
    from sidecar.rules.engine import Instance, Sample

__all__ = ["instance_event", "instance_labels", "instance_severity", "normalize_severity"]


def normalize_severity(value: str | None) -> Severity | None:
    v = (value or "").strip().lower()
    if v == "critical":
        return "Critical"
    if v == "warning":
        return "Warning"
    if v == "info":
        return "Info"
    return None


def instance_labels(rule: RuleConfig, s: Sample, templates: TemplateEngine, *, mirror: bool) -> dict[str, str]:
    """The label set of the instance ``s`` belongs to."""
    labels = {k: v for k, v in s.labels.items() if k != "__name__"}
    ctx = TemplateContext(labels=s.labels, value=s.value, rule=rule.name)
    for k, tmpl in rule.labels.items():
        labels[k] = templates.render(tmpl, ctx)
    if mirror:
        labels.setdefault("alertname", rule.name)
    else:
        labels["alertname"] = rule.name
    return labels


def instance_severity(rule: RuleConfig, inst: Instance, *, mirror: bool) -> Severity:
    """The status of a firing event of ``inst``."""
    if mirror:
        found = normalize_severity(inst.labels.get("severity"))
        if found is not None:
            return found
    return rule.severity


def instance_event(
    rule: RuleConfig,
    cfg: Config,
    inst: Instance,
    ts: float,
    status: EventStatus,
    *,
    templates: TemplateEngine,
    mirror: bool,
    for_: float,
    panels: bool,
) -> AlertEvent:
    """The event for ``inst`` at ``ts``: templates rendered, pictures resolved (when ``panels``)."""
    base = TemplateContext(labels=inst.labels, value=inst.value, rule=rule.name, active_at=inst.active_at)
    annotations = dict(inst.annotations) if mirror else {}
    annotations.update(templates.render_map(rule.annotations, base))
    ctx = replace(base, annotations=annotations)
    if rule.title:
        title = templates.render(rule.title, ctx)
    else:
        title = annotations.get("summary") or (inst.labels["alertname"] if mirror else rule.name)
    if rule.description:
        description = templates.render(rule.description, ctx)
    else:
        description = annotations.get("description", "")
    resolved_at = inst.resolved_at if status == "Ok" else None
    captures: tuple[PanelCapture, ...] = ()
    if panels:
        panel_list = list(rule.panels)
        if mirror:
            panel_list += panels_from_annotations(inst.annotations)
        captures = panel_captures(
            panel_list,
            cfg,
            labels=inst.labels,
            active_at=inst.active_at,
            now=ts,
            resolved_at=resolved_at,
            value=inst.value,
            templates=templates,
            for_=for_,
            rule_name=rule.name,
        )
    return AlertEvent.for_instance(
        rule.name,
        inst.labels,
        status=status,
        title=title,
        description=description,
        panels=captures,
        event_time=ts,
        active_at=inst.active_at,
        resolved_at=resolved_at,
    )
