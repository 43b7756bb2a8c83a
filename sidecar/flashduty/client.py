"""Async Flashduty client: image upload, Standard Alert push, alert list.

The public face of ``flashduty/``: each method is one logical attempt through the
:class:`~sidecar.flashduty.transport.Transport` (quota, HTTP, waiting out 429s until the caller's
``deadline``; the caller owns the retry budget and decides from ``FlashdutyError.retryable``),
plus what the method itself knows:

* ``upload_image`` refuses a picture over 5 MB before sending it, names the file after its
  content type, and needs ``data.image_key`` in the answer;
* ``push_alert`` takes its priority from the event status (``model.PRIORITY``) and returns the
  ``alert_key`` Flashduty filed the event under (the answer's, else the payload's);
* ``list_alerts`` cuts the window into ≤ 31-day slices (``/alert/list`` rejects longer ones),
  pages each by ``search_after_ctx`` (else by page number), at most 1000 pages per slice, and
  de-duplicates by ``alert_id``.

An answer without the key a method needs is a retryable error. Every outcome is counted in the
``uploads`` / ``pushes`` metrics (``ok``, ``malformed``, or the error's kind).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import aiohttp

from sidecar.config import FlashdutyConfig
from sidecar.metrics import Metrics
from sidecar.model import PRIORITY

from .answers import data_of, request_id
from .api import KEY_HINT, LIST, MAX_IMAGE_BYTES, MAX_LIST_SPAN, PUSH, UPLOAD, upload_filename
from .errors import (
    FlashdutyAuthError,
    FlashdutyConnectionError,
    FlashdutyError,
    FlashdutyRateLimited,
    FlashdutyTimeout,
)
from .ratelimit import SlidingWindowLimiter
from .transport import Transport

__all__ = ["FlashdutyClient"]

MAX_LIST_PAGES = 1000  # per slice: a runaway cursor must not loop forever


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
        self._metrics = metrics
        self._integration_key = cfg.integration_key.get_secret_value()
        self._has_app_key = cfg.app_key is not None
        self._transport = Transport(cfg, metrics=metrics, session=session, time_scale=time_scale)

    @property
    def limiters(self) -> dict[str, SlidingWindowLimiter]:
        """The quotas' limiters, by endpoint name (``upload``, ``push``, ``list``)."""
        return self._transport.limiters

    @property
    def transport(self) -> Transport:
        """The exchange with Flashduty (``last_answer_at``, ``last_failure``, ``last_429_at``)."""
        return self._transport

    @property
    def account_fingerprint(self) -> str:
        """A non-secret id of the integration key (image keys are only valid in its account)."""
        return hashlib.sha256(b"flashduty-sidecar:" + self._integration_key.encode()).hexdigest()[:16]

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
            body = await self._transport.call(UPLOAD, form, priority=priority, deadline=deadline)
        except FlashdutyError as e:
            self._metrics.uploads.labels(_outcome(e)).inc()
            raise
        key = data_of(body).get("image_key")
        if not isinstance(key, str) or not key:
            self._metrics.uploads.labels("malformed").inc()
            raise FlashdutyError(
                "upload answered without data.image_key",
                endpoint=UPLOAD.name,
                request_id=request_id(body, None),
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
            body = await self._transport.call(PUSH, _const(payload), priority=priority, deadline=deadline)
        except FlashdutyError as e:
            self._metrics.pushes.labels(_outcome(e)).inc()
            raise
        key = data_of(body).get("alert_key") or payload.get("alert_key")
        if not isinstance(key, str) or not key:
            self._metrics.pushes.labels("malformed").inc()
            raise FlashdutyError(
                "push answered without data.alert_key",
                endpoint=PUSH.name,
                request_id=request_id(body, None),
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
        if not self._has_app_key:
            raise FlashdutyAuthError(
                f"app_key is not configured — set {KEY_HINT['app_key']}", endpoint=LIST.name, status=None
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
        await self._transport.close()

    async def _list_slice(self, base: dict[str, Any], deadline: float | None) -> AsyncIterator[dict[str, Any]]:
        cursor: str | None = None
        page = 1
        for _ in range(MAX_LIST_PAGES):
            body = dict(base)
            if cursor:
                body["search_after_ctx"] = cursor
            else:
                body["p"] = page
            data = data_of(await self._transport.call(LIST, _const(body), priority=2, deadline=deadline))
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


def _outcome(e: FlashdutyError) -> str:
    """The metric label of a failed upload or push."""
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
