"""Grafana-like sandbox server: emulates what a panel capture sees of Grafana ≥ 11.

Grafana cannot run in tests or in ``demo``, so this server reproduces the parts of Grafana that
decide whether a capture is right (see ``docs/grafana.md`` A.1–A.3, B.3 and C): the same URLs,
the same readiness signals, the same auth failure modes. It is a sandbox, not a product part.

Routes (``auth`` = ``Authorization: Bearer <token>`` and/or HTTP basic auth, when configured)::

    GET  /login                                   login page (open; <base href> carries appSubUrl)
    GET  /api/health                              {"commit","database","version"} (open)
    GET  /public/build/app.js                     the page scripts, loaded by every page (open)
    GET  /d-solo/<uid>[/<slug>]?panelId=..        one panel (no auth: 302 to /login)
    GET  /d/<uid>[/<slug>]?kiosk                  whole dashboard (no auth: 302 to /login)
    GET  /api/dashboards/uid/<uid>                dashboard JSON (no auth: 401 JSON; a v2 dashboard: 406)
    GET  /apis/dashboard.grafana.app/<v>/namespaces/<ns>/dashboards/<uid>[/dto]   (12.4 profile)
    POST /api/ds/query                            data frames; the server applies the delays
    GET  /api/prometheus/grafana/api/v1/rules     Grafana-managed rules (state, dashboard_uid,
                                                  panel_id, rule_uid filters)
    GET  /api/prometheus/grafana/api/v1/alerts    their alert instances
    POST /_sandbox/rendered                       readiness beacon sent by the pages (open)
    GET|DELETE /_sandbox/renders                  list / clear the beacons (open)
    POST /_sandbox/rules                          {"uid","firing","labels"} like set_firing (open)

Anonymous requests are answered like Grafana answers them: pages redirect to ``/login`` (with a
``redirect_to`` cookie), the API answers 401 JSON. ``profile`` picks the Grafana version played and
``sub_path`` the deployment (``grafana_profiles.py``); org 2 has its own dashboards: a token
belongs to ``token_org`` only (another org: 401), a basic-auth user to ``user_orgs``;
``language`` translates the page's texts; ``cdn_url`` loads the app bundle from elsewhere.

This module is the server: state, auth and the ``/_sandbox/`` control routes. The pages (and
their readiness signals) are ``grafana_page.py`` with ``grafana_page.html`` /
``grafana_page_chart.js`` / ``grafana_page.js`` / ``grafana_login.html``; the JSON API and the
query delays ``grafana_api.py``; dashboards and their data ``grafana_model.py``; alert rules
``grafana_rules.py``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

from sidecar_sandbox.grafana_api import CLOSING, api_routes, json_body, signal_closing, str_dict
from sidecar_sandbox.grafana_model import builtin_dashboards, org_dashboards
from sidecar_sandbox.grafana_page import app_bundle, login_page, page_routes
from sidecar_sandbox.grafana_profiles import DEFAULT_PROFILE, PROFILES, Profile, SubPath
from sidecar_sandbox.grafana_rules import BUILTIN_RULES, RuleBook

DEFAULT_TOKEN = "sandbox-grafana-token"
VERSION = PROFILES[DEFAULT_PROFILE].version
_OPEN_PATHS = frozenset({"/login", "/api/health", "/favicon.ico", "/public/build/app.js"})
# follows grafana/grafana pkg/services/authn/clients/api_key.go (errAPIKeyOrgMismatch)
_ORG_MISMATCH = "API key does not belong to the requested organization"


class GrafanaSandbox:
    """State and handlers of one emulated Grafana; ``make_app`` serves it."""

    def __init__(
        self,
        *,
        token: str | None = DEFAULT_TOKEN,
        basic_auth: tuple[str, str] | None = None,
        query_delay: float = 0.3,
        external_resource_url: str | None = None,
        metric_source: Callable[[], float] | None = None,
        metric_history: Callable[[float], float] | None = None,
        profile: str = DEFAULT_PROFILE,
        sub_path: SubPath | None = None,
        token_org: int = 1,
        user_orgs: tuple[int, ...] = (1, 2),
        language: str = "en-US",
        cdn_url: str = "",
        forbidden: tuple[str, ...] = (),
    ) -> None:
        self.profile: Profile = PROFILES[profile]
        self.sub_path = sub_path or SubPath()
        self.token_org = token_org  # a service-account token belongs to one org
        self.user_orgs = user_orgs  # a basic-auth user may be a member of several
        self.language = language
        self.cdn_url = cdn_url  # [server] cdn_url: the app bundle is loaded from there
        self.forbidden = frozenset(forbidden)  # dashboard uids the credentials may not read (403)
        self.token = token
        self.basic_auth = basic_auth
        self.query_delay = query_delay
        self.external_resource_url = external_resource_url
        self.metric_source = metric_source
        self.metric_history = metric_history  # value at a unix time: panel 6 draws it (the sandbox Prometheus)
        self.dashboards = builtin_dashboards(query_delay, v2=self.profile.v2)  # org 1
        self.orgs = {1: self.dashboards, 2: org_dashboards(query_delay)}
        self.rules = RuleBook(BUILTIN_RULES, self.metric_value)  # rules API of Grafana 12; .version switches
        self.renders: list[dict[str, Any]] = []

    def set_firing(self, rule_uid: str, firing: bool, labels: dict[str, str] | None = None) -> None:
        """Start or stop an alert instance of a built-in rule (see ``RuleBook.set_firing``)."""
        self.rules.set_firing(rule_uid, firing, labels)

    def metric_value(self) -> float:
        """Current value of the demo metric shown by panel 6 (0 without a source)."""
        return float(self.metric_source()) if self.metric_source is not None else 0.0

    @property
    def served_prefix(self) -> str:
        """The path Grafana answers under: the sub path with ``serve_from_sub_path``, else ``""``."""
        return self.sub_path.prefix if self.sub_path.serve_from_sub_path else ""

    def make_app(self) -> web.Application:
        app = web.Application(middlewares=[self._auth_middleware])
        app[CLOSING] = asyncio.Event()
        app.on_shutdown.append(signal_closing)
        app.router.add_get("/login", login_page(self))
        app.router.add_get("/api/health", self._health)
        app.router.add_get("/public/build/app.js", app_bundle)
        app.router.add_routes(page_routes(self))
        app.router.add_routes(api_routes(self))
        app.router.add_post("/_sandbox/rendered", self._rendered)
        app.router.add_get("/_sandbox/renders", self._list_renders)
        app.router.add_delete("/_sandbox/renders", self._clear_renders)
        app.router.add_post("/_sandbox/rules", self._switch_rule)
        if not self.served_prefix:
            return app
        # serve_from_sub_path: everything under the prefix, nothing outside it (follows
        # grafana/grafana pkg/api/http_server.go, m.SetURLPrefix(cfg.AppSubURL))
        outer = web.Application()
        outer.add_subapp(self.served_prefix + "/", app)
        outer.on_shutdown.append(signal_closing)
        outer[CLOSING] = app[CLOSING]
        return outer

    def requested_org(self, request: web.Request) -> int | None:
        """The org a request asks for: ``X-Grafana-Org-Id``, else ``orgId`` (follows grafana/grafana
        pkg/services/authn/authnimpl/service.go, orgIDFromRequest)."""
        raw = request.headers.get("X-Grafana-Org-Id") or request.query.get("orgId") or ""
        return int(raw) if raw.isdigit() and int(raw) > 0 else None

    def org_of(self, request: web.Request) -> int:
        org = self.requested_org(request)
        if org is not None:
            return org
        return self.token_org if request.headers.get("Authorization", "").lower().startswith("bearer") else 1

    # ------------------------------------------------------------------------ auth

    def authorized(self, header: str | None) -> bool:
        """True when the ``Authorization`` header satisfies the configured auth."""
        if self.token is None and self.basic_auth is None:
            return True
        scheme, _, value = (header or "").partition(" ")
        if self.token is not None and scheme.lower() == "bearer":
            return hmac.compare_digest(value.strip().encode(), self.token.encode())
        if self.basic_auth is not None and scheme.lower() == "basic":
            return _basic_matches(value.strip(), self.basic_auth)
        return False

    @web.middleware
    async def _auth_middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Like Grafana for anonymous users: pages redirect to /login, the API answers 401."""
        path = request.path[len(self.served_prefix) :]
        if path in _OPEN_PATHS or path.startswith("/_sandbox/"):
            return await handler(request)
        header = request.headers.get("Authorization")
        if self.authorized(header):
            org = self.requested_org(request)
            if org is not None and org not in self._orgs_of(header):
                return self._wrong_org(path, header)
            return await handler(request)
        if path.startswith("/api/") or path.startswith("/apis/"):
            return web.json_response({"message": "Unauthorized"}, status=401)
        response = web.Response(status=302, headers={"Location": self.sub_path.prefix + "/login"})
        response.set_cookie("redirect_to", request.path_qs, httponly=True, samesite="Lax")
        return response

    def _orgs_of(self, header: str | None) -> tuple[int, ...]:
        if self.token is None and self.basic_auth is None:
            return tuple(self.orgs)
        return (self.token_org,) if (header or "").lower().startswith("bearer") else self.user_orgs

    def _wrong_org(self, path: str, header: str | None) -> web.StreamResponse:
        """An org the credentials cannot use: a token is refused by authentication (401, follows
        grafana/grafana pkg/services/authn/clients/api_key.go validateApiKey); a user who is no
        member cannot switch to it (404, follows pkg/middleware/org_redirect.go)."""
        if (header or "").lower().startswith("bearer"):
            return web.json_response({"message": _ORG_MISMATCH}, status=401)
        if path.startswith("/api/") or path.startswith("/apis/"):
            return web.json_response({"message": "Not found"}, status=404)
        return web.Response(text="Not found\n", status=404)

    async def _health(self, request: web.Request) -> web.Response:
        # follows grafana/grafana pkg/api/health.go (apiHealthHandler: commit, database, version)
        return web.json_response({"commit": "sandbox", "database": "ok", "version": self.profile.version})

    # --------------------------------------------------------------------- sandbox

    async def _rendered(self, request: web.Request) -> web.Response:
        body = await json_body(request)
        if not isinstance(body, dict):
            return web.json_response({"message": "bad request data"}, status=400)
        self.renders.append({**body, "received_at": time.time() * 1000})
        return web.Response(status=204)

    async def _list_renders(self, request: web.Request) -> web.Response:
        return web.json_response(self.renders)

    async def _clear_renders(self, request: web.Request) -> web.Response:
        self.renders.clear()
        return web.Response(status=204)

    async def _switch_rule(self, request: web.Request) -> web.Response:
        body = await json_body(request)
        if not isinstance(body, dict) or not isinstance(body.get("firing"), bool):
            return web.json_response({"message": 'expected {"uid": str, "firing": bool}'}, status=400)
        labels = body.get("labels")
        if labels is not None and not isinstance(labels, dict):
            return web.json_response({"message": "labels must be an object"}, status=400)
        uid = str(body.get("uid"))
        if uid not in self.rules.rules:
            return web.json_response({"message": "rule not found"}, status=404)
        self.set_firing(uid, body["firing"], str_dict(labels) if labels is not None else None)
        return web.json_response({"uid": uid, "state": self.rules.state(uid), "alerts": self.rules.alert_count(uid)})


def _basic_matches(encoded: str, expected: tuple[str, str]) -> bool:
    try:
        user, _, password = base64.b64decode(encoded, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return False
    user_ok = hmac.compare_digest(user.encode(), expected[0].encode())
    return hmac.compare_digest(password.encode(), expected[1].encode()) and user_ok
