"""Webhook payloads: Alertmanager (``version "4"``) and Grafana (``version "1"``) → validated alerts.

Both senders post the same shape: ``{"version", "alerts": [{"status", "labels", "annotations",
"startsAt", "endsAt", "fingerprint", ...}]}`` (``prometheus/alertmanager`` ``notify/webhook``,
``grafana/alerting`` ``receivers/webhook/v1/webhook.go`` ``webhookMessage``); Grafana adds
``panelURL`` / ``dashboardURL``, ``values`` (the first one is the alert's ``$value``) and
``valueString`` (its evaluation string, read when ``values`` is empty) and ``orgId`` (the org the
alert's panels are captured in, see ``_org``). ``status`` is ``firing`` or
``resolved``; ``startsAt`` is RFC 3339 (Go's zero time ``0001-01-01…`` counts as missing). A missing
``fingerprint`` is derived from the labels, so a sender without one still diffs correctly.

Grafana 12's custom payload templates (``receivers/webhook/v1`` ``Payload.Template``) send
whatever the template builds, without ``version``: an object whose ``alerts`` keep the alert shape
is accepted (``version`` ``""``, logged as a custom payload); a JSON array (an "Alertmanager-like"
template, or an Alertmanager contact point pointed at this URL) and an object without ``alerts``
are refused with a message naming the integration to use instead.

Anything else is a ``PayloadError`` whose message names the JSON path, e.g.
``alerts[0].status: must be firing or resolved`` (answered as 400).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from sidecar.rules.sources.grafana import parse_time
from sidecar.rules.sources.grafana_values import parse_value

__all__ = ["VERSIONS", "PayloadError", "WebhookAlertIn", "parse_payload"]

VERSIONS = {"4": "Alertmanager", "1": "Grafana", "": "Grafana custom payload"}

_ARRAY = (
    'body: a JSON array is an Alertmanager API v2 body (Prometheus, vmalert, Grafana\'s "Alertmanager" contact'
    " point): send it to the sidecar's /api/v2/alerts instead (in Grafana: a contact point of type Alertmanager"
    " with the URL http://<sidecar>:9464), or use the Webhook contact point without a custom payload"
)
_NO_ALERTS = (
    'version: missing, and no "alerts" list: this looks like a custom payload template of Grafana\'s Webhook'
    ' contact point; remove the custom payload (the default one carries version "1") or keep "alerts" in it,'
    " or use a contact point of type Alertmanager with the URL http://<sidecar>:9464"
)


class PayloadError(ValueError):
    """The body is not a webhook payload we understand; the message names the JSON path."""


@dataclass(frozen=True)
class WebhookAlertIn:
    """One alert of a payload, validated."""

    status: Literal["firing", "resolved"]
    labels: dict[str, str]
    annotations: dict[str, str]
    fingerprint: str
    starts_at: str
    starts_ts: float | None
    ends_ts: float | None
    panel_url: str = ""
    dashboard_url: str = ""
    value: float = math.nan
    org_id: int | None = None  # the Grafana org of the alert, when it says (see _org)


def parse_payload(doc: Any) -> tuple[str, list[WebhookAlertIn]]:
    """The decoded JSON body → (version, alerts); raises ``PayloadError``."""
    if isinstance(doc, list):
        raise PayloadError(_ARRAY)
    if not isinstance(doc, dict):
        raise PayloadError("body: must be a JSON object")
    version = doc.get("version")
    if version is None:
        if not isinstance(doc.get("alerts"), list):
            raise PayloadError(_NO_ALERTS)
        version = ""  # a custom payload template that kept the alerts
    if not isinstance(version, str) or version not in VERSIONS:
        raise PayloadError(
            f'version: unsupported webhook version {version!r} (expected "4" from Alertmanager or "1" from Grafana)'
        )
    alerts = doc.get("alerts")
    if not isinstance(alerts, list):
        raise PayloadError("alerts: must be a list")
    top_org = _org_value(doc.get("orgId"))
    return version, [_parse_alert(a, f"alerts[{i}]", top_org) for i, a in enumerate(alerts)]


def _org_value(v: Any) -> int | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, int):
        return v if v > 0 else None
    if isinstance(v, str) and v.strip().isdigit() and int(v) > 0:
        return int(v)
    return None


def _org(a: dict[str, Any], annotations: Mapping[str, str], top: int | None) -> int | None:
    """The alert's Grafana org: ``orgId`` of its ``panelURL`` / ``dashboardURL``, else its own
    ``orgId``, else the ``__orgId__`` annotation, else the payload's ``orgId`` (grafana/alerting
    receivers/webhook/v1/webhook.go ``webhookMessage.OrgID``)."""
    for key in ("panelURL", "dashboardURL"):
        url = a.get(key)
        if isinstance(url, str) and url:
            m = re.search(r"[?&]orgId=(\d+)", url)
            if m and int(m.group(1)) > 0:
                return int(m.group(1))
    return _org_value(a.get("orgId")) or _org_value(annotations.get("__orgId__")) or top


def _parse_alert(a: Any, p: str, top_org: int | None = None) -> WebhookAlertIn:
    if not isinstance(a, dict):
        raise PayloadError(f"{p}: must be an object")
    status = a.get("status")
    if status not in ("firing", "resolved"):
        raise PayloadError(f"{p}.status: must be firing or resolved (got {status!r})")
    labels = _str_map(a.get("labels"), f"{p}.labels", required=True)
    annotations = _str_map(a.get("annotations"), f"{p}.annotations", required=False)
    starts_at = a.get("startsAt") or ""
    if not isinstance(starts_at, str):
        raise PayloadError(f"{p}.startsAt: must be an RFC 3339 time")
    starts_ts = parse_time(starts_at)
    if starts_at and starts_ts is None and not starts_at.startswith("0001-01-01"):
        raise PayloadError(f"{p}.startsAt: must be an RFC 3339 time (got {starts_at!r})")
    ends_ts = parse_time(a.get("endsAt"))
    fingerprint = a.get("fingerprint")
    if fingerprint is None or fingerprint == "":
        fingerprint = _fingerprint(labels)
    elif not isinstance(fingerprint, str):
        raise PayloadError(f"{p}.fingerprint: must be a string")
    values = a.get("values")
    value = math.nan
    if isinstance(values, dict) and values:
        first = next(iter(values.values()))
        if isinstance(first, int | float) and not isinstance(first, bool):
            value = float(first)
    elif a.get("valueString"):
        value = parse_value(a.get("valueString"))
    return WebhookAlertIn(
        status=status,
        labels=labels,
        annotations=annotations,
        fingerprint=fingerprint,
        starts_at=starts_at,
        starts_ts=starts_ts,
        ends_ts=ends_ts,
        panel_url=_opt_str(a.get("panelURL")),
        dashboard_url=_opt_str(a.get("dashboardURL")),
        value=value,
        org_id=_org(a, annotations, top_org),
    )


def _opt_str(v: Any) -> str:
    return v if isinstance(v, str) else ""


def _str_map(v: Any, p: str, *, required: bool) -> dict[str, str]:
    if v is None and not required:
        return {}
    if not isinstance(v, dict):
        raise PayloadError(f"{p}: must be an object of strings")
    for k, x in v.items():
        if not isinstance(x, str):
            raise PayloadError(f"{p}.{k}: must be a string (got {type(x).__name__})")
    return dict(v)


def _fingerprint(labels: Mapping[str, str]) -> str:
    return hashlib.sha256(json.dumps(sorted(labels.items())).encode()).hexdigest()[:16]
