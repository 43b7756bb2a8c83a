"""Checks across fields and sections, once every section has been parsed on its own.

Datasource names unique, rule names unique and not reserved (``RESERVED_RULE_NAMES``), each rule
given what its source needs and nothing it ignores (``expr``, ``datasource``, ``cron``, ``every``,
``for``), cron expressions valid in ``grafana.timezone``, every template (title, description, labels,
annotations, panel vars; of ``rule_files`` rules too, and of the webhook's panels) compiled;
``server.webhook_token`` set with ``ha.mode: kubernetes`` (it guards ``POST /ha/events``). They run even when other parts of the
file failed, on every rule that parsed, so that all problems are reported at once.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from sidecar.config.rule_schema import PanelConfig, RuleConfig
from sidecar.config.schema import Config
from sidecar.config.values import format_duration
from sidecar.model import RESERVED_RULE_NAMES

__all__ = ["check_templates", "cross_checks", "panel_templates"]


def cross_checks(raw: dict[str, Any], cfg: Config | None, *, own_rules: int | None = None) -> list[str]:
    """Checks across fields; run even when other parts failed, on every rule that parsed.

    The rules after the first ``own_rules`` came from ``rule_files``, whose templates were checked
    (and reported by file) when they were read.
    """
    problems: list[str] = []
    raw_ds: list[Any] = raw["datasources"] if isinstance(raw.get("datasources"), list) else []
    ds_names = [d.get("name") for d in raw_ds if isinstance(d, dict)]
    for i, name in enumerate(ds_names):
        if name is not None and ds_names.index(name) != i:
            problems.append(f"datasources[{i}].name: duplicate datasource name {name!r}")
    if cfg is not None:
        for i, d in enumerate(cfg.datasources):
            if d.bearer_token is not None and d.basic_auth is not None:
                problems.append(f"datasources[{i}]: set either bearer_token or basic_auth, not both")
    if cfg is not None and cfg.ha.mode == "kubernetes" and cfg.server.webhook_token is None:
        problems.append(
            "server.webhook_token: required with ha.mode: kubernetes (replicas forward alerts to the"
            " leader's POST /ha/events with it; without it anyone reaching the port could inject alerts)"
        )
    tz = cfg.grafana.timezone if cfg is not None else "UTC"
    raw_rules: list[Any] = raw["rules"] if isinstance(raw.get("rules"), list) else []
    names: dict[str, int] = {}
    for i, r in enumerate(raw_rules):
        p = f"rules[{i}]"
        name = r.get("name") if isinstance(r, dict) else None
        if isinstance(name, str) and name in names:
            problems.append(f"{p}.name: duplicate rule name {name!r} (also rules[{names[name]}])")
        elif isinstance(name, str):
            names[name] = i
        try:
            rule = cfg.rules[i] if cfg is not None else RuleConfig.model_validate(r)
        except ValidationError:
            continue  # already reported
        if rule.name in RESERVED_RULE_NAMES:
            problems.append(
                f"{p}.name: {rule.name!r} is reserved for alerts received on the webhook or the Alertmanager API"
            )
        problems.extend(_check_rule(rule, p, [n for n in ds_names if isinstance(n, str)], tz))
        if own_rules is None or i < own_rules:
            problems.extend(check_templates(_rule_templates(rule, p)))
    if cfg is not None:
        problems.extend(check_templates(panel_templates(cfg.webhook.panels, "webhook")))
    return problems


def _rule_templates(rule: RuleConfig, p: str) -> list[tuple[str, str]]:
    """(YAML path, template) of every template of ``rule``."""
    out: list[tuple[str, str]] = []
    if rule.title is not None:
        out.append((f"{p}.title", rule.title))
    out.append((f"{p}.description", rule.description))
    out.extend((f"{p}.labels.{k}", v) for k, v in rule.labels.items())
    out.extend((f"{p}.annotations.{k}", v) for k, v in rule.annotations.items())
    out.extend(panel_templates(rule.panels, p))
    return out


def panel_templates(panels: list[PanelConfig], p: str) -> list[tuple[str, str]]:
    """``(YAML path, template)`` of every panel variable of ``panels``, under ``p``."""
    return [(f"{p}.panels[{j}].vars.{k}", v) for j, panel in enumerate(panels) for k, v in panel.vars.items()]


def check_templates(templates: list[tuple[str, str]]) -> list[str]:
    """``PATH: template syntax error: …`` for each (YAML path, template) that does not compile."""
    # imported here: the rules package imports the config schema, which must load first
    from sidecar.rules.templates import TemplateEngine

    engine = TemplateEngine()
    problems = []
    for path, source in templates:
        err = engine.check(source)
        if err is not None:
            for opening, closing in (("{{", "}}"), ("{%", "%}")):
                if source.count(opening) > source.count(closing):
                    err = f"a {opening} without its {closing} ({err})"
                    break
            problems.append(f"{path}: template syntax error: {err}")
    return problems


def _check_rule(rule: RuleConfig, p: str, ds_names: list[str], tz: str) -> list[str]:
    problems: list[str] = []
    if rule.every is not None and rule.every < 1:
        problems.append(f"{p}.every: must be ≥ 1s (got {format_duration(rule.every)})")
    if rule.source == "prometheus":
        if not rule.expr:
            problems.append(f"{p}.expr: required for a prometheus rule")
        if rule.datasource is None:
            if len(ds_names) != 1:
                problems.append(f"{p}.datasource: required (there are {len(ds_names)} datasources)")
        elif rule.datasource not in ds_names:
            known = ", ".join(ds_names) or "none defined"
            problems.append(f"{p}.datasource: unknown datasource {rule.datasource!r} (known: {known})")
        if rule.cron is not None:
            problems.append(f"{p}.cron: only schedule rules take a cron; use every")
    elif rule.source == "grafana":
        for key in ("expr", "datasource", "cron"):
            if getattr(rule, key) is not None:
                problems.append(f"{p}.{key}: not used by a grafana rule (it mirrors Grafana's own rules)")
        if rule.for_:
            problems.append(f"{p}.for: not used by a grafana rule (Grafana's own pending period applies)")
    else:  # schedule
        if (rule.cron is None) == (rule.every is None):
            problems.append(f"{p}: a schedule rule needs exactly one of cron or every")
        if rule.cron is not None:
            err = _check_cron(rule.cron, tz)
            if err:
                problems.append(f"{p}.cron: {err}")
        if not rule.panels:
            problems.append(f"{p}.panels: a schedule rule needs at least one panel to capture")
        if rule.expr is not None or rule.datasource is not None:
            problems.append(f"{p}: a schedule rule takes no expr or datasource")
        if rule.for_:
            problems.append(f"{p}.for: not used by a schedule rule (a report fires when it is due)")
    if rule.source != "grafana":
        for key in ("mirror_nodata", "mirror_error"):
            if getattr(rule, key):
                problems.append(f"{p}.{key}: only a grafana rule mirrors Grafana's NoData / Error instances")
    if rule.source != "schedule" and rule.for_ < 0:
        problems.append(f"{p}.for: must be ≥ 0")
    return problems


def _check_cron(expr: str, tz: str) -> str | None:
    from apscheduler.triggers.cron import CronTrigger

    if len(expr.split()) != 5:
        return f"must have 5 fields (minute hour day month weekday), got {expr!r}"
    try:
        CronTrigger.from_crontab(expr, timezone=tz if tz != "browser" else "UTC")
    except ValueError as e:
        return f"invalid cron expression {expr!r}: {e}"
    return None
