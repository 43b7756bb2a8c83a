"""What every route that takes alerts in checks first: the token, then the body under its limit.

``authorized``: with ``server.webhook_token`` set, a request must carry it, either as
``Authorization: Bearer <token>`` (Alertmanager's ``http_config.authorization``, Prometheus'
``alerting.alertmanagers[].authorization``, Grafana's webhook "Authorization header") or as the
password of HTTP basic auth, any user name (Grafana's "Alertmanager" contact point only speaks
basic auth: ``grafana/alerting`` ``receivers/util.go`` ``SendHTTPRequest`` sets it when user and
password are both set). Compared in constant time; the token is never logged.

``read_body``: the body, or ``None`` once it is larger than the limit (by ``Content-Length`` or
while reading), so a sender cannot make the sidecar buffer more than ``server.webhook_max_body``.
"""

from __future__ import annotations

import base64
import binascii
import hmac

from aiohttp import web

__all__ = ["authorized", "read_body"]


def authorized(request: web.Request, token: str) -> bool:
    """True when the request carries ``token`` as a bearer token or as a basic-auth password."""
    scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
    scheme = scheme.lower()
    if scheme == "bearer":
        return hmac.compare_digest(credentials.strip().encode(), token.encode())
    if scheme == "basic":
        try:
            decoded = base64.b64decode(credentials.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return False
        _user, sep, password = decoded.partition(":")
        return bool(sep) and hmac.compare_digest(password.encode(), token.encode())
    return False


async def read_body(request: web.Request, limit: int) -> bytes | None:
    """The whole body, or ``None`` when it is over ``limit`` bytes (nothing more is read)."""
    if request.content_length is not None and request.content_length > limit:
        return None
    body = bytearray()
    async for chunk in request.content.iter_chunked(64 * 1024):
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)
