"""``POST /api/v2/alerts`` bodies: Alertmanager API v2 ``postableAlerts`` → alerts, as Alertmanager reads them.

The body is a JSON array of ``{"labels", "annotations", "startsAt", "endsAt", "generatorURL"}``
(``prometheus/alertmanager`` ``api/v2/openapi.yaml`` ``postableAlert``; sent by Prometheus'
``notifier/sendloop.go``, vmalert, and Grafana's "Alertmanager" contact point,
``grafana/alerting`` ``receivers/alertmanager/v1/alertmanager.go``). It is checked in
Alertmanager's order, with its answers (``api/v2/api.go`` ``postAlertsHandler``, the go-swagger
binding in front of it, and ``alert/alert.go`` ``Validate``):

1. decoding (400 ``{"code": 400, "message": "parsing alerts body from \\"\\" failed, because …"}``):
   not JSON, not an array (``null`` is an empty one), an alert that is not an object, a label or
   annotation value that is not a string, a time that is not RFC 3339;
2. the schema (422, ``{"code": 602, "message": "0.labels in body is required"}``; an empty body is
   ``alerts in body is required``; a ``generatorURL`` that is not a URI is code 601);
3. each alert (400, the reasons as one JSON string joined by ``"; "``, as the installed
   Alertmanager 0.25 joins them): after ``startsAt`` defaults to ``endsAt`` or now and empty
   label values are dropped (``removeEmptyLabels``), ``start time must be before end time``,
   ``at least one label pair required``, ``invalid label set: invalid name ""``. Label names
   follow Alertmanager's default (UTF-8) mode: any non-empty name (``matcher/compat/parse.go``).
   The valid alerts of a body are kept even when others are refused (best effort, like
   ``postAlertsHandler``).

An alert without ``endsAt`` ends ``resolve_timeout`` after this POST unless it is posted again
(``Timeout``); one whose ``endsAt`` is not after now is resolved.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from sidecar.rules.sources.grafana import parse_time

from .payload import PayloadError

__all__ = ["AlertsApiError", "ApiAlert", "check_alerts", "decode_alerts"]

_PARSE = 'parsing alerts body from "" failed, because '
_URI = re.compile(r"(?:[A-Za-z][A-Za-z0-9+.-]*:|/)\S*")


class AlertsApiError(Exception):
    """The body is refused whole: ``status`` and the JSON ``body`` Alertmanager answers."""

    def __init__(self, status: int, body: Any) -> None:
        super().__init__(body if isinstance(body, str) else body.get("message", ""))
        self.status, self.body = status, body


@dataclass(frozen=True)
class ApiAlert:
    """One valid alert; times in unix seconds, ``ends_at`` always set (``timeout``: it was not)."""

    labels: dict[str, str]
    annotations: dict[str, str]
    starts_at: float
    ends_at: float
    timeout: bool
    generator_url: str = ""


@dataclass(frozen=True)
class _Raw:
    labels: dict[str, str]
    annotations: dict[str, str]
    starts_at: float | None
    ends_at: float | None
    generator_url: str


def decode_alerts(body: bytes, doc: Any | PayloadError) -> list[_Raw]:
    """Steps 1 and 2 on the decoded ``doc`` (or the decoder's error); raises ``AlertsApiError``."""
    if not body.strip():
        raise AlertsApiError(422, {"code": 602, "message": "alerts in body is required"})
    if isinstance(doc, PayloadError):
        raise AlertsApiError(400, {"code": 400, "message": _PARSE + str(doc)})
    if doc is None:
        return []
    if not isinstance(doc, list):
        raise AlertsApiError(400, {"code": 400, "message": _PARSE + f"{_kind(doc)} is not an array of alerts"})
    raws = [_decode(a, i) for i, a in enumerate(doc)]
    for i, (a, raw) in enumerate(zip(doc, raws, strict=True)):
        if a.get("labels") is None:
            raise AlertsApiError(422, {"code": 602, "message": f"{i}.labels in body is required"})
        if raw.generator_url and not _URI.fullmatch(raw.generator_url):
            message = f"{i}.generatorURL in body must be of type uri: {raw.generator_url!r}"
            raise AlertsApiError(422, {"code": 601, "message": message})
    return raws


def check_alerts(raws: list[_Raw], *, now: float, resolve_timeout: float) -> tuple[list[ApiAlert], str | None]:
    """Step 3: the valid alerts, and the reasons for the others (``None`` when all are valid)."""
    valid: list[ApiAlert] = []
    reasons: list[str] = []
    for raw in raws:
        starts, ends = raw.starts_at, raw.ends_at
        if starts is None:
            starts = ends if ends is not None else now
        timeout = ends is None
        if ends is None:
            ends = now + resolve_timeout
        labels = {k: v for k, v in raw.labels.items() if v != ""}
        reason = _invalid(labels, raw.annotations, starts, raw.ends_at)
        if reason is not None:
            reasons.append(reason)
            continue
        valid.append(ApiAlert(labels, dict(raw.annotations), starts, ends, timeout, raw.generator_url))
    return valid, ("; ".join(reasons) if reasons else None)


def _invalid(labels: dict[str, str], annotations: dict[str, str], starts: float, ends: float | None) -> str | None:
    if ends is not None and ends < starts:
        return "start time must be before end time"
    if not labels:
        return "at least one label pair required"
    for what, ls in (("invalid label set", labels), ("invalid annotations", annotations)):
        for k, v in ls.items():
            if k == "" or not _utf8(k):
                return f'{what}: invalid name "{k}"'
            if not _utf8(v):
                return f"{what}: invalid value {v!r}"
    return None


def _decode(a: Any, i: int) -> _Raw:
    if not isinstance(a, dict):
        raise AlertsApiError(400, {"code": 400, "message": _PARSE + f"alert {i}: {_kind(a)} is not an alert object"})
    return _Raw(
        labels=_label_set(a.get("labels"), f"alert {i}: labels"),
        annotations=_label_set(a.get("annotations"), f"alert {i}: annotations"),
        starts_at=_time(a.get("startsAt"), f"alert {i}: startsAt"),
        ends_at=_time(a.get("endsAt"), f"alert {i}: endsAt"),
        generator_url=_string(a.get("generatorURL"), f"alert {i}: generatorURL"),
    )


def _label_set(v: Any, where: str) -> dict[str, str]:
    if v is None:
        return {}
    if not isinstance(v, dict):
        raise AlertsApiError(400, {"code": 400, "message": _PARSE + f"{where}: {_kind(v)} is not an object"})
    for k, x in v.items():
        if not isinstance(x, str):
            raise AlertsApiError(400, {"code": 400, "message": _PARSE + f"{where}.{k}: {_kind(x)} is not a string"})
    return dict(v)


def _time(v: Any, where: str) -> float | None:
    if v is None or v == "":
        return None
    if isinstance(v, str):
        if v.startswith("0001-01-01"):
            return None  # Go's zero time: not set
        ts = parse_time(v)
        if ts is not None:
            return ts
    raise AlertsApiError(400, {"code": 400, "message": _PARSE + f"{where}: {v!r} is not an RFC 3339 time"})


def _string(v: Any, where: str) -> str:
    if v is None:
        return ""
    if not isinstance(v, str):
        raise AlertsApiError(400, {"code": 400, "message": _PARSE + f"{where}: {_kind(v)} is not a string"})
    return v


def _kind(v: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}.get(type(v), "a number")


def _utf8(s: str) -> bool:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate ("\\ud800"), which Go would not decode either
        return False
    return True
