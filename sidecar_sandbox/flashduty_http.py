"""HTTP plumbing of the Flashduty sandbox: the shared envelope, API errors, and a middleware
that turns aiohttp's own 404/405/413 into Flashduty-shaped errors (flashduty-api.md section 2).

Every API response is ``{"request_id": <32 hex>, "data": ...}`` or
``{"request_id": ..., "error": {"code": ..., "message": ...}}``, with the request id mirrored in
the ``Flashcat-Request-Id`` header. Error messages never contain a key value.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Mapping
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.typedefs import Handler

REQUEST_ID_HEADER = "Flashcat-Request-Id"

log = logging.getLogger("sidecar_sandbox.flashduty")


class ApiError(Exception):
    """A Flashduty error: HTTP status, ``error.code`` and ``error.message``."""

    def __init__(self, status: int, code: str, message: str, *, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})


def invalid_parameter(message: str) -> ApiError:
    return ApiError(400, "InvalidParameter", message)


def new_request_id() -> str:
    return secrets.token_hex(16)


def envelope(body: Mapping[str, Any], *, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    request_id = new_request_id()
    response = web.json_response({"request_id": request_id, **body}, status=status, headers=headers)
    response.headers[REQUEST_ID_HEADER] = request_id
    return response


def data_response(data: Any) -> web.Response:
    return envelope({"data": data})


def error_response(err: ApiError, *, status: int | None = None) -> web.Response:
    """The error envelope; ``status`` overrides the HTTP status (an error inside a 200)."""
    body = {"error": {"code": err.code, "message": err.message}}
    return envelope(body, status=err.status if status is None else status, headers=err.headers)


@web.middleware
async def envelope_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as err:
        return error_response(err)
    except web.HTTPNotFound:
        return error_response(ApiError(404, "RouteNotFound", f"no route for {request.method} {request.path}"))
    except web.HTTPMethodNotAllowed as exc:
        allow = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        message = f"method {request.method} is not allowed on {request.path}"
        return error_response(ApiError(405, "MethodNotAllowed", message, headers=allow))
    except web.HTTPRequestEntityTooLarge:
        return error_response(ApiError(413, "EntityTooLarge", "request body is too large"))
    except (web.HTTPException, ConnectionError):  # ConnectionError: the client went away
        raise
    except Exception:
        log.exception("flashduty sandbox: unhandled error on %s %s", request.method, request.path)
        return error_response(ApiError(500, "InternalError", "internal error"))


class RedactingAccessLogger(AbstractAccessLogger):
    """Access log that leaves out the query string, where ``integration_key``/``app_key`` live.

    Pass it as ``access_log_class`` to any ``web.AppRunner`` that serves the sandbox app.
    """

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.logger.info("%s %s %d %.1fms", request.method, request.path, response.status, time * 1000.0)


async def read_json_object(request: web.Request) -> dict[str, Any]:
    """The JSON object body of an API call: ``InvalidContentType`` unless application/json."""
    if request.content_type != "application/json":
        raise ApiError(400, "InvalidContentType", "Content-Type must be application/json")
    try:
        body = await request.json()
    except ValueError as exc:
        raise invalid_parameter("request body is not valid JSON") from exc
    if not isinstance(body, dict):
        raise invalid_parameter("request body must be a JSON object")
    return body
