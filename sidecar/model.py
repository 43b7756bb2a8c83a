"""Core value types shared by the rule engine, the outbox and the delivery pipeline.

An ``AlertEvent`` is what a rule transition produces and what the outbox stores: everything
needed to deliver it, already rendered (templates expanded, time windows absolute), so that a
restart or a config reload never changes an event that is already queued.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Severity = Literal["Critical", "Warning", "Info"]
EventStatus = Literal["Critical", "Warning", "Info", "Ok"]
SEVERITIES: tuple[Severity, ...] = ("Critical", "Warning", "Info")
# lower is more urgent: Ok first (never waits behind pictures), then Critical, Warning, Info
PRIORITY: dict[str, int] = {"Ok": 0, "Critical": 1, "Warning": 2, "Info": 3}
RULE_MARKER = "sidecar_rule"
WEBHOOK_RULE = "webhook"  # alerts received on POST /webhook/alertmanager
ALERTMANAGER_RULE = "alertmanager"  # alerts received on POST /api/v2/alerts (the Alertmanager API)
RESERVED_RULE_NAMES = frozenset({WEBHOOK_RULE, ALERTMANAGER_RULE})


def alert_key(rule: str, labels: dict[str, str]) -> str:
    """``fds:`` + first 32 hex of sha256(rule name, NUL, sorted instance labels).

    Stable across restarts and replicas; a firing and its ``Ok`` always share it.
    """
    h = hashlib.sha256()
    h.update(rule.encode())
    h.update(b"\0")
    for k in sorted(labels):
        h.update(k.encode())
        h.update(b"=")
        h.update(labels[k].encode())
        h.update(b"\0")
    return "fds:" + h.hexdigest()[:32]


@dataclass(frozen=True)
class PanelCapture:
    """One picture to take: fully resolved, so it can be queued and replayed as is.

    ``time_from`` / ``time_to`` are what Grafana's ``from`` / ``to`` accept: epoch milliseconds
    as digits, or relative syntax such as ``now-1h``.
    """

    dashboard: str
    panel: str | None  # numeric id ("4") or Scenes key ("panel-4"); None = whole dashboard
    time_from: str
    time_to: str
    vars: tuple[tuple[str, str], ...] = ()
    width: int = 1000
    height: int = 500
    scale: float = 1.0
    theme: str = "dark"
    timezone: str = "UTC"
    format: str = "png"
    title: str = ""  # used for images[].alt when set
    org_id: int | None = None  # Grafana org of the alert (webhook orgId / panelURL); None: grafana.org_id

    @property
    def alt(self) -> str:
        if self.title:
            return self.title
        return f"{self.dashboard}/{self.panel}" if self.panel is not None else self.dashboard

    def cache_key(self) -> str:
        """Identity of the picture: same dashboard, panel, window, vars, size, theme, tz, format."""
        return json.dumps(
            [
                self.dashboard,
                self.panel,
                self.time_from,
                self.time_to,
                list(self.vars),
                self.width,
                self.height,
                self.scale,
                self.theme,
                self.timezone,
                self.format,
                self.org_id,
            ],
            separators=(",", ":"),
        )

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["vars"] = [list(v) for v in self.vars]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PanelCapture:
        d = dict(d)
        d["vars"] = tuple((str(k), str(v)) for k, v in d.get("vars", ()))
        return cls(**d)


@dataclass(frozen=True)
class AlertEvent:
    """One state change (or re-send) of one alert instance, ready to deliver."""

    alert_key: str
    rule: str
    status: EventStatus
    title: str
    description: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    panels: tuple[PanelCapture, ...] = ()
    event_time: float = 0.0  # unix seconds of the transition
    active_at: float | None = None
    resolved_at: float | None = None

    @classmethod
    def for_instance(
        cls,
        rule: str,
        labels: dict[str, str],
        *,
        status: EventStatus,
        title: str,
        description: str = "",
        panels: tuple[PanelCapture, ...] = (),
        event_time: float,
        active_at: float | None = None,
        resolved_at: float | None = None,
    ) -> AlertEvent:
        """The one way every source (rules, reports, webhooks) makes an event: ``alert_key`` from
        the rule name and the instance labels, the ``sidecar_rule`` marker added to the labels."""
        return cls(
            alert_key=alert_key(rule, labels),
            rule=rule,
            status=status,
            title=title,
            description=description,
            labels={**labels, RULE_MARKER: rule},
            panels=panels,
            event_time=event_time,
            active_at=active_at,
            resolved_at=resolved_at,
        )

    @property
    def priority(self) -> int:
        return PRIORITY[self.status]

    def to_json(self) -> str:
        d = asdict(self)
        d["panels"] = [p.to_dict() for p in self.panels]
        return json.dumps(d, separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_json(cls, s: str) -> AlertEvent:
        return cls.from_dict(json.loads(s))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AlertEvent:
        d = dict(d)
        d["panels"] = tuple(PanelCapture.from_dict(p) for p in d.get("panels", ()))
        return cls(**d)
