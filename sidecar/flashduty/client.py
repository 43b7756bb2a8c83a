"""Async Flashduty HTTP client: image upload, Standard Alert push, alert list.

One call = one logical attempt. The caller (the outbox) owns the retry budget for 5xx,
timeouts and connection errors and decides from ``FlashdutyError.retryable``. A 429 is
different: it says nothing about the request, only about the quota, so it never spends the
caller's budget. The client waits for the quota's shared gate and tries again, until the
caller's ``deadline`` (``time.monotonic()`` seconds), after which it raises
:class:`FlashdutyRateLimited`.

Every request acquires its quota's :class:`SlidingWindowLimiter` immediately before the HTTP
call, and releases it when the answer (or the error) is in. Uploads, pushes and list calls have
separate limiters, so an ``Ok`` push never waits behind image uploads.

Logging: failures are logged at debug only (the delivery pipeline writes the one canonical line
per alert, with the error); waiting out a 429 is logged at info.

Keys travel only in the query string (``params=``), never in a log line or an exception:
messages are built from the endpoint name, status and code, and anything coming from aiohttp
is passed through :func:`redact` with the literal key values.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp

from sidecar.capture.images import MAX_IMAGE_BYTES, upload_filename
from sidecar.config import FlashdutyConfig
from sidecar.metrics import Metrics
from sidecar.model import PRIORITY
from sidecar.redact import redact

from .errors import (
    RETRYABLE_CODES,
    FlashdutyAuthError,
    FlashdutyConnectionError,
    FlashdutyError,
    FlashdutyRateLimited,
    FlashdutyTimeout,
    is_retryable_status,
)
from .ratelimit import LimiterClosed, RateLimitTimeout, SlidingWindowLimiter, parse_retry_after

__all__ = ["LIST_RATE", "MAX_IMAGE_BYTES", "MAX_LIST_SPAN", "FlashdutyClient"]

log = logging.getLogger("sidecar.flashduty")

MAX_LIST_SPAN = 31 * 86400  # /alert/list rejects longer windows
LIST_RATE = (50, 1000)  # per second, per minute (per account, Open API)
MAX_LIST_PAGES = 1000  # per slice: a runaway cursor must not loop forever
REQUEST_ID_HEADER = "Flashcat-Request-Id"
USER_AGENT = "flashduty-sidecar/0.1"


@dataclass(frozen=True)
class _Endpoint:
    name: str  # metric label and log field: upload | push | list
    path: str
    key_param: str  # integration_key | app_key


UPLOAD = _Endpoint("upload", "/push/image/upload", "integration_key")
PUSH = _Endpoint("push", "/event/push/alert/standard", "integration_key")
LIST = _Endpoint("list", "/alert/list", "app_key")

_KEY_HINT = {
    "integration_key": "FLASHDUTY_INTEGRATION_KEY / flashduty.integration_key",
    "app_key": "FLASHDUTY_APP_KEY / flashduty.app_key",
}


class FlashdutyClient:
    """Upload images, push Standard Alerts and list alerts, within Flashduty's rate limits."""

    def __init__(
        self,
        cfg: FlashdutyConfig,
        *,
        metrics: Metrics,
        session: aiohttp.ClientSession | None = None,
        time_scale: float = 1.0,
    ) -> None:
        self._cfg = cfg
        self._metrics = metrics
        self._session = session
        self._owns_session = session is None
        self._timeout = aiohttp.ClientTimeout(total=cfg.timeout)
        self._integration_key = cfg.integration_key.get_secret_value()
        self._app_key = cfg.app_key.get_secret_value() if cfg.app_key is not None else None
        up, push = cfg.upload_rate, cfg.push_rate
        self.limiters: dict[str, SlidingWindowLimiter] = {
            "upload": SlidingWindowLimiter(
                "upload", [(up.per_second, 1.0), (up.per_minute, 60.0)], time_scale=time_scale
            ),
            "push": SlidingWindowLimiter(
                "push", [(push.per_second, 1.0), (push.per_minute, 60.0)], time_scale=time_scale
            ),
            "list": SlidingWindowLimiter("list", [(LIST_RATE[0], 1.0), (LIST_RATE[1], 60.0)], time_scale=time_scale),
        }
        self._closed = False

    @property
    def account_fingerprint(self) -> str:
        """A non-secret id of the integration key (image keys are only valid in its account)."""
        return hashlib.sha256(b"flashduty-sidecar:" + self._integration_key.encode()).hexdigest()[:16]

    # ------------------------------------------------------------------ public API

    async def upload_image(
        self,
        data: bytes,
        *,
        content_type: str,
        priority: int = 2,
        deadline: float | None = None,
    ) -> str:
        """Upload one picture (≤ 5 MB) of ``content_type`` and return its ``image_key``."""
        if len(data) > MAX_IMAGE_BYTES:
            raise FlashdutyError(
                f"image is {len(data)} bytes; Flashduty accepts at most {MAX_IMAGE_BYTES} (5 MB)",
                endpoint=UPLOAD.name,
                code="EntityTooLarge",
            )
        filename = upload_filename(content_type)

        def form() -> aiohttp.FormData:
            fd = aiohttp.FormData()
            fd.add_field("image", data, filename=filename, content_type=content_type)
            return fd  # a FormData can be sent once: build one per attempt

        try:
            body = await self._call(UPLOAD, form, priority=priority, deadline=deadline)
        except FlashdutyError as e:
            self._metrics.uploads.labels(_outcome(e)).inc()
            raise
        key = _data(body).get("image_key")
        if not isinstance(key, str) or not key:
            self._metrics.uploads.labels("malformed").inc()
            raise FlashdutyError(
                "upload answered without data.image_key",
                endpoint=UPLOAD.name,
                request_id=_request_id(body, None),
                retryable=True,
            )
        self._metrics.uploads.labels("ok").inc()
        return key

    async def push_alert(
        self, payload: dict[str, Any], *, priority: int | None = None, deadline: float | None = None
    ) -> str:
        """Push one Standard Alert event; return the ``alert_key`` Flashduty filed it under.

        ``priority`` defaults to ``model.PRIORITY`` of the payload's ``event_status``.
        """
        if priority is None:
            priority = PRIORITY.get(str(payload.get("event_status")), PRIORITY["Warning"])
        try:
            body = await self._call(PUSH, _const(payload), priority=priority, deadline=deadline)
        except FlashdutyError as e:
            self._metrics.pushes.labels(_outcome(e)).inc()
            raise
        key = _data(body).get("alert_key") or payload.get("alert_key")
        if not isinstance(key, str) or not key:
            self._metrics.pushes.labels("malformed").inc()
            raise FlashdutyError(
                "push answered without data.alert_key",
                endpoint=PUSH.name,
                request_id=_request_id(body, None),
                retryable=True,
            )
        self._metrics.pushes.labels("ok").inc()
        return key

    async def list_alerts(
        self,
        *,
        start: float,
        end: float,
        is_active: bool | None = None,
        alert_keys: list[str] | None = None,
        limit: int = 100,
        deadline: float | None = None,
    ) -> list[dict[str, Any]]:
        """All alerts overlapping ``[start, end]`` (Unix seconds), every page of every ≤ 31-day
        slice, de-duplicated by ``alert_id`` (an alert spanning two slices is listed in both)."""
        if self._app_key is None:
            raise FlashdutyAuthError(
                f"app_key is not configured — set {_KEY_HINT['app_key']}", endpoint=LIST.name, status=None
            )
        page_size = min(max(int(limit), 1), 100)
        seen: dict[str, dict[str, Any]] = {}
        for lo, hi in _slices(math.floor(start), math.ceil(end)):
            base: dict[str, Any] = {"start_time": lo, "end_time": hi, "limit": page_size}
            if is_active is not None:
                base["is_active"] = is_active
            if alert_keys:
                base["alert_keys"] = list(alert_keys)
            async for item in self._list_slice(base, deadline):
                alert_id = item.get("alert_id")
                if isinstance(alert_id, str):
                    seen.setdefault(alert_id, item)
        return list(seen.values())

    async def close(self) -> None:
        """Fail waiting requests, stop the limiters' timers, close the session if we made it."""
        self._closed = True
        for limiter in self.limiters.values():
            limiter.close()
        if self._session is not None and self._owns_session:
            await self._session.close()
        self._session = None

    # ------------------------------------------------------------------ internals

    async def _list_slice(self, base: dict[str, Any], deadline: float | None) -> AsyncIterator[dict[str, Any]]:
        cursor: str | None = None
        page = 1
        for _ in range(MAX_LIST_PAGES):
            body = dict(base)
            if cursor:
                body["search_after_ctx"] = cursor
            else:
                body["p"] = page
            data = _data(await self._call(LIST, _const(body), priority=2, deadline=deadline))
            items = data.get("items") or []
            for item in items:
                if isinstance(item, dict):
                    yield item
            if not data.get("has_next_page") or not items:
                return
            next_cursor = data.get("search_after_ctx")
            if isinstance(next_cursor, str) and next_cursor:
                cursor = next_cursor
            elif cursor is None:
                page += 1
            else:  # a cursor that stopped coming back: we cannot page on safely
                raise FlashdutyError("has_next_page without search_after_ctx", endpoint=LIST.name, retryable=True)
        raise FlashdutyError(f"more than {MAX_LIST_PAGES} pages in one slice", endpoint=LIST.name)

    def _get_session(self) -> aiohttp.ClientSession:
        if self._closed:
            raise FlashdutyError("client is closed", endpoint="client")
        if self._session is None:
            self._session = aiohttp.ClientSession(headers={"User-Agent": USER_AGENT})
            self._owns_session = True
        return self._session

    def _key(self, ep: _Endpoint) -> str:
        key = self._integration_key if ep.key_param == "integration_key" else self._app_key
        assert key is not None  # list_alerts checks app_key first
        return key

    def _redact(self, text: str) -> str:
        return redact(text, (self._integration_key, self._app_key))

    async def _call(
        self, ep: _Endpoint, body: Callable[[], Any], *, priority: int, deadline: float | None
    ) -> dict[str, Any]:
        """One logical attempt, repeated only after 429s (until ``deadline``)."""
        limiter = self.limiters[ep.name]
        while True:
            try:
                permit = await limiter.acquire(priority, deadline=deadline)
            except RateLimitTimeout as e:
                raise FlashdutyRateLimited(str(e), endpoint=ep.name, status=None, retry_after=e.retry_after) from None
            except LimiterClosed:
                raise FlashdutyError("client is closed", endpoint=ep.name) from None
            try:
                result = await self._send(ep, body())
            finally:
                permit.release()
            if not isinstance(result, FlashdutyRateLimited):
                limiter.on_success()
                return result
            self._metrics.http_429.labels(ep.name).inc()
            delay = limiter.on_rate_limited(result.retry_after)
            how = "Retry-After" if result.retry_after is not None else "backoff"
            if deadline is not None and limiter.gate_until > deadline:
                log.info(
                    "flashduty %s rate limited (429); quota back in %.2fs (%s), after the deadline",
                    ep.name, delay, how, extra={"endpoint": ep.name, "request_id": result.request_id},
                )  # fmt: skip
                result.retry_after = max(limiter.gate_until - time.monotonic(), 0.0)
                raise result
            log.info(
                "flashduty %s rate limited (429); waiting %.2fs (%s)",
                ep.name, delay, how, extra={"endpoint": ep.name, "request_id": result.request_id},
            )  # fmt: skip

    async def _send(self, ep: _Endpoint, body: Any) -> dict[str, Any] | FlashdutyRateLimited:
        """One HTTP exchange. Returns the JSON body, or the 429 to wait on; raises the rest."""
        session = self._get_session()
        url = self._cfg.api_host + ep.path
        kwargs: dict[str, Any] = {"params": {ep.key_param: self._key(ep)}, "timeout": self._timeout}
        kwargs["data" if isinstance(body, aiohttp.FormData) else "json"] = body
        started = time.monotonic()
        failure: FlashdutyError | None = None
        try:
            async with session.post(url, headers={"Accept": "application/json"}, **kwargs) as resp:
                raw = await resp.read()
                status, header_id, retry_after = (
                    resp.status,
                    resp.headers.get(REQUEST_ID_HEADER),
                    resp.headers.get("Retry-After"),
                )
        except TimeoutError:
            failure = FlashdutyTimeout(f"no answer within {self._cfg.timeout:g}s", endpoint=ep.name)
        except aiohttp.ClientError as e:
            failure = FlashdutyConnectionError(
                self._redact(f"{type(e).__name__}: {e}") or type(e).__name__, endpoint=ep.name
            )
        finally:
            self._metrics.request_seconds.labels(ep.name).observe(time.monotonic() - started)
        if failure is not None:  # raised here, outside `except`: no __context__ holding the URL
            log.debug("flashduty %s failed: %s", ep.name, failure, extra={"endpoint": ep.name})
            raise failure
        result = self._interpret(ep, status, raw, header_id, retry_after)
        if isinstance(result, FlashdutyError) and not isinstance(result, FlashdutyRateLimited):
            log.debug("flashduty %s failed: %s", ep.name, result, extra={"endpoint": ep.name})
            raise result
        if not isinstance(result, FlashdutyError):
            log.debug(
                "flashduty %s ok status=%d request_id=%s %.0fms",
                ep.name, status, _request_id(result, header_id), (time.monotonic() - started) * 1000,
            )  # fmt: skip
        return result

    def _interpret(
        self, ep: _Endpoint, status: int, raw: bytes, header_id: str | None, retry_after: str | None
    ) -> dict[str, Any] | FlashdutyError:
        try:
            parsed = json.loads(raw) if raw else {}
        except ValueError:
            parsed = None
        body: dict[str, Any] = parsed if isinstance(parsed, dict) else {}
        request_id = _request_id(body, header_id)
        err = body.get("error") if isinstance(body.get("error"), dict) else None
        code = str(err.get("code")) if err and err.get("code") not in (None, "", "0", "OK") else None
        message = self._redact(str(err.get("message") or "")) if err else ""
        ok = 200 <= status < 300
        if ok and not isinstance(parsed, dict):
            return FlashdutyError(
                "answer is not a JSON object", endpoint=ep.name, status=status, request_id=request_id,
                retryable=True,
            )  # fmt: skip
        if ok and code is None:
            return body
        if status == 429 or code == "RequestTooFrequently":
            return FlashdutyRateLimited(
                message or "request too frequently", endpoint=ep.name, status=status, code=code,
                request_id=request_id, retry_after=parse_retry_after(retry_after),
            )  # fmt: skip
        if status == 401 or code == "Unauthorized" or _names_bad_key(ep, status, code, message):
            return FlashdutyAuthError(
                f"{ep.key_param} rejected ({status} {code or 'Unauthorized'}) — check {_KEY_HINT[ep.key_param]}",
                endpoint=ep.name, status=status, code=code, request_id=request_id,
            )  # fmt: skip
        retryable = code in RETRYABLE_CODES if ok else is_retryable_status(status)
        detail = f": {message}" if message else ""
        return FlashdutyError(
            f"HTTP {status}{' (error in a 2xx body)' if ok else ''}{detail}",
            endpoint=ep.name, status=status, code=code, request_id=request_id, retryable=retryable,
        )  # fmt: skip


def _names_bad_key(ep: _Endpoint, status: int, code: str | None, message: str) -> bool:
    """The push doc's own example of a wrong key: 400 InvalidParameter "integration_key is not
    a valid one". Same fix as a 401, so the same error."""
    return status == 400 and code == "InvalidParameter" and ep.key_param in message.lower()


def _outcome(e: FlashdutyError) -> str:
    if isinstance(e, FlashdutyRateLimited):
        return "rate_limited"
    if isinstance(e, FlashdutyAuthError):
        return "auth_error"
    if isinstance(e, FlashdutyTimeout):
        return "timeout"
    if isinstance(e, FlashdutyConnectionError):
        return "connection_error"
    return "retryable_error" if e.retryable else "permanent_error"


def _const(value: Any) -> Callable[[], Any]:
    return lambda: value


def _data(body: dict[str, Any]) -> dict[str, Any]:
    data = body.get("data")
    return data if isinstance(data, dict) else {}


def _request_id(body: dict[str, Any], header: str | None) -> str | None:
    rid = body.get("request_id")
    return rid if isinstance(rid, str) and rid else header


def _slices(start: int, end: int) -> Iterator[tuple[int, int]]:
    """``[start, end]`` as consecutive windows of at most 31 days (at least one, even if empty)."""
    if end < start:
        raise ValueError(f"end ({end}) is before start ({start})")
    lo = start
    while True:
        hi = min(lo + MAX_LIST_SPAN, end)
        yield lo, hi
        if hi >= end:
            return
        lo = hi
