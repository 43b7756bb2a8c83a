"""Mirror Grafana-managed alerts: poll ``/api/prometheus/grafana/api/v1/rules``, on Grafana 10.4 to 12.

What is asked (``grafana/grafana`` ``pkg/services/ngalert/api/prometheus/api_prometheus.go``,
``GetStatesFromQuery``, ``PrepareRuleGroupStatuses[V2]``, ``filterRulesByState``):

* ``state=firing&state=recovering``: the instances Grafana (and its Alertmanager) count as firing.
  Grafana 12's ``keep_firing_for`` keeps an instance ``Recovering`` after its condition cleared;
  it still fires, so it must not be sent ``Ok`` early. Grafana 10.4 and 11 have no such state
  and answer 400 ``unknown state 'recovering'``: the source then asks for ``state=firing`` alone
  (those versions never report Recovering) and tries again an hour later (Grafana upgraded);
* ``group_limit`` (``GROUP_LIMIT`` groups a page), following ``groupNextToken`` until there is
  none: without ``group_limit`` Grafana sends every group in one answer, and it paginates only
  when asked. Grafana 10.4 ignores it (one page);
* NoData / Error instances, only for a rule with ``mirror_nodata`` / ``mirror_error``: a second,
  paginated query ``health=nodata&health=error`` (a state filter cannot select them: a rule whose
  only instance is NoData has the rule state ``inactive`` and is filtered out, see
  ``filterRulesByState``). Grafana 12 returns only the rules with such instances; 10.4 and 11
  ignore ``health`` and list every rule. They are sent as Grafana sends them to its Alertmanager
  (``pkg/services/ngalert/state/compat.go`` ``noDataAlert`` / ``errorAlert``): ``alertname``
  ``DatasourceNoData`` / ``DatasourceError``, the rule's name in ``rulename``.

Every mirrored instance becomes a ``Sample``: its labels (``alertname`` = the Grafana rule name
when absent, plus ``grafana_rule_uid``), its ``activeAt`` (Grafana has already applied ``for``),
the rule's annotations merged with the instance's (title ``summary``, description, panel
``__dashboardUid__`` / ``__panelId__``), and its value (``grafana_values.parse_value``: every text
form Grafana writes). State strings carry a reason (``Alerting (NoData)``, ``Alerting (Error)``,
``Recovering``): the state before the parenthesis decides. Pending and Normal are never mirrored.

Auth: the Grafana service-account token, or basic auth, sent only to ``grafana.url``.
"""

from __future__ import annotations

import json
import logging
import time
from datetime import datetime
from typing import Any

import aiohttp

from sidecar.config import GrafanaConfig
from sidecar.rules.engine import Sample, SourceError
from sidecar.rules.sources.grafana_values import parse_value

__all__ = ["GROUP_LIMIT", "RULES_PATH", "GrafanaRulesSource", "parse_rules_response", "parse_time"]

log = logging.getLogger(__name__)

RULES_PATH = "/api/prometheus/grafana/api/v1/rules"
GROUP_LIMIT = 100
RECOVERING_RETRY = 3600.0
_MAX_PAGES = 1000
_KINDS = {"alerting": "firing", "firing": "firing", "recovering": "firing", "nodata": "nodata", "error": "error"}
_RENAMED = {"nodata": "DatasourceNoData", "error": "DatasourceError"}


class GrafanaRulesSource:
    """Fetches the firing (and, when asked, NoData / Error) instances of Grafana-managed rules."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        grafana: GrafanaConfig,
        *,
        timeout: float = 10.0,
        nodata: bool = False,
        error: bool = False,
        group_limit: int = GROUP_LIMIT,
    ) -> None:
        self.session = session
        self.grafana = grafana
        self.timeout = timeout
        self.unhealthy = {k for k, on in (("nodata", nodata), ("error", error)) if on}
        self.group_limit = group_limit
        self.recovering = True  # Grafana knows the Recovering state (12 and later)
        self._recovering_retry_at = 0.0

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
        samples = await self._firing()
        if self.unhealthy:
            query = [("health", "nodata"), ("health", "error")]
            samples.extend(await self._pages(query, kinds=self.unhealthy))
        return samples

    async def _firing(self) -> list[Sample]:
        if not self.recovering and time.monotonic() >= self._recovering_retry_at:
            self.recovering = True  # Grafana may have been upgraded meanwhile
        if self.recovering:
            try:
                return await self._pages([("state", "firing"), ("state", "recovering")], kinds={"firing"})
            except _UnknownState:
                self.recovering = False
                self._recovering_retry_at = time.monotonic() + RECOVERING_RETRY
                log.info("grafana: no Recovering state before Grafana 12; asking for firing instances only")
        return await self._pages([("state", "firing")], kinds={"firing"})

    async def _pages(self, query: list[tuple[str, str]], *, kinds: set[str]) -> list[Sample]:
        samples: list[Sample] = []
        token: str | None = None
        for _ in range(_MAX_PAGES):
            params = [*query, ("group_limit", str(self.group_limit))]
            if token:
                params.append(("group_next_token", token))
            page, next_token = parse_rules_response(await self._get(params), kinds=kinds)
            samples.extend(page)
            if not next_token or next_token == token:
                return samples
            token = next_token
        raise SourceError(f"grafana: more than {_MAX_PAGES} pages of rules")

    async def _get(self, params: list[tuple[str, str]]) -> Any:
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
            error = str(doc.get("error", ""))
            if status == 400 and "unknown state" in error and "recovering" in error:
                raise _UnknownState(error)
            raise SourceError(f"grafana: HTTP {status}: {doc.get('errorType', 'error')}: {error}")
        return doc


class _UnknownState(SourceError):
    """Grafana before 12: ``state=recovering`` is a bad parameter."""


def parse_rules_response(doc: Any, *, kinds: set[str] | None = None) -> tuple[list[Sample], str | None]:
    """A rules API document → (samples of the instances of ``kinds``, next page token).

    ``kinds``: ``firing`` (Alerting, Recovering), ``nodata``, ``error``; default firing only."""
    wanted = kinds if kinds is not None else {"firing"}
    data = doc.get("data") if isinstance(doc, dict) else None
    if not isinstance(data, dict) or not isinstance(data.get("groups", []), list):
        raise SourceError("grafana: malformed rules response: data.groups is missing")
    samples: list[Sample] = []
    for group in data.get("groups") or []:
        for rule in (group or {}).get("rules") or []:
            if isinstance(rule, dict) and rule.get("type", "alerting") == "alerting":
                samples.extend(_rule_samples(rule, wanted))
    token = data.get("groupNextToken") or None
    return samples, (str(token) if token else None)


def instance_kind(state: Any) -> str | None:
    """``firing`` / ``nodata`` / ``error`` for an instance's state text (reason ignored), else None."""
    base = str(state or "").split("(", 1)[0].strip().lower()
    return _KINDS.get(base)


def _rule_samples(rule: dict[str, Any], wanted: set[str]) -> list[Sample]:
    name = str(rule.get("name") or "")
    uid = str(rule.get("uid") or "")
    rule_ann = _str_map(rule.get("annotations"))
    out: list[Sample] = []
    for alert in rule.get("alerts") or []:
        if not isinstance(alert, dict):
            continue
        kind = instance_kind(alert.get("state"))
        if kind is None or kind not in wanted:
            continue
        labels = _str_map(alert.get("labels"))
        if name:
            labels.setdefault("alertname", name)
        if kind in _RENAMED:
            if "alertname" in labels:
                labels["rulename"] = labels["alertname"]
            labels["alertname"] = _RENAMED[kind]
        if uid:
            labels.setdefault("grafana_rule_uid", uid)
        out.append(
            Sample(
                labels=labels,
                value=parse_value(alert.get("value")),
                active_at=parse_time(alert.get("activeAt")),
                annotations={**rule_ann, **_str_map(alert.get("annotations"))},
            )
        )
    return out


def _str_map(v: Any) -> dict[str, str]:
    return {str(k): str(x) for k, x in v.items()} if isinstance(v, dict) else {}


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
