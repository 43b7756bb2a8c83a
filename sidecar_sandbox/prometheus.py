"""Minimal Prometheus-compatible server for the sandbox: one demo metric, instant queries only.

It answers ``/api/v1/query`` with Prometheus' own envelopes so a rule source written against it
works against a real Prometheus. The evaluator understands just enough PromQL for the demo::

    sandbox_demo_errors                              the one series
    sandbox_demo_errors{service="checkout"}          label matchers: = != =~ !~
    {__name__="sandbox_demo_errors"}                 selector without a metric name
    sandbox_demo_errors > 1                          comparison filters: > < >= <= == !=
    42                                               a scalar

An instant query answers the current value (whatever its ``time``: tests drive rules with fake
clocks). The metric also keeps its history (every value set, with the wall time it was set), and
the sandbox Grafana draws that history (``value_at``), so a panel shows exactly the values the
rules were answered. Before the first change the series has its initial value. Unknown metric names give an empty vector (as in Prometheus);
anything else is a ``bad_data`` error with HTTP 400. Routes::

    GET|POST /api/v1/query           query, time (unix seconds or RFC 3339); POST form-encoded
    GET      /metrics                the demo metric in the text exposition format (scrapable)
    GET|POST /_sandbox/metric        read / set the value: {"value": 5}
    GET      /-/healthy, /-/ready
"""

from __future__ import annotations

import json
import math
import operator
import re
import time
from bisect import bisect_right
from collections.abc import Awaitable, Callable
from datetime import datetime
from decimal import Decimal
from typing import Any

from aiohttp import web

METRIC = "sandbox_demo_errors"
SERIES_LABELS = {"__name__": METRIC, "service": "checkout", "instance": "sandbox"}
_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_SCALAR = re.compile(rf"^\s*({_NUMBER})\s*$")
_EXPR = re.compile(
    rf"^\s*(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)?\s*(?:\{{(?P<matchers>[^{{}}]*)\}})?"
    rf"\s*(?:(?P<op>>=|<=|==|!=|>|<)\s*(?P<number>{_NUMBER}))?\s*$"
)
_MATCHER = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"\s*(,|$)')
_COMPARE: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt,
    "<": operator.lt,
    ">=": operator.ge,
    "<=": operator.le,
    "==": operator.eq,
    "!=": operator.ne,
}


class PromQLError(ValueError):
    """The query is outside what the sandbox evaluator understands (→ ``bad_data``)."""


class PrometheusSandbox:
    """A settable demo metric behind a Prometheus-shaped HTTP API."""

    def __init__(self, *, value: float = 0.0, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._times: list[float] = [-math.inf]
        self._values: list[float] = [float(value)]

    @property
    def value(self) -> float:
        """The current value; setting it appends to the history (at ``clock()``)."""
        return self._values[-1]

    @value.setter
    def value(self, v: float) -> None:
        self._times.append(max(self._clock(), self._times[-1]))
        self._values.append(float(v))

    def value_at(self, t: float) -> float:
        """The value the series had at unix time ``t``."""
        return self._values[bisect_right(self._times, t) - 1]

    def make_app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("GET", "/api/v1/query", self._query)
        app.router.add_route("POST", "/api/v1/query", self._query)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/_sandbox/metric", self._get_metric)
        app.router.add_post("/_sandbox/metric", self._set_metric)
        app.router.add_get("/-/healthy", _text("Prometheus Server is Healthy.\n"))
        app.router.add_get("/-/ready", _text("Prometheus Server is Ready.\n"))
        return app

    def evaluate(self, query: str, at: float) -> dict[str, Any]:
        """Evaluate ``query`` at unix time ``at``; returns Prometheus' ``data`` object."""
        scalar = _SCALAR.match(query)
        if scalar:
            return {"resultType": "scalar", "result": [at, format_value(float(scalar.group(1)))]}
        match = _EXPR.match(query)
        if match is None or not (match.group("name") or match.group("matchers") is not None):
            raise PromQLError(f"unsupported expression {query.strip()!r} (sandbox evaluator)")
        matchers = _parse_matchers(match.group("matchers") or "")
        if match.group("name"):
            matchers.append(("__name__", "=", match.group("name")))
        if not matchers:
            raise PromQLError("vector selector must contain at least one non-empty matcher")
        result = []
        if all(_matches(SERIES_LABELS.get(k, ""), op, v) for k, op, v in matchers):
            op, number = match.group("op"), match.group("number")
            if op is None or _COMPARE[op](self.value, float(number)):
                result.append({"metric": dict(SERIES_LABELS), "value": [at, format_value(self.value)]})
        return {"resultType": "vector", "result": result}

    async def _query(self, request: web.Request) -> web.Response:
        params = dict(request.query)
        if request.method == "POST":
            params.update({k: v for k, v in (await request.post()).items() if isinstance(v, str)})
        query = params.get("query", "")
        if not query.strip():
            return _error('invalid parameter "query": 1:1: parse error: no expression found in input')
        try:
            at = _parse_time(params["time"]) if params.get("time") else time.time()
        except ValueError:
            return _error(f'invalid parameter "time": cannot parse "{params["time"]}" to a valid timestamp')
        try:
            data = self.evaluate(query, at)
        except PromQLError as exc:
            return _error(str(exc))
        return web.json_response({"status": "success", "data": data})

    async def _metrics(self, request: web.Request) -> web.Response:
        text = (
            f"# HELP {METRIC} Demo error rate of the sandbox checkout service.\n"
            f"# TYPE {METRIC} gauge\n"
            f'{METRIC}{{service="checkout"}} {format_value(self.value)}\n'
        )
        return web.Response(body=text.encode(), headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})

    async def _get_metric(self, request: web.Request) -> web.Response:
        return web.json_response({"value": self.value})

    async def _set_metric(self, request: web.Request) -> web.Response:
        try:
            body = json.loads(await request.read())
        except ValueError:
            body = None
        value = body.get("value") if isinstance(body, dict) else None
        if not isinstance(value, int | float) or isinstance(value, bool):
            return web.json_response({"error": 'expected {"value": <number>}'}, status=400)
        self.value = float(value)
        return web.json_response({"value": self.value})


def format_value(value: float) -> str:
    """Sample values as Prometheus writes them (Go ``FormatFloat(v, 'f', -1, 64)``)."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    text = format(Decimal(repr(value)), "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def _parse_matchers(text: str) -> list[tuple[str, str, str]]:
    matchers: list[tuple[str, str, str]] = []
    pos = 0
    while text[pos:].strip():
        m = _MATCHER.match(text, pos)
        if m is None:
            raise PromQLError(f"unexpected label matcher syntax near {text[pos:].strip()!r}")
        value = m.group(3).encode().decode("unicode_escape")
        matchers.append((m.group(1), m.group(2), value))
        pos = m.end()
    return matchers


def _matches(actual: str, op: str, expected: str) -> bool:
    if op in ("=~", "!~"):
        try:
            found = re.fullmatch(expected, actual) is not None
        except re.error as exc:
            raise PromQLError(f"invalid regular expression {expected!r}: {exc}") from exc
        return found if op == "=~" else not found
    return (actual == expected) if op == "=" else (actual != expected)


def _parse_time(raw: str) -> float:
    try:
        return float(raw)
    except ValueError:
        return datetime.fromisoformat(raw.replace("Z", "+00:00")).timestamp()


def _error(message: str) -> web.Response:
    return web.json_response({"status": "error", "errorType": "bad_data", "error": message}, status=400)


def _text(body: str) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(text=body)

    return handler
