"""The Flashduty sandbox's aiohttp application: its routes and how each request is answered.

API routes (``flashduty-api.md``), all ``POST``, answered in the shared envelope
(``flashduty_http``)::

    /push/image/upload?integration_key=           multipart file field ``image`` → data.image_key
    /event/push/alert/standard?integration_key=   Standard Alert push → data.alert_key
    /alert/list?app_key=                          Open API alert list

Order of checks on an API call: injected fault, key, rate limit, then the request itself, so a
request the limiter admits counts toward the window even if it then fails validation (as behind
a gateway limiter); a 429 does not count. Uploads and lists are limited per account, pushes per
integration. A ``hang`` fault answers normally, but only after its delay (cut short when the
server shuts down); the other faults answer in place of the endpoint.

Deliberate choices where the doc is silent or conflicting: an invalid or missing
``integration_key`` is 401 ``Unauthorized`` on upload (as documented there) but 400
``InvalidParameter`` on push (the push doc's own example); ``MethodNotAllowed`` is 405.

Not part of Flashduty, no auth (``/_sandbox/`` prefix): ``GET /`` (HTML view of the alerts,
``?refresh=<s>``), ``GET /_sandbox/images/{key}``, ``GET /_sandbox/state``,
``GET|POST|DELETE /_sandbox/faults`` (see flashduty_faults; POST takes one spec or a list) and
``POST /_sandbox/reset``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from .flashduty_alerts import Integration
from .flashduty_faults import Fault, FaultSpecError, nginx_page, parse_fault
from .flashduty_http import (
    ApiError,
    data_response,
    envelope_middleware,
    error_response,
    invalid_parameter,
    new_request_id,
    read_json_object,
)
from .flashduty_images import StoredImage, read_image_field, sniff_image
from .flashduty_query import parse_query, run_query

if TYPE_CHECKING:
    from .flashduty import FlashdutySandbox

__all__ = ["build_app"]

log = logging.getLogger("sidecar_sandbox.flashduty")

ACCOUNT_SCOPE = "account"
_CLOSING = web.AppKey("flashduty_sandbox_closing", asyncio.Event)
ApiHandler = Callable[[web.Request], Awaitable[web.Response]]


def build_app(sandbox: FlashdutySandbox) -> web.Application:
    """The application serving ``sandbox`` (its state lives on the sandbox, not the app)."""
    routes = _Routes(sandbox)
    app = web.Application(middlewares=[envelope_middleware])
    app[_CLOSING] = asyncio.Event()
    app.on_shutdown.append(_on_shutdown)
    router = app.router
    router.add_post("/push/image/upload", routes.api("upload", routes.upload_image))
    router.add_post("/event/push/alert/standard", routes.api("push", routes.push_alert))
    router.add_post("/alert/list", routes.api("list", routes.list_alerts))
    router.add_get("/", routes.page)
    router.add_get("/_sandbox/state", routes.state)
    router.add_get("/_sandbox/images/{key}", routes.image)
    router.add_get("/_sandbox/faults", routes.faults_get)
    router.add_post("/_sandbox/faults", routes.faults_post)
    router.add_delete("/_sandbox/faults", routes.faults_delete)
    router.add_post("/_sandbox/reset", routes.reset)
    return app


class _Routes:
    def __init__(self, sandbox: FlashdutySandbox) -> None:
        self.sb = sandbox

    # ---- the API -------------------------------------------------------------------------

    def api(self, endpoint: str, impl: ApiHandler) -> ApiHandler:
        """``impl`` behind the fault injector, with the endpoint's counters."""

        async def handler(request: web.Request) -> web.Response:
            stats = self.sb.stats[endpoint]
            stats.requests += 1
            fault = self.sb.faults.take(endpoint)
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
            self.sb.stats[endpoint].statuses[response.status] += 1
            self.sb.access_log.append(
                (self.sb.wall(), endpoint, request.headers.get("User-Agent", ""), response.status)
            )
            log.debug("flashduty sandbox %s -> %d", endpoint, response.status)
            return response

        return handler

    def _authenticate(self, request: web.Request, *, on_push: bool = False) -> Integration:
        integration = self.sb.integration_for_key(request.query.get("integration_key", ""))
        if integration is not None:
            return integration
        if on_push:
            raise invalid_parameter("integration_key is not a valid one")
        raise ApiError(401, "Unauthorized", "integration_key is missing or not a valid one")

    def _admit(self, endpoint: str, scope: str) -> None:
        limiter = self.sb.limiters[endpoint]
        if not limiter.admit(scope):
            self.sb.stats[endpoint].rate_limited += 1
            raise ApiError(429, "RequestTooFrequently", f"request too frequently: {limiter.describe()}")

    async def upload_image(self, request: web.Request) -> web.Response:
        self._authenticate(request)
        self._admit("upload", ACCOUNT_SCOPE)
        data = await read_image_field(request)
        fmt = sniff_image(data)
        if fmt is None:
            raise invalid_parameter("unsupported image format: JPEG, PNG, WebP, GIF, TIFF, BMP or ICO")
        stored = self.sb.images.put(data, fmt, now=self.sb.wall())
        self.sb.stats["upload"].processed += 1
        return data_response({"image_key": stored.key})

    async def push_alert(self, request: web.Request) -> web.Response:
        integration = self._authenticate(request, on_push=True)
        self._admit("push", str(integration.integration_id))
        outcome = self.sb.ingest(integration, await read_json_object(request))
        self.sb.stats["push"].processed += 1
        return data_response({"alert_key": outcome.alert_key})

    async def list_alerts(self, request: web.Request) -> web.Response:
        if not self.sb.is_app_key(request.query.get("app_key", "")):
            raise ApiError(401, "Unauthorized", "app_key is missing or not a valid one")
        self._admit("list", ACCOUNT_SCOPE)
        data = run_query(self.sb.book.alerts, parse_query(await read_json_object(request)))
        self.sb.stats["list"].processed += 1
        return data_response(data)

    # ---- sandbox-only endpoints ----------------------------------------------------------

    async def page(self, request: web.Request) -> web.Response:
        refresh = request.query.get("refresh", "")
        html = self.sb.render_html(refresh=int(refresh) if refresh.isdigit() and int(refresh) > 0 else None)
        return web.Response(text=html, content_type="text/html")

    async def state(self, request: web.Request) -> web.Response:
        return web.json_response(self.sb.state())

    async def image(self, request: web.Request) -> web.Response:
        stored: StoredImage | None = self.sb.images.get(request.match_info["key"])
        if stored is None:
            raise ApiError(404, "ResourceNotFound", "no image with this key")
        return web.Response(body=stored.data, content_type=stored.format.content_type)

    async def faults_get(self, request: web.Request) -> web.Response:
        return web.json_response({"faults": [fault.to_json() for fault in self.sb.faults.active()]})

    async def faults_post(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
            faults = [_parse_fault_json(spec) for spec in (body if isinstance(body, list) else [body])]
        except ValueError as exc:  # FaultSpecError, or a body that is not JSON
            raise invalid_parameter(f"bad fault: {exc}") from exc
        for fault in faults:
            self.sb.faults.add(fault)
        return await self.faults_get(request)

    async def faults_delete(self, request: web.Request) -> web.Response:
        self.sb.faults.clear()
        return await self.faults_get(request)

    async def reset(self, request: web.Request) -> web.Response:
        self.sb.reset()
        return web.json_response({"reset": True})


async def _on_shutdown(app: web.Application) -> None:
    app[_CLOSING].set()


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
    if fault.kind == "html":
        return web.Response(status=fault.status, text=nginx_page(fault.status), content_type="text/html")
    if fault.kind == "truncated":
        whole = json.dumps({"request_id": new_request_id(), "data": {"image_key": "img_" + "0" * 32}})
        return web.Response(status=200, text=whole[: len(whole) // 2], content_type="application/json")
    if fault.kind == "no_data":
        return web.json_response({"request_id": new_request_id()})
    return error_response(ApiError(500, "InternalError", "injected fault"), status=200)


def _parse_fault_json(spec: Any) -> Fault:
    if not isinstance(spec, dict):
        raise FaultSpecError("a fault is a JSON object")
    return parse_fault(spec)
