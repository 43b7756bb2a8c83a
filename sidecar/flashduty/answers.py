"""Reading one Flashduty answer: the JSON envelope → the body, or the error it means.

Flashduty answers ``{"request_id": ..., "data": {...}}`` or ``{"request_id": ..., "error":
{"code": ..., "message": ...}}``, and an error may ride on a 2xx. The mapping:

* 2xx without an ``error`` code (``""``, ``"0"`` and ``"OK"`` count as none) → the body;
  a 2xx whose body is not Flashduty's envelope (HTML, truncated JSON, not an object, or an object
  without ``data``: the OpenAPI ``SuccessEnvelope`` requires it) → a retryable ``FlashdutyError``
  whose message says what came back (a proxy, a captive portal, a connection cut short);
* 429 or ``RequestTooFrequently`` (on any status) → ``FlashdutyRateLimited`` with the parsed
  ``Retry-After``; it is *returned*, not raised: the transport waits it out;
* 401, ``Unauthorized``, or the push doc's own example of a wrong key (400 ``InvalidParameter``
  "integration_key is not a valid one") → ``FlashdutyAuthError`` naming which key and where it is
  set (``api.KEY_HINT``);
* anything else → ``FlashdutyError``, retryable per ``errors.RETRYABLE_CODES`` (2xx) or
  ``errors.is_retryable_status``.

The request id is the body's ``request_id``, else the ``Flashcat-Request-Id`` header. Error
messages from the body go through the caller's ``redact`` (they may echo a key back).
"""

from __future__ import annotations

import email.utils
import json
import math
import time
from collections.abc import Callable
from datetime import UTC
from typing import Any

from .api import KEY_HINT, Endpoint
from .errors import (
    RETRYABLE_CODES,
    FlashdutyAuthError,
    FlashdutyError,
    FlashdutyRateLimited,
    is_retryable_status,
)

__all__ = ["RETRY_AFTER_CAP", "data_of", "describe_body", "parse_retry_after", "read_answer", "request_id"]

RETRY_AFTER_CAP = 60.0  # seconds: a longer Retry-After is taken as this


def read_answer(
    ep: Endpoint,
    status: int,
    raw: bytes,
    header_id: str | None,
    retry_after: str | None,
    *,
    redact: Callable[[str], str],
) -> dict[str, Any] | FlashdutyError:
    """The JSON body of a successful answer, or the error (not raised) that the answer means."""
    try:
        parsed = json.loads(raw) if raw else {}
    except ValueError:
        parsed = None
    body: dict[str, Any] = parsed if isinstance(parsed, dict) else {}
    rid = request_id(body, header_id)
    err = body.get("error") if isinstance(body.get("error"), dict) else None
    code = str(err.get("code")) if err and err.get("code") not in (None, "", "0", "OK") else None
    message = redact(str(err.get("message") or "")) if err else ""
    ok = 200 <= status < 300
    if ok and (not isinstance(parsed, dict) or (code is None and "data" not in body)):
        return FlashdutyError(
            f"HTTP {status} answer is not Flashduty's: {describe_body(raw, parsed)}",
            endpoint=ep.name, status=status, request_id=rid, retryable=True,
        )  # fmt: skip
    if ok and code is None:
        return body
    if status == 429 or code == "RequestTooFrequently":
        return FlashdutyRateLimited(
            message or "request too frequently", endpoint=ep.name, status=status, code=code,
            request_id=rid, retry_after=parse_retry_after(retry_after),
        )  # fmt: skip
    if status == 401 or code == "Unauthorized" or _names_bad_key(ep, status, code, message):
        return FlashdutyAuthError(
            f"{ep.key_param} rejected ({status} {code or 'Unauthorized'}) — check {KEY_HINT[ep.key_param]}",
            endpoint=ep.name, status=status, code=code, request_id=rid,
        )  # fmt: skip
    retryable = code in RETRYABLE_CODES if ok else is_retryable_status(status)
    detail = f": {message}" if message else ("" if err else f": {describe_body(raw, parsed)}")
    return FlashdutyError(
        f"HTTP {status}{' (error in a 2xx body)' if ok else ''}{detail}",
        endpoint=ep.name, status=status, code=code, request_id=rid, retryable=retryable,
    )  # fmt: skip


def describe_body(raw: bytes, parsed: Any) -> str:
    """What a body that is not Flashduty's envelope is, in a few words (never the whole body)."""
    head = raw[:200].lstrip().lower()
    if not raw:
        return "empty body"
    if head.startswith((b"<!doctype html", b"<html", b"<?xml", b"<head", b"<body")) or b"<html" in head:
        return f"an HTML page ({len(raw)} bytes; a proxy or a captive portal?)"
    if parsed is None:
        return f"invalid or truncated JSON ({len(raw)} bytes)"
    if not isinstance(parsed, dict):
        return f"JSON {type(parsed).__name__}, not an object"
    return 'a JSON object without "data" (a proxy?)'


def data_of(body: dict[str, Any]) -> dict[str, Any]:
    """The envelope's ``data`` object (``{}`` when missing or not an object)."""
    data = body.get("data")
    return data if isinstance(data, dict) else {}


def request_id(body: dict[str, Any], header: str | None) -> str | None:
    """The body's ``request_id``, else the ``Flashcat-Request-Id`` header's."""
    rid = body.get("request_id")
    return rid if isinstance(rid, str) and rid else header


def _names_bad_key(ep: Endpoint, status: int, code: str | None, message: str) -> bool:
    """The push doc's own example of a wrong key: 400 InvalidParameter "integration_key is not
    a valid one". Same fix as a 401, so the same error."""
    return status == 400 and code == "InvalidParameter" and ep.key_param in message.lower()


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """``Retry-After`` as seconds (delta-seconds or HTTP-date), clamped to [0, 60]; None if absent
    or unparsable. ``now`` is the wall clock (Unix seconds) to measure an HTTP-date against."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:  # RFC 9110: HTTP-dates are GMT
            when = when.replace(tzinfo=UTC)
        ref = time.time() if now is None else now
        seconds = when.timestamp() - ref
    if math.isnan(seconds):
        return None
    return min(max(seconds, 0.0), RETRY_AFTER_CAP)
