"""``POST /alert/list`` of the Flashduty sandbox (flashduty-api.md 0.2, 3.1, 3.2).

- ``start_time``/``end_time`` (Unix seconds) are required, ``end_time >= start_time`` and the
  span is at most 31 days. The window is an overlap test: ``start_time <= end`` and
  ``last_time >= start``; with ``by_updated_at`` it is ``start <= updated_at <= end``.
- ``limit`` 1..100 (default 20); ``p`` from 1; ``p × limit`` over 10000 is a 400. A
  ``search_after_ctx`` cursor (opaque) replaces ``p``; the response has one only when
  ``has_next_page``. ``total`` is exact below 1000 and 1000 above.
- Order: ``orderby`` ``created_at`` (default) or ``updated_at``, descending unless ``asc``;
  ties broken by ``alert_id``.
- Items carry the documented fields and no ``alert_key`` (filter with ``alert_keys``).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from .flashduty_alerts import Alert
from .flashduty_http import invalid_parameter

MAX_SPAN_SECONDS = 31 * 86400
MAX_LIMIT = 100
DEFAULT_LIMIT = 20
MAX_PAGE_WINDOW = 10000
TOTAL_CAP = 1000
SEVERITY_FILTERS = ("Critical", "Warning", "Info", "Ok")
ORDERS = ("created_at", "updated_at")

Cursor = tuple[int, str]
T = TypeVar("T", int, str)


@dataclass(frozen=True)
class AlertQuery:
    start_time: int
    end_time: int
    p: int = 1
    limit: int = DEFAULT_LIMIT
    after: Cursor | None = None
    orderby: str = "created_at"
    asc: bool = False
    by_updated_at: bool = False
    is_active: bool | None = None
    ever_muted: bool | None = None
    severities: frozenset[str] | None = None
    channel_ids: frozenset[int] | None = None
    integration_ids: frozenset[int] | None = None
    alert_ids: frozenset[str] | None = None
    alert_keys: frozenset[str] | None = None

    def matches(self, alert: Alert) -> bool:
        if self.by_updated_at:
            in_window = self.start_time <= alert.updated_at <= self.end_time
        else:
            in_window = alert.start_time <= self.end_time and alert.last_time >= self.start_time
        checks = (
            in_window,
            self.is_active is None or alert.active == self.is_active,
            self.ever_muted is None or alert.ever_muted == self.ever_muted,
            self.severities is None or alert.alert_severity in self.severities,
            self.channel_ids is None or alert.integration.channel_id in self.channel_ids,
            self.integration_ids is None or alert.integration.integration_id in self.integration_ids,
            self.alert_ids is None or alert.alert_id in self.alert_ids,
            self.alert_keys is None or alert.alert_key in self.alert_keys,
        )
        return all(checks)

    def sort_key(self, alert: Alert) -> Cursor:
        return (getattr(alert, self.orderby), alert.alert_id)


def parse_query(body: Mapping[str, Any]) -> AlertQuery:
    start, end = _required_int(body, "start_time"), _required_int(body, "end_time")
    if end < start:
        raise invalid_parameter("end_time must not be before start_time")
    if end - start > MAX_SPAN_SECONDS:
        raise invalid_parameter("the time range must not exceed 31 days")
    limit = _int(body, "limit") or DEFAULT_LIMIT
    if not 1 <= limit <= MAX_LIMIT:
        raise invalid_parameter(f"limit must be between 1 and {MAX_LIMIT}")
    p = _int(body, "p") or 1
    if p < 1:
        raise invalid_parameter("p must be >= 1")
    orderby = body.get("orderby") or "created_at"
    if orderby not in ORDERS:
        raise invalid_parameter(f"orderby must be one of {', '.join(ORDERS)}")
    asc = bool(_bool(body, "asc"))
    after = _cursor(body.get("search_after_ctx"), orderby, asc)
    if after is None and p * limit > MAX_PAGE_WINDOW:
        raise invalid_parameter(f"p * limit must not exceed {MAX_PAGE_WINDOW}; use search_after_ctx")
    return AlertQuery(
        start_time=start,
        end_time=end,
        p=p,
        limit=limit,
        after=after,
        orderby=orderby,
        asc=asc,
        by_updated_at=bool(_bool(body, "by_updated_at")),
        is_active=_bool(body, "is_active"),
        ever_muted=_bool(body, "ever_muted"),
        severities=_severities(body.get("alert_severity")),
        channel_ids=_set(body, "channel_ids", int),
        integration_ids=_set(body, "integration_ids", int),
        alert_ids=_set(body, "alert_ids", str),
        alert_keys=_set(body, "alert_keys", str),
    )


def run_query(alerts: Iterable[Alert], query: AlertQuery) -> dict[str, Any]:
    matching = sorted((alert for alert in alerts if query.matches(alert)), key=query.sort_key, reverse=not query.asc)
    if query.after is not None:
        after = query.after
        remaining = [a for a in matching if (query.sort_key(a) > after if query.asc else query.sort_key(a) < after)]
    else:
        remaining = matching[(query.p - 1) * query.limit :]
    page, has_next = remaining[: query.limit], len(remaining) > query.limit
    data: dict[str, Any] = {
        "total": min(len(matching), TOTAL_CAP),
        "has_next_page": has_next,
        "items": [alert_item(alert) for alert in page],
    }
    if has_next:
        data["search_after_ctx"] = _encode_cursor(query, query.sort_key(page[-1]))
    return data


def alert_item(alert: Alert) -> dict[str, Any]:
    integration = alert.integration
    return {
        "alert_id": alert.alert_id,
        "integration_id": integration.integration_id,
        "channel_id": integration.channel_id,
        "account_id": integration.account_id,
        "title": alert.title,
        "alert_severity": alert.alert_severity,
        "alert_status": alert.alert_status,
        "start_time": alert.start_time,
        "last_time": alert.last_time,
        "end_time": alert.end_time,
        "labels": dict(alert.labels),
        "ever_muted": alert.ever_muted,
        "created_at": alert.created_at,
        "updated_at": alert.updated_at,
        "integration_name": integration.integration_name,
        "integration_type": integration.integration_type,
        "channel_name": integration.channel_name,
        "event_cnt": alert.event_cnt,
    }


def _required_int(body: Mapping[str, Any], name: str) -> int:
    value = _int(body, name)
    if value is None:
        raise invalid_parameter(f"{name} is required")
    return value


def _int(body: Mapping[str, Any], name: str) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise invalid_parameter(f"{name} must be a non-negative integer")
    return value


def _bool(body: Mapping[str, Any], name: str) -> bool | None:
    value = body.get(name)
    if value is not None and not isinstance(value, bool):
        raise invalid_parameter(f"{name} must be a boolean")
    return value


def _severities(value: Any) -> frozenset[str] | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise invalid_parameter("alert_severity must be a comma-separated string")
    names = frozenset(part.strip() for part in value.split(","))
    if not names <= set(SEVERITY_FILTERS):
        raise invalid_parameter(f"alert_severity values must be among {','.join(SEVERITY_FILTERS)}")
    return names


def _set(body: Mapping[str, Any], name: str, kind: type[T]) -> frozenset[T] | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(item, kind) and not isinstance(item, bool) for item in value):
        raise invalid_parameter(f"{name} must be an array of {kind.__name__}")
    return frozenset(value) if value else None


def _encode_cursor(query: AlertQuery, position: Cursor) -> str:
    raw = json.dumps([query.orderby, query.asc, position[0], position[1]], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _cursor(value: Any, orderby: str, asc: bool) -> Cursor | None:
    if value is None or value == "":
        return None
    try:
        if not isinstance(value, str):
            raise ValueError("not a string")
        raw = json.loads(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)))
        cursor_order, cursor_asc, sort_value, alert_id = raw
        if not isinstance(sort_value, int) or not isinstance(alert_id, str):
            raise ValueError("bad position")
    except (ValueError, TypeError, binascii.Error) as exc:
        raise invalid_parameter("search_after_ctx is not valid") from exc
    if (cursor_order, cursor_asc) != (orderby, asc):
        raise invalid_parameter("search_after_ctx does not belong to this orderby/asc")
    return (sort_value, alert_id)
