"""Instant queries against a Prometheus-compatible datasource (``POST {url}/api/v1/query``).

The envelope is parsed strictly, as vmalert does: ``status`` must be ``success``; an ``error``
status surfaces ``errorType: error``; a body that is not JSON (a proxy's HTML page) becomes an
error naming the HTTP status. Only ``vector`` and ``scalar`` results are accepted (a scalar is one
sample without labels); values are strings parsed with ``float()``, so ``NaN`` and ``+Inf`` work.
Errors name the datasource, never its URL credentials, token or password.
"""

from __future__ import annotations

import json
from typing import Any

import aiohttp

from sidecar.config import DatasourceConfig, format_duration
from sidecar.rules.engine import Sample, SourceError

__all__ = ["PrometheusSource", "parse_query_response"]


class PrometheusSource:
    """Runs one rule's ``expr`` on one datasource through a shared ``aiohttp`` session."""

    def __init__(self, session: aiohttp.ClientSession, datasource: DatasourceConfig, expr: str) -> None:
        self.session = session
        self.datasource = datasource
        self.expr = expr

    async def fetch(self, ts: float) -> list[Sample]:
        return await query_instant(self.session, self.datasource, self.expr, ts)


def _headers(ds: DatasourceConfig) -> dict[str, str]:
    headers = {"Accept": "application/json"}
    if ds.basic_auth is not None:
        auth = aiohttp.encode_basic_auth(ds.basic_auth.username, ds.basic_auth.password.get_secret_value())
        headers["Authorization"] = auth
    elif ds.bearer_token is not None:
        headers["Authorization"] = f"Bearer {ds.bearer_token.get_secret_value()}"
    return headers


async def query_instant(session: aiohttp.ClientSession, ds: DatasourceConfig, expr: str, ts: float) -> list[Sample]:
    """Evaluate ``expr`` at ``ts`` (unix seconds); raises ``SourceError``."""
    form = {"query": expr, "time": f"{ts:.3f}", "timeout": format_duration(ds.timeout)}
    where = f"datasource {ds.name!r}"
    try:
        async with session.post(
            f"{ds.url}/api/v1/query",
            data=form,
            headers=_headers(ds),
            timeout=aiohttp.ClientTimeout(total=ds.timeout),
            allow_redirects=False,
        ) as resp:
            body = await resp.read()
            status, content_type = resp.status, resp.content_type
    except TimeoutError:
        raise SourceError(f"{where}: query timed out after {format_duration(ds.timeout)}") from None
    except aiohttp.ClientError as e:
        raise SourceError(f"{where}: request failed: {type(e).__name__}: {_safe(e)}") from None
    return parse_query_response(status, content_type, body, where=where)


def _safe(e: BaseException) -> str:
    # aiohttp messages name host:port at most; strip anything that looks like userinfo anyway
    text = str(e)
    return text.split("@", 1)[-1] if "@" in text else text


def parse_query_response(status: int, content_type: str, body: bytes, *, where: str = "query") -> list[Sample]:
    """A ``/api/v1/query`` answer → samples, or ``SourceError`` with a readable reason."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        kind = content_type or "no content type"
        raise SourceError(f"{where}: HTTP {status}: response is not JSON ({kind})") from None
    if not isinstance(doc, dict) or "status" not in doc:
        raise SourceError(f"{where}: HTTP {status}: not a Prometheus API response")
    if doc["status"] == "error":
        etype, err = doc.get("errorType") or "error", doc.get("error") or "(no message)"
        raise SourceError(f"{where}: HTTP {status}: {etype}: {err}")
    if doc["status"] != "success":
        raise SourceError(f"{where}: HTTP {status}: unexpected status {doc['status']!r}")
    if not 200 <= status < 300:
        raise SourceError(f"{where}: HTTP {status}")
    data = doc.get("data")
    if not isinstance(data, dict):
        raise SourceError(f"{where}: malformed response: data is missing")
    rtype, result = data.get("resultType"), data.get("result")
    if rtype == "vector":
        if not isinstance(result, list):
            raise SourceError(f"{where}: malformed response: vector result is not a list")
        return [_vector_sample(item, i, where) for i, item in enumerate(result)]
    if rtype == "scalar":
        return [Sample(labels={}, value=_value(result, "result", where))]
    raise SourceError(
        f"{where}: the expression returned a {rtype} result; an alert rule needs an instant vector or scalar"
    )


def _vector_sample(item: Any, i: int, where: str) -> Sample:
    if not isinstance(item, dict) or not isinstance(item.get("metric", {}), dict):
        raise SourceError(f"{where}: malformed response: result[{i}] is not a sample")
    if "value" not in item and "histogram" in item:
        raise SourceError(f"{where}: result[{i}] is a native histogram; alert on a float expression")
    labels = {str(k): str(v) for k, v in item.get("metric", {}).items()}
    return Sample(labels=labels, value=_value(item.get("value"), f"result[{i}].value", where))


def _value(pair: Any, path: str, where: str) -> float:
    if not isinstance(pair, list) or len(pair) != 2:
        raise SourceError(f'{where}: malformed response: {path} must be [time, "value"]')
    try:
        return float(pair[1])
    except (TypeError, ValueError):
        raise SourceError(f"{where}: malformed response: {path}: not a number: {pair[1]!r}") from None
