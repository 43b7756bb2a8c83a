"""A local Flashduty-compatible server, for ``demo``, tests and benchmarks.

It emulates the parts of Flashduty the sidecar uses, as docs/flashduty-api.md describes them:

- ``POST /push/image/upload?integration_key=`` (multipart file field ``image``)
- ``POST /event/push/alert/standard?integration_key=`` (Standard Alert push)
- ``POST /alert/list?app_key=`` (Open API alert list)

with the shared envelope, ``Flashcat-Request-Id``, the documented validation, exact sliding-
window rate limits (upload 5/s and 50/min per account; push 100/s and 1000/min per
integration; list 50/s and 1000/min per account), and alert merging by ``alert_key``. All
integration keys belong to one account. Order of checks on an API call: injected fault, key,
rate limit, then the request itself, so a request the limiter admits counts toward the window
even if it then fails validation (as behind a gateway limiter); a 429 does not count.

``time_scale`` divides the rate-limit windows and keeps the counts: ``time_scale=10`` makes the
1 s window 0.1 s and the 1 min window 6 s ("every limit ×10"). ``clock`` (monotonic seconds)
drives the limiter and ``wall`` (Unix seconds) the alert times; inject fakes for determinism.

Deliberate choices where the doc is silent or conflicting (see the helper modules' docstrings
for the rest): an invalid or missing ``integration_key`` is 401 ``Unauthorized`` on upload (as
documented there) but 400 ``InvalidParameter`` on push (the push doc's own example);
``MethodNotAllowed`` is 405.

Not part of Flashduty, no auth (``/_sandbox/`` prefix): ``GET /`` (HTML view of the alerts),
``GET /_sandbox/images/{key}``, ``GET /_sandbox/state``, ``GET|POST|DELETE /_sandbox/faults``
(see flashduty_faults) and ``POST /_sandbox/reset``. Key values never appear in a response,
in the state or in a log line: serve the app with ``RedactingAccessLogger`` (``serve`` does).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from .flashduty_alerts import Alert, AlertBook, Integration, PushOutcome
from .flashduty_events import parse_push
from .flashduty_faults import ENDPOINTS, Fault, FaultSet, FaultSpecError, parse_fault
from .flashduty_http import (
    ApiError,
    RedactingAccessLogger,
    data_response,
    envelope_middleware,
    error_response,
    invalid_parameter,
    read_json_object,
)
from .flashduty_images import ImageStore, StoredImage, read_image_field, sniff_image
from .flashduty_limits import Limit, RateLimiter
from .flashduty_page import render_page
from .flashduty_query import parse_query, run_query

__all__ = ["Fault", "FlashdutySandbox", "RedactingAccessLogger"]

log = logging.getLogger("sidecar_sandbox.flashduty")

ACCOUNT_SCOPE = "account"
_CLOSING = web.AppKey("flashduty_sandbox_closing", asyncio.Event)
ApiHandler = Callable[[web.Request], Awaitable[web.Response]]


@dataclass
class EndpointStats:
    requests: int = 0
    processed: int = 0
    rate_limited: int = 0
    faulted: int = 0
    statuses: Counter[int] = field(default_factory=Counter)

    def to_json(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "processed": self.processed,
            "rate_limited": self.rate_limited,
            "faulted": self.faulted,
            "statuses": {str(status): n for status, n in sorted(self.statuses.items())},
        }


class FlashdutySandbox:
    """The sandbox's state and its aiohttp application (``make_app``)."""

    ACCOUNT_ID = 2451002751131
    CHANNEL_ID = 2551105804131
    CHANNEL_NAME = "Sandbox channel"
    FIRST_INTEGRATION_ID = 3651002751001

    def __init__(
        self,
        *,
        integration_keys: Iterable[str] = ("sandbox-integration-key",),
        app_keys: Iterable[str] = ("sandbox-app-key",),
        upload_per_second: int = 5,
        upload_per_minute: int = 50,
        push_per_second: int = 100,
        push_per_minute: int = 1000,
        list_per_second: int = 50,
        list_per_minute: int = 1000,
        time_scale: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        keys = list(dict.fromkeys(integration_keys))
        if not keys or not all(keys):
            raise ValueError("integration_keys must hold at least one non-empty key")
        if time_scale <= 0:
            raise ValueError(f"time_scale must be > 0 (got {time_scale})")
        self.time_scale = time_scale
        self._clock = clock
        self._wall = wall
        self._app_keys = frozenset(key for key in app_keys if key)
        self._integrations = {key: self._integration_for(index) for index, key in enumerate(keys)}
        self._limits = {
            "upload": Limit(upload_per_second, upload_per_minute),
            "push": Limit(push_per_second, push_per_minute),
            "list": Limit(list_per_second, list_per_minute),
        }
        self.faults = FaultSet()
        self.reset()

    def _integration_for(self, index: int) -> Integration:
        return Integration(
            integration_id=self.FIRST_INTEGRATION_ID + index,
            integration_name=f"Sandbox standard alert {index + 1}",
            channel_id=self.CHANNEL_ID,
            channel_name=self.CHANNEL_NAME,
            account_id=self.ACCOUNT_ID,
        )

    # ---- Python API for in-process tests -------------------------------------------------

    def reset(self) -> None:
        """Forget alerts, images, counters, limiter windows and faults."""
        self.images = ImageStore()
        self.book = AlertBook(wall=self._wall)
        self.limiters = {
            name: RateLimiter(limit, time_scale=self.time_scale, clock=self._clock)
            for name, limit in self._limits.items()
        }
        self.stats = {name: EndpointStats() for name in ENDPOINTS}
        self.warnings: list[str] = []
        self.faults.clear()

    @property
    def alerts(self) -> list[Alert]:
        return list(self.book.alerts)

    def integration_id(self, integration_key: str) -> int:
        return self._integrations[integration_key].integration_id

    def add_fault(self, kind: str, **spec: Any) -> Fault:
        """Same keys as ``POST /_sandbox/faults``, e.g. ``add_fault("status", endpoint="push",
        status=500, count=3)``; raises ``FaultSpecError`` (a ValueError) on a bad spec."""
        return self.faults.add(parse_fault({"kind": kind, **spec}))

    def clear_faults(self) -> None:
        self.faults.clear()

    def push_event(self, body: dict[str, Any], *, integration_key: str | None = None) -> PushOutcome:
        """Ingest a push body in-process (no HTTP, no rate limit, no faults), e.g. to seed state.

        Raises ``ApiError`` exactly where the HTTP endpoint would answer 400."""
        integration = self._integrations[integration_key or next(iter(self._integrations))]
        return self._ingest(integration, copy.deepcopy(body))

    def state(self) -> dict[str, Any]:
        """Everything a test may assert on (``GET /_sandbox/state``); JSON-serialisable."""
        return {
            "time_scale": self.time_scale,
            "account_id": self.ACCOUNT_ID,
            "integrations": [integration.to_json() for integration in self._integrations.values()],
            "alerts": [alert.to_state() for alert in self.book.alerts],
            "images": self.images.snapshot(),
            "uploads": self.stats["upload"].processed,
            "pushes": self.stats["push"].processed,
            "lists": self.stats["list"].processed,
            "http_429": {name: stats.statuses[429] for name, stats in self.stats.items()},
            "endpoints": {name: stats.to_json() for name, stats in self.stats.items()},
            "discarded_events": list(self.book.discarded),
            "warnings": list(self.warnings),
            "limits": {name: limiter.snapshot() for name, limiter in self.limiters.items()},
            "faults": [fault.to_json() for fault in self.faults.active()],
        }

    def render_html(self, **kwargs: Any) -> str:
        """The ``GET /`` page; kwargs go to ``flashduty_page.render_page`` (e.g. ``image_url``)."""
        return render_page(self.book.alerts, stats=self._page_stats(), **kwargs)

    # ---- the aiohttp application ---------------------------------------------------------

    def make_app(self) -> web.Application:
        app = web.Application(middlewares=[envelope_middleware])
        app[_CLOSING] = asyncio.Event()
        app.on_shutdown.append(self._on_shutdown)
        router = app.router
        router.add_post("/push/image/upload", self._api("upload", self._upload))
        router.add_post("/event/push/alert/standard", self._api("push", self._push))
        router.add_post("/alert/list", self._api("list", self._list))
        router.add_get("/", self._page)
        router.add_get("/_sandbox/state", self._state)
        router.add_get("/_sandbox/images/{key}", self._image)
        router.add_get("/_sandbox/faults", self._faults_get)
        router.add_post("/_sandbox/faults", self._faults_post)
        router.add_delete("/_sandbox/faults", self._faults_delete)
        router.add_post("/_sandbox/reset", self._reset)
        return app

    @contextlib.asynccontextmanager
    async def serve(self, host: str = "127.0.0.1", port: int = 0) -> AsyncIterator[str]:
        """Run the app on ``host:port`` (0: a free port) and yield its base URL."""
        runner = web.AppRunner(self.make_app(), access_log_class=RedactingAccessLogger)
        await runner.setup()
        try:
            site = web.TCPSite(runner, host, port)
            await site.start()
            bound_host, bound_port = runner.addresses[0][:2]
            yield f"http://{bound_host}:{bound_port}"
        finally:
            await runner.cleanup()

    async def _on_shutdown(self, app: web.Application) -> None:
        app[_CLOSING].set()

    def _api(self, endpoint: str, impl: ApiHandler) -> ApiHandler:
        async def handler(request: web.Request) -> web.Response:
            stats = self.stats[endpoint]
            stats.requests += 1
            fault = self.faults.take(endpoint)
            if fault is not None:
                stats.faulted += 1
            if fault is not None and fault.kind != "hang":
                response = _fault_response(fault)
            else:
                try:
                    response = await impl(request)
                except ApiError as err:
                    response = error_response(err)
                if fault is not None:
                    await _hang(request.app, fault.seconds)
            self.stats[endpoint].statuses[response.status] += 1
            log.debug("flashduty sandbox %s -> %d", endpoint, response.status)
            return response

        return handler

    def _authenticate(self, request: web.Request, *, on_push: bool = False) -> Integration:
        integration = self._integrations.get(request.query.get("integration_key", ""))
        if integration is not None:
            return integration
        if on_push:
            raise invalid_parameter("integration_key is not a valid one")
        raise ApiError(401, "Unauthorized", "integration_key is missing or not a valid one")

    def _admit(self, endpoint: str, scope: str) -> None:
        limiter = self.limiters[endpoint]
        if not limiter.admit(scope):
            self.stats[endpoint].rate_limited += 1
            raise ApiError(429, "RequestTooFrequently", f"request too frequently: {limiter.describe()}")

    async def _upload(self, request: web.Request) -> web.Response:
        self._authenticate(request)
        self._admit("upload", ACCOUNT_SCOPE)
        data = await read_image_field(request)
        fmt = sniff_image(data)
        if fmt is None:
            raise invalid_parameter("unsupported image format: JPEG, PNG, WebP, GIF, TIFF, BMP or ICO")
        stored = self.images.put(data, fmt, now=self._wall())
        self.stats["upload"].processed += 1
        return data_response({"image_key": stored.key})

    async def _push(self, request: web.Request) -> web.Response:
        integration = self._authenticate(request, on_push=True)
        self._admit("push", str(integration.integration_id))
        outcome = self._ingest(integration, await read_json_object(request))
        self.stats["push"].processed += 1
        return data_response({"alert_key": outcome.alert_key})

    def _ingest(self, integration: Integration, body: dict[str, Any]) -> PushOutcome:
        event = parse_push(body, is_known_image=self.images.__contains__)
        outcome = self.book.apply(integration, event, body)
        self.warnings.extend(f"push {outcome.alert_key}: {warning}" for warning in event.warnings)
        if outcome.alert is not None:
            for image in event.images:
                self.images.mark_referenced(image.src)
        return outcome

    async def _list(self, request: web.Request) -> web.Response:
        if request.query.get("app_key", "") not in self._app_keys:
            raise ApiError(401, "Unauthorized", "app_key is missing or not a valid one")
        self._admit("list", ACCOUNT_SCOPE)
        data = run_query(self.book.alerts, parse_query(await read_json_object(request)))
        self.stats["list"].processed += 1
        return data_response(data)

    # ---- sandbox-only endpoints ----------------------------------------------------------

    async def _page(self, request: web.Request) -> web.Response:
        refresh = request.query.get("refresh", "")
        html = self.render_html(refresh=int(refresh) if refresh.isdigit() and int(refresh) > 0 else None)
        return web.Response(text=html, content_type="text/html")

    def _page_stats(self) -> Mapping[str, Any]:
        return {
            "uploads": self.stats["upload"].processed,
            "images": len(self.images),
            "pushes": self.stats["push"].processed,
            "discarded": len(self.book.discarded),
            "429s": sum(stats.statuses[429] for stats in self.stats.values()),
        }

    async def _state(self, request: web.Request) -> web.Response:
        return web.json_response(self.state())

    async def _image(self, request: web.Request) -> web.Response:
        stored: StoredImage | None = self.images.get(request.match_info["key"])
        if stored is None:
            raise ApiError(404, "ResourceNotFound", "no image with this key")
        return web.Response(body=stored.data, content_type=stored.format.content_type)

    async def _faults_get(self, request: web.Request) -> web.Response:
        return web.json_response({"faults": [fault.to_json() for fault in self.faults.active()]})

    async def _faults_post(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
            faults = [_parse_fault_json(spec) for spec in (body if isinstance(body, list) else [body])]
        except ValueError as exc:  # FaultSpecError, or a body that is not JSON
            raise invalid_parameter(f"bad fault: {exc}") from exc
        for fault in faults:
            self.faults.add(fault)
        return await self._faults_get(request)

    async def _faults_delete(self, request: web.Request) -> web.Response:
        self.faults.clear()
        return await self._faults_get(request)

    async def _reset(self, request: web.Request) -> web.Response:
        self.reset()
        return web.json_response({"reset": True})


async def _hang(app: web.Application, seconds: float) -> None:
    """Wait before answering; cut short when the server shuts down."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(app[_CLOSING].wait(), seconds)


def _fault_response(fault: Fault) -> web.Response:
    if fault.kind == "status":
        return error_response(ApiError(fault.status, fault.code, "injected fault"))
    if fault.kind == "429":
        headers = {"Retry-After": fault.retry_after} if fault.retry_after is not None else None
        return error_response(ApiError(429, "RequestTooFrequently", "injected fault", headers=headers))
    if fault.kind == "401":
        return error_response(ApiError(401, "Unauthorized", "key revoked (injected fault)"))
    return error_response(ApiError(500, "InternalError", "injected fault"), status=200)


def _parse_fault_json(spec: Any) -> Fault:
    if not isinstance(spec, dict):
        raise FaultSpecError("a fault is a JSON object")
    return parse_fault(spec)
