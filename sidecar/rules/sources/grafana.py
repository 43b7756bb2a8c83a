"""Mirror Grafana-managed alerts: poll ``/api/prometheus/grafana/api/v1/rules?state=firing``.

Every firing alert instance becomes a ``Sample``: its labels (``alertname`` = the Grafana rule name
when absent, plus ``grafana_rule_uid``), its ``activeAt`` (Grafana has already applied ``for``),
and the rule's annotations merged with the instance's, from which the engine takes the title
(``summary``), description and panel (``__dashboardUid__`` / ``__panelId__``). The value is the
first number of Grafana's ``value`` text (``B0: 1.2e+01, C0: 1e+00``), NaN when there is none.

Auth: the Grafana service-account token, or basic auth, sent only to ``grafana.url``.
"""

from __future__ import annotations

import json
import math
import re
from datetime import datetime
from typing import Any

import aiohttp

from sidecar.config import GrafanaConfig
from sidecar.rules.engine import Sample, SourceError

__all__ = ["RULES_PATH", "GrafanaRulesSource", "parse_rules_response", "parse_time"]

RULES_PATH = "/api/prometheus/grafana/api/v1/rules"
_FIRING_STATES = ("alerting", "firing", "recovering")
_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*(?:[eE][-+]?\d+)?|\.\d+|Inf|NaN)")
_MAX_PAGES = 100


class GrafanaRulesSource:
    """Fetches the firing instances of every Grafana-managed rule."""

    def __init__(self, session: aiohttp.ClientSession, grafana: GrafanaConfig, *, timeout: float = 10.0) -> None:
        self.session = session
        self.grafana = grafana
        self.timeout = timeout

    def _headers(self) -> dict[str, str]:
        headers = {"Accept": "application/json", "X-Grafana-Org-Id": str(self.grafana.org_id)}
        g = self.grafana
        if g.token is not None:
            headers["Authorization"] = f"Bearer {g.token.get_secret_value()}"
        elif g.basic_auth is not None:
            auth = aiohttp.encode_basic_auth(g.basic_auth.username, g.basic_auth.password.get_secret_value())
            headers["Authorization"] = auth
        return headers

    async def fetch(self, ts: float) -> list[Sample]:
        samples: list[Sample] = []
        token: str | None = None
        for _ in range(_MAX_PAGES):
            params = {"state": "firing"}
            if token:
                params["group_next_token"] = token
            doc = await self._get(params)
            page, token = parse_rules_response(doc)
            samples.extend(page)
            if not token:
                return samples
        raise SourceError(f"grafana: more than {_MAX_PAGES} pages of rules")

    async def _get(self, params: dict[str, str]) -> Any:
        try:
            async with self.session.get(
                self.grafana.url + RULES_PATH,
                params=params,
                headers=self._headers(),
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                allow_redirects=False,
            ) as resp:
                body = await resp.read()
                status = resp.status
        except TimeoutError:
            raise SourceError(f"grafana: rules API timed out after {self.timeout:g}s") from None
        except aiohttp.ClientError as e:
            raise SourceError(f"grafana: request failed: {type(e).__name__}") from None
        if status in (401, 403):
            raise SourceError(f"grafana: HTTP {status}: check grafana.token (needs alert rules read)")
        try:
            doc = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            raise SourceError(f"grafana: HTTP {status}: response is not JSON") from None
        if not isinstance(doc, dict):
            raise SourceError(f"grafana: HTTP {status}: not a rules API response")
        if doc.get("status") == "error" or not 200 <= status < 300:
            raise SourceError(f"grafana: HTTP {status}: {doc.get('errorType', 'error')}: {doc.get('error', '')}")
        return doc


def parse_rules_response(doc: Any) -> tuple[list[Sample], str | None]:
    """A rules API document → (samples of the firing instances, next page token)."""
    data = doc.get("data") if isinstance(doc, dict) else None
    if not isinstance(data, dict) or not isinstance(data.get("groups", []), list):
        raise SourceError("grafana: malformed rules response: data.groups is missing")
    samples: list[Sample] = []
    for group in data.get("groups") or []:
        for rule in (group or {}).get("rules") or []:
            if isinstance(rule, dict) and rule.get("type", "alerting") == "alerting":
                samples.extend(_rule_samples(rule))
    token = data.get("groupNextToken") or None
    return samples, (str(token) if token else None)


def _rule_samples(rule: dict[str, Any]) -> list[Sample]:
    name = str(rule.get("name") or "")
    uid = str(rule.get("uid") or "")
    rule_ann = _str_map(rule.get("annotations"))
    out: list[Sample] = []
    for alert in rule.get("alerts") or []:
        if not isinstance(alert, dict):
            continue
        if not str(alert.get("state", "")).strip().lower().startswith(_FIRING_STATES):
            continue
        labels = _str_map(alert.get("labels"))
        if name:
            labels.setdefault("alertname", name)
        if uid:
            labels.setdefault("grafana_rule_uid", uid)
        out.append(
            Sample(
                labels=labels,
                value=_first_number(alert.get("value")),
                active_at=parse_time(alert.get("activeAt")),
                annotations={**rule_ann, **_str_map(alert.get("annotations"))},
            )
        )
    return out


def _str_map(v: Any) -> dict[str, str]:
    return {str(k): str(x) for k, x in v.items()} if isinstance(v, dict) else {}


def _first_number(v: Any) -> float:
    if isinstance(v, int | float):
        return float(v)
    if isinstance(v, str):
        m = _NUMBER.search(v.split(":", 1)[-1] if ":" in v else v)
        if m:
            try:
                return float(m.group(0))
            except ValueError:
                pass
    return math.nan


def parse_time(v: Any) -> float | None:
    """RFC 3339 (nanoseconds allowed) → unix seconds; Go's zero time and junk → ``None``."""
    if not isinstance(v, str) or not v or v.startswith("0001-01-01"):
        return None
    try:
        dt = datetime.fromisoformat(v)
    except ValueError:
        return None
    if dt.tzinfo is None:
        return None
    return dt.timestamp()
