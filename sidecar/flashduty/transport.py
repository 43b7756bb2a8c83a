"""One logical Flashduty request: quota, HTTP exchange, and waiting out 429s.

``Transport.call`` is one logical attempt. The caller (the outbox, through the client) owns the
retry budget for 5xx, timeouts and connection errors and decides from
``FlashdutyError.retryable``. A 429 is different: it says nothing about the request, only about
the quota, so it never spends the caller's budget. The transport waits for the quota's shared
gate and tries again, until the caller's ``deadline`` (``time.monotonic()`` seconds), after
which it raises :class:`FlashdutyRateLimited`.

Every request acquires its quota's :class:`SlidingWindowLimiter` immediately before the HTTP
call, and releases it when the answer (or the error) is in. Uploads, pushes and list calls have
separate limiters, so an ``Ok`` push never waits behind image uploads.

Logging: failures are logged at debug only (the delivery pipeline writes the one canonical line
per alert, with the error); waiting out a 429 is logged at info.

Keys travel only in the query string (``params=``), never in a log line or an exception:
messages are built from the endpoint name, status and code, and anything coming from aiohttp
is passed through :func:`redact` with the literal key values. Errors are raised outside the
``except`` block, so no ``__context__`` keeps the aiohttp exception (and its URL) alive.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import aiohttp

from sidecar.config import FlashdutyConfig
from sidecar.metrics import Metrics
from sidecar.redact import redact

from .answers import read_answer, request_id
from .api import LIST_RATE, REQUEST_ID_HEADER, USER_AGENT, Endpoint
from .errors import FlashdutyConnectionError, FlashdutyError, FlashdutyRateLimited, FlashdutyTimeout
from .ratelimit import LimiterClosed, RateLimitTimeout, SlidingWindowLimiter

__all__ = ["Transport"]

log = logging.getLogger("sidecar.flashduty")


class Transport:
    """The session, the keys and the three quotas' limiters (``limiters[endpoint.name]``)."""

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
        # for the status page: when Flashduty last answered, the last failure (redacted), the last 429
        self.last_answer_at: float | None = None
        self.last_failure: tuple[float, str] | None = None
        self.last_429_at: float | None = None

    async def close(self) -> None:
        """Fail waiting requests, stop the limiters' timers, close the session if we made it."""
        self._closed = True
        for limiter in self.limiters.values():
            limiter.close()
        if self._session is not None and self._owns_session:
            await self._session.close()
        self._session = None

    async def call(
        self, ep: Endpoint, body: Callable[[], Any], *, priority: int, deadline: float | None
    ) -> dict[str, Any]:
        """One logical attempt, repeated only after 429s (until ``deadline``).

        ``body`` builds the request body per attempt (a ``FormData`` can be sent only once)."""
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
            self.last_429_at = time.time()
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

    async def _send(self, ep: Endpoint, body: Any) -> dict[str, Any] | FlashdutyRateLimited:
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
            self.last_failure = (time.time(), f"{ep.name}: {failure}")
            log.debug("flashduty %s failed: %s", ep.name, failure, extra={"endpoint": ep.name})
            raise failure
        self.last_answer_at = time.time()
        result = read_answer(ep, status, raw, header_id, retry_after, redact=self._redact)
        if isinstance(result, FlashdutyError) and not isinstance(result, FlashdutyRateLimited):
            log.debug("flashduty %s failed: %s", ep.name, result, extra={"endpoint": ep.name})
            raise result
        if not isinstance(result, FlashdutyError):
            log.debug(
                "flashduty %s ok status=%d request_id=%s %.0fms",
                ep.name, status, request_id(result, header_id), (time.monotonic() - started) * 1000,
            )  # fmt: skip
        return result

    def _get_session(self) -> aiohttp.ClientSession:
        if self._closed:
            raise FlashdutyError("client is closed", endpoint="client")
        if self._session is None:
            self._session = aiohttp.ClientSession(headers={"User-Agent": USER_AGENT})
            self._owns_session = True
        return self._session

    def _key(self, ep: Endpoint) -> str:
        key = self._integration_key if ep.key_param == "integration_key" else self._app_key
        assert key is not None  # list_alerts checks app_key first
        return key

    def _redact(self, text: str) -> str:
        return redact(text, (self._integration_key, self._app_key))
