"""The status page on ``server.listen``: ``GET /``, ``POST /login``, ``GET /pictures/{name}``, and
the journal's resource.

Access: with ``status.ui_token`` set, the page and the pictures need it, either as
``Authorization: Bearer <token>`` or as the cookie that the login form sets (HttpOnly,
SameSite=Strict; its value is an HMAC of the token, never the token). Without a token they are
open to whoever reaches ``server.listen`` (docs/operations.md says what that shows).
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import AsyncIterator

from aiohttp import web

from sidecar.config import Config
from sidecar.config.dump import secret_values
from sidecar.status.journal import CONTENT_TYPES, Journal
from sidecar.status.provider import STARTED, snapshot
from sidecar.status.render import render_login, render_status

__all__ = ["COOKIE", "JOURNAL", "PAGE_DELIVERIES", "add_status_routes", "config_of", "journal_context"]

JOURNAL = web.AppKey("journal", Journal)
COOKIE = "flashduty_sidecar_ui"
PAGE_DELIVERIES = 100  # deliveries shown on the page
_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; img-src 'self'; style-src 'unsafe-inline'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def config_of(app: web.Application) -> Config:
    """The current config of the running ``app``."""
    from sidecar import app as keys  # the app module imports this one

    return app[keys.CURRENT].config


def _cookie_value(token: str) -> str:
    return hmac.new(token.encode(), b"flashduty-sidecar status page", hashlib.sha256).hexdigest()


def _allowed(request: web.Request) -> bool:
    secret = config_of(request.app).status.ui_token
    if secret is None:
        return True
    token = secret.get_secret_value()
    scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and hmac.compare_digest(credentials.strip().encode(), token.encode()):
        return True
    return hmac.compare_digest(request.cookies.get(COOKIE, "").encode(), _cookie_value(token).encode())


def _login_page(*, failed: bool) -> web.Response:
    return web.Response(text=render_login(failed=failed), content_type="text/html", status=401, headers=_HEADERS)


async def _index(request: web.Request) -> web.Response:
    if not _allowed(request):
        return _login_page(failed=False)
    cfg = config_of(request.app)
    snap = await snapshot(request.app, deliveries=PAGE_DELIVERIES)
    text = render_status(snap, picture_base="pictures/", refresh=cfg.status.refresh, secrets=secret_values(cfg))
    return web.Response(text=text, content_type="text/html", headers=_HEADERS)


async def _login(request: web.Request) -> web.Response:
    secret = config_of(request.app).status.ui_token
    if secret is None:
        raise web.HTTPSeeOther("./")
    form = await request.post()
    given = form.get("token")
    token = secret.get_secret_value()
    if not isinstance(given, str) or not hmac.compare_digest(given.strip().encode(), token.encode()):
        return _login_page(failed=True)
    resp = web.HTTPSeeOther("./")
    resp.set_cookie(COOKIE, _cookie_value(token), httponly=True, samesite="Strict", secure=request.secure, path="/")
    raise resp


async def _picture(request: web.Request) -> web.StreamResponse:
    if not _allowed(request):
        raise web.HTTPUnauthorized(text="the UI token is required")
    journal = request.app.get(JOURNAL)
    name = request.match_info["name"]
    path = journal.picture_path(name) if journal is not None else None
    if path is None:
        raise web.HTTPNotFound(
            text="no such picture (pictures are kept within status.pictures and status.picture_bytes)"
        )
    headers = {"Content-Type": CONTENT_TYPES[name.rpartition(".")[2]], "X-Content-Type-Options": "nosniff",
               "Cache-Control": "private, max-age=86400, immutable"}  # fmt: skip
    return web.FileResponse(path, headers=headers)


def add_status_routes(app: web.Application) -> None:
    """``GET /``, ``POST /login``, ``GET /pictures/{name}``."""
    app[STARTED] = time.time()
    app.router.add_get("/", _index)
    app.router.add_post("/login", _login)
    app.router.add_get("/pictures/{name}", _picture)


async def journal_context(app: web.Application) -> AsyncIterator[None]:
    """The journal's resource: opened with the state, closed after the pipeline that writes it."""
    from sidecar import app as keys

    cfg = config_of(app)
    try:
        journal = Journal(
            cfg.state_dir,
            limits=lambda: config_of(app).status,
            on_error=lambda: app[keys.METRICS].background_errors.labels(job="status-journal").inc(),
        )
    except Exception as e:
        raise keys.StartupError(f"state_dir {cfg.state_dir}: cannot open the status journal: {e}") from None
    app[JOURNAL] = journal
    yield
    await journal.close()
