"""Fault injection for the Flashduty sandbox.

A fault targets one API endpoint (``upload``, ``push``, ``list``) or all of them (``*``) and
fires on the next ``count`` requests (``count`` omitted: until cleared). At most one fault fires
per request: the first active one that matches, in the order they were added. Faults fire before
authentication and rate limiting, and a faulted request is neither processed nor counted by the
limiter, except ``hang``, which only delays the answer of a request processed as usual.

Kinds (JSON shape of ``POST /_sandbox/faults``; the same keys work for ``add_fault``):

- ``{"kind": "status", "status": 500}``: that HTTP status, ``InternalError`` envelope
  (``"code"`` overrides the error code).
- ``{"kind": "hang", "seconds": 30}``: process the request as usual, then wait ``seconds``
  before answering: a client that times out has lost the reply of a request that *was*
  processed. The wait is cut short when the server shuts down.
- ``{"kind": "429", "retry_after": "2"}``: 429 ``RequestTooFrequently``; ``retry_after``
  (delta-seconds or an HTTP-date) becomes the ``Retry-After`` header; omit it for no header.
- ``{"kind": "401"}``: 401 ``Unauthorized``, as if the key were revoked.
- ``{"kind": "error_in_200"}``: HTTP 200 whose body carries an ``error`` object and no ``data``.
- ``{"kind": "html", "status": 502}``: a reverse proxy's own error page instead of Flashduty's
  answer, ``text/html``; the body is nginx's default page for that status
  (nginx ``src/http/ngx_http_special_response.c``: ``ngx_http_error_502_page`` + ``ngx_http_error_tail``).
  ``status`` 200 is a captive portal's login page.
- ``{"kind": "truncated"}``: HTTP 200, ``application/json``, a success envelope cut in the middle
  (a connection closed early by a proxy; the declared length matches what is sent).
- ``{"kind": "no_data"}``: HTTP 200 ``{"request_id": ...}`` without ``data`` (the OpenAPI
  ``SuccessEnvelope`` requires it: a proxy or a mock that answers ``{}``-like bodies).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

ENDPOINTS = ("upload", "push", "list")
KINDS = ("status", "hang", "429", "401", "error_in_200", "html", "truncated", "no_data")
_KEYS = frozenset({"endpoint", "kind", "count", "status", "code", "seconds", "retry_after"})


class FaultSpecError(ValueError):
    """A fault description that does not make sense."""


@dataclass
class Fault:
    kind: str
    endpoint: str = "*"
    count: int | None = None
    status: int = 500
    code: str = "InternalError"
    seconds: float = 0.0
    retry_after: str | None = None
    fired: int = 0

    @property
    def exhausted(self) -> bool:
        return self.count is not None and self.fired >= self.count

    def matches(self, endpoint: str) -> bool:
        return self.endpoint in ("*", endpoint) and not self.exhausted

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"endpoint": self.endpoint, "kind": self.kind, "count": self.count}
        if self.kind == "status":
            out.update(status=self.status, code=self.code)
        elif self.kind == "html":
            out["status"] = self.status
        elif self.kind == "hang":
            out["seconds"] = self.seconds
        elif self.kind == "429":
            out["retry_after"] = self.retry_after
        out["fired"] = self.fired
        return out


def parse_fault(spec: Mapping[str, Any]) -> Fault:
    unknown = sorted(set(spec) - _KEYS)
    if unknown:
        raise FaultSpecError(f"unknown fault keys: {', '.join(unknown)}")
    kind = str(spec.get("kind", ""))
    if kind not in KINDS:
        raise FaultSpecError(f"kind must be one of {', '.join(KINDS)} (got {spec.get('kind')!r})")
    endpoint = spec.get("endpoint", "*")
    if endpoint != "*" and endpoint not in ENDPOINTS:
        raise FaultSpecError(f"endpoint must be one of {', '.join(ENDPOINTS)} or * (got {endpoint!r})")
    fault = Fault(kind=kind, endpoint=endpoint, count=_count(spec.get("count")))
    if kind == "html":
        fault.status = _status(spec.get("status", 502))
    if kind == "status":
        fault.status = _status(spec.get("status", 500))
        fault.code = _text(spec.get("code", "InternalError"), "code")
    elif kind == "hang":
        fault.seconds = _seconds(spec.get("seconds"))
    elif kind == "429" and spec.get("retry_after") is not None:
        fault.retry_after = _text(spec["retry_after"], "retry_after")
    return fault


def _count(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise FaultSpecError(f"count must be an integer >= 1 (got {value!r})")
    return value


def _status(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 100 <= value <= 599:
        raise FaultSpecError(f"status must be an HTTP status code (got {value!r})")
    return value


def _seconds(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise FaultSpecError(f"hang needs seconds >= 0 (got {value!r})")
    return float(value)


def _text(value: Any, name: str) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int) or str(value) == "":
        raise FaultSpecError(f"{name} must be a non-empty string (got {value!r})")
    return str(value)


class FaultSet:
    """Active faults, in the order they were added."""

    def __init__(self) -> None:
        self._faults: list[Fault] = []

    def add(self, fault: Fault) -> Fault:
        self._faults.append(fault)
        return fault

    def clear(self) -> None:
        self._faults.clear()

    def take(self, endpoint: str) -> Fault | None:
        """The fault that fires on this request, if any; exhausted faults drop out."""
        for fault in self._faults:
            if fault.matches(endpoint):
                fault.fired += 1
                if fault.exhausted:
                    self._faults.remove(fault)
                return fault
        return None

    def active(self) -> list[Fault]:
        return list(self._faults)


def nginx_page(status: int) -> str:
    """nginx's default error page for ``status`` (``ngx_http_error_<status>_page`` followed by
    ``ngx_http_error_tail``, in ``src/http/ngx_http_special_response.c``); for 200, the login page
    of a captive portal."""
    if status == 200:
        return "<!DOCTYPE html>\r\n<html><head><title>Sign in</title></head><body><form></form></body></html>\r\n"
    reason = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "Error"
    return (
        f"<html>\r\n<head><title>{status} {reason}</title></head>\r\n<body>\r\n"
        f"<center><h1>{status} {reason}</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
    )
