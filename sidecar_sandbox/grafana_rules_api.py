"""The sandbox's ``GET /api/prometheus/grafana/api/v1/rules``, answered as Grafana 10.4, 11.x or 12.x does.

Follows ``grafana/grafana`` ``pkg/services/ngalert/api/prometheus/api_prometheus.go`` in the three
shapes it had (``RuleBook.version``, by major version):

* ``state``: ``GetStatesFromQuery``; ``recovering`` exists from 12 only, before that it is a 400
  ``bad_data`` ``unknown state 'recovering'`` (any unknown state is). The filter applies to the
  instances (by state, the reason ignored) and to the rules by their own state
  (``filterRulesByState``: a rule in ``inactive`` is dropped unless ``normal`` is asked for,
  so a rule whose only instance is NoData never comes with ``state=nodata``);
* ``health`` (``GetHealthFromQuery``, 12 only; ignored before): keeps rules of that health,
  ``nodata`` / ``error`` when one of their instances is NoData / Error (``StatesToRuleStatus``);
* ``group_limit`` / ``group_next_token`` (11 and 12; 10.4 ignores them): groups sorted by folder
  and name, the token base64url of ``folder/group`` (``getRuleGroupNextToken``), ``groupNextToken``
  only when a page was cut. 10.4 and 11 list a group even when filters emptied it, 12 drops it;
* ``dashboard_uid`` / ``panel_id`` / ``rule_uid`` filters, ``panel_id`` needing ``dashboard_uid``;
* rules carry ``keepFiringFor`` from 12 on.
"""

from __future__ import annotations

import base64
import time
from typing import TYPE_CHECKING, Any

from multidict import MultiMapping

from sidecar_sandbox.grafana_rules import rfc3339

if TYPE_CHECKING:
    from sidecar_sandbox.grafana_rules import Rule, RuleBook

__all__ = ["rules_response"]

_STATES = {
    "normal": "Normal",
    "inactive": "Normal",
    "alerting": "Alerting",
    "firing": "Alerting",
    "pending": "Pending",
    "nodata": "NoData",
    "error": "Error",
}
_RULE_STATES = {"inactive": "Normal", "firing": "Alerting", "pending": "Pending", "recovering": "Recovering"}
_HEALTH = {"ok", "error", "nodata", "unknown"}


def rules_response(book: RuleBook, query: MultiMapping[str]) -> dict[str, Any]:
    """The ``/rules`` body for ``query``; ``ValueError`` (answered 400 ``bad_data``) for a bad parameter."""
    states = _states(book, query)
    health = _health(book, query)
    dashboard_uid = query.get("dashboard_uid") or ""
    panel_raw = (query.get("panel_id") or "").strip()
    if panel_raw and not panel_raw.lstrip("-").isdigit():
        raise ValueError(f"invalid panel_id: strconv.ParseInt: parsing {panel_raw!r}: invalid syntax")
    panel_id = int(panel_raw) if panel_raw else 0
    if panel_id and not dashboard_uid:
        raise ValueError("panel_id must be set with dashboard_uid")
    rule_uids = set(query.getall("rule_uid", []))
    limit = _int(query.get("group_limit"), -1) if book.major >= 11 else -1
    token = (query.get("group_next_token") or "") if book.major >= 11 else ""

    groups: dict[tuple[str, str], list[Rule]] = {}
    for rule in book.rules.values():
        if dashboard_uid and rule.dashboard_uid != dashboard_uid:
            continue
        if panel_id and rule.panel_id != panel_id:
            continue
        if rule_uids and rule.uid not in rule_uids:
            continue
        groups.setdefault((rule.folder, rule.group), []).append(rule)

    out: list[dict[str, Any]] = []
    next_token = ""
    for (folder, group), rules in sorted(groups.items()):
        key = _token(folder, group)
        if token and _decoded(key) < _decoded(token):
            continue
        if limit > -1 and len(out) == limit:
            next_token = key
            break
        kept = [_rule_json(book, r, states) for r in rules if _keep(book, r, states, health)]
        if kept or book.major < 12:
            out.append(_group_json(rules[0], kept))
    data: dict[str, Any] = {"groups": out}
    if next_token:
        data["groupNextToken"] = next_token
    return {"status": "success", "data": data}


def _keep(book: RuleBook, rule: Rule, states: set[str], health: set[str]) -> bool:
    if states and _RULE_STATES.get(book.state(rule.uid)) not in states:
        return False
    return not health or book.health(rule.uid) in health


def _rule_json(book: RuleBook, rule: Rule, states: set[str]) -> dict[str, Any]:
    alerts = [book.alert_json(rule, i) for i in book.instances(rule.uid) if not states or i.state in states]
    data: dict[str, Any] = {
        "state": book.state(rule.uid),
        "name": rule.name,
        "uid": rule.uid,
        "folderUid": rule.folder_uid,
        "query": rule.query,
        "queriedDatasourceUIDs": ["sandbox-prometheus"],
        "duration": rule.duration,
        "annotations": rule.annotations(),
        "labels": {"severity": rule.severity},
        "health": book.health(rule.uid),
        "lastError": "",
        "type": "alerting",
        "lastEvaluation": rfc3339(time.time_ns()),
        "evaluationTime": 0.002,
        "isPaused": False,
        "alerts": alerts,
    }
    if book.major >= 12:
        data["keepFiringFor"] = rule.keep_firing_for
    firing = [i.active_at_ns for i in book.instances(rule.uid) if i.state == "Alerting"]
    if firing:
        data["activeAt"] = rfc3339(min(firing))
    return data


def _group_json(rule: Rule, rules: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "name": rule.group,
        "file": rule.folder,
        "folderUid": rule.folder_uid,
        "interval": 10,
        "lastEvaluation": rfc3339(time.time_ns()),
        "evaluationTime": 0.004,
        "rules": rules,
    }


def _states(book: RuleBook, query: MultiMapping[str]) -> set[str]:
    known = dict(_STATES, **({"recovering": "Recovering"} if book.major >= 12 else {}))
    states = set()
    for raw in query.getall("state", []):
        if raw.lower() not in known:
            raise ValueError(f"unknown state '{raw.lower()}'")
        states.add(known[raw.lower()])
    return states


def _health(book: RuleBook, query: MultiMapping[str]) -> set[str]:
    if book.major < 12:
        return set()  # not a parameter before Grafana 12: ignored
    health = {h.lower() for h in query.getall("health", [])}
    for h in health - _HEALTH:
        raise ValueError(f"unknown health '{h}'")
    return health


def _token(folder: str, group: str) -> str:
    return base64.urlsafe_b64encode(f"{folder}/{group}".encode()).decode()


def _decoded(token: str) -> str:
    try:
        return base64.urlsafe_b64decode(token.encode()).decode()
    except ValueError:
        return ""


def _int(raw: str | None, default: int) -> int:
    try:
        return int(raw) if raw else default
    except ValueError:
        return default
