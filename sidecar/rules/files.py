"""Prometheus rule files (``rule_files:`` in the config) → plain ``rules`` entries (source: prometheus).

Each alerting rule of each group becomes one entry, as if written under ``rules:``: ``interval`` of
the group → ``every``; ``for``, ``keep_firing_for``, labels (group labels, then the rule's) and
annotations kept; ``severity`` label → severity (else Warning); ``summary`` / ``description``
annotations → title / description; panels from ``grafana_dashboard_uid`` / ``grafana_panel_id``.
Recording rules are skipped. The entries are then validated with the rest of the config, and every
problem found here is appended to the caller's list, by ``rule_files[i]`` and file.
"""

from __future__ import annotations

import glob
import os
from pathlib import Path
from typing import Any

import yaml

from sidecar.config.checks import check_templates, panel_templates
from sidecar.model import SEVERITIES
from sidecar.rules.annotations import panels_from_annotations

__all__ = ["rules_from_rule_files"]


def rules_from_rule_files(entries: list[Any], base: Path, problems: list[str]) -> list[dict[str, Any]]:
    """The rules of every ``rule_files`` entry (a path or glob, or ``{path, datasource}``), relative to ``base``."""
    rules: list[dict[str, Any]] = []
    for i, entry in enumerate(entries):
        if isinstance(entry, str):
            entry = {"path": entry}
        if not isinstance(entry, dict) or not isinstance(entry.get("path"), str):
            continue  # reported by the model validation
        pattern = entry["path"]
        full = pattern if os.path.isabs(pattern) else str(base / pattern)
        files = sorted(glob.glob(full))
        if not files:
            problems.append(f"rule_files[{i}].path: no file matches {pattern!r}")
            continue
        for f in files:
            rules.extend(_rules_from_file(Path(f), entry.get("datasource"), f"rule_files[{i}]", problems))
    return rules


def _rules_from_file(path: Path, datasource: str | None, p: str, problems: list[str]) -> list[dict[str, Any]]:
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as e:
        problems.append(f"{p}: cannot read {path.name}: {e}")
        return []
    groups = doc.get("groups") if isinstance(doc, dict) else None
    if not isinstance(groups, list):
        problems.append(f"{p}: {path.name}: expected a Prometheus rule file with 'groups:'")
        return []
    out: list[dict[str, Any]] = []
    for gi, group in enumerate(groups):
        if not isinstance(group, dict):
            continue
        for ri, r in enumerate(group.get("rules") or []):
            if not isinstance(r, dict) or "alert" not in r:
                continue  # recording rules are not ours
            where = f"{p}: {path.name} groups[{gi}].rules[{ri}]"
            try:
                out.append(_prom_rule(r, group, datasource, where, problems))
            except (KeyError, TypeError, ValueError) as e:
                problems.append(f"{where}: {e}")
    return out


def _prom_rule(
    r: dict[str, Any], group: dict[str, Any], datasource: str | None, where: str, problems: list[str]
) -> dict[str, Any]:
    labels = {**(group.get("labels") or {}), **(r.get("labels") or {})}
    labels = {str(k): str(v) for k, v in labels.items()}
    ann = {str(k): str(v) for k, v in (r.get("annotations") or {}).items()}
    severity = labels.get("severity", "Warning")
    try:
        panels = panels_from_annotations(ann, strict=True)
    except ValueError as e:
        problems.append(f"{where}: {e}")
        panels = []
    rule: dict[str, Any] = {
        "name": str(r["alert"]),
        "source": "prometheus",
        "expr": str(r["expr"]),
        "every": group.get("interval", "30s"),
        "for": r.get("for", "0s"),
        "keep_firing_for": r.get("keep_firing_for", "0s"),
        "severity": severity if severity.capitalize() in SEVERITIES else "Warning",
        "title": ann.get("summary") or str(r["alert"]),
        "description": ann.get("description", ""),
        "labels": labels,
        "annotations": ann,
        "panels": [p.model_dump(by_alias=True, exclude_defaults=True) for p in panels],
    }
    if datasource is not None:
        rule["datasource"] = datasource
    # title and description are the summary / description annotations: checked as annotations
    templated = [(f"{where}.labels.{k}", v) for k, v in labels.items()]
    templated += [(f"{where}.annotations.{k}", v) for k, v in ann.items()]
    templated += panel_templates(panels, where)
    problems.extend(check_templates(templated))
    return rule
