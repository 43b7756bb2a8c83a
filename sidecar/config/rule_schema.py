"""The rule-side config schema: ``rules`` (``RuleConfig``), the ``panels`` they capture
(``PanelConfig``), ``rule_files`` entries and the ``webhook`` section.

Only what one model can see is validated here; checks across fields and sections (datasource
names, what each rule source takes, cron syntax) are in ``checks``.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from sidecar.config.values import Duration, ImageFormat, StrictModel, Theme
from sidecar.model import SEVERITIES

__all__ = ["PanelConfig", "RuleConfig", "RuleFileConfig", "RuleSource", "SeverityName", "WebhookConfig"]


class PanelConfig(StrictModel):
    dashboard: str = Field(min_length=1)
    """Dashboard uid."""
    panel: int | str | None = None
    """Panel id (`4`) or Scenes key (`panel-4`); omit for the whole dashboard."""
    title: str | None = None
    """Picture caption (`images[].alt`); default: the panel's title, else `dashboard/panel`."""
    range: Duration | None = None
    """Show the last `range` before the capture; default: a window around the alert's start."""
    from_: str | None = Field(default=None, alias="from")
    """Start of the window, Grafana syntax (`now-6h`); with `to`, instead of `range`."""
    to: str | None = None
    """End of the window, Grafana syntax (`now`)."""
    vars: dict[str, str] = Field(default_factory=dict)
    """Dashboard variables (`var-<name>`), templated from the alert's labels."""
    width: int | None = Field(default=None, ge=100, le=3000)
    """Overrides `capture.width`."""
    height: int | None = Field(default=None, ge=100, le=3000)
    """Overrides `capture.height`."""
    scale: float | None = Field(default=None, ge=0.5, le=4.0)
    """Overrides `capture.scale`."""
    theme: Theme | None = None
    """Overrides `grafana.theme`."""
    format: ImageFormat | None = None
    """Overrides `capture.format`."""

    @field_validator("panel", mode="before")
    @classmethod
    def _panel(cls, v: object) -> object:
        if isinstance(v, bool):
            raise ValueError("must be a panel id (4) or a Scenes key (panel-4)")
        if isinstance(v, str) and not re.fullmatch(r"\d+|panel-\d+(-clone-\d+)?|[A-Za-z0-9_-]+", v):
            raise ValueError(f"must be a panel id (4) or a Scenes key (panel-4), got {v!r}")
        return v

    @model_validator(mode="after")
    def _window(self) -> PanelConfig:
        if self.range is not None and (self.from_ is not None or self.to is not None):
            raise ValueError("set either range or from/to, not both")
        if self.range is not None and self.range <= 0:
            raise ValueError("range must be > 0")
        return self

    @property
    def panel_key(self) -> str | None:
        return None if self.panel is None else str(self.panel)


RuleSource = Literal["prometheus", "grafana", "schedule"]
SeverityName = Literal["Critical", "Warning", "Info"]


class RuleConfig(StrictModel):
    name: str = Field(min_length=1, max_length=200)
    """Unique rule name; `alertname` of its alerts and the `sidecar_rule` label in Flashduty."""
    source: RuleSource
    """`prometheus` (PromQL), `grafana` (mirror Grafana-managed rules) or `schedule` (reports)."""
    datasource: str | None = None
    """Datasource of a prometheus rule (optional when there is only one)."""
    expr: str | None = None
    """PromQL expression of a prometheus rule; every result sample is an alert instance."""
    every: Duration | None = None
    """Evaluation interval (default 30s); for a schedule rule, the report interval."""
    cron: str | None = None
    """Schedule rules: 5-field cron in `grafana.timezone`, instead of `every`."""
    for_: Duration = Field(default=0.0, alias="for")
    """How long an instance must stay true before it fires (Prometheus `for`); prometheus rules only (a grafana rule mirrors Grafana's own pending period, a report fires when it is due)."""
    keep_firing_for: Duration = 0.0
    """How long a firing instance keeps firing after its condition is gone."""
    severity: SeverityName = "Warning"
    """`Critical`, `Warning` or `Info` while firing; a schedule rule's default is `Info`."""
    title: str | None = None
    """Alert title (Jinja2 template; `{{ $labels.x }}`, `{{ $value }}`); default: the `summary` annotation, else the rule name (a grafana rule: the Grafana rule's name)."""
    description: str = ""
    """Alert description (template); default: the `description` annotation, else empty."""
    labels: dict[str, str] = Field(default_factory=dict)
    """Labels added to every instance (templates allowed; they override the series' labels)."""
    annotations: dict[str, str] = Field(default_factory=dict)
    """Extra template values, available as `annotations` (and `$annotations`)."""
    panels: list[PanelConfig] = Field(default_factory=list)
    """Grafana panels to capture for this rule's alerts."""
    resend_interval: Duration | None = None
    """Overrides `delivery.resend_interval` for this rule."""
    mirror_nodata: bool = False
    """Grafana rules only: also mirror instances in Grafana's `NoData` state (a rule whose "no data" handling is `No Data`), as Grafana's Alertmanager gets them: `alertname: DatasourceNoData`, the rule in `rulename`. Off: only Alerting (including `Alerting (NoData)`) and Recovering instances are mirrored."""
    mirror_error: bool = False
    """Grafana rules only: also mirror instances in Grafana's `Error` state (`alertname: DatasourceError`, the rule in `rulename`)."""

    @field_validator("severity", mode="before")
    @classmethod
    def _severity(cls, v: object) -> object:
        if isinstance(v, str) and v.capitalize() in SEVERITIES:
            return v.capitalize()
        return v

    @property
    def interval(self) -> float:
        return self.every if self.every is not None else 30.0


class RuleFileConfig(StrictModel):
    path: str = Field(min_length=1)
    """A Prometheus rule file or glob, relative to this config file."""
    datasource: str | None = None
    """Datasource for its rules (optional when there is only one)."""


class WebhookConfig(StrictModel):
    default_severity: SeverityName = "Warning"
    """Severity of webhook and Alertmanager-API alerts without a `severity` label."""
    panels_from_annotations: bool = True
    """Capture the panels named by `grafana_dashboard_uid`/`grafana_panel_id` (or Grafana's `__dashboardUid__`/`__panelId__`, `panelURL`)."""
    panels: list[PanelConfig] = Field(default_factory=list)
    """Panels captured for every webhook alert (and every alert of `POST /api/v2/alerts`)."""
    resolve_timeout: Duration = 300.0
    """`POST /api/v2/alerts` (the Alertmanager API): an alert sent without `endsAt` resolves this long after it was last sent, like Alertmanager's `global.resolve_timeout`."""

    @field_validator("resolve_timeout")
    @classmethod
    def _positive_timeout(cls, v: float) -> float:
        if v <= 0:
            raise ValueError("must be > 0")
        return v

    @field_validator("default_severity", mode="before")
    @classmethod
    def _severity(cls, v: object) -> object:
        return RuleConfig._severity(v)
